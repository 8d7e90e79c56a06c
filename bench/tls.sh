#!/usr/bin/env bash
# TLS benchmark: plexus vs nginx (and h2o) with the same certificates and
# ciphers. This is what `make bench-tls` runs; docs/benchmarks.md has the table.
#
#   bench/tls.sh [RELEASE_BUILD_DIR]          (default: build/release)
#   DURATION=5 ROUNDS=3 bench/tls.sh build/release
#
# Scenarios:
#   hs-full      full TLS handshakes (TLS 1.3, X25519), one GET /plaintext each
#   hs-resumed   resumed handshakes (TLS 1.3 tickets)
#                both with `openssl s_time` (-new / -reuse): a new connection per
#                request, sequential. It is OpenSSL's own tool, does nothing but
#                handshakes, and resumes sessions; h2load does handshakes only at
#                connection start and wrk does not do TLS well. Servers: the ECDSA
#                P-256 and the RSA 2048 certificate, each on plexus and nginx.
#   keepalive    HTTPS keep-alive GET /plaintext: h2load --h1 (nghttp2-client),
#                CONNS connections, one request in flight each; plexus, nginx, h2o
#   static       a 64 MiB file over HTTPS: h2load --h1, 4 connections; the plexus
#                binary with --tls-ktls on and off, and nginx (sendfile; kTLS option)
#   idle         RSS per idle TLS connection: IDLE_CONNS connections that made one
#                request each, held open (bench/tls_idle.py)
# Every server: 1 worker/thread pinned to SERVER_CPU; the client pinned to
# CLIENT_CPU. Runs are interleaved (plexus, nginx, ... then again) so slow drifts
# of a shared machine hit every server alike. The figure that counts is per
# server-CPU-second (utime+stime of the server process tree from /proc): the
# client (s_time, h2load) is single-threaded and may be the bottleneck, which
# throughput would hide. A run with errors (failed requests, no bytes read)
# is reported and excluded from the medians.
#
# Knobs (environment; defaults in brackets):
#   DURATION [10] s per run   ROUNDS [3]   CONNS [64]   IDLE_CONNS [1000]
#   SCENARIOS [hs-full hs-resumed keepalive static idle]
#   SERVER_CPU [1]  CLIENT_CPU [0]  PORT_BASE [18580]   TLS_OUT [build/bench-tls]
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
BENCH_NAME=bench-tls
# shellcheck source=bench/lib.sh
. bench/lib.sh
build=${1:-$root/build/release}
build=$(cd "$build" 2>/dev/null && pwd) || { echo "bench-tls: no build directory ${1:-build/release}" >&2; exit 2; }

: "${DURATION:=10}" "${ROUNDS:=3}" "${CONNS:=64}" "${IDLE_CONNS:=1000}"
: "${SCENARIOS:=hs-full hs-resumed keepalive static idle}"
: "${SERVER_CPU:=1}" "${CLIENT_CPU:=0}" "${PORT_BASE:=18580}"
: "${TLS_OUT:=$root/build/bench-tls}"

HELLO=$build/examples/hello-tls
PLEXUS=$build/plexus
bench_outputs "$TLS_OUT" tsv
printf 'round\tscenario\tserver\tunits\tper_s\tcpu_s\tper_cpu_s\textra\terrors\n' >"$results"

for t in openssl h2load curl; do
    command -v "$t" >/dev/null || { log "$t is not installed (sh deps/install.sh deps/bench.txt)"; exit 2; }
done

bench_pin "$SERVER_CPU" "$CLIENT_CPU"
bench_check_load "handshakes/s and requests/s"
ulp=$(cat /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null || echo "?")
ktls_avail=no
[[ " $ulp " == *" tls "* ]] && ktls_avail=yes
log "kernel TLS: tcp_available_ulp = '$ulp' (kTLS available: $ktls_avail)"

# ---- certificates (a test CA, ECDSA P-256 and RSA 2048 leaves) -------------------
prefix=$(mktemp -d "${TMPDIR:-/tmp}/plexus-bench-tls.XXXXXX")
certs=$prefix/certs
mkdir -p "$certs"
(
    cd "$certs"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 7 \
        -subj "/CN=bench CA" -addext basicConstraints=critical,CA:true 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' >ext
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key 2>/dev/null
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key 2>/dev/null
    for k in ec rsa; do
        openssl req -new -key $k.key -subj /CN=localhost -out $k.csr
        openssl x509 -req -in $k.csr -CA ca.crt -CAkey ca.key -set_serial 0x$RANDOM$RANDOM \
            -days 7 -extfile ext -out $k.crt 2>/dev/null
    done
)
mkdir -p "$prefix/www"
head -c $((64 << 20)) /dev/urandom >"$prefix/www/big.bin"

