#!/bin/sh
# Source lint:
#   tests/lint.sh ROOT          lint the tree at ROOT (ctest test "lint")
#   tests/lint.sh --self-test   prove the layering rules catch each forbidden
#                               include, on throwaway trees (ctest "lint/self-test")
#
# Checks: banned functions (curl checksrc habit); layering, by a map of every
# public and internal header to its layer with relative includes resolved
# (tests/lint_layers.py: the table of layers lives there, one line per folder);
# visible skips (tests/README.md, "Skips"); clang-format.
set -u
here=$(cd "$(dirname "$0")" && pwd)
format_check=1

lint() { # ROOT
    root=$1
    fail=0
    banned='\b(sprintf|vsprintf|strcat|strcpy|gets|strtok|rand)[[:space:]]*\('
    if grep -rnE "$banned" "$root/src" "$root/app" "$root/include" "$root/examples" 2>/dev/null; then
        echo "lint: banned function used (use snprintf, memcpy with a length, px_random)" >&2
        fail=1
    fi
    if ! /usr/bin/python3 "$here/lint_layers.py" "$root"; then
        fail=1
    fi
    # Skips must stay visible (tests/README.md, "Skips"): every Python integration
    # file exits through pxtest.main() (exit 77 on a skip), skips name an allowed
    # reason (skip_allowed / px_skip), never a bare skipTest() or cmocka skip().
    for f in "$root"/tests/integration/[0-9][0-9]-*.py; do
        [ -e "$f" ] || continue
        if ! grep -q '^    pxtest\.main()$' "$f"; then
            echo "lint: ${f#"$root"/} must end with pxtest.main() (not unittest.main())" >&2
            fail=1
        fi
        if grep -nE '\bskipTest\(|@unittest\.skip|unittest\.SkipTest\(' "$f"; then
            echo "lint: ${f#"$root"/}: skip through self.skip_allowed(reason_id, detail)" >&2
            fail=1
        fi
    done
    if [ -d "$root/tests/unit" ] && grep -rnE '\bskip\(\)' "$root/tests/unit" --include='*.c'; then
        echo "lint: skip a unit test with px_skip(reason_id, detail) (tests/unit/px_skip.h)" >&2
        fail=1
    fi
    # The tree is clang-formatted (.clang-format at the root). Not in the
    # self-test (format_check=0): it is about the rules above, and fast.
    if [ "$format_check" = 0 ]; then
        :
    elif command -v clang-format >/dev/null 2>&1; then
        for f in $(cd "$root" && find src app include examples bench tests/unit tests/fuzz \
            -name '*.[ch]' 2>/dev/null); do
            if ! clang-format --dry-run --Werror "$root/$f" >/dev/null 2>&1; then
                echo "lint: $f is not clang-formatted (clang-format -i $f)" >&2
                fail=1
            fi
        done
    else
        echo "lint: clang-format not installed, format not checked" >&2
    fi
    return $fail
}

# A small tree that follows every rule, using each allowance of today's tables
# (lint_layers.py TODAY and EXCEPTIONS) once.
good_tree() { # DIR
    d=$1
    mkdir -p "$d/include/plexus" "$d/src/core" "$d/src/util" "$d/src/net" "$d/src/http" \
        "$d/src/hub" "$d/src/front" "$d/app" "$d/examples/hello"
    for h in common buf loop worker log metrics json net http ws hub native; do
        : >"$d/include/plexus/$h.h"
    done
    printf '#include "plexus/common.h"\n' >"$d/include/plexus/buf.h"
    printf '#include "plexus/buf.h"\n' >"$d/include/plexus/net.h"
    printf '#include "plexus/net.h"\n' >"$d/include/plexus/http.h"
    printf '#include "plexus/buf.h"\n#include "plexus/worker.h"\n' >"$d/include/plexus/hub.h"
    printf '#include "plexus/http.h"\n#include "plexus/hub.h"\n' >"$d/include/plexus/native.h"
    : >"$d/src/core/alloc.h"
    : >"$d/src/core/loop_int.h"
    printf '#include "core/alloc.h"\n#include "loop_int.h"\n#include "plexus/loop.h"\n' \
        >"$d/src/core/loop.c"
    printf '#include "core/alloc.h"\n' >"$d/src/util/json.h"
    : >"$d/src/net/net_int.h"
    printf '#include "../util/json.h"\n#include "net_int.h"\n#include "plexus/net.h"\n' \
        >"$d/src/net/conn.c"
    : >"$d/src/http/http_int.h"
    printf '#include "http/http_int.h"\n' >"$d/src/http/router.c"
    : >"$d/src/hub/hub_int.h"
    : >"$d/src/hub/json.h"
    printf '#include "plexus/hub.h"\n' >"$d/src/hub/frontend.h"
    printf '#include "hub_int.h"\n#include "frontend.h"\n' >"$d/src/hub/hub.c"
    printf '#include "hub/frontend.h"\n#include "plexus/native.h"\n#include "plexus/ws.h"\n' \
        >"$d/src/front/native.c"
    : >"$d/app/config.h"
    printf '#include "app/config.h"\n#include "plexus/json.h"\n' >"$d/app/config.c"
    printf '#include <plexus/http.h>\n' >"$d/examples/hello/main.c"
}

