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

prog=run-broker-bench
# shellcheck source-path=SCRIPTDIR source=bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

modes="plain mqchat-os mqchat-sync"
pairs=100
window=32
inflight=sendack
duration=10
warmup=3
half=1
repeat=1
store_parent=""
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
    -h | --help) show_help; exit 0 ;;
    *) echo "$prog: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

find_tools broker_bench broker_bench
for m in $modes; do
    case "$m" in
    plain) ;;
    mqchat-os | mqchat-sync)
        [ -f "$plugin" ] || { echo "run-broker-bench: $plugin not found (mode $m); build target mqchat_plugin or pass --plugin" >&2; exit 2; } ;;
    *) echo "run-broker-bench: unknown mode $m" >&2; exit 2 ;;
    esac
done

make_work mqchat-broker-bench
[ -n "$store_parent" ] || store_parent="$work"

# write_conf MODE PORT DIR -> DIR/mosquitto.conf
write_conf() {
    local mode=$1 port=$2 dir=$3
    {
        case "$mode" in
        plain) broker_conf "$mode" "$port" "$dir" ;;
        mqchat-*) broker_conf "$mode" "$port" "$dir" "$store_parent/store-$mode-$port" "${mode#mqchat-}" ;;
        esac
        echo "allow_duplicate_messages true"
    } >"$dir/mosquitto.conf"
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
    run_bench "$limit" "$out" "$rundir/$phase.err" "${args[@]}" "${extra[@]}" || rc=$?
    bench_collect "$mode" "$phase" "$out" "$rc"
}

echo "machine: $(machine_info)" >&2
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
