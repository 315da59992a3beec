#!/usr/bin/env bash
# Stop what scripts/run.sh started (state in .run/ is kept).
set -u
cd "$(dirname "$0")/.."
pidfile=.run/mosquitto.pid
if [ -s "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "stopped mosquitto ($pid)"
  fi
  rm -f "$pidfile"
fi
