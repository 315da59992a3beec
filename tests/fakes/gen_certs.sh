#!/bin/sh
# gen_certs.sh <dir> — make throw-away credentials for the fake push providers.
#
# The fakes speak TLS like Apple and Google do, and check the same signed
# tokens, so a test run needs: a CA the client trusts, a server certificate
# for 127.0.0.1/localhost signed by it, an APNs signing key (EC P-256, PKCS#8,
# the ".p8" form Apple hands out), and an FCM service-account JSON with an RSA
# 2048 key. Everything is made fresh with the openssl CLI; nothing is secret.
#
# Writes into <dir>:
#   ca.pem, ca-key.pem          self-signed test CA (give ca.pem to the client)
#   server.pem, server-key.pem  server cert (SAN IP:127.0.0.1, DNS:localhost), EC P-256 key
#   apns-key.p8                 APNs auth key (EC P-256 private key, PKCS#8 PEM)
#   fcm-sa.json                 service account: type, project_id, private_key_id,
#                               private_key, client_email, client_id, token_uri, ...
#
# fcm-sa.json's token_uri is the placeholder https://127.0.0.1:FAKE_PUSH_PORT/token.
# The port is only known once fake_push.js is listening: the fake replaces
# FAKE_PUSH_PORT by its own port when it checks a JWT's "aud", and with
# --write-sa <file> it writes a copy with the real port for the client to use.
set -eu

if [ $# -ne 1 ]; then
  echo "usage: $0 <dir>" >&2
  exit 2
fi
dir=$1
mkdir -p "$dir"
cd "$dir"
umask 077

days=3650
project=mqchat-fake

# 1. The CA.
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
  -keyout ca-key.pem -out ca.pem -subj "/CN=mqchat fake push test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" 2>/dev/null

# 2. The server certificate, signed by the CA.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server-key.pem 2>/dev/null
openssl req -new -key server-key.pem -subj "/CN=localhost" -out server.csr 2>/dev/null
cat > server.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
  -sha256 -days "$days" -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext ca.srl

# 3. The APNs signing key (Apple's .p8 is exactly a PKCS#8 EC P-256 private key).
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out apns-key.p8 2>/dev/null

# 4. The FCM service account (RSA 2048, PKCS#8, PEM escaped into a JSON string).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out fcm-sa-key.pem 2>/dev/null
key_json=$(awk '{ printf "%s\\n", $0 }' fcm-sa-key.pem)
key_id=$(openssl rand -hex 20)
cat > fcm-sa.json <<EOF
{
  "type": "service_account",
  "project_id": "$project",
  "private_key_id": "$key_id",
  "private_key": "$key_json",
  "client_email": "pushd@$project.iam.gserviceaccount.com",
  "client_id": "100000000000000000001",
  "auth_uri": "https://accounts.google.com/o/oauth2/auth",
  "token_uri": "https://127.0.0.1:FAKE_PUSH_PORT/token",
  "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
  "universe_domain": "googleapis.com"
}
EOF
rm -f fcm-sa-key.pem

# Readable by the user who made them (a test may run the client as the same user).
chmod 600 ca-key.pem server-key.pem apns-key.p8 fcm-sa.json
chmod 644 ca.pem server.pem
