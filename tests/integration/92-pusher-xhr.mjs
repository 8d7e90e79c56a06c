// 92-pusher-xhr: where WebSocket cannot pass (issue 14). A test proxy in front of plexus
// refuses every WebSocket upgrade and forwards plain HTTP, as Apache without mod_proxy_wstunnel
// or a corporate proxy does. pusher-js then falls back to its xhr_streaming and xhr_polling
// transports, which plexus serves at /pusher/app/{key}/{server}/{session}/...: the default
// strategy finds them by itself, and each one alone carries everything (subscribe, events from
// the SDK, client events both ways with a WebSocket client, presence), several workers share
// a session's requests, and a restart closes the session with 4200. Then laravel-echo on top
// of pusher-js (listen, private, presence here/joining/leaving, whisper).

import assert from 'node:assert/strict';
import http from 'node:http';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import {
  APP,
  client,
  closeCodes,
  collect,
  connected,
  once,
  Pusher,
  sdk,
  sleep,
  startAuthServer,
  startPusherServer,
  subscribed,
} from './pusher-kit.mjs';
import { stopAll, waitFor } from './plexus-server.mjs';

const require = createRequire(import.meta.url);

/** A proxy to 127.0.0.1:`port` that refuses WebSocket upgrades. */
async function refusingProxy(port) {
  const upgrades = [];
  const forwarded = [];
  const p = http.createServer((req, res) => {
    forwarded.push(req.url);
    const up = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
    res.on('close', () => up.destroy());
  });
  p.on('upgrade', (req, socket) => {
    upgrades.push(req.url);
    socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
  });
  await new Promise((r) => p.listen(0, '127.0.0.1', r));
  return { port: p.address().port, upgrades, forwarded, close: () => new Promise((r) => p.close(r)), server: p };
}

describe('pusher-js without WebSocket: xhr_streaming and xhr_polling', () => {
  let srv;
  let server;
  let auth;
  let proxy;
  const clients = [];
  const track = (c) => (clients.push(c), c);
  const viaProxy = (o = {}) => ({ port: proxy.port });

  before(async () => {
    srv = await startPusherServer('92-pusher-xhr', { workers: 3 });
    server = sdk(srv);
    auth = await startAuthServer(server);
    proxy = await refusingProxy(srv.port);
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await auth?.close();
    proxy?.server.closeAllConnections?.();
    await proxy?.close();
    await stopAll();
  });

  it('the default strategy falls back to HTTP when the upgrade is refused', async () => {
    const c = track(client(viaProxy(), { auth, user: 'fb', transports: undefined, extra: { enabledTransports: undefined } }));
    await connected(c, 30000);
    assert.ok(proxy.upgrades.length >= 1, 'a WebSocket was tried and refused');
    assert.match(c.connection.connection.transport.name, /^xhr_(streaming|polling)$/);
    const { ch } = await subscribed(c, 'fallback');
    const got = collect(ch, 'ev');
    await server.trigger('fallback', 'ev', { via: 'http' });
    await waitFor(() => got.length === 1, 5000, 'an event over the fallback');
    c.disconnect();
  });

  for (const transport of ['xhr_streaming', 'xhr_polling']) {
    it(`${transport} carries the whole protocol`, async () => {
      const x = track(client(viaProxy(), { auth, user: `x-${transport}`, transports: [transport] }));
      const w = track(client(srv, { auth, user: `w-${transport}` })); // a WebSocket client
      const sid = await connected(x);
      assert.match(sid, /^\d+\.\d+$/);
      assert.equal(x.connection.connection.transport.name, transport);
      await connected(w);
      const name = `private-${transport.replace('_', '-')}`;
      const { ch: cx } = await subscribed(x, name);
      const { ch: cw } = await subscribed(w, name);
      const fromSdk = collect(cx, 'sdk');
      const fromW = collect(cx, 'client-w');
      const fromX = collect(cw, 'client-x');
      // Many events, in order.
      for (let i = 0; i < 20; i++) await server.trigger(name, 'sdk', { i });
      await waitFor(() => fromSdk.length === 20, 8000, 'twenty events');
      assert.deepEqual(fromSdk.map((d) => d.i), [...Array(20).keys()]);
      cw.trigger('client-w', { from: 'ws' });
      cx.trigger('client-x', { from: transport });
      await waitFor(() => fromW.length === 1 && fromX.length === 1, 5000, 'client events both ways');
      assert.deepEqual(fromX[0], { from: transport });
      // Presence over xhr.
      const { data: members } = await subscribed(x, 'presence-xhr');
      assert.equal(members.me.id, `x-${transport}`);
      const joined = collect(x.channel('presence-xhr'), 'pusher:member_added');
      await subscribed(w, 'presence-xhr');
      await waitFor(() => joined.length === 1, 5000, 'member_added over xhr');
      // Big payloads keep their bytes.
      const bigGot = collect(cx, 'big');
      const big = 'é'.repeat(20000);
      await server.trigger(name, 'big', big);
      await waitFor(() => bigGot.length === 1, 5000, 'a large event');
      assert.equal(bigGot[0], big);
      x.disconnect();
      w.disconnect();
    });
  }

  it('a restart closes xhr sessions with 4200, and they come back', async () => {
    const x = track(client(viaProxy(), { transports: ['xhr_streaming'] }));
    const sid1 = await connected(x);
    const codes = closeCodes(x);
    const { ch } = await subscribed(x, 'restart-xhr');
    const got = collect(ch, 'back');
    await srv.restart();
    await waitFor(() => codes.includes(4200), 10000, '4200 on the xhr session');
    await waitFor(() => x.connection.state === 'connected' && x.connection.socket_id !== sid1, 30000, 'reconnected');
    await waitFor(() => ch.subscribed, 5000, 'resubscribed');
    await server.trigger('restart-xhr', 'back', 1);
    await waitFor(() => got.length === 1, 5000, 'an event after the restart');
    x.disconnect();
  });

  it('an unknown session, a bad path, an unknown key', async () => {
    const base = `http://127.0.0.1:${srv.port}/pusher/app/${APP.key}`;
    const send = await fetch(`${base}/1/nosession/xhr_send`, { method: 'POST', body: '["{}"]' });
    assert.equal(send.status, 404);
    const bad = await fetch(`${base}/1/bad%20id/xhr`, { method: 'POST' });
    assert.equal(bad.status, 400);
    const unknown = await fetch(`http://127.0.0.1:${srv.port}/pusher/app/nope/1/abc/xhr?protocol=7`, { method: 'POST' });
    assert.equal(unknown.status, 200);
    assert.equal(await unknown.text(), 'c[4001,"App key not in this server"]\n');
    const pre = await fetch(`${base}/1/abc/xhr_send`, { method: 'OPTIONS', headers: { origin: 'http://x.example' } });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), 'http://x.example');
  });
});

