#!/usr/bin/env bash
# run-presence-bench.sh - presence churn: mosquitto + mqchat with presence
# on (Redis) vs plain mosquitto, the same load, in one run.
#
# Starts its own redis-server (free loopback port, temp dir, --save ""
# --appendonly no) and, one after the other, the brokers (free loopback
# port, temp dir, own config; the plugin from the build dir):
#   mqchat   mosquitto + mqchat.so, presence on (plugin_opt_redis), durability os
#   plain    mosquitto 2.0 without the plugin, anonymous, raw payloads
# and runs presence_bench against each: --devices idle devices connected
# (keepalive 60 s), 1:1 messages between --pairs pairs at a fixed --rate,
# first a "steady" window (no churn), then a "churn" window in which
# --churn-devices of the devices disconnect and reconnect at --churn-rate
# events/s (a connect and a disconnect are one event each). Prints one
# table; raw output and logs stay in the work dir with --keep.
#
# Usage: bench/run-presence-bench.sh [options] [-- extra presence_bench options]
#   --build DIR          build dir with bench/presence_bench and plugin/mqchat.so
#                        (default: <repo>/build if it has presence_bench, else
#                        /tmp/build-bench)
#   --plugin PATH        mqchat.so to load (default DIR/plugin/mqchat.so)
#   --modes "M ..."      subset of: mqchat plain (default both, in that order)
#   --devices N          idle devices (default 10000)
#   --churn-devices N    how many of them churn (default 1000)
#   --churn-rate R       connect + disconnect events/s (default 1000)
#   --churn-off-ms MS    how long a churner stays away (default 1000)
#   --pairs N            1:1 pairs (default 100)
#   --rate R             1:1 messages/s in total (default 2000)
#   --duration S         each measured window (default 20)
#   --warmup S           unmeasured seconds before each window (default 2)
#   --debounce-ms MS     plugin_opt_presence_debounce_ms (default: the plugin's, 5000)
#   --node-ttl-s S       plugin_opt_node_ttl_s (default: the plugin's, 15)
#   --quick              smoke run, ~30 s: 2000 devices, 1000 churning, 5 s windows
#   --keep               keep the work dir (configs, logs, raw output)
# Every step is bounded in time; whatever it started is killed on exit.
set -euo pipefail

prog=run-presence-bench
# shellcheck source-path=SCRIPTDIR source=bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

modes="mqchat plain"
devices=10000
churners=1000
churn_rate=1000
churn_off_ms=1000
pairs=100
rate=2000
duration=20
warmup=2
debounce=""
node_ttl=""
extra=()

while [ $# -gt 0 ]; do
    case "$1" in
    --build) build=$2; shift 2 ;;
    --plugin) plugin=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --devices) devices=$2; shift 2 ;;
    --churn-devices) churners=$2; shift 2 ;;
    --churn-rate) churn_rate=$2; shift 2 ;;
    --churn-off-ms) churn_off_ms=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --debounce-ms) debounce=$2; shift 2 ;;
    --node-ttl-s) node_ttl=$2; shift 2 ;;
    --quick) devices=2000; churners=1000; duration=5; warmup=1; shift ;;
    --keep) keep=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) show_help; exit 0 ;;
    *) echo "$prog: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

find_tools presence_bench "presence_bench mqchat_plugin"
redis_server=$(command -v redis-server || true)
redis_cli=$(command -v redis-cli || true)
for m in $modes; do
    case "$m" in
    plain) ;;
    mqchat)
        [ -f "$plugin" ] || { echo "run-presence-bench: $plugin not found; build target mqchat_plugin or pass --plugin" >&2; exit 2; }
        if [ -z "$redis_server" ] || [ -z "$redis_cli" ]; then echo "run-presence-bench: redis-server and redis-cli are needed" >&2; exit 2; fi ;;
    *) echo "run-presence-bench: unknown mode $m" >&2; exit 2 ;;
    esac
done

# File descriptors: the load generator holds every device's socket, the
# broker every connection. Raise the soft limit (inherited by both) as far
# as needed; the hard limit is the ceiling.
need=$((devices + 2 * pairs + 256))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
    echo "run-presence-bench: $devices devices need $need file descriptors per process; the hard limit is $hard (use --devices $((hard - 2 * pairs - 256)) or fewer)" >&2
    exit 2
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then ulimit -n "$need"; fi

redis_pid=""
cleanup_more() { stop_pid "$redis_pid" redis-server; }
make_work mqchat-presence-bench

