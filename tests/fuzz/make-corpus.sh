#!/bin/sh
# Generate the fuzz seed corpus: valid (and a few near-valid) encoded
# mqchat.v1 messages for fuzz_wire, and signed tokens for fuzz_jwt.
# Nothing generated is committed; the build runs this script into its
# binary dir (tests/fuzz/replay.cmake), and fuzz runs use that output plus
# the committed text seeds and reproducers in tests/fuzz/corpus/<target>/.
#
# Usage: tests/fuzz/make-corpus.sh OUTDIR
#   writes OUTDIR/wire/*.pb and OUTDIR/jwt/*.tok
# Env: PROTOC  protoc or protoc-c (both have --encode); default: protoc-c
#      OPENSSL default: openssl (tokens are skipped, with a warning, if absent)
set -eu

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
out=$1
here=$(cd "$(dirname "$0")" && pwd)
proto_dir=$here/../../proto
PROTOC=${PROTOC:-protoc-c}
OPENSSL=${OPENSSL:-openssl}
# Keep in step with FUZZ_JWT_SECRET in fuzz_jwt.c.
secret=mqchat-fuzz-secret-0123456789abcdef

mkdir -p "$out/wire" "$out/jwt"

# enc NAME TYPE: encode the text-format message on stdin as mqchat.v1.TYPE.
enc() {
  "$PROTOC" --encode="mqchat.v1.$2" -I"$proto_dir" "$proto_dir/mqchat.proto" \
    >"$out/wire/$1.pb.tmp"
  mv "$out/wire/$1.pb.tmp" "$out/wire/$1.pb"
}

enc send-text SendRequest <<'EOF'
client_msg_id: "m-0001"
conversation_id: "d:alice:bob"
body: "hello bob"
content_type: "text/plain"
EOF

enc send-group-media SendRequest <<'EOF'
client_msg_id: "dev1:42"
conversation_id: "g:abc123"
body: "\001\002\003 ciphertext"
content_type: "image/jpeg"
reply_to_seq: 7
media {
  url: "https://blobs.example/x/1"
  mime_type: "image/jpeg"
  size: 123456
  sha256: "0123456789abcdef0123456789abcdef"
  width: 640
  height: 480
  key: "k0123456789abcdef0123456789abcde"
  thumbnail: "\377\330\377\340 tiny jpeg"
}
media {
  url: "https://blobs.example/x/2"
  mime_type: "audio/ogg"
  duration_ms: 3000
}
EOF

enc send-bad-conv SendRequest <<'EOF'
client_msg_id: "m-0002"
conversation_id: "d:bob:alice"
body: "x"
EOF

enc req-sync Request <<'EOF'
request_id: "r1"
sync { after_inbox_seq: 41 limit: 100 }
EOF

enc req-cursor-ack Request <<'EOF'
request_id: "r2"
cursor_ack { inbox_seq: 42 }
EOF

enc req-history Request <<'EOF'
request_id: "r3"
history { conversation_id: "d:alice:bob" before_seq: 100 limit: 50 }
EOF

enc req-group-create Request <<'EOF'
request_id: "r4"
group_create { title: "team" member_ids: "bob" member_ids: "carol" }
EOF

enc req-group-add Request <<'EOF'
request_id: "r5"
group_add { conversation_id: "g:abc123" user_ids: "dave" }
EOF

enc req-group-remove Request <<'EOF'
request_id: "r6"
group_remove { conversation_id: "g:abc123" user_ids: "dave" user_ids: "erin" }
EOF

enc req-group-leave Request <<'EOF'
request_id: "r7"
group_leave { conversation_id: "g:abc123" }
EOF

enc req-group-set-role Request <<'EOF'
request_id: "r8"
group_set_role { conversation_id: "g:abc123" user_ids: "bob" role: ROLE_ADMIN }
EOF

enc req-list-members Request <<'EOF'
request_id: "r9"
list_members { conversation_id: "g:abc123" }
EOF

enc req-list-conversations Request <<'EOF'
request_id: "r10"
list_conversations { after_conversation_id: "d:alice:bob" limit: 10 }
EOF

enc req-presence-watch Request <<'EOF'
request_id: "r11"
presence_watch { user_ids: "bob" }
EOF

enc req-push-register Request <<'EOF'
request_id: "r12"
push_register { platform: PUSH_PLATFORM_FCM token: "tok" app_id: "app" }
EOF

enc receipt-read Receipt <<'EOF'
conversation_id: "d:alice:bob"
type: RECEIPT_TYPE_READ
seq: 12
EOF

enc receipt-delivered Receipt <<'EOF'
conversation_id: "g:abc123"
type: RECEIPT_TYPE_DELIVERED
seq: 1
EOF

enc typing Typing <<'EOF'
conversation_id: "d:alice:bob"
typing: true
EOF

# Regressions: inputs that broke a fuzz_wire invariant, replayed by ctest.
# Field number 0 behind an overlong tag (0x85 0x00 = field 0, fixed32):
# protobuf-c decodes it as an unknown field but packs it back as 0x05,
# which no parser reads. Found by fuzz_wire (minimized), top level ...
printf '\205\000\040\140\000\053' >"$out/wire/regress-field0.pb"
# ... and inside a MediaRef of an otherwise valid SendRequest, which
# rules/send.c stores verbatim: the stored Message then no longer decodes.
printf '\012\002m1\022\013d:alice:bob\052\012\201\000\000\000\000\000\000\000\000\000' \
  >"$out/wire/regress-field0-in-media.pb"

# Tokens: HS256 over the committed claims, signed with the fuzz secret.
if ! command -v "$OPENSSL" >/dev/null 2>&1; then
  echo "make-corpus.sh: $OPENSSL not found; no token seeds" >&2
  exit 0
fi
b64url() { "$OPENSSL" base64 -A | tr '+/' '-_' | tr -d '='; }
# tok NAME CLAIMS_JSON
tok() {
  h=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
  p=$(printf '%s' "$2" | b64url)
  s=$(printf '%s' "$h.$p" | "$OPENSSL" dgst -sha256 -hmac "$secret" -binary | b64url)
  printf '%s' "$h.$p.$s" >"$out/jwt/$1.tok"
}
tok valid '{"sub":"alice","did":"phone","exp":1800000000}'
tok valid-full '{"sub":"alice","did":"phone","iat":1690000000,"nbf":1690000000,"exp":1800000000,"iss":"https://auth.example","aud":["other","mqchat"]}'
tok aud-string '{"sub":"bob","did":"tab-1","exp":1800000000,"iss":"https://auth.example","aud":"mqchat"}'
tok expired '{"sub":"alice","did":"phone","exp":1600000000}'
tok not-yet '{"sub":"alice","did":"phone","nbf":1750000000,"exp":1800000000}'
tok bad-id '{"sub":"al:ice","did":"phone","exp":1800000000}'
