#!/usr/bin/env bash
# Pusher protocol benchmark (issue 14): plexus's Pusher front side by side with plexus's own
# native protocol, a Node server on the `ws` package implementing the same Pusher subset
# (bench/peers/pusher-server.mjs) and nats-server (reference). What `make bench-pusher` runs;
# docs/benchmarks.md has the results and how to read them.
#
#   bench/pusher.sh [RELEASE_BUILD_DIR]     full run (3 rounds)
#   PUSHER_QUICK=1 bench/pusher.sh          smoke run (1 round, short)
#   bench/pusher.sh --table FILE...         print the tables again from results-*.jsonl
#
# 1. fanout: 1 000 and 10 000 subscribers + 1 publisher (wsload --scenario fanout).
#      plexus-pusher  wsload --proto pusher: subscribers on private-bench (signed), the
#                     publisher sends client events (app: max-client-events-per-second 0)
#      plexus-native  wsload --proto plexus-hub on /ws: the same hub, the native protocol
#      node           wsload --proto pusher against bench/peers/pusher-server.mjs
#      nats           wsload --proto nats-ws (reference)
#    Figure: deliveries per server-CPU-second. Target: plexus-pusher >= 0.9x plexus-native.
# 2. churn: MEMBERS members in a presence channel, one more connection joins and leaves as
#    fast as answered (bench/peers/pusher-churn.mjs): server CPU per join/leave cycle and per
#    member notified. Target: O(1) per event: the cost per notification with 1 000 members
#    at most 1.5x the cost with 100 (the joiner's member list is O(n) by the protocol).
# 3. idle: IDLE_CONNS Pusher connections subscribed to a public channel (wsload --scenario
#    idle): server RSS per connection. Target: <= 1.5 KiB.
#
# Every server is started fresh for every measurement, pinned to SERVER_CPU; the clients to
# CLIENT_CPU. Everything listens and connects on 127.0.0.1 only; every client run is bounded
# by timeout(1); servers started here are stopped by PID, also on exit (trap).
#
# Knobs (environment; defaults in brackets; PUSHER_QUICK=1 changes the starred ones):
#   ROUNDS [3*]  DURATION [10*] s  WARMUP [2*] s  PARTS [fanout churn idle]
#   FANOUT_SUBS ["1000 10000"]  FANOUT_SERVERS [plexus-pusher plexus-native node nats]
#   FANOUT_SIZE [32]  FANOUT_WINDOW [16]  MEMBERS ["100 1000"]  CHURN_SERVERS [plexus node]
#   CHURN_SECONDS [10*]  IDLE_CONNS [10000]  IDLE_SERVERS [plexus-pusher plexus-native node]
#   SERVER_CPU [1]  CLIENT_CPU [0]  CLIENT_THREADS [1]  PORT_BASE [17300]  PLEXUS_WORKERS [1]
#   PUSHER_OUT [build/bench-pusher]  WSLOAD [auto]  PLEXUS [RELEASE_BUILD_DIR/plexus]
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

orig_pwd=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [[ "${PUSHER_QUICK:-0}" == 1 ]]; then
    : "${ROUNDS:=1}" "${DURATION:=3}" "${WARMUP:=1}" "${CHURN_SECONDS:=3}"
fi
: "${ROUNDS:=3}" "${DURATION:=10}" "${WARMUP:=2}" "${CHURN_SECONDS:=10}"
: "${PARTS:=fanout churn idle}" "${FANOUT_SUBS:=1000 10000}"
: "${FANOUT_SERVERS:=plexus-pusher plexus-native node nats}" "${FANOUT_SIZE:=32}" "${FANOUT_WINDOW:=16}"
: "${MEMBERS:=100 1000}" "${CHURN_SERVERS:=plexus node}"
: "${IDLE_CONNS:=10000}" "${IDLE_SERVERS:=plexus-pusher plexus-native node}"
: "${SERVER_CPU:=1}" "${CLIENT_CPU:=0}" "${CLIENT_THREADS:=1}" "${PORT_BASE:=17300}"
: "${PLEXUS_WORKERS:=1}" "${PUSHER_OUT:=$root/build/bench-pusher}" "${WSLOAD:=}"

