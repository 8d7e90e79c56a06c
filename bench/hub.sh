#!/usr/bin/env bash
# Hub benchmark: the plexus hub (build/release/plexus) side by side with Redis
# pub/sub and nats-server (websocket) for fanout, plus durable HTTP publish
# throughput with wrk. This is what `make bench-hub` runs; docs/bench-hub.md
# explains the method and how to read the tables.
#
#   bench/hub.sh [RELEASE_BUILD_DIR]       full run (3 rounds; about 7 minutes)
#   HUB_QUICK=1 bench/hub.sh               smoke run (1 round, short; about 1-2 minutes)
#   bench/hub.sh --table FILE...           print the tables again from results-*.jsonl
#
# 1. fanout: 1 000 and 10 000 subscribers + 1 publisher (wsload --scenario fanout):
#    plexus (protocol plexus-hub on /ws; every message is committed to SQLite before
#    it is delivered), redis (RESP SUBSCRIBE/PUBLISH) and nats (nats-ws). Figure:
#    deliveries per server-CPU-second, ratio vs redis.
# 2. http: wrk POSTs a small JSON body to /api/channels/bench/messages on 64
#    connections, --durability normal and full, fresh data directory per run.
#    Figures: publishes/s, p50/p99, server CPU; the messages stored in the channel
#    (counted with sqlite3 in the data directory once the server has stopped;
#    --history-size HTTP_HISTORY keeps them all) must be exactly the 201s wrk
#    counted (bench/peers/hub-publish.lua), offsets 1..N without a gap.
# A run is valid only with its RESULT (wsload) or HUBWRK (wrk) line and no error,
# loss or mismatch; invalid runs are listed (valid column) but leave the medians.
#
# Every server is started fresh for every measurement, pinned to SERVER_CPU; the
# clients (wsload, wrk) are pinned to CLIENT_CPU. Rounds interleave the servers
# (their order rotates every round). Everything listens and connects on 127.0.0.1
# only; every client run stops by itself and is bounded by timeout(1); servers
# started here are stopped by PID, also on exit (trap).
#
# Knobs (environment; defaults in brackets; HUB_QUICK=1 changes the starred ones):
#   ROUNDS [3*]  DURATION [10*] s fanout measured window  WARMUP [2*] s
#   HTTP_DURATION [10*] s  HTTP_WARMUP [2*] s  HTTP_TAIL [1] s (see hub-publish.lua)
#   PARTS [fanout http]  SERVERS [plexus redis nats]  MODES [normal full]
#   FANOUT_SUBS ["1000 10000"]  FANOUT_SIZE [32]  FANOUT_WINDOW [16]  FANOUT_RATE [0 = max]
#   CONNS [64] (wrk)  WRK_THREADS [1]  WRK_TIMEOUT [10s]
#   SERVER_CPU [1]  CLIENT_CPU [0]  CLIENT_THREADS [1] (wsload)  PORT_BASE [17200]
#   PLEXUS_WORKERS [1]  PLEXUS_ARGS [] extra plexus flags  HTTP_HISTORY [1000000000]
#   HUB_OUT [build/bench-hub]  WSLOAD [auto]  PLEXUS [RELEASE_BUILD_DIR/plexus]
#   FANOUT_TARGET [1.8] (plexus/redis per CPU-s)  HTTP_TARGET [50000] (publishes/s, normal)
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

orig_pwd=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
BENCH_NAME=bench-hub
# shellcheck source=bench/lib.sh
. bench/lib.sh

if [[ "${HUB_QUICK:-0}" == 1 ]]; then
    : "${ROUNDS:=1}" "${DURATION:=3}" "${WARMUP:=1}" "${HTTP_DURATION:=3}" "${HTTP_WARMUP:=1}"
