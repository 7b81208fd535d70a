#!/usr/bin/env bash
# Run edgemeta for development:
#   scripts/run-dev.sh [CONFIG]        (default conf/edge.yaml; `make run` calls this)
# If nothing listens at the configured broker address and that address is on
# this machine (127.*, localhost), start a broker from mosquitto/mosquitto.conf
# on that port in the background (from the repository root, its data in
# mosquitto/run/dev-<port>/) and stop it when edgemeta exits. Another port than
# the file's (EDGEMETA_MQTT_PORT=18999 make run, beside a busy 1883) gets a copy
# of the file with that listener.
set -euo pipefail

cd "$(dirname "$0")/.."
# Job control: each background job gets its own process group, so Ctrl-C in
# the terminal reaches only this script, not the broker nor edgemeta.
set -m
config=${1:-conf/edge.yaml}
python=.venv/bin/python
broker_conf=mosquitto/mosquitto.conf
broker_pid=""
service_pid=""

# Broker address as edgemeta will see it: config file, then environment
# (an empty variable counts as unset), then the defaults.
address=$(
    "$python" - "$config" <<'PY'
import os
import sys

import yaml

host, port = "127.0.0.1", 1883
try:
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    mqtt = doc.get("mqtt") if isinstance(doc, dict) else None
    if isinstance(mqtt, dict):
        host = mqtt.get("host", host)
        port = mqtt.get("port", port)
except (OSError, yaml.YAMLError):
    pass  # edgemeta itself reports a missing or invalid config
host = os.environ.get("EDGEMETA_MQTT_HOST") or host
port = os.environ.get("EDGEMETA_MQTT_PORT") or port
print(host, port)
PY
)
read -r host port <<<"$address"

listening() {
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

stop_broker() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        echo "run-dev: stopping mosquitto (pid $broker_pid)"
        kill -TERM "$broker_pid"
        wait "$broker_pid" || true
    fi
}

start_broker() {
    case "$host" in
        127.* | localhost) ;;
        *)
            echo "run-dev: no MQTT broker at $host:$port; start one there, or change" \
                "mqtt.host/mqtt.port (or EDGEMETA_MQTT_HOST/EDGEMETA_MQTT_PORT)" >&2
            exit 1
            ;;
    esac
    local mosquitto run_dir conf
    mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    # Outside data/: that folder is edgemeta's, 0700, and the broker may run as
    # another user.
    run_dir=mosquitto/run/dev-$port
    conf=mosquitto/run/dev-$port.conf
    mkdir -p "$run_dir"
    if [ "$(id -u)" -eq 0 ]; then
        # mosquitto started as root switches to the `mosquitto` user (or
        # `nobody` where that user does not exist), which must own its data.
        if id mosquitto >/dev/null 2>&1; then
            chown mosquitto "$run_dir"
        else
            chown nobody "$run_dir"
        fi
    fi
    sed -e "s|^listener .*|listener $port 127.0.0.1|" \
        -e "s|^persistence_location .*|persistence_location $run_dir/|" \
        "$broker_conf" >"$conf"
    echo "run-dev: starting mosquitto on 127.0.0.1:$port (log: data/mosquitto.log)"
    "$mosquitto" -c "$conf" </dev/null >>data/mosquitto.log 2>&1 &
    broker_pid=$!
    trap stop_broker EXIT
    local tries=100
    until listening; do
        if ! kill -0 "$broker_pid" 2>/dev/null || [ "$tries" -eq 0 ]; then
            echo "run-dev: mosquitto did not start; tail of data/mosquitto.log:" >&2
            tail -n 20 data/mosquitto.log >&2
            exit 1
        fi
        tries=$((tries - 1))
        sleep 0.1
    done
}

# data/ holds the database (and secrets): private to its owner, as edgemeta
# makes it itself (`mkdir -p` would make it 0755).
[ -d data ] || mkdir -m 700 data

if listening; then
    echo "run-dev: using the MQTT broker at $host:$port"
else
    start_broker
fi

# edgemeta runs as a background job; this script turns Ctrl-C into one
# SIGTERM for it, and stops the broker only once edgemeta has exited.
.venv/bin/edgemeta run --config "$config" </dev/null &
service_pid=$!
trap 'kill -TERM "$service_pid" 2>/dev/null || true' INT TERM
status=0
while true; do
    wait "$service_pid" && status=0 || status=$?
    kill -0 "$service_pid" 2>/dev/null || break
done
exit "$status"