BENCH_NAME=bench-pusher
# shellcheck source=bench/lib.sh
. bench/lib.sh

print_table() { # results.jsonl...
    /usr/bin/python3 - "$@" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.strip()]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def fmt(x, f="%.0f"):
    return "-" if x is None else f % x
targets = []
for n in sorted({r["conns"] for r in rows if r.get("part") == "fanout"}):
    print("\nfanout, %d subscribers: medians of valid rounds (deliveries per server-CPU-second, higher is better)" % n)
    print("  %-14s %-10s %11s %10s %8s %14s %10s %10s %8s %6s" % ("server", "proto", "deliv/s", "publish/s", "srv CPU",
          "per srv CPU-s", "vs native", "p50 us", "p99 us", "valid"))
    rs = [r for r in rows if r.get("part") == "fanout" and r["conns"] == n]
    eff = {}
    for s in ["plexus-pusher", "plexus-native", "node", "nats"]:
        v = [r for r in rs if r["server"] == s and r.get("valid")]
        eff[s] = med([r["per_server_cpu_s"] for r in v])
    for s in ["plexus-pusher", "plexus-native", "node", "nats"]:
        allr = [r for r in rs if r["server"] == s]
        if not allr:
            continue
        v = [r for r in allr if r.get("valid")]
        base = eff.get("plexus-native")
        ratio = "-" if not (eff[s] and base) else "%.2fx" % (eff[s] / base)
        print("  %-14s %-10s %11s %10s %8s %14s %10s %10s %8s %6s" % (s, allr[0].get("proto", "-"),
              fmt(med([r["msgs_per_s"] for r in v])), fmt(med([r["publish_per_s"] for r in v])),
              fmt(med([r["server_cpu_s"] for r in v]), "%.2f"), fmt(eff[s]), ratio,
              fmt(med([r["p50_us"] for r in v])), fmt(med([r["p99_us"] for r in v])), "%d/%d" % (len(v), len(allr))))
    if eff.get("plexus-pusher") and eff.get("plexus-native"):
        r = eff["plexus-pusher"] / eff["plexus-native"]
        targets.append("fanout %d: plexus Pusher %.2fx plexus native per server-CPU-s (target >= 0.90x): %s" % (n, r, "met" if r >= 0.9 else "MISSED"))
cr = [r for r in rows if r.get("part") == "churn"]
if cr:
    print("\npresence churn: one member joins and leaves a channel of N members (medians of valid rounds)")
    print("  %-8s %8s %10s %14s %16s %20s %6s" % ("server", "members", "cycles/s", "srv CPU-s", "CPU us/cycle", "CPU ns/notification", "valid"))
    per = {}
    for s in ["plexus", "node"]:
        for n in sorted({r["members"] for r in cr}):
            allr = [r for r in cr if r["server"] == s and r["members"] == n]
            if not allr:
                continue
            v = [r for r in allr if r.get("valid")]
            per[(s, n)] = med([r.get("cpu_ns_per_notification") for r in v])
            print("  %-8s %8d %10s %14s %16s %20s %6s" % (s, n, fmt(med([r.get("cycles_per_s") for r in v]), "%.1f"),
                  fmt(med([r.get("server_cpu_s") for r in v]), "%.2f"), fmt(med([r.get("cpu_us_per_cycle") for r in v]), "%.0f"),
                  fmt(per[(s, n)]), "%d/%d" % (len(v), len(allr))))
    ns = sorted({r["members"] for r in cr})
    if len(ns) >= 2 and per.get(("plexus", ns[0])) and per.get(("plexus", ns[-1])):
        r = per[("plexus", ns[-1])] / per[("plexus", ns[0])]
        targets.append("presence churn: plexus CPU per notification with %d members is %.2fx that with %d (O(1) per event: target <= 1.5x): %s"
                       % (ns[-1], r, ns[0], "met" if r <= 1.5 else "MISSED"))