fi
: "${ROUNDS:=3}" "${DURATION:=10}" "${WARMUP:=2}"
: "${HTTP_DURATION:=10}" "${HTTP_WARMUP:=2}" "${HTTP_TAIL:=1}"
: "${PARTS:=fanout http}" "${SERVERS:=plexus redis nats}" "${MODES:=normal full}"
: "${FANOUT_SUBS:=1000 10000}" "${FANOUT_SIZE:=32}" "${FANOUT_WINDOW:=16}" "${FANOUT_RATE:=0}"
: "${CONNS:=64}" "${WRK_THREADS:=1}" "${WRK_TIMEOUT:=10s}"
: "${SERVER_CPU:=1}" "${CLIENT_CPU:=0}" "${CLIENT_THREADS:=1}" "${PORT_BASE:=17200}"
: "${PLEXUS_WORKERS:=1}" "${PLEXUS_ARGS:=}" "${HTTP_HISTORY:=1000000000}"
: "${HUB_OUT:=$root/build/bench-hub}" "${WSLOAD:=}"
: "${FANOUT_TARGET:=1.8}" "${HTTP_TARGET:=50000}"

# ---- tables: medians over valid rounds -------------------------------------------
# Input: results-*.jsonl, one flat JSON object per run: wsload RESULT objects with
# "part":"fanout", and "part":"http" objects written below.
print_table() { # results.jsonl...
    awk -v ftarget="$FANOUT_TARGET" -v htarget="$HTTP_TARGET" "$BENCH_AWK"'
    {
        part = field($0, "part")
        if (part == "fanout") {
            key = "fanout|" field($0, "conns"); srv = field($0, "server")
        } else if (part == "http") {
            key = "http"; srv = field($0, "mode"); hconns = field($0, "conns")
        } else next
        if (!(key in seen_case)) { seen_case[key] = 1; order[++ncase] = key }
        if (!((key SUBSEP srv) in seen_srv)) { seen_srv[key, srv] = 1; srvs[key] = srvs[key] " " srv }
        runs[key, srv]++
        la = field($0, "load1"); if (la != "") add("load", la)
        if (part == "http") checked[key, srv] = checked[key, srv] field($0, "check") " "
        if (field($0, "valid") != "true") next
        ok[key, srv]++
        if (part == "fanout") {
            proto[key, srv] = field($0, "proto")
            add(key SUBSEP srv SUBSEP "rate", field($0, "msgs_per_s"))
            add(key SUBSEP srv SUBSEP "pub", field($0, "publish_per_s"))
            add(key SUBSEP srv SUBSEP "cpu", field($0, "server_cpu_s"))
            add(key SUBSEP srv SUBSEP "eff", field($0, "per_server_cpu_s"))
            add(key SUBSEP srv SUBSEP "p50", field($0, "p50_us"))
            add(key SUBSEP srv SUBSEP "p99", field($0, "p99_us"))
            add(key SUBSEP srv SUBSEP "ccpu", field($0, "client_cpu_s"))
        } else {
            add(key SUBSEP srv SUBSEP "rate", field($0, "publish_per_s"))
            add(key SUBSEP srv SUBSEP "p50", field($0, "p50_ms"))
            add(key SUBSEP srv SUBSEP "p99", field($0, "p99_ms"))
            add(key SUBSEP srv SUBSEP "cpu", field($0, "server_cpu_s"))
            add(key SUBSEP srv SUBSEP "cpupct", field($0, "server_cpu_pct"))
            add(key SUBSEP srv SUBSEP "eff", field($0, "per_server_cpu_s"))
            add(key SUBSEP srv SUBSEP "wait", field($0, "server_wait_pct"))
            add(key SUBSEP srv SUBSEP "ccpu", field($0, "client_cpu_pct"))
        }
    }
    END {
        for (c = 1; c <= ncase; c++) {
            key = order[c]
            ns = split(srvs[key], list, " ")
            if (key ~ /^fanout/) {
                split(key, kk, "|")
                printf "\nfanout, %s subscribers: medians of valid rounds; ratio = deliveries per server-CPU-s vs redis (higher is better)\n", kk[2]
                printf "  %-7s %-11s %11s %10s %8s %14s %8s %10s %10s %8s %6s\n", "server", "proto", "deliv/s", "publish/s", "srv CPU", "per srv CPU-s", "vs redis", "p50 us", "p99 us", "cli CPU", "valid"
                base = median(vals[key SUBSEP "redis" SUBSEP "eff"])
                for (i = 1; i <= ns; i++) {
                    s = list[i]; e = median(vals[key SUBSEP s SUBSEP "eff"])
                    printf "  %-7s %-11s %11s %10s %8s %14s %8s %10s %10s %8s %6s\n", s, proto[key, s] == "" ? "-" : proto[key, s],
                        fmt(median(vals[key SUBSEP s SUBSEP "rate"]), "%.0f"), fmt(median(vals[key SUBSEP s SUBSEP "pub"]), "%.0f"),
                        fmt(median(vals[key SUBSEP s SUBSEP "cpu"]), "%.2f"), fmt(e, "%.0f"), ratio(e, base),
                        fmt(median(vals[key SUBSEP s SUBSEP "p50"]), "%.0f"), fmt(median(vals[key SUBSEP s SUBSEP "p99"]), "%.0f"),
                        fmt(median(vals[key SUBSEP s SUBSEP "ccpu"]), "%.2f"), ok[key, s] + 0 "/" runs[key, s]
                    if (s == "plexus") {
                        r = (e != "" && base != "" && base > 0) ? e / base : ""
                        tl[++ntl] = sprintf("fanout %s subscribers: plexus %s redis per server-CPU-s (target >= %.1fx): %s", kk[2],
                            r == "" ? "-" : sprintf("%.2fx", r), ftarget, r == "" ? "no data" : (r >= ftarget ? "met" : "MISSED"))
                    }
                }
            } else {
                printf "\nhttp publish (plexus, POST /api/channels/bench/messages, %s connections): medians of valid rounds\n", hconns
                printf "  %-10s %11s %8s %8s %8s %6s %7s %14s %6s %6s   %s\n", "durability", "publish/s", "p50 ms", "p99 ms", "srv CPU", "CPU %", "wait %", "per srv CPU-s", "wrk %", "valid", "stored == 201s, per round"
                for (i = 1; i <= ns; i++) {
                    s = list[i]; r = median(vals[key SUBSEP s SUBSEP "rate"])
                    printf "  %-10s %11s %8s %8s %8s %6s %7s %14s %6s %6s   %s\n", s, fmt(r, "%.0f"),
                        fmt(median(vals[key SUBSEP s SUBSEP "p50"]), "%.2f"), fmt(median(vals[key SUBSEP s SUBSEP "p99"]), "%.2f"),
                        fmt(median(vals[key SUBSEP s SUBSEP "cpu"]), "%.2f"), fmt(median(vals[key SUBSEP s SUBSEP "cpupct"]), "%.0f"),
                        fmt(median(vals[key SUBSEP s SUBSEP "wait"]), "%.0f"), fmt(median(vals[key SUBSEP s SUBSEP "eff"]), "%.0f"),
                        fmt(median(vals[key SUBSEP s SUBSEP "ccpu"]), "%.0f"), ok[key, s] + 0 "/" runs[key, s], checked[key, s]
                    if (s == "normal")
                        tl[++ntl] = sprintf("http publish, durability normal: %s/s (target >= %d/s): %s", fmt(r, "%.0f"), htarget,
                            r == "" ? "no data" : (r >= htarget ? "met" : "MISSED"))
                }
            }
        }
        if (vals["load"] != "") {
            n = split(vals["load"], loads, " "); lo = loads[1] + 0; hi = lo
            for (i = 2; i <= n; i++) { if (loads[i] + 0 < lo) lo = loads[i] + 0; if (loads[i] + 0 > hi) hi = loads[i] + 0 }
            printf "\nload average (1 min) before each run: %.2f .. %.2f (median %.2f)\n", lo, hi, median(vals["load"])
        }
        if (ntl > 0) printf "\n"
        for (i = 1; i <= ntl; i++) print "target: " tl[i]
    }' "$@"
}

