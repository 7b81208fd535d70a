#!/bin/sh
# Create the Mosquitto password file and one password per edgemeta role.
#
#   scripts/make-secrets.sh [--force] [--dir DIR] [--owner USER]
#
#   --dir DIR     output folder (default: $EDGEMETA_SECRETS_DIR, else
#                 mosquitto/secrets of this repository)
#   --force       give every role a new password (its client must get it);
#                 without it, what exists is kept
#   --owner USER  hand DIR and DIR/passwd to USER, the account the broker runs
#                 as; needed when mosquitto is started as root, because it
#                 switches to the `mosquitto` user before it reads
#                 password_file (run this script as root then)
#
# Writes, all private to the owner (folder 0700, files 0600):
#   DIR/passwd           hashed passwords, the broker's password_file
#   DIR/<role>.password  the role's password in clear, for its client
#                        (edgemeta: mqtt.password)
# Roles: edgemeta edged edgemesh edgefunction edgehub observer (see
# mosquitto/acl). Devices are added by scripts/add-device.sh.
#
# Running it again changes nothing, apart from adding a role that is missing
# from passwd. A role that is in passwd but whose DIR/<role>.password is gone
# is left alone (its client may hold the password) and the exit status is 1.
# Devices (DIR/devices/) are never touched. A running broker reads passwd
# again on SIGHUP:
#   kill -HUP "$(cat mosquitto/run/mosquitto.pid)"
set -eu

. "$(dirname "$0")/lib.sh"

usage() {
    echo "usage: $0 [--force] [--dir DIR] [--owner USER]" >&2
    exit 2
}

dir=${EDGEMETA_SECRETS_DIR:-$repo_root/mosquitto/secrets}
force=false
owner=

while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=true ;;
        --dir)
            [ $# -ge 2 ] || usage
            dir=$2
            shift
            ;;
        --owner)
            [ $# -ge 2 ] || usage
            owner=$2
            shift
            ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done

require_passwd_tools

# Everything created from here on is readable by its owner only.
umask 077
private_dir "$dir"

passwd_file=$dir/passwd
[ -e "$passwd_file" ] || : >"$passwd_file"
chmod 600 "$passwd_file"

status=0
for role in $ROLES; do
    set_password "$role" "$dir/$role.password"
    if [ "$action" = missing ]; then
        status=1
    else
        echo "$action $role"
    fi
done

# mosquitto_passwd rewrites the file; make sure it stayed private.
chmod 600 "$passwd_file"

if [ -n "$owner" ]; then
    # The broker needs the folder and passwd only, never the clear passwords.
    chown "$owner" "$dir" "$passwd_file"
fi

echo "secrets in $dir"
exit "$status"
