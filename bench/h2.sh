#!/usr/bin/env bash
# HTTP/2 benchmark (`make bench-h2`): examples/hello vs nginx vs h2o over h2 with
# TLS (ALPN) and over h2c (prior knowledge), driven by h2load; and a 100 MB
# static file over h2 vs HTTP/1.1 from the plexus binary, fetched by curl, with
# TLS and in clear text. docs/benchmarks.md has the tables and the method.
#
#   bench/h2.sh [RELEASE_BUILD_DIR]          (default: build/release)
#   DURATION=5 ROUNDS=3 bench/h2.sh build/release
#   bench/h2.sh --table build/bench-h2/results-*.tsv   (the tables again)
#
# Scenarios (SCENARIOS, in this order by default):
#   h2tls    h2 over TLS (ECDSA P-256, a test CA made here; the same certificate
#            everywhere): examples/hello-tls, nginx (`listen ... ssl http2`), h2o
#   h2c      h2c with prior knowledge: examples/hello, nginx (`listen ... http2`), h2o
#            both: h2load -t1 -c64 -m10 (64 connections x 10 concurrent streams)
#            GET /plaintext ("Hello, World!"), pinned to CLIENT_CPU; each server:
#            one worker/thread pinned to SERVER_CPU, 100 concurrent streams per
#            connection. Runs are interleaved (hello, nginx, h2o, hello, ...). For
#            each run: requests/s (h2load), the server's CPU (utime+stime of its
#            process tree, /proc) over the middle of the run, requests per
#            server-CPU-second, RSS mid-run. A run is valid when h2load finished
#            and every request succeeded with a 2xx; invalid runs stay in the TSV
#            (valid=0) and leave the medians.
#   bigfile-tls  BIG_MB (100) MB of random bytes served by `plexus --tls --static`;
#            curl (pinned to CLIENT_CPU) downloads it to /dev/null over HTTPS
#            with HTTP/1.1 and with h2, interleaved, BIG_ROUNDS times each: MB/s,
#            and server CPU per GB
#   bigfile  the same in clear text: HTTP/1.1 and h2c
#
# Everything is on 127.0.0.1; every client run is bounded by timeout(1); the
# servers started here are stopped by PID on exit (trap).
#
# Knobs: DURATION [10] ROUNDS [3] WARMUP [2] CONNS [64] STREAMS [10]
#   SCENARIOS [h2tls h2c bigfile-tls bigfile] SERVERS [hello nginx h2o]
#   SERVER_CPU [1] CLIENT_CPU [0] PORT_BASE [18580] BIG_MB [100] BIG_ROUNDS [5]
#   H2_OUT [build/bench-h2]
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
orig_pwd=$PWD
cd "$root"
BENCH_NAME=bench-h2
# shellcheck source=bench/lib.sh
. bench/lib.sh

: "${DURATION:=10}" "${ROUNDS:=3}" "${WARMUP:=2}" "${CONNS:=64}" "${STREAMS:=10}"
: "${SERVERS:=hello nginx h2o}" "${SCENARIOS:=h2tls h2c bigfile-tls bigfile}"
: "${SERVER_CPU:=1}" "${CLIENT_CPU:=0}" "${PORT_BASE:=18580}"
: "${BIG_MB:=100}" "${BIG_ROUNDS:=5}" "${H2_OUT:=$root/build/bench-h2}"

