#!/usr/bin/env bash
# Pass-through benchmark: plexus --forward vs sslh (select and fork variants;
# ev if the installed sslh has it), with a direct connection to the backend as
# the floor. This is what `make bench-forward` runs; docs/benchmarks.md has
# the tables and their reading.
#
#   bench/forward.sh [RELEASE_BUILD_DIR]          (default: build/release)
#   DURATION=5 ROUNDS=3 bench/forward.sh build/release
#
# Two scenarios, each against every server, interleaved round by round
# (direct, plexus, sslh-select, ... then again), so slow drifts of a shared
# machine hit every server alike:
#   tput  CONNS connections (100) each send 64 KiB chunks (CHUNK) for DURATION
#         seconds through the server to bench/fwdload's backend, which counts
#         what arrives. Reported: bytes delivered, MB/s, the server's CPU
#         seconds (run time of all threads and live descendants, from
#         /proc/*/task/*/schedstat: sslh forks per connection), and bytes per
#         server-CPU-second.
#   ping  one connection, PING_ROUNDS round trips of PING_SIZE (64) bytes; p50,
#         p90, p99 in microseconds. Added latency = server p50 - direct p50.
# The proxies run with one worker/process pinned to SERVER_CPU; the client and
# the backend share CLIENT_CPU. A run is invalid (kept in the TSV, left out of
# the medians) if the client reports an error, not every connection finished,
# or nothing arrived. Then medians over the valid rounds, and ratios vs
# sslh-select.
#
# Knobs (environment; defaults in brackets):
#   DURATION [10] s per tput run   ROUNDS [3]   CONNS [100]   CHUNK [65536]
#   PING_ROUNDS [20000]  PING_SIZE [64]  SERVERS [direct plexus sslh-select sslh-fork]
#   SERVER_CPU [1]  CLIENT_CPU [0]  PORT_BASE [18580]  FWD_OUT [build/bench-forward]
#   PLEXUS_BIN [BUILD/plexus]
# Everything listens and connects on 127.0.0.1; servers are stopped by PID on exit.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${1:-$root/build/release}
build=$(cd "$build" 2>/dev/null && pwd) || { echo "bench-forward: no build directory ${1:-build/release}" >&2; exit 2; }

: "${DURATION:=10}" "${ROUNDS:=3}" "${CONNS:=100}" "${CHUNK:=65536}"
: "${PING_ROUNDS:=20000}" "${PING_SIZE:=64}"
: "${SERVER_CPU:=1}" "${CLIENT_CPU:=0}" "${PORT_BASE:=18580}"
: "${FWD_OUT:=$root/build/bench-forward}"
default_servers="direct plexus sslh-select sslh-fork"
command -v sslh-ev >/dev/null && default_servers="$default_servers sslh-ev"
: "${SERVERS:=$default_servers}"

log() { printf 'bench-forward: %s\n' "$*" >&2; }

LOAD=$build/bench/fwdload
PLEXUS=${PLEXUS_BIN:-$build/plexus}
[ -x "$LOAD" ] || { log "no $LOAD (make build)"; exit 2; }
mkdir -p "$FWD_OUT/logs"
stamp=$(date +%Y%m%d-%H%M%S)
results="$FWD_OUT/results-$stamp.tsv"
summary="$FWD_OUT/summary-$stamp.txt"
printf 'round\tscenario\tserver\tvalid\tbytes\tMBps\tcpu_s\tbytes_per_cpu_s\tp50_us\tp90_us\tp99_us\n' >"$results"

ncpu=$(nproc 2>/dev/null || echo 1)
pin_server=() pin_client=()
if command -v taskset >/dev/null && ((ncpu > SERVER_CPU && ncpu > CLIENT_CPU)) &&
    [[ "$SERVER_CPU" != "$CLIENT_CPU" ]]; then
    pin_server=(taskset -c "$SERVER_CPU")
    pin_client=(taskset -c "$CLIENT_CPU")