bench_table_mode "$@"

build=${1:-$root/build/release}
build=$(cd "$build" 2>/dev/null && pwd) || { log "no build directory ${1:-build/release}"; exit 2; }
: "${PLEXUS:=$build/plexus}"

bench_outputs "$HUB_OUT" jsonl

# ---- the client -------------------------------------------------------------------
bench_wsload "$build/bench/wsload" "$HUB_OUT"

want_fanout=0 want_http=0
for p in $PARTS; do
    case $p in
    fanout) want_fanout=1 ;;
    http) want_http=1 ;;
    *) log "unknown part '$p' (fanout, http)"; exit 2 ;;
    esac
done
((want_fanout == 0)) || [[ -x "$WSLOAD" ]] || { log "no wsload binary at $WSLOAD"; exit 2; }
if ((want_http)); then
    command -v wrk >/dev/null || { log "wrk is not installed (sh deps/install.sh deps/bench.txt)"; exit 2; }
    command -v sqlite3 >/dev/null || { log "sqlite3 is not installed (deps/debian.txt)"; exit 2; }
fi

bench_pin "$SERVER_CPU" "$CLIENT_CPU"
bench_check_load "throughput and latency"

# 10 000 subscribers: as many sockets in the client and in each server.
maxsubs=0
for n in $FANOUT_SUBS; do ((n > maxsubs)) && maxsubs=$n; done
bench_raise_fd_limit $((want_fanout ? maxsubs : 0)) "large fanout runs"

