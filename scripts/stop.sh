#!/usr/bin/env bash
# Stop what scripts/run.sh started: mosquitto, pushd and the fake push
# providers, then redis-server (state in .run/ is kept).
set -u
cd "$(dirname "$0")/.."
stop() { # name pidfile
  local pidfile=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "stopped $1 ($pid)"
  fi
  rm -f "$pidfile"
}
stop mosquitto .run/mosquitto.pid
stop pushd .run/pushd.pid
stop fake-push .run/fake-push.pid
stop redis-server .run/redis.pid