print_table() { # results.tsv... -> the tables (also `bench/h2.sh --table FILE...`)
    local f sc s ng ho r p h1 h2 label
    for f in "$@"; do
        col() { awk -F'\t' -v sc="$1" -v s="$2" -v c="$3" 'NR > 1 && $2 == sc && $3 == s && $4 == 1 { print $c }' "$f"; }
        nvalid() { awk -F'\t' -v sc="$1" -v s="$2" 'NR > 1 && $2 == sc && $3 == s { n++; v += ($4 == 1) } END { printf "%d/%d", v, n }' "$f"; }
        echo "== $f"
        for sc in h2tls h2c; do
            grep -q $'\t'"$sc"$'\t' "$f" || continue
            [[ $sc == h2tls ]] && label="h2 over TLS (ALPN), ECDSA P-256" || label="h2c prior knowledge"
            echo "$label"
            printf '%-6s %6s %12s %16s %10s %10s\n' server valid "req/s" "req/cpu-s" "vs nginx" "vs h2o"
            ng=$(col "$sc" nginx 8 | median) ho=$(col "$sc" h2o 8 | median)
            for s in hello nginx h2o; do
                grep -q $'\t'"$sc"$'\t'"$s"$'\t' "$f" || continue
                r=$(col "$sc" "$s" 5 | median) p=$(col "$sc" "$s" 8 | median)
                printf '%-6s %6s %12s %16s %10s %10s\n' "$s" "$(nvalid "$sc" "$s")" "$r" "$p" \
                    "$(awk -v a="$p" -v b="$ng" 'BEGIN { if (b + 0 > 0 && a != "nan") printf "%.2fx", a / b; else print "-" }')" \
                    "$(awk -v a="$p" -v b="$ho" 'BEGIN { if (b + 0 > 0 && a != "nan") printf "%.2fx", a / b; else print "-" }')"
            done
        done
        for sc in bigfile-tls bigfile; do
            grep -q $'\t'"$sc"$'\t' "$f" || continue
            [[ $sc == bigfile-tls ]] && label="static file over TLS: HTTP/1.1 vs h2" || label="static file in clear text: HTTP/1.1 vs h2c"
            echo "$label (plexus --static, curl to /dev/null, interleaved)"
            printf '%-9s %6s %10s %14s\n' protocol valid "MB/s" "GB/cpu-s"
            for s in http/1.1 http/2; do
                printf '%-9s %6s %10s %14s\n' "$s" "$(nvalid "$sc" "$s")" "$(col "$sc" "$s" 5 | median)" \
                    "$(col "$sc" "$s" 8 | median)"
            done
            h1=$(col "$sc" http/1.1 5 | median) h2=$(col "$sc" http/2 5 | median)
            awk -v a="$h2" -v b="$h1" 'BEGIN { if (b + 0 > 0) printf "h2 / HTTP/1.1 throughput: %.2f\n", a / b }'
        done
    done
}
bench_table_mode "$@"

build=${1:-$root/build/release}
build=$(cd "$build" 2>/dev/null && pwd) || { echo "bench-h2: no build directory ${1:-build/release}" >&2; exit 2; }
HELLO=$build/examples/hello
HELLO_TLS=$build/examples/hello-tls
PLEXUS=$build/plexus

command -v h2load >/dev/null || { log "h2load is not installed (nghttp2-client, deps/bench.txt)"; exit 2; }
command -v curl >/dev/null || { log "curl is not installed"; exit 2; }
command -v openssl >/dev/null || { log "openssl is not installed"; exit 2; }

bench_outputs "$H2_OUT" tsv
printf 'round\tscenario\tserver\tvalid\trps_or_mbs\tcpu_s\twindow_s\tper_cpu_s\trss_kb\tdone\terrors\n' >"$results"
bench_pin "$SERVER_CPU" "$CLIENT_CPU"
bench_check_load "requests/s"
load1=$load_start

prefix=$(mktemp -d "${TMPDIR:-/tmp}/plexus-bench-h2.XXXXXX")
declare -A PID=() PORT=()
i=1
for s in hello nginx h2o plexus hello-tls nginx-tls h2o-tls plexus-tls; do
    PORT[$s]=$((PORT_BASE + i))
    i=$((i + 1))
done
trap 'bench_stop_all; rm -rf "$prefix"' EXIT
trap 'exit 130' INT TERM

fill() { # template output dir port [cert key]
    sed -e "s|@PREFIX@|$3|g" -e "s|@PORT@|$4|g" -e "s|@USER@|$(id -un)|g" \
        -e "s|@CERT@|${5:-}|g" -e "s|@KEY@|${6:-}|g" "$1" >"$2"
}

# One ECDSA P-256 leaf for localhost from a CA made here, for every TLS server.
certs=$prefix/certs
make_certs() {
    [[ -f $certs/ec.crt ]] && return 0
    mkdir -p "$certs"
    (
        cd "$certs"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 7 \
            -subj "/CN=plexus bench CA" -addext basicConstraints=critical,CA:true
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key
        openssl req -new -key ec.key -subj /CN=localhost -out ec.csr
        printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ec.ext
        openssl x509 -req -in ec.csr -CA ca.crt -CAkey ca.key -set_serial 0x1234 -days 7 \
            -extfile ec.ext -out ec.crt
    ) >/dev/null 2>&1 || { log "openssl could not make the test certificates"; return 1; }
}

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

