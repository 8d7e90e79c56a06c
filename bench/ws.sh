#!/usr/bin/env bash
# Side-by-side WebSocket / pub-sub benchmark: plexus vs Node ws vs NATS (websocket)
# vs Redis (RESP), driven by bench/wsload. This is what `make bench-ws` runs;
# docs/bench-ws.md explains what it measures and how to read the table.
#
#   bench/ws.sh                 full run (3 rounds; about 15-20 minutes)
#   WS_QUICK=1 bench/ws.sh      smoke run (1 round, small sizes, about 1 minute)
#   bench/ws.sh --table F...    print the tables again from results-*.jsonl files
#
# Every server is started fresh for every measurement, pinned to WS_SERVER_CPU;
# the client is pinned to WS_CLIENT_CPU. Everything listens and connects on
# 127.0.0.1 only. Each wsload run stops by itself (and is bounded by timeout(1)).
# Servers started here are stopped by PID on exit.
#
# Knobs (environment; defaults in brackets):
#   WS_ROUNDS [3]  WS_DURATION [10] s  WS_WARMUP [2] s  WS_SERVERS [plexus node nats redis]
#   WS_SCENARIOS [echo fanout idle]
#   WS_ECHO_CONNS [100]  WS_ECHO_SIZE [32]  WS_ECHO_WINDOW [16]
#   WS_FANOUT_SUBS ["1000 10000"]  WS_FANOUT_SIZE [32]  WS_FANOUT_WINDOW [16]  WS_FANOUT_RATE [0 = max]
#   WS_IDLE_CONNS ["10000 18000"]  WS_IDLE_HOLD [5] s  WS_IDLE_WS_PROTO [ws-broadcast]
#   WS_SERVER_CPU [1]  WS_CLIENT_CPU [0]  WS_CLIENT_THREADS [1]  WS_PORT_BASE [17100]
#   WS_OUT [build/bench-ws]  WSLOAD [auto]  PLEXUS_ECHO [build/release/examples/echo]
#   PLEXUS_ECHO_PATH [/echo]  PLEXUS_BROADCAST_PATH [/broadcast]
#   PLEXUS_ECHO_B [unset]: a second echo binary (another build) run as server "plexusB",
#     interleaved with "plexus" for an A/B in one run
#   UWS_BIN [unset]: a uWebSockets peer with examples/echo's contract (started as
#     UWS_BIN --listen 127.0.0.1:PORT --workers 1; docs/bench-ws.md says how to build
#     one); when set, "uws" joins the default servers and the tables get a "vs uws" column
set -euo pipefail

orig_pwd=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
BENCH_NAME=bench-ws
# shellcheck source=bench/lib.sh
. bench/lib.sh

if [[ "${WS_QUICK:-0}" == 1 ]]; then
    : "${WS_ROUNDS:=1}" "${WS_DURATION:=3}" "${WS_WARMUP:=1}" "${WS_IDLE_HOLD:=2}"
    : "${WS_FANOUT_SUBS:=1000}" "${WS_IDLE_CONNS:=2000}"
