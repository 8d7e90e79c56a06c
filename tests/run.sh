#!/bin/sh
# Run the whole suite in each build directory given, then print one closing
# line with the totals: "total: N passed, N failed, N skipped".
#
# ctest's own output (and its "N% tests passed, N tests failed out of N" line)
# is printed as it comes. The counts come from ctest's JUnit report, read by
# tests/results.py: a skipped test (exit code 77) counts as skipped only when
# every skip it reports names a reason on the allowlist of tests/README.md
# ("Allowed skips"); any other skip counts as failed, so make test fails on it.
set -u
here=$(cd "$(dirname "$0")" && pwd)
pass=0
fail=0
skip=0
for dir in "$@"; do
    echo "=== ctest in $dir"
    out=$(mktemp)
    junit=$(cd "$dir" && pwd)/Testing/px-junit.xml
    rm -f "$junit"
    # The whole output of every test goes into the report (skipped ones
    # included: their px-skip lines are checked), not the first 1 KiB.
    (cd "$dir" && ctest --output-on-failure -j 2 --timeout 900 --output-junit "$junit" \
        --test-output-size-passed 4000000 --test-output-size-failed 4000000) 2>&1 | tee "$out"
    if ! grep -qE "tests passed, [0-9]+ tests failed out of [0-9]+" "$out"; then
        echo "ctest in $dir printed no summary" >&2
        fail=$((fail + 1))
    elif [ ! -s "$junit" ]; then
        echo "ctest in $dir wrote no report ($junit)" >&2
        fail=$((fail + 1))
    else
        /usr/bin/python3 "$here/results.py" "$here/README.md" "$junit" >"$out" 2>&1
        grep -v '^counts ' "$out"
        counts=$(sed -n 's/^counts //p' "$out")
        if [ -z "$counts" ]; then
            echo "tests/results.py could not read $junit" >&2
            fail=$((fail + 1))
        else
            p=$(echo "$counts" | cut -d' ' -f1)
            f=$(echo "$counts" | cut -d' ' -f2)
            s=$(echo "$counts" | cut -d' ' -f3)
            echo "--- $dir: $p passed, $f failed, $s skipped"
            pass=$((pass + p))
            fail=$((fail + f))
            skip=$((skip + s))
        fi
    fi
    rm -f "$out"
done
echo "total: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
