#!/usr/bin/env bash
# HTTP/2 benchmark (`make bench-h2`): examples/hello vs nginx vs h2o over h2c
# (prior knowledge), driven by h2load; and a 100 MB static file over h2c vs
# HTTP/1.1 from the plexus binary, fetched by curl. docs/benchmarks.md has the
# tables and the method.
#
#   bench/h2.sh [RELEASE_BUILD_DIR]          (default: build/release)
#   DURATION=5 ROUNDS=3 bench/h2.sh build/release
#
# Small responses: h2load -t1 -c64 -m10 (64 connections x 10 concurrent streams)
# GET /plaintext ("Hello, World!"), pinned to CLIENT_CPU; each server: one
# worker/thread pinned to SERVER_CPU, 100 concurrent streams per connection.
# Runs are interleaved (hello, nginx, h2o, hello, ...). For each run: requests/s
# (h2load), the server's CPU (utime+stime of its process tree, /proc) over the
# middle of the run, requests per server-CPU-second, RSS mid-run. A run is
# valid when h2load finished and every request succeeded with a 2xx; invalid
# runs stay in the TSV (valid=0) and leave the medians.
#
# Big file: BIG_MB (100) MB of random bytes served by `plexus --static`; curl
# (pinned to CLIENT_CPU) downloads it to /dev/null over HTTP/1.1 and over h2c,
# interleaved, BIG_ROUNDS times each: MB/s, and server CPU per GB.
#
# Everything is on 127.0.0.1; every client run is bounded by timeout(1); the
# servers started here are stopped by PID on exit (trap).
#
# Knobs: DURATION [10] ROUNDS [3] WARMUP [2] CONNS [64] STREAMS [10]
#   SERVERS [hello nginx h2o] SCENARIOS [h2c bigfile] SERVER_CPU [1] CLIENT_CPU [0]
#   PORT_BASE [18580] BIG_MB [100] BIG_ROUNDS [5] H2_OUT [build/bench-h2]
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${1:-$root/build/release}
build=$(cd "$build" 2>/dev/null && pwd) || { echo "bench-h2: no build directory ${1:-build/release}" >&2; exit 2; }

: "${DURATION:=10}" "${ROUNDS:=3}" "${WARMUP:=2}" "${CONNS:=64}" "${STREAMS:=10}"
: "${SERVERS:=hello nginx h2o}" "${SCENARIOS:=h2c bigfile}"
: "${SERVER_CPU:=1}" "${CLIENT_CPU:=0}" "${PORT_BASE:=18580}"
: "${BIG_MB:=100}" "${BIG_ROUNDS:=5}" "${H2_OUT:=$root/build/bench-h2}"

log() { printf 'bench-h2: %s\n' "$*" >&2; }

HELLO=$build/examples/hello
PLEXUS=$build/plexus
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$H2_OUT/logs"
stamp=$(date +%Y%m%d-%H%M%S)
results="$H2_OUT/results-$stamp.tsv"
summary="$H2_OUT/summary-$stamp.txt"
printf 'round\tscenario\tserver\tvalid\trps_or_mbs\tcpu_s\twindow_s\tper_cpu_s\trss_kb\tdone\terrors\n' >"$results"

command -v h2load >/dev/null || { log "h2load is not installed (nghttp2-client, deps/bench.txt)"; exit 2; }
command -v curl >/dev/null || { log "curl is not installed"; exit 2; }

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
if awk -v l="$load1" -v n="$ncpu" 'BEGIN { exit !(l > 0.5) }'; then
    log "warning: load average $load1 on $ncpu CPU(s): other processes compete for the CPUs;"
    log "         requests/s will be noisy (requests per server-CPU-second less so)"
fi

prefix=$(mktemp -d "${TMPDIR:-/tmp}/plexus-bench-h2.XXXXXX")
declare -A PID=() PORT=()
i=1
for s in hello nginx h2o plexus; do
    PORT[$s]=$((PORT_BASE + i))
    i=$((i + 1))
done