start_redis() { # -> redis_pid, redis_port
    redis_port=$(free_port)
    mkdir -p "$work/redis"
    "$redis_server" --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
        --dir "$work/redis" --logfile "$work/redis/redis.log" --daemonize no \
        --maxclients 1000 >/dev/null 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do
        if ! kill -0 "$redis_pid" 2>/dev/null; then
            echo "run-presence-bench: redis-server exited at start:" >&2
            tail -20 "$work/redis/redis.log" >&2 2>/dev/null || true
            redis_pid=""
            return 1
        fi
        if [ "$(timeout 2 "$redis_cli" -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]; then return 0; fi
        sleep 0.1
    done
    echo "run-presence-bench: redis-server not answering on $redis_port after 10 s" >&2
    return 1
}

write_conf() { # MODE PORT DIR -> DIR/mosquitto.conf
    local mode=$1 port=$2 dir=$3
    {
        case "$mode" in
        plain) broker_conf "$mode" "$port" "$dir" ;;
        mqchat)
            broker_conf "$mode" "$port" "$dir" "$dir/store" os
            echo "plugin_opt_redis 127.0.0.1:$redis_port"
            echo "plugin_opt_node_id bench1"
            [ -z "$node_ttl" ] || echo "plugin_opt_node_ttl_s $node_ttl"
            [ -z "$debounce" ] || echo "plugin_opt_presence_debounce_ms $debounce"
            ;;
        esac
        # 500 connects and 500 disconnects a second: not one log line each.
        echo "connection_messages false"
    } >"$dir/mosquitto.conf"
}

declare -A res # res[mode,window,key]

run_one() { # MODE
    local mode=$1
    local args=(--port "$port" --devices "$devices" --churn-devices "$churners"
        --churn-rate "$churn_rate" --churn-off-ms "$churn_off_ms" --pairs "$pairs"
        --rate "$rate" --duration "$duration" --warmup "$warmup" --broker-pid "$broker_pid")
    case "$mode" in
    plain) args+=(--mode plain) ;;
    mqchat) args+=(--mode mqchat --secret-file "$secret" --redis "127.0.0.1:$redis_port" --redis-pid "$redis_pid") ;;
    esac
    # connect (<= 120 s inside the bench, seconds in practice), 2 windows
    # with their warmups, drain; plus slack.
    local limit
    limit=$(awk -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", 2 * (d + w) + 60 }')
    echo "== $mode: presence_bench ${args[*]} ${extra[*]:-}" >&2
    local out="$rundir/bench.out" rc=0
    res[$mode,load]=$(cut -d' ' -f1 /proc/loadavg)
    run_bench "$limit" "$out" "$rundir/bench.err" "${args[@]}" "${extra[@]}" || rc=$?
    local line kv win
    while read -r line; do
        win=$(sed -n 's/.* window=\([a-z]*\).*/\1/p' <<<"$line")
        for kv in ${line#RESULT }; do res[$mode,$win,${kv%%=*}]=${kv#*=}; done
    done < <(grep '^RESULT' "$out" || true)
    if [ -z "${res[$mode,steady,p99_us]:-}" ]; then
        res[$mode,status]="FAILED(rc=$rc)"
    elif [ "$rc" = 0 ]; then
        res[$mode,status]=ok
    else
        res[$mode,status]="errors(rc=$rc)"
    fi
    broker_alive || res[$mode,status]="broker died"
}

echo "machine: $(machine_info); $("$redis_server" --version 2>/dev/null | cut -d' ' -f1-3)" >&2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); fd limit $(ulimit -n) (hard $hard)" >&2

t_start=$(date +%s)
for m in $modes; do
    if [ "$m" = mqchat ]; then
        start_redis || { res[$m,status]="no redis"; continue; }
    fi
    if start_broker "$m"; then
        run_one "$m"
        stop_broker
    else
        res[$m,status]="no broker"
    fi
    if [ "$m" = mqchat ] && [ -n "$redis_pid" ]; then
        # What the plugin left in Redis once the bench's devices and then
        # the broker (SIGTERM) were gone.
        rcli() { timeout 5 "$redis_cli" -h 127.0.0.1 -p "$redis_port" "$@" 2>/dev/null || echo -; }
        res[$m,keys]="$(rcli dbsize) keys, $(rcli eval "local n = 0
            for _, k in ipairs(redis.call('keys', 'mqchat:pres:*')) do
                if redis.call('hget', k, 'state') == 'online' then n = n + 1 end
            end
            return n" 0) users still 'online', $(rcli eval "return #redis.call('keys', 'mqchat:sess:*')" 0) session hashes, node key TTL $(rcli ttl mqchat:node:bench1) s"
        stop_pid "$redis_pid" redis-server
        redis_pid=""
    fi
done

ms() { awk -v u="${1:-}" 'BEGIN { if (u == "") printf "-"; else printf "%.2f", u / 1000 }'; }
or() { if [ -n "${1:-}" ]; then echo "$1"; else echo -; fi; }

