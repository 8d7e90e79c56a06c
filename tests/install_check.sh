#!/bin/sh
# The public API is enough: install the build into a scratch prefix, then compile and link
# every example with nothing but what was installed (headers from include/plexus, flags from
# pkg-config). An example that needs a header of src/ fails here.
#   tests/install_check.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$(cd "$2" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
export PKG_CONFIG_PATH=$(dirname "$(find "$tmp/prefix" -name libplexus.pc | head -n 1)")
cc=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
cflags=$(pkg-config --cflags libplexus)
libs=$(pkg-config --static --libs libplexus)
case "$cflags" in *"$src"*) echo "install_check: pkg-config points into the source tree: $cflags"; exit 1 ;; esac
n=0
for dir in "$src"/examples/*/; do
    name=$(basename "$dir")
    set -- "$dir"*.c
    [ -e "$1" ] || continue
    [ -e "$dir/package.json" ] && continue # a Node app: its C goes into the addon (below)
    # -I only the installed headers; the library archive as installed.
    if ! "$cc" -std=c11 -D_GNU_SOURCE -O1 -Wall -Werror $cflags "$@" -o "$tmp/$name" \
        "$(pkg-config --variable=libdir libplexus)/libplexus.a" $libs -lpthread -lm; then
        echo "install_check: examples/$name does not build against the installed headers"
        exit 1
    fi
    n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "install_check: no example found"; exit 1; }
# The Node addon builds from an installed plexus too (PLEXUS_PKG_CONFIG: a prebuilt
# library instead of the source tree), with a user's own C routes.
if command -v node >/dev/null; then
    if ! PLEXUS_PKG_CONFIG="$PKG_CONFIG_PATH/libplexus.pc" CC="$cc" node "$src/bindings/node/build.js" \
        --out "$tmp/api.node" "$src/examples/passenger-api/api.c"; then
        echo "install_check: the Node addon does not build against the installed library"
        exit 1
    fi
    echo "install_check: the Node addon (with examples/passenger-api/api.c) built from the installed library"
fi
echo "install_check: $n example(s) built from the installed headers and library"
