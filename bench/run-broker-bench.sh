#!/usr/bin/env bash
# run-broker-bench.sh - 1:1 durable messaging through mosquitto + mqchat vs
# plain mosquitto, in one run.
#
# For each mode it starts its own broker (free loopback port, temp dir, its
# own config; the plugin from the build dir), runs broker_bench against it,
# and stops it:
#   plain        mosquitto 2.0 without the plugin, anonymous, raw payloads
#   mqchat-os    mosquitto + mqchat.so, durability os
#   mqchat-sync  mosquitto + mqchat.so, durability sync (group-commit fsync)
# First at the maximum rate (closed loop, W messages in flight per sender),
# then at half of each mode's measured maximum (open loop, for p99).
# Prints two tables; the raw RESULT lines and broker logs stay in the work
# dir if --keep is given.
#
# Usage: bench/run-broker-bench.sh [options] [-- extra broker_bench options]
#   --build DIR        build dir with bench/broker_bench and plugin/mqchat.so
#                      (default: <repo>/build if it has broker_bench, else
#                      /tmp/build-bench)
#   --plugin PATH      mqchat.so to load (default DIR/plugin/mqchat.so)
#   --modes "M ..."    subset of: plain mqchat-os mqchat-sync (default all)
#   --pairs N          sender/receiver pairs (default 100)
#   --window W         messages in flight per sender (default 32)
#   --inflight X       mqchat: sendack (default) or puback - what ends "in flight"
#   --duration S       measured seconds per run (default 10)
#   --warmup S         unmeasured seconds before each run (default 3)
#   --no-half          skip the half-load runs
#   --repeat N         N max-rate runs per mode (interleaved); the median
#                      one is reported (default 1)
#   --store-parent D   where the mqchat stores go (default: the work dir,
#                      under $TMPDIR); its filesystem sets the fsync cost
#   --keep             keep the work dir (configs, logs, results)
# Every step is bounded in time; whatever it started is killed on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

build=""
plugin=""
modes="plain mqchat-os mqchat-sync"
pairs=100
window=32
inflight=sendack
duration=10
warmup=3
half=1
repeat=1
store_parent=""
keep=0
extra=()

while [ $# -gt 0 ]; do
    case "$1" in
    --build) build=$2; shift 2 ;;
    --plugin) plugin=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --inflight) inflight=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --no-half) half=0; shift ;;
    --repeat) repeat=$2; shift 2 ;;
    --store-parent) store_parent=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-broker-bench: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$build" ]; then
    if [ -x "$root/build/bench/broker_bench" ]; then build="$root/build"; else build=/tmp/build-bench; fi
fi
bench="$build/bench/broker_bench"
[ -n "$plugin" ] || plugin="$build/plugin/mqchat.so"
[ -x "$bench" ] || { echo "run-broker-bench: $bench not found; build it:
  cmake -S $root -B $build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build $build --target broker_bench" >&2; exit 2; }
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosquitto" ] || { echo "run-broker-bench: mosquitto not found" >&2; exit 2; }
for m in $modes; do
    case "$m" in
    plain) ;;
    mqchat-os | mqchat-sync)
        [ -f "$plugin" ] || { echo "run-broker-bench: $plugin not found (mode $m); build target mqchat_plugin or pass --plugin" >&2; exit 2; } ;;
    *) echo "run-broker-bench: unknown mode $m" >&2; exit 2 ;;
    esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/mqchat-broker-bench.XXXXXX")
[ -n "$store_parent" ] || store_parent="$work"
broker_pid=""
bench_pid=""

stop_broker() {
    [ -n "$broker_pid" ] || return 0
    if kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$broker_pid" 2>/dev/null; then
            echo "run-broker-bench: broker $broker_pid ignored SIGTERM for 5 s; killing it" >&2
            kill -KILL "$broker_pid" 2>/dev/null || true
        fi
    fi
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
}

cleanup() {
    if [ -n "$bench_pid" ]; then kill -TERM "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true; fi
    stop_broker
    if [ "$keep" = 1 ]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port: ask the kernel for one (a tiny race with other
# programs is acceptable for a benchmark; the broker's start is checked).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null && return
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 40000))
        ss -Htln "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
    done
    echo "run-broker-bench: no free port" >&2; return 1
}

secret="$work/jwt-secret"
(umask 077; openssl rand -hex 32 >"$secret")

