#!/usr/bin/env bash
# The Node addon's benchmark (`make bench-passenger`; docs/benchmarks.md):
#
#  1. Through Phusion Passenger Standalone (builtin engine), GET /api/plaintext:
#       plexus   the addon with examples/passenger-api/api.c (a C route)
#       node     the same route in a plain Node `http` handler
#     requests/s and requests per CPU-second of everything the server side runs (Passenger's
#     watchdog, core and the app process), in one interleaved run. Passenger's core forwards
#     every request over a new Unix connection: expect it to be the limit.
#  2. Direct, GET /healthz on a TCP port, one worker pinned to SERVER_CPU:
#       addon    the addon on a port Node listened on (node + plexus.node)
#       binary   the plexus binary
#     the addon should cost nothing once started (>= 0.95x).
#
# wrk drives both (1 thread, CONNS connections, pinned to CLIENT_CPU); runs alternate between
# the two servers of a scenario, ROUNDS times DURATION s; medians. Everything on 127.0.0.1;
# servers are stopped by PID on exit.
#
# Knobs: DURATION [10] ROUNDS [3] CONNS [32] SERVER_CPU [1] CLIENT_CPU [0] PORT_BASE [18600]
#        OUT [build/bench-passenger]
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$root/build/release}" && pwd)
DURATION=${DURATION:-10} ROUNDS=${ROUNDS:-3} CONNS=${CONNS:-32}
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0} PORT_BASE=${PORT_BASE:-18600}
OUT=${OUT:-$root/build/bench-passenger}
BENCH_NAME=bench-passenger
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh" # log, median, CLK_TCK
for c in wrk passenger node taskset; do
    command -v "$c" >/dev/null || { log "$c is missing (deps/debian.txt, deps/bench.txt)"; exit 2; }
done
addon=$build/bindings/node/plexus.node
[ -f "$addon" ] || { log "no $addon: build first (make build)"; exit 2; }

