// 63-browser-tls: the demo page over HTTPS and its SDK over wss:// in a real
// browser: Debian's chromium (/usr/bin/chromium) driven by playwright-core, with
// a certificate made at test time (a test CA and a "localhost" leaf, ECDSA
// P-256) that Chromium accepts through --ignore-certificate-errors-spki-list
// (the SHA-256 of the leaf's public key), so the page is a secure context.
//
//   - the page loads over https:// with HTTP/2 (ALPN h2), window.isSecureContext;
//   - two pages join a room over wss:// (the SDK picks wss on an https page): a
//     message typed in one appears in the other; their WebSockets run on the h2
//     connection (RFC 8441 extended CONNECT, in the access log as "GET /ws HTTP/2.0");
//   - the SSE fallback over HTTPS (a page without WebSocket) receives it too, its
//     EventSource and requests on HTTP/2 (the server counts h2 streams);
//   - the server's /metrics (over HTTPS) counts the TLS handshakes;
//   - a page with a certificate Chromium does not accept (the SPKI list names
//     another key) fails to load: the flag, not a general bypass, lets it in.
//
//   PLEXUS_BIN=build/release/plexus node --test tests/integration/63-browser-tls.mjs

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { outDir, PlexusServer, scaled, stopAll, waitFor } from './plexus-server.mjs';

const CHROMIUM = process.env.PX_CHROMIUM || '/usr/bin/chromium';
const OUT = outDir('63-browser-tls');
const ROOM = 'secure';

let srv;
let browser;
let base;
const pages = {};
const pageErrors = [];

function openssl(...args) {
  execFileSync('openssl', args, { cwd: OUT, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A CA and a leaf for localhost; returns the leaf's paths and SPKI hash. */
function makeCert(name) {
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-ca.key`, '-out', `${name}-ca.crt`,
    '-days', '7', '-subj', '/CN=plexus browser test CA', '-addext', 'basicConstraints=critical,CA:true');
  fs.writeFileSync(path.join(OUT, `${name}.ext`),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`);
  openssl('req', '-new', '-key', `${name}.key`, '-subj', '/CN=localhost', '-out', `${name}.csr`);
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${name}-ca.crt`, '-CAkey', `${name}-ca.key`,
    '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`, '-days', '7', '-extfile', `${name}.ext`,
    '-out', `${name}.crt`);
  const pem = fs.readFileSync(path.join(OUT, `${name}.crt`));
  const spki = new crypto.X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return {
    crt: path.join(OUT, `${name}.crt`),
    key: path.join(OUT, `${name}.key`),
    spki: crypto.createHash('sha256').update(spki).digest('base64'),
  };
}

async function openPage(name, { noWebSocket = false } = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  ctx.setDefaultTimeout(scaled(10000));
  if (noWebSocket) {
    await ctx.addInitScript(() => {
      window.WebSocket = undefined;
    });
  }
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
  await page.goto(`${base}/`);
  pages[name] = page;
  return page;
}

const statusText = (page) => page.locator('#status').textContent();
const shown = (page) =>
  page.locator('#messages li:not(.system)').evaluateAll((lis) =>
    lis.map((li) => `${li.querySelector('.who').textContent}: ${li.querySelector('.text').textContent}`),
  );

async function join(page, name, transport) {
  await waitFor(async () => (await statusText(page)) === `connected (${transport})`, 10000,
    `${name} connected over ${transport}`);
  await page.getByRole('textbox', { name: 'Your name', exact: true }).fill(name);
  await page.getByRole('textbox', { name: 'Room', exact: true }).fill(ROOM);
  await page.keyboard.press('Enter');
  await page.locator('#chat').waitFor({ state: 'visible' });
}

async function say(page, text) {
  const input = page.getByRole('textbox', { name: 'Message', exact: true });
  await input.fill(text);
  await input.press('Enter');
}

let cert;
let otherCert;

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (Debian package chromium, see deps/debian.txt)`);
  cert = makeCert('server');
  otherCert = makeCert('other');
  srv = new PlexusServer({
    dir: path.join(OUT, 'server'),
    args: ['--tls', '--tls-cert', cert.crt, '--tls-key', cert.key, '--access-log', 'text'],
  });
  await srv.start();
  base = `https://localhost:${srv.port}`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', `--ignore-certificate-errors-spki-list=${cert.spki}`],
  });
});