# ---- servers ----------------------------------------------------------------------
declare -A PORT=([plexus]=$((PORT_BASE + 1)) [nats]=$((PORT_BASE + 3)) [redis]=$((PORT_BASE + 4)))
nats_client_port=$((PORT_BASE + 53))
prefix=$(mktemp -d "${TMPDIR:-/tmp}/plexus-bench-hub.XXXXXX")
SRV_PID="" # the one server running now; servers run one at a time
SRV_DIR="" # its data directory (plexus), removed when it stops

cleanup() {
    [[ -n "$SRV_PID" ]] && stop_server
    rm -rf "$prefix"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_available() { # name -> 0 if it can run here, else prints why
    case $1 in
    plexus) [[ -x "$PLEXUS" ]] || { echo "no binary at $PLEXUS (build the release variant)"; return 1; } ;;
    *) peer_available "$1" ;;
    esac
}

start_server() { # name logfile [durability [extra plexus flags...]] -> SRV_PID (plexus: fresh data dir)
    local name=$1 logf=$2 dur=${3:-normal} port=${PORT[$1]} dir
    shift $(($# < 3 ? $# : 3))
    bench_port_free "$name" "$port" PORT_BASE || return 1
    case $name in
    plexus)
        dir=$(mktemp -d "$prefix/data.XXXXXX")
        SRV_DIR=$dir
        # shellcheck disable=SC2086 # PLEXUS_ARGS is a list of flags
        "${pin_server[@]}" "$PLEXUS" --listen "127.0.0.1:$port" --workers "$PLEXUS_WORKERS" \
            --allow-anonymous --publish-rate 0 --data-dir "$dir" --durability "$dur" \
            --max-connections 20000 $PLEXUS_ARGS "$@" >"$logf" 2>&1 &
        ;;
    nats | redis) start_peer "$name" "$port" "$logf" "$maxsubs" "$nats_client_port" ;;
    esac
    SRV_PID=$!
    bench_wait_listen "$name" "$SRV_PID" "$port" "$logf" && return 0
    stop_server
    return 1
}

stop_server() { # plexus gets 10 s to commit and exit
    [[ -n "$SRV_PID" ]] || return 0
    bench_stop_pid "$SRV_PID" 100
    SRV_PID=""
    [[ -z "$SRV_DIR" ]] || rm -rf "$SRV_DIR"
    SRV_DIR=""
}

kv() { # key line -> value of key=value in a HUBWRK line
    local w
    for w in $2; do
        [[ $w == "$1="* ]] && { echo "${w#*=}"; return 0; }
    done
    echo ""
}