# ---- servers ----------------------------------------------------------------------
declare -A PID=() PORT=() KIND=()
ALL=(plexus-ec nginx-ec h2o-ec plexus-rsa nginx-rsa pstatic-on pstatic-off)
i=1
for s in "${ALL[@]}"; do
    PORT[$s]=$((PORT_BASE + i))
    i=$((i + 1))
done

cleanup() {
    bench_stop_all
    rm -rf "$prefix"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fill() { # template output dir port cert key
    sed -e "s|@PREFIX@|$3|g" -e "s|@PORT@|$4|g" -e "s|@USER@|$(id -un)|g" \
        -e "s|@CERT@|$5|g" -e "s|@KEY@|$6|g" "$1" >"$2"
}

start_server() { # name -> PID[name]
    local name=$1 port=${PORT[$1]} dir=$prefix/$1 logf=$TLS_OUT/logs/$stamp-$1.log kt=${1##*-}
    mkdir -p "$dir"
    bench_port_free "$name" "$port" PORT_BASE || return 1
    case $name in
    plexus-ec | plexus-rsa)
        [[ -x "$HELLO" ]] || { log "no $HELLO (build the release variant)"; return 1; }
        "${pin_server[@]}" "$HELLO" --listen "127.0.0.1:$port" --workers 1 \
            --tls-cert "$certs/$kt.crt" --tls-key "$certs/$kt.key" >"$logf" 2>&1 &
        ;;
    pstatic-on | pstatic-off)
        [[ -x "$PLEXUS" ]] || { log "no $PLEXUS"; return 1; }
        "${pin_server[@]}" "$PLEXUS" --listen "127.0.0.1:$port" --workers 1 --tls \
            --tls-cert "$certs/ec.crt" --tls-key "$certs/ec.key" --tls-ktls "$kt" \
            --static "$prefix/www" --data-dir "$dir/var" --allow-anonymous --log-level warn >"$logf" 2>&1 &
        ;;
    nginx-ec | nginx-rsa)
        command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || { log "nginx not installed"; return 1; }
        ln -sfn "$prefix/www" "$dir/www"
        fill bench/peers/nginx-tls.conf.in "$dir/nginx.conf" "$dir" "$port" "$certs/$kt.crt" "$certs/$kt.key"
        "${pin_server[@]}" "$(command -v nginx || echo /usr/sbin/nginx)" -p "$dir" -c "$dir/nginx.conf" \
            -e "$dir/error.log" >"$logf" 2>&1 &
        ;;
    h2o-ec)
        command -v h2o >/dev/null || { log "h2o not installed"; return 1; }
        printf 'Hello, World!' >"$dir/hello.txt"
        fill bench/peers/h2o-tls.conf.in "$dir/h2o.conf" "$dir" "$port" "$certs/ec.crt" "$certs/ec.key"
        "${pin_server[@]}" h2o -c "$dir/h2o.conf" >"$logf" 2>&1 &
        ;;
    esac
    PID[$name]=$!
    bench_wait_listen "$name" "${PID[$name]}" "$port" "$logf" && return 0
    bench_stop_pid "${PID[$name]}"
    unset "PID[$name]"
    return 1
}

check_server() { # name: the answer over TLS must be right
    local name=$1 got path=/plaintext want='Hello, World!'
    case $name in pstatic-*) path=/healthz want='{"status":"ok"}' ;; esac
    got=$(curl -s --max-time 5 --cacert "$certs/ca.crt" --resolve "localhost:${PORT[$name]}:127.0.0.1" \
        "https://localhost:${PORT[$name]}$path") || got=""
    [[ "$got" == "$want" ]] || { log "$name: unexpected $path body: '$got'"; return 1; }
}

static_path() { case $1 in nginx-*) echo /static/big.bin ;; *) echo /big.bin ;; esac; }

