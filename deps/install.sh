#!/bin/sh
# Install the Debian packages listed in the files given as arguments when they
# are missing. As root: apt-get, non-interactive. As another user: print the
# exact command to run and fail, so nothing is half-installed silently.
set -eu
missing=""
for list in "$@"; do
    while read -r pkg cmd; do
        case "$pkg" in '' | '#'*) continue ;; esac
        if [ -n "${cmd:-}" ] && command -v "$cmd" >/dev/null 2>&1; then
            continue
        fi
        # ... or, when it is an absolute path, a file whose presence counts as installed.
        case "${cmd:-}" in /*) [ -e "$cmd" ] && continue ;; esac
        if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            continue
        fi
        missing="$missing $pkg"
    done <"$list"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "plexus: missing Debian packages:$missing" >&2
    echo "run: sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y$missing" >&2
    exit 1
fi
echo "plexus: installing Debian packages:$missing" >&2
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
