#!/bin/sh
# Source lint: banned functions (curl checksrc habit) and the layering rule of
# docs/DESIGN: core <- net <- http <- hub; nothing below includes from above.
set -u
root=$1
fail=0
banned='\b(sprintf|vsprintf|strcat|strcpy|gets|strtok|rand)[[:space:]]*\('
if grep -rnE "$banned" "$root/src" "$root/app" "$root/include" "$root/examples" 2>/dev/null; then
    echo "lint: banned function used (use snprintf, memcpy with a length, px_random)" >&2
    fail=1
fi
check_layer() { # dir forbidden-include-pattern
    if grep -rnE "#include \"($2)/" "$root/src/$1" 2>/dev/null; then
        echo "lint: src/$1 must not include from $2" >&2
        fail=1
    fi
}
check_layer core 'net|http|hub'
check_layer net 'http|hub'
check_layer http 'hub'
# Skips must stay visible (tests/README.md, "Skips"): every Python integration
# file exits through pxtest.main() (exit 77 on a skip), skips name an allowed
# reason (skip_allowed / px_skip), never a bare skipTest() or cmocka skip().
for f in "$root"/tests/integration/[0-9][0-9]-*.py; do
    [ -e "$f" ] || continue
    if ! grep -q '^    pxtest\.main()$' "$f"; then
        echo "lint: ${f#"$root"/} must end with pxtest.main() (not unittest.main())" >&2
        fail=1
    fi
done
if grep -nE '\bskipTest\(|@unittest\.skip|unittest\.SkipTest\(' "$root"/tests/integration/[0-9][0-9]-*.py; then
    echo "lint: skip through self.skip_allowed(reason_id, detail) (tests/README.md, Skips)" >&2
    fail=1
fi
if grep -rnE '\bskip\(\)' "$root/tests/unit" --include='*.c'; then
    echo "lint: skip a unit test with px_skip(reason_id, detail) (tests/unit/px_skip.h)" >&2
    fail=1
fi
# The tree is clang-formatted (.clang-format at the root).
if command -v clang-format >/dev/null 2>&1; then
    for f in $(cd "$root" && find src app include examples bench tests/unit tests/fuzz -name '*.[ch]'); do
        if ! clang-format --dry-run --Werror "$root/$f" >/dev/null 2>&1; then
            echo "lint: $f is not clang-formatted (clang-format -i $f)" >&2
            fail=1
        fi
    done
else
    echo "lint: clang-format not installed, format not checked" >&2
fi
if [ $fail = 0 ]; then echo "lint ok"; fi
exit $fail