start_server() { # name -> PID[name]
    local name=$1 port=${PORT[$1]} dir=$prefix/$1 logf=$H2_OUT/logs/$stamp-$1.log
    mkdir -p "$dir"
    bench_port_free "$name" "$port" PORT_BASE || return 1
    case $name in
    hello) "${pin_server[@]}" "$HELLO" --listen "127.0.0.1:$port" --workers 1 >"$logf" 2>&1 & ;;
    hello-tls)
        "${pin_server[@]}" "$HELLO_TLS" --listen "127.0.0.1:$port" --workers 1 \
            --tls-cert "$certs/ec.crt" --tls-key "$certs/ec.key" >"$logf" 2>&1 &
        ;;
    plexus)
        "${pin_server[@]}" "$PLEXUS" --listen "127.0.0.1:$port" --workers 1 --static "$prefix/www" \
            --data-dir "$dir/var" --log-level warn >"$logf" 2>&1 &
        ;;
    plexus-tls)
        "${pin_server[@]}" "$PLEXUS" --listen "127.0.0.1:$port" --workers 1 --static "$prefix/www" \
            --tls --tls-cert "$certs/ec.crt" --tls-key "$certs/ec.key" \
            --data-dir "$dir/var" --log-level warn >"$logf" 2>&1 &
        ;;
    nginx | nginx-tls)
        if [[ $name == nginx ]]; then
            fill bench/peers/nginx-h2c.conf.in "$dir/nginx.conf" "$dir" "$port"
        else
            fill bench/peers/nginx-h2tls.conf.in "$dir/nginx.conf" "$dir" "$port" "$certs/ec.crt" "$certs/ec.key"
        fi
        "${pin_server[@]}" "$(nginx_bin)" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$logf" 2>&1 &
        ;;
    h2o | h2o-tls)
        printf 'Hello, World!' >"$dir/hello.txt"
        if [[ $name == h2o ]]; then
            fill bench/peers/h2o-h2c.conf.in "$dir/h2o.conf" "$dir" "$port"
        else
            fill bench/peers/h2o-h2tls.conf.in "$dir/h2o.conf" "$dir" "$port" "$certs/ec.crt" "$certs/ec.key"
        fi
        "${pin_server[@]}" h2o -c "$dir/h2o.conf" >"$logf" 2>&1 &
        ;;
    esac
    PID[$name]=$!
    bench_wait_listen "$name" "${PID[$name]}" "$port" "$logf" && return 0
    bench_stop_pid "${PID[$name]}"
    unset "PID[$name]"
    return 1
}

url_of() { # name path -> the URL h2load and curl use
    case $1 in
    *-tls) echo "https://localhost:${PORT[$1]}$2" ;;
    *) echo "http://127.0.0.1:${PORT[$1]}$2" ;;
    esac
}
curl_tls() { # name -> curl's options for that server
    case $1 in
    *-tls) echo "--cacert $certs/ca.crt --resolve localhost:${PORT[$1]}:127.0.0.1" ;;
    esac
}

check_h2() { # name: the body must be hello's, and the protocol HTTP/2 (ALPN or prior knowledge)
    local got flag=--http2-prior-knowledge
    [[ $1 == *-tls ]] && flag=--http2
    # shellcheck disable=SC2046 # curl_tls is a list of options
    got=$(curl -s --max-time 5 $(curl_tls "$1") "$flag" -w ' %{http_version}' \
        "$(url_of "$1" /plaintext)") || got=""
    [[ "$got" == "Hello, World! 2" ]] || { log "$1: unexpected HTTP/2 answer '$got'"; return 1; }
}

available() { # name -> 0 if it can run here, else logs why
    case $1 in
    hello) [[ -x $HELLO ]] || { log "skipping hello: no $HELLO"; return 1; } ;;
    hello-tls) [[ -x $HELLO_TLS ]] || { log "skipping hello-tls: no $HELLO_TLS"; return 1; } ;;
    nginx*) command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || { log "skipping $1: nginx not installed"; return 1; } ;;
    h2o*) command -v h2o >/dev/null || { log "skipping $1: h2o not installed"; return 1; } ;;
    esac
}

run_h2load() { # name seconds logfile -> W_*; h2load's status
    local name=$1 secs=$2 logf=$3 pid=${PID[$1]} c0 c1 t0 t1 rc=0 edge half
    edge=$(awk -v d="$secs" 'BEGIN { e = d / 10; if (e < 0.2) e = 0.2; printf "%.2f", e }')
    half=$(awk -v d="$secs" -v e="$edge" 'BEGIN { printf "%.2f", d / 2 - e }')
    # h2load does not verify certificates; over https it negotiates h2 by ALPN.
    timeout --signal=INT --kill-after=10 $((secs + 30)) "${pin_client[@]}" h2load -t1 -c"$CONNS" \
        -m"$STREAMS" -D "$secs" "$(url_of "$name" /plaintext)" >"$logf" 2>&1 &
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
    grep -q '^Application protocol: h2' "$logf" || rc=1
    return "$rc"
}

