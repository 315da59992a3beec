#!/usr/bin/env bash
# run-large-bench.sh - large groups: what a message costs the store, and
# what fan-out, catch-up and a large group's traffic cost through the
# broker.
#
# Builds nothing. Runs, one after the other:
#   store         large_bench: keys, bytes and time per append by member
#                 count (10 ... 100,000), small vs large mode (store API,
#                 temp dir, durability os)
#   fanout        for each --fanout size: its own mosquitto + mqchat.so
#                 (free loopback port, temp dir and store, own config; the
#                 plugin from the build dir) and group_bench --scenario
#                 fanout: send -> last online device of a large group
#   catchup       its own mosquitto + mqchat.so and group_bench --scenario
#                 catchup: a device in 50 large groups, 100 new messages
#                 each, SyncRequest{positions} + ConversationPull pages
#   interference  mosquitto + mqchat.so and plain mosquitto (another port)
#                 at once, group_bench --scenario interference: 1:1 latency
#                 with a 10,000-member group (2,000 devices online) idle,
#                 then receiving a steady stream, then the same 1:1 load on
#                 plain mosquitto
# Prints what each bench prints and a summary; raw output and broker logs
# stay in the work dir with --keep.
#
# Usage: bench/run-large-bench.sh [options] [-- extra group_bench options]
#   --build DIR          build dir with bench/group_bench, bench/large_bench and
#                        plugin/mqchat.so (default: <repo>/build if it has
#                        group_bench, else /tmp/build-bench)
#   --plugin PATH        mqchat.so to load (default DIR/plugin/mqchat.so)
#   --parts "P ..."      subset of: store fanout catchup interference (default all)
#   --fanout "N ..."     online devices per fanout run (default "1000 5000")
#   --messages M         fanout: messages one at a time (default 200)
#   --durability D       plugin_opt_durability: os (default) or sync
#   --fanout-per-pass N  plugin_opt_fanout_per_pass (default: the plugin's, 500)
#   --group-rate R       interference: group messages/s (default 10)
#   --pair-rate R        interference: 1:1 messages/s in total (default 500)
#   --duration S         interference: each measured window (default 10)
#   --quick              smoke run, under a minute: fewer messages, 4 s windows
#   --keep               keep the work dir (configs, logs, raw output)
# Every step is bounded in time; whatever it started is stopped on exit.
set -euo pipefail

prog="run-large-bench"
# shellcheck source-path=SCRIPTDIR source=bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

parts="store fanout catchup interference"
fanout_sizes="1000 5000"
messages=200
burst=20
durability=os
per_pass=""
group_rate=10
pair_rate=500
duration=10
warmup=2
quick=0
extra=()

while [ $# -gt 0 ]; do
    case "$1" in
    --build) build=$2; shift 2 ;;
    --plugin) plugin=$2; shift 2 ;;
    --parts) parts=$2; shift 2 ;;
    --fanout) fanout_sizes=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    --durability) durability=$2; shift 2 ;;
    --fanout-per-pass) per_pass=$2; shift 2 ;;
    --group-rate) group_rate=$2; shift 2 ;;
    --pair-rate) pair_rate=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --quick) quick=1; messages=40; burst=5; duration=4; warmup=1; shift ;;
    --keep) keep=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) show_help; exit 0 ;;
    *) echo "$prog: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$durability" in os | sync) ;; *) echo "$prog: --durability os or sync" >&2; exit 2 ;; esac
for p in $parts; do
    case "$p" in store | fanout | catchup | interference) ;;
    *) echo "$prog: unknown part $p" >&2; exit 2 ;;
    esac
done

find_tools group_bench "group_bench large_bench mqchat_plugin"
group_bench=$bench
large_bench="$build/bench/large_bench"
[ -x "$large_bench" ] || { echo "$prog: $large_bench not found; build target large_bench" >&2; exit 2; }
[ -f "$plugin" ] || { echo "$prog: $plugin not found; build target mqchat_plugin or pass --plugin" >&2; exit 2; }

# File descriptors: group_bench holds a socket per device, the broker one
# per connection; both inherit this soft limit.
maxdev=2200
for n in $fanout_sizes; do [ "$n" -lt "$maxdev" ] || maxdev=$((n + 1)); done
need=$((maxdev + 256))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
    echo "$prog: $maxdev devices need $need file descriptors per process; the hard limit is $hard" >&2
    exit 2
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then ulimit -n "$need"; fi

plain_pid=""
cleanup_more() { stop_pid "$plain_pid" "plain broker"; }
make_work mqchat-large-bench

write_conf() { # MODE PORT DIR -> DIR/mosquitto.conf
    local mode=$1 port=$2 dir=$3
    {
        case "$mode" in
        plain) broker_conf "$mode" "$port" "$dir" ;;
        *)
            broker_conf "$mode" "$port" "$dir" "$dir/store" "$durability"
            [ -z "$per_pass" ] || echo "plugin_opt_fanout_per_pass $per_pass"
            ;;
        esac
        # As broker-conf/mosquitto.conf.example: 2.0.11's default scans
        # every stored message's recipient list (docs/OPERATIONS.md).
        echo "allow_duplicate_messages true"
        # Thousands of connects: not one log line each.
        echo "connection_messages false"
    } >"$dir/mosquitto.conf"
}