# ---- part 1: fanout ---------------------------------------------------------------
fanout_target() { # server -> proto
    case $1 in
    plexus) echo plexus-hub ;;
    nats) echo nats-ws ;;
    redis) echo redis ;;
    esac
}

run_fanout() { # round n server
    local round=$1 n=$2 srv=$3 proto logf rc=0 limit la
    proto=$(fanout_target "$srv")
    logf="$HUB_OUT/logs/$stamp-r$round-fanout-$n-$srv"
    local args=(--scenario fanout --proto "$proto" --port "${PORT[$srv]}" --conns "$n"
        --subject bench --threads "$CLIENT_THREADS" --label "$srv" --size "$FANOUT_SIZE"
        --window "$FANOUT_WINDOW" --duration "$DURATION" --warmup "$WARMUP")
    [[ $FANOUT_RATE != 0 ]] && args+=(--rate "$FANOUT_RATE")
    if ! start_server "$srv" "$logf.server.log"; then
        invalid_fanout "$round" "$n" "$srv" "the server did not start"
        return 1
    fi
    args+=(--server-pid "$SRV_PID")
    la=$(load1)
    # Upper bound only; wsload stops by itself well before.
    limit=$((${DURATION%.*} + ${WARMUP%.*} + n / 500 + 120))
    log "round $round: fanout $n subscribers on $srv ($proto), load $la"
    timeout --signal=INT --kill-after=10 "$limit" "${pin_client[@]}" "$WSLOAD" "${args[@]}" \
        >"$logf.wsload.log" 2>&1 || rc=$?
    stop_server
    if ! wsload_result "$logf.wsload.log" "$rc"; then
        invalid_fanout "$round" "$n" "$srv" "no RESULT line (wsload exit $rc)"
        return 1
    fi
    # wsload exits non-zero for an invalid run (W_LINE says "valid":false).
    printf '{"part":"fanout","round":%d,"server":"%s","load1":%s,%s\n' "$round" "$srv" "$la" \
        "$W_LINE" >>"$results"
    wsload_summary "$logf.wsload.log" 'fanout|latency|server CPU|per server|client CPU|errors|status'
    ((rc == 0)) || { log "  run invalid (exit $rc); see $logf.wsload.log"; return 1; }
}

# ---- part 2: durable HTTP publishes ---------------------------------------------------
wrk_run() { # port channel tail_channel publish_seconds total_seconds logfile
    local url="http://127.0.0.1:$1"
    timeout --signal=INT --kill-after=10 $(($5 + 60)) "${pin_client[@]}" wrk -t"$WRK_THREADS" \
        -c"$CONNS" -d"$5s" --timeout "$WRK_TIMEOUT" --latency -s bench/peers/hub-publish.lua \
        "$url" -- "$2" "$3" "$4" >"$6" 2>&1
}

stored_messages() { # data_dir channel -> "count min_offset max_offset" of its stored messages
    # Read once the server has stopped (every acknowledged publish is committed).
    sqlite3 -readonly -separator ' ' "$1/plexus.db" \
        "SELECT count(*), coalesce(min(m.offset), 0), coalesce(max(m.offset), 0)
           FROM messages m JOIN channels c ON c.id = m.channel_id
          WHERE CAST(c.name AS TEXT) = '$2';"
}

# A run that produced no RESULT/HUBWRK line (or whose server did not start)
# still counts in the valid column, as invalid.
invalid_fanout() { # round n server reason
    printf '{"part":"fanout","round":%d,"server":"%s","conns":%d,"proto":"%s","valid":false,"invalid_reason":"%s"}\n' \
        "$1" "$3" "$2" "$(fanout_target "$3")" "$4" >>"$results"
}
invalid_http() { # round mode reason
    printf '{"part":"http","round":%d,"mode":"%s","conns":%d,"check":"-","valid":false,"invalid_reason":"%s"}\n' \
        "$1" "$2" "$CONNS" "$3" >>"$results"
}