self_test() {
    format_check=0
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    good_tree "$tmp/good"
    ok=1
    if ! lint "$tmp/good" >"$tmp/out" 2>&1; then
        echo "self-test: the good tree fails:" && cat "$tmp/out"
        ok=0
    fi
    # FILE|LINE ADDED|what the lint must say. One forbidden thing per case.
    cases='src/core/bad.c|#include "plexus/net.h"|layer core includes layer net
src/core/bad.c|#include "../http/http_int.h"|is internal to src/http
src/core/bad.c|#include "hub_int.h"|does not resolve
src/util/bad.c|#include "plexus/net.h"|layer util includes layer net
src/net/bad.c|#include "plexus/hub.h"|layer net includes layer hub
src/net/bad.c|#include "../hub/hub_int.h"|is internal to src/hub
src/net/bad.c|#include "hub/json.h"|layer net includes layer hub
src/net/bad.c|#include <plexus/http.h>|layer net includes layer http
src/http/bad.c|#include "../hub/json.h"|layer http includes layer hub
src/http/bad.c|#include "plexus/hub.h"|layer http includes layer hub
src/hub/bad.c|#include "../net/net_int.h"|is internal to src/net
src/hub/bad.c|#include "plexus/net.h"|layer hub includes layer net
src/hub/bad.c|#include "plexus/ws.h"|layer hub includes layer ws
src/front/bad.c|#include "hub/hub_int.h"|is internal to src/hub
include/plexus/hub.h|#include "plexus/http.h"|layer hub includes layer http
include/plexus/net.h|#include "plexus/hub.h"|layer net includes layer hub
include/plexus/extra.h|#include "plexus/common.h"|not in the PUBLIC table
src/newdir/x.c|#include "plexus/common.h"|is not in the LAYERS table
app/bad.c|#include "core/alloc.h"|includes only public headers
app/bad.c|#include "../src/hub/json.h"|includes only public headers
examples/hello/bad.c|#include "../../src/core/alloc.h"|includes only public headers
src/core/bad.c|#include "../../app/config.h"|the library never includes
src/core/bad.c|int f(char *b) { return sprintf(b, "x"); }|banned function
tests/integration/10-x.py|unittest.main()|must end with pxtest.main()'
    n=0
    while IFS='|' read -r file line want; do
        n=$((n + 1))
        t="$tmp/case$n"
        cp -a "$tmp/good" "$t"
        mkdir -p "$(dirname "$t/$file")"
        printf '%s\n' "$line" >>"$t/$file"
        if lint "$t" >"$tmp/out" 2>&1; then
            echo "self-test: NOT CAUGHT: $file: $line"
            ok=0
        elif ! grep -qF "$want" "$tmp/out"; then
            echo "self-test: $file: $line: failed without saying \"$want\":" && cat "$tmp/out"
            ok=0
        else
            echo "self-test: caught $file: $line"
        fi
    done <<EOF
$cases
EOF
    # The tables only tighten: an allowance nothing needs any more is an error.
    t="$tmp/stale"
    cp -a "$tmp/good" "$t"
    if PX_LINT_EXTRA_EXCEPTIONS="src/http/ws.c src/net/net_int.h some issue" lint "$t" \
        >"$tmp/out" 2>&1 || ! grep -q "EXCEPTIONS lists src/http/ws.c" "$tmp/out"; then
        echo "self-test: a stale exception is not reported" && cat "$tmp/out"
        ok=0
    fi
    t="$tmp/stale2"
    cp -a "$tmp/good" "$t"
    if PX_LINT_EXTRA_TODAY="hub    http" lint "$t" >"$tmp/out" 2>&1 ||
        ! grep -q "TODAY lets layer hub include layer http" "$tmp/out"; then
        echo "self-test: a stale TODAY entry is not reported" && cat "$tmp/out"
        ok=0
    fi
    if [ $ok = 1 ]; then
        echo "lint self-test ok ($n forbidden cases caught, stale allowances reported)"
        return 0
    fi
    return 1
}

if [ "${1:-}" = --self-test ]; then
    self_test
    exit $?
fi
if lint "${1:?usage: tests/lint.sh ROOT | --self-test}"; then
    echo "lint ok"
    exit 0
fi
exit 1
