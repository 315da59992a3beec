#!/usr/bin/env bash
# run-metrics-bench.sh - what metrics cost: the broker bench (1:1 durable
# messaging, broker_bench) against mqchat with metrics off and on, and
# against plain mosquitto, interleaved in one run.
#
# Modes, each with its own broker (free loopback port, temp dir):
#   plain        mosquitto 2.0 without the plugin
#   metrics-off  mqchat.so with sys_interval_s 0 and no HTTP endpoint: the
#                counters still count, the histograms read no clock
#   metrics-on   mqchat.so with $SYS every second (sys_interval_s 1) and
#                GET /metrics on a free port, scraped once a second with
#                curl for the whole run (warm-up included)
# First --repeat rounds at the maximum rate (closed loop), each round
# running every mode once, in order; the median run of each mode is
# reported. Then, unless --no-half, one open-loop run per mode at half of
# metrics-off's maximum (plain: half of its own), for latency at a fixed
# load. Prints one table; the raw RESULT lines and broker logs stay in the
# work dir with --keep.
#
# Usage: bench/run-metrics-bench.sh [options] [-- extra broker_bench options]
#   --build DIR        build dir with bench/broker_bench and plugin/mqchat.so
#                      (default: <repo>/build if it has broker_bench, else
#                      /tmp/build-bench)
#   --plugin PATH      mqchat.so to load (default DIR/plugin/mqchat.so)
#   --durability D     sync (default) or os
#   --pairs N          sender/receiver pairs (default 100)
#   --window W         messages in flight per sender (default 32)
#   --duration S       measured seconds per run (default 10)
#   --warmup S         unmeasured seconds before each run (default 3)
#   --repeat N         max-rate rounds (default 3)
#   --rate R           run the rounds open loop at R msgs/s instead of at the
#                      maximum (CPU per message at one load: the steadiest
#                      figure on a busy machine); implies --no-half
#   --no-half          skip the half-load runs
#   --store-parent D   where the mqchat stores go (default: the work dir)
#   --keep             keep the work dir (configs, logs, results)
# Every step is bounded in time; whatever it started is killed on exit.
set -euo pipefail

prog=run-metrics-bench
# shellcheck source-path=SCRIPTDIR source=bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

modes="plain metrics-off metrics-on"
durability=sync
pairs=100
window=32
duration=10
warmup=3
repeat=3
half=1
rate=0
store_parent=""
extra=()
scraper_pid=""

while [ $# -gt 0 ]; do
    case "$1" in
    --build) build=$2; shift 2 ;;
    --plugin) plugin=$2; shift 2 ;;
    --durability) durability=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --no-half) half=0; shift ;;
    --rate) rate=$2; half=0; shift 2 ;;
    --store-parent) store_parent=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) show_help; exit 0 ;;
    *) echo "$prog: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$durability" in sync | os) ;; *) echo "$prog: --durability is sync or os" >&2; exit 2 ;; esac

find_tools broker_bench "broker_bench mqchat_plugin"
[ -f "$plugin" ] || { echo "$prog: $plugin not found; build target mqchat_plugin or pass --plugin" >&2; exit 2; }
command -v curl >/dev/null || { echo "$prog: curl not found (it scrapes /metrics)" >&2; exit 2; }

stop_scraper() {
    if [ -n "$scraper_pid" ]; then kill "$scraper_pid" 2>/dev/null || true; wait "$scraper_pid" 2>/dev/null || true; fi
    scraper_pid=""
}
cleanup_more() { stop_scraper; }

make_work mqchat-metrics-bench
[ -n "$store_parent" ] || store_parent="$work"

# write_conf MODE PORT DIR -> DIR/mosquitto.conf
write_conf() {
    local mode=$1 port=$2 dir=$3
    {
        case "$mode" in
        plain) broker_conf "$mode" "$port" "$dir" ;;
        metrics-off)
            broker_conf "$mode" "$port" "$dir" "$store_parent/store-$mode-$port" "$durability"
            echo "plugin_opt_sys_interval_s 0" ;;
        metrics-on)
            broker_conf "$mode" "$port" "$dir" "$store_parent/store-$mode-$port" "$durability"
            local p
            p=$(free_port)
            echo "$p" >"$dir/metrics-port"
            echo "plugin_opt_sys_interval_s 1"
            echo "plugin_opt_metrics_http_port $p" ;;
        esac
        echo "allow_duplicate_messages true"
    } >"$dir/mosquitto.conf"
}

# scrape DIR: GET /metrics once a second until stopped; one status per line.
start_scraper() {
    local dir=$1 p
    p=$(cat "$dir/metrics-port")
    (
        while :; do
            curl -s -m 2 -o "$dir/last-scrape.txt" -w '%{http_code}\n' "http://127.0.0.1:$p/metrics" >>"$dir/scrapes" || echo fail >>"$dir/scrapes"
            sleep 1
        done
    ) &
    scraper_pid=$!
}

declare -A res # res[mode,phase,key]

