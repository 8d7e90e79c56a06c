#!/usr/bin/python3
"""Count a ctest run and check its skips (called by tests/run.sh).

    results.py README.md JUNIT.xml

JUNIT.xml is what `ctest --output-junit` wrote (with the whole output of every
test). A test counts as
  - passed:  it ran and passed;
  - skipped: it exited with the skip code (77) and every "px-skip: <test>: <reason>"
             line it printed names an allowed reason, "[<id>] ...", with <id> in
             the "Allowed skips" table of README.md;
  - failed:  everything else: a failure, a skip without a px-skip line or with a
             reason not on the allowlist, a test ctest did not run or disabled.
Prints each skip, each refused skip with the reason, and last a line
"counts PASSED FAILED SKIPPED".
"""

import re
import sys
import xml.etree.ElementTree as ET

SKIP_RE = re.compile(r"^px-skip: (.*?): \[([A-Za-z0-9_-]+)\]")


def allowlist(readme):
    """Ids in the first column of the table under the "Allowed skips" heading."""
    ids = set()
    inside = False
    with open(readme, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                inside = re.match(r"^#+\s+Allowed skips\s*$", line) is not None
                continue
            m = re.match(r"^\|\s*`([A-Za-z0-9_-]+)`\s*\|", line)
            if inside and m:
                ids.add(m.group(1))
    return ids


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: results.py README.md JUNIT.xml")
    allowed = allowlist(sys.argv[1])
    if not allowed:
        sys.exit("results.py: no \"Allowed skips\" table in %s" % sys.argv[1])
    passed = failed = skipped = 0
    for case in ET.parse(sys.argv[2]).getroot().iter("testcase"):
        name = case.get("name")
        status = case.get("status")
        out = case.findtext("system-out") or ""
        if status == "run":
            passed += 1
            continue
        if status == "fail":
            failed += 1
            continue
        skip = case.find("skipped")
        if status != "notrun" or skip is None or "SKIP_RETURN_CODE" not in (skip.get("message") or ""):
            failed += 1
            print("not run: %s (%s): counted as failed" % (name, status), file=sys.stderr)
            continue
        lines = [l for l in out.splitlines() if l.startswith("px-skip: ")]
        bad = []
        for line in lines:
            m = SKIP_RE.match(line)
            if not m or m.group(2) not in allowed:
                bad.append(line)
        if not lines:
            bad.append("(skipped without a px-skip line: use skip_allowed / px_skip)")
        if bad:
            failed += 1
            for line in bad:
                print("skip not allowed: %s: %s" % (name, line), file=sys.stderr)
            print("  (allowed reasons: %s; see tests/README.md, \"Allowed skips\")"
                  % ", ".join(sorted(allowed)), file=sys.stderr)
        else:
            skipped += 1
            for line in lines:
                print("skipped: %s: %s" % (name, line[len("px-skip: "):]))
    print("counts %d %d %d" % (passed, failed, skipped))


if __name__ == "__main__":
    main()
