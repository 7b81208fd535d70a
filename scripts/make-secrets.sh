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

ROLES="edgemeta edged edgemesh edgefunction edgehub observer"

usage() {
    echo "usage: $0 [--force] [--dir DIR] [--owner USER]" >&2
    exit 2
}

fail() {
    echo "$0: $1" >&2
    exit 1
}

repo_root=$(cd "$(dirname "$0")/.." && pwd)
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

command -v mosquitto_passwd >/dev/null 2>&1 ||
    fail "mosquitto_passwd not found (Debian: apt-get install mosquitto)"
command -v openssl >/dev/null 2>&1 || fail "openssl not found"

# Everything created from here on is readable by its owner only.
umask 077
mkdir -p "$dir"
chmod 700 "$dir"

passwd_file=$dir/passwd
[ -e "$passwd_file" ] || : >"$passwd_file"
chmod 600 "$passwd_file"

# True when USER has a line in the password file (user:hash).
has_user() {
    awk -F: -v user="$1" '$1 == user { found = 1 } END { exit !found }' "$passwd_file"
}

# 24 random bytes as 48 hex digits: 192 bits, and no character that needs
# quoting in YAML, a shell or a URL.
new_password() {
    openssl rand -hex 24
}

# Write the password to FILE through a temporary file, so that FILE is never
# seen half-written.
write_password() {
    tmp=$1.tmp.$$
    printf '%s\n' "$2" >"$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$1"
}

status=0
for role in $ROLES; do
    password_file=$dir/$role.password
    if has_user "$role" && [ "$force" = true ]; then
        action=replaced
    elif [ "$force" = true ]; then
        action=created
    elif has_user "$role"; then
        if [ -s "$password_file" ]; then
            echo "kept $role"
        else
            # Its client may still hold the old password: only --force may
            # change it.
            echo "$0: $role is in $passwd_file but $password_file is missing;" \
                "--force gives it a new password" >&2
            status=1
        fi
        continue
    elif [ -s "$password_file" ]; then
        # The clear password survived but passwd lost the user: re-add it.
        action=restored
    else
        action=created
    fi
    if [ "$action" = restored ]; then
        password=$(cat "$password_file")
    else
        password=$(new_password)
        write_password "$password_file" "$password"
    fi
    # -b puts the password on mosquitto_passwd's command line for the instant
    # it runs; it replaces the user's line if there is one.
    mosquitto_passwd -b "$passwd_file" "$role" "$password"
    echo "$action $role"
done

# mosquitto_passwd rewrites the file; make sure it stayed private.
chmod 600 "$passwd_file"

if [ -n "$owner" ]; then
    # The broker needs the folder and passwd only, never the clear passwords.
    chown "$owner" "$dir" "$passwd_file"
fi

echo "secrets in $dir"
exit "$status"
