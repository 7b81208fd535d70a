# Shared by the scripts/render-*.sh config renderers (POSIX sh, sourced):
# argument checks that fail with exit status 2 and a message naming the
# argument, and the bridge options --conf-d and --keepalive.

fail() {
    echo "$0: $1" >&2
    exit 2
}

check_port() {
    case "$2" in
        '' | *[!0-9]*) fail "$1 must be a port number, got '$2'" ;;
    esac
    [ "$2" -ge 1 ] && [ "$2" -le 65535 ] || fail "$1 must be within 1-65535, got '$2'"
}

# One topic level and a client id: no "/", "+", "#", spaces or sed syntax.
check_name() {
    case "$2" in
        '' | *[!A-Za-z0-9._-]*) fail "$1 must be letters, digits, '.', '_' or '-', got '$2'" ;;
    esac
}

check_host() {
    case "$2" in
        '' | *[!A-Za-z0-9.-]*) fail "$1 must be a host name or IPv4 address, got '$2'" ;;
    esac
}

# An absolute directory that can stand in a sed replacement; prints it with a
# trailing "/" (the Mosquitto manual asks for one on persistence_location).
absolute_dir() {
    case "$2" in
        /*) ;;
        *) fail "$1 must be an absolute path, got '$2'" ;;
    esac
    case "$2" in
        *[\|\&\\\"[:space:]]*) fail "$1 must not contain '|', '&', '\\', '\"' or spaces" ;;
    esac
    case "$2" in
        */) echo "$2" ;;
        *) echo "$2/" ;;
    esac
}

# Reads --conf-d and --keepalive SECONDS off the front of the arguments into
# conf_d, keepalive (preset it to the default) and shifted (how many to shift);
# a usage error calls usage.
bridge_options() {
    conf_d=false
    shifted=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --conf-d) conf_d=true; shift; shifted=$((shifted + 1)) ;;
            --keepalive)
                [ $# -ge 2 ] || usage
                keepalive=$2
                shift 2
                shifted=$((shifted + 2))
                ;;
            -*) usage ;;
            *) break ;;
        esac
    done
    case "$keepalive" in
        '' | *[!0-9]*) fail "--keepalive must be a whole number of seconds, got '$keepalive'" ;;
    esac
    [ "$keepalive" -ge 2 ] && [ "$keepalive" -le 65535 ] ||
        fail "--keepalive must be within 2-65535, got '$keepalive'"
}

# Writes a bridge TEMPLATE to stdout with the lines of a standalone broker kept
# (or dropped with --conf-d) and @KEEPALIVE@, @NODE@, @LOCAL_PORT@ and
# @DATA_DIR@ filled in; further sed arguments fill in the rest.
render_bridge() { # TEMPLATE [SED-ARGUMENT...]
    template=$1
    shift
    [ -r "$template" ] || fail "template not found: $template"
    if $conf_d; then
        standalone='/^# BEGIN standalone$/,/^# END standalone$/d'
    else
        standalone='/^# \(BEGIN\|END\) standalone$/d'
    fi
    sed \
        -e "$standalone" \
        -e "s|@KEEPALIVE@|$keepalive|g" \
        -e "s|@NODE@|$node|g" \
        -e "s|@LOCAL_PORT@|$local_port|g" \
        -e "s|@DATA_DIR@|$data_dir|g" \
        "$@" \
        "$template"
}
