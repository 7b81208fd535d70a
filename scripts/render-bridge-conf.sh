#!/bin/sh
# Render mosquitto/edge-bridge.conf for one edge node; the result goes to stdout.
#
#   scripts/render-bridge-conf.sh [--conf-d] [--keepalive SECONDS] NODE CLOUD_HOST CLOUD_PORT [LOCAL_PORT] [DATA_DIR] > edge.conf
#
#   --conf-d    a snippet for /etc/mosquitto/conf.d/ of Debian's packaged
#               Mosquitto: leaves out the options its mosquitto.conf already
#               sets (persistence, persistence_location), which Mosquitto
#               refuses to see twice; DATA_DIR is then unused
#   --keepalive bridge keepalive_interval in seconds (default 30): a silent
#               link loss is noticed after 1-2 x this
#   NODE        node name, one topic level (letters, digits, . _ -): the node's
#               topic prefix becomes beehive/NODE
#   CLOUD_HOST  host name or IPv4 address of the cloud broker
#   CLOUD_PORT  port of the cloud broker (1883, or 8883 with TLS)
#   LOCAL_PORT  loopback port of the edge broker (default 1883)
#   DATA_DIR    persistence directory of the edge broker (default
#               /var/lib/mosquitto/); it must exist and be writable by the broker
#
# Example (cloud broker from mosquitto/cloud.conf on this machine, port 1884;
# this edge broker on 1885, next to a development broker on 1883):
#   mkdir -p /tmp/edge-a
#   scripts/render-bridge-conf.sh node-a 127.0.0.1 1884 1885 /tmp/edge-a > /tmp/edge-a/edge.conf
#   mosquitto -c /tmp/edge-a/edge.conf
# Started as root, mosquitto runs as the `mosquitto` user, which must be able
# to write DATA_DIR.
set -eu

. "$(dirname "$0")/lib/render.sh"

usage() {
    echo "usage: $0 [--conf-d] [--keepalive SECONDS] NODE CLOUD_HOST CLOUD_PORT [LOCAL_PORT] [DATA_DIR]" >&2
    exit 2
}

keepalive=30
bridge_options "$@"
shift "$shifted"
[ $# -ge 3 ] && [ $# -le 5 ] || usage

node=$1
cloud_host=$2
cloud_port=$3
local_port=${4:-1883}
check_name NODE "$node"
check_host CLOUD_HOST "$cloud_host"
check_port CLOUD_PORT "$cloud_port"
check_port LOCAL_PORT "$local_port"
data_dir=$(absolute_dir DATA_DIR "${5:-/var/lib/mosquitto/}")

render_bridge "$(dirname "$0")/../mosquitto/edge-bridge.conf" \
    -e "s|@CLOUD_HOST@|$cloud_host|g" \
    -e "s|@CLOUD_PORT@|$cloud_port|g"