declare -A res # res[run,key]
runs=()

# collect RUN OUT RC: the RESULT lines of OUT into res[RUN(/variant|window),key].
collect() {
    local run=$1 out=$2 rc=$3 line kv sub
    while read -r line; do
        sub=$(sed -n 's/.* \(variant\|window\)=\([a-z]*\).*/\2/p' <<<"$line")
        local key=$run${sub:+/$sub}
        runs+=("$key")
        for kv in ${line#RESULT }; do res[$key,${kv%%=*}]=${kv#*=}; done
        res[$key,status]=$([ "$rc" = 0 ] && echo ok || echo "errors(rc=$rc)")
    done < <(grep '^RESULT' "$out" || true)
    if ! grep -q '^RESULT' "$out"; then
        runs+=("$run")
        res[$run,status]="FAILED(rc=$rc)"
    fi
}

# group RUN LIMIT ARG...: group_bench against the broker started last.
group() {
    local run=$1 limit=$2 rc=0
    shift 2
    local args=(--port "$port" --secret-file "$secret" --broker-pid "$broker_pid" "$@" "${extra[@]}")
    echo "== $run: group_bench ${args[*]}" >&2
    bench=$group_bench
    run_bench "$limit" "$rundir/$run.out" "$rundir/$run.err" "${args[@]}" || rc=$?
    collect "$run" "$rundir/$run.out" "$rc"
    if ! broker_alive; then
        for r in "${runs[@]}"; do [[ $r == "$run"* ]] && res[$r,status]="broker died"; done
    fi
}

echo "machine: $(machine_info)" >&2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); fd limit $(ulimit -n) (hard $hard); durability $durability" >&2
t_start=$(date +%s)
declare -A took

