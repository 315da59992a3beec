#!/usr/bin/env bash
# run-sdk-bench.sh - what the C SDK (libmqchat) costs a device: sdk_bench's
# two modes against one broker, in one invocation:
#   sdk  every device is an mqchat_client (SQLite outbox and cursor, WAL,
#        synchronous=NORMAL with one fsync per send and per ack burst,
#        files under the work dir or --state-parent)
#   raw  every device is a bare paho MQTTAsync client doing the same wire
#        traffic (SendRequest, SendAck, ServerEvent, CursorAck), no state
# N sender/receiver pairs (1:1 conversations), closed loop with W sends in
# flight per sender, or --rate R msgs/s in total (open loop). Reports
# send -> SENT (the durable ACK) and send -> MESSAGE handed to the app,
# p50/p99/p99.9, and the bench process's CPU time per delivered message
# (both ends of every pair are in it); sdk minus raw is the SDK's own cost.
#
# Each repeat starts its own broker (mosquitto + mqchat.so, free loopback
# port, temp dir; bench-lib.sh), runs both modes (the order alternates
# between repeats), and stops it.
#
# Usage: bench/run-sdk-bench.sh [options] [-- extra sdk_bench options]
#   --build DIR        build dir with bench/sdk_bench and plugin/mqchat.so
#                      (default: <repo>/build if it has sdk_bench, else
#                      /tmp/build-bench)
#   --plugin PATH      mqchat.so to load (default DIR/plugin/mqchat.so)
#   --durability D     the broker's: sync (default; SendAck after fsync) or os
#   --pairs N          sender/receiver pairs (default 10)
#   --window W         sends in flight per sender (default 16; keep < 100)
#   --rate R           open loop at R msgs/s in total (default 0: closed loop)
#   --duration S       measured seconds per mode (default 10)
#   --warmup S         unmeasured seconds before (default 2)
#   --repeat N         repeats, modes interleaved; medians reported (default 1)
#   --state-parent D   where the SDK's SQLite files go (default: the work
#                      dir, under $TMPDIR); its filesystem sets the fsync cost
#   --perf             also record `perf record -g` of a third, sdk-only run
#                      and print its top symbols
#   --keep             keep the work dir (configs, logs, results, perf.data)
# Every step is bounded in time; whatever it started is killed on exit.
set -euo pipefail

prog=run-sdk-bench
# shellcheck source-path=SCRIPTDIR source=bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

durability=sync
pairs=10
window=16
rate=0
duration=10
warmup=2
repeat=1
state_parent=""
perf=0
extra=()

while [ $# -gt 0 ]; do
    case "$1" in
    --build) build=$2; shift 2 ;;
    --plugin) plugin=$2; shift 2 ;;
    --durability) durability=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --state-parent) state_parent=$2; shift 2 ;;
    --perf) perf=1; shift ;;
    --keep) keep=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) show_help; exit 0 ;;
    *) echo "$prog: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$durability" in sync | os) ;; *) echo "$prog: --durability sync or os" >&2; exit 2 ;; esac

find_tools sdk_bench "sdk_bench mqchat_plugin"
[ -f "$plugin" ] || { echo "$prog: $plugin not found; build target mqchat_plugin or pass --plugin" >&2; exit 2; }
if [ "$perf" = 1 ] && ! command -v perf >/dev/null; then echo "$prog: perf not found" >&2; exit 2; fi

make_work mqchat-sdk-bench
[ -n "$state_parent" ] || state_parent="$work"

write_conf() { # MODE PORT DIR
    broker_conf "$1" "$2" "$3" "$work/store-$2" "$durability" >"$3/mosquitto.conf"
}

declare -A res # res[mode,rep,key]

