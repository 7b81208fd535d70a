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

ROLES="edgemeta edged edgemesh edgefunction edgehub observer"

usage() {
    echo "usage: $0 [--force] [--dir DIR] DEVICE_ID" >&2
    exit 2
}

fail() {
    echo "$0: $1" >&2
    exit 1
}

repo_root=$(cd "$(dirname "$0")/.." && pwd)
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
command -v mosquitto_passwd >/dev/null 2>&1 ||
    fail "mosquitto_passwd not found (Debian: apt-get install mosquitto)"
command -v openssl >/dev/null 2>&1 || fail "openssl not found"

umask 077
devices_dir=$dir/devices
mkdir -p "$devices_dir"
chmod 700 "$devices_dir"
password_file=$devices_dir/$device.password

has_user() {
    awk -F: -v user="$1" '$1 == user { found = 1 } END { exit !found }' "$passwd_file"
}

if has_user "$device" && [ "$force" = true ]; then
    action=replaced
elif [ "$force" = true ]; then
    action=created
elif has_user "$device"; then
    [ -s "$password_file" ] ||
        fail "'$device' is in $passwd_file but $password_file is missing; --force gives it a new password"
    echo "kept $device"
    exit 0
elif [ -s "$password_file" ]; then
    # The clear password survived but passwd lost the user: re-add it.
    action=restored
else
    action=created
fi
if [ "$action" = restored ]; then
    password=$(cat "$password_file")
else
    password=$(openssl rand -hex 24)
    tmp=$password_file.tmp.$$
    printf '%s\n' "$password" >"$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$password_file"
fi
# -b puts the password on mosquitto_passwd's command line for the instant
# it runs; it replaces the user's line if there is one.
mosquitto_passwd -b "$passwd_file" "$device" "$password"
chmod 600 "$passwd_file"
echo "$action $device"
echo "password in $password_file"
