// 61-browser: the demo chat page (web/index.html + app.js, served at /) and the SDK in
// a real browser: Debian's chromium (/usr/bin/chromium) driven by playwright-core.
//
//   - accessibility sanity: every input has a label, the forms work with the
//     keyboard alone (type, Enter), errors are shown in role=alert elements;
//   - bad input gets a visible, specific message: empty name, bad room name, empty
//     message, a message over the page's 2000-character limit (not sent);
//   - two pages join the same room: a message typed in one appears in the other,
//     the presence list of each shows both names;
//   - SSE fallback: a third page without WebSocket (window.WebSocket = undefined)
//     joins over Server-Sent Events, receives messages and sends over HTTP;
//   - the server is restarted (SIGTERM, same port and data directory); a message
//     published over the HTTP API during the gap (the demo's {name, text, ts}
//     shape) appears exactly once in every page after it reconnects, presence
//     shows both names again, and chatting goes on;
//   - the server panel fills in from /metrics; screenshots under PX_TEST_OUT/61-browser/.
//
// The two WebSocket pages get a "gate" around WebSocket: while it is shut, their
// reconnects go to a path that answers 404, so the gap message is certainly
// published before they are back (no race with the reconnect timer).
//
//   PLEXUS_BIN=build/h-web/plexus node --test tests/integration/61-browser.mjs

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { outDir, PlexusServer, scaled, sleep, stopAll, waitFor } from './plexus-server.mjs';

const CHROMIUM = process.env.PX_CHROMIUM || '/usr/bin/chromium';
const OUT = outDir('61-browser');
const ROOM = 'lobby';

let srv;
let browser;
const pages = {}; // name -> page
const pageErrors = [];

async function openPage(name, { gate = false, noWebSocket = false } = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  ctx.setDefaultTimeout(scaled(10000));
  if (gate) {
    await ctx.addInitScript(() => {
      const W = window.WebSocket;
      window.__pxGate = { open: true, attempts: 0 };
      window.WebSocket = class GatedWebSocket extends W {
        constructor(url, protocols) {
          window.__pxGate.attempts++;
          super(window.__pxGate.open ? url : String(url).replace(/\/ws$/, '/ws-gate-shut'), protocols);
        }
      };
    });
  }
  if (noWebSocket) {
    await ctx.addInitScript(() => {
      window.WebSocket = undefined;
    });
  }
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') fs.appendFileSync(path.join(OUT, `console-${name}.log`), `${m.text()}\n`);
  });
  await page.goto(srv.url + '/');
  pages[name] = page;
  return page;
}

const statusText = (page) => page.locator('#status').textContent();
const presenceNames = async (page) => (await page.locator('#who li').allTextContents()).sort();
/** The messages shown, as "name: text". */
const shown = (page) =>
  page.locator('#messages li:not(.system)').evaluateAll((lis) =>
    lis.map((li) => `${li.querySelector('.who').textContent}: ${li.querySelector('.text').textContent}`),
  );

async function waitStatus(page, re, what) {
  await waitFor(async () => re.test(await statusText(page)), 10000, `${what} (status ${re})`);
}

/** Join ROOM as `name` with the keyboard only. */
async function join(page, name) {
  await waitStatus(page, /^connected/, 'the page to connect');
  const nameInput = page.getByRole('textbox', { name: 'Your name', exact: true });
  await nameInput.focus();
  await page.keyboard.type(name);
  await page.keyboard.press('Enter');
  await page.locator('#chat').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#room-title').textContent(), `# ${ROOM}`);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'text', 'focus moves to the message input');
}

/** Send a message with the keyboard (type, Enter). */
async function say(page, text) {
  const input = page.getByRole('textbox', { name: 'Message', exact: true });
  await input.fill(text);
  await input.press('Enter');
}