# ---- one run: sets R_UNITS R_PER_S R_CPU R_EXTRA R_ERR -------------------------------------
run_one() { # scenario server seconds logfile
    local sc=$1 name=$2 secs=$3 logf=$4 pid=${PID[$2]} port=${PORT[$2]} c0 c1 rc=0 t0 t1
    R_EXTRA="" R_ERR=0
    if [[ $sc == idle ]]; then
        local r0 r1
        r0=$(rss_kb "$pid")
        coproc IDLE { "${pin_client[@]}" /usr/bin/python3 bench/tls_idle.py "$port" "$IDLE_CONNS"; }
        local line=""
        read -r -t 120 line <&"${IDLE[0]}" || true
        sleep 0.5
        r1=$(rss_kb "$pid")
        eval "exec ${IDLE[1]}>&-"
        wait "$IDLE_PID" 2>/dev/null || true
        if [[ $line != ready ]]; then R_ERR=1; fi
        R_UNITS=$IDLE_CONNS R_CPU=0 R_PER_S=0
        R_EXTRA=$(awk -v a="$r0" -v b="$r1" -v n="$IDLE_CONNS" 'BEGIN { printf "%.1f", (b - a) / n }')
        return 0
    fi
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    case $sc in
    hs-full | hs-resumed)
        local mode=-new
        [[ $sc == hs-resumed ]] && mode=-reuse
        timeout --kill-after=10 $((secs + 30)) "${pin_client[@]}" openssl s_time -connect "127.0.0.1:$port" \
            $mode -time "$secs" -www /plaintext 2>&1 | grep -E "connections in|bytes read|ERROR|rror" >"$logf" || rc=$?
        R_UNITS=$(awk '/connections in .* real seconds/ { print $1; exit }' "$logf")
        local per
        per=$(sed -nE 's/.*, ([0-9]+) bytes read per connection.*/\1/p' "$logf" | head -n 1)
        [[ -n $R_UNITS && ${per:-0} -gt 0 ]] || R_ERR=1
        ;;
    keepalive)
        timeout --kill-after=10 $((secs + 30)) "${pin_client[@]}" h2load --h1 -t 1 -c "$CONNS" -m 1 \
            -D "$secs" "https://127.0.0.1:$port/plaintext" >"$logf" 2>&1 || rc=$?
        R_UNITS=$(awk '/^requests:/ { print $8; exit }' "$logf")
        R_ERR=$(awk '/^requests:/ { print $10 + $12 + $14; exit }' "$logf")
        ;;
    static)
        timeout --kill-after=10 $((secs + 30)) "${pin_client[@]}" h2load --h1 -t 1 -c 4 -m 1 \
            -D "$secs" "https://127.0.0.1:$port$(static_path "$name")" >"$logf" 2>&1 || rc=$?
        local bytes
        bytes=$(awk '/^traffic:/ { gsub(/[()]/, "", $3); print $3; exit }' "$logf")
        R_UNITS=$(awk -v b="${bytes:-0}" 'BEGIN { printf "%.1f", b / 1048576 }') # MiB
        R_ERR=$(awk '/^requests:/ { print $10 + $12 + $14; exit }' "$logf")
        ;;
    esac
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$pid")
    R_CPU=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
    R_PER_S=$(awk -v u="${R_UNITS:-0}" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", u / (b - a) }')
    [[ -n ${R_UNITS:-} ]] || { R_UNITS=0; R_ERR=1; }
    ((rc == 0 || rc == 1)) || R_ERR=$((R_ERR + 1)) # grep finding nothing is rc 1
    [[ ${R_ERR:-0} =~ ^[0-9]+$ ]] || R_ERR=1
    return 0
}

servers_for() {
    case $1 in
    hs-full | hs-resumed) echo plexus-ec nginx-ec plexus-rsa nginx-rsa ;;
    keepalive) echo plexus-ec nginx-ec h2o-ec ;;
    static) echo pstatic-on pstatic-off nginx-ec ;;
    idle) echo plexus-ec nginx-ec h2o-ec ;;
    esac
}

# ---- plan -------------------------------------------------------------------------
declare -A OK=()
need=()
for sc in $SCENARIOS; do
    case $sc in hs-full | hs-resumed | keepalive | static | idle) ;; *) log "unknown scenario '$sc'"; exit 2 ;; esac
    for s in $(servers_for "$sc"); do [[ " ${need[*]:-} " == *" $s "* ]] || need+=("$s"); done
done
for s in "${need[@]}"; do
    if start_server "$s" && check_server "$s"; then OK[$s]=1; else log "skipping $s"; fi
