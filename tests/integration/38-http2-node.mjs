// HTTP/2 interop with Node's own `http2` client, twice: h2c with prior knowledge
// (as http2.connect does for http:// URLs) and h2 over TLS (https:// URLs, ALPN h2,
// a certificate made at test time): many concurrent requests on one session,
// a request body, the hub's API, two SSE streams and an API call multiplexed on
// one connection, a static file compared byte for byte, a cancelled SSE stream
// (RST_STREAM CANCEL) after which the session goes on, and the server's
// graceful shutdown (GOAWAY NO_ERROR, then the session closes).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';

import { outDir, PlexusServer, scaled, waitFor } from './plexus-server.mjs';

const OUT = outDir('38-http2-node');
const T = scaled(60000);

function request(session, headers, body) {
  return new Promise((resolve, reject) => {
    const req = session.request(headers);
    const chunks = [];
    let head;
    req.on('response', (h) => { head = h; });
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve({ status: head[':status'], headers: head, body: Buffer.concat(chunks) }));
    req.on('error', reject);
    if (body !== undefined) req.end(body); else req.end();
  });
}

/** An SSE stream: resolves `ready` with the head; collects events. */
function sse(session, p) {
  const req = session.request({ ':path': p, accept: 'text/event-stream' });
  const st = { req, events: [], text: '', head: null };
  st.ready = new Promise((resolve, reject) => {
    req.on('response', (h) => { st.head = h; resolve(h); });
    req.on('error', reject);
  });
  req.setEncoding('utf8');
  req.on('data', (d) => {
    st.text += d;
    let i;
    while ((i = st.text.indexOf('\n\n')) >= 0) {
      const block = st.text.slice(0, i);
      st.text = st.text.slice(i + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim());
      if (data.length) st.events.push(JSON.parse(data.join('\n')));
    }
  });
  return st;
}

/** A self-signed ECDSA P-256 certificate for localhost (the client trusts it as its CA). */
function makeCert() {
  const crt = path.join(OUT, 'localhost.crt');
  const key = path.join(OUT, 'localhost.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', crt, '-days', '7', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return { crt, key };
}

for (const mode of ['h2c', 'tls']) describe(`HTTP/2 with Node http2 (${mode})`, { timeout: T }, () => {
  let srv;
  let staticDir;
  let cert;
  const tlsArgs = () => (mode === 'tls' ? ['--tls', '--tls-cert', cert.crt, '--tls-key', cert.key] : []);
  const urlOf = (s) => (mode === 'tls' ? `https://localhost:${s.port}` : s.url);
  /** A session to `s`: h2c, or TLS that must have negotiated h2 by ALPN. */
  const connect = (s = srv) => {
    if (mode !== 'tls') return http2.connect(urlOf(s));
    const session = http2.connect(urlOf(s), { ca: fs.readFileSync(cert.crt) });
    session.on('connect', () => assert.equal(session.alpnProtocol, 'h2'));
    return session;
  };
  before(async () => {
    staticDir = path.join(OUT, 'www');
    fs.mkdirSync(staticDir, { recursive: true });
    if (!fs.existsSync(path.join(staticDir, 'blob.bin'))) {
      fs.writeFileSync(path.join(staticDir, 'blob.bin'), crypto.randomBytes(3 * 1024 * 1024 + 17));
    }
    if (mode === 'tls') cert = makeCert();
    srv = new PlexusServer({ dir: path.join(OUT, `main-${mode}`), args: ['--static', staticDir, ...tlsArgs()] });
    await srv.start();
  });
  after(async () => { if (srv) await srv.stopCleanly(); });

  it('answers 100 concurrent requests on one session', async () => {
    const session = connect();
    try {
      const all = await Promise.all(Array.from({ length: 100 }, () => request(session, { ':path': '/healthz' })));
      for (const r of all) {
        assert.equal(r.status, 200);
        assert.equal(r.body.toString(), '{"status":"ok"}');
      }
      assert.equal(session.alpnProtocol, mode === 'tls' ? 'h2' : 'h2c');
    } finally { session.close(); }
  });

  it('serves a static file byte for byte, and a range', async () => {
    const session = connect();
    try {
      const want = fs.readFileSync(path.join(staticDir, 'blob.bin'));
      const r = await request(session, { ':path': '/blob.bin' });
      assert.equal(r.status, 200);
      assert.equal(Number(r.headers['content-length']), want.length);
      assert.ok(r.body.equals(want), 'the body differs from the file');
      const part = await request(session, { ':path': '/blob.bin', range: 'bytes=1000-1999' });
      assert.equal(part.status, 206);
      assert.ok(part.body.equals(want.subarray(1000, 2000)));
    } finally { session.close(); }
  });

  it('publishes with a body and reads the history back', async () => {
    const session = connect();
    try {
      const pub = await request(session, { ':method': 'POST', ':path': '/api/channels/node/messages',
        'content-type': 'application/json' }, JSON.stringify({ n: 1 }));
      assert.equal(pub.status, 201, pub.body.toString());
      const hist = await request(session, { ':path': '/api/channels/node/messages?since=0' });
      assert.equal(hist.status, 200);
      assert.deepEqual(JSON.parse(hist.body).messages.map((m) => m.data), [{ n: 1 }]);
    } finally { session.close(); }
  });

  it('multiplexes two SSE streams and API calls, and survives a cancelled stream', async () => {
    const session = connect();
    try {
      const a = sse(session, '/api/channels/mux/events');
      const b = sse(session, '/api/channels/mux/events');
      const [ha, hb] = await Promise.all([a.ready, b.ready]);
      assert.equal(ha[':status'], 200);
      assert.equal(hb['content-type'].split(';')[0], 'text/event-stream');
      for (let i = 0; i < 5; i++) {
        const r = await request(session, { ':method': 'POST', ':path': '/api/channels/mux/messages',
          'content-type': 'application/json' }, JSON.stringify({ i }));
        assert.equal(r.status, 201);
      }
      await waitFor(() => a.events.length === 5 && b.events.length === 5, 10000, 'five events on both streams');
      assert.deepEqual(a.events.map((e) => e.i), [0, 1, 2, 3, 4]);
      a.req.close(http2.constants.NGHTTP2_CANCEL);
      const r = await request(session, { ':method': 'POST', ':path': '/api/channels/mux/messages',
        'content-type': 'application/json' }, JSON.stringify({ i: 5 }));
      assert.equal(r.status, 201);
      await waitFor(() => b.events.length === 6, 10000, 'the sixth event on the stream left open');
      b.req.close();
    } finally { session.close(); }
  });

  it('sends GOAWAY on shutdown and the session ends', async () => {
    const other = new PlexusServer({ dir: path.join(OUT, `shutdown-${mode}`), args: tlsArgs() });
    await other.start();
    const session = connect(other);
    const goaway = new Promise((resolve) => session.on('goaway', (code) => resolve(code)));
    const closed = new Promise((resolve) => session.on('close', resolve));
    session.on('error', () => {});
    const r = await request(session, { ':path': '/healthz' });
    assert.equal(r.status, 200);
    const stopped = other.stopCleanly();
    assert.equal(await goaway, http2.constants.NGHTTP2_NO_ERROR);
    await closed;
    await stopped;
  });
});
