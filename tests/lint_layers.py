#!/usr/bin/python3
"""Layering lint (run by tests/lint.sh): who may include what.

    lint_layers.py ROOT

Every #include "..." (and #include <plexus/...>) in src/, include/plexus/,
app/, examples/ and bindings/ is resolved to a file of the tree: "plexus/x.h"
to include/plexus/x.h; any other name relative to the including file's folder
first ("hub_int.h", "../hub/hub_int.h"), then relative to the include roots
src/, include/ and the root ("hub/hub_int.h", "app/config.h"). The header then
has a layer: its folder for src/<layer>/..., the PUBLIC table for
include/plexus/. Rules:

  1. A file of layer L includes only headers of L and of the layers LAYERS
     gives L (plus TODAY, until issue 11 moves the code that needs it).
  2. A *_int.h header is included only from its own folder.
  3. app/, examples/ and bindings/ include only public headers (plexus/...)
     and files of their own folder.
  4. Every folder of src/ is in LAYERS, every header of include/plexus/ is in
     PUBLIC, and every quoted include resolves to a file of the tree.

EXCEPTIONS lists the single includes that break a rule today, each to be
removed by the issue named; TODAY and EXCEPTIONS entries that nothing needs
any more are errors, so the tables only tighten. Tests (tests/) may include
anything.
"""

import os
import re
import sys

# A file in src/<layer>/ may include headers of its own layer and of the layers
# after it. Lowest layer first; adding a folder is one line.
LAYERS = """
core
util   core
net    core util
http   core util net
ws     core util net http
hub    core util
front  core util net http ws hub
cli    core util net http ws hub front
"""

# Also allowed for now (an entry nothing uses any more is an error: remove it).
TODAY = """
"""

# Public headers, include/plexus/<name>, by layer (version.h is generated).
PUBLIC = """
core   common.h buf.h loop.h worker.h log.h metrics.h version.h
util   json.h
net    net.h tls.h sniff.h
http   http.h fetch.h
ws     ws.h
hub    hub.h
front  native.h pusher.h
cli    app.h
"""

# Programs built on the library: public headers and their own folder only.
PUBLIC_ONLY = ("app", "examples", "bindings")

# Single includes that break a rule today: including file -> included file
# (paths from the root). Each is removed by the issue that fixes it; an entry
# whose include is gone is an error: remove it.
EXCEPTIONS = """
"""

SCANNED = ("src", "include", "app", "examples", "bindings")
SOURCE_RE = re.compile(r"\.(c|h)$")
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*(?:"([^"]+)"|<(plexus/[^>]+)>)')


def table(text):
    rows = {}
    for line in text.strip().splitlines():
        words = line.split()
        rows[words[0]] = words[1:]
    return rows


def load():
    layers = table(LAYERS)
    # The self-test (lint.sh --self-test) adds an allowance to prove a stale one is reported.
    today = table(TODAY + "\n" + os.environ.get("PX_LINT_EXTRA_TODAY", ""))
    public = {}
    for layer, names in table(PUBLIC).items():
        for n in names:
            public[n] = layer
    exceptions = set()
    # The self-test adds one to prove a stale exception is reported.
    for line in (EXCEPTIONS + "\n" + os.environ.get("PX_LINT_EXTRA_EXCEPTIONS", "")).strip().splitlines():
        words = line.split()
        exceptions.add((words[0], words[1]))
    return layers, today, public, exceptions


def tree_files(root):
    files = set()
    for top in SCANNED:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = [d for d in dirnames if d != "node_modules" and not d.startswith(".")]
            for f in filenames:
                files.add(os.path.relpath(os.path.join(dirpath, f), root))
    return files


def layer_of(path, public):
    """(kind, layer) of a tree path: ("src", L), ("public", L), ("program", top
    folder) or (None, None) for a file outside the layered tree."""
    parts = path.split("/")
    if parts[0] == "src" and len(parts) >= 3:
        return "src", parts[1]
    if parts[0] == "include" and len(parts) == 3 and parts[1] == "plexus":
        return "public", public.get(parts[2], "?")
    if parts[0] in PUBLIC_ONLY:
        return "program", "/".join(parts[:2]) if parts[0] == "examples" else parts[0]
    return None, None


def resolve(name, including, files, public):
    """The tree path an include names, or None."""
    if name.startswith("plexus/"):
        base = name[len("plexus/"):]
        if "include/" + name in files or base in public:  # version.h is generated
            return "include/" + name
        return None
    here = os.path.dirname(including)
    for base in (here, "src", "include", ""):
        p = os.path.normpath(os.path.join(base, name))
        if p in files:
            return p
    return None


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: lint_layers.py ROOT")
    root = sys.argv[1]
    layers, today, public, exceptions = load()
    files = tree_files(root)
    errors = []
    used_exceptions = set()
    used_today = set()

    for path in sorted(files):
        kind, layer = layer_of(path, public)
        if kind == "src" and layer not in layers:
            errors.append("%s: folder src/%s/ is not in the LAYERS table (tests/lint_layers.py)"
                          % (path, layer))
        if kind == "public" and layer == "?" and SOURCE_RE.search(path):
            errors.append("%s: public header not in the PUBLIC table (tests/lint_layers.py)" % path)

    for path in sorted(files):
        if not SOURCE_RE.search(path):
            continue
        kind, layer = layer_of(path, public)
        if kind is None:
            continue
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        for no, line in enumerate(lines, 1):
            m = INCLUDE_RE.match(line)
            if not m:
                continue
            name = m.group(1) or m.group(2)
            where = "%s:%d: #include \"%s\"" % (path, no, name)
            target = resolve(name, path, files, public)
            if target is None:
                errors.append("%s: does not resolve to a file of the tree" % where)
                continue
            if (path, target) in exceptions:
                used_exceptions.add((path, target))
                continue
            tkind, tlayer = layer_of(target, public)
            base = os.path.basename(target)
            if base.endswith("_int.h") and os.path.dirname(target) != os.path.dirname(path):
                errors.append("%s: %s is internal to %s/" % (where, target, os.path.dirname(target)))
                continue
            if kind == "program":
                if tkind != "public" and not target.startswith(layer + "/"):
                    errors.append("%s: %s/ includes only public headers (plexus/...) and its own "
                                  "files, not %s" % (where, layer, target))
                continue
            if tkind == "program":
                errors.append("%s: the library never includes %s" % (where, target))
                continue
            if tlayer == layer:
                continue
            if tlayer in layers.get(layer, []):
                continue
            if tlayer in today.get(layer, []):
                used_today.add((layer, tlayer))
                continue
            allowed = layers.get(layer, []) + today.get(layer, [])
            errors.append("%s: layer %s includes layer %s (%s); it may include %s"
                          % (where, layer, tlayer, target, " ".join(allowed) or "nothing"))

    for path, target in sorted(exceptions - used_exceptions):
        errors.append("EXCEPTIONS lists %s -> %s, which is gone: remove the line "
                      "(tests/lint_layers.py)" % (path, target))
    for layer, names in sorted(today.items()):
        for t in names:
            if (layer, t) not in used_today:
                errors.append("TODAY lets layer %s include layer %s, which nothing does any "
                              "more: remove it (tests/lint_layers.py)" % (layer, t))

    for e in errors:
        print("lint: " + e, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
