#!/usr/bin/env bash
# Run the libFuzzer harnesses for a while (not part of `make test`, which only
# replays the committed corpora). `make fuzz` calls this:
#
#   tests/fuzz/run.sh ASAN_BUILD_DIR [SECONDS] [PARALLEL] [NAMES...]
#
# Each harness runs SECONDS (default 600) under ASan+UBSan, PARALLEL at a time
# (default 2), starting from its committed corpus; new inputs go to
# ASAN_BUILD_DIR/fuzz-out/NAME/new, never into the tree. A crash, leak or timeout
# leaves its reproducer under ASAN_BUILD_DIR/fuzz-out/NAME/ and fails the run.
# Copy a reproducer into tests/fuzz/regression/NAME/ once the bug is fixed.
# The last line per harness is libFuzzer's own summary (runs, seconds, coverage).
set -u
build=${1:?usage: tests/fuzz/run.sh ASAN_BUILD_DIR [SECONDS] [PARALLEL] [NAMES...]}
build=$(cd "$build" && pwd) # the harnesses run from their output directories
secs=${2:-600}
par=${3:-2}
shift $(($# < 3 ? $# : 3))
root=$(cd "$(dirname "$0")" && pwd)
names=${*:-$(cd "$root/corpus" && ls)}
out="$build/fuzz-out"
mkdir -p "$out"

run_one() { # name
    n=$1
    bin="$build/tests/fuzz/fuzz_$n"
    if [ ! -x "$bin" ]; then
        echo "fuzz $n: $bin missing (build with make build-asan)" >&2
        return 1
    fi
    mkdir -p "$out/$n/new"
    dict=""
    case $n in http1 | chunked) dict="-dict=$root/http.dict" ;; esac
    # The regression directory is optional (libFuzzer refuses a missing one).
    regress=""
    if [ -n "$(ls -A "$root/regression/$n" 2>/dev/null)" ]; then regress="$root/regression/$n"; fi
    # shellcheck disable=SC2086 # dict and regress are optional single words
    (cd "$out/$n" && "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 $dict new "$root/corpus/$n" $regress \
        >log 2>&1)
    rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$n/log" | grep -o '[0-9]*$')
    cov=$(grep -o 'cov: [0-9]*' "$out/$n/log" | tail -1)
    if [ $rc -ne 0 ]; then
        echo "fuzz $n: FAILED (exit $rc) after ${runs:-?} runs; see $out/$n/log"
        return 1
    fi
    echo "fuzz $n: ok, ${runs:-?} runs in ${secs} s, ${cov:-cov ?}, $(ls "$out/$n/new" | wc -l) new inputs"
}

fail=0
running=0
for n in $names; do
    run_one "$n" > "$out/$n.result" 2>&1 &
    running=$((running + 1))
    if [ $running -ge "$par" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
for n in $names; do
    cat "$out/$n.result"
    grep -q ': ok,' "$out/$n.result" || fail=1
done
exit $fail