async function waitShown(page, line, what = line) {
  await waitFor(async () => (await shown(page)).includes(line), 10000, `"${what}" in the page`);
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (Debian package chromium, see deps/debian.txt)`);
  srv = new PlexusServer({ dir: path.join(OUT, 'server') });
  await srv.start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
});

after(async () => {
  await browser?.close();
  await stopAll();
});

describe('demo page', () => {
  it('join form: labelled inputs, keyboard only, specific errors', async () => {
    const page = await openPage('ann', { gate: true });
    await waitStatus(page, /^connected \(websocket\)$/, 'the WebSocket connection');
    // Every input has a label: its accessible name comes from the <label for>.
    for (const [label, id] of [['Your name', 'name'], ['Room', 'room'], ['Message', 'text']]) {
      assert.equal(await page.getByRole('textbox', { name: label, exact: true, includeHidden: true }).getAttribute('id'), id);
    }
    assert.equal(await page.getByRole('button', { name: 'Join' }).getAttribute('type'), 'submit');
    // The name field has focus on load (empty localStorage in a fresh context).
    assert.equal(await page.evaluate(() => document.activeElement.id), 'name');
    // Empty name: Enter shows a specific message in an alert, focus stays on the name.
    await page.keyboard.press('Enter');
    const err = page.locator('#join-error');
    await err.waitFor({ state: 'visible' });
    assert.equal(await err.textContent(), 'Please enter a name.');
    assert.equal(await err.getAttribute('role'), 'alert');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'name');
    assert.ok(await page.locator('#chat').isHidden());
    // Spaces only count as empty.
    await page.keyboard.type('   ');
    await page.keyboard.press('Enter');
    assert.equal(await err.textContent(), 'Please enter a name.');
    await page.getByRole('textbox', { name: 'Your name', exact: true }).fill('');
    // A bad room name.
    await page.keyboard.type('Ann');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'room', 'Tab reaches the room field');
    await page.keyboard.press('Control+A');
    await page.keyboard.type('no spaces!');
    await page.keyboard.press('Enter');
    assert.match(await err.textContent(), /^Room names use letters, digits and/);
    assert.equal(await page.evaluate(() => document.activeElement.id), 'room');
    await page.keyboard.press('Control+A');
    await page.keyboard.type(ROOM);
    await page.keyboard.press('Enter');
    await page.locator('#chat').waitFor({ state: 'visible' });
    assert.equal(await err.textContent(), '');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'text');
    await waitFor(async () => (await presenceNames(page)).includes('Ann'), 5000, 'Ann in her own presence list');
  });

  it('two pages: a message typed in one appears in the other; presence shows both', async () => {
    const ann = pages.ann;
    const bob = await openPage('bob', { gate: true });
    await join(bob, 'Bob');
    await waitFor(async () => (await presenceNames(bob)).join() === 'Ann,Bob', 5000, 'both names in Bob\'s list');
    await waitFor(async () => (await presenceNames(ann)).join() === 'Ann,Bob', 5000, 'Bob joining Ann\'s list');
    assert.equal(await bob.locator('#who-count').textContent(), '(2)');

    await say(ann, 'Hi Bob, welcome to plexus!');
    await waitShown(bob, 'Ann: Hi Bob, welcome to plexus!');
    await waitShown(ann, 'Ann: Hi Bob, welcome to plexus!');
    assert.equal(await ann.getByRole('textbox', { name: 'Message', exact: true }).inputValue(), '', 'the input is cleared after sending');
    await say(bob, 'Hello Ann 👋 <b>not bold</b>');
    await waitShown(ann, 'Bob: Hello Ann 👋 <b>not bold</b>');
    assert.equal(await ann.locator('#messages b').count(), 0, 'text is not parsed as HTML');
    assert.deepEqual(await shown(bob), ['Ann: Hi Bob, welcome to plexus!', 'Bob: Hello Ann 👋 <b>not bold</b>']);
  });

  it('bad messages: empty and over 2000 characters get specific errors and are not sent', async () => {
    const { ann, bob } = pages;
    const err = ann.locator('#send-error');
    await say(ann, '   ');
    await err.waitFor({ state: 'visible' });
    assert.equal(await err.textContent(), 'Type a message first.');
    const long = 'x'.repeat(2001);
    await say(ann, long);
    await waitFor(async () => /2001/.test(await err.textContent()), 5000, 'the length error');
    assert.equal(await err.textContent(), 'That message is 2001 characters; the limit is 2000.');
    assert.equal(await err.getAttribute('role'), 'alert');
    assert.equal(await ann.getByRole('textbox', { name: 'Message', exact: true }).inputValue(), long, 'the text is kept for editing');
    // Exactly 2000 is fine; the error clears.
    await say(ann, 'y'.repeat(2000));
    await waitShown(bob, `Ann: ${'y'.repeat(2000)}`, '2000 y');
    assert.equal(await err.textContent(), '');
    const r = await srv.http('GET', `/api/channels/${ROOM}/messages`);
    assert.deepEqual(r.json.messages.map((m) => m.data.text.length), [26, 28, 2000], 'the bad ones were not sent');
  });

  it('SSE fallback: a page without WebSocket receives and sends', async () => {
    const cid = await openPage('cid', { noWebSocket: true });
    await waitStatus(cid, /^connected \(sse\)$/, 'the SSE fallback');
    assert.equal(await cid.locator('#stat-transport').textContent(), 'sse');
    await join(cid, 'Cid');
    // Recent history is shown on joining.
    await waitShown(cid, 'Bob: Hello Ann 👋 <b>not bold</b>');
    await say(pages.ann, 'Can you see this, Cid?');
    await waitShown(cid, 'Ann: Can you see this, Cid?');
    await say(cid, 'Yes, over Server-Sent Events; sent over HTTP.');
    for (const p of [pages.ann, pages.bob, cid]) await waitShown(p, 'Cid: Yes, over Server-Sent Events; sent over HTTP.');
    const r = await srv.http('GET', `/api/channels/${ROOM}/presence`);
    assert.equal(r.json.count, 2, 'presence lists the WebSocket clients');
    assert.equal(r.json.subscribers, 3, 'subscribers include the SSE one');

    // The SDK itself over SSE, in this page: a subscription on a channel with history
    // starts at its end (like over WebSocket), errors reject `ready`, publish works.
    for (let i = 1; i <= 3; i++) await srv.publish('quiet', { i });
    const res = await cid.evaluate(async () => {
      const { Plexus } = await import('/sdk/plexus.js');
      const px = new Plexus(location.origin);
      const got = [];
      const sub = px.subscribe('quiet', { onMessage: (data, m) => got.push(m.offset) });
      await sub.ready;
      window.__sse = { px, sub, got };
      const bad = px.subscribe('bad channel');
      const err = await bad.ready.then(() => null, (e) => ({ name: e.name, code: e.code }));
      const perr = await px.publish('quiet', 'x'.repeat(70000)).then(() => null, (e) => ({ code: e.code, message: e.message }));
      return { transport: px.transport, offset: sub.offset, err, perr };
    });
    assert.deepEqual(res, {
      transport: 'sse',
      offset: 3,
      err: { name: 'PlexusError', code: 'invalid_channel' },
      perr: { code: 'payload_too_large', message: 'data is 70002 bytes; the limit is 65536' },
    });
    assert.equal(await cid.evaluate(() => window.__sse.px.publish('quiet-pub', { i: 1 })), 1);
  });

  it('server restart: a message published during the gap reaches every page once', async () => {
    const { ann, bob, cid } = pages;
    for (const p of [ann, bob]) await p.evaluate(() => { window.__pxGate.open = false; });
    const port = srv.port;
    await srv.restart();
    assert.equal(srv.port, port);
    for (const p of [ann, bob]) await waitStatus(p, /reconnecting|connection lost/, 'the page to notice');
    const gapText = 'Published over HTTP while you were away';
    await srv.publish(ROOM, { name: 'plexus', text: gapText, ts: Date.now() });
    assert.equal(await srv.publish('quiet', { i: 4 }), 4);
    await sleep(300);
    for (const p of [ann, bob]) assert.ok(!(await shown(p)).includes(`plexus: ${gapText}`), 'not before the reconnect');
    for (const p of [ann, bob]) await p.evaluate(() => { window.__pxGate.open = true; });
    for (const p of [ann, bob, cid]) await waitShown(p, `plexus: ${gapText}`);
    for (const p of [ann, bob]) await waitStatus(p, /^connected \(websocket\)$/, 'the reconnect');
    for (const p of [ann, bob]) {
      await waitFor(async () => (await presenceNames(p)).join() === 'Ann,Bob', 10000, 'both names after the reconnect');
    }
    // Chatting goes on, in every page, and nothing was shown twice.
    await say(bob, 'Back again.');
    for (const p of [ann, bob, cid]) await waitShown(p, 'Bob: Back again.');
    await sleep(300);
    for (const p of [ann, bob, cid]) {
      const lines = await shown(p);
      assert.equal(new Set(lines).size, lines.length, `no duplicates in ${lines.join(' | ')}`);
      assert.equal(lines.filter((l) => l === `plexus: ${gapText}`).length, 1);
    }
    assert.equal(await ann.locator('#messages li.system').count(), 0, 'no recovery-failed notice');
    // The SDK's SSE subscription on 'quiet', which had received nothing before the restart
    // (so its EventSource had no Last-Event-ID), missed nothing either.
    await srv.publish('quiet', { i: 5 });
    await waitFor(() => cid.evaluate(() => window.__sse.got.join() === '4,5'), 10000, 'SSE offsets 4,5');
  });

  it('screenshots', async () => {
    const { ann, cid } = pages;
    // The server panel (polled from /metrics every 2 s): one row per worker (--workers 2).
    await waitFor(async () => (await ann.locator('#workers tr').count()) === 2, 5000, 'the per-worker table');
    await waitFor(async () => /^\d+\.\d$/.test(await ann.locator('#stat-in').textContent()), 5000, 'the rates');
    assert.ok(Number(await ann.locator('#stat-conns').textContent()) >= 3, 'connections: at least the 3 pages');
    await ann.screenshot({ path: path.join(OUT, 'ann.png') });
    await cid.screenshot({ path: path.join(OUT, 'cid-sse.png') });
    assert.ok(fs.statSync(path.join(OUT, 'ann.png')).size > 1000);
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the pages');
  });
});