# write_conf MODE PORT DIR -> DIR/mosquitto.conf
write_conf() {
    local mode=$1 port=$2 dir=$3
    {
        echo "# generated by run-broker-bench.sh for mode $mode"
        echo "per_listener_settings false"
        echo "listener $port 127.0.0.1"
        # mosquitto drops root privileges to user 'mosquitto' unless told
        # otherwise; stay who we are so it can use the temp dir.
        echo "user $(id -un)"
        echo "allow_duplicate_messages true"
        echo "max_inflight_messages 100"
        echo "max_queued_messages 10000"
        echo "persistence false"
        echo "set_tcp_nodelay true"
        echo "log_dest file $dir/broker.log"
        echo "log_type error"
        echo "log_type warning"
        echo "log_type notice"
        case "$mode" in
        plain)
            echo "allow_anonymous true"
            ;;
        mqchat-*)
            echo "allow_anonymous false"
            echo "plugin $plugin"
            echo "plugin_opt_store_dir $store_parent/store-$mode-$port"
            echo "plugin_opt_durability ${mode#mqchat-}"
            echo "plugin_opt_jwt_hs256_secret_file $secret"
            # The default per-connection limit (50/s, burst 200) is meant
            # for phones; a bench sender sends hundreds per second.
            echo "plugin_opt_rate_msgs_per_s 1000000"
            echo "plugin_opt_rate_burst 1000000"
            ;;
        esac
    } >"$dir/mosquitto.conf"
}

start_broker() { # MODE -> sets broker_pid, port, rundir
    local mode=$1
    port=$(free_port)
    rundir="$work/$mode-$port"
    mkdir -p "$rundir"
    write_conf "$mode" "$port" "$rundir"
    "$mosquitto" -c "$rundir/mosquitto.conf" >"$rundir/stdout.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        if ! kill -0 "$broker_pid" 2>/dev/null; then
            echo "run-broker-bench: broker ($mode) exited at start:" >&2
            cat "$rundir/stdout.log" "$rundir/broker.log" 2>/dev/null | tail -20 >&2
            broker_pid=""
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "run-broker-bench: broker ($mode) not listening on $port after 10 s" >&2
    tail -20 "$rundir/broker.log" >&2 2>/dev/null || true
    stop_broker
    return 1
}

declare -A res # res[mode,phase,key]

# run_one MODE PHASE [RATE]
run_one() {
    local mode=$1 phase=$2 rate=${3:-0}
    local args=(--port "$port" --pairs "$pairs" --window "$window" --duration "$duration"
        --warmup "$warmup" --broker-pid "$broker_pid")
    case "$mode" in
    plain) args+=(--mode plain) ;;
    *) args+=(--mode mqchat --secret-file "$secret" --inflight "$inflight") ;;
    esac
    [ "$rate" = 0 ] || args+=(--rate "$rate")
    local limit
    limit=$(awk -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", d + w + 60 }')
    echo "== $mode, $phase$([ "$rate" = 0 ] || echo " (rate $rate)"): broker_bench ${args[*]} ${extra[*]:-}" >&2
    local out="$rundir/$phase.out" rc=0
    res[$mode,$phase,load]=$(cut -d' ' -f1 /proc/loadavg)
    # In the background + wait, so that a signal to this script runs the
    # cleanup at once instead of after the bench.
    timeout -k 5 "$limit" "$bench" "${args[@]}" "${extra[@]}" >"$out" 2>"$rundir/$phase.err" &
    bench_pid=$!
    wait "$bench_pid" || rc=$?
    bench_pid=""
    cat "$rundir/$phase.err" >&2
    grep -v '^RESULT' "$out" | sed 's/^/   /' >&2
    local line
    line=$(grep '^RESULT' "$out" || true)
    if [ -z "$line" ]; then
        res[$mode,$phase,status]="FAILED(rc=$rc)"
        return 0
    fi
    local kv
    for kv in ${line#RESULT }; do res[$mode,$phase,${kv%%=*}]=${kv#*=}; done
    if [ "$rc" = 0 ]; then res[$mode,$phase,status]=ok; else res[$mode,$phase,status]="errors(rc=$rc)"; fi
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        res[$mode,$phase,status]="broker died"
        tail -20 "$rundir/broker.log" >&2 2>/dev/null || true
    fi
}

phase_run() { # MODE PHASE RATE
    if start_broker "$1"; then
        run_one "$@"
        stop_broker
    else
        res[$1,$2,status]="no broker"
    fi
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r); $("$mosquitto" -h 2>/dev/null | head -1)" >&2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Max-rate runs, interleaved across modes so that a change in background
# load hits every mode alike; with --repeat N, the run with the median rate
# of each mode stands for it.
keys="delivered_per_s p50_us p90_us p99_us p999_us max_us ack_p50_us ack_p99_us bench_cpu_pct broker_cpu_pct machine_busy_pct broker_us_per_msg bench_us_per_msg rate sent received status load"
for rep in $(seq "$repeat"); do
    for m in $modes; do phase_run "$m" "max$rep" 0; done
done
for m in $modes; do
    runs=""
    for rep in $(seq "$repeat"); do runs+="${res[$m,max$rep,delivered_per_s]:-0} $rep"$'\n'; done
    mid=$(printf '%s' "$runs" | sort -n | sed -n "$(((repeat + 1) / 2))p" | cut -d' ' -f2)
    for k in $keys; do res[$m,max,$k]=${res[$m,max$mid,$k]:-}; done
    res[$m,max,all]=$(printf '%s' "$runs" | cut -d' ' -f1 | paste -sd/)
done
if [ "$half" = 1 ]; then
    for m in $modes; do
        r=${res[$m,max,delivered_per_s]:-0}
        if [ "${r%.*}" -gt 1 ] 2>/dev/null; then
            phase_run "$m" half "$((${r%.*} / 2))"
        else
            res[$m,half,status]="skipped"
        fi
    done
fi

ms() { awk -v u="${1:-0}" 'BEGIN { printf "%.2f", u / 1000 }'; }
ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }

