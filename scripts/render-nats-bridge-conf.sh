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

usage() {
    echo "usage: $0 [--conf-d] [--keepalive SECONDS] NODE LOCAL_PORT DATA_DIR SERVER..." >&2
    exit 2
}

fail() {
    echo "$0: $1" >&2
    exit 2
}

check_port() {
    case "$2" in
        '' | *[!0-9]*) fail "$1 must be a port number, got '$2'" ;;
    esac
    [ "$2" -ge 1 ] && [ "$2" -le 65535 ] || fail "$1 must be within 1-65535, got '$2'"
}

conf_d=false
keepalive=10
while [ $# -gt 0 ]; do
    case "$1" in
        --conf-d) conf_d=true; shift ;;
        --keepalive)
            [ $# -ge 2 ] || usage
            keepalive=$2
            shift 2
            ;;
        -*) usage ;;
        *) break ;;
    esac
done
[ $# -ge 4 ] || usage

node=$1
local_port=$2
data_dir=$3
shift 3

case "$node" in
    '' | *[!A-Za-z0-9._-]*) fail "NODE must be letters, digits, '.', '_' or '-', got '$node'" ;;
esac
check_port LOCAL_PORT "$local_port"
case "$keepalive" in
    '' | *[!0-9]*) fail "--keepalive must be a whole number of seconds, got '$keepalive'" ;;
esac
[ "$keepalive" -ge 2 ] && [ "$keepalive" -le 65535 ] || fail "--keepalive must be within 2-65535, got '$keepalive'"
case "$data_dir" in
    /*) ;;
    *) fail "DATA_DIR must be an absolute path, got '$data_dir'" ;;
esac
case "$data_dir" in
    *[\|\&\\[:space:]]*) fail "DATA_DIR must not contain '|', '&', '\\' or spaces" ;;
esac
case "$data_dir" in
    */) ;;
    *) data_dir="$data_dir/" ;;
esac

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

template="$(dirname "$0")/../deploy/edge-bridge-nats.conf"
[ -r "$template" ] || fail "template not found: $template"

if $conf_d; then
    standalone='/^# BEGIN standalone$/,/^# END standalone$/d'
else
    standalone='/^# \(BEGIN\|END\) standalone$/d'
fi

sed \
    -e "$standalone" \
    -e "s|@KEEPALIVE@|$keepalive|g" \
    -e "s|@NODE@|$node|g" \
    -e "s|@LOCAL_PORT@|$local_port|g" \
    -e "s|@DATA_DIR@|$data_dir|g" \
    -e "s|@ADDRESSES@|$addresses|g" \
    "$template"
