#!/usr/bin/python3
"""32-http-static: static files (--static DIR).

MIME types, index.html, the /dir -> /dir/ redirect, validators (ETag with
If-None-Match, Last-Modified with If-Modified-Since -> 304), single ranges
(206/416, multiple ranges -> 200), If-Range, a 5 MiB file served intact
(sendfile), HEAD, special files, and above all path traversal: raw requests
with dot segments however they are spelled, encoded slashes, NUL, and
symlinks leaving the root are all refused (403 or 404), never with the secret's
bytes; symlinks that stay inside the root work.
"""

import email.utils
import hashlib
import os
import shutil
import socket
import tempfile
import time

import pxtest
from pxtest import PxTestCase

SECRET = b"TOPSECRET-31337-do-not-serve\n"
FILES = {
    "index.html": (b"<!doctype html><title>root index</title>\n", "text/html"),
    "style.css": (b"body { color: red }\n", "text/css"),
    "app.js": (b"console.log('hi');\n", "text/javascript"),
    "data.json": (b'{"k": [1, 2, 3]}\n', "application/json"),
    "img.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image/png"),
    "logo.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"/>\n', "image/svg+xml"),
    "blob.zzunknown": (b"\x00\x01\x02 unknown\n", "application/octet-stream"),
    "noext": (b"no extension\n", "application/octet-stream"),
    "UPPER.HTML": (b"<p>upper</p>\n", "text/html"),
    "digits.txt": (b"0123456789abcdefghijklmnopqrstuvwxyz", "text/plain"),
    "dir/index.html": (b"<p>dir index</p>\n", "text/html"),
    "dir/page.txt": (b"a page in dir\n", "text/plain"),
    "dir/sub/deep.txt": (b"deep\n", "text/plain"),
    "empty.txt": (b"", "text/plain"),
    "with space.txt": (b"spaced\n", "text/plain"),
}
BIG_SIZE = 5 * 1024 * 1024


