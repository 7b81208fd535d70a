#!/bin/sh
# Create a local CA, the broker's TLS certificate and client certificates.
#
#   scripts/make-certs.sh [--force] [--dir DIR] [--san SAN]... [--client NAME]...
#                         [--owner USER]
#
#   --dir DIR      output folder (default: $EDGEMETA_CERTS_DIR, else
#                  mosquitto/certs of this repository)
#   --san SAN      one more subjectAltName of the broker certificate, e.g.
#                  DNS:edge-node-1.example or IP:192.0.2.10, for clients that
#                  reach the TLS listener from the network (repeatable)
#   --client NAME  one more client certificate (CN=NAME) besides edgemeta
#                  (repeatable)
#   --force        make everything new: a new CA, so every client must get the
#                  new ca.crt
#   --owner USER   hand DIR and the files the broker reads (ca.crt,
#                  server.crt, server.key) to USER, the account the broker runs
#                  as; needed when mosquitto is started as root, because it
#                  switches to the `mosquitto` user before it loads them
#
# Writes (folder 0700, keys 0600, certificates 0644):
#   ca.crt ca.key            the CA; ca.crt is what clients trust
#                            (edgemeta: mqtt.tls.caFile)
#   server.crt server.key    the broker, CN localhost, subjectAltName
#                            DNS:localhost, IP:127.0.0.1 and every --san
#   edgemeta.crt edgemeta.key  client certificate of edgemeta (optional for
#                            the broker: require_certificate is false)
#
# Running it again keeps what exists. A certificate or key that is missing, or
# a certificate the current CA did not sign, is made again; so is the broker
# certificate when the subjectAltNames asked for changed. A running broker
# loads a new server certificate on SIGHUP.
set -eu

CA_DAYS=3650
LEAF_DAYS=825

. "$(dirname "$0")/lib.sh"

usage() {
    echo "usage: $0 [--force] [--dir DIR] [--san SAN]... [--client NAME]... [--owner USER]" >&2
    exit 2
}

dir=${EDGEMETA_CERTS_DIR:-$repo_root/mosquitto/certs}
force=false
owner=
sans="DNS:localhost,IP:127.0.0.1"
clients="edgemeta"

while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=true ;;
        --dir)
            [ $# -ge 2 ] || usage
            dir=$2
            shift
            ;;
        --san)
            [ $# -ge 2 ] || usage
            case "$2" in
                DNS:*[!A-Za-z0-9.*-]* | IP:*[!0-9.]*) fail "--san: unexpected character in '$2'" ;;
                DNS:?* | IP:?*) ;;
                *) fail "--san takes DNS:<name> or IP:<IPv4 address>, got '$2'" ;;
            esac
            sans="$sans,$2"
            shift
            ;;
        --client)
            [ $# -ge 2 ] || usage
            case "$2" in
                [A-Za-z0-9]*) ;;
                *) fail "--client NAME must start with a letter or digit, got '$2'" ;;
            esac
            case "$2" in
                *[!A-Za-z0-9._-]*) fail "--client NAME must be letters, digits, '.', '_' or '-'" ;;
            esac
            clients="$clients $2"
            shift
            ;;
        --owner)
            [ $# -ge 2 ] || usage
            owner=$2
            shift
            ;;
        *) usage ;;
    esac
    shift
done

require_openssl

# Keys are created readable by their owner only.
umask 077
private_dir "$dir"
work=$(mktemp -d "$dir/.make-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# P-256 keys: small, fast, and supported by Mosquitto, Python's ssl and the
# TLS stacks of common devices.
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# A random 128-bit serial per certificate: no serial file to keep.
new_serial() {
    echo "0x$(openssl rand -hex 16)"
}

# Move a finished key and certificate into place (same file system: atomic).
install_pair() {
    chmod 600 "$work/$1.key"
    chmod 644 "$work/$1.crt"
    mv -f "$work/$1.key" "$dir/$1.key"
    mv -f "$work/$1.crt" "$dir/$1.crt"
}

# True when NAME.crt and NAME.key exist, the certificate was signed by the
# current CA, and the key belongs to the certificate.
pair_ok() {
    [ -s "$dir/$1.crt" ] && [ -s "$dir/$1.key" ] || return 1
    openssl verify -CAfile "$dir/ca.crt" "$dir/$1.crt" >/dev/null 2>&1 || return 1
    cert_pub=$(openssl x509 -in "$dir/$1.crt" -noout -pubkey 2>/dev/null) || return 1
    key_pub=$(openssl pkey -in "$dir/$1.key" -pubout 2>/dev/null) || return 1
    [ "$cert_pub" = "$key_pub" ]
}

# The subjectAltName of NAME.crt as openssl prints it, e.g.
# "DNS:localhost, IP Address:127.0.0.1".
san_of() {
    openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | sed -n '2,$p' | tr -d ' \n'
}

# Sign a new key for NAME with the CA. $2: subject, $3: extensions file.
sign_pair() {
    new_key "$work/$1.key"
    openssl req -new -key "$work/$1.key" -subj "$2" -out "$work/$1.csr"
    openssl x509 -req -in "$work/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -set_serial "$(new_serial)" -days "$LEAF_DAYS" -sha256 \
        -extfile "$3" -out "$work/$1.crt" 2>/dev/null
    install_pair "$1"
}

ca_new=false
if [ "$force" = true ] || [ ! -s "$dir/ca.crt" ] || [ ! -s "$dir/ca.key" ]; then
    new_key "$work/ca.key"
    openssl req -new -x509 -key "$work/ca.key" -sha256 -days "$CA_DAYS" \
        -subj "/CN=edgemeta local CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$work/ca.crt"
    install_pair ca
    ca_new=true
    echo "created ca"
else
    echo "kept ca"
fi

cat >"$work/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$sans
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
# The SAN list as openssl prints it, to compare with the existing certificate.
want_san=$(printf '%s' "$sans" | sed 's/IP:/IPAddress:/g')
if [ "$ca_new" = false ] && pair_ok server &&
    [ "$(san_of "$dir/server.crt")" = "$want_san" ]; then
    echo "kept server"
else
    sign_pair server "/CN=localhost" "$work/server.ext"
    echo "created server ($sans)"
fi

cat >"$work/client.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
for client in $clients; do
    if [ "$ca_new" = false ] && pair_ok "$client"; then
        echo "kept $client"
    else
        sign_pair "$client" "/CN=$client" "$work/client.ext"
        echo "created $client"
    fi
done

if [ -n "$owner" ]; then
    # The broker needs these only; the CA key and client keys stay private.
    chown "$owner" "$dir" "$dir/ca.crt" "$dir/server.crt" "$dir/server.key"
fi

echo "certificates in $dir"
