#!/usr/bin/env bash
# A fleet in miniature on loopback (`make cluster` calls this): a 3-server
# NATS JetStream cluster as the cloud (deploy/nats/nats-server.conf), two edge
# nodes (node-a, node-b), each a Mosquitto bridged to all three servers
# (deploy/edge-bridge-nats.conf) with an edgemeta beside it, and on the cloud
# side one `edgemeta sim cloud` per node. Ctrl-C (or SIGTERM) stops them all.
#
#   scripts/cluster.sh
#
# Environment:
#   CLUSTER_DIR        configs, data and logs (default data/cluster; emptied at start)
#   CLUSTER_PORT_BASE  the loopback ports are counted from it (default 1890):
#                      +1..+3 NATS MQTT, +4..+6 NATS client, +7..+9 NATS routes,
#                      +10 edge broker of node-a, +11 edge broker of node-b
#   CLUSTER_KEEPALIVE  bridge keepalive_interval, seconds (default 10)
#   CLUSTER_SECONDS    stop by itself after this many seconds (0 = run until stopped)
# Everything started is listed in $CLUSTER_DIR/pids, one "name pid" a line.
set -euo pipefail

cd "$(dirname "$0")/.."
# Every background job in its own process group: a Ctrl-C reaches this
# script only, which stops the rest in order (edgemeta before its broker, so
# it can publish "offline"; the edge brokers before the cloud).
set -m

dir=${CLUSTER_DIR:-data/cluster}
base=${CLUSTER_PORT_BASE:-1890}
keepalive=${CLUSTER_KEEPALIVE:-10}
seconds=${CLUSTER_SECONDS:-0}
host=127.0.0.1
nodes=(node-a node-b)
python=.venv/bin/python
edgemeta=.venv/bin/edgemeta
nats=$(command -v nats-server || echo /usr/sbin/nats-server)
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)

mqtt_port() { echo $((base + $1)); }         # server 1..3
client_port() { echo $((base + 3 + $1)); }   # server 1..3
route_port() { echo $((base + 6 + $1)); }    # server 1..3
edge_port() { echo $((base + 10 + $1)); }    # node index 0..

rm -rf "$dir"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
: >"$dir/pids"

. scripts/lib/children.sh
children_pidfile=$dir/pids

cleanup() {
    trap - EXIT INT TERM
    stop_children cluster
    echo "cluster: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# An MQTT 3.1.1 QoS 1 publish that the server acknowledges: the MQTT
# listener is up and JetStream has its streams.
wait_mqtt() { # PORT WHAT
    local deadline=$((SECONDS + 90))
    until mosquitto_pub -V mqttv311 -h "$host" -p "$1" -q 1 -t cluster/ready -m x \
        -i "cluster-ready-$1" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "cluster: $2 not ready within 90 s (logs in $dir)" >&2
            exit 1
        fi
        sleep 0.5
    done
}

# The retained payload of TOPIC on the broker at PORT equals WANT.
wait_retained() { # PORT TOPIC WANT WHAT
    local deadline=$((SECONDS + 60)) got
    while true; do
        got=$(mosquitto_sub -h "$host" -p "$1" -t "$2" -C 1 -W 2 2>/dev/null || true)
        [ "$got" = "$3" ] && return 0
        if ((SECONDS >= deadline)); then
            echo "cluster: $4 not '$3' within 60 s (logs in $dir)" >&2
            exit 1
        fi
    done
}

servers=()
for i in 1 2 3; do
    servers+=("$host:$(mqtt_port "$i")")
done
for i in 1 2 3; do
    routes=()
    for j in 1 2 3; do
        [ "$j" -eq "$i" ] || routes+=("$host:$(route_port "$j")")
    done
    mkdir -p "$dir/nats-$i"
    scripts/render-nats-conf.sh "nats-$i" "$host" "$(client_port "$i")" "$(mqtt_port "$i")" \
        "$(route_port "$i")" "$dir/nats-$i" "${routes[@]}" >"$dir/nats-$i.conf"
    start_child "nats-$i" "$dir/nats-$i.log" "$nats" -c "$dir/nats-$i.conf"
done
for i in 1 2 3; do
    wait_mqtt "$(mqtt_port "$i")" "nats-$i"
done
echo "cluster: NATS servers up, MQTT on ${servers[*]}"

for n in "${!nodes[@]}"; do
    node=${nodes[$n]}
    port=$(edge_port "$n")
    mkdir -p "$dir/$node/mosquitto"
    conf=$dir/$node/mosquitto.conf
    scripts/render-nats-bridge-conf.sh --keepalive "$keepalive" "$node" "$port" \
        "$dir/$node/mosquitto" "${servers[@]}" >"$conf"
    echo "log_dest file $dir/$node/mosquitto.log" >>"$conf"
    # As root, mosquitto would switch to the `mosquitto` user, which may not
    # be able to write under $CLUSTER_DIR.
    [ "$(id -u)" -ne 0 ] || echo "user root" >>"$conf"
    start_child "mosquitto-$node" "$dir/$node/mosquitto.out" "$mosquitto" -c "$conf"
done
for n in "${!nodes[@]}"; do
    node=${nodes[$n]}
    wait_retained "$(edge_port "$n")" "beehive/$node/meta/bridge/state" 1 "bridge of $node"
    cat >"$dir/$node/edge.yaml" <<YAML
mqtt:
  host: $host
  port: $(edge_port "$n")
  topicPrefix: beehive/$node
database:
  path: $dir/$node/edgemeta.json
modules:
  metaManager:
    podStatusSyncInterval: 60
YAML
    start_child "edgemeta-$node" "$dir/$node/edgemeta.log" "$edgemeta" run --config "$dir/$node/edge.yaml"
done
for n in "${!nodes[@]}"; do
    node=${nodes[$n]}
    wait_retained "$(edge_port "$n")" "beehive/$node/meta/status" online "edgemeta of $node"
    # The cloud side of this node, on NATS server n+1 (bridges connect to
    # whichever server answers first: the cluster routes between them).
    cat >"$dir/$node/cloud.yaml" <<YAML
mqtt:
  host: $host
  port: $(mqtt_port $((n + 1)))
  topicPrefix: beehive/$node
YAML
    start_child "sim-cloud-$node" "$dir/$node/sim-cloud.log" "$edgemeta" sim cloud \
        --objects examples/objects --push --no-connection --config "$dir/$node/cloud.yaml"
done

echo "cluster: up"
for n in "${!nodes[@]}"; do
    node=${nodes[$n]}
    echo "  ${node}: edge broker $host:$(edge_port "$n"), edgemeta log $dir/$node/edgemeta.log," \
        "cloud simulator log $dir/$node/sim-cloud.log"
done
echo "  watch a node:  $edgemeta watch --config $dir/node-a/edge.yaml"
echo "cluster: Ctrl-C stops everything"

if [ "$seconds" -gt 0 ]; then
    sleep "$seconds" &
    wait $! || true
    exit 0
fi
while true; do
    # `wait` returns as soon as a trapped signal arrives.
    sleep 3600 &
    wait $! || true
done
