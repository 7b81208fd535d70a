#!/usr/bin/env bash
# Make sure the Mosquitto broker and its command-line clients are installed.
# As root with apt-get, installs the Debian packages; otherwise says what to install.
set -euo pipefail

missing=()
for cmd in mosquitto mosquitto_pub mosquitto_sub; do
    # Debian installs the broker in /usr/sbin, which a user's PATH may lack.
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
        missing+=("$cmd")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing mosquitto and mosquitto-clients (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y mosquitto mosquitto-clients
    exit 0
fi

cat >&2 <<MSG
error: missing ${missing[*]}.
edgemeta's tests and \`make run\` need the Mosquitto MQTT broker (2.0 or newer)
and its clients. Install them, then run make again:
  Debian/Ubuntu:  sudo apt-get install mosquitto mosquitto-clients
  Fedora:         sudo dnf install mosquitto
  macOS:          brew install mosquitto
MSG
exit 1
