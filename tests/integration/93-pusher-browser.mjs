// 93-pusher-browser: pusher-js and laravel-echo in a real browser (issue 14): Debian's
// chromium (/usr/bin/chromium) driven by playwright-core. The test page comes from another
// origin (the auth server, as a Laravel app serves its pages), loads pusher-js's browser build
// and laravel-echo's, and talks to plexus:
//   - over WebSocket: two tabs of one user in a presence channel are one member for a third
//     page, an SDK trigger reaches every page, a client event goes from one page to another;
//   - without WebSocket (window.WebSocket removed, as where a proxy blocks it): pusher-js
//     falls back to xhr_streaming and then, with streaming refused too, xhr_polling, cross-
//     origin (CORS), and still gets events and sends client events;
//   - laravel-echo's iife build: listen and presence here().

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { APP, sdk, startAuthServer, startPusherServer } from './pusher-kit.mjs';
import { stopAll, waitFor } from './plexus-server.mjs';

const CHROMIUM = process.env.PX_CHROMIUM || '/usr/bin/chromium';
const NM = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'node_modules');

let srv;
let server;
let auth;
let browser;

const PAGE = `<!doctype html><meta charset="utf-8"><title>pusher test</title>
<script src="/pusher.js"></script><script src="/echo.js"></script>
<script>
  window.log = [];
  window.make = (o) => {
    const p = new Pusher(o.key, Object.assign({
      cluster: 'plexus', wsHost: '127.0.0.1', wsPort: o.port, httpHost: '127.0.0.1', httpPort: o.port,
      forceTLS: false, disableStats: true,
      channelAuthorization: { endpoint: '/auth', transport: 'ajax', headers: { 'X-User': o.user } },
    }, o.extra || {}));
    window.p = p;
    return p;
  };
  window.sub = (name) => new Promise((resolve, reject) => {
    const ch = window.p.subscribe(name);
    ch.bind('pusher:subscription_succeeded', (d) => resolve(d && d.count !== undefined ? { count: d.count, me: d.me } : true));
    ch.bind('pusher:subscription_error', (e) => reject(new Error(JSON.stringify(e))));
    ch.bind_global((ev, d) => { if (!ev.startsWith('pusher')) window.log.push([name, ev, d]); });
    ch.bind('pusher:member_added', (m) => window.log.push([name, 'added', m.id]));
    ch.bind('pusher:member_removed', (m) => window.log.push([name, 'removed', m.id]));
  });
  window.connected = () => new Promise((resolve) => {
    if (window.p.connection.state === 'connected') return resolve(window.p.connection.connection.transport.name);
    window.p.connection.bind('connected', () => resolve(window.p.connection.connection.transport.name));
  });
</script>`;

async function open(user, { noWebSocket = false, extra = {} } = {}) {
  const ctx = await browser.newContext();
  ctx.setDefaultTimeout(15000);
  if (noWebSocket) {
    await ctx.addInitScript(() => {
      window.WebSocket = undefined;
    });
  }
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${auth.url}/page.html`);
  await page.evaluate((o) => {
    window.make(o);
  }, { key: APP.key, port: srv.port, user, extra });
  page.errors = errors;
  return page;
}

const logOf = (page) => page.evaluate(() => window.log);

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (Debian package chromium, see deps/debian.txt)`);
  srv = await startPusherServer('93-pusher-browser');
  server = sdk(srv);
  auth = await startAuthServer(server, {
    '/page.html': { type: 'text/html; charset=utf-8', body: PAGE },
    '/pusher.js': { type: 'text/javascript', body: fs.readFileSync(path.join(NM, 'pusher-js/dist/web/pusher.min.js')) },
    '/echo.js': { type: 'text/javascript', body: fs.readFileSync(path.join(NM, 'laravel-echo/dist/echo.iife.js')) },
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
});

after(async () => {
  await browser?.close();
  await auth?.close();
  await stopAll();
});

