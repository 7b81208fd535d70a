#!/bin/sh
# Render deploy/edge-bridge-nats.conf for one edge node; the result goes to stdout.
#
#   scripts/render-nats-bridge-conf.sh [--conf-d] [--keepalive SECONDS] NODE LOCAL_PORT DATA_DIR SERVER... > edge.conf
#
#   --conf-d     a snippet for /etc/mosquitto/conf.d/ of Debian's packaged
#                Mosquitto (leaves out persistence and persistence_location,
#                which its mosquitto.conf sets; DATA_DIR is then unused)
#   --keepalive  bridge keepalive_interval in seconds (default 10)
#   NODE         node name: letters, digits, '.', '_' or '-'
#   LOCAL_PORT   loopback port of the edge broker
#   DATA_DIR     persistence directory of the edge broker (absolute)
#   SERVER       HOST:MQTT_PORT of a NATS server, one argument each
#
# Example (the cluster of `make cluster`):
#   scripts/render-nats-bridge-conf.sh node-a 1895 /tmp/edge-a \
#       127.0.0.1:1891 127.0.0.1:1892 127.0.0.1:1893 > /tmp/edge-a/edge.conf
set -eu

. "$(dirname "$0")/lib/render.sh"

usage() {
    echo "usage: $0 [--conf-d] [--keepalive SECONDS] NODE LOCAL_PORT DATA_DIR SERVER..." >&2
    exit 2
}

keepalive=10
bridge_options "$@"
shift "$shifted"
[ $# -ge 4 ] || usage

node=$1
local_port=$2
check_name NODE "$node"
check_port LOCAL_PORT "$local_port"
data_dir=$(absolute_dir DATA_DIR "$3")
shift 3

addresses=""
for server in "$@"; do
    case "$server" in
        *[!A-Za-z0-9.:-]* | :* | *:) fail "SERVER must be HOST:PORT, got '$server'" ;;
        *:*) ;;
        *) fail "SERVER must be HOST:PORT, got '$server'" ;;
    esac
    check_port SERVER "${server##*:}"
    addresses="${addresses:+$addresses }$server"
done

render_bridge "$(dirname "$0")/../deploy/edge-bridge-nats.conf" \
    -e "s|@ADDRESSES@|$addresses|g"