ir = [r for r in rows if r.get("part") == "idle"]
if ir:
    print("\nidle connections (subscribed): server RSS per connection (medians of valid rounds)")
    print("  %-14s %-10s %8s %12s %14s %6s" % ("server", "proto", "conns", "bytes/conn", "end bytes/conn", "valid"))
    for s in ["plexus-pusher", "plexus-native", "node"]:
        allr = [r for r in ir if r["server"] == s]
        if not allr:
            continue
        v = [r for r in allr if r.get("valid")]
        b = med([r.get("rss_per_conn_bytes") for r in v])
        print("  %-14s %-10s %8s %12s %14s %6s" % (s, allr[0].get("proto", "-"), fmt(med([r.get("established") for r in v])),
              fmt(b), fmt(med([r.get("rss_per_conn_end_bytes") for r in v])), "%d/%d" % (len(v), len(allr))))
        if s == "plexus-pusher" and b is not None:
            targets.append("idle Pusher connection: %.0f bytes of server RSS (target <= 1536): %s" % (b, "met" if b <= 1536 else "MISSED"))
loads = [r["load1"] for r in rows if r.get("load1") is not None]
if loads:
    print("\nload average (1 min) before each run: %.2f .. %.2f (median %.2f)" % (min(loads), max(loads), statistics.median(loads)))
if targets:
    print()
for t in targets:
    print("target: " + t)
EOF
}

bench_table_mode "$@"

build=${1:-$root/build/release}
build=$(cd "$build" 2>/dev/null && pwd) || { log "no build directory ${1:-build/release}"; exit 2; }
: "${PLEXUS:=$build/plexus}"
[[ -x "$PLEXUS" ]] || { log "no plexus binary at $PLEXUS"; exit 2; }
command -v node >/dev/null || { log "node is not installed (deps/debian.txt)"; exit 2; }
[[ -d bench/peers/node_modules/ws ]] || { log "run: (cd bench/peers && npm ci)"; exit 2; }

bench_outputs "$PUSHER_OUT" jsonl
bench_wsload "$build/bench/wsload" "$PUSHER_OUT"
bench_pin "$SERVER_CPU" "$CLIENT_CPU"
bench_check_load "throughput and latency"
max_conns=$IDLE_CONNS
for n in $FANOUT_SUBS; do ((n > max_conns)) && max_conns=$n; done
bench_raise_fd_limit "$max_conns" "the largest runs"

port=$((PORT_BASE + 1))
nats_client_port=$((PORT_BASE + 53))
prefix=$(mktemp -d "${TMPDIR:-/tmp}/plexus-bench-pusher.XXXXXX")
SRV_PID=""
cat >"$prefix/apps.json" <<'EOF'
{"pusher-apps": [{"id": "1", "key": "app-key", "secret": "app-secret",
  "max-client-events-per-second": 0, "max-presence-members": 1000000,
  "max-connections": 0}]}
EOF

cleanup() {
    [[ -n "$SRV_PID" ]] && stop_server
    rm -rf "$prefix"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() { # kind logfile -> SRV_PID
    local kind=$1 logf=$2
    bench_port_free "$kind" "$port" PORT_BASE || return 1
    case $kind in
    plexus*)
        local dir
        dir=$(mktemp -d "$prefix/data.XXXXXX")
        "${pin_server[@]}" "$PLEXUS" --listen "127.0.0.1:$port" --workers "$PLEXUS_WORKERS" \
            --allow-anonymous --publish-rate 0 --data-dir "$dir" --max-connections 30000 \
            --config "$prefix/apps.json" >"$logf" 2>&1 &
        ;;
    node)
        "${pin_server[@]}" node bench/peers/pusher-server.mjs "$port" app-key app-secret >"$logf" 2>&1 &
        ;;
    nats) start_peer nats "$port" "$logf" 0 "$nats_client_port" ;;
    esac
    SRV_PID=$!
    bench_wait_listen "$kind" "$SRV_PID" "$port" "$logf" && return 0
    stop_server
    return 1
}

stop_server() {
    [[ -n "$SRV_PID" ]] || return 0
    bench_stop_pid "$SRV_PID" 100
    SRV_PID=""
}

