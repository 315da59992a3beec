#!/usr/bin/env bash
# gen-dev-certs.sh - development TLS certificates and JWT secret for mqchat.
#
# Usage: broker-conf/gen-dev-certs.sh [--owner USER[:GROUP]] DIR
#
# Makes, in DIR (created if missing):
#   ca.key            dev CA private key (EC P-256)                 mode 0600
#   ca.crt            dev CA certificate (10 years); clients trust it
#   server.key        broker TLS private key (EC P-256)             mode 0600
#   server.crt        broker certificate signed by the dev CA, 825 days,
#                     subjectAltName DNS:localhost, IP:127.0.0.1, IP:::1
#   jwt-hs256.secret  HS256 secret for plugin_opt_jwt_hs256_secret_file and
#                     mqchat-token --secret-file: 32 random bytes written as
#                     64 lowercase HEX characters and a newline.  The plugin
#                     uses the file's bytes minus the trailing newline, so
#                     the key is the 64 ASCII hex characters (not the 32
#                     decoded bytes).                                mode 0600
#
# Idempotent: files that exist are kept. A server certificate that no longer
# verifies against ca.crt (the CA was remade) or expires within 30 days is
# remade. Delete a file to regenerate it.
#
# --owner: chown the private keys and the secret (and DIR) to USER[:GROUP]
# (needs root). Mosquitto started as root switches to user `mosquitto`
# before it reads them, so for a system broker use --owner mosquitto.
#
# For development only: the CA key sits next to everything else, unprotected.
set -euo pipefail

owner=""
while [ $# -gt 0 ]; do
    case "$1" in
    --owner) owner=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gen-dev-certs: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--owner USER[:GROUP]] DIR" >&2; exit 2; }
dir=$1
command -v openssl >/dev/null || { echo "gen-dev-certs: openssl not found" >&2; exit 1; }

umask 077
mkdir -p "$dir"
cd "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

made=()

# A private key, written atomically with mode 0600.
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/key.pem" 2>/dev/null
    chmod 0600 "$tmp/key.pem"
    mv "$tmp/key.pem" "$1"
}

# --- CA ------------------------------------------------------------------------
if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
    new_key ca.key
    cat >"$tmp/ca.ext" <<'EOF'
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = mqchat development CA
O = mqchat (development only)
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    openssl req -new -x509 -key ca.key -sha256 -days 3650 -config "$tmp/ca.ext" -out "$tmp/ca.crt"
    chmod 0644 "$tmp/ca.crt"
    mv "$tmp/ca.crt" ca.crt
    rm -f server.crt # signed by the old CA
    made+=(ca.key ca.crt)
fi

# --- server --------------------------------------------------------------------
if [ ! -s server.key ]; then
    new_key server.key
    rm -f server.crt
    made+=(server.key)
fi
server_ok() {
    [ -s server.crt ] &&
        openssl verify -CAfile ca.crt server.crt >/dev/null 2>&1 &&
        openssl x509 -in server.crt -noout -checkend $((30 * 86400)) >/dev/null 2>&1 &&
        # the certificate must belong to server.key
        [ "$(openssl x509 -in server.crt -noout -pubkey | openssl sha256)" = \
            "$(openssl pkey -in server.key -pubout | openssl sha256)" ]
}
if ! server_ok; then
    cat >"$tmp/server.ext" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
O = mqchat (development only)
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl req -new -key server.key -config "$tmp/server.ext" -out "$tmp/server.csr"
    # 825 days: the longest validity Apple platforms accept for TLS server
    # certificates (also from private CAs).
    openssl x509 -req -in "$tmp/server.csr" -CA ca.crt -CAkey ca.key \
        -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 \
        -extfile "$tmp/server.ext" -extensions v3_server -out "$tmp/server.crt" 2>/dev/null
    chmod 0644 "$tmp/server.crt"
    mv "$tmp/server.crt" server.crt
    server_ok || { echo "gen-dev-certs: the new server certificate does not verify" >&2; exit 1; }
    made+=(server.crt)
fi

# --- JWT secret ----------------------------------------------------------------
if [ ! -s jwt-hs256.secret ]; then
    openssl rand -hex 32 >"$tmp/secret"
    chmod 0600 "$tmp/secret"
    mv "$tmp/secret" jwt-hs256.secret
    made+=(jwt-hs256.secret)
fi

chmod 0600 ca.key server.key jwt-hs256.secret
chmod 0644 ca.crt server.crt
if [ -n "$owner" ]; then
    chown "$owner" . ca.key server.key jwt-hs256.secret ca.crt server.crt
    chmod 0750 .
fi

if [ ${#made[@]} -gt 0 ]; then
    echo "gen-dev-certs: made ${made[*]} in $(pwd)"
else
    echo "gen-dev-certs: everything already in $(pwd)"
fi