stop_all() {
    local s p k
    for s in "${!PID[@]}"; do kill -TERM "${PID[$s]}" 2>/dev/null || true; done
    for s in "${!PID[@]}"; do
        p=${PID[$s]}
        for ((k = 0; k < 50; k++)); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
        unset "PID[$s]"
    done
}
trap 'stop_all; rm -rf "$prefix"' EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
fill() { sed -e "s|@PREFIX@|$3|g" -e "s|@PORT@|$4|g" -e "s|@USER@|$(id -un)|g" "$1" >"$2"; }

start_server() { # name -> PID[name]
    local name=$1 port=${PORT[$1]} dir=$prefix/$1 logf=$H2_OUT/logs/$stamp-$1.log
    mkdir -p "$dir"
    port_open "$port" && { log "port $port is in use; cannot start $name (set PORT_BASE)"; return 1; }
    case $name in
    hello) "${pin_server[@]}" "$HELLO" --listen "127.0.0.1:$port" --workers 1 >"$logf" 2>&1 & ;;
    plexus)
        "${pin_server[@]}" "$PLEXUS" --listen "127.0.0.1:$port" --workers 1 --static "$prefix/www" \
            --data-dir "$dir/var" --log-level warn >"$logf" 2>&1 &
        ;;
    nginx)
        fill bench/peers/nginx-h2c.conf.in "$dir/nginx.conf" "$dir" "$port"
        "${pin_server[@]}" "$(command -v nginx || echo /usr/sbin/nginx)" -p "$dir" -c "$dir/nginx.conf" \
            -e "$dir/error.log" >"$logf" 2>&1 &
        ;;
    h2o)
        printf 'Hello, World!' >"$dir/hello.txt"
        fill bench/peers/h2o-h2c.conf.in "$dir/h2o.conf" "$dir" "$port"
        "${pin_server[@]}" h2o -c "$dir/h2o.conf" >"$logf" 2>&1 &
        ;;
    esac
    PID[$name]=$!
    local k
    for ((k = 0; k < 100; k++)); do
        kill -0 "${PID[$name]}" 2>/dev/null || { log "$name exited at start; see $logf"; unset "PID[$name]"; return 1; }
        port_open "$port" && return 0
        sleep 0.1
    done
    log "$name did not listen on $port within 10 s; see $logf"
    return 1
}

check_h2c() { # name: the body over h2c must be hello's, and the protocol HTTP/2
    local got
    got=$(curl -s --max-time 5 --http2-prior-knowledge -w ' %{http_version}' \
        "http://127.0.0.1:${PORT[$1]}/plaintext") || got=""
    [[ "$got" == "Hello, World! 2" ]] || { log "$1: unexpected h2c answer '$got'"; return 1; }
}

