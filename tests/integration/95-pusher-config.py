#!/usr/bin/python3
"""95-pusher-config: Pusher apps from flags and the config file (issue 14).

`--pusher-app ID:KEY:SECRET` (repeatable, also PLEXUS_PUSHER_APP) and the config file's
"pusher-apps" (an array of app objects with their options; also --pusher-apps / PLEXUS_PUSHER_APPS
as JSON text). Every mistake exits 2 with one line naming the flag or the app and its key:
a malformed flag, a missing field, an unknown key, a value of the wrong type or out of range,
a webhook URL that is not http(s), a bad channel-prefix, two apps with the same id, key or
prefix. A valid set starts and serves each app at /app/{key}.
"""

import json
import os

import pxtest
from pxtest import PxTestCase, run_plexus


class PusherConfig(PxTestCase):
    def config(self, apps, extra=None):
        path = os.path.join(self.out_dir, "plexus.json")
        doc = {"pusher-apps": apps}
        doc.update(extra or {})
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def assertExit2(self, args, pattern, env=None):
        r = run_plexus(args, env=env)
        self.assertEqual(r.returncode, 2, r.stderr)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertRegex(lines[0], pattern)

    def test_flag_errors(self):
        self.assertExit2(["--pusher-app", "nocolons"], r"--pusher-app 'nocolons' is not ID:KEY:SECRET")
        self.assertExit2(["--pusher-app", "1:k:"], r"--pusher-app '1:k:' is not ID:KEY:SECRET")
        self.assertExit2(["--pusher-app", "a b:k:s"], r"--pusher-app .*letters, digits")
        self.assertExit2(["--pusher-app", "1:k:s", "--pusher-app", "1:k2:s"], r"same id")
        self.assertExit2(["--pusher-app", "1:k:s", "--pusher-app", "2:k:s"], r"same key")
        self.assertExit2([], r"PLEXUS_PUSHER_APP.*not ID:KEY:SECRET|--pusher-app 'x' is not",
                         env={"PLEXUS_PUSHER_APP": "x"})

    def test_file_errors(self):
        cases = [
            ([{"id": "1", "key": "k"}], r"app 1: \"id\", \"key\" and \"secret\" are required"),
            ([{"id": "1", "key": "k", "secret": "s", "colour": 1}], r"app 1: unknown key \"colour\""),
            ([{"id": "1", "key": "k", "secret": "s", "max-connections": "many"}],
             r"app 1: \"max-connections\": expected a non-negative integer"),
            ([{"id": "1", "key": "k", "secret": "s", "max-channel-name-length": 500}],
             r"\"max-channel-name-length\": out of range \(1\.\.200\)"),
            ([{"id": "1", "key": "k", "secret": "s", "max-event-payload": "10 parsecs"}],
             r"\"max-event-payload\": unknown unit"),
            ([{"id": "1", "key": "k", "secret": "s", "activity-timeout": "0s"}],
             r"\"activity-timeout\": at least 1s"),
            ([{"id": "1", "key": "k", "secret": "s", "client-events": "yes"}],
             r"\"client-events\": expected true or false"),
            ([{"id": "1", "key": "k", "secret": "s", "webhooks": [{"url": "ftp://x/"}]}],
             r"webhook URL \"ftp://x/\" is not http"),
            ([{"id": "1", "key": "k", "secret": "s", "webhooks": [{"url": "http://x/", "events": ["nope"]}]}],
             r"webhook \"events\": names are channel_occupied"),
            ([{"id": "1", "key": "k", "secret": "s", "channel-prefix": "bad"}],
             r"channel-prefix \"bad\" must be empty or .* ending with ':'"),
            ([{"id": "1", "key": "k", "secret": "s"}, {"id": "2", "key": "k2", "secret": "s", "channel-prefix": ""}],
             r"same channel-prefix"),
            ({"id": "1"}, r"expected an array of app objects"),
        ]
        for apps, pattern in cases:
            with self.subTest(apps=apps):
                self.assertExit2(["--config", self.config(apps)], pattern)
        self.assertExit2(["--pusher-apps", "[{"], r"pusher-apps: invalid JSON")

    def test_help_lists_the_options(self):
        r = run_plexus(["--help"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("--pusher-app ID:KEY:SECRET", r.stdout)
        self.assertIn("--pusher-apps JSON", r.stdout)

    def test_valid_apps_start(self):
        apps = [{"id": "1", "key": "one", "secret": "s1", "max-connections": 10, "activity-timeout": "20s",
                 "max-event-payload": "10KiB", "allowed-origins": ["https://a.example"],
                 "webhooks": [{"url": "http://127.0.0.1:9/h", "events": ["channel_occupied"],
                               "channel-prefix": "presence-"}]}]
        srv = self.start_server("--config", self.config(apps), "--pusher-app", "2:two:s2")
        self.assertRegex(srv.log_since_start(), r"Pusher protocol: 2 app\(s\)")
        for key, want in (("one", b'activity_timeout\\":20'), ("two", b'activity_timeout\\":30'),
                          ("three", b'"code":4001')):
            c = srv.client()
            c.send(("GET /app/%s?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
            data = b""
            while want not in data:
                chunk = c.sock.recv(4096)
                self.assertTrue(chunk, "closed before %r: %r" % (want, data))
                data += chunk
            self.assertIn(b"101 Switching Protocols", data)
            c.sock.close()
        self.assertStopsCleanly(srv)


if __name__ == "__main__":
    pxtest.main()