# run_one MODE PHASE [RATE]
run_one() {
    local mode=$1 phase=$2 rate=${3:-0}
    local args=(--port "$port" --pairs "$pairs" --window "$window" --duration "$duration"
        --warmup "$warmup" --broker-pid "$broker_pid")
    case "$mode" in
    plain) args+=(--mode plain) ;;
    *) args+=(--mode mqchat --secret-file "$secret") ;;
    esac
    [ "$rate" = 0 ] || args+=(--rate "$rate")
    local limit
    limit=$(awk -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", d + w + 60 }')
    echo "== $mode, $phase$([ "$rate" = 0 ] || echo " (rate $rate)"): broker_bench ${args[*]} ${extra[*]:-}" >&2
    local out="$rundir/$phase.out" rc=0
    res[$mode,$phase,load]=$(cut -d' ' -f1 /proc/loadavg)
    [ "$mode" = metrics-on ] && start_scraper "$rundir"
    run_bench "$limit" "$out" "$rundir/$phase.err" "${args[@]}" "${extra[@]}" || rc=$?
    stop_scraper
    if [ "$mode" = metrics-on ]; then
        res[$mode,$phase,scrapes]="$(grep -c '^200$' "$rundir/scrapes" || true)/$(wc -l <"$rundir/scrapes")"
        rm -f "$rundir/scrapes"
    fi
    bench_collect "$mode" "$phase" "$out" "$rc"
}

echo "machine: $(machine_info)" >&2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

keys="delivered_per_s p50_us p99_us p999_us ack_p50_us ack_p99_us broker_cpu_pct broker_us_per_msg rate status load scrapes"
for rep in $(seq "$repeat"); do
    for m in $modes; do phase_run "$m" "max$rep" "$rate"; done
done
# The median run: by msgs/s at the maximum rate, by CPU per message at a
# fixed rate.
by=delivered_per_s
[ "$rate" = 0 ] || by=broker_us_per_msg
for m in $modes; do
    runs=""
    for rep in $(seq "$repeat"); do runs+="${res[$m,max$rep,$by]:-0} $rep"$'\n'; done
    mid=$(printf '%s' "$runs" | sort -g | sed -n "$(((repeat + 1) / 2))p" | cut -d' ' -f2)
    for k in $keys; do res[$m,max,$k]=${res[$m,max$mid,$k]:-}; done
    res[$m,max,all]=$(for rep in $(seq "$repeat"); do printf '%s ' "${res[$m,max$rep,delivered_per_s]:-0}/${res[$m,max$rep,broker_us_per_msg]:-0}"; done)
done
if [ "$half" = 1 ]; then
    off=${res[metrics-off,max,delivered_per_s]:-0}
    pl=${res[plain,max,delivered_per_s]:-0}
    for m in $modes; do
        r=$off
        [ "$m" = plain ] && r=$pl
        if [ "${r%.*}" -gt 1 ] 2>/dev/null; then
            phase_run "$m" half "$((${r%.*} / 2))"
        else
            res[$m,half,status]="skipped"
        fi
    done
fi

ms() { awk -v u="${1:-0}" 'BEGIN { printf "%.2f", u / 1000 }'; }
ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "-" }'; }
ack() { if [ "$1" = plain ]; then echo -; else echo "$(ms "${res[$1,$2,ack_p50_us]:-}")/$(ms "${res[$1,$2,ack_p99_us]:-}")"; fi; }
off_max=${res[metrics-off,max,delivered_per_s]:-0}
echo
echo "Metrics overhead: $pairs pairs, QoS 1, 300-byte bodies, $window in flight per sender, durability $durability," \
    "${duration} s measured after ${warmup} s; metrics-on: \$SYS every 1 s and GET /metrics once a second"
echo
if [ "$rate" = 0 ]; then
    echo "At the maximum rate (closed loop; median of $repeat interleaved runs)"
else
    echo "At $rate msgs/s offered (open loop; the run with the median us/msg of $repeat interleaved runs)"
fi
printf "%-12s %9s %8s %8s %8s %15s %8s %7s %9s  %s\n" mode "msgs/s" "vs off" "p50 ms" "p99 ms" \
    "ack p50/p99 ms" "us/msg" broker scrapes status
for m in $modes; do
    printf "%-12s %9s %8s %8s %8s %15s %8s %7s %9s  %s\n" "$m" \
        "${res[$m,max,delivered_per_s]:--}" "$(ratio "${res[$m,max,delivered_per_s]:-}" "$off_max")" \
        "$(ms "${res[$m,max,p50_us]:-}")" "$(ms "${res[$m,max,p99_us]:-}")" "$(ack "$m" max)" \
        "${res[$m,max,broker_us_per_msg]:--}" "${res[$m,max,broker_cpu_pct]:--}%" \
        "${res[$m,max,scrapes]:--}" "${res[$m,max,status]:-}"
done
for m in $modes; do echo "  $m runs (msgs/s / broker us/msg): ${res[$m,max,all]}"; done
if [ "$half" = 1 ]; then
    echo
    echo "At half of metrics-off's maximum (open loop; plain: half of its own)"
    printf "%-12s %9s %9s %8s %8s %9s %15s %8s %9s  %s\n" mode offered "msgs/s" "p50 ms" "p99 ms" \
        "p99.9 ms" "ack p50/p99 ms" "us/msg" scrapes status
    for m in $modes; do
        printf "%-12s %9s %9s %8s %8s %9s %15s %8s %9s  %s\n" "$m" "${res[$m,half,rate]:--}" \
            "${res[$m,half,delivered_per_s]:--}" "$(ms "${res[$m,half,p50_us]:-}")" \
            "$(ms "${res[$m,half,p99_us]:-}")" "$(ms "${res[$m,half,p999_us]:-}")" "$(ack "$m" half)" \
            "${res[$m,half,broker_us_per_msg]:--}" "${res[$m,half,scrapes]:--}" "${res[$m,half,status]:-}"
    done
fi
echo
echo "us/msg: broker CPU time per delivered message (all its threads); scrapes: HTTP 200 answers / scrapes tried."
