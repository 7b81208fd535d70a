#!/usr/bin/env bash
# Run edgemeta on the secure broker on this machine (`make run-secure` calls this):
#
#   scripts/run-secure.sh [CONFIG [EDGEMETA-RUN-OPTION...]]
#
#   CONFIG  edgemeta's configuration (default conf/edge-secure.yaml), e.g.
#           scripts/run-secure.sh conf/edge-secure.yaml --log-level DEBUG
#
# 1. Makes what is missing and keeps what exists: the passwords
#    (scripts/make-secrets.sh), the CA and the certificates
#    (scripts/make-certs.sh), the key of CONFIG's database.secretKeyFile
#    (edgemeta keygen). As root, the broker's files are handed to the
#    `mosquitto` user, which the broker switches to before reading them.
# 2. Starts mosquitto with mosquitto/production.conf from the repository root
#    (log: mosquitto/run/mosquitto.log).
# 3. Runs edgemeta with CONFIG until Ctrl-C or SIGTERM, then stops the broker.
#    The exit status is edgemeta's.
#
# Ports: those of production.conf's listeners, plain MQTT on 127.0.0.1:1883
# and TLS on 8883. On a machine whose own Mosquitto service already holds
# 127.0.0.1:1883, the plain listener of this run moves to the next free port
# and the script says so; RUN_SECURE_PLAIN_PORT=N chooses it. edgemeta itself
# uses the TLS port, which must be free (RUN_SECURE_TLS_PORT=N chooses
# another; edgemeta is then told with EDGEMETA_MQTT_PORT). With other ports
# the broker runs a copy of production.conf, mosquitto/run/production.conf,
# that differs in its listener lines only.
#
# PYTHON (default .venv/bin/python) is the Python that runs edgemeta.
set -euo pipefail

cd "$(dirname "$0")/.."
# Job control: each background job gets its own process group, so Ctrl-C in
# the terminal reaches only this script, not the broker nor edgemeta.
set -m

