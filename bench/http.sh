#!/usr/bin/env bash
# HTTP/1.1 benchmark: examples/hello vs nginx vs h2o vs the floor, driven by wrk. This is what
# `make bench-http` runs; docs/bench-http.md explains the method and the table.
#
#   bench/http.sh [RELEASE_BUILD_DIR]          (default: build/release)
#   DURATION=5 ROUNDS=3 bench/http.sh build/release
#
# Three scenarios (TechEmpower-style): GET /plaintext, GET /json, and /plaintext
# pipelined 16 deep (bench/pipeline.lua). wrk: 64 connections, 1 thread, pinned
# to CLIENT_CPU; every server: 1 worker/thread, pinned to SERVER_CPU. Runs are
# interleaved (hello, nginx, h2o, hello, nginx, h2o, ...) so slow drifts of a
# shared machine hit every server alike. For each run: requests/s, p50/p99
# latency, the server's CPU (utime+stime of all its threads and children, from
# /proc/PID/stat) over the measured window only (the middle of the run, not
# wrk's connect and exit), requests per server-CPU-second, and the server's RSS
# (VmRSS) sampled mid-run with the connections open. A run is valid when wrk
# finished and reported no error (socket errors, non-2xx); invalid runs stay in
# results.tsv (valid=0) but leave the medians and ratios, and the summary shows
# how many runs were valid. Then medians and ratios vs nginx, and vs "limit"
# (bench/limit: a minimal epoll server sending prebuilt responses, the floor
# any server's cost per request is measured against).
#
# Everything listens and connects on 127.0.0.1. Each wrk run stops by itself
# (and is bounded by timeout(1)). Servers are started here, once, and stopped by
# PID on exit (trap), whatever happens.
#
# Knobs (environment; defaults in brackets):
#   DURATION [10] s per run   ROUNDS [3]   WARMUP [2] s per server and scenario
#   CONNS [64]  WRK_THREADS [1]  PIPELINE [16]  WRK_TIMEOUT [5s]
#   SERVERS [hello nginx h2o limit]  SCENARIOS [plaintext json pipelined]
#   SERVER_CPU [1]  CLIENT_CPU [0]  PORT_BASE [18480]
#   H2O_MODE [file]: file = h2o serves a file holding the same bytes (file.file);
#                    mruby = an mruby.handler returns the fixed body
#   HTTP_OUT [build/bench-http]
# `make bench-http` runs this with sh: re-run under bash (arrays, pipefail).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
BENCH_NAME=bench-http
# shellcheck source=bench/lib.sh
. bench/lib.sh
build=${1:-$root/build/release}
build=$(cd "$build" 2>/dev/null && pwd) || { echo "bench-http: no build directory ${1:-build/release}" >&2; exit 2; }

: "${DURATION:=10}" "${ROUNDS:=3}" "${WARMUP:=2}"
: "${CONNS:=64}" "${WRK_THREADS:=1}" "${PIPELINE:=16}" "${WRK_TIMEOUT:=5s}"
: "${SERVERS:=hello nginx h2o limit}" "${SCENARIOS:=plaintext json pipelined}"
: "${SERVER_CPU:=1}" "${CLIENT_CPU:=0}" "${PORT_BASE:=18480}" "${H2O_MODE:=file}"
: "${HTTP_OUT:=$root/build/bench-http}"

HELLO=$build/examples/hello
LIMIT=$build/bench/limit
bench_outputs "$HTTP_OUT" tsv
printf 'round\tscenario\tserver\tvalid\trps\tp50_ms\tp99_ms\tcpu_s\twindow_s\treq_per_cpu_s\trss_kb\trequests\terrors\n' >"$results"

command -v wrk >/dev/null || { log "wrk is not installed (sh deps/install.sh deps/bench.txt)"; exit 2; }

bench_pin "$SERVER_CPU" "$CLIENT_CPU"
bench_check_load "requests/s and latency"

# ---- servers ----------------------------------------------------------------------
prefix=$(mktemp -d "${TMPDIR:-/tmp}/plexus-bench-http.XXXXXX")
declare -A PID=() PORT=()
i=1
for s in hello nginx h2o limit; do
    PORT[$s]=$((PORT_BASE + i))
    i=$((i + 1))
done

