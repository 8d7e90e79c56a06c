// 90-pusher-js: the Pusher protocol v7 with the real clients (issue 14): pusher-js for Node
// against plexus, the `pusher` server SDK for triggers and auth (through a small auth server,
// as a Laravel app does), and raw WebSocket clients for what pusher-js hides (close codes,
// the handshake, pings). Every channel type, presence with two tabs of one user, client
// events and their rate limit, cache channels, encrypted channels end to end, sign-in with
// sendToUser, the watchlist and terminate, the "must sign in" rule, each connection error
// code, and reconnecting after a server restart (4200). Then the same clients over TLS
// (plexus --tls): pusher-js on wss://, the SDK on https://.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import {
  APP,
  client,
  closeCodes,
  collect,
  connected,
  once,
  scaled,
  sdk,
  sleep,
  startAuthServer,
  startPusherServer,
  subscribed,
} from './pusher-kit.mjs';
import { outDir, stopAll, waitFor } from './plexus-server.mjs';

const APPS = [
  { ...APP, 'max-client-events-per-second': 10 },
  { id: '102', key: 'off-key', secret: 'off-secret', enabled: false },
  { id: '103', key: 'quota-key', secret: 'quota-secret', 'max-connections': 1 },
  { id: '104', key: 'noce-key', secret: 'noce-secret', 'client-events': false },
  { id: '105', key: 'signin-key', secret: 'signin-secret', 'user-authentication': true, 'user-authentication-timeout': '1s' },
  { id: '106', key: 'fast-key', secret: 'fast-secret', 'activity-timeout': 1 },
  { id: '107', key: 'origin-key', secret: 'origin-secret', 'allowed-origins': ['https://good.example'] },
  { id: '108', key: 'small-key', secret: 'small-secret', 'max-presence-members': 2 },
];

let srv;
let server;
let auth;
const clients = [];

function track(c) {
  clients.push(c);
  return c;
}

