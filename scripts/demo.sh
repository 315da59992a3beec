#!/usr/bin/env bash
# The demo of scripts/run.sh: python3 + paho + the wire schema against the
# running stack (see scripts/demo.py). Run it again: seqs continue.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .run/pb
protoc --python_out=.run/pb -I proto proto/mqchat.proto
exec /usr/bin/python3 scripts/demo.py "$(cat .run/port)" .run/jwt.secret .run/pb