cleanup() {
    bench_stop_all
    rm -rf "$prefix"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_available() { # name -> 0 if it can run here, else prints why
    case $1 in
    hello) [[ -x "$HELLO" ]] || { echo "no binary at $HELLO (build the release variant)"; return 1; } ;;
    nginx) command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || { echo "nginx not installed"; return 1; } ;;
    h2o) command -v h2o >/dev/null || { echo "h2o not installed"; return 1; } ;;
    limit) [[ -x "$LIMIT" ]] || { echo "no binary at $LIMIT (build the release variant with the benchmarks)"; return 1; } ;;
    *) echo "unknown server"; return 1 ;;
    esac
}

fill() { # template output: replace @PREFIX@ @PORT@ @USER@
    sed -e "s|@PREFIX@|$3|g" -e "s|@PORT@|$4|g" -e "s|@USER@|$(id -un)|g" "$1" >"$2"
}

start_server() { # name -> PID[name]
    local name=$1 port=${PORT[$1]} dir=$prefix/$1 logf=$HTTP_OUT/logs/$stamp-$1.log
    mkdir -p "$dir"
    bench_port_free "$name" "$port" PORT_BASE || return 1
    case $name in
    hello)
        "${pin_server[@]}" "$HELLO" --listen "127.0.0.1:$port" --workers 1 >"$logf" 2>&1 &
        ;;
    nginx)
        fill bench/peers/nginx.conf.in "$dir/nginx.conf" "$dir" "$port"
        "${pin_server[@]}" "$(command -v nginx || echo /usr/sbin/nginx)" -p "$dir" -c "$dir/nginx.conf" \
            -e "$dir/error.log" >"$logf" 2>&1 &
        ;;
    limit)
        "${pin_server[@]}" "$LIMIT" --listen "127.0.0.1:$port" --workers 1 >"$logf" 2>&1 &
        ;;
    h2o)
        printf 'Hello, World!' >"$dir/hello.txt"
        printf '{"message":"Hello, World!"}' >"$dir/hello.json"
        fill bench/peers/h2o.conf.in "$dir/h2o.conf" "$dir" "$port"
        "${pin_server[@]}" h2o -c "$dir/h2o.conf" >"$logf" 2>&1 &
        ;;
    esac
    PID[$name]=$!
    bench_wait_listen "$name" "${PID[$name]}" "$port" "$logf" && return 0
    bench_stop_pid "${PID[$name]}"
    unset "PID[$name]"
    return 1
}

path_for() { # server scenario -> URL path
    local p=/plaintext
    [[ $2 == json ]] && p=/json
    [[ $1 == h2o && $H2O_MODE == mruby ]] && p=/m$p
    echo "$p"
}

# A response must be exactly the body hello sends, with the right type.
check_server() { # name
    local name=$1 port=${PORT[$1]} sc want type got
    for sc in plaintext json; do
        if [[ $sc == plaintext ]]; then want='Hello, World!' type=text/plain; else want='{"message":"Hello, World!"}' type=application/json; fi
        got=$(curl -s --max-time 5 -D "$prefix/hdr" "http://127.0.0.1:$port$(path_for "$name" "$sc")") || got=""
        if [[ "$got" != "$want" ]]; then
            log "$name: unexpected /$sc body: '$got'"
            return 1
        fi
        if ! grep -qi "^content-type: $type" "$prefix/hdr"; then
            log "note: $name answers /$sc with $(grep -i '^content-type' "$prefix/hdr" | tr -d '\r')"
        fi
    done
}

to_ms() { # "1.23ms" / "456.00us" / "1.02s" -> ms; "nan" when wrk printed nothing or 0
    # (wrk 4.1 prints "99% 0.00us" for some pipelined runs: its histogram lost the tail)
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        if (n > 0) printf "%.3f", n; else printf "nan" }'
}