record() { # part round server extra-json-fields line
    printf '{"part":"%s","round":%d,"server":"%s","load1":%s,%s\n' "$1" "$2" "$3" "$(load1)" "${4#*\{}" >>"$results"
}

wsload_run() { # part round server logf args...
    local part=$1 round=$2 srv=$3 logf=$4 rc=0
    shift 4
    timeout --signal=INT --kill-after=10 600 "${pin_client[@]}" "$WSLOAD" "$@" --server-pid "$SRV_PID" \
        --label "$srv" >"$logf" 2>&1 || rc=$?
    if ! wsload_result "$logf" "$rc"; then
        printf '{"part":"%s","round":%d,"server":"%s","valid":false,"conns":0}\n' "$part" "$round" "$srv" >>"$results"
        return 1
    fi
    record "$part" "$round" "$srv" "{$W_LINE"
    wsload_summary "$logf" 'fanout|latency|server CPU|per server|errors|status'
}

proto_of() {
    case $1 in
    plexus-pusher | node) echo pusher ;;
    plexus-native) echo plexus-hub ;;
    nats) echo nats-ws ;;
    esac
}
subject_of() {
    case $1 in
    plexus-pusher | node) echo private-bench ;;
    *) echo bench ;;
    esac
}

for ((round = 1; round <= ROUNDS; round++)); do
    for part in $PARTS; do
        case $part in
        fanout)
            for n in $FANOUT_SUBS; do
                for srv in $FANOUT_SERVERS; do
                    logf="$PUSHER_OUT/logs/$stamp-r$round-fanout-$n-$srv"
                    start_server "$srv" "$logf.server.log" || continue
                    log "round $round: fanout $n subscribers, $srv, load $(load1)"
                    wsload_run fanout "$round" "$srv" "$logf.wsload.log" --scenario fanout \
                        --proto "$(proto_of "$srv")" --port "$port" --conns "$n" \
                        --subject "$(subject_of "$srv")" --threads "$CLIENT_THREADS" \
                        --size "$FANOUT_SIZE" --window "$FANOUT_WINDOW" --duration "$DURATION" \
                        --warmup "$WARMUP" || true
                    stop_server
                done
            done
            ;;
        churn)
            for n in $MEMBERS; do
                for srv in $CHURN_SERVERS; do
                    kind=$srv
                    [[ $srv == plexus ]] && kind=plexus-pusher
                    logf="$PUSHER_OUT/logs/$stamp-r$round-churn-$n-$srv"
                    start_server "$kind" "$logf.server.log" || continue
                    log "round $round: presence churn, $n members, $srv, load $(load1)"
                    rc=0
                    timeout --signal=INT --kill-after=10 300 "${pin_client[@]}" node \
                        bench/peers/pusher-churn.mjs "$port" "$SRV_PID" "$n" "$CHURN_SECONDS" \
                        app-key app-secret "$srv" >"$logf.churn.log" 2>&1 || rc=$?
                    line=$(grep '^RESULT ' "$logf.churn.log" | tail -n 1 || true)
                    if [[ -n $line ]]; then
                        record churn "$round" "$srv" "$line"
                        sed 's/^/    /' "$logf.churn.log" >&2
                    else
                        log "  no RESULT (exit $rc); see $logf.churn.log"
                    fi
                    stop_server
                done
            done
            ;;
        idle)
            for srv in $IDLE_SERVERS; do
                logf="$PUSHER_OUT/logs/$stamp-r$round-idle-$srv"
                start_server "$srv" "$logf.server.log" || continue
                log "round $round: $IDLE_CONNS idle connections, $srv, load $(load1)"
                sub=chat
                [[ $srv == nats ]] && sub=bench
                wsload_run idle "$round" "$srv" "$logf.wsload.log" --scenario idle \
                    --proto "$(proto_of "$srv")" --port "$port" --conns "$IDLE_CONNS" \
                    --subject "$sub" --threads "$CLIENT_THREADS" --duration 3 --settle 3 || true
                stop_server
            done
            ;;
        *) log "unknown part '$part' (fanout churn idle)"; exit 2 ;;
        esac
    done
done

print_table "$results" | tee "$summary"
log "results: $results; summary: $summary"
