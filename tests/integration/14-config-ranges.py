#!/usr/bin/python3
"""14-config-ranges: every numeric option has a range (issue 10, item 14).

`--history-limit-max 0` used to be accepted (WebSocket history then returned
everything and every HTTP history call got 400 "limit must be 1..0"). Now each
numeric option's range is one table in src/cli/config.c, printed by --help as
"(MIN..MAX)", and a value outside it exits 2 with one line naming the option,
whichever source it came from (flag, PLEXUS_* environment variable, config
file). Options that bound each other are checked once all sources are in:
--max-header-size >= --max-request-line, --max-payload <= --ws-max-message.
"""

import json
import os
import re

import pxtest
from pxtest import PxTestCase, run_plexus

RANGE_RE = re.compile(r"^\s+--([a-z][a-z0-9-]*) ([A-Z]+)\s.*\(([0-9]+[A-Za-z]*)\.\.([0-9]+[A-Za-z]*)\)"
                      r"(?: \[default: [^\]]*\])?$")
SIZE_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}

# Every numeric option and its kind, as documented; --help must give each a range.
NUMERIC = {
    "workers": "N", "max-connections": "N", "idle-timeout": "DURATION", "output-cap": "SIZE",
    "shutdown-timeout": "DURATION", "max-body": "SIZE", "max-request-line": "SIZE",
    "max-header-size": "SIZE", "max-headers": "N", "header-timeout": "DURATION",
    "keepalive-timeout": "DURATION", "max-requests": "N", "ws-max-message": "SIZE",
    "ws-ping-interval": "DURATION", "history-size": "N", "history-ttl": "DURATION",
    "max-payload": "SIZE", "max-channels": "N", "publish-rate": "N", "history-limit-max": "N",
}


def base_units(text, kind):
    """'64KiB' -> 65536 (bytes), '1h' -> 3600000 (ms), '0' -> 0."""
    m = re.fullmatch(r"([0-9]+)([A-Za-z]*)", text)
    n, unit = int(m.group(1)), m.group(2)
    if kind == "SIZE":
        return n * SIZE_UNITS[unit]
    if kind == "DURATION":
        return n * DURATION_UNITS[unit or "s"]
    assert unit == "", text
    return n


def spelled(value, kind):
    """A value in base units, written so the server reads it back exactly."""
    return "%dms" % value if kind == "DURATION" else str(value)


def env_name(flag):
    return "PLEXUS_" + flag.upper().replace("-", "_")


class Ranges(PxTestCase):
    def setUp(self):
        super().setUp()
        self.require_local()
        self.data = ["--data-dir", os.path.join(self.out_dir, "data")]
        help_text = run_plexus(["--help"]).stdout
        self.ranges = {}
        for line in help_text.splitlines():
            m = RANGE_RE.match(line)
            if m:
                name, kind, lo, hi = m.groups()
                self.ranges[name] = (kind, lo, hi)

    def assertRefused(self, proc, *names):
        err = proc.stderr.strip()
        self.assertEqual(proc.returncode, 2, "stderr: %r" % proc.stderr)
        self.assertEqual(proc.stdout, "")
        self.assertNotIn("\n", err, "message is not one line: %r" % proc.stderr)
        for n in names:
            self.assertIn(n, err)

    def run_with(self, source, name, value):
        """plexus with option `name` = `value` from `source` (flag, env or file)."""
        args = ["--listen", "127.0.0.1:0"] + self.data
        if source == "flag":
            return run_plexus(args + ["--" + name, value])
        if source == "env":
            return run_plexus(args, env={env_name(name): value})
        path = os.path.join(self.out_dir, "%s.json" % name)
        with open(path, "w") as f:
            json.dump({name: value}, f)
        return run_plexus(args + ["--config", path])

    def test_history_limit_max_zero(self):
        """The reported case, from each source."""
        for source in ("flag", "env", "file"):
            with self.subTest(source=source):
                p = self.run_with(source, "history-limit-max", "0")
                self.assertRefused(p, "history-limit-max", "0", "1..100000")

    def test_help_documents_every_range(self):
        missing = set(NUMERIC) - set(self.ranges)
        self.assertFalse(missing, "numeric options without a range in --help: %s" % sorted(missing))
        for name, kind in NUMERIC.items():
            self.assertEqual(self.ranges[name][0], kind, name)

    def test_out_of_range_is_refused_from_every_source(self):
        for name, (kind, lo, hi) in sorted(self.ranges.items()):
            lo_v, hi_v = base_units(lo, kind), base_units(hi, kind)
            bad = [spelled(hi_v + 1, kind)]
            if lo_v > 0:
                bad.append(spelled(lo_v - 1, kind))
            for value in bad:
                for source in ("flag", "env", "file"):
                    with self.subTest(option=name, value=value, source=source):
                        p = self.run_with(source, name, value)
                        self.assertRefused(p, name, value)

    def test_cross_field(self):
        p = run_plexus(["--listen", "127.0.0.1:0", "--max-request-line", "8KiB",
                        "--max-header-size", "4KiB"] + self.data)
        self.assertRefused(p, "--max-header-size", "--max-request-line")
        # Through a default, and from the environment.
        p = run_plexus(["--listen", "127.0.0.1:0"] + self.data,
                       env={"PLEXUS_MAX_PAYLOAD": "2MiB"})
        self.assertRefused(p, "--max-payload", "--ws-max-message")
        p = run_plexus(["--listen", "127.0.0.1:0", "--ws-max-message", "4KiB"] + self.data)
        self.assertRefused(p, "--max-payload", "--ws-max-message")

    def start_at(self, pick):
        args = ["--workers", "1"] + self.data
        for name, (kind, lo, hi) in sorted(self.ranges.items()):
            if name == "workers":
                continue
            args += ["--" + name, pick(lo, hi)]
        return self.start_server(*args)

    def test_bounds_are_accepted(self):
        """Every option at its minimum, then at its maximum (workers aside):
        the server starts and serves."""
        for pick in (lambda lo, hi: lo, lambda lo, hi: hi):
            srv = self.start_at(pick)
            # One header only: --max-headers may be 1.
            r = srv.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(r.status, 200, r)
            self.assertStopsCleanly(srv)


if __name__ == "__main__":
    pxtest.main()