run_wrk() { # name scenario seconds logfile -> sets W_* ; returns wrk's status
    local name=$1 sc=$2 secs=$3 logf=$4 url args=()
    url="http://127.0.0.1:${PORT[$name]}$(path_for "$name" "$sc")"
    args=(-t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" --timeout "$WRK_TIMEOUT" --latency)
    [[ $sc == pipelined ]] && args+=(-s bench/pipeline.lua)
    args+=("$url")
    [[ $sc == pipelined ]] && args+=(-- "$PIPELINE")
    local pid=${PID[$name]} c0 c1 t0 t1 rc=0 edge half
    # The measured window is the middle of the run: it starts after wrk has
    # connected and ends before it stops and closes (EDGE s, 10 % of the run, at
    # least 0.2 s, at each end), so connection set-up and tear-down are not
    # counted. CPU per request = CPU in the window / (req/s x window).
    edge=$(awk -v d="$secs" 'BEGIN { e = d / 10; if (e < 0.2) e = 0.2; printf "%.2f", e }')
    half=$(awk -v d="$secs" -v e="$edge" 'BEGIN { printf "%.2f", d / 2 - e }')
    timeout --signal=INT --kill-after=10 $((secs + 30)) "${pin_client[@]}" wrk "${args[@]}" >"$logf" 2>&1 &
    local wpid=$!
    sleep "$edge"
    c0=$(cpu_ticks "$pid") t0=$EPOCHREALTIME
    # RSS with the connections open: sample in the middle of the run.
    sleep "$half"
    W_RSS=$(rss_kb "$pid")
    sleep "$half"
    c1=$(cpu_ticks "$pid") t1=$EPOCHREALTIME
    wait "$wpid" || rc=$?
    W_WIN=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    W_CPU=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
    W_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$logf")
    W_REQ=$(awk '/ requests in / { print $1 }' "$logf")
    W_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$logf")")
    W_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$logf")")
    W_ERR=$(awk '/Socket errors:/ { gsub(",", ""); e += $4 + $6 + $8 + $10 } /Non-2xx/ { e += $NF } END { print e + 0 }' "$logf")
    [[ -n $W_RPS && -n $W_REQ ]] || rc=1
    return "$rc"
}

# ---- plan -------------------------------------------------------------------------
servers=()
for s in $SERVERS; do
    if why=$(server_available "$s"); then
        if start_server "$s" && check_server "$s"; then
            servers+=("$s")
        else
            log "skipping $s (could not start or wrong answers)"
        fi
    else
        log "skipping $s: $why"
    fi
