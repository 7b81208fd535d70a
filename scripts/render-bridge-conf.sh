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

usage() {
    echo "usage: $0 [--conf-d] [--keepalive SECONDS] NODE CLOUD_HOST CLOUD_PORT [LOCAL_PORT] [DATA_DIR]" >&2
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
keepalive=30
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

[ $# -ge 3 ] && [ $# -le 5 ] || usage
case "$keepalive" in
    '' | *[!0-9]*) fail "--keepalive must be a whole number of seconds, got '$keepalive'" ;;
esac
[ "$keepalive" -ge 2 ] && [ "$keepalive" -le 65535 ] || fail "--keepalive must be within 2-65535, got '$keepalive'"

node=$1
cloud_host=$2
cloud_port=$3
local_port=${4:-1883}
data_dir=${5:-/var/lib/mosquitto/}

# The node name becomes one topic level and a client id: no "/", "+", "#",
# spaces or anything sed would read as syntax.
case "$node" in
    '' | *[!A-Za-z0-9._-]*) fail "NODE must be letters, digits, '.', '_' or '-', got '$node'" ;;
esac
case "$cloud_host" in
    '' | *[!A-Za-z0-9.-]*) fail "CLOUD_HOST must be a host name or IPv4 address, got '$cloud_host'" ;;
esac
check_port CLOUD_PORT "$cloud_port"
check_port LOCAL_PORT "$local_port"
case "$data_dir" in
    /*) ;;
    *) fail "DATA_DIR must be an absolute path, got '$data_dir'" ;;
esac
case "$data_dir" in
    *[\|\&\\[:space:]]*) fail "DATA_DIR must not contain '|', '&', '\\' or spaces" ;;
esac
# The manual asks for a trailing "/" on persistence_location.
case "$data_dir" in
    */) ;;
    *) data_dir="$data_dir/" ;;
esac

template="$(dirname "$0")/../mosquitto/edge-bridge.conf"
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
    -e "s|@CLOUD_HOST@|$cloud_host|g" \
    -e "s|@CLOUD_PORT@|$cloud_port|g" \
    -e "s|@LOCAL_PORT@|$local_port|g" \
    -e "s|@DATA_DIR@|$data_dir|g" \
    "$template"