class StaticBase(PxTestCase):
    @classmethod
    def setUpClass(cls):
        # base/secret, base/outside/secret are outside the root base/www.
        cls.base = tempfile.mkdtemp(prefix="px-static-")
        cls.www = os.path.join(cls.base, "www")
        outside = os.path.join(cls.base, "outside")
        os.makedirs(outside)
        for name in ("secret", "secret.html"):
            with open(os.path.join(cls.base, name), "wb") as f:
                f.write(SECRET)
        with open(os.path.join(outside, "secret"), "wb") as f:
            f.write(SECRET)
        with open(os.path.join(outside, "index.html"), "wb") as f:
            f.write(SECRET)
        for name, (body, _) in FILES.items():
            p = os.path.join(cls.www, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(body)
        os.makedirs(os.path.join(cls.www, "empty"))
        os.makedirs(os.path.join(cls.www, "a", "b"))
        cls.big = os.urandom(BIG_SIZE)
        with open(os.path.join(cls.www, "big.bin"), "wb") as f:
            f.write(cls.big)
        # Symlinks leaving the root, relative and absolute.
        os.symlink("../outside", os.path.join(cls.www, "link-out"))
        os.symlink(outside, os.path.join(cls.www, "link-out-abs"))
        os.symlink("../secret", os.path.join(cls.www, "file-link"))
        os.symlink(os.path.join(cls.base, "secret"), os.path.join(cls.www, "file-link-abs"))
        os.symlink("../../secret", os.path.join(cls.www, "dir", "up-out"))
        os.symlink("/etc/passwd", os.path.join(cls.www, "passwd-link"))
        os.symlink("/proc/self/environ", os.path.join(cls.www, "environ-link"))
        # Symlinks staying inside the root.
        os.symlink("dir/page.txt", os.path.join(cls.www, "inside-link"))
        os.symlink("dir", os.path.join(cls.www, "dir-link"))
        os.symlink("../style.css", os.path.join(cls.www, "dir", "up-in.css"))
        # An absolute symlink is refused even when it points inside (documented).
        os.symlink(os.path.join(cls.www, "dir", "page.txt"), os.path.join(cls.www, "inside-abs"))
        # Special files.
        os.mkfifo(os.path.join(cls.www, "fifo"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.base, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.srv = self.start_server("--workers", "1", "--static", self.www,
                                     "--data-dir", os.path.join(self.out_dir, "var"))

    def tearDown(self):
        pxtest.quiesce(self.servers)
        super().tearDown()

    def get(self, target, headers=b"", method=b"GET"):
        """One raw request (target sent exactly as given) on its own connection."""
        with self.srv.client(timeout=10) as c:
            c.send(method + b" " + target + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
            return c.read_response(timeout=10, method=method.decode())

    def assertFile(self, r, name, ctype=None):
        body, want_type = FILES[name]
        self.assertEqual(r.status, 200, name)
        self.assertEqual(r.body, body, name)
        self.assertEqual(r.header("Content-Length"), str(len(body)), name)
        ctype = ctype or want_type
        self.assertEqual(r.header("Content-Type", "").split(";")[0].strip(), ctype, name)


class Files(StaticBase):
    def test_mime_types(self):
        for name in FILES:
            if name.startswith("dir/") or " " in name:
                continue
            with self.subTest(name=name):
                self.assertFile(self.get(b"/" + name.encode()), name)
        # text types say their charset.
        self.assertIn("charset=utf-8", self.get(b"/index.html").header("Content-Type"))

    def test_percent_encoded_names(self):
        self.assertFile(self.get(b"/with%20space.txt"), "with space.txt")
        self.assertFile(self.get(b"/%64igits.txt"), "digits.txt")
        self.assertFile(self.get(b"/dir%2Fpage.txt".replace(b"%2F", b"/")), "dir/page.txt")
        self.assertEqual(self.get(b"/bad%zzname").status, 400)
        self.assertEqual(self.get(b"/bad%2").status, 400)

    def test_query_is_ignored(self):
        self.assertFile(self.get(b"/style.css?v=123"), "style.css")

    def test_index(self):
        r = self.get(b"/")
        self.assertFile(r, "index.html")
        r = self.get(b"/dir/")
        self.assertEqual(r.body, FILES["dir/index.html"][0])
        self.assertTrue(r.header("Content-Type").startswith("text/html"))
        self.assertEqual(self.get(b"/empty/").status, 404)
        self.assertEqual(self.get(b"/a/").status, 404)

    def test_dir_redirect(self):
        for target, loc in ((b"/dir", "/dir/"), (b"/dir/sub", "/dir/sub/"), (b"/empty", "/empty/"),
                            (b"/dir?x=1&y=%2F", "/dir/?x=1&y=%2F"), (b"/d%69r", "/d%69r/")):
            with self.subTest(target=target):
                r = self.get(target)
                self.assertEqual(r.status, 301)
                self.assertEqual(r.header("Location"), loc)
        r = self.get(b"/dir", method=b"HEAD")
        self.assertEqual((r.status, r.header("Location"), r.body), (301, "/dir/", b""))

    def test_not_found(self):
        for t in (b"/nope.html", b"/dir/nope", b"/dir/page.txt/", b"/index.html/x", b"/fifo"):
            with self.subTest(target=t):
                r = self.get(t)
                self.assertEqual(r.status, 404)
                self.assertEqual(r.header("Content-Type"), "application/json")
                self.assertEqual(set(r.json()), {"error", "message"})

    def test_fifo_does_not_block_the_worker(self):
        r = self.get(b"/fifo")
        self.assertEqual(r.status, 404)
        self.assertFile(self.get(b"/style.css"), "style.css")

    def start_as_nobody(self):
        """A second server running as nobody:nogroup without supplementary
        groups, serving a fresh root it can traverse (its data directory is its
        own). Returns (server, its www directory)."""
        import grp
        import pwd

        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        base = tempfile.mkdtemp(prefix="px-static-nobody-")
        self.addCleanup(shutil.rmtree, base, True)
        www, data = os.path.join(base, "www"), os.path.join(base, "var")
        os.mkdir(www)
        os.mkdir(data)
        os.chmod(base, 0o755)
        os.chmod(www, 0o755)
        os.chown(data, uid, gid)

        def drop_privileges():  # what setpriv --reuid=nobody --regid=nogroup --clear-groups does
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        srv = self.start_server("--workers", "1", "--static", www, "--data-dir", data,
                                preexec_fn=drop_privileges, cwd=base, name="plexus-nobody")
        with open("/proc/%d/status" % srv.pid) as f:
            uids = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
        self.assertEqual(uids, [str(uid)] * 4, "the server should run as nobody")
        return srv, www

    def test_unreadable_file(self):
        """A file the server may not read: 403. Root reads any file, so when the
        suite runs as root (as in CI) a server running as nobody serves it."""
        srv, www = (self.srv, self.www) if os.geteuid() != 0 else self.start_as_nobody()
        self.srv = srv  # self.get() asks this one
        p = os.path.join(www, "locked.txt")
        with open(p, "wb") as f:
            f.write(b"locked")
        os.chmod(p, 0)
        readable = os.path.join(www, "readable.txt")
        with open(readable, "wb") as f:
            f.write(b"readable")
        os.chmod(readable, 0o644)
        try:
            self.assertEqual(self.get(b"/locked.txt").status, 403)
            # The same server reads a file it may read: the 403 is about the mode.
            r = self.get(b"/readable.txt")
            self.assertEqual((r.status, r.body), (200, b"readable"))
        finally:
            os.unlink(p)
            os.unlink(readable)

    def test_methods(self):
        r = self.get(b"/index.html", method=b"POST")
        self.assertEqual(r.status, 405)
        self.assertIn("GET", r.header("Allow"))

    def test_head(self):
        with self.srv.client() as c:
            c.send(b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /style.css HTTP/1.1\r\nHost: t\r\n\r\n")
            h = c.read_response(method="HEAD")
            self.assertEqual(h.status, 200)
            self.assertEqual(h.header("Content-Length"), str(BIG_SIZE))
            self.assertEqual(h.header("Content-Type"), "application/octet-stream")
            self.assertIsNotNone(h.header("ETag"))
            self.assertIsNotNone(h.header("Last-Modified"))
            self.assertFile(c.read_response(), "style.css")  # no body bytes leaked from HEAD
            time.sleep(0.1)
            self.assertEqual(c.buf, b"")
        r = self.get(b"/empty.txt")
        self.assertEqual((r.status, r.body, r.header("Content-Length")), (200, b"", "0"))

    def test_big_file_intact(self):
        want = hashlib.sha256(self.big).hexdigest()
        with self.srv.client(timeout=30) as c:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # a slowish reader
            for _ in range(2):  # twice on one connection: keep-alive after sendfile
                c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
                r = c.read_response(timeout=30)
                self.assertEqual(r.status, 200)
                self.assertEqual(len(r.body), BIG_SIZE)
                self.assertEqual(hashlib.sha256(r.body).hexdigest(), want)
        # A range in the middle (sendfile from an offset).
        r = self.get(b"/big.bin", b"Range: bytes=1000000-3000000\r\n")
        self.assertEqual(r.status, 206)
        self.assertEqual(r.body, self.big[1000000:3000001])
        # Pipelined behind a big file: answered after it, intact.
        with self.srv.client(timeout=30) as c:
            c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /digits.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertEqual(hashlib.sha256(c.read_response(timeout=30).body).hexdigest(), want)
            self.assertFile(c.read_response(), "digits.txt")


class Validators(StaticBase):
    def test_etag(self):
        r = self.get(b"/style.css")
        etag = r.header("ETag")
        self.assertRegex(etag, r'^(W/)?"[^"]+"$')
        strong = etag[2:] if etag.startswith("W/") else etag
        for inm in (etag, strong, "W/" + strong, '"nope", ' + strong, strong + ', "nope"', "*",
                    ' %s ' % strong):
            with self.subTest(inm=inm):
                with self.srv.client() as c:
                    c.send(b"GET /style.css HTTP/1.1\r\nHost: t\r\nIf-None-Match: " + inm.encode()
                           + b"\r\n\r\nGET /digits.txt HTTP/1.1\r\nHost: t\r\n\r\n")
                    r = c.read_response()
                    self.assertEqual(r.status, 304)
                    self.assertEqual(r.body, b"")
                    self.assertEqual(r.header("ETag"), etag)
                    self.assertIsNone(r.header("Content-Length"))
                    self.assertFile(c.read_response(), "digits.txt")  # 304 had no body
        for inm in ('"nope"', 'W/"nope"', strong[:-2] + '"'):
            with self.subTest(inm=inm):
                self.assertFile(self.get(b"/style.css", b"If-None-Match: " + inm.encode() + b"\r\n"),
                                "style.css")
        # Another file has another tag.
        self.assertNotEqual(self.get(b"/app.js").header("ETag"), etag)

    def test_etag_changes_with_content(self):
        p = os.path.join(self.www, "changing.txt")
        with open(p, "wb") as f:
            f.write(b"one")
        try:
            e1 = self.get(b"/changing.txt").header("ETag")
            time.sleep(0.01)
            with open(p, "wb") as f:
                f.write(b"two!")
            r = self.get(b"/changing.txt", b"If-None-Match: " + e1.encode() + b"\r\n")
            self.assertEqual((r.status, r.body), (200, b"two!"))
            self.assertNotEqual(r.header("ETag"), e1)
        finally:
            os.unlink(p)

    def test_last_modified(self):
        r = self.get(b"/app.js")
        lm = r.header("Last-Modified")
        self.assertRegex(lm, r"^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$")
        mtime = os.stat(os.path.join(self.www, "app.js")).st_mtime
        self.assertEqual(email.utils.parsedate_to_datetime(lm).timestamp(), int(mtime))
        later = email.utils.formatdate(mtime + 3600, usegmt=True)
        earlier = email.utils.formatdate(mtime - 3600, usegmt=True)
        for ims, status in ((lm, 304), (later, 304), (earlier, 200), ("garbage", 200),
                            ("Sun, 06 Nov 1994 08:49:37 GMT", 200)):
            with self.subTest(ims=ims):
                r = self.get(b"/app.js", b"If-Modified-Since: " + ims.encode() + b"\r\n")
                self.assertEqual(r.status, status)
                self.assertEqual(r.body, b"" if status == 304 else FILES["app.js"][0])
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.1.3).
        r = self.get(b"/app.js", b'If-None-Match: "nope"\r\nIf-Modified-Since: ' + lm.encode() + b"\r\n")
        self.assertEqual(r.status, 200)


class Ranges(StaticBase):
    DIG = FILES["digits.txt"][0]

    def rng(self, spec, extra=b""):
        return self.get(b"/digits.txt", b"Range: " + spec + b"\r\n" + extra)

    def assertPartial(self, r, first, last):
        size = len(self.DIG)
        self.assertEqual(r.status, 206)
        self.assertEqual(r.header("Content-Range"), "bytes %d-%d/%d" % (first, last, size))
        self.assertEqual(r.body, self.DIG[first:last + 1])
        self.assertEqual(r.header("Content-Length"), str(last - first + 1))

    def test_single_ranges(self):
        size = len(self.DIG)
        self.assertEqual(self.get(b"/digits.txt").header("Accept-Ranges"), "bytes")
        self.assertPartial(self.rng(b"bytes=0-9"), 0, 9)
        self.assertPartial(self.rng(b"bytes=-5"), size - 5, size - 1)
        self.assertPartial(self.rng(b"bytes=10-"), 10, size - 1)
        self.assertPartial(self.rng(b"bytes=5-5"), 5, 5)
        self.assertPartial(self.rng(b"bytes=30-1000"), 30, size - 1)   # clipped
        self.assertPartial(self.rng(b"bytes=-1000"), 0, size - 1)      # suffix longer than file
        self.assertPartial(self.rng(b"bytes=%d-" % (size - 1)), size - 1, size - 1)

    def test_unsatisfiable(self):
        size = len(self.DIG)
        for spec in (b"bytes=%d-" % size, b"bytes=1000-2000", b"bytes=-0"):
            with self.subTest(spec=spec):
                r = self.rng(spec)
                self.assertEqual(r.status, 416)
                self.assertEqual(r.header("Content-Range"), "bytes */%d" % size)
                self.assertEqual(r.header("Content-Type"), "application/json")
                self.assertEqual(r.json()["error"], "range_not_satisfiable")
        r = self.get(b"/empty.txt", b"Range: bytes=0-0\r\n")
        self.assertEqual((r.status, r.header("Content-Range")), (416, "bytes */0"))

    def test_ignored_ranges_give_200(self):
        # Several ranges (we may answer the whole file), other units, junk,
        # and reversed ranges are all answered with the full 200.
        for spec in (b"bytes=0-1,3-4", b"bytes=0-1, 5-6", b"items=0-1", b"bytes=abc",
                     b"bytes=9-3", b"bytes=", b"bytes=--1", b"bytes=1-2-3"):
            with self.subTest(spec=spec):
                r = self.rng(spec)
                self.assertEqual((r.status, r.body), (200, self.DIG))
                self.assertIsNone(r.header("Content-Range"))

    def test_if_range(self):
        r = self.get(b"/digits.txt")
        etag = r.header("ETag").encode()
        self.assertPartial(self.rng(b"bytes=0-3", b"If-Range: " + etag + b"\r\n"), 0, 3)
        r = self.rng(b"bytes=0-3", b'If-Range: "stale"\r\n')
        self.assertEqual((r.status, r.body), (200, self.DIG))

    def test_range_on_head(self):
        r = self.get(b"/digits.txt", b"Range: bytes=0-9\r\n", method=b"HEAD")
        self.assertEqual((r.status, r.header("Content-Length"), r.body), (206, "10", b""))


class Traversal(StaticBase):
    ATTACKS = [
        b"/../secret", b"/%2e%2e/secret", b"/%2E%2e/secret", b"/%2e./secret", b"/.%2E/secret",
        b"/a/../../secret", b"/a/b/../../../secret", b"/a/%2e%2e/%2e%2e/secret", b"/dir/../../secret",
        b"/..%2fsecret", b"/..%2Fsecret", b"/%2f..%2fsecret", b"/a%2f..%2f..%2fsecret",
        b"/..%5csecret", b"/..\\secret", b"/%2e%2e%5csecret",
        b"/a%00.html", b"/secret%00.html", b"/index.html%00.txt", b"/..%00/secret",
        b"/link-out/secret", b"/link-out/", b"/link-out", b"/link-out-abs/secret", b"/link-out-abs/",
        b"/file-link", b"/file-link-abs", b"/dir/up-out", b"/dir-link/up-out", b"/dir-link/../../secret",
        b"/passwd-link", b"/environ-link",
        b"//etc/passwd", b"/%2fetc%2fpasswd", b"//..//secret", b"/./../secret", b"/..",
        b"/%2e%2e", b"/.%2e/.%2e/secret", b"/%252e%252e/secret", b"/..;/secret",
        b"/....//secret", b"/a/./../../secret",
    ]

    def assertRefused(self, r, what):
        self.assertIn(r.status, (400, 403, 404), "%r: %r" % (what, r.raw[:200]))
        self.assertNotIn(SECRET.strip(), r.raw, what)
        self.assertNotIn(b"root:x:0", r.raw, what)
        self.assertNotIn(b"PATH=", r.raw, what)

    def test_attacks_refused(self):
        for t in self.ATTACKS:
            with self.subTest(target=t):
                self.assertRefused(self.get(t), t)
                self.assertRefused(self.get(t, method=b"HEAD"), t)

    def test_absolute_symlink_inside_refused(self):
        self.assertEqual(self.get(b"/inside-abs").status, 403)

    def test_absolute_form_targets(self):
        for t in (b"http://t/../secret", b"http://t/%2e%2e/secret", b"http://t/link-out/secret",
                  b"http://t//etc/passwd"):
            with self.subTest(target=t):
                self.assertRefused(self.get(t), t)

    def test_pipelined_after_refusal(self):
        # A refused path does not upset the connection.
        with self.srv.client() as c:
            c.send(b"GET /../secret HTTP/1.1\r\nHost: t\r\n\r\nGET /style.css HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertRefused(c.read_response(), "pipelined")
            self.assertFile(c.read_response(), "style.css")

    def test_curl_path_as_is(self):
        curl = shutil.which("curl")
        self.assertIsNotNone(curl, "curl is not installed (deps/debian.txt lists it)")
        import subprocess
        for t in ("/../secret", "/%2e%2e/secret", "/a/../../secret", "/link-out/secret"):
            with self.subTest(target=t):
                p = subprocess.run([curl, "-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}",
                                    "--max-time", str(pxtest.scaled(10)), self.srv.url + t],
                                   capture_output=True, timeout=pxtest.scaled(20))
                body, _, code = p.stdout.rpartition(b"\n")
                self.assertIn(int(code), (400, 403, 404), t)
                self.assertNotIn(SECRET.strip(), body)

    def test_inside_symlinks_work(self):
        r = self.get(b"/inside-link")
        self.assertEqual((r.status, r.body), (200, FILES["dir/page.txt"][0]))
        r = self.get(b"/dir-link/page.txt")
        self.assertEqual((r.status, r.body), (200, FILES["dir/page.txt"][0]))
        r = self.get(b"/dir-link/")
        self.assertEqual((r.status, r.body), (200, FILES["dir/index.html"][0]))
        # A relative link that goes up a level but stays inside the root.
        r = self.get(b"/dir/up-in.css")
        self.assertEqual((r.status, r.body), (200, FILES["style.css"][0]))
        self.assertTrue(r.header("Content-Type").startswith("text/css"))



class LongPaths(StaticBase):
    """Paths longer than the kernel's PATH_MAX (4096) are served up to the
    request-line limit (issue 10, item 18: they used to get 414 at 4096 bytes
    while the parser accepts 8 KiB request lines), opened one directory step
    at a time, each step still beneath the root."""

    SEG = "d" * 199
    DEPTH = 60  # 12 000 bytes of directories

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Deeper than PATH_MAX: created relative to directory fds.
        fd = os.open(cls.www, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for depth in range(cls.DEPTH):
                os.mkdir(cls.SEG, dir_fd=fd)
                nfd = os.open(cls.SEG, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nfd
                if depth in (24, 59):  # 5000 and 12 000 bytes down
                    with open(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd),
                              "wb") as f:
                        f.write(b"deep %d\n" % depth)
                    # A relative symlink leaving the root from down there.
                    os.symlink("../" * (depth + 2) + "secret", "out-link", dir_fd=fd)
                    os.symlink("deep.txt", "in-link", dir_fd=fd)
        finally:
            os.close(fd)

    def deep(self, depth, leaf):
        return ("/" + "/".join([self.SEG] * (depth + 1)) + "/" + leaf).encode()

    def test_over_path_max_is_served(self):
        t = self.deep(24, "deep.txt")
        self.assertGreater(len(t), 4096)
        r = self.get(t)
        self.assertEqual((r.status, r.body), (200, b"deep 24\n"), r)
        r = self.get(self.deep(24, "in-link"))
        self.assertEqual((r.status, r.body), (200, b"deep 24\n"), r)
        # Percent-encoded, the same file.
        r = self.get(t.replace(b"d", b"%64", 50))
        self.assertEqual((r.status, r.body), (200, b"deep 24\n"), r)

    def test_long_paths_stay_beneath_the_root(self):
        self.assertEqual(self.get(self.deep(24, "out-link")).status, 403)
        self.assertEqual(self.get(self.deep(24, "nothing-here")).status, 404)
        self.assertEqual(self.get(self.deep(24, "../../../secret")).status, 403)
        # One segment longer than a name can be.
        self.assertEqual(self.get(b"/" + b"x" * 5000).status, 404)

    def test_request_line_limit_decides(self):
        # 12 000 bytes: over the default --max-request-line (8KiB): the parser's 414.
        t = self.deep(59, "deep.txt")
        self.assertGreater(len(t), 8192)
        self.assertEqual(self.get(t).status, 414)
        # With a longer request line allowed, the same path is served.
        srv = self.start_server("--workers", "1", "--static", self.www,
                                "--max-request-line", "16KiB", "--max-header-size", "20KiB",
                                "--data-dir", os.path.join(self.out_dir, "var2"))
        with srv.client(timeout=10) as c:
            c.send(b"GET " + t + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            r = c.read_response(timeout=10)
        self.assertEqual((r.status, r.body), (200, b"deep 59\n"), r)
        with srv.client(timeout=10) as c:
            c.send(b"GET " + self.deep(59, "out-link") + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertEqual(c.read_response(timeout=10).status, 403)


if __name__ == "__main__":
    pxtest.main()