rm -rf "$OUT"
mkdir -p "$OUT"
tmp=$(mktemp -d /tmp/pxbench-XXXXXX) # Passenger's registry holds Unix sockets: a short path
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for d in "$tmp"/*/; do
        if [ -f "$d/passenger.pid" ]; then passenger stop --pid-file "$d/passenger.pid" >/dev/null 2>&1 || true; fi
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# An addon with the C route of examples/passenger-api.
PLEXUS_BUILD_DIR=$build node "$root/bindings/node/build.js" --out "$tmp/api.node" \
    "$root/examples/passenger-api/api.c" 2>/dev/null

app_dir() { # name kind -> an app folder: kind plexus (the addon) or node (a plain handler)
    local d=$tmp/$1/app
    mkdir -p "$d/node_modules"
    ln -s "$root/bindings/node" "$d/node_modules/plexus"
    if [ "$2" = plexus ]; then
        cat >"$d/app.js" <<EOF
const plexus = require('plexus').use('$tmp/api.node');
if (typeof PhusionPassenger !== 'undefined') PhusionPassenger.configure({ autoInstall: false });
const server = require('http').createServer();
server.listen(typeof PhusionPassenger !== 'undefined' ? 'passenger' : Number(process.env.PORT), '127.0.0.1');
plexus.listen(server, { 'allow-anonymous': true, workers: Number(process.env.WORKERS || 1), 'data-dir': __dirname + '/var' });
EOF
    else
        cat >"$d/app.js" <<'EOF'
const body = 'Hello, World!';
require('http').createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
  res.end(body);
}).listen('passenger');
EOF
    fi
    echo "$d"
}

# CPU ticks (utime+stime) of every process carrying PX_BENCH_TAG=$1 in its environment:
# what Passenger starts (daemons included) inherits it, while lib.sh's cpu_ticks follows a
# process tree, which Passenger's daemons leave.
tagged_pids() {
    local e
    for e in /proc/[0-9]*/environ; do
        grep -qzx "PX_BENCH_TAG=$1" "$e" 2>/dev/null && { e=${e#/proc/}; echo "${e%/environ}"; }
    done
    return 0
}
tagged_cpu_ticks() {
    local t=0 p v
    for p in $(tagged_pids "$1"); do
        v=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk '{ print $12 + $13 }') || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

wait_http() { # port path
    for _ in $(seq 200); do
        curl -fs -o /dev/null "http://127.0.0.1:$1$2" && return 0
        sleep 0.2
    done
    log "nothing answers on port $1"
    return 1
}

# run tag port path -> "rps cpu_s" over the middle of a wrk run
measure() {
    local tag=$1 port=$2 path=$3 out c0 c1
    out=$OUT/wrk-$tag-$RANDOM.txt
    taskset -c "$CLIENT_CPU" timeout $((DURATION + 10)) wrk -t1 -c"$CONNS" -d"${DURATION}s" \
        "http://127.0.0.1:$port$path" >"$out" 2>&1 &
    local w=$!
    sleep 1
    c0=$(tagged_cpu_ticks "$tag")
    sleep $((DURATION - 2))
    c1=$(tagged_cpu_ticks "$tag")
    wait "$w"
    if grep -q 'Non-2xx\|Socket errors' "$out"; then log "$tag: errors (see $out)"; fi
    local rps
    rps=$(awk '/Requests\/sec/ { print $2 }' "$out")
    echo "$rps $(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v d=$((DURATION - 2)) 'BEGIN { printf "%.3f", t / hz / d }')"
}

results=$OUT/results.tsv
printf 'scenario\tserver\tround\trps\tcpu_per_s\n' >"$results"

# ---- 1. through Passenger ------------------------------------------------------------------
start_passenger() { # name kind port
    local d
    d=$(app_dir "$1" "$2")
    mkdir -p "$tmp/$1/reg"
    (cd "$d" && PX_BENCH_TAG=$1 PASSENGER_INSTANCE_REGISTRY_DIR=$tmp/$1/reg \
        taskset -c "$SERVER_CPU" passenger start --engine=builtin --address 127.0.0.1 --port "$3" \
        --app-type node --startup-file app.js --environment production --min-instances 1 \
        --log-file "$tmp/$1/passenger.log" --pid-file "$tmp/$1/passenger.pid" \
        --instance-registry-dir "$tmp/$1/reg" --disable-security-update-check \
        --disable-anonymous-telemetry >"$tmp/$1/start.log" 2>&1) &
    pids+=($!)
    wait_http "$3" /api/plaintext
}
log "scenario 1: through Passenger Standalone (builtin engine)"
start_passenger psg-plexus plexus $((PORT_BASE + 1))
start_passenger psg-node node $((PORT_BASE + 2))
for r in $(seq "$ROUNDS"); do
    for s in plexus node; do
        [ "$s" = plexus ] && port=$((PORT_BASE + 1)) || port=$((PORT_BASE + 2))
        read -r rps cpu < <(measure "psg-$s" "$port" /api/plaintext)
        printf 'passenger\t%s\t%s\t%s\t%s\n' "$s" "$r" "$rps" "$cpu" >>"$results"
        log "  round $r $s: $rps req/s, $cpu CPU-s/s"
    done
done
for n in psg-plexus psg-node; do passenger stop --pid-file "$tmp/$n/passenger.pid" >/dev/null 2>&1 || true; done

# ---- 2. direct: the addon vs the plexus binary ---------------------------------------------
log "scenario 2: direct TCP, one worker: the addon vs the plexus binary"
d=$(app_dir direct-addon plexus)
(cd "$d" && PX_BENCH_TAG=direct-addon PORT=$((PORT_BASE + 3)) WORKERS=1 PLEXUS_LOG_LEVEL=warn \
    taskset -c "$SERVER_CPU" node app.js >"$tmp/direct-addon.log" 2>&1) &
pids+=($!)
mkdir -p "$tmp/direct-binary"
(cd "$tmp/direct-binary" && PX_BENCH_TAG=direct-binary taskset -c "$SERVER_CPU" "$build/plexus" \
    --listen 127.0.0.1:$((PORT_BASE + 4)) --workers 1 --allow-anonymous --data-dir var \
    --log-level warn >"$tmp/direct-binary.log" 2>&1) &
pids+=($!)
wait_http $((PORT_BASE + 3)) /healthz
wait_http $((PORT_BASE + 4)) /healthz
for r in $(seq "$ROUNDS"); do
    for s in addon binary; do
        [ "$s" = addon ] && port=$((PORT_BASE + 3)) || port=$((PORT_BASE + 4))
        read -r rps cpu < <(measure "direct-$s" "$port" /healthz)
        printf 'direct\t%s\t%s\t%s\t%s\n' "$s" "$r" "$rps" "$cpu" >>"$results"
        log "  round $r $s: $rps req/s, $cpu CPU-s/s"
    done
done

# ---- summary -------------------------------------------------------------------------------
echo
printf '%-10s %-8s %12s %10s %16s\n' scenario server 'req/s' 'CPU-s/s' 'req per CPU-s'
for sc in passenger:plexus passenger:node direct:addon direct:binary; do
    s=${sc#*:} c=${sc%%:*}
    rps=$(awk -F'\t' -v c="$c" -v s="$s" '$1 == c && $2 == s { print $4 }' "$results" | median)
    cpu=$(awk -F'\t' -v c="$c" -v s="$s" '$1 == c && $2 == s { print $5 }' "$results" | median)
    printf '%-10s %-8s %12.0f %10.2f %16.0f\n' "$c" "$s" "$rps" "$cpu" "$(awk -v r="$rps" -v c="$cpu" 'BEGIN { print (c > 0 ? r / c : 0) }')"
done | tee "$OUT/summary.txt"