done
((${#servers[@]} > 0)) || { log "no server can run"; exit 2; }
for sc in $SCENARIOS; do
    case $sc in plaintext | json | pipelined) ;; *) log "unknown scenario '$sc'"; exit 2 ;; esac
done
log "servers: ${servers[*]} (pinned: ${pin_server[*]:-none}); client: wrk -t$WRK_THREADS -c$CONNS (${pin_client[*]:-not pinned})"
log "scenarios: $SCENARIOS; rounds: $ROUNDS x ${DURATION}s; h2o mode: $H2O_MODE; output: $results"

invalid=0
for sc in $SCENARIOS; do
    if ((WARMUP > 0)); then
        for s in "${servers[@]}"; do
            run_wrk "$s" "$sc" "$WARMUP" "$HTTP_OUT/logs/$stamp-warmup-$sc-$s.wrk" || true
        done
    fi
    for ((round = 1; round <= ROUNDS; round++)); do
        for s in "${servers[@]}"; do
            logf="$HTTP_OUT/logs/$stamp-r$round-$sc-$s.wrk"
            valid=1
            if ! run_wrk "$s" "$sc" "$DURATION" "$logf"; then
                log "round $round $sc $s: wrk failed; see $logf (run left out of the medians)"
                valid=0
                W_RPS=nan W_P50=nan W_P99=nan W_CPU=nan W_WIN=nan W_RSS=nan W_REQ=nan W_ERR=${W_ERR:-nan}
            elif ((W_ERR > 0)); then
                valid=0
            fi
            ((valid)) || invalid=1
            rpc=$(awk -v r="$W_RPS" -v w="$W_WIN" -v c="$W_CPU" \
                'BEGIN { if (c + 0 > 0 && r != "nan") printf "%.0f", r * w / c; else print "nan" }')
            printf '%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$sc" "$s" "$valid" \
                "$W_RPS" "$W_P50" "$W_P99" "$W_CPU" "$W_WIN" "$rpc" "$W_RSS" "$W_REQ" "$W_ERR" >>"$results"
            printf 'bench-http: round %d %-9s %-5s %10s req/s  p50 %8s ms  p99 %8s ms  cpu %6s s of %6s s  %8s req/cpu-s  rss %6s kB%s\n' \
                "$round" "$sc" "$s" "$W_RPS" "$W_P50" "$W_P99" "$W_CPU" "$W_WIN" "$rpc" "$W_RSS" \
                "$( ((valid)) || echo "  INVALID (errors: $W_ERR; left out of the medians)")" >&2
        done
    done
done

# ---- summary: medians per scenario and server, ratios vs nginx ---------------------
col() { # scenario server column -> values of the valid runs
    awk -F'\t' -v sc="$1" -v s="$2" -v c="$3" 'NR > 1 && $2 == sc && $3 == s && $4 == 1 { print $c }' "$results"
}
nvalid() { # scenario server -> "valid/runs"
    awk -F'\t' -v sc="$1" -v s="$2" 'NR > 1 && $2 == sc && $3 == s { n++; v += ($4 == 1) }
        END { printf "%d/%d", v, n }' "$results"
}
{
    echo "HTTP benchmark $stamp: medians of $ROUNDS x ${DURATION}s runs; wrk -t$WRK_THREADS -c$CONNS;" \
        "servers on CPU $SERVER_CPU (1 worker), wrk on CPU $CLIENT_CPU; h2o mode: $H2O_MODE"
    echo "load average at start: $load_start on $ncpu CPU(s)"
    echo "medians over the valid runs only (valid = runs without wrk errors / runs);" \
        "cpu % = server CPU over the measured window, in % of one core"
    printf '%-9s %-5s %5s %11s %9s %9s %6s %11s %8s %9s %11s %9s %11s\n' scenario server valid "req/s" "p50 ms" \
        "p99 ms" "cpu %" "req/cpu-s" "RSS kB" "vs nginx" "eff. vs ng" "vs limit" "eff. vs lim"
    for sc in $SCENARIOS; do
        ng_rps=$(col "$sc" nginx 5 | median)
        ng_rpc=$(col "$sc" nginx 10 | median)
        li_rps=$(col "$sc" limit 5 | median)
        li_rpc=$(col "$sc" limit 10 | median)
        for s in "${servers[@]}"; do
            rps=$(col "$sc" "$s" 5 | median)
            p50=$(col "$sc" "$s" 6 | median)
            p99=$(col "$sc" "$s" 7 | median)
            util=$(awk -F'\t' -v sc="$sc" -v s="$s" 'NR > 1 && $2 == sc && $3 == s && $4 == 1 && $9 > 0 {
                print 100 * $8 / $9 }' "$results" | median)
            rpc=$(col "$sc" "$s" 10 | median)
            rss=$(col "$sc" "$s" 11 | median)
            awk -v sc="$sc" -v s="$s" -v ok="$(nvalid "$sc" "$s")" -v rps="$rps" -v p50="$p50" -v p99="$p99" \
                -v util="$util" -v rpc="$rpc" -v rss="$rss" -v nr="$ng_rps" -v nc="$ng_rpc" \
                -v lr="$li_rps" -v lc="$li_rpc" '
                function num(v, fmt) { return v == "nan" ? "-" : sprintf(fmt, v) }
                BEGIN {
                r1 = (nr != "nan" && nr + 0 > 0 && rps != "nan") ? sprintf("%.2fx", rps / nr) : "-"
                r2 = (nc != "nan" && nc + 0 > 0 && rpc != "nan") ? sprintf("%.2fx", rpc / nc) : "-"
                r3 = (lr != "nan" && lr + 0 > 0 && rps != "nan") ? sprintf("%.2fx", rps / lr) : "-"
                r4 = (lc != "nan" && lc + 0 > 0 && rpc != "nan") ? sprintf("%.2fx", rpc / lc) : "-"
                printf "%-9s %-5s %5s %11s %9s %9s %6s %11s %8s %9s %11s %9s %11s\n", sc, s, ok, num(rps, "%.0f"),
                    num(p50, "%.3f"), num(p99, "%.3f"), num(util, "%.0f"), num(rpc, "%.0f"), num(rss, "%.0f"), r1, r2, r3, r4 }'
        done
    done
} | tee "$summary"
echo
log "results: $results"
log "summary: $summary"
if ((invalid)); then
    log "some runs failed or had errors and were left out of the medians (see the per-run lines and $HTTP_OUT/logs)"
    exit 1
fi
