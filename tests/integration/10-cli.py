#!/usr/bin/python3
"""10-cli: the command line. --help documents every flag with its default,
--version, bad flags and values exit 2 with one line naming the culprit, the
JSON config file, and the precedence flags > environment > file > defaults
(observed through the "starting with N worker(s)" start-up line)."""

import json
import os
import re

import pxtest
from pxtest import PxTestCase, run_plexus

# Flags whose value has no fixed default (documented in words or simply optional).
NO_DEFAULT = {"static", "log-file", "config"}

# The foundation's flags and their documented defaults. Layers added later may
# add flags; each must still show a default (checked generically below).
EXPECTED_DEFAULTS = {
    "listen": "127.0.0.1:8080",
    "workers": "0",
    "max-connections": "10000",
    "idle-timeout": "60s",
    "output-cap": "4MiB",
    "shutdown-timeout": "10s",
    "log-level": "info",
    "log-format": "text",
}
EXPECTED_FLAGS = set(EXPECTED_DEFAULTS) | {"log-file", "config", "help", "version"}

HELP_LINE = re.compile(r"^\s+(?:-\w, )?--([a-z][a-z0-9-]*)(?: ([A-Z][A-Z_]*))?\s+(.*?)\s*$")
DEFAULT_RE = re.compile(r"\[default: ([^\]]*)\]$")
WORKERS_RE = re.compile(r"starting with (\d+) worker\(s\)")


def parse_help(text):
    """{flag: (metavar or None, help text, default or None)}"""
    flags = {}
    for line in text.splitlines():
        m = HELP_LINE.match(line)
        if not m:
            continue
        name, meta, rest = m.groups()
        d = DEFAULT_RE.search(rest)
        flags[name] = (meta, rest, d.group(1) if d else None)
    return flags


def env_name(flag):
    return "PLEXUS_" + flag.upper().replace("-", "_")