else
    log "warning: not pinning (need taskset and two distinct CPUs; have $ncpu)"
fi
read -r load1 _ </proc/loadavg
log "load average $load1 on $ncpu CPU(s) at start"

# ---- processes ------------------------------------------------------------------------
declare -A PID=() PORT=()
tmp=$(mktemp -d "${TMPDIR:-/tmp}/plexus-bench-forward.XXXXXX")
main_pid=$BASHPID
cleanup() {
    # Only the script itself: command substitutions inherit the EXIT trap.
    [ "$BASHPID" = "$main_pid" ] || return 0
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

backend_port=$PORT_BASE
"${pin_client[@]}" "$LOAD" backend "$backend_port" >"$FWD_OUT/logs/backend.log" 2>&1 &
PID[backend]=$!
backend="127.0.0.1:$backend_port"

i=1
for s in $SERVERS; do
    [ "$s" = direct ] && { PORT[$s]=$backend_port; continue; }
    PORT[$s]=$((PORT_BASE + i))
    i=$((i + 1))
    p=${PORT[$s]}
    case $s in
    plexus)
        "${pin_server[@]}" "$PLEXUS" --listen "127.0.0.1:$p" --workers 1 --data-dir "$tmp/var" \
            --log-level warn --forward "ssh=$backend" \
            >"$FWD_OUT/logs/$s.log" 2>&1 &
        ;;
    sslh-select | sslh-fork | sslh-ev)
        bin=$s
        [ "$s" = sslh-fork ] && bin=sslh
        command -v "$bin" >/dev/null || { log "$bin not installed (deps/bench.txt): skipping $s"; continue; }
        "${pin_server[@]}" "$bin" -f -n -p "127.0.0.1:$p" --ssh "$backend" \
            >"$FWD_OUT/logs/$s.log" 2>&1 &
        ;;
    *) log "unknown server $s"; exit 2 ;;
    esac
    PID[$s]=$!
done

# Wait until every port accepts.
for s in $SERVERS; do
    [ -n "${PORT[$s]:-}" ] || continue
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$s]}") 2>/dev/null && break
        sleep 0.05
    done
done

# CPU seconds of a server: all threads of the process and of its live
# descendants (sslh forks a process per listener and one per connection, even
# Debian 1.20's sslh-select; they are alive while the client holds its
# connections). From
# schedstat (nanoseconds run): on this machine's kernel the tick-sampled
# utime/stime of /proc/PID/stat miss most of the time spent in system calls.
descendants() { # PID and every live descendant
    local p
    echo "$1"
    for p in $(ps -o pid= --ppid "$1"); do descendants "$p"; done
}
cpu_of() {
    local p
    for p in $(descendants "$1"); do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done |
        awk '{ ns += $1 } END { printf "%.3f", ns / 1e9 }'
}