# collect REP OUT: the RESULT lines of OUT into res[mode,REP,key].
collect() {
    local rep=$1 out=$2 line kv m
    while read -r line; do
        m=""
        for kv in ${line#RESULT }; do
            case "$kv" in mode=*) m=${kv#mode=} ;; esac
        done
        [ -n "$m" ] || continue
        for kv in ${line#RESULT }; do res[$m,$rep,${kv%%=*}]=${kv#*=}; done
    done < <(grep '^RESULT' "$out" || true)
}

limit=$(awk -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", 2 * (d + w) + 120 }')
args=(--pairs "$pairs" --window "$window" --rate "$rate" --duration "$duration" --warmup "$warmup"
    --secret-file "$secret" --state-dir "$state_parent")

echo "machine: $(machine_info)" >&2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for rep in $(seq "$repeat"); do
    order=both
    [ $((rep % 2)) = 0 ] && order=both-raw-first
    if ! start_broker "rep$rep"; then
        echo "$prog: no broker for repeat $rep" >&2
        continue
    fi
    echo "== repeat $rep ($order): sdk_bench ${args[*]} ${extra[*]:-}" >&2
    out="$rundir/bench.out" rc=0
    run_bench "$limit" "$out" "$rundir/bench.err" --port "$port" --broker-pid "$broker_pid" \
        --mode "$order" "${args[@]}" "${extra[@]}" || rc=$?
    collect "$rep" "$out"
    for m in sdk raw; do
        if [ -z "${res[$m,$rep,us_per_msg]:-}" ]; then
            res[$m,$rep,status]="FAILED(rc=$rc)"
        elif [ "${res[$m,$rep,errors]:-1}" != 0 ]; then
            res[$m,$rep,status]="errors"
        else
            res[$m,$rep,status]=ok
        fi
    done
    broker_alive || { res[sdk,$rep,status]="broker died"; res[raw,$rep,status]="broker died"; }
    stop_broker
done

if [ "$perf" = 1 ] && start_broker perf; then
    echo "== perf record -g: sdk mode" >&2
    timeout -k 5 "$limit" perf record -g -o "$work/perf.data" -- "$bench" --port "$port" \
        --mode sdk "${args[@]}" "${extra[@]}" >"$rundir/bench.out" 2>"$rundir/perf.err" || true
    stop_broker
    perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
        grep -v '^#' | grep '%' | head -40 >"$work/perf-top.txt" || true
fi

ms() { awk -v u="${1:-}" 'BEGIN { if (u == "") printf "-"; else printf "%.2f", u / 1000 }'; }
# median MODE KEY: the median over the repeats that produced the key.
median() {
    local vals="" r
    for r in $(seq "$repeat"); do
        [ -n "${res[$1,$r,$2]:-}" ] && vals+="${res[$1,$r,$2]}"$'\n'
    done
    [ -n "$vals" ] || { echo ""; return; }
    printf '%s' "$vals" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
echo "C SDK vs raw paho: $pairs pairs (1:1), $([ "$rate" = 0 ] && echo "closed loop, $window sends in flight per sender" || echo "open loop at $rate msgs/s in total (window $window)"), 300-byte bodies, ${duration} s measured after ${warmup} s"
echo "durability: broker $durability (SendAck $([ "$durability" = sync ] && echo "after fsync of the store" || echo "after the write, no fsync")); SDK SQLite WAL, synchronous=NORMAL (fsync: each send, each ack burst), in $state_parent ($(df -T "$state_parent" 2>/dev/null | awk 'NR == 2 { print $2 }'))"
echo
printf "%-5s %4s %9s %23s %23s %9s %9s %7s  %s\n" mode rep "msgs/s" "delivered p50/p99/p999" \
    "SENT p50/p99/p999" "us/msg" "broker" "machine" status
row() { # MODE REP-LABEL GETTER
    local m=$1 label=$2 get=$3
    printf "%-5s %4s %9s %23s %23s %9s %9s %7s  %s\n" "$m" "$label" "$($get "$m" delivered_per_s)" \
        "$(ms "$($get "$m" p50_us)")/$(ms "$($get "$m" p99_us)")/$(ms "$($get "$m" p999_us)")" \
        "$(ms "$($get "$m" ack_p50_us)")/$(ms "$($get "$m" ack_p99_us)")/$(ms "$($get "$m" ack_p999_us)")" \
        "$($get "$m" us_per_msg)" "$($get "$m" broker_us_per_msg)" "$($get "$m" machine_busy_pct)%" \
        "$($get "$m" status)"
}
for r in $(seq "$repeat"); do
    # shellcheck disable=SC2329 # called through row
    one() { echo "${res[$1,$r,$2]:-}"; }
    for m in sdk raw; do row "$m" "$r" one; done
done
if [ "$repeat" -gt 1 ]; then
    # shellcheck disable=SC2329 # called through row
    med() { if [ "$2" = status ]; then echo median; else median "$1" "$2"; fi; }
    for m in sdk raw; do row "$m" med med; done
fi
sdk_us=$(median sdk us_per_msg)
raw_us=$(median raw us_per_msg)
if [ -n "$sdk_us" ] && [ -n "$raw_us" ]; then
    echo
    awk -v s="$sdk_us" -v r="$raw_us" 'BEGIN { printf "SDK own cost: %.1f us of CPU per delivered message (sdk %.1f - raw %.1f; sender + receiver device)\n", s - r, s, r }'
fi
echo "latencies in ms: delivered = send -> MESSAGE handed to the receiving app; SENT = send -> durable ACK at the sender."
echo "us/msg: CPU time of the bench process (both devices of every pair) per delivered message; broker: its CPU per message."
if [ -s "$work/perf-top.txt" ]; then
    echo
    echo "perf (sdk mode, self time, top symbols):"
    head -25 "$work/perf-top.txt"
fi
