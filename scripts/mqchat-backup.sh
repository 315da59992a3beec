#!/usr/bin/env bash
# Take an online backup of a running mqchat broker: the $CONTROL `backup`
# command (a RocksDB checkpoint under the broker's backup_dir), for cron.
# Prints the checkpoint's path; exits non-zero if the broker refused or did
# not answer.
#
# Usage: scripts/mqchat-backup.sh [name]
# Env:   MQCHAT_HOST (127.0.0.1), MQCHAT_PORT (1883), MQCHAT_ADMIN_USER (ops),
#        MQCHAT_ADMIN_PASSWORD (required, or MQCHAT_ADMIN_PASSWORD_FILE),
#        MQCHAT_TIMEOUT_S (600)
# Cron:  15 3 * * * MQCHAT_ADMIN_PASSWORD_FILE=/etc/mqchat/ops.pw /opt/mqchat/scripts/mqchat-backup.sh
set -euo pipefail
host=${MQCHAT_HOST:-127.0.0.1}
port=${MQCHAT_PORT:-1883}
user=${MQCHAT_ADMIN_USER:-ops}
timeout=${MQCHAT_TIMEOUT_S:-600}
if [ -z "${MQCHAT_ADMIN_PASSWORD:-}" ] && [ -n "${MQCHAT_ADMIN_PASSWORD_FILE:-}" ]; then
  MQCHAT_ADMIN_PASSWORD=$(cat "$MQCHAT_ADMIN_PASSWORD_FILE")
fi
: "${MQCHAT_ADMIN_PASSWORD:?set MQCHAT_ADMIN_PASSWORD or MQCHAT_ADMIN_PASSWORD_FILE}"
name_arg=""
if [ $# -ge 1 ]; then
  case "$1" in
    *[!A-Za-z0-9._-]*|.*|"") echo "mqchat-backup: bad name '$1' (1..100 of [A-Za-z0-9._-])" >&2; exit 2 ;;
  esac
  name_arg=",\"name\":\"$1\""
fi
reply=$(mosquitto_rr -h "$host" -p "$port" -u "$user" -P "$MQCHAT_ADMIN_PASSWORD" \
  -t '$CONTROL/mqchat/v1' -e '$CONTROL/mqchat/v1/response' -W "$timeout" \
  -m "{\"commands\":[{\"command\":\"backup\"$name_arg}]}") || {
  echo "mqchat-backup: no answer from $host:$port" >&2; exit 1; }
python3 - "$reply" <<'PY'
import json, sys
r = json.loads(sys.argv[1])["responses"][0]
if "error" in r:
    print("mqchat-backup: " + r["error"], file=sys.stderr)
    sys.exit(1)
print(r["data"]["path"])
PY