done
log "servers: ${!OK[*]} (pinned: ${pin_server[*]:-none}); client: ${pin_client[*]:-not pinned}"
log "scenarios: $SCENARIOS; rounds: $ROUNDS x ${DURATION}s; output: $results"

invalid=0
for sc in $SCENARIOS; do
    rounds=$ROUNDS
    [[ $sc == idle ]] && rounds=1
    for ((round = 1; round <= rounds; round++)); do
        for s in $(servers_for "$sc"); do
            [[ -n ${OK[$s]:-} ]] || continue
            logf="$TLS_OUT/logs/$stamp-r$round-$sc-$s.log"
            run_one "$sc" "$s" "$DURATION" "$logf"
            per_cpu=$(awk -v u="$R_UNITS" -v c="$R_CPU" 'BEGIN { if (c > 0) printf "%.0f", u / c; else print "nan" }')
            printf '%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$sc" "$s" "$R_UNITS" "$R_PER_S" "$R_CPU" \
                "$per_cpu" "$R_EXTRA" "$R_ERR" >>"$results"
            log "$(printf 'round %d %-10s %-11s units %10s  /s %10s  cpu %6s s  /cpu-s %8s  %s%s' "$round" "$sc" "$s" \
                "$R_UNITS" "$R_PER_S" "$R_CPU" "$per_cpu" "${R_EXTRA:+KiB/conn $R_EXTRA}" \
                "$( ((R_ERR > 0)) && echo "  ERRORS $R_ERR (excluded)")")"
            ((R_ERR == 0)) || invalid=1
        done
    done
done

# ---- summary --------------------------------------------------------------------------
col() { # scenario server column -> values of valid runs
    awk -F'\t' -v sc="$1" -v s="$2" -v c="$3" 'NR > 1 && $2 == sc && $3 == s && $9 == 0 { print $c }' "$results"
}
peer_of() { # server -> the nginx it is compared with
    case $1 in *-rsa) echo nginx-rsa ;; *) echo nginx-ec ;; esac
}
unit_of() {
    case $1 in hs-*) echo handshakes ;; keepalive) echo requests ;; static) echo MiB ;; idle) echo "KiB/conn" ;; esac
}
{
    echo "TLS benchmark $stamp: medians of $ROUNDS x ${DURATION}s runs (valid runs only); servers on CPU" \
        "$SERVER_CPU (1 worker), client on CPU $CLIENT_CPU; kTLS available: $ktls_avail ($ulp)"
    echo "load average at start: $load_start on $ncpu CPU(s); $(openssl version)"
    printf '%-10s %-11s %-10s %12s %9s %12s %10s\n' scenario server unit "per s" "cpu s" "per cpu-s" "vs nginx"
    for sc in $SCENARIOS; do
        for s in $(servers_for "$sc"); do
            [[ -n ${OK[$s]:-} ]] || continue
            if [[ $sc == idle ]]; then
                v=$(col "$sc" "$s" 8 | median)
                ng=$(col "$sc" nginx-ec 8 | median)
                awk -v sc="$sc" -v s="$s" -v v="$v" -v n="$ng" 'BEGIN {
                    r = (n + 0 > 0 && v != "nan") ? sprintf("%.2fx", v / n) : "-"
                    printf "%-10s %-11s %-10s %12s %9s %12s %10s\n", sc, s, "KiB/conn", v, "-", "-", r }'
                continue
            fi
            ps=$(col "$sc" "$s" 5 | median)
            cpu=$(col "$sc" "$s" 6 | median)
            pc=$(col "$sc" "$s" 7 | median)
            np=$(col "$sc" "$(peer_of "$s")" 7 | median)
            awk -v sc="$sc" -v s="$s" -v u="$(unit_of "$sc")" -v ps="$ps" -v cpu="$cpu" -v pc="$pc" -v np="$np" 'BEGIN {
                r = (np + 0 > 0 && pc != "nan") ? sprintf("%.2fx", pc / np) : "-"
                printf "%-10s %-11s %-10s %12.1f %9.2f %12.0f %10s\n", sc, s, u, ps, cpu, pc, r }'
        done
    done
} | tee "$summary"
echo
log "results: $results"
log "summary: $summary"
if ((invalid)); then
    log "some runs had errors and were excluded (see the per-run lines and $TLS_OUT/logs)"
    exit 1
fi