describe('pusher-js in Chromium', () => {
  it('WebSocket: presence with two tabs of one user, SDK events, client events between pages', async () => {
    const tab1 = await open('alice', { extra: { enabledTransports: ['ws'] } });
    const tab2 = await open('alice', { extra: { enabledTransports: ['ws'] } });
    const bob = await open('bob', { extra: { enabledTransports: ['ws'] } });
    for (const p of [tab1, tab2, bob]) assert.equal(await p.evaluate(() => window.connected()), 'ws');
    assert.equal((await tab1.evaluate(() => window.sub('presence-web'))).count, 1);
    assert.equal((await tab2.evaluate(() => window.sub('presence-web'))).count, 1, 'the same user: one member');
    const b = await bob.evaluate(() => window.sub('presence-web'));
    assert.equal(b.count, 2);
    await waitFor(async () => (await logOf(tab1)).some((l) => l[1] === 'added' && l[2] === 'bob'), 5000, 'alice sees bob');
    assert.ok(!(await logOf(bob)).some((l) => l[1] === 'added'), 'bob saw nobody join after him');
    await server.trigger('presence-web', 'news', { n: 1 });
    for (const p of [tab1, tab2, bob])
      await waitFor(async () => (await logOf(p)).some((l) => l[1] === 'news' && l[2].n === 1), 5000, 'news in every page');
    await tab1.evaluate(() => window.p.channel('presence-web').trigger('client-hi', { from: 'tab1' }));
    await waitFor(async () => (await logOf(bob)).some((l) => l[1] === 'client-hi'), 5000, 'client event in bob');
    await waitFor(async () => (await logOf(tab2)).some((l) => l[1] === 'client-hi'), 5000, 'client event in tab2');
    assert.ok(!(await logOf(tab1)).some((l) => l[1] === 'client-hi'), 'not echoed');
    await tab1.close();
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(!(await logOf(bob)).some((l) => l[1] === 'removed'), 'alice still has a tab');
    await tab2.close();
    await waitFor(async () => (await logOf(bob)).some((l) => l[1] === 'removed' && l[2] === 'alice'), 5000, 'alice gone');
    for (const p of [tab1, tab2, bob]) assert.deepEqual(p.errors, []);
    await bob.close();
  });

  for (const transport of ['xhr_streaming', 'xhr_polling']) {
    it(`no WebSocket: ${transport}, cross-origin`, async () => {
      const page = await open(`x-${transport}`, { noWebSocket: true, extra: { enabledTransports: [transport] } });
      assert.equal(await page.evaluate(() => window.connected()), transport);
      await page.evaluate(() => window.sub('private-noweb'));
      for (let i = 0; i < 5; i++) await server.trigger('private-noweb', 'ev', { i });
      await waitFor(async () => (await logOf(page)).filter((l) => l[1] === 'ev').length === 5, 8000, 'five events');
      assert.deepEqual((await logOf(page)).filter((l) => l[1] === 'ev').map((l) => l[2].i), [0, 1, 2, 3, 4]);
      // A client event from the page reaches a WebSocket page.
      const ws = await open('w', { extra: { enabledTransports: ['ws'] } });
      await ws.evaluate(() => window.sub('private-noweb'));
      await page.evaluate(() => window.p.channel('private-noweb').trigger('client-up', { via: 'xhr' }));
      await waitFor(async () => (await logOf(ws)).some((l) => l[1] === 'client-up'), 5000, 'client event from xhr');
      assert.deepEqual(page.errors, []);
      await page.close();
      await ws.close();
    });
  }

  it('no WebSocket at all: the default strategy finds HTTP by itself', async () => {
    const page = await open('auto', { noWebSocket: true });
    assert.match(await page.evaluate(() => window.connected()), /^xhr_(streaming|polling)$/);
    await page.evaluate(() => window.sub('auto'));
    await server.trigger('auto', 'ev', 1);
    await waitFor(async () => (await logOf(page)).some((l) => l[1] === 'ev'), 5000, 'an event');
    await page.close();
  });

  it('laravel-echo (its browser build): listen and presence here()', async () => {
    const page = await open('echo', { extra: { enabledTransports: ['ws'] } });
    await page.evaluate(
      ({ key, port }) => {
        window.Pusher = Pusher;
        window.e = new Echo.default({
          broadcaster: 'pusher', key, cluster: 'plexus', wsHost: '127.0.0.1', wsPort: port, forceTLS: false,
          enabledTransports: ['ws'], disableStats: true, authEndpoint: '/auth', auth: { headers: { 'X-User': 'echo' } },
        });
        window.e.channel('orders').listen('.Shipped', (d) => window.log.push(['echo', 'Shipped', d]));
        window.e.join('lobby').here((users) => window.log.push(['echo', 'here', users]));
      },
      { key: APP.key, port: srv.port },
    );
    await waitFor(async () => (await logOf(page)).some((l) => l[1] === 'here'), 5000, 'here()');
    await waitFor(() => page.evaluate(() => window.e.connector.pusher.channel('orders')?.subscribed), 5000, 'subscribed');
    await server.trigger('orders', 'Shipped', { id: 9 });
    await waitFor(async () => (await logOf(page)).some((l) => l[1] === 'Shipped' && l[2].id === 9), 5000, 'Shipped');
    const here = (await logOf(page)).find((l) => l[1] === 'here')[2];
    assert.deepEqual(here, [{ name: 'User echo' }]);
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});