after(async () => {
  await browser?.close();
  await stopAll();
});

describe('demo page over HTTPS', () => {
  it('loads over https with HTTP/2 as a secure context', async () => {
    const page = await openPage('ann');
    const nav = await page.evaluate(() => ({
      protocol: location.protocol,
      secure: window.isSecureContext,
      next: performance.getEntriesByType('navigation')[0].nextHopProtocol,
    }));
    assert.deepEqual(nav, { protocol: 'https:', secure: true, next: 'h2' });
    await page.screenshot({ path: path.join(OUT, 'ann.png') });
  });

  it('two pages chat over wss://; the SSE fallback receives over https', async () => {
    const ann = pages.ann;
    const bob = await openPage('bob');
    const carol = await openPage('carol', { noWebSocket: true });
    await join(ann, 'Ann', 'websocket');
    await join(bob, 'Bob', 'websocket');
    await join(carol, 'Carol', 'sse');
    await say(ann, 'hello over TLS');
    for (const p of [bob, carol, ann]) {
      await waitFor(async () => (await shown(p)).includes('Ann: hello over TLS'), 10000, 'the message in every page');
    }
    await say(carol, 'and back over HTTPS');
    await waitFor(async () => (await shown(ann)).includes('Carol: and back over HTTPS'), 10000, 'Carol\'s message');
    // The WebSocket really is wss:// on the same port.
    const urls = await bob.evaluate(() => performance.getEntriesByType('resource').map((e) => e.name));
    assert.ok(urls.every((u) => !u.startsWith('http:')), `no plain http resource: ${urls}`);
    // Carol's page, its scripts and its SSE fallback came over HTTP/2.
    const carolNext = await carol.evaluate(() => [
      performance.getEntriesByType('navigation')[0].nextHopProtocol,
      ...performance.getEntriesByType('resource').map((e) => e.nextHopProtocol),
    ]);
    assert.ok(carolNext.length > 1 && carolNext.every((p) => p === 'h2'), `carol's protocols: ${carolNext}`);
    const metrics = await carol.evaluate(async () => (await fetch('/metrics')).text());
    const streams = /^plexus_http2_streams_total (\d+)/m.exec(metrics);
    assert.ok(streams && Number(streams[1]) >= 6, `h2 streams in /metrics: ${streams && streams[1]}`);
    // Chromium opened Ann's and Bob's WebSockets over HTTP/2 (extended CONNECT,
    // logged as the GET it is routed as), not over a separate HTTP/1.1 connection.
    const wsOverH2 = srv.logText.match(/"GET \/ws HTTP\/2\.0" 200 /g) || [];
    assert.ok(wsOverH2.length >= 2, `WebSockets over h2 in the access log: ${wsOverH2.length}`);
    assert.deepEqual(pageErrors, []);
  });

  it('/metrics over https counts the handshakes', async () => {
    const page = pages.ann;
    const text = await page.evaluate(async () => (await fetch('/metrics')).text());
    const m = /plexus_tls_handshakes_total\{kind="full"\} (\d+)/.exec(text);
    assert.ok(m && Number(m[1]) >= 3, `handshakes in /metrics: ${m && m[1]}`);
    assert.match(text, /plexus_tls_handshake_failures_total\{reason="timeout"\} 0/);
  });

  it('a certificate the SPKI list does not name is refused', async () => {
    const other = new PlexusServer({
      dir: path.join(OUT, 'other'),
      name: 'other',
      args: ['--tls', '--tls-cert', otherCert.crt, '--tls-key', otherCert.key],
    });
    await other.start();
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await assert.rejects(page.goto(`https://localhost:${other.port}/`), /ERR_CERT_AUTHORITY_INVALID/);
    await ctx.close();
    await other.stopCleanly();
  });
});
