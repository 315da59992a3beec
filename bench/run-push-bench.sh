#!/usr/bin/env bash
# run-push-bench.sh - pushes/s from one pushd into the fake APNs / FCM over
# HTTP/2 + TLS, latency from XADD to the fake accepting a push, and the CPU
# each process spends per push.
#
# Starts its own redis-server (free loopback port, temp dir, no
# persistence), makes throw-away credentials (tests/fakes/gen_certs.sh),
# starts tests/fakes/fake_push.js and one pushd (generated config), then:
#   drain   for each platform: pushd paused (SIGSTOP), --n jobs preloaded,
#           pushd resumed; time until the fake answered all of them, CPU of
#           pushd, the fake and redis per push (/proc). The fake runs with
#           --record-max 0 here (records cost it CPU).
#   paced   a fresh fake that keeps records; jobs XADDed at --rate for
#           --seconds; p50/p90/p99/max of (fake arrival - XADD), in ms.
# Prints each push_bench summary and a table; logs stay in the work dir
# with --keep.
#
# Usage: bench/run-push-bench.sh [options]
#   --build DIR        build dir with pushd/pushd and pushd/push_bench
#                      (default <repo>/build)
#   --n N              jobs per drain run (default 100000)
#   --platforms "P.."  drain runs, of apns fcm mixed (default "apns fcm mixed")
#   --rate R           paced rate, jobs/s (default 2000)
#   --seconds S        paced duration (default 5)
#   --concurrency N    pushd concurrency (default 500)
#   --batch N          pushd batch_size (default 500)
#   --perf             record pushd with perf during the first drain (perf.data
#                      and a report in the work dir; implies --keep)
#   --quick            smoke run: --n 20000, --seconds 2
#   --keep             keep the work dir
# Every wait is bounded; whatever it started is killed on exit.
set -euo pipefail

prog=run-push-bench
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build"
n=100000
platforms="apns fcm mixed"
rate=2000
seconds=5
concurrency=500
batch=500
perf=0
keep=0
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --n) n=$2; shift 2 ;;
    --platforms) platforms=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --perf) perf=1; keep=1; shift ;;
    --quick) n=20000; seconds=2; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "$prog: unknown option $1" >&2; exit 2 ;;
    esac
done

pushd_bin="$build/pushd/pushd"
bench="$build/pushd/push_bench"
for b in "$pushd_bin" "$bench"; do
    [ -x "$b" ] || { echo "$prog: $b not found; build it: cmake --build $build --target pushd push_bench" >&2; exit 2; }
done
node=$(command -v node || command -v nodejs) || { echo "$prog: node not found" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/push-bench.XXXXXX")
redis_pid="" fake_pid="" pushd_pid=""
stop_pid() { # pid
    [ -n "$1" ] || return 0
    kill -CONT "$1" 2>/dev/null || true
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    stop_pid "$pushd_pid"; stop_pid "$fake_pid"; stop_pid "$redis_pid"
    if [ "$keep" = 1 ]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_until() { # seconds command...
    local t=$1; shift
    for _ in $(seq $((t * 20))); do "$@" 2>/dev/null && return 0; sleep 0.05; done
    echo "$prog: timed out waiting for: $*" >&2; return 1
}

echo "== $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "== $("$pushd_bin" -V); node $("$node" --version); $(redis-server --version | cut -d' ' -f1-3)"

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --logfile "$work/redis.log" --daemonize no >/dev/null 2>&1 &
redis_pid=$!
wait_until 10 redis-cli -p "$rport" ping >/dev/null

sh "$root/tests/fakes/gen_certs.sh" "$work/creds" >/dev/null

start_fake() { # extra fake args...
    stop_pid "$fake_pid"
    "$node" "$root/tests/fakes/fake_push.js" --cert "$work/creds/server.pem" \
        --key "$work/creds/server-key.pem" --apns-key "$work/creds/apns-key.p8" \
        --apns-key-id KEYID12345 --apns-team-id TEAMID1234 --apns-topic com.example.mqchat \
        --fcm-sa "$work/creds/fcm-sa.json" --write-sa "$work/creds/fcm-sa.run.json" "$@" \
        >"$work/fake.out" 2>>"$work/fake.log" &
    fake_pid=$!
    wait_until 10 grep -q control_port "$work/fake.out"
    fport=$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$work/fake.out")
    cport=$(sed -n 's/.*"control_port":\([0-9]*\).*/\1/p' "$work/fake.out")
}

start_pushd() {
    stop_pid "$pushd_pid"
    cat >"$work/pushd.conf" <<CONF
redis = 127.0.0.1:$rport
consumer = bench
apns_endpoint = https://127.0.0.1:$fport
apns_sandbox_endpoint = https://127.0.0.1:$fport
apns_key_file = $work/creds/apns-key.p8
apns_key_id = KEYID12345
apns_team_id = TEAMID1234
apns_topic = com.example.mqchat
fcm_endpoint = https://127.0.0.1:$fport
fcm_service_account = $work/creds/fcm-sa.run.json
ca_file = $work/creds/ca.pem
concurrency = $concurrency
batch_size = $batch
max_jobs = 200000
redis_timeout = 30s
log_level = warn
stats_file = $work/pushd.prom
stats_interval = 1s
CONF
    "$pushd_bin" -c "$work/pushd.conf" >>"$work/pushd.log" 2>&1 &
    pushd_pid=$!
    # Warm up: one job of each platform, so TLS and OAuth are done before timing.
    "$bench" drain --redis "127.0.0.1:$rport" --control "$cport" --n 2 --platform mixed >/dev/null
}

results=()
start_fake --record-max 0
start_pushd
first=1
for p in $platforms; do
    if [ "$perf" = 1 ] && [ "$first" = 1 ]; then
        perf record -g -p "$pushd_pid" -o "$work/perf.data" 2>"$work/perf.log" &
        perf_pid=$!
        sleep 0.5
    fi
    out=$("$bench" drain --redis "127.0.0.1:$rport" --control "$cport" --pushd-pid "$pushd_pid" \
        --fake-pid "$fake_pid" --n "$n" --platform "$p")
    echo "$out"
    results+=("$(echo "$out" | grep '^RESULT')")
    if [ "$perf" = 1 ] && [ "$first" = 1 ]; then
        kill -INT "$perf_pid"; wait "$perf_pid" || true
        perf report -i "$work/perf.data" --no-children --percent-limit 1 --stdio \
            >"$work/perf-report.txt" 2>/dev/null || true
        echo "perf report: $work/perf-report.txt"
    fi
    first=0
done

start_fake
start_pushd
for p in apns fcm; do
    out=$("$bench" paced --redis "127.0.0.1:$rport" --control "$cport" --rate "$rate" \
        --seconds "$seconds" --platform "$p")
    echo "$out"
    results+=("$(echo "$out" | grep '^RESULT')")
done

echo
echo "== summary (concurrency $concurrency, batch $batch)"
for r in "${results[@]}"; do echo "${r#RESULT }"; done
