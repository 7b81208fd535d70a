#!/usr/bin/env bash
# A live edge node on one screen (`make demo` calls this):
#   scripts/demo.sh [CONFIG]        (default conf/edge.yaml)
# Starts a Mosquitto broker when none listens at the configured address (from
# mosquitto/mosquitto.conf, on the configured port or else a free one), then
# edgemeta, the simulated cloud (examples/objects), edged and three devices,
# and shows their traffic with `edgemeta watch`. Ctrl-C stops everything.
# Logs and the demo's database are in data/demo/.
# DEMO_SECONDS=N ends the demo by itself after N seconds (for scripted runs).
set -euo pipefail

cd "$(dirname "$0")/.."
# Job control: every background job gets its own process group, so Ctrl-C
# reaches only the foreground `edgemeta watch`; the rest is stopped in order.
set -m
config=${1:-conf/edge.yaml}
python=.venv/bin/python
edgemeta=(.venv/bin/edgemeta)
demo=data/demo
mkdir -p "$demo"

if ! "${edgemeta[@]}" check-config "$config" >/dev/null; then
    exit 2
fi
read -r host port prefix < <(
    "$python" -c 'import sys; from edgemeta.config import load_config
m = load_config(sys.argv[1]).mqtt; print(m.host, m.port, m.topicPrefix)' "$config"
)

. scripts/lib/children.sh
cleanup() {
    trap - EXIT INT TERM
    stop_children demo
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        echo "demo: stopping mosquitto"
        kill -TERM "$broker_pid"
        wait "$broker_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

listening() {
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$1" 2>/dev/null
}

start_broker() { # PORT
    local conf=$demo/mosquitto.conf
    mkdir -p "$demo/mosquitto"
    awk -v port="$1" -v data="$demo/mosquitto/" -v logfile="$demo/mosquitto.log" '
        $1 == "listener" { print "listener " port " 127.0.0.1"; next }
        $1 == "persistence_location" { print "persistence_location " data; next }
        $1 == "log_dest" { if (!done++) print "log_dest file " logfile; next }
        $1 == "user" { next }
        { print }
    ' mosquitto/mosquitto.conf >"$conf"
    # As root mosquitto would switch to an unprivileged user that cannot write here.
    [ "$(id -u)" -ne 0 ] || echo "user root" >>"$conf"
    local mosquitto
    mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    "$mosquitto" -c "$conf" </dev/null >>"$demo/mosquitto.log" 2>&1 &
    broker_pid=$!
    local tries=50
    until listening "$1"; do
        if ! kill -0 "$broker_pid" 2>/dev/null || [ "$tries" -eq 0 ]; then
            kill -TERM "$broker_pid" 2>/dev/null || true
            wait "$broker_pid" 2>/dev/null || true
            broker_pid=""
            return 1
        fi
        tries=$((tries - 1))
        sleep 0.1
    done
}

if listening "$port"; then
    echo "demo: using the MQTT broker at $host:$port"
else
    case "$host" in
        127.* | localhost) ;;
        *)
            echo "demo: no MQTT broker at $host:$port; start one or change mqtt.host" >&2
            exit 1
            ;;
    esac
    if ! start_broker "$port"; then
        port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        start_broker "$port" || {
            echo "demo: mosquitto did not start; see $demo/mosquitto.log" >&2
            exit 1
        }
        # Every edgemeta command below (and in your other terminal) needs it too.
        export EDGEMETA_MQTT_PORT=$port
    fi
    echo "demo: started mosquitto on 127.0.0.1:$port (log: $demo/mosquitto.log)"
fi

if "${edgemeta[@]}" health --timeout 2 -c "$config" >/dev/null 2>&1; then
    echo "demo: an edgemeta is already online on prefix $prefix; using it"
else
    rm -f "$demo"/edgemeta.json "$demo"/edgemeta.json.*
    EDGEMETA_DB_PATH=$demo/edgemeta.json start_child edgemeta "$demo/edgemeta.log" \
        "${edgemeta[@]}" run --config "$config"
    tries=60
    until "${edgemeta[@]}" health --timeout 1 -c "$config" >/dev/null 2>&1; do
        if ! kill -0 "${child_pids[-1]}" 2>/dev/null || [ "$tries" -eq 0 ]; then
            echo "demo: edgemeta did not come online; tail of $demo/edgemeta.log:" >&2
            tail -n 20 "$demo/edgemeta.log" >&2
            exit 1
        fi
        tries=$((tries - 1))
        sleep 0.25
    done
    echo "demo: edgemeta online (log: $demo/edgemeta.log, database: $demo/edgemeta.json)"
fi

start_child "sim edged" "$demo/edged.log" "${edgemeta[@]}" sim edged -c "$config" --rate 0.5
# edged first, so it hears of the pods the cloud pushes.
sleep 1
start_child "sim cloud" "$demo/cloud.log" \
    "${edgemeta[@]}" sim cloud -c "$config" --objects examples/objects --push
start_child "sim device" "$demo/devices.log" \
    "${edgemeta[@]}" sim device -c "$config" --count 3 --rate 0.2 -q

env_hint=""
[ -z "${EDGEMETA_MQTT_PORT:-}" ] || env_hint="EDGEMETA_MQTT_PORT=$EDGEMETA_MQTT_PORT "
cat <<EOF
demo: simulators running (logs: $demo/edged.log, cloud.log, devices.log).
demo: in another terminal, try:
    ${env_hint}.venv/bin/edgemeta list pod -c $config
    ${env_hint}.venv/bin/edgemeta get default/secret/gateway-token -c $config -o yaml
    ${env_hint}.venv/bin/edgemeta send update default/podstatus/nginx --content '{"phase":"Failed"}' --wait -c $config
demo: the traffic on $prefix/# follows; Ctrl-C stops everything.

EOF
if [ -n "${DEMO_SECONDS:-}" ]; then
    timeout --foreground -s INT "$DEMO_SECONDS" "${edgemeta[@]}" watch -c "$config" || true
else
    "${edgemeta[@]}" watch -c "$config" || true
fi