run_curl() { # server proto(1.1|2) logfile -> W_* (MB/s, server CPU)
    local name=$1 proto=$2 logf=$3 pid=${PID[$1]} c0 c1 rc=0 flag=--http1.1 out
    if [[ $proto == 2 ]]; then
        flag=--http2-prior-knowledge
        [[ $name == *-tls ]] && flag=--http2
    fi
    c0=$(cpu_ticks "$pid")
    # shellcheck disable=SC2046 # curl_tls is a list of options
    out=$(timeout 120 "${pin_client[@]}" curl -s $(curl_tls "$name") "$flag" -o /dev/null \
        -w '%{http_version} %{http_code} %{size_download} %{time_total}' \
        "$(url_of "$name" /big.bin)" 2>>"$logf") || rc=$?
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

run_small() { # scenario suffix ("" or -tls)
    local sc=$1 sfx=$2 s name round logf valid rpc servers=()
    for s in $SERVERS; do
        name=$s$sfx
        available "$name" || continue
        if start_server "$name" && check_h2 "$name"; then servers+=("$name"); else log "skipping $name"; fi
    done
    ((${#servers[@]})) || { log "no server for $sc"; return 0; }
    log "$sc: ${servers[*]}; h2load -t1 -c$CONNS -m$STREAMS, $ROUNDS x ${DURATION}s (pinned: ${pin_server[*]:-none} / ${pin_client[*]:-none})"
    if ((WARMUP > 0)); then
        for s in "${servers[@]}"; do run_h2load "$s" "$WARMUP" "$H2_OUT/logs/$stamp-warmup-$s.h2load" || true; done
    fi
    for ((round = 1; round <= ROUNDS; round++)); do
        for s in "${servers[@]}"; do
            logf="$H2_OUT/logs/$stamp-r$round-$sc-$s.h2load"
            valid=1
            run_h2load "$s" "$DURATION" "$logf" || valid=0
            [[ ${W_ERR:-1} == 0 ]] || valid=0
            rpc=$(awk -v r="${W_RPS:-nan}" -v w="${W_WIN:-0}" -v c="${W_CPU:-0}" \
                'BEGIN { if (c + 0 > 0 && r != "nan" && r != "") printf "%.0f", r * w / c; else print "nan" }')
            record "$round" "$sc" "${s%-tls}" "$valid" "${W_RPS:-nan}" "${W_CPU:-nan}" "${W_WIN:-nan}" "$rpc" \
                "${W_RSS:-nan}" "${W_DONE:-nan}" "${W_ERR:-nan}"
            log "round $round $sc $s: ${W_RPS:-?} req/s, cpu ${W_CPU:-?} s of ${W_WIN:-?} s, $rpc req/cpu-s, rss ${W_RSS:-?} kB$( ((valid)) || echo '  INVALID')"
        done
    done
    bench_stop_all
}

run_big() { # scenario server
    local sc=$1 srv=$2 round proto logf valid gb
    if [[ ! -f $prefix/www/big.bin ]]; then
        mkdir -p "$prefix/www"
        head -c $((BIG_MB * 1000000)) /dev/urandom >"$prefix/www/big.bin"
    fi
    start_server "$srv" || { log "cannot start $srv"; return 0; }
    run_curl "$srv" 1.1 /dev/null || true # warm the page cache
    for ((round = 1; round <= BIG_ROUNDS; round++)); do
        for proto in 1.1 2; do
            logf="$H2_OUT/logs/$stamp-r$round-$sc-$proto.curl"
            valid=1
            run_curl "$srv" "$proto" "$logf" || valid=0
            gb=$(awk -v c="$W_CPU" -v m="$BIG_MB" 'BEGIN { if (c > 0) printf "%.2f", m / 1000 / c; else print "nan" }')
            record "$round" "$sc" "http/$proto" "$valid" "$W_MBS" "$W_CPU" "${W_TIME:-nan}" "$gb" nan "${W_SIZE:-nan}" 0
            log "round $round $sc HTTP/$proto: $W_MBS MB/s, server cpu $W_CPU s ($gb GB per cpu-s)$( ((valid)) || echo '  INVALID')"
        done
    done
    bench_stop_all
}

case " $SCENARIOS " in *tls*) make_certs || exit 2 ;; esac
for sc in $SCENARIOS; do
    case $sc in
    h2tls) run_small h2tls -tls ;;
    h2c) run_small h2c "" ;;
    bigfile-tls) run_big bigfile-tls plexus-tls ;;
    bigfile) run_big bigfile plexus ;;
    *) log "unknown scenario '$sc'"; exit 2 ;;
    esac
done

{
    echo "HTTP/2 benchmark $stamp (medians over valid runs; load average at start: $load1 on $ncpu CPU(s))"
    echo "servers: 1 worker on CPU $SERVER_CPU; h2load -t1 -c$CONNS -m$STREAMS GET /plaintext, $ROUNDS x ${DURATION}s; files: ${BIG_MB} MB, $BIG_ROUNDS runs each"
    print_table "$results"
} | tee "$summary"
log "results: $results"
