#!/usr/bin/env bash
# Make sure nats-server (2.9 or newer, with JetStream and MQTT) is installed.
# As root with apt-get, installs the Debian package; otherwise says what to install.
set -euo pipefail

if command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing nats-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y nats-server
    exit 0
fi
cat >&2 <<MSG
error: nats-server not found.
\`make cluster\` and the cluster tests need nats-server 2.9 or newer:
  Debian/Ubuntu:  sudo apt-get install nats-server
MSG
exit 1