describe('laravel-echo on pusher-js', () => {
  let srv;
  let server;
  let auth;
  const echos = [];
  before(async () => {
    srv = await startPusherServer('92-pusher-echo');
    server = sdk(srv);
    auth = await startAuthServer(server);
  });
  after(async () => {
    for (const e of echos) e.disconnect();
    await auth?.close();
    await stopAll();
  });

  const echo = async (user) => {
    const { default: Echo } = await import('laravel-echo');
    const e = new Echo({
      broadcaster: 'pusher',
      Pusher,
      key: APP.key,
      cluster: 'plexus',
      wsHost: '127.0.0.1',
      wsPort: srv.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      authEndpoint: `${auth.url}/auth`,
      auth: { headers: { 'X-User': user } },
    });
    echos.push(e);
    return e;
  };

  it('listen, private, presence here/joining/leaving, whisper', async () => {
    const a = await echo('ada');
    const b = await echo('bo');
    const orders = [];
    a.channel('orders').listen('.OrderShipped', (e) => orders.push(e));
    const namespaced = [];
    a.channel('orders').listen('OrderPaid', (e) => namespaced.push(e));
    const priv = [];
    a.private('account.1').listen('.Updated', (e) => priv.push(e));
    await waitFor(() => a.connector.pusher.channel('private-account.1')?.subscribed && a.connector.pusher.channel('orders')?.subscribed, 5000, 'echo subscribed');
    await server.trigger('orders', 'OrderShipped', { id: 1 });
    await server.trigger('orders', 'App\\Events\\OrderPaid', { id: 2 });
    await server.trigger('private-account.1', 'Updated', { ok: true });
    await waitFor(() => orders.length === 1 && namespaced.length === 1 && priv.length === 1, 5000, 'echo events');
    assert.deepEqual(orders[0], { id: 1 });
    assert.deepEqual(namespaced[0], { id: 2 });

    let here = null;
    const joining = [];
    const leaving = [];
    const whispers = [];
    a.join('room.1')
      .here((users) => (here = users))
      .joining((u) => joining.push(u))
      .leaving((u) => leaving.push(u))
      .listenForWhisper('typing', (e) => whispers.push(e));
    await waitFor(() => here !== null, 5000, 'here()');
    assert.deepEqual(here, [{ name: 'User ada' }]);
    const room = b.join('room.1');
    await waitFor(() => joining.length === 1, 5000, 'joining()');
    assert.deepEqual(joining[0], { name: 'User bo' });
    await waitFor(() => b.connector.pusher.channel('presence-room.1')?.subscribed, 5000, 'b in the room');
    room.whisper('typing', { who: 'bo' });
    await waitFor(() => whispers.length === 1, 5000, 'whisper');
    assert.deepEqual(whispers[0], { who: 'bo' });
    b.leave('room.1');
    await waitFor(() => leaving.length === 1, 5000, 'leaving()');
    assert.deepEqual(leaving[0], { name: 'User bo' });
    await sleep(100);
  });
});
