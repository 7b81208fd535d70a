# What make-secrets.sh, add-device.sh and make-certs.sh share: sourced by
# them (POSIX sh, under `set -eu`), never run. Each script has its own usage().

# The broker's roles (see mosquitto/acl); no device may take one of these names.
ROLES="edgemeta edged edgemesh edgefunction edgehub observer"

repo_root=$(cd "$(dirname "$0")/.." && pwd)

fail() {
    echo "$0: $1" >&2
    exit 1
}

require_openssl() {
    command -v openssl >/dev/null 2>&1 || fail "openssl not found"
}

require_passwd_tools() {
    command -v mosquitto_passwd >/dev/null 2>&1 ||
        fail "mosquitto_passwd not found (Debian: apt-get install mosquitto)"
    require_openssl
}

# A folder only its owner may enter (what is created in it is private by umask 077).
private_dir() {
    mkdir -p "$1"
    chmod 700 "$1"
}

# True when USER has a line in $passwd_file (user:hash).
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

# Give USER a password in $passwd_file and its clear copy in FILE: with
# $force a new one; otherwise a user already in passwd keeps its own, and one
# whose FILE survived while passwd lost it is added again from FILE. Sets
# $action: created, replaced, restored, kept, or missing (USER is in passwd
# but FILE is gone: its client may still hold the password, so only --force
# may change it; the message is on stderr).
# Call it as a command of its own, not in a condition: `set -e` must still
# stop the script when mosquitto_passwd fails.
set_password() {
    if has_user "$1" && [ "$force" = true ]; then
        action=replaced
    elif [ "$force" = true ]; then
        action=created
    elif has_user "$1"; then
        if [ -s "$2" ]; then
            action=kept
        else
            action=missing
            echo "$0: '$1' is in $passwd_file but $2 is missing;" \
                "--force gives it a new password" >&2
        fi
        return 0
    elif [ -s "$2" ]; then
        # The clear password survived but passwd lost the user: re-add it.
        action=restored
    else
        action=created
    fi
    if [ "$action" = restored ]; then
        password=$(cat "$2")
    else
        password=$(new_password)
        write_password "$2" "$password"
    fi
    # -b puts the password on mosquitto_passwd's command line for the instant
    # it runs; it replaces the user's line if there is one.
    mosquitto_passwd -b "$passwd_file" "$1" "$password"
}
