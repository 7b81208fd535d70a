#!/bin/sh
# Add a device to the Mosquitto password file.
#
#   scripts/add-device.sh [--force] [--dir DIR] DEVICE_ID
#
#   DEVICE_ID  the device's MQTT username: 1-64 letters, digits, '.', '_' or
#              '-', starting with a letter or digit, and not a role name. The
#              ACL lets it write <prefix>/meta/device/DEVICE_ID only.
#   --dir DIR  the secrets folder made by scripts/make-secrets.sh (default:
#              $EDGEMETA_SECRETS_DIR, else mosquitto/secrets of this repository)
#   --force    give an existing device a new password
#
# The password goes to DIR/devices/DEVICE_ID.password (0600) and is printed
# nowhere: copy it to the device. Running it again for a known device changes
# nothing. A running broker reads passwd again on SIGHUP:
#   kill -HUP "$(cat mosquitto/run/mosquitto.pid)"
set -eu

. "$(dirname "$0")/lib.sh"

usage() {
    echo "usage: $0 [--force] [--dir DIR] DEVICE_ID" >&2
    exit 2
}

dir=${EDGEMETA_SECRETS_DIR:-$repo_root/mosquitto/secrets}
force=false
device=

while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=true ;;
        --dir)
            [ $# -ge 2 ] || usage
            dir=$2
            shift
            ;;
        -h | --help) usage ;;
        -*) usage ;;
        *)
            [ -z "$device" ] || usage
            device=$1
            ;;
    esac
    shift
done
[ -n "$device" ] || usage

# The id is substituted for %u in the ACL pattern and becomes one topic
# level: "/", "+", "#" would widen what the device may write, and ":" would
# break the passwd format.
case "$device" in
    [A-Za-z0-9]*) ;;
    *) fail "DEVICE_ID must start with a letter or digit, got '$device'" ;;
esac
case "$device" in
    *[!A-Za-z0-9._-]*) fail "DEVICE_ID must be letters, digits, '.', '_' or '-', got '$device'" ;;
esac
[ "${#device}" -le 64 ] || fail "DEVICE_ID must be at most 64 characters"
for role in $ROLES; do
    [ "$device" != "$role" ] || fail "'$device' is a role, not a device"
done

passwd_file=$dir/passwd
[ -f "$passwd_file" ] || fail "$passwd_file not found: run scripts/make-secrets.sh first"
require_passwd_tools

umask 077
private_dir "$dir/devices"
password_file=$dir/devices/$device.password

set_password "$device" "$password_file"
case "$action" in
    missing) exit 1 ;;
    kept)
        echo "kept $device"
        exit 0
        ;;
esac
chmod 600 "$passwd_file"
echo "$action $device"
echo "password in $password_file"
