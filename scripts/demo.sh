#!/usr/bin/env bash
# The demo of scripts/run.sh: python3 + paho + the wire schema against the
# running stack (see scripts/demo.py). Run it again: seqs continue.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .run/pb
protoc --python_out=.run/pb -I proto proto/mqchat.proto
/usr/bin/python3 scripts/demo.py "$(cat .run/port)" .run/jwt.secret .run/pb
# The operator's view, with standard mosquitto tooling ($CONTROL API).
if [ -s .run/ops.password ]; then
  echo "operator: getStats over \$CONTROL/mqchat/v1 (mosquitto_rr, user ops):"
  mosquitto_rr -p "$(cat .run/port)" -u ops -P "$(cat .run/ops.password)" -W 5 \
    -t '$CONTROL/mqchat/v1' -e '$CONTROL/mqchat/v1/response' \
    -m '{"commands":[{"command":"getStats"}]}'
fi
