#!/usr/bin/env bash
# Instruction counts per unit of work, for A/Bs of code changes on a shared
# machine (timings are noise there; instruction counts are not).
#
#   bench/callgrind.sh MODE N1 N2 BIN... [-- cgload options]
#
# For each BIN (interleaved, CG_REPEAT times), the server runs under
# `valgrind --tool=callgrind` with `--listen 127.0.0.1:PORT --workers 1`, and
# bench/cgload.py sends the fixed workload MODE (ws-fanout, ws-echo, http) twice:
# N1 and N2 units. Per unit = (Ir(N2) - Ir(N1)) / (units(N2) - units(N1)),
# which cancels start-up, connection set-up and shutdown. The callgrind output
# of the N2 run is kept (callgrind_annotate it) under CG_OUT [build/callgrind].
# CG_FUNCS=K also prints the K functions with the most instructions per unit
# (their own instructions, N2 run minus N1 run).
#
# Example: bench/callgrind.sh ws-fanout 160 480 build/release/examples/echo \
#              /tmp/old/examples/echo -- --subs 100 --batch 16
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=callgrind
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
(($# >= 4)) || { sed -n 2,15p "$0"; exit 2; }
mode=$1 n1=$2 n2=$3
shift 3
bins=()
while (($#)) && [[ $1 != -- ]]; do bins+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
extra=("$@")
: "${CG_REPEAT:=1}" "${CG_PORT:=17400}" "${CG_OUT:=$root/build/callgrind}"
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 2; }
mkdir -p "$CG_OUT"
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

SRV="" RUNS=0
trap '[[ -n $SRV ]] && kill -TERM $SRV 2>/dev/null; true' EXIT

run_one() { # bin n -> RES_IR RES_UNITS (not in a subshell: the EXIT trap must see SRV)
    local bin=$1 n=$2 tag out units
    # A fresh port per run: a server from the previous run may still be going away.
    PORT=$((CG_PORT + RUNS++ % 50))
    tag=$(tr -c "A-Za-z0-9._\n-" _ <<<"${bin#/}")-$mode-$n
    out="$CG_OUT/callgrind.$tag.out"
    rm -f "$out" "$CG_OUT/$tag.log"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" \
        --listen "127.0.0.1:$PORT" --workers 1 >"$CG_OUT/$tag.log" 2>&1 &
    SRV=$!
    local i
    for ((i = 0; i < 600; i++)); do
        port_open "$PORT" && break
        kill -0 "$SRV" 2>/dev/null || { echo "callgrind.sh: $bin exited at start" >&2; exit 1; }
        sleep 0.1
    done
    units=$("$PY" "$root/bench/cgload.py" --port "$PORT" --n "$n" "$mode" "${extra[@]}" | awk '/^units/ {print $2}') || true
    bench_stop_pid "$SRV" 600 # (valgrind writes its output on exit: give it a minute)
    SRV=""
    [[ -n $units ]] || { echo "callgrind.sh: the workload failed against $bin" >&2; exit 1; }
    RES_IR=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
    RES_OUT=$out
    RES_UNITS=$units
}

for ((r = 1; r <= CG_REPEAT; r++)); do
    for bin in "${bins[@]}"; do
        run_one "$bin" "$n1"
        ir1=$RES_IR u1=$RES_UNITS out1=$RES_OUT
        run_one "$bin" "$n2"
        ir2=$RES_IR u2=$RES_UNITS
        awk -v b="$bin" -v m="$mode" -v i1="$ir1" -v i2="$ir2" -v u1="$u1" -v u2="$u2" -v r="$r" \
            'BEGIN { printf "%-40s %-10s round %d: %.1f Ir per unit (%d -> %d units)\n", b, m, r, (i2 - i1) / (u2 - u1), u1, u2 }'
        if ((${CG_FUNCS:-0} > 0)); then
            # own instructions per function in each run; the difference per unit
            awk -v u="$((u2 - u1))" -v k="$CG_FUNCS" '
                FNR == 1 { f++ }
                /^ *[0-9,]+ +\(/ && $0 ~ /:/ {
                    v = $1; gsub(",", "", v); name = $0; sub(/^[^)]*\) +/, "", name); sub(/ \[.*$/, "", name)
                    if (name ~ /^=>/) next
                    ir[f, name] = v; names[name] = 1
                }
                END {
                    for (n in names) { d = (ir[2, n] - ir[1, n]) / u; if (d > 0.5 || d < -0.5) printf "%10.1f  %s\n", d, n }
                }' <(callgrind_annotate --inclusive=no "$out1" 2>/dev/null) \
                <(callgrind_annotate --inclusive=no "$RES_OUT" 2>/dev/null) | sort -rn | head -n "$CG_FUNCS"
        fi
    done
done