echo
echo "Presence churn: $devices idle devices (keepalive 60 s); churn window: $churners of them reconnecting," \
    "$churn_rate events/s offered (connects + disconnects), ${churn_off_ms} ms away each time;" \
    "$pairs 1:1 pairs at $rate msgs/s (QoS 1, 300-byte bodies) in both windows; ${duration} s windows"
echo
printf "%-7s %-7s %9s %10s %11s %12s %8s %9s %8s %8s %8s %9s %5s  %s\n" mode window "events/s" \
    "redis/evt" "redis/dev/m" "broker us/ev" "broker" "msgs/s" "p50 ms" "p99 ms" "p99.9" "redis cpu" load status
for m in $modes; do
    for win in steady churn; do
        [ -n "${res[$m,$win,window]:-}" ] || [ "$win" = steady ] || continue
        rpe=- rpd=- upe=- rcpu=-
        if [ "$m" = mqchat ]; then
            rcpu="$(or "${res[$m,$win,redis_cpu_pct]:-}")%"
            if [ "$win" = churn ]; then
                rpe=$(or "${res[$m,$win,redis_cmds_per_event]:-}")
            else
                rpd=$(or "${res[$m,$win,idle_cmds_per_dev_min]:-}")
            fi
        fi
        [ "$win" = steady ] || upe=$(or "${res[$m,$win,broker_us_per_event]:-}")
        printf "%-7s %-7s %9s %10s %11s %12s %8s %9s %8s %8s %8s %9s %5s  %s\n" "$m" "$win" \
            "$(or "${res[$m,$win,events_per_s]:-}")" "$rpe" "$rpd" "$upe" \
            "$(or "${res[$m,$win,broker_cpu_pct]:-}")%" "$(or "${res[$m,$win,delivered_per_s]:-}")" \
            "$(ms "${res[$m,$win,p50_us]:-}")" "$(ms "${res[$m,$win,p99_us]:-}")" \
            "$(ms "${res[$m,$win,p999_us]:-}")" "$rcpu" "${res[$m,load]:--}" "${res[$m,status]:-}"
    done
done
echo
for m in $modes; do
    [ "$m" = mqchat ] || continue
    echo "mqchat Redis commands: connect burst ${res[$m,connect,redis_by_cmd]:--} (${res[$m,connect,redis_cmds_per_connect]:--}/connect);" \
        "steady ${res[$m,steady,redis_by_cmd]:--}; churn ${res[$m,churn,redis_by_cmd]:--}" \
        "(${res[$m,churn,redis_nonlive_per_event]:--}/event without the liveness SETs)"
    echo "mqchat Redis reads (~ pipelines): steady ${res[$m,steady,redis_reads]:--}, churn ${res[$m,churn,redis_reads]:--}" \
        "($(awk -v r="${res[$m,churn,redis_reads]:-0}" -v e="${res[$m,churn,events]:-0}" 'BEGIN { if (e > 0) printf "%.2f", r / e; else printf "-" }')/event)"
    echo "mqchat Redis after the devices and the broker left: ${res[$m,keys]:--}"
done
for m in $modes; do
    if [ "${res[$m,churn,skipped]:-0}" != 0 ]; then
        echo "WARNING: $m: ${res[$m,churn,skipped]} disconnect slots found every churner away: use more --churn-devices (> churn-off-ms * churn-rate / 2000)"
    fi
done
for m in $modes; do
    echo "$m connect burst: ${res[$m,connect,clients]:--} clients in ${res[$m,connect,seconds]:--} s" \
        "(${res[$m,connect,per_s]:--}/s), broker ${res[$m,connect,broker_us_per_connect]:--} us/connect;" \
        "churn: broker ${res[$m,churn,broker_us_per_event]:--} us/event of which the event loop ${res[$m,churn,broker_main_us_per_event]:--}," \
        "reconnect -> CONNACK p50/p99 $(ms "${res[$m,churn,connack_p50_us]:-}")/$(ms "${res[$m,churn,connack_p99_us]:-}") ms"
done
echo
echo "redis/evt: Redis commands in the churn window / churn events (liveness SETs included)."
echo "redis/dev/m: Redis commands in the steady window per idle device per minute (all of them the node's liveness SETs when the figure is $(awk -v n="$devices" 'BEGIN { printf "%.4f", 24 / n }') at node_ttl_s 15)."
echo "broker us/ev: broker CPU (utime+stime, all threads) in the churn window minus the steady window, per churn event (CPU times come in 10 ms clock ticks)."
echo "redis cpu: redis-server CPU in % of one core."
echo "broker: broker CPU in % of one core; latency: send -> receiver, from the due time in the body; load: 1-min loadavg before the run."
echo "elapsed: $(($(date +%s) - t_start)) s"