tree_pids() { # pid -> pid and all its descendants
    local f line rest
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue # gone meanwhile
        rest=${line##*) }
        f=${f#/proc/}
        echo "${f%/stat} ${rest#* }"
    done | awk -v root="$1" '{ split($2, a, " "); parent[$1] = a[1] }
        END { keep[root] = 1; print root
              do { more = 0
                   for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; print p; more = 1 }
              } while (more) }'
}
cpu_ticks() {
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk '{ print $12 + $13 }') || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
rss_kb() {
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk '/^VmRSS:/ { print $2 }' /proc/"$p"/status 2>/dev/null) || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

run_h2load() { # name seconds logfile -> W_*; h2load's status
    local name=$1 secs=$2 logf=$3 pid=${PID[$1]} c0 c1 t0 t1 rc=0 edge half
    edge=$(awk -v d="$secs" 'BEGIN { e = d / 10; if (e < 0.2) e = 0.2; printf "%.2f", e }')
    half=$(awk -v d="$secs" -v e="$edge" 'BEGIN { printf "%.2f", d / 2 - e }')
    timeout --signal=INT --kill-after=10 $((secs + 30)) "${pin_client[@]}" h2load -t1 -c"$CONNS" \
        -m"$STREAMS" -D "$secs" "http://127.0.0.1:${PORT[$name]}/plaintext" >"$logf" 2>&1 &
    local hpid=$!
    sleep 0.5 # connections made, streams flowing (h2load connects first, then starts the clock)
    sleep "$edge"
    c0=$(cpu_ticks "$pid") t0=$EPOCHREALTIME
    sleep "$half"
    W_RSS=$(rss_kb "$pid")
    sleep "$half"
    c1=$(cpu_ticks "$pid") t1=$EPOCHREALTIME
    wait "$hpid" || rc=$?
    W_WIN=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    W_CPU=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
    W_RPS=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$logf")
    W_DONE=$(awk '/^requests:/ { print $8 }' "$logf")
    W_ERR=$(awk '/^requests:/ { print $10 + $12 + $14 } /^status codes:/ { print $5 + $7 + $9 }' "$logf" |
        awk '{ e += $1 } END { print e + 0 }')
    [[ -n $W_RPS && -n $W_DONE ]] || rc=1
    return "$rc"
}

run_curl() { # proto(1.1|2) logfile -> W_* (MB/s, server CPU)
    local proto=$1 logf=$2 pid=${PID[plexus]} c0 c1 rc=0 flag=--http1.1 out
    [[ $proto == 2 ]] && flag=--http2-prior-knowledge
    c0=$(cpu_ticks "$pid")
    out=$(timeout 120 "${pin_client[@]}" curl -s "$flag" -o /dev/null \
        -w '%{http_version} %{http_code} %{size_download} %{time_total}' \
        "http://127.0.0.1:${PORT[plexus]}/big.bin" 2>>"$logf") || rc=$?
    c1=$(cpu_ticks "$pid")
    echo "$out" >>"$logf"
    read -r W_VER W_CODE W_SIZE W_TIME <<<"$out"
    W_CPU=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
    W_MBS=$(awk -v s="${W_SIZE:-0}" -v t="${W_TIME:-0}" 'BEGIN { if (t > 0) printf "%.1f", s / t / 1e6; else print "nan" }')
    [[ $rc == 0 && ${W_CODE:-} == 200 && ${W_SIZE:-0} == $((BIG_MB * 1000000)) && ${W_VER:-} == "$proto" ]] || rc=1
    return "$rc"
}

record() { # round scenario server valid value cpu window per_cpu rss done errors
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"
}

median() {
    { grep -v nan || true; } | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
col() { awk -F'\t' -v sc="$1" -v s="$2" -v c="$3" 'NR > 1 && $2 == sc && $3 == s && $4 == 1 { print $c }' "$results"; }
nvalid() { awk -F'\t' -v sc="$1" -v s="$2" 'NR > 1 && $2 == sc && $3 == s { n++; v += ($4 == 1) } END { printf "%d/%d", v, n }' "$results"; }

for sc in $SCENARIOS; do
    case $sc in
    h2c)
        servers=()
        for s in $SERVERS; do
            case $s in
            hello) [[ -x $HELLO ]] || { log "skipping hello: no $HELLO"; continue; } ;;
            nginx) command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || { log "skipping nginx: not installed"; continue; } ;;
            h2o) command -v h2o >/dev/null || { log "skipping h2o: not installed"; continue; } ;;
            esac
            if start_server "$s" && check_h2c "$s"; then servers+=("$s"); else log "skipping $s"; fi
        done
        ((${#servers[@]})) || { log "no server for h2c"; continue; }
        log "h2c: ${servers[*]}; h2load -t1 -c$CONNS -m$STREAMS, $ROUNDS x ${DURATION}s (pinned: ${pin_server[*]:-none} / ${pin_client[*]:-none})"
        if ((WARMUP > 0)); then
            for s in "${servers[@]}"; do run_h2load "$s" "$WARMUP" "$H2_OUT/logs/$stamp-warmup-$s.h2load" || true; done
        fi
        for ((round = 1; round <= ROUNDS; round++)); do
            for s in "${servers[@]}"; do
                logf="$H2_OUT/logs/$stamp-r$round-h2c-$s.h2load"
                valid=1
                run_h2load "$s" "$DURATION" "$logf" || valid=0
                [[ ${W_ERR:-1} == 0 ]] || valid=0
                rpc=$(awk -v r="${W_RPS:-nan}" -v w="${W_WIN:-0}" -v c="${W_CPU:-0}" \
                    'BEGIN { if (c + 0 > 0 && r != "nan" && r != "") printf "%.0f", r * w / c; else print "nan" }')
                record "$round" h2c "$s" "$valid" "${W_RPS:-nan}" "${W_CPU:-nan}" "${W_WIN:-nan}" "$rpc" \
                    "${W_RSS:-nan}" "${W_DONE:-nan}" "${W_ERR:-nan}"
                log "round $round h2c $s: ${W_RPS:-?} req/s, cpu ${W_CPU:-?} s of ${W_WIN:-?} s, $rpc req/cpu-s, rss ${W_RSS:-?} kB$( ((valid)) || echo '  INVALID')"
            done
        done
        stop_all
        ;;
    bigfile)
        mkdir -p "$prefix/www"
        head -c $((BIG_MB * 1000000)) /dev/urandom >"$prefix/www/big.bin"
        start_server plexus || { log "cannot start plexus"; continue; }
        run_curl 1.1 /dev/null || true # warm the page cache
        for ((round = 1; round <= BIG_ROUNDS; round++)); do
            for proto in 1.1 2; do
                logf="$H2_OUT/logs/$stamp-r$round-bigfile-$proto.curl"
                valid=1
                run_curl "$proto" "$logf" || valid=0
                gb=$(awk -v c="$W_CPU" -v m="$BIG_MB" 'BEGIN { if (c > 0) printf "%.2f", m / 1000 / c; else print "nan" }')
                record "$round" bigfile "http/$proto" "$valid" "$W_MBS" "$W_CPU" "${W_TIME:-nan}" "$gb" nan "${W_SIZE:-nan}" 0
                log "round $round bigfile HTTP/$proto: $W_MBS MB/s, server cpu $W_CPU s ($gb GB per cpu-s)$( ((valid)) || echo '  INVALID')"
            done
        done
        stop_all
        ;;
    *) log "unknown scenario '$sc'"; exit 2 ;;
    esac
done

{
    echo "HTTP/2 benchmark $stamp (medians over valid runs; load average at start: $load1 on $ncpu CPU(s))"
    if grep -q $'\th2c\t' "$results"; then
        echo "h2c prior knowledge, h2load -t1 -c$CONNS -m$STREAMS, GET /plaintext, $ROUNDS x ${DURATION}s; servers: 1 worker on CPU $SERVER_CPU"
        printf '%-6s %6s %12s %16s %10s %10s\n' server valid "req/s" "req/cpu-s" "vs nginx" "vs h2o"
        ng=$(col h2c nginx 8 | median) ho=$(col h2c h2o 8 | median)
        for s in hello nginx h2o; do
            grep -q $'\th2c\t'"$s"$'\t' "$results" || continue
            r=$(col h2c "$s" 5 | median) p=$(col h2c "$s" 8 | median)
            printf '%-6s %6s %12s %16s %10s %10s\n' "$s" "$(nvalid h2c "$s")" "$r" "$p" \
                "$(awk -v a="$p" -v b="$ng" 'BEGIN { if (b + 0 > 0 && a != "nan") printf "%.2fx", a / b; else print "-" }')" \
                "$(awk -v a="$p" -v b="$ho" 'BEGIN { if (b + 0 > 0 && a != "nan") printf "%.2fx", a / b; else print "-" }')"
        done
    fi
    if grep -q $'\tbigfile\t' "$results"; then
        echo "${BIG_MB} MB static file (plexus --static), curl to /dev/null, $BIG_ROUNDS runs each, interleaved"
        printf '%-9s %6s %10s %14s\n' protocol valid "MB/s" "GB/cpu-s"
        for s in http/1.1 http/2; do
            printf '%-9s %6s %10s %14s\n' "$s" "$(nvalid bigfile "$s")" "$(col bigfile "$s" 5 | median)" \
                "$(col bigfile "$s" 8 | median)"
        done
        h1=$(col bigfile http/1.1 5 | median) h2=$(col bigfile http/2 5 | median)
        awk -v a="$h2" -v b="$h1" 'BEGIN { if (b + 0 > 0) printf "h2 / HTTP/1.1 throughput: %.2f\n", a / b }'
    fi
} | tee "$summary"
log "results: $results"