/** A raw WebSocket to /app/{key}: its messages (parsed) and its close. */
function raw(path, headers = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}${path}`, { headers });
  const msgs = [];
  const waiters = [];
  ws.on('message', (d) => {
    const m = JSON.parse(String(d));
    if (typeof m.data === 'string') {
      try {
        m.data = JSON.parse(m.data);
      } catch {
        /* a string */
      }
    }
    msgs.push(m);
    for (const w of waiters.splice(0)) w();
  });
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  ws.on('error', () => {});
  return {
    ws,
    msgs,
    closed,
    send: (o) => ws.send(JSON.stringify(o)),
    async next(event, ms = 5000) {
      const deadline = Date.now() + scaled(ms);
      for (;;) {
        const i = msgs.findIndex((m) => m.event === event);
        if (i >= 0) return msgs.splice(i, 1)[0];
        if (Date.now() > deadline) throw new Error(`no ${event} within ${scaled(ms)} ms; got ${JSON.stringify(msgs)}`);
        await new Promise((r) => {
          waiters.push(r);
          setTimeout(r, 50);
        });
      }
    },
  };
}

describe('pusher-js and the pusher SDK against plexus', () => {
  before(async () => {
    srv = await startPusherServer('90-pusher-js', { apps: APPS });
    server = sdk(srv);
    auth = await startAuthServer(server);
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await auth?.close();
    await stopAll();
  });

  it('handshake: socket_id, activity_timeout, ping and pong both ways', async () => {
    const a = raw(`/app/${APP.key}?protocol=7&client=js&version=8.6.0&flash=false`);
    const est = await a.next('pusher:connection_established');
    assert.match(est.data.socket_id, /^\d+\.\d+$/);
    assert.equal(est.data.activity_timeout, 30);
    a.send({ event: 'pusher:ping', data: {} });
    await a.next('pusher:pong');
    const b = raw(`/app/${APP.key}?protocol=7`);
    const est2 = await b.next('pusher:connection_established');
    assert.notEqual(est2.data.socket_id, est.data.socket_id);
    a.ws.close();
    b.ws.close();
    // The server pings a silent connection and closes it with 4201 when no pong comes.
    const f = raw('/app/fast-key?protocol=7');
    await f.next('pusher:connection_established');
    await f.next('pusher:ping', 3000);
    assert.equal((await f.closed).code, 4201);
    // A connection that answers every ping stays.
    const g = raw('/app/fast-key?protocol=7');
    await g.next('pusher:connection_established');
    let pongs = 0;
    g.ws.on('message', (d) => {
      if (JSON.parse(String(d)).event === 'pusher:ping') {
        g.send({ event: 'pusher:pong', data: {} });
        pongs++;
      }
    });
    await sleep(3500);
    assert.ok(pongs >= 2, `answered ${pongs} pings`);
    assert.equal(g.ws.readyState, WebSocket.OPEN);
    g.ws.close();
  });

  it('connection errors: 4001 4003 4004 4005 4006 4007 4008 4009, and pusher-js gives up', async () => {
    const cases = [
      ['/app/nope?protocol=7', 4001],
      ['/app/off-key?protocol=7', 4003],
      ['/app/app-key/extra?protocol=7', 4005],
      ['/app/app-key?protocol=x7', 4006],
      ['/app/app-key?protocol=3', 4007],
      ['/app/app-key', 4008],
    ];
    for (const [path, code] of cases) {
      const r = raw(path);
      const err = await r.next('pusher:error');
      assert.equal(err.data.code, code, path);
      assert.equal((await r.closed).code, code, path);
    }
    const held = raw('/app/quota-key?protocol=7');
    await held.next('pusher:connection_established');
    const over = raw('/app/quota-key?protocol=7');
    assert.equal((await over.closed).code, 4004);
    held.ws.close();
    const bad = raw('/app/origin-key?protocol=7', { origin: 'https://evil.example' });
    assert.equal((await bad.closed).code, 4009);
    const good = raw('/app/origin-key?protocol=7', { origin: 'https://good.example' });
    await good.next('pusher:connection_established');
    good.ws.close();
    // pusher-js: an unknown key is refused for good (no reconnect loop).
    const c = track(client(srv, { app: { key: 'nope' } }));
    const codes = closeCodes(c);
    await waitFor(() => codes.includes(4001), 5000, 'error 4001 in pusher-js');
    await sleep(1500);
    assert.ok(['failed', 'disconnected', 'unavailable'].includes(c.connection.state), c.connection.state);
    c.disconnect();
  });

  it('public channel: the SDK triggers, every subscriber gets it, socket_id is excluded', async () => {
    const a = track(client(srv));
    const b = track(client(srv));
    const sidA = await connected(a);
    await connected(b);
    const { ch: ca } = await subscribed(a, 'chat');
    const { ch: cb } = await subscribed(b, 'chat');
    const gotA = collect(ca, 'greet');
    const gotB = collect(cb, 'greet');
    const r = await server.trigger('chat', 'greet', { hello: 'world' });
    assert.equal(r.status, 200);
    await waitFor(() => gotA.length === 1 && gotB.length === 1, 5000, 'both got greet');
    assert.deepEqual(gotB[0], { hello: 'world' });
    await server.trigger('chat', 'greet', { n: 2 }, { socket_id: sidA });
    await waitFor(() => gotB.length === 2, 5000, 'b got the second');
    await sleep(300);
    assert.equal(gotA.length, 1, 'the excluded socket got nothing');
    // Several channels at once, and a batch.
    const { ch: other } = await subscribed(b, 'other');
    const gotO = collect(other, 'multi');
    const gotM = collect(cb, 'multi');
    await server.trigger(['chat', 'other'], 'multi', 'text');
    await server.triggerBatch([
      { channel: 'chat', name: 'multi', data: 'b1' },
      { channel: 'other', name: 'multi', data: 'b2' },
    ]);
    await waitFor(() => gotO.length === 2 && gotM.length === 2, 5000, 'multi and batch');
    assert.deepEqual(gotM, ['text', 'b1']);
    assert.deepEqual(gotO, ['text', 'b2']);
    a.disconnect();
    b.disconnect();
  });

  it('private channels: signed through the auth endpoint; a bad signature is refused', async () => {
    const a = track(client(srv, { auth, user: 'u1' }));
    const { ch } = await subscribed(a, 'private-orders');
    const got = collect(ch, 'paid');
    await server.trigger('private-orders', 'paid', { id: 7 });
    await waitFor(() => got.length === 1, 5000, 'paid');
    const r = raw(`/app/${APP.key}?protocol=7`);
    await r.next('pusher:connection_established');
    r.send({ event: 'pusher:subscribe', data: { channel: 'private-orders', auth: `${APP.key}:${'0'.repeat(64)}` } });
    const err = await r.next('pusher:subscription_error');
    assert.equal(err.channel, 'private-orders');
    assert.equal(err.data.status, 401);
    r.send({ event: 'pusher:subscribe', data: { channel: 'private-orders' } });
    assert.equal((await r.next('pusher:subscription_error')).data.status, 401);
    r.ws.close();
    a.disconnect();
  });

  it('presence: members, two tabs of one user are one member, never told about itself', async () => {
    const a1 = track(client(srv, { auth, user: 'alice' }));
    const { ch: pa1, data: m1 } = await subscribed(a1, 'presence-room');
    assert.equal(m1.count, 1);
    assert.equal(m1.me.id, 'alice');
    const selfA1 = collect(pa1, 'pusher:member_added');
    const b = track(client(srv, { auth, user: 'bob' }));
    const { ch: pb, data: mb } = await subscribed(b, 'presence-room');
    assert.equal(mb.count, 2);
    assert.deepEqual(Object.keys(mb.members).sort(), ['alice', 'bob']);
    assert.deepEqual(mb.members.alice, { name: 'User alice' });
    const addedB = collect(pb, 'pusher:member_added');
    const removedB = collect(pb, 'pusher:member_removed');
    await waitFor(() => selfA1.length === 1, 5000, 'alice sees bob');
    assert.equal(selfA1[0].id, 'bob');
    // A second tab of alice: nothing for bob, nothing for alice.
    const a2 = track(client(srv, { auth, user: 'alice' }));
    const { data: m2 } = await subscribed(a2, 'presence-room');
    assert.equal(m2.count, 2);
    await sleep(400);
    assert.equal(addedB.length, 0, 'bob saw no member_added for a second tab');
    assert.equal(selfA1.length, 1, 'alice saw nothing about herself');
    // The first tab goes: alice is still there.
    a1.disconnect();
    await sleep(400);
    assert.equal(removedB.length, 0);
    const info = await (await server.get({ path: '/channels/presence-room', params: { info: 'user_count,subscription_count' } })).json();
    assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 2 });
    const users = await (await server.get({ path: '/channels/presence-room/users' })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ['alice', 'bob']);
    a2.disconnect();
    await waitFor(() => removedB.length === 1, 5000, 'member_removed once the last tab left');
    assert.equal(removedB[0].id, 'alice');
    b.disconnect();
  });

  it('presence: the member bound refuses a new user, not another tab', async () => {
    const small = { key: 'small-key' };
    const s = sdk(srv, { id: '108', key: 'small-key', secret: 'small-secret' });
    const sauth = await startAuthServer(s);
    try {
      const u1 = track(client(srv, { app: small, auth: sauth, user: 'x1' }));
      const u2 = track(client(srv, { app: small, auth: sauth, user: 'x2' }));
      await subscribed(u1, 'presence-full');
      await subscribed(u2, 'presence-full');
      const u3 = track(client(srv, { app: small, auth: sauth, user: 'x3' }));
      const ch = u3.subscribe('presence-full');
      const err = await once(ch, 'pusher:subscription_error');
      assert.equal(err.type, 'LimitReached');
      const u1b = track(client(srv, { app: small, auth: sauth, user: 'x1' }));
      await subscribed(u1b, 'presence-full');
      for (const c of [u1, u2, u3, u1b]) c.disconnect();
    } finally {
      await sauth.close();
    }
  });

  it('client events: private and presence only, never echoed, user_id on presence, 10/s then 4301', async () => {
    const a = track(client(srv, { auth, user: 'carol' }));
    const b = track(client(srv, { auth, user: 'dave' }));
    const { ch: pa } = await subscribed(a, 'private-typing');
    const { ch: pb } = await subscribed(b, 'private-typing');
    const gotA = collect(pa, 'client-typing');
    const gotB = collect(pb, 'client-typing');
    assert.ok(pa.trigger('client-typing', { on: true }));
    await waitFor(() => gotB.length === 1, 5000, 'b got the client event');
    assert.deepEqual(gotB[0], { on: true });
    await sleep(300);
    assert.equal(gotA.length, 0, 'not echoed to the sender');
    // presence: with the sender's user_id
    const { ch: qa } = await subscribed(a, 'presence-typing');
    const { ch: qb } = await subscribed(b, 'presence-typing');
    const gotQ = [];
    qb.bind('client-wave', (d, meta) => gotQ.push({ d, meta }));
    qa.trigger('client-wave', { hi: 1 });
    await waitFor(() => gotQ.length === 1, 5000, 'presence client event');
    assert.equal(gotQ[0].meta.user_id, 'carol');
    // A public channel takes none (pusher:error, the connection stays).
    const errors = [];
    a.connection.bind('error', (e) => errors.push(e?.data ?? e?.error?.data));
    await subscribed(a, 'public-room');
    a.send_event('client-x', { a: 1 }, 'public-room');
    await waitFor(() => errors.length === 1, 5000, 'error for a public channel');
    assert.equal(errors[0].code, null);
    // The rate: 10 per second; the rest get 4301, the connection stays.
    await sleep(1100);
    const before = gotB.length;
    for (let i = 0; i < 15; i++) pa.trigger('client-typing', { i });
    await waitFor(() => errors.filter((e) => e.code === 4301).length >= 4, 5000, '4301 errors');
    await sleep(500);
    const through = gotB.length - before;
    assert.ok(through >= 10 && through <= 11, `delivered ${through} of 15`);
    assert.equal(a.connection.state, 'connected');
    a.disconnect();
    b.disconnect();
    // An app without client events refuses them.
    const nsdk = sdk(srv, { id: '104', key: 'noce-key', secret: 'noce-secret' });
    const nauth = await startAuthServer(nsdk);
    try {
      const n = track(client(srv, { app: { key: 'noce-key' }, auth: nauth }));
      const { ch } = await subscribed(n, 'private-q');
      const errs = [];
      n.connection.bind('error', (e) => errs.push(e?.data ?? e?.error?.data));
      ch.trigger('client-q', {});
      await waitFor(() => errs.length === 1, 5000, 'client events disabled');
      assert.match(errs[0].message, /not enabled/);
      n.disconnect();
    } finally {
      await nauth.close();
    }
  });

  it('cache channels: cache_miss first, then the last event for every new subscriber', async () => {
    for (const name of ['cache-news', 'private-cache-news', 'presence-cache-news']) {
      const a = track(client(srv, { auth, user: 'eve' }));
      const ch = a.subscribe(name);
      await once(ch, 'pusher:cache_miss', 5000, `cache_miss on ${name}`);
      await server.trigger(name, 'headline', { n: 1 });
      await server.trigger(name, 'headline', { n: 2 });
      const b = track(client(srv, { auth, user: 'frank' }));
      const cb = b.subscribe(name);
      const got = await once(cb, 'headline', 5000, `the cached event on ${name}`);
      assert.deepEqual(got, { n: 2 });
      const info = await (await server.get({ path: `/channels/${name}`, params: { info: 'cache' } })).json();
      assert.equal(info.cache.event, 'headline');
      assert.equal(info.cache.data, '{"n":2}');
      assert.ok(info.cache.ttl > 0 && info.cache.ttl <= 1800);
      a.disconnect();
      b.disconnect();
    }
  });

  it('encrypted channels: end to end with the SDK master key; opaque to the server', async () => {
    const a = track(client(srv, { auth, user: 'gina' }));
    const { ch } = await subscribed(a, 'private-encrypted-vault');
    const got = collect(ch, 'secret');
    await server.trigger('private-encrypted-vault', 'secret', { pin: '1234' });
    await waitFor(() => got.length === 1, 5000, 'decrypted event');
    assert.deepEqual(got[0], { pin: '1234' });
    // What the hub stored (native HTTP API) is ciphertext only.
    const hist = await srv.http('GET', '/api/channels/private-encrypted-vault/messages?since=0');
    assert.equal(hist.status, 200);
    const stored = JSON.parse(hist.json.messages.at(-1).data);
    assert.ok(stored.ciphertext && stored.nonce && !JSON.stringify(stored).includes('1234'));
    // Client events are refused there (the server checks too, not only pusher-js).
    const r = raw(`/app/${APP.key}?protocol=7`);
    const est = await r.next('pusher:connection_established');
    const sig = server.authorizeChannel(est.data.socket_id, 'private-encrypted-vault');
    r.send({ event: 'pusher:subscribe', data: { channel: 'private-encrypted-vault', auth: sig.auth } });
    await r.next('pusher_internal:subscription_succeeded');
    r.send({ event: 'client-x', channel: 'private-encrypted-vault', data: {} });
    const e = await r.next('pusher:error');
    assert.match(e.data.message, /encrypted/);
    r.ws.close();
    a.disconnect();
  });

  it('sign-in: signin_success, sendToUser, the watchlist, terminate_connections', async () => {
    const alice = track(client(srv, { auth, user: 'alice', watch: ['bob'] }));
    await connected(alice);
    const watch = [];
    alice.user.watchlist.bind('online', (e) => watch.push(['online', e.user_ids]));
    alice.user.watchlist.bind('offline', (e) => watch.push(['offline', e.user_ids]));
    alice.signin();
    await alice.user.signinDonePromise;
    assert.equal(alice.user.user_data.id, 'alice');
    await waitFor(() => alice.user.serverToUserChannel?.subscribed, 5000, 'the #server-to-user channel');
    const notes = collect(alice.user, 'note');
    await server.sendToUser('alice', 'note', { hi: 'there' });
    await waitFor(() => notes.length === 1, 5000, 'sendToUser');
    assert.deepEqual(notes[0], { hi: 'there' });
    // bob comes online, then goes.
    const bob = track(client(srv, { auth, user: 'bob' }));
    bob.signin();
    await bob.user.signinDonePromise;
    await waitFor(() => watch.length === 1, 5000, 'bob online');
    assert.deepEqual(watch[0], ['online', ['bob']]);
    bob.disconnect();
    await waitFor(() => watch.length === 2, 5000, 'bob offline');
    assert.deepEqual(watch[1], ['offline', ['bob']]);
    // Someone else cannot subscribe to alice's channel.
    const r = raw(`/app/${APP.key}?protocol=7`);
    await r.next('pusher:connection_established');
    r.send({ event: 'pusher:subscribe', data: { channel: '#server-to-user-alice', auth: '' } });
    assert.equal((await r.next('pusher:subscription_error')).data.status, 403);
    r.ws.close();
    // Terminate: closed with 4009, and pusher-js does not come back.
    const codes = closeCodes(alice);
    const second = track(client(srv, { auth, user: 'alice' }));
    second.signin();
    await second.user.signinDonePromise;
    const codes2 = closeCodes(second);
    const res = await server.terminateUserConnections('alice');
    assert.equal(res.status, 200);
    await waitFor(() => codes.includes(4009) && codes2.includes(4009), 5000, '4009 for both');
    await sleep(1000);
    assert.notEqual(alice.connection.state, 'connected');
  });

  it('an app that requires sign-in closes connections that do not sign in within the limit', async () => {
    const r = raw('/app/signin-key?protocol=7');
    await r.next('pusher:connection_established');
    const closed = await r.closed;
    assert.equal(closed.code, 4009);
    const s = sdk(srv, { id: '105', key: 'signin-key', secret: 'signin-secret' });
    const sauth = await startAuthServer(s);
    try {
      const c = track(client(srv, { app: { key: 'signin-key' }, auth: sauth, user: 'ivan' }));
      await connected(c);
      c.signin();
      await c.user.signinDonePromise;
      await sleep(1500);
      assert.equal(c.connection.state, 'connected');
      c.disconnect();
    } finally {
      await sauth.close();
    }
  });

  it('a graceful restart closes with 4200 and pusher-js reconnects and resubscribes', async () => {
    const r = raw(`/app/${APP.key}?protocol=7`);
    await r.next('pusher:connection_established');
    const c = track(client(srv));
    const sid1 = await connected(c);
    const { ch } = await subscribed(c, 'after-restart');
    const got = collect(ch, 'back');
    const codes = closeCodes(c);
    await server.trigger('cache-survives', 'kept', { v: 1 });
    const t0 = Date.now();
    const restarted = srv.restart();
    const closed = await r.closed;
    assert.equal(closed.code, 4200);
    await restarted;
    console.log(`restart took ${Date.now() - t0} ms`);
    await waitFor(() => c.connection.state === 'connected' && c.connection.socket_id !== sid1, 30000, 'reconnected');
    console.log(`reconnected ${Date.now() - t0} ms after the restart began`);
    assert.ok(codes.includes(4200), `codes ${codes}`);
    await waitFor(() => ch.subscribed, 5000, 'resubscribed');
    await server.trigger('after-restart', 'back', { ok: true });
    await waitFor(() => got.length === 1, 5000, 'an event after the restart');
    // A cache channel's event comes back from the store with its name and its data.
    const late = track(client(srv));
    const kept = await once(late.subscribe('cache-survives'), 'kept', 5000, 'the cached event after a restart');
    assert.deepEqual(kept, { v: 1 });
    late.disconnect();
    c.disconnect();
  });
});

describe('over TLS: pusher-js on wss:// and the SDK on https:// to plexus --tls', () => {
  let tsrv;
  let tauth;
  let tserver;
  let allow;
  before(async () => {
    const dir = outDir('90-pusher-tls-cert'); // startPusherServer empties its own
    const sh = (...a) => execFileSync('openssl', a, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    sh('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'tls.key',
      '-out', 'tls.crt', '-days', '7', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1');
    tsrv = await startPusherServer('90-pusher-tls', {
      args: ['--tls', '--tls-cert', path.join(dir, 'tls.crt'), '--tls-key', path.join(dir, 'tls.key')],
    });
    // pusher-js for Node (faye-websocket) takes no CA option: this process trusts any
    // certificate while the block runs; the SDK is given the certificate itself.
    allow = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
    tserver = sdk(tsrv, APP, { useTLS: true, agent: new https.Agent({ ca: fs.readFileSync(path.join(dir, 'tls.crt')) }) });
    tauth = await startAuthServer(tserver);
  });
  after(async () => {
    await tauth?.close();
    await stopAll();
    if (allow === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    else process.env.NODE_TLS_REJECT_UNAUTHORIZED = allow;
  });

  it('presence and an SDK trigger, all over TLS', async () => {
    const tls = { forceTLS: true, wssPort: tsrv.port, httpsPort: tsrv.port };
    const a = track(client(tsrv, { auth: tauth, user: 'tia', extra: tls }));
    const b = track(client(tsrv, { auth: tauth, user: 'tom', extra: tls }));
    await subscribed(a, 'presence-secure');
    const joined = once(a.channel('presence-secure'), 'pusher:member_added', 5000, 'tom joining');
    await subscribed(b, 'presence-secure');
    assert.equal((await joined).id, 'tom');
    const got = once(b.channel('presence-secure'), 'note', 5000, 'the SDK event over https');
    const r = await tserver.trigger('presence-secure', 'note', { over: 'tls' }, { info: 'user_count' });
    assert.deepEqual(await r.json(), { channels: { 'presence-secure': { user_count: 2 } } });
    assert.deepEqual(await got, { over: 'tls' });
    a.disconnect();
    b.disconnect();
  });
});