class Cli(PxTestCase):
    def setUp(self):
        super().setUp()
        self.require_local()

    def assertUsageError(self, proc, *names):
        """Exit 2, nothing on stdout, one line on stderr naming every `names`."""
        err = proc.stderr.strip()
        self.assertEqual(proc.returncode, 2, "stderr: %r" % proc.stderr)
        self.assertEqual(proc.stdout, "")
        self.assertTrue(err, "no message on stderr")
        self.assertNotIn("\n", err, "message is not one line: %r" % proc.stderr)
        for n in names:
            self.assertIn(n, err)

    # ---- help and version -------------------------------------------------------

    def test_help(self):
        for flag in ("--help", "-h"):
            p = run_plexus([flag])
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr, "")
            flags = parse_help(p.stdout)
            missing = EXPECTED_FLAGS - set(flags)
            self.assertFalse(missing, "flags missing from --help: %s" % sorted(missing))
            for name, want in EXPECTED_DEFAULTS.items():
                self.assertEqual(flags[name][2], want, "--%s default" % name)
            # Every value flag of the foundation shows its default (secrets and
            # the like added by other layers may legitimately have none).
            for name in EXPECTED_FLAGS - NO_DEFAULT - {"help", "version"}:
                self.assertIsNotNone(flags[name][2], "--%s shows no [default: ...]" % name)
            # The environment and config-file routes are documented too.
            self.assertIn("PLEXUS_", p.stdout)
            self.assertIn("--config", p.stdout)

    def test_version(self):
        for flag in ("--version", "-V"):
            p = run_plexus([flag])
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertRegex(p.stdout.strip(), r"^plexus \d+\.\d+\.\d+\S*$")

    def _documented_defaults(self):
        flags = parse_help(run_plexus(["--help"]).stdout)
        out = {}
        for name, (meta, _, default) in flags.items():
            if meta is None or default is None or name in ("listen", "workers"):
                continue
            out[name] = default
        self.assertTrue(out)
        return out

    def test_documented_defaults_are_accepted_as_flags(self):
        """Every default printed by --help parses when given back as a flag."""
        args = []
        for name, value in sorted(self._documented_defaults().items()):
            args += ["--%s" % name, value]
        srv = self.start_server("--workers", "1", *args)
        self.assertEqual(srv.http("GET", "/healthz").status, 200)
        self.assertStopsCleanly(srv)

    def test_documented_defaults_are_accepted_from_env(self):
        env = {env_name(n): v for n, v in self._documented_defaults().items()}
        env["PLEXUS_WORKERS"] = "1"
        env["PLEXUS_LISTEN"] = "127.0.0.1:0"
        srv = self.start_server(listen=(), env=env)
        self.assertEqual(srv.http("GET", "/healthz").status, 200)
        self.assertStopsCleanly(srv)

    # ---- errors -------------------------------------------------------------------

    def test_unknown_flag(self):
        p = run_plexus(["--listen", "127.0.0.1:0", "--bogus-flag", "1"])
        self.assertUsageError(p, "--bogus-flag")
        p = run_plexus(["--listen", "127.0.0.1:0", "--bogus-flag=1"])
        self.assertUsageError(p, "--bogus-flag")
        p = run_plexus(["--listen", "127.0.0.1:0", "stray"])
        self.assertUsageError(p, "stray")
        p = run_plexus(["--listen", "127.0.0.1:0", "-x"])
        self.assertUsageError(p, "-x")

    def test_bad_values(self):
        cases = [
            (["--workers", "abc"], "--workers", "abc"),
            (["--workers", "-1"], "--workers", "-1"),
            (["--workers", "4294967296"], "--workers", None),
            (["--workers=12x"], "--workers", "12x"),
            (["--max-connections", "many"], "--max-connections", "many"),
            (["--idle-timeout", "5x"], "--idle-timeout", "5x"),
            (["--shutdown-timeout", "soon"], "--shutdown-timeout", "soon"),
            (["--max-body", "1ZB"], "--max-body", "1ZB"),
            (["--output-cap", "-5"], "--output-cap", "-5"),
            (["--log-format", "xml"], "--log-format", "xml"),
            (["--log-level", "loud"], "--log-level", "loud"),
            (["--listen", "nonsense"], "--listen", "nonsense"),
            (["--listen", "127.0.0.1:99999"], "--listen", "127.0.0.1:99999"),
            (["--listen", "127.0.0.1:"], "--listen", None),
            (["--listen", "fd:notanumber"], "--listen", "fd:notanumber"),
            (["--workers"], "--workers", None),  # missing value
        ]
        for args, flag, value in cases:
            with self.subTest(args=args):
                listen = [] if flag == "--listen" else ["--listen", "127.0.0.1:0"]
                p = run_plexus(listen + args)
                self.assertUsageError(p, *([flag] + ([value] if value else [])))

    def test_too_many_workers(self):
        p = run_plexus(["--listen", "127.0.0.1:0", "--workers", "100000"])
        self.assertUsageError(p, "--workers")

    def test_bad_env(self):
        cases = [
            ("PLEXUS_WORKERS", "abc"),
            ("PLEXUS_IDLE_TIMEOUT", "5x"),
            ("PLEXUS_MAX_BODY", "1ZB"),
            ("PLEXUS_LOG_FORMAT", "xml"),
        ]
        for var, value in cases:
            with self.subTest(var=var):
                p = run_plexus(["--listen", "127.0.0.1:0"], env={var: value})
                self.assertUsageError(p, var, value)
        # An address from the environment is checked like a flag.
        p = run_plexus([], env={"PLEXUS_LISTEN": "nonsense"})
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("nonsense", p.stderr)

    # ---- config file ----------------------------------------------------------------

    def write_config(self, content, name="plexus.json"):
        path = os.path.join(self.out_dir, name)
        with open(path, "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path

    def workers_of(self, srv):
        m = WORKERS_RE.search(srv.log_since_start())
        self.assertIsNotNone(m, "no 'starting with N worker(s)' line")
        return int(m.group(1))

    def test_config_file(self):
        path = self.write_config({"listen": ["127.0.0.1:0"], "workers": 3, "idle-timeout": "30s",
                                  "max-connections": 100, "log-level": "info"})
        srv = self.start_server("--config", path, listen=())
        self.assertEqual(self.workers_of(srv), 3)
        self.assertEqual(len(srv.listeners), 1)
        self.assertEqual(srv.http("GET", "/healthz").status, 200)
        self.assertStopsCleanly(srv)

    def test_config_file_forms(self):
        # listen as a single string; --config=PATH; PLEXUS_CONFIG.
        path = self.write_config({"listen": "127.0.0.1:0", "workers": 2})
        srv = self.start_server("--config=" + path, listen=())
        self.assertEqual(self.workers_of(srv), 2)
        self.assertStopsCleanly(srv)
        srv = self.start_server(listen=(), env={"PLEXUS_CONFIG": path})
        self.assertEqual(self.workers_of(srv), 2)
        self.assertStopsCleanly(srv)

    def test_config_errors(self):
        cases = [
            ('{"workers": 2,', []),  # truncated JSON
            ("not json at all", []),
            ("[1, 2]", []),  # not an object
            ('{"workers": "abc"}', ["workers", "abc"]),
            ('{"workers": -3}', ["workers"]),
            ('{"idle-timeout": "5x"}', ["idle-timeout"]),
            ('{"listen": 5}', ["listen"]),
            ('{"listen": ["127.0.0.1:0", 7]}', ["listen"]),
            ('{"bogus": 1}', ["bogus"]),
            ('{"config": "other.json"}', ["config"]),
            ('{"log-format": "xml"}', ["log-format", "xml"]),
        ]
        for i, (content, names) in enumerate(cases):
            with self.subTest(config=content):
                path = self.write_config(content, "bad%d.json" % i)
                p = run_plexus(["--config", path, "--listen", "127.0.0.1:0"])
                self.assertUsageError(p, path, *names)
        missing = os.path.join(self.out_dir, "missing.json")
        p = run_plexus(["--config", missing, "--listen", "127.0.0.1:0"])
        self.assertUsageError(p, missing)

    def test_config_bad_listen_address(self):
        path = self.write_config({"listen": ["nonsense"]})
        p = run_plexus(["--config", path])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("nonsense", p.stderr)

    # ---- precedence: flags > environment > file > defaults ----------------------------

    def test_precedence_workers(self):
        path = self.write_config({"workers": 3})
        cases = [
            ("flag", ["--config", path, "--workers", "1"], {"PLEXUS_WORKERS": "2"}, 1),
            ("env", ["--config", path], {"PLEXUS_WORKERS": "2"}, 2),
            ("file", ["--config", path], {"PLEXUS_WORKERS": None}, 3),
            ("default", [], {"PLEXUS_WORKERS": None}, os.sysconf("SC_NPROCESSORS_ONLN")),
        ]
        for source, args, env, want in cases:
            with self.subTest(source=source):
                srv = self.start_server(*args, env=env)
                self.assertEqual(self.workers_of(srv), want)
                self.assertStopsCleanly(srv)

    def test_precedence_listen(self):
        """A list option is replaced as a whole by a higher source, never merged."""
        sock = os.path.join(self.short_dir(), "cfg.sock")
        path = self.write_config({"listen": ["unix:" + sock], "workers": 1})
        # File alone.
        srv = self.start_server("--config", path, listen=(), env={"PLEXUS_LISTEN": None})
        self.assertEqual(srv.listeners, ["unix:" + sock])
        self.assertEqual(srv.http("GET", "/healthz").status, 200)
        self.assertStopsCleanly(srv)
        # Environment over file.
        srv = self.start_server("--config", path, listen=(),
                                env={"PLEXUS_LISTEN": "127.0.0.1:0"})
        self.assertEqual(len(srv.listeners), 1, srv.listeners)
        self.assertTrue(srv.listeners[0].startswith("127.0.0.1:"), srv.listeners)
        self.assertStopsCleanly(srv)
        # Flag over file, and flag over environment.
        for env in ({"PLEXUS_LISTEN": None}, {"PLEXUS_LISTEN": "unix:" + sock}):
            srv = self.start_server("--config", path, env=env, expect_listeners=1)
            # ready at the first listen line; give a merged second one time to show
            srv.wait_log(r"listening on 127\.0\.0\.1:")
            self.assertStopsCleanly(srv)
            listeners = pxtest.LISTEN_RE.findall(srv.log_since_start())
            # --listen replaces the addresses of the file / PLEXUS_LISTEN, never appends.
            self.assertEqual(len(listeners), 1, listeners)
            self.assertTrue(listeners[0].startswith("127.0.0.1:"), listeners)
            self.assertFalse(os.path.exists(sock))

if __name__ == "__main__":
    pxtest.main()