run_http() { # round mode
    local round=$1 mode=$2 port=${PORT[plexus]} logf la c0 c1 rc=0 line total
    logf="$HUB_OUT/logs/$stamp-r$round-http-$mode"
    if ! start_server plexus "$logf.server.log" "$mode" --history-size "$HTTP_HISTORY"; then
        invalid_http "$round" "$mode" "the server did not start"
        return 1
    fi
    la=$(load1)
    log "round $round: http publish, durability $mode, load $la"
    # Warm-up on other channels; the measured channel starts empty.
    if ((${HTTP_WARMUP%.*} > 0)); then
        wrk_run "$port" warm warm-tail 0 "${HTTP_WARMUP%.*}" "$logf.warmup.wrk" || true
    fi
    total=$((${HTTP_DURATION%.*} + ${HTTP_TAIL%.*}))
    local TIMEFORMAT='%U %S' w0 w1 ccpu=""
    c0=$(cpu_ticks "$SRV_PID") w0=$(wait_ms "$SRV_PID")
    # bash's time: wrk's user and system CPU (children's rusage) on stderr.
    { time wrk_run "$port" bench bench-tail "${HTTP_DURATION%.*}" "$total" "$logf.wrk" || rc=$?; } \
        2>"$logf.client-cpu"
    c1=$(cpu_ticks "$SRV_PID") w1=$(wait_ms "$SRV_PID")
    ccpu=$(awk 'NF == 2 { printf "%.2f", $1 + $2 }' "$logf.client-cpu")
    # Stop the server (cleanly: what it acknowledged is committed), then count
    # what the store holds for the channel.
    local dir=$SRV_DIR stored="" smin smax counted srv_rc=0
    SRV_DIR="" # stop_server must not remove it yet
    stop_server
    if counted=$(stored_messages "$dir" bench 2>"$logf.sqlite3"); then
        read -r stored smin smax <<<"$counted"
    fi
    rm -rf "$dir"
    line=$(grep '^HUBWRK ' "$logf.wrk" | tail -n 1 || true)
    if [[ -z $line ]]; then
        log "  no HUBWRK line from wrk (exit $rc); see $logf.wrk"
        invalid_http "$round" "$mode" "no HUBWRK line (wrk exit $rc)"
        return 1
    fi
    local main201 tail201 non201 dur p50 p99 errs cpu rate pct eff check cpct wpct valid=true
    main201=$(kv main201 "$line") tail201=$(kv tail201 "$line") non201=$(kv non201 "$line")
    dur=$(kv duration_us "$line") p50=$(kv p50_us "$line") p99=$(kv p99_us "$line")
    errs=$(($(kv err_connect "$line") + $(kv err_read "$line") + $(kv err_write "$line") + $(kv err_timeout "$line")))
    cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
    rate=$(awk -v n=$((main201 + tail201)) -v d="$dur" 'BEGIN { printf "%.1f", (d > 0 ? n * 1e6 / d : 0) }')
    pct=$(awk -v c="$cpu" -v d="$dur" 'BEGIN { printf "%.0f", (d > 0 ? 100 * c * 1e6 / d : 0) }')
    eff=$(awk -v n=$((main201 + tail201)) -v c="$cpu" 'BEGIN { printf "%.0f", (c > 0 ? n / c : 0) }')
    cpct=$(awk -v c="${ccpu:-0}" -v d="$dur" 'BEGIN { printf "%.0f", (d > 0 ? 100 * c * 1e6 / d : 0) }')
    wpct=$(awk -v w=$((w1 - w0)) -v d="$dur" 'BEGIN { printf "%.0f", (d > 0 ? 100 * w * 1e3 / d : 0) }')
    # Stored == acknowledged, and the stored offsets are 1..N without a gap.
    if [[ $stored == "$main201" && ($stored == 0 || ($smin == 1 && $smax == "$stored")) ]]; then
        check="$stored=$main201:ok"
    else
        check="${stored:-?}(offsets ${smin:-?}..${smax:-?})!=$main201:MISMATCH"
        valid=false
    fi
    ((non201 == 0 && errs == 0 && rc == 0 && main201 > 0)) || valid=false
    printf '{"part":"http","round":%d,"mode":"%s","load1":%s,"conns":%d,"publish_per_s":%s,"p50_ms":%s,"p99_ms":%s,"server_cpu_s":%s,"server_cpu_pct":%s,"per_server_cpu_s":%s,"server_wait_pct":%s,"client_cpu_s":%s,"client_cpu_pct":%s,"main201":%d,"tail201":%d,"non201":%d,"socket_errors":%d,"stored":%s,"check":"%s","valid":%s}\n' \
        "$round" "$mode" "$la" "$CONNS" "$rate" "$(awk -v u="$p50" 'BEGIN { printf "%.3f", u / 1000 }')" \
        "$(awk -v u="$p99" 'BEGIN { printf "%.3f", u / 1000 }')" "$cpu" "$pct" "$eff" "$wpct" "${ccpu:-null}" "$cpct" "$main201" \
        "$tail201" "$non201" "$errs" "${stored:-null}" "$check" "$valid" >>"$results"
    log "    $rate publishes/s, p50 $((p50 / 1000)).$(printf '%03d' $((p50 % 1000))) ms, p99 $((p99 / 1000)).$(printf '%03d' $((p99 % 1000))) ms, server CPU $cpu s ($pct%, waiting for a CPU $wpct%), wrk CPU ${ccpu:-?} s ($cpct%), stored $stored vs 201s $main201 ($check), non-201 $non201, socket errors $errs"
    [[ $valid == true ]] || { log "  run invalid; see $logf.wrk"; return 1; }
}

