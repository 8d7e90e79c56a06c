// 67-passenger-apache: plexus behind Apache 2.4 + libapache2-mod-passenger (a private
// Apache: its own ServerRoot, config and loopback port under the test directory, never
// the system's), configured like a hosting panel's "Setup Node.js App".
// px-test: addon (plain builds only: a sanitizer runtime cannot be loaded into node)
// px-test: serial (Apache, Passenger, Chromium)
//
//   - HTTP works through Apache: the demo page, the HTTP API (publish, history), SetEnv'd
//     PLEXUS_* variables reach the app's options; the access log names the client by
//     !~Passenger-Client-Address (not by an X-Forwarded-For the client sent);
//   - the WebSocket upgrade fails through Apache (passenger issue 1202: the 101 goes out
//     chunked, without `Connection: Upgrade`): a client sees no WebSocket;
//   - the browser SDK in Chromium detects the failed upgrade at once and falls back to SSE
//     + HTTP publish within 3 s: it receives messages published over HTTP and publishes
//     itself;
//   - a front server that holds the upgrade without answering (a Node proxy in front of
//     Apache that swallows upgrades): the SDK gives the WebSocket up after its openTimeout
//     (2 s) and falls back to SSE within 3 s, where the browser alone would wait on.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { SOURCE_DIR, outDir } from './plexus-server.mjs';
import { Apache, freePort, keepArtifacts, makeApp, request, waitFor } from './nodeapp.mjs';

const CHROMIUM = process.env.PX_CHROMIUM || '/usr/bin/chromium';
const OUT = outDir('67-passenger-apache');
let apache;
let dir;
let browser;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'px67-'));
  fs.chmodSync(dir, 0o755);
  const appDir = makeApp(path.join(dir, 'app'), { 'app.js': path.join(SOURCE_DIR, 'examples', 'passenger', 'app.js') });
  apache = new Apache({ dir, appDir, port: await freePort(), env: { PLEXUS_MAX_PAYLOAD: '1KiB', PLEXUS_ACCESS_LOG: 'json', PLEXUS_LOG_FILE: 'plexus.log' } });
  await apache.start();
});

after(async () => {
  await browser?.close();
  const code = await apache?.stop();
  if (dir) {
    keepArtifacts(dir, OUT);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(code, 0, 'apache stopped cleanly');
});

describe('apache + mod_passenger', () => {
  it('serves HTTP: the demo page and the HTTP API; SetEnv reaches the options', async () => {
    const port = apache.port;
    const page = await request({ port, path: '/' });
    assert.equal(page.status, 200);
    assert.match(page.body, /<html/i);
    const post = await request({ port, method: 'POST', path: '/api/channels/a/messages', body: { n: 1 } });
    assert.equal(post.status, 201, post.body);
    const hist = JSON.parse((await request({ port, path: '/api/channels/a/messages?since=0' })).body);
    assert.deepEqual(hist.messages.map((m) => m.data), [{ n: 1 }]);
    // PLEXUS_MAX_PAYLOAD=1KiB from SetEnv: a bigger message is refused.
    const big = await request({ port, method: 'POST', path: '/api/channels/a/messages', body: { s: 'x'.repeat(2000) } });
    assert.equal(big.status, 413, big.body);
    // The access log names the client Apache saw, not a forwarding header it sent.
    await request({ port, path: '/healthz?who', headers: { 'X-Forwarded-For': '192.0.2.7' } });
    const logFile = path.join(apache.appDir, 'plexus.log');
    const line = await waitFor(() => fs.existsSync(logFile) && fs.readFileSync(logFile, 'utf8').split('\n').find((l) => l.includes('?who')), 5000, 'the access log line');
    assert.equal(JSON.parse(line.slice(line.indexOf('{'))).peer, '127.0.0.1');
  });

  it('fails the WebSocket upgrade (passenger issue 1202)', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${apache.port}/ws`);
    const err = await new Promise((resolve) => {
      ws.on('open', () => resolve(null));
      ws.on('error', resolve);
    });
    assert.ok(err, 'no WebSocket through Apache');
    ws.terminate();
  });

  it('the browser SDK falls back to SSE within 3 s and gets messages', async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${apache.port}/healthz`);
    const opened = await page.evaluate(async () => {
      const { Plexus } = await import('/sdk/plexus.js');
      const t0 = performance.now();
      const px = new Plexus(location.origin);
      const st = (window.__px = { px, msgs: [] });
      px.subscribe('browser', { onMessage: (data, m) => st.msgs.push({ offset: m.offset, data }) });
      return new Promise((resolve) => px.on('open', (e) => resolve({ ...e, ms: performance.now() - t0 })));
    });
    assert.equal(opened.transport, 'sse', JSON.stringify(opened));
    console.log(`SDK: SSE after ${Math.round(opened.ms)} ms`);
    assert.ok(opened.ms < 3000, `fell back after ${opened.ms} ms`);
    // The subscription is live once its SSE stream is open; then HTTP publishes reach it.
    await waitFor(() => page.evaluate(() => window.__px.px.sse.get('browser')?.readyState === 1), 5000, 'the SSE stream');
    const post = await request({ port: apache.port, method: 'POST', path: '/api/channels/browser/messages', body: { from: 'http' } });
    assert.equal(post.status, 201);
    await waitFor(() => page.evaluate(() => window.__px.msgs.length >= 1), 5000, 'the message in the page');
    const ack = await page.evaluate(() => window.__px.px.publish('browser', { from: 'page' }));
    assert.equal(ack, JSON.parse(post.body).offset + 1, 'publish resolves with the offset');
    await waitFor(() => page.evaluate(() => window.__px.msgs.length >= 2), 5000, 'the page\'s own message');
    const msgs = await page.evaluate(() => window.__px.msgs);
    assert.deepEqual(msgs.map((m) => m.data), [{ from: 'http' }, { from: 'page' }]);
  });

  it('falls back within 3 s when the upgrade is held without an answer', async () => {
    const held = [];
    const proxy = http.createServer((req, res) => {
      const up = http.request({ host: '127.0.0.1', port: apache.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    proxy.on('upgrade', (req, socket) => held.push(socket)); // never answered
    await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${proxy.address().port}/healthz`);
      const opened = await page.evaluate(async () => {
        const { Plexus } = await import('/sdk/plexus.js');
        const t0 = performance.now();
        const px = new Plexus(location.origin);
        const st = (window.__px = { px, msgs: [] });
        px.subscribe('held', { onMessage: (data) => st.msgs.push(data) });
        return new Promise((resolve) => px.on('open', (e) => resolve({ ...e, ms: performance.now() - t0 })));
      });
      console.log(`SDK behind a held upgrade: SSE after ${Math.round(opened.ms)} ms`);
      assert.equal(opened.transport, 'sse');
      assert.ok(held.length >= 1, 'the upgrade reached the proxy');
      assert.ok(opened.ms < 3000, `fell back after ${opened.ms} ms`);
      await waitFor(() => page.evaluate(() => window.__px.px.sse.get('held')?.readyState === 1), 5000, 'the SSE stream');
      await page.evaluate(() => window.__px.px.publish('held', { n: 1 }));
      await waitFor(() => page.evaluate(() => window.__px.msgs.length >= 1), 5000, 'the message');
      await page.close();
    } finally {
      for (const s of held) s.destroy();
      proxy.closeAllConnections?.();
      await new Promise((r) => proxy.close(r));
    }
  });
});