calc() { awk "BEGIN { print ($*) }"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# ---- runs -----------------------------------------------------------------------------
for round in $(seq "$ROUNDS"); do
    for s in $SERVERS; do
        [ -n "${PORT[$s]:-}" ] || continue
        p=${PORT[$s]}
        pid=${PID[$s]:-}
        c0=0
        [ -n "$pid" ] && c0=$(cpu_of "$pid")
        # The client holds its connections open until its stdin closes: the
        # CPU of per-connection children is read while they are alive.
        coproc LOADP { FWDLOAD_HOLD=1 "${pin_client[@]}" "$LOAD" tput "$p" "$CONNS" "$DURATION" "$CHUNK" "$backend_port" 2>>"$FWD_OUT/logs/client.log"; }
        out=
        read -r out <&"${LOADP[0]}" || true
        c1=0
        [ -n "$pid" ] && c1=$(cpu_of "$pid")
        exec {LOADP[1]}>&-
        wait "$LOADP_PID" || true
        sleep 1 # children of this run exit and are reaped before the next reading
        read -r _ bytes _ ok _ errs _ secs <<<"${out:-bytes 0 conns_ok 0 errors 1 seconds 1}"
        cpu=$(calc "$c1 - $c0")
        valid=1
        [ "$errs" = 0 ] && [ "$ok" = "$CONNS" ] && [ "$bytes" != 0 ] || valid=0
        mbps=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1e6 }')
        bpc=-
        [ -n "$pid" ] && [ "$(calc "$cpu > 0")" = 1 ] && bpc=$(awk -v b="$bytes" -v c="$cpu" 'BEGIN { printf "%.0f", b / c }')
        printf '%s\ttput\t%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\n' "$round" "$s" "$valid" "$bytes" "$mbps" "$cpu" "$bpc" >>"$results"
        log "round $round tput $s: $mbps MB/s, cpu $cpu s, $bpc B/cpu-s (valid=$valid)"

        out=$("${pin_client[@]}" "$LOAD" ping "$p" "$PING_ROUNDS" "$PING_SIZE" 2>>"$FWD_OUT/logs/client.log" || true)
        read -r _ p50 _ p90 _ p99 _ rounds _ errs <<<"${out:-p50_us 0 p90_us 0 p99_us 0 rounds 0 errors 1}"
        valid=1
        [ "$errs" = 0 ] && [ "$rounds" = "$PING_ROUNDS" ] || valid=0
        printf '%s\tping\t%s\t%s\t-\t-\t-\t-\t%s\t%s\t%s\n' "$round" "$s" "$valid" "$p50" "$p90" "$p99" >>"$results"
        log "round $round ping $s: p50 $p50 us, p99 $p99 us (valid=$valid)"
    done
done

# ---- summary ------------------------------------------------------------------------------
{
    echo "pass-through benchmark $(date -u +%Y-%m-%d) — $CONNS conns x $CHUNK-byte chunks, ${DURATION}s x $ROUNDS rounds; ping $PING_ROUNDS x $PING_SIZE B"
    printf '%-12s %10s %12s %18s %10s %10s %10s %14s\n' server MB/s cpu_s bytes/cpu-s p50_us p99_us added_us 'vs sslh-select'
    direct_p50=$(awk -F'\t' '$2=="ping" && $3=="direct" && $4==1 {print $9}' "$results" | median)
    ref=$(awk -F'\t' '$2=="tput" && $3=="sslh-select" && $4==1 {print $8}' "$results" | median)
    for s in $SERVERS; do
        mb=$(awk -F'\t' -v s="$s" '$2=="tput" && $3==s && $4==1 {print $6}' "$results" | median)
        cpu=$(awk -F'\t' -v s="$s" '$2=="tput" && $3==s && $4==1 {print $7}' "$results" | median)
        bpc=$(awk -F'\t' -v s="$s" '$2=="tput" && $3==s && $4==1 && $8!="-" {print $8}' "$results" | median)
        p50=$(awk -F'\t' -v s="$s" '$2=="ping" && $3==s && $4==1 {print $9}' "$results" | median)
        p99=$(awk -F'\t' -v s="$s" '$2=="ping" && $3==s && $4==1 {print $11}' "$results" | median)
        added=-
        [ "$direct_p50" != - ] && [ "$p50" != - ] && added=$(calc "$p50 - $direct_p50")
        ratio=-
        [ "$bpc" != - ] && [ "${ref:--}" != - ] && ratio=$(awk -v a="$bpc" -v b="$ref" 'BEGIN { printf "%.2f", a / b }')
        [ "$s" = direct ] && cpu=-
        printf '%-12s %10s %12s %18s %10s %10s %10s %14s\n' "$s" "$mb" "$cpu" "$bpc" "$p50" "$p99" "$added" "$ratio"
    done
    echo "invalid runs: $(awk -F'\t' 'NR>1 && $4==0' "$results" | wc -l) (left out of the medians)"
    echo "results: $results"
} | tee "$summary"
