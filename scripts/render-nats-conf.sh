#!/bin/sh
# Render deploy/nats/nats-server.conf for one server of the cloud cluster; the
# result goes to stdout.
#
#   scripts/render-nats-conf.sh NAME HOST CLIENT_PORT MQTT_PORT CLUSTER_PORT STORE_DIR ROUTE...
#
#   NAME          server name (letters, digits, . _ -), unique in the cluster
#   HOST          address the server listens on (127.0.0.1 for a trial)
#   CLIENT_PORT   NATS client port
#   MQTT_PORT     MQTT port the edge bridges connect to
#   CLUSTER_PORT  route port of this server
#   STORE_DIR     JetStream storage directory (absolute; must exist)
#   ROUTE         HOST:CLUSTER_PORT of another server, one argument each
#
# Example, server 1 of three on one machine:
#   scripts/render-nats-conf.sh nats-1 127.0.0.1 4231 1891 6231 /var/lib/nats/nats-1 \
#       127.0.0.1:6232 127.0.0.1:6233 > nats-1.conf
set -eu

. "$(dirname "$0")/lib/render.sh"

[ $# -ge 7 ] || {
    echo "usage: $0 NAME HOST CLIENT_PORT MQTT_PORT CLUSTER_PORT STORE_DIR ROUTE..." >&2
    exit 2
}

name=$1
host=$2
client_port=$3
mqtt_port=$4
cluster_port=$5
check_name NAME "$name"
check_host HOST "$host"
check_port CLIENT_PORT "$client_port"
check_port MQTT_PORT "$mqtt_port"
check_port CLUSTER_PORT "$cluster_port"
store_dir=$6
absolute_dir STORE_DIR "$store_dir" >/dev/null
shift 6

routes=""
for route in "$@"; do
    case "$route" in
        *:*) ;;
        *) fail "ROUTE must be HOST:PORT, got '$route'" ;;
    esac
    check_port ROUTE "${route##*:}"
    routes="$routes        nats-route://$route\\
"
done

template="$(dirname "$0")/../deploy/nats/nats-server.conf"
[ -r "$template" ] || fail "template not found: $template"

sed \
    -e "s|@NAME@|$name|g" \
    -e "s|@HOST@|$host|g" \
    -e "s|@CLIENT_PORT@|$client_port|g" \
    -e "s|@MQTT_PORT@|$mqtt_port|g" \
    -e "s|@CLUSTER_PORT@|$cluster_port|g" \
    -e "s|@STORE_DIR@|$store_dir|g" \
    -e "/^@ROUTES@\$/c\\
$routes" \
    "$template"