config=${1:-conf/edge-secure.yaml}
[ $# -gt 0 ] && shift
python=${PYTHON:-.venv/bin/python}
shipped_conf=mosquitto/production.conf
rundir=mosquitto/run
broker_log=$rundir/mosquitto.log
broker_pid=""
service_pid=""

say() {
    echo "run-secure: $*"
}

die() {
    echo "run-secure: $*" >&2
    exit 1
}

listening() {
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ 127.0.0.1 "$1" 2>/dev/null
}

[ -f "$config" ] || die "$config not found"
[ -x "$python" ] || command -v "$python" >/dev/null 2>&1 ||
    die "$python not found: run \`make venv\` (or set PYTHON)"
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosquitto" ] || die "mosquitto not found: run \`make deps-system\`"

# -- 1. secrets, certificates, key -------------------------------------------
owner=()
if [ "$(id -u)" -eq 0 ]; then
    # production.conf sets no `user`: started as root, Mosquitto 2.0 switches
    # to `mosquitto` before it reads the password file, the ACL and the TLS key.
    id mosquitto >/dev/null 2>&1 ||
        die "as root the broker runs as the user 'mosquitto', which does not exist" \
            "(Debian's mosquitto package makes it; or: useradd --system mosquitto)"
    owner=(--owner mosquitto)
fi
scripts/make-secrets.sh "${owner[@]}" ||
    die "scripts/make-secrets.sh failed (see above)"
scripts/make-certs.sh "${owner[@]}" ||
    die "scripts/make-certs.sh failed (see above)"

key_file=$(
    "$python" - "$config" <<'PY'
import sys

import yaml

try:
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    print(((doc.get("database") or {}).get("secretKeyFile")) or "")
except (OSError, yaml.YAMLError, AttributeError):
    print("")  # edgemeta itself reports a bad config
PY
)
if [ -n "$key_file" ] && [ ! -e "$key_file" ]; then
    key_dir=$(dirname "$key_file")
    if [ ! -d "$key_dir" ]; then
        mkdir -p "$key_dir"
        chmod 700 "$key_dir"
    fi
    "$python" -m edgemeta keygen "$key_file"
fi

# -- 2. the broker ---------------------------------------------------------------
read -r plain_port_shipped plain_address < <(awk '$1 == "listener" { print $2, $3; exit }' "$shipped_conf")
tls_port_shipped=$(awk '$1 == "listener" && ++n == 2 { print $2; exit }' "$shipped_conf")
[ -n "$plain_port_shipped" ] && [ -n "$tls_port_shipped" ] ||
    die "$shipped_conf: expected two listeners (plain, TLS)"
plain_port=$plain_port_shipped

tls_port=${RUN_SECURE_TLS_PORT:-$tls_port_shipped}
if listening "$tls_port"; then
    die "port $tls_port (the TLS listener) is taken: a broker from an earlier run" \
        "(pid file $rundir/mosquitto.pid)? Stop it, or set RUN_SECURE_TLS_PORT to a free port"
fi
if [ -n "${RUN_SECURE_PLAIN_PORT:-}" ]; then
    if listening "$RUN_SECURE_PLAIN_PORT"; then
        die "RUN_SECURE_PLAIN_PORT=$RUN_SECURE_PLAIN_PORT: 127.0.0.1:$RUN_SECURE_PLAIN_PORT is taken"
    fi
    plain_port=$RUN_SECURE_PLAIN_PORT
elif listening "$plain_port"; then
    taken=$plain_port
    plain_port=$((taken + 1))
    while listening "$plain_port" || [ "$plain_port" = "$tls_port" ]; do
        plain_port=$((plain_port + 1))
        [ "$plain_port" -lt $((taken + 100)) ] ||
            die "127.0.0.1:$taken and the 99 ports after it are taken; set RUN_SECURE_PLAIN_PORT"
    done
    say "127.0.0.1:$taken is taken by another program (often the machine's own" \
        "Mosquitto service: \`systemctl stop mosquitto\` frees it); this run's plain" \
        "listener is 127.0.0.1:$plain_port instead (set RUN_SECURE_PLAIN_PORT to choose)"
fi

mkdir -p "$rundir"
if [ "${#owner[@]}" -gt 0 ]; then
    # Persistence and the pid file are written by the broker's user.
    chown mosquitto "$rundir"
fi
broker_conf=$shipped_conf
if [ "$tls_port" != "$tls_port_shipped" ] || [ "$plain_port" != "$plain_port_shipped" ]; then
    broker_conf=$rundir/production.conf
    {
        echo "# Made by scripts/run-secure.sh from $shipped_conf: only the listener ports differ."
        awk -v plain="$plain_port" -v addr="$plain_address" -v tls="$tls_port" '
            $1 == "listener" { n++; print (n == 1 ? "listener " plain " " addr : "listener " tls); next }
            { print }' "$shipped_conf"
    } >"$broker_conf.tmp"
    chmod 644 "$broker_conf.tmp"
    mv -f "$broker_conf.tmp" "$broker_conf"
fi

stop_broker() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        say "stopping mosquitto (pid $broker_pid)"
        kill -TERM "$broker_pid"
        wait "$broker_pid" || true
    fi
}

say "starting mosquitto with $broker_conf: TLS on port $tls_port, plain MQTT on" \
    "127.0.0.1:$plain_port (log: $broker_log)"
"$mosquitto" -c "$broker_conf" </dev/null >>"$broker_log" 2>&1 &
broker_pid=$!
trap stop_broker EXIT
tries=100
until listening "$tls_port"; do
    if ! kill -0 "$broker_pid" 2>/dev/null || [ "$tries" -eq 0 ]; then
        echo "run-secure: mosquitto did not start; tail of $broker_log:" >&2
        tail -n 20 "$broker_log" >&2
        if [ "${#owner[@]}" -gt 0 ]; then
            echo "run-secure: (the user 'mosquitto' must be able to reach $(pwd))" >&2
        fi
        exit 1
    fi
    tries=$((tries - 1))
    sleep 0.1
done

# -- 3. edgemeta -------------------------------------------------------------------
env_port=()
if [ "$tls_port" != "$tls_port_shipped" ]; then
    env_port=("EDGEMETA_MQTT_PORT=$tls_port")
fi
say "running edgemeta with $config (Ctrl-C stops it, then the broker)"
# edgemeta runs as a background job; this script turns Ctrl-C into one
# SIGTERM for it, and stops the broker only once edgemeta has exited.
env "${env_port[@]}" "$python" -m edgemeta run --config "$config" "$@" </dev/null &
service_pid=$!
trap 'kill -TERM "$service_pid" 2>/dev/null || true' INT TERM
status=0
while true; do
    wait "$service_pid" && status=0 || status=$?
    kill -0 "$service_pid" 2>/dev/null || break
done
exit "$status"
