#!/usr/bin/env bash
# The demo of scripts/run.sh: python3 + paho + the wire schema against the
# running stack (see scripts/demo.py). Run it again: seqs continue.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .run/pb
protoc --python_out=.run/pb -I proto proto/mqchat.proto
/usr/bin/python3 scripts/demo.py "$(cat .run/port)" .run/jwt.secret .run/pb
# Two devices on the C SDK: mqchat-cli's scripted mode (JSON lines out).
CLI=build/clients/c-sdk/cli/mqchat-cli
if [ -x "$CLI" ]; then
  echo "8. the C SDK: erin and frank chat through mqchat-cli --script (JSON events)"
  st=.run/cli-state
  common=(--port "$(cat .run/port)" --dev-secret-file .run/jwt.secret --iss mqchat-dev
          --aud mqchat --state-dir "$st" --script --strict)
  printf 'wait-up-to-date\nsend d:erin:frank hello from the SDK\nwait-sent\n' |
    "$CLI" --user erin --device laptop "${common[@]}" | grep '"type":"sent"'
  printf 'wait-up-to-date\nlist\n' |
    "$CLI" --user frank --device laptop "${common[@]}" | grep -E '"type":"message"' | tail -1
fi
# The operator's view, with standard mosquitto tooling ($CONTROL API).
if [ -s .run/ops.password ]; then
  echo "operator: getStats over \$CONTROL/mqchat/v1 (mosquitto_rr, user ops):"
  mosquitto_rr -p "$(cat .run/port)" -u ops -P "$(cat .run/ops.password)" -W 5 \
    -t '$CONTROL/mqchat/v1' -e '$CONTROL/mqchat/v1/response' \
    -m '{"commands":[{"command":"getStats"}]}'
fi