for p in $parts; do
    t0=$(date +%s)
    case "$p" in
    store)
        echo "== store: large_bench$([ "$quick" = 1 ] && echo " --quick")" >&2
        mkdir -p "$work/store"
        bench=$large_bench
        rc=0
        if [ "$quick" = 1 ]; then
            run_bench 600 "$work/store/out" "$work/store/err" --dir "$work/store" --quick || rc=$?
        else
            run_bench 900 "$work/store/out" "$work/store/err" --dir "$work/store" || rc=$?
        fi
        store_rc=$rc
        ;;
    fanout)
        for n in $fanout_sizes; do
            if start_broker "mqchat-fanout$n"; then
                group "fanout$n" 900 --scenario fanout --online "$n" --messages "$messages" --burst "$burst"
                stop_broker
            else
                runs+=("fanout$n")
                res[fanout$n,status]="no broker"
            fi
        done
        ;;
    catchup)
        if start_broker mqchat-catchup; then
            group catchup 600 --scenario catchup
            stop_broker
        else
            runs+=(catchup)
            res[catchup,status]="no broker"
        fi
        ;;
    interference)
        if start_broker plain; then
            plain_pid=$broker_pid plain_port=$port
            broker_pid=""
            if start_broker mqchat-interference; then
                limit=$(awk -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", 3 * (d + w + 12) + 240 }')
                group interference "$limit" --scenario interference --plain-port "$plain_port" \
                    --plain-pid "$plain_pid" --group-rate "$group_rate" --pair-rate "$pair_rate" \
                    --duration "$duration" --warmup "$warmup"
                stop_broker
            else
                runs+=(interference)
                res[interference,status]="no broker"
            fi
            kill -0 "$plain_pid" 2>/dev/null || res[interference/plain,status]="plain broker died"
            stop_pid "$plain_pid" "plain broker"
            plain_pid=""
        else
            runs+=(interference)
            res[interference,status]="no plain broker"
        fi
        ;;
    esac
    took[$p]=$(($(date +%s) - t0))
done

ms() { awk -v u="${1:-}" 'BEGIN { if (u == "") printf "-"; else printf "%.2f", u / 1000 }'; }
or() { if [ -n "${1:-}" ]; then echo "$1"; else echo -; fi; }

echo
echo "Large groups ($(nproc) cores; mqchat durability $durability$([ -n "$per_pass" ] && echo ", fanout_per_pass $per_pass"))"
for p in $parts; do
    case "$p" in
    store)
        echo
        echo "store (large_bench, ${took[store]} s): per message"
        grep -v '^RESULT' "$work/store/out" | sed -n '4,$p' | sed 's/^/  /'
        [ "${store_rc:-0}" = 0 ] || echo "  large_bench exit status $store_rc"
        ;;
    fanout)
        echo
        echo "fanout (${took[fanout]} s): send -> last online device, one message at a time; then a burst"
        printf "  %-7s %6s %9s %9s %9s %9s %9s %10s %8s %10s %9s %6s %6s  %s\n" devices msgs "p50 ms" \
            "p99 ms" "max ms" "first p50" "pause max" "deliv/s" "us/deliv" "burst d/s" "burst max" \
            "sil50" "sil90" status
        for n in $fanout_sizes; do
            k=fanout$n
            printf "  %-7s %6s %9s %9s %9s %9s %9s %10s %8s %10s %9s %6s %6s  %s\n" "$n" \
                "$(or "${res[$k,msgs]:-}")" "$(ms "${res[$k,p50_us]:-}")" "$(ms "${res[$k,p99_us]:-}")" \
                "$(ms "${res[$k,max_us]:-}")" "$(ms "${res[$k,first_p50_us]:-}")" \
                "$(ms "${res[$k,gap_max_us]:-}")" "$(or "${res[$k,deliveries_per_s]:-}")" \
                "$(or "${res[$k,broker_us_per_delivery]:-}")" "$(or "${res[$k,burst_deliveries_per_s]:-}")" \
                "$(ms "${res[$k,burst_max_us]:-}")" "$(or "${res[$k,sil50]:-}")" "$(or "${res[$k,sil90]:-}")" \
                "${res[$k,status]:-} missing=${res[$k,missing]:--} ooo=${res[$k,ooo]:--}"
        done
        echo "  typing notices (QoS 0, no PUBACKs), one at a time:"
        for n in $fanout_sizes; do
            k=fanout$n
            echo "  $n devices: send -> last device p50 $(ms "${res[$k,typing_p50_us]:-}") ms," \
                "p99 $(ms "${res[$k,typing_p99_us]:-}") ms, max $(ms "${res[$k,typing_max_us]:-}") ms;" \
                "longest pause $(ms "${res[$k,typing_gap_max_us]:-}") ms; pauses >= 90 ms: $(or "${res[$k,typing_pauses90]:-}");" \
                "not at every device within 10 s: $(or "${res[$k,typing_timeouts]:-}")"
        done
        ;;
    catchup)
        echo
        echo "catchup (${took[catchup]} s): a device in 50 large groups, 100 new messages each"
        for v in sequential pipelined; do
            k=catchup/$v
            echo "  $v: ${res[$k,msgs]:--} messages in $(or "${res[$k,wall_ms]:-}") ms," \
                "$(or "${res[$k,round_trips]:-}") round trips ($(or "${res[$k,requests]:-}") requests)," \
                "sync with positions $(or "${res[$k,sync_ms]:-}") ms; ${res[$k,status]:-${res[catchup,status]:-}}" \
                "bad=${res[$k,bad]:--} leftover=${res[$k,leftover]:--}"
        done
        ;;
    interference)
        echo
        echo "interference (${took[interference]} s): 50 1:1 pairs at $pair_rate msgs/s; 10,000-member group," \
            "2,000 devices online, $group_rate msgs/s in window 'group'"
        printf "  %-6s %9s %8s %8s %8s %8s %9s %8s %10s %9s %8s %8s  %s\n" window "1:1 /s" "p50 ms" \
            "p99 ms" "p99.9" "max ms" "ack p99" "grp msg" "grp dlv/s" "grp p99" broker machine status
        for w in idle group plain; do
            k=interference/$w
            cpu=${res[$k,broker_cpu_pct]:-} ack=$(ms "${res[$k,ack_p99_us]:-}")
            if [ "$w" = plain ]; then cpu=${res[$k,plain_cpu_pct]:-} ack=-; fi
            printf "  %-6s %9s %8s %8s %8s %8s %9s %8s %10s %9s %7s%% %7s%%  %s\n" "$w" \
                "$(or "${res[$k,delivered_per_s]:-}")" "$(ms "${res[$k,p50_us]:-}")" \
                "$(ms "${res[$k,p99_us]:-}")" "$(ms "${res[$k,p999_us]:-}")" "$(ms "${res[$k,max_us]:-}")" \
                "$ack" \
                "$(or "${res[$k,group_msgs]:-}")" "$(or "${res[$k,group_deliveries_per_s]:-}")" \
                "$(ms "${res[$k,group_p99_us]:-}")" "$(or "$cpu")" "$(or "${res[$k,machine_busy_pct]:-}")" \
                "${res[$k,status]:-${res[interference,status]:-}}"
        done
        ;;
    esac
done
echo
echo "fanout: p50/p99/max of send -> the last online device got it; first: send -> first device; pause max: the"
echo "  longest silence inside one broadcast; sil50/sil90: silences of >= 50/90 ms while a broadcast was incomplete;"
echo "  us/deliv: broker CPU per delivery. interference: 1:1 latency from the due time; broker: CPU of the broker"
echo "  under test (mqchat, or plain in window 'plain') in % of one core; machine: all $(nproc) cores."
echo "elapsed: $(($(date +%s) - t_start)) s"