fi
: "${WS_ROUNDS:=3}" "${WS_DURATION:=10}" "${WS_WARMUP:=2}"
: "${UWS_BIN:=}" "${PLEXUS_ECHO_B:=}"
[[ -z "$UWS_BIN" || "$UWS_BIN" == /* ]] || UWS_BIN="$orig_pwd/$UWS_BIN"
[[ -z "$PLEXUS_ECHO_B" || "$PLEXUS_ECHO_B" == /* ]] || PLEXUS_ECHO_B="$orig_pwd/$PLEXUS_ECHO_B"
if [[ -z "${WS_SERVERS:-}" ]]; then
    WS_SERVERS="plexus${PLEXUS_ECHO_B:+ plexusB}${UWS_BIN:+ uws} node nats redis"
fi
: "${WS_SERVERS:=plexus node nats redis}" "${WS_SCENARIOS:=echo fanout idle}"
: "${WS_ECHO_CONNS:=100}" "${WS_ECHO_SIZE:=32}" "${WS_ECHO_WINDOW:=16}"
: "${WS_FANOUT_SUBS:=1000 10000}" "${WS_FANOUT_SIZE:=32}" "${WS_FANOUT_WINDOW:=16}"
: "${WS_FANOUT_RATE:=0}"
: "${WS_IDLE_CONNS:=10000 18000}" "${WS_IDLE_HOLD:=5}" "${WS_IDLE_WS_PROTO:=ws-broadcast}"
: "${WS_SERVER_CPU:=1}" "${WS_CLIENT_CPU:=0}" "${WS_CLIENT_THREADS:=1}"
: "${WS_PORT_BASE:=17100}" "${WS_OUT:=$root/build/bench-ws}"
: "${PLEXUS_ECHO:=$root/build/release/examples/echo}"
: "${PLEXUS_ECHO_PATH:=/echo}" "${PLEXUS_BROADCAST_PATH:=/broadcast}"
: "${WSLOAD:=}"

# ---- table: medians over valid rounds; ratios against redis ----------------------
# The RESULT objects are flat and written by wsload, so awk can pick fields.
print_table() { # results.jsonl...
    awk "$BENCH_AWK"'
    {
        sc = field($0, "scenario"); n = field($0, "conns"); srv = field($0, "server")
        key = sc "|" n
        if (!(key in seen_case)) { seen_case[key] = 1; order[++ncase] = key }
        if (!((key SUBSEP srv) in seen_srv)) { seen_srv[key, srv] = 1; srvs[key] = srvs[key] " " srv }
        proto[key, srv] = field($0, "proto")
        runs[key, srv]++
        if (field($0, "valid") != "true") next
        ok[key, srv]++
        add(key SUBSEP srv SUBSEP "rate", field($0, "msgs_per_s"))
        add(key SUBSEP srv SUBSEP "cpu", field($0, "server_cpu_s"))
        add(key SUBSEP srv SUBSEP "eff", field($0, "per_server_cpu_s"))
        add(key SUBSEP srv SUBSEP "p50", field($0, "p50_us"))
        add(key SUBSEP srv SUBSEP "p99", field($0, "p99_us"))
        add(key SUBSEP srv SUBSEP "rss", field($0, "rss_per_conn_bytes"))
        add(key SUBSEP srv SUBSEP "rssend", field($0, "rss_per_conn_end_bytes"))
        add(key SUBSEP srv SUBSEP "ccpu", field($0, "client_cpu_s"))
    }
    END {
        for (c = 1; c <= ncase; c++) {
            key = order[c]; split(key, kk, "|"); sc = kk[1]
            ns = split(srvs[key], list, " ")
            if (sc == "idle") {
                printf "\n%s, %s connections: server RSS per idle connection, 1 s after connecting and at the end of the hold (lower is better)\n", sc, kk[2]
                printf "  %-8s %-13s %12s %9s %12s %9s %7s%s\n", "server", "proto", "bytes/conn", "vs redis", "at end", "vs redis", "valid", uws_hdr(key)
                base = median(vals[key SUBSEP "redis" SUBSEP "rss"])
                base_end = median(vals[key SUBSEP "redis" SUBSEP "rssend"])
                ubase = median(vals[key SUBSEP "uws" SUBSEP "rss"])
            } else {
                printf "\n%s, %s %s: medians of valid rounds; ratio = per-server-CPU-s vs redis (higher is better)\n", sc, kk[2], sc == "echo" ? "connections" : "subscribers"
                printf "  %-8s %-13s %12s %9s %14s %9s %10s %10s %9s %7s%s\n", "server", "proto", "msgs/s", "srv CPU", "per srv CPU-s", "vs redis", "p50 us", "p99 us", "cli CPU", "valid", uws_hdr(key)
                base = median(vals[key SUBSEP "redis" SUBSEP "eff"])
                ubase = median(vals[key SUBSEP "uws" SUBSEP "eff"])
            }
            for (i = 1; i <= ns; i++) {
                s = list[i]; v = ok[key, s] + 0 "/" runs[key, s]
                if (sc == "idle") {
                    r = median(vals[key SUBSEP s SUBSEP "rss"])
                    re = median(vals[key SUBSEP s SUBSEP "rssend"])
                    printf "  %-8s %-13s %12s %9s %12s %9s %7s%s\n", s, proto[key, s], fmt(r, "%.0f"), ratio(r, base),
                        fmt(re, "%.0f"), ratio(re, base_end), v, uws_col(key, r, ubase)
                } else {
                    e = median(vals[key SUBSEP s SUBSEP "eff"])
                    printf "  %-8s %-13s %12s %9s %14s %9s %10s %10s %9s %7s%s\n", s, proto[key, s],
                        fmt(median(vals[key SUBSEP s SUBSEP "rate"]), "%.0f"), fmt(median(vals[key SUBSEP s SUBSEP "cpu"]), "%.2f"),
                        fmt(e, "%.0f"), ratio(e, base),
                        fmt(median(vals[key SUBSEP s SUBSEP "p50"]), "%.1f"), fmt(median(vals[key SUBSEP s SUBSEP "p99"]), "%.1f"),
                        fmt(median(vals[key SUBSEP s SUBSEP "ccpu"]), "%.2f"), v, uws_col(key, e, ubase)
                }
            }
        }
    }
    # With a uws peer in the results, one more ratio: against uWebSockets.
    function uws_hdr(key) { return ((key SUBSEP "uws") in seen_srv) ? sprintf(" %9s", "vs uws") : "" }
    function uws_col(key, x, b) { return ((key SUBSEP "uws") in seen_srv) ? sprintf(" %9s", ratio(x, b)) : "" }' "$@"
}

bench_table_mode "$@"
bench_outputs "$WS_OUT" jsonl

# ---- the client -------------------------------------------------------------------
bench_wsload "$root/build/release/bench/wsload" "$WS_OUT"
[[ -x "$WSLOAD" ]] || { log "no wsload binary at $WSLOAD"; exit 2; }

bench_pin "$WS_SERVER_CPU" "$WS_CLIENT_CPU"
bench_check_load "throughput and latency"

# The idle scenario holds up to 18 000 sockets in the client and in each server.
maxconns=0
for n in $WS_IDLE_CONNS $WS_FANOUT_SUBS $WS_ECHO_CONNS; do ((n > maxconns)) && maxconns=$n; done
bench_raise_fd_limit "$maxconns" "large runs"

# ---- servers ----------------------------------------------------------------------
declare -A PORT=([plexus]=$((WS_PORT_BASE + 1)) [node]=$((WS_PORT_BASE + 2))
    [nats]=$((WS_PORT_BASE + 3)) [redis]=$((WS_PORT_BASE + 4)) [uws]=$((WS_PORT_BASE + 5))
    [plexusB]=$((WS_PORT_BASE + 6)))
nats_client_port=$((WS_PORT_BASE + 53))
SRV_PID="" # the one server running now; servers run one at a time

cleanup() {
    [[ -n "$SRV_PID" ]] && stop_server
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_available() { # name -> 0 if it can run here, else prints why
    case $1 in
    plexus) [[ -x "$PLEXUS_ECHO" ]] || { echo "no binary at $PLEXUS_ECHO (build the release variant)"; return 1; } ;;
    plexusB) [[ -n "$PLEXUS_ECHO_B" && -x "$PLEXUS_ECHO_B" ]] || { echo "PLEXUS_ECHO_B is not an executable"; return 1; } ;;
    uws) [[ -n "$UWS_BIN" && -x "$UWS_BIN" ]] || { echo "set UWS_BIN to a uWebSockets peer (docs/bench-ws.md)"; return 1; } ;;
    node)
        command -v node >/dev/null || { echo "node not installed"; return 1; }
        if [[ ! -d bench/peers/node_modules/ws ]]; then
            log "installing bench/peers dependencies (npm ci)"
            (cd bench/peers && npm ci --no-audit --no-fund >/dev/null 2>&1) ||
                { echo "npm ci in bench/peers failed"; return 1; }
        fi
        ;;
    *) peer_available "$1" ;;
    esac
}

start_server() { # name logfile -> SRV_PID
    local name=$1 logf=$2 port=${PORT[$1]}
    bench_port_free "$name" "$port" WS_PORT_BASE || return 1
    case $name in
    plexus) "${pin_server[@]}" "$PLEXUS_ECHO" --listen "127.0.0.1:$port" --workers 1 >"$logf" 2>&1 & ;;
    plexusB) "${pin_server[@]}" "$PLEXUS_ECHO_B" --listen "127.0.0.1:$port" --workers 1 >"$logf" 2>&1 & ;;
    uws) "${pin_server[@]}" "$UWS_BIN" --listen "127.0.0.1:$port" --workers 1 >"$logf" 2>&1 & ;;
    node) "${pin_server[@]}" node bench/peers/ws-echo.mjs "$port" >"$logf" 2>&1 & ;;
    nats | redis) start_peer "$name" "$port" "$logf" "$maxconns" "$nats_client_port" ;;
    esac
    SRV_PID=$!
    bench_wait_listen "$name" "$SRV_PID" "$port" "$logf" && return 0
    stop_server
    return 1
}

stop_server() {
    [[ -n "$SRV_PID" ]] || return 0
    bench_stop_pid "$SRV_PID"
    SRV_PID=""
}

# proto/path for (server, scenario)
target() {
    local srv=$1 sc=$2
    case $srv/$sc in
    plexus/echo | plexusB/echo) echo "ws-echo $PLEXUS_ECHO_PATH" ;;
    plexus/fanout | plexusB/fanout) echo "ws-broadcast $PLEXUS_BROADCAST_PATH" ;;
    plexus/idle | plexusB/idle)
        if [[ $WS_IDLE_WS_PROTO == ws-echo ]]; then echo "ws-echo $PLEXUS_ECHO_PATH"; else echo "ws-broadcast $PLEXUS_BROADCAST_PATH"; fi
        ;;
    uws/echo) echo "ws-echo /echo" ;;
    uws/fanout) echo "ws-broadcast /broadcast" ;;
    uws/idle) if [[ $WS_IDLE_WS_PROTO == ws-echo ]]; then echo "ws-echo /echo"; else echo "ws-broadcast /broadcast"; fi ;;
    node/echo) echo "ws-echo /echo" ;;
    node/fanout) echo "ws-broadcast /broadcast" ;;
    node/idle) if [[ $WS_IDLE_WS_PROTO == ws-echo ]]; then echo "ws-echo /echo"; else echo "ws-broadcast /broadcast"; fi ;;
    nats/*) echo "nats-ws /" ;;
    redis/*) echo "redis -" ;;
    esac
}

# A run that produced no RESULT still counts in the table's valid column (as
# invalid): it is recorded with the fields the table groups by.
invalid_run() { # round server scenario conns proto reason
    printf '{"round":%d,"server":"%s","scenario":"%s","conns":%d,"proto":"%s","valid":false,"invalid_reason":"%s"}\n' \
        "$1" "$2" "$3" "$4" "$5" "$6" >>"$results"
}

# ---- plan -------------------------------------------------------------------------
cases=()
for sc in $WS_SCENARIOS; do
    case $sc in
    echo) cases+=("echo:$WS_ECHO_CONNS") ;;
    fanout) for n in $WS_FANOUT_SUBS; do cases+=("fanout:$n"); done ;;
    idle) for n in $WS_IDLE_CONNS; do cases+=("idle:$n"); done ;;
    *) log "unknown scenario '$sc'"; exit 2 ;;
    esac
done
servers=()
for s in $WS_SERVERS; do
    if why=$(server_available "$s"); then servers+=("$s"); else log "skipping $s: $why"; fi
done
((${#servers[@]} > 0)) || { log "no server can run"; exit 2; }
log "servers: ${servers[*]}; cases: ${cases[*]}; rounds: $WS_ROUNDS; output: $results"

invalid=0
for ((round = 1; round <= WS_ROUNDS; round++)); do
    for case_ in "${cases[@]}"; do
        sc=${case_%%:*} n=${case_#*:}
        # Rotate the server order every round so no server always goes first.
        k=${#servers[@]}
        for ((i = 0; i < k; i++)); do
            srv=${servers[$(((i + round - 1) % k))]}
            read -r proto path < <(target "$srv" "$sc")
            logf="$WS_OUT/logs/$stamp-r$round-$sc-$n-$srv"
            args=(--scenario "$sc" --proto "$proto" --port "${PORT[$srv]}" --conns "$n"
                --threads "$WS_CLIENT_THREADS" --label "$srv")
            [[ $path != - ]] && args+=(--path "$path")
            case $sc in
            echo) args+=(--size "$WS_ECHO_SIZE" --window "$WS_ECHO_WINDOW"
                --duration "$WS_DURATION" --warmup "$WS_WARMUP") ;;
            fanout)
                args+=(--size "$WS_FANOUT_SIZE" --window "$WS_FANOUT_WINDOW"
                    --duration "$WS_DURATION" --warmup "$WS_WARMUP")
                [[ $WS_FANOUT_RATE != 0 ]] && args+=(--rate "$WS_FANOUT_RATE")
                ;;
            idle) args+=(--duration "$WS_IDLE_HOLD") ;;
            esac
            if ! start_server "$srv" "$logf.server.log"; then
                invalid=1
                invalid_run "$round" "$srv" "$sc" "$n" "$proto" "the server did not start"
                continue
            fi
            args+=(--server-pid "$SRV_PID")
            # Upper bound only; wsload stops by itself well before.
            limit=$((${WS_DURATION%.*} + ${WS_WARMUP%.*} + ${WS_IDLE_HOLD%.*} + n / 500 + 120))
            log "round $round: $sc n=$n on $srv ($proto)"
            rc=0
            timeout --signal=INT --kill-after=10 "$limit" "${pin_client[@]}" "$WSLOAD" "${args[@]}" \
                >"$logf.wsload.log" 2>&1 || rc=$?
            stop_server
            if ! wsload_result "$logf.wsload.log" "$rc"; then
                invalid=1
                invalid_run "$round" "$srv" "$sc" "$n" "$proto" "no RESULT line (wsload exit $rc)"
                continue
            fi
            if ((rc != 0)); then
                # wsload exits non-zero for an invalid run (W_LINE says "valid":false).
                invalid=1
                log "  run invalid (exit $rc); see $logf.wsload.log"
            fi
            printf '{"round":%d,"server":"%s",%s\n' "$round" "$srv" "$W_LINE" >>"$results"
            wsload_summary "$logf.wsload.log" 'echo|fanout|latency|per conn|server CPU|per server|client CPU|status'
        done
    done
done

print_table "$results" | tee "$summary"
echo
log "results: $results"
log "summary: $summary"
if ((invalid)); then
    log "some runs were invalid or missing (see the valid column and the logs)"
    exit 1
fi
