#!/bin/sh
# Run the whole suite in each build directory given, then print one closing
# line with the totals: "total: N passed, N failed".
set -u
pass=0
fail=0
for dir in "$@"; do
    echo "=== ctest in $dir"
    out=$(mktemp)
    (cd "$dir" && ctest --output-on-failure -j 2 --timeout 900) 2>&1 | tee "$out"
    line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$out" | tail -n 1)
    if [ -z "$line" ]; then
        echo "ctest in $dir printed no summary" >&2
        fail=$((fail + 1))
    else
        total=$(echo "$line" | sed -E 's/.* out of ([0-9]+).*/\1/')
        failed=$(echo "$line" | sed -E 's/.*tests passed, ([0-9]+) tests failed.*/\1/')
        pass=$((pass + total - failed))
        fail=$((fail + failed))
    fi
    rm -f "$out"
done
echo "total: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