# ---- plan -------------------------------------------------------------------------
servers=()
if ((want_fanout)); then
    for s in $SERVERS; do
        if why=$(server_available "$s"); then servers+=("$s"); else log "skipping $s: $why"; fi
    done
fi
if ((want_http)) && ! why=$(server_available plexus); then
    log "skipping the http part: $why"
    want_http=0
fi
((${#servers[@]} > 0 || want_http)) || { log "nothing can run"; exit 2; }
for m in $MODES; do
    case $m in normal | full) ;; *) log "unknown durability mode '$m'"; exit 2 ;; esac
done
log "parts: $PARTS; fanout servers: ${servers[*]:-none}, subscribers: $FANOUT_SUBS;" \
    "http modes: $MODES; rounds: $ROUNDS; pinned: server ${pin_server[*]:-no}, client ${pin_client[*]:-no}"
log "output: $results"

invalid=0
read -r -a modes <<<"$MODES"
for ((round = 1; round <= ROUNDS; round++)); do
    if ((want_fanout)); then
        for n in $FANOUT_SUBS; do
            # Rotate the server order every round so no server always goes first.
            k=${#servers[@]}
            for ((i = 0; i < k; i++)); do
                run_fanout "$round" "$n" "${servers[$(((i + round - 1) % k))]}" || invalid=1
            done
        done
    fi
    if ((want_http)); then
        k=${#modes[@]}
        for ((i = 0; i < k; i++)); do
            run_http "$round" "${modes[$(((i + round - 1) % k))]}" || invalid=1
        done
    fi
done

{
    echo "hub benchmark $stamp: $ROUNDS round(s); fanout ${DURATION}s measured after ${WARMUP}s," \
        "window $FANOUT_WINDOW, ${FANOUT_SIZE}-byte payloads; http ${HTTP_DURATION}s + ${HTTP_TAIL}s tail," \
        "wrk -t$WRK_THREADS -c$CONNS; servers on CPU $SERVER_CPU (plexus --workers $PLEXUS_WORKERS), clients on CPU $CLIENT_CPU"
    echo "load average at start: $load_start; at end: $(load1) ($ncpu CPUs)"
    print_table "$results"
} | tee "$summary"
echo
log "results: $results"
log "summary: $summary"
if ((invalid)); then
    log "some runs were invalid or missing (see the valid column and $HUB_OUT/logs)"
    exit 1
fi