plain_max=${res[plain,max,delivered_per_s]:-0}
ackcol() { # MODE PHASE
    if [ "$1" = plain ]; then echo -; else echo "$(ms "${res[$1,$2,ack_p50_us]:-}")/$(ms "${res[$1,$2,ack_p99_us]:-}")"; fi
}
pct() { if [ -n "${1:-}" ]; then echo "$1%"; else echo -; fi; }
echo
echo "1:1 durable messaging: $pairs pairs, QoS 1, 300-byte bodies, ${window} in flight per sender" \
    "(plain: until PUBACK; mqchat: until $([ "$inflight" = sendack ] && echo SendAck || echo PUBACK)), ${duration} s measured after ${warmup} s"
echo
echo "At the maximum rate (closed loop)"
printf "%-12s %9s %9s %9s %9s %15s %7s %7s %7s %7s %5s  %s\n" mode "msgs/s" "p50 ms" "p99 ms" "vs plain" \
    "ack p50/p99 ms" "us/msg" broker bench machine load status
for m in $modes; do
    printf "%-12s %9s %9s %9s %9s %15s %7s %7s %7s %7s %5s  %s\n" "$m" \
        "${res[$m,max,delivered_per_s]:--}" "$(ms "${res[$m,max,p50_us]:-}")" \
        "$(ms "${res[$m,max,p99_us]:-}")" "$(ratio "${res[$m,max,delivered_per_s]:-}" "$plain_max")" \
        "$(ackcol "$m" max)" "${res[$m,max,broker_us_per_msg]:--}" "$(pct "${res[$m,max,broker_cpu_pct]:-}")" \
        "$(pct "${res[$m,max,bench_cpu_pct]:-}")" "$(pct "${res[$m,max,machine_busy_pct]:-}")" \
        "${res[$m,max,load]:--}" "${res[$m,max,status]:-}"
done
if [ "$repeat" -gt 1 ]; then
    for m in $modes; do echo "  $m runs (msgs/s): ${res[$m,max,all]}"; done
fi
if [ "$half" = 1 ]; then
    echo
    echo "At half of each mode's maximum (open loop, fixed offered rate; latencies include any wait for a window slot)"
    printf "%-12s %9s %9s %9s %9s %9s %15s %7s %7s %5s  %s\n" mode "offered" "msgs/s" "p50 ms" "p99 ms" \
        "p99.9 ms" "ack p50/p99 ms" broker machine load status
    for m in $modes; do
        printf "%-12s %9s %9s %9s %9s %9s %15s %7s %7s %5s  %s\n" "$m" \
            "${res[$m,half,rate]:--}" "${res[$m,half,delivered_per_s]:--}" \
            "$(ms "${res[$m,half,p50_us]:-}")" "$(ms "${res[$m,half,p99_us]:-}")" \
            "$(ms "${res[$m,half,p999_us]:-}")" "$(ackcol "$m" half)" \
            "$(pct "${res[$m,half,broker_cpu_pct]:-}")" "$(pct "${res[$m,half,machine_busy_pct]:-}")" \
            "${res[$m,half,load]:--}" "${res[$m,half,status]:-}"
    done
fi
echo
echo "latency: send -> receiver, from a timestamp in the body; ack: send -> SendAck at the sender."
echo "us/msg: broker CPU time per delivered message (all its threads) -- the figure least disturbed by other load."
echo "cpu: broker and bench in % of one core, machine in % of all $(nproc) cores, over the measured window; load: 1-min loadavg at the start of the run."
