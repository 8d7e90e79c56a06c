#!/usr/bin/env bash
# Server CPU time per unit of work on a fixed workload, for A/Bs on a shared
# machine: the workload (bench/cgload.py MODE) sends the same batches whatever
# the load, so every server sees the same reads and writes, and the figure is
# the server's own CPU time (all threads, ns, from schedstat) divided by the
# units of work, cache misses and system calls included (unlike callgrind).
#
#   bench/cpucost.sh MODE N BIN... [-- cgload options]
#
# Each BIN runs pinned to CPU_SERVER [1] with `--listen 127.0.0.1:PORT
# --workers 1`, the client on CPU_CLIENT [0]; the BINs are interleaved,
# CPU_REPEAT [5] rounds, and the median ns per unit of each is printed.
# Example: bench/cpucost.sh ws-fanout 320 build/release/examples/echo \
#              /tmp/old/echo -- --subs 1000 --batch 16
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=cpucost
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
(($# >= 3)) || { sed -n 2,15p "$0"; exit 2; }
mode=$1 n=$2
shift 2
bins=()
while (($#)) && [[ $1 != -- ]]; do bins+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
extra=("$@")
: "${CPU_REPEAT:=5}" "${CPU_PORT:=17450}" "${CPU_SERVER:=1}" "${CPU_CLIENT:=0}"
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SRV="" RUNS=0
trap '[[ -n $SRV ]] && kill -TERM $SRV 2>/dev/null; true' EXIT
declare -A res

for ((r = 1; r <= CPU_REPEAT; r++)); do
    for i in "${!bins[@]}"; do
        bin=${bins[$i]}
        port=$((CPU_PORT + RUNS++ % 50))
        taskset -c "$CPU_SERVER" "$bin" --listen "127.0.0.1:$port" --workers 1 >/dev/null 2>&1 &
        SRV=$!
        bench_wait_listen "$bin" "$SRV" "$port" /dev/null || exit 1
        line=$(taskset -c "$CPU_CLIENT" "$PY" "$root/bench/cgload.py" --port "$port" --n "$n" \
            --server-pid "$SRV" "$mode" "${extra[@]}" | grep '^cpu_ns') || true
        bench_stop_pid "$SRV"
        SRV=""
        v=$(awk '{print $6}' <<<"$line")
        [[ -n $v ]] || { echo "cpucost.sh: the workload failed against $bin" >&2; exit 1; }
        res[$i]="${res[$i]:-} $v"
        printf '  round %d %-40s %8s ns per unit\n' "$r" "$bin" "$v" >&2
    done
done
for i in "${!bins[@]}"; do
    printf '%-40s %-10s median %s ns per unit (rounds:%s)\n' "${bins[$i]}" "$mode" \
        "$(tr ' ' '\n' <<<"${res[$i]}" | sed '/^$/d' | median)" "${res[$i]}"
done
