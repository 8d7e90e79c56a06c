// 60-sdk: the browser SDK (web/sdk/plexus.js) in Node against the real server.
//
//   - connect ('open' with the transport and the client id); subscribe + publish
//     resolves with the offset, onMessage gets the data with the same offset;
//   - publish/subscribe rejections are PlexusErrors carrying the server's code and
//     message (invalid_channel, payload_too_large over --max-payload), and the
//     connection stays usable;
//   - history (since, limit); presence with join/leave events and info names
//     (two clients); unsubscribe stops deliveries;
//   - a refused token ('unauthorized') closes the client: calls reject, no reconnect;
//   - automatic reconnect: the server is restarted (SIGTERM, same port and data
//     directory), messages are published over HTTP during the gap, and the
//     subscriber receives exactly the missed ones, once each, in order, then live
//     ones again; with --history-size 2 and 5 messages in the gap, 'recovery-failed'
//     is emitted instead and nothing old is replayed.
//
//   - history over WebSocket follows `more` (one answer is bounded in bytes) until
//     `limit` messages are collected;
//   - a catch-up that history trimming overtakes: the server's `recovery-failed` op
//     moves the subscription to the channel's end and is reported like
//     `recovered:false` (against the real server, with a reader that stops reading,
//     and with a fake WebSocket for the ordering of reply, replay and gap);
//   - limits: requests beyond the SDK's maxInflight wait in order (none refused by
//     --max-inflight); without that window the server's too_many_requests arrives as
//     a PlexusError; subscriptions refused with rate_limited (--subscribe-rate) are
//     retried with backoff, after a reconnect too;
//   - tokens: a token function renews a short-lived JWT on the open connection
//     ({"op":"auth"}); a token_expired close reconnects with a fresh one and
//     resumes; an expired string token closes the client with token_expired; over
//     SSE an expired stream is reopened with a fresh token.
//
// The WebSocket is the `ws` package's (Node 20 has none). For the reconnect tests it
// is wrapped in a "gate": while the gate is shut the SDK's reconnect attempts go to
// a path that answers 404, so the messages published during the gap are certainly
// published before the client is back (no race with the reconnect timer).
//
//   PLEXUS_BIN=build/h-web/plexus node --test tests/integration/60-sdk.mjs

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { jwtPayload, Plexus, PlexusError } from '../../web/sdk/plexus.js';
import { outDir, PlexusServer, scaled, sleep, stopAll, waitFor } from './plexus-server.mjs';

const OUT = outDir('60-sdk');
const clients = new Set();

/**
 * A WebSocket class whose connections fail (HTTP 404) while gate.open is false. It
 * records every frame (gate.frames: from the server, gate.sent: from the SDK, with
 * the time in `at`) and each connection's TCP socket (gate.sockets), so a test can
 * stop reading (socket.pause()).
 */
function gatedWebSocket() {
  const gate = { open: true, frames: [], sent: [], sockets: [], attempts: 0 };
  class GatedWebSocket extends WebSocket {
    constructor(url, ...rest) {
      gate.attempts++;
      super(gate.open ? url : String(url).replace(/\/ws$/, '/ws-gate-shut'), ...rest);
      this.on('upgrade', (res) => gate.sockets.push(res.socket));
      // Every frame the server sends, as parsed JSON (the SDK filters duplicates;
      // this lets the test see whether the server sent any).
      this.addEventListener('message', (ev) => gate.frames.push(JSON.parse(String(ev.data))));
    }

    send(data, ...rest) {
      gate.sent.push({ ...JSON.parse(String(data)), at: Date.now() });
      return super.send(data, ...rest);
    }
  }
  return { gate, GatedWebSocket };
}

/** A connected SDK client; `events` records every SDK event in order. */
async function connect(srv, opts = {}) {
  const px = new Plexus(srv.url, { WebSocket, minDelay: 100, maxDelay: 400, requestTimeout: scaled(10000), ...opts });
  clients.add(px);
  px.events = [];
  for (const t of ['open', 'close', 'reconnecting', 'recovery-failed', 'error', 'transport', 'closed']) {
    px.on(t, (ev) => px.events.push({ type: t, ev }));
  }
  await waitFor(() => px.connected, 5000, 'the SDK to connect');
  return px;
}

/** Subscribe and collect [offset, data] pairs; resolves once the server confirmed. */
async function collect(px, channel, opts = {}) {
  const got = [];
  const sub = px.subscribe(channel, { ...opts, onMessage: (data, m) => got.push({ offset: m.offset, data, channel: m.channel }) });
  sub.got = got;
  await sub.ready;
  return sub;
}

const offsets = (got) => got.map((m) => m.offset);

after(async () => {
  for (const px of clients) px.close();
  await stopAll(); // servers a failed test left running; each must exit with 0
});

describe('SDK against one server', () => {
  let srv;
  before(async () => {
    srv = new PlexusServer({ dir: path.join(OUT, 'main'), args: ['--max-payload', '1KiB'] });
    await srv.start();
  });
  after(async () => {
    for (const px of clients) px.close();
    await srv.stopCleanly();
  });

  it('connects over WebSocket and says so', async () => {
    const px = await connect(srv);
    assert.equal(px.transport, 'websocket');
    const open = px.events.find((e) => e.type === 'open');
    assert.ok(open, 'an open event');
    assert.equal(open.ev.transport, 'websocket');
    assert.match(open.ev.client, /^[0-9a-f]{16}$/);
    assert.equal(px.clientId, open.ev.client);
    px.close();
    assert.equal(px.connected, false);
    // A closed client rejects calls instead of leaving them waiting.
    await assert.rejects(px.publish('sdk:x', 1), { name: 'PlexusError', code: 'closed' });
    await assert.rejects(px.presence('sdk:x'), { code: 'closed' });
  });

  it('subscribe + publish resolves with the offset; the message arrives with it', async () => {
    const a = await connect(srv);
    const b = await connect(srv);
    const sa = await collect(a, 'sdk:pub');
    assert.match(sa.epoch, /^[0-9a-f]{16}$/);
    assert.equal(sa.offset, 0);
    const data = { text: 'héllo 日本 😀', n: [1, 2.5, null, true], nested: { deep: [[{}]] } };
    const o1 = await b.publish('sdk:pub', data);
    assert.equal(o1, 1);
    const o2 = await a.publish('sdk:pub', 'a string');
    assert.equal(o2, 2);
    await waitFor(() => sa.got.length >= 2, 5000, 'two messages');
    assert.deepEqual(sa.got, [
      { offset: 1, data, channel: 'sdk:pub' },
      { offset: 2, data: 'a string', channel: 'sdk:pub' },
    ]);
    assert.equal(sa.offset, 2);
    // Subscribing twice to one channel is refused locally.
    assert.throws(() => a.subscribe('sdk:pub'), (e) => e instanceof PlexusError && e.code === 'already_subscribed');
    a.close();
    b.close();
  });

  it('rejections carry the server code and message; the connection stays usable', async () => {
    const px = await connect(srv);
    const errs = [];
    px.on('error', (e) => errs.push(e));

    await assert.rejects(px.publish('no spaces allowed', { x: 1 }), (e) => {
      assert.ok(e instanceof PlexusError, 'a PlexusError');
      assert.equal(e.name, 'PlexusError');
      assert.equal(e.code, 'invalid_channel');
      assert.equal(e.message, '"channel" must be 1-200 bytes of A-Z a-z 0-9 _ - = @ , . ; : /');
      return true;
    });
    await assert.rejects(px.publish('x'.repeat(201), 1), { code: 'invalid_channel' });

    const big = { text: 'x'.repeat(2000) };
    const size = Buffer.byteLength(JSON.stringify(big));
    await assert.rejects(px.publish('sdk:err', big), (e) => {
      assert.ok(e instanceof PlexusError);
      assert.equal(e.code, 'payload_too_large');
      assert.equal(e.message, `data is ${size} bytes; the limit is 1024`);
      return true;
    });

    // A refused subscription rejects `ready`, is forgotten, and emits 'error'.
    const bad = px.subscribe('bad channel');
    await assert.rejects(bad.ready, { name: 'PlexusError', code: 'invalid_channel' });
    assert.equal(px.subs.has('bad channel'), false);
    await waitFor(() => errs.some((e) => e.code === 'invalid_channel'), 2000, "the 'error' event");

    // Still connected, and a publish just under the limit goes through.
    const ok = { text: 'y'.repeat(1024 - 11) };
    assert.equal(Buffer.byteLength(JSON.stringify(ok)), 1024);
    assert.equal(await px.publish('sdk:err', ok), 1);
    assert.equal(px.events.filter((e) => e.type === 'open').length, 1, 'no reconnect happened');
    px.close();
  });

  it('history: since and limit', async () => {
    const px = await connect(srv);
    for (let i = 1; i <= 5; i++) assert.equal(await px.publish('sdk:hist', { i }), i);
    const t0 = Date.now();
    const all = await px.history('sdk:hist');
    assert.match(all.epoch, /^[0-9a-f]{16}$/);
    assert.equal(all.offset, 5);
    assert.deepEqual(all.messages.map((m) => [m.offset, m.data.i]), [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]);
    for (const m of all.messages) {
      assert.equal(typeof m.time, 'number');
      assert.ok(Math.abs(m.time - t0) < 60000, 'time is unix milliseconds');
    }
    const some = await px.history('sdk:hist', { since: 2, limit: 2 });
    assert.deepEqual(some.messages.map((m) => m.offset), [3, 4]);
    // Through a subscription, too; same epoch.
    const sub = await collect(px, 'sdk:hist');
    assert.equal(sub.epoch, all.epoch);
    assert.equal(sub.offset, 5, 'a subscription without since starts at the end');
    const tail = await sub.history({ since: 4 });
    assert.deepEqual(tail.messages.map((m) => m.data), [{ i: 5 }]);
    // An empty channel.
    const none = await px.history('sdk:hist-empty');
    assert.deepEqual(none.messages, []);
    assert.equal(none.offset, 0);
    await assert.rejects(px.history('bad channel'), { code: 'invalid_channel' });
    px.close();
  });

  it('presence: join and leave events with info names', async () => {
    const ann = await connect(srv);
    const bob = await connect(srv);
    const joins = [];
    const leaves = [];
    const sa = await collect(ann, 'sdk:pres', {
      info: { name: 'Ann' },
      onJoin: (ev) => joins.push(ev),
      onLeave: (ev) => leaves.push(ev),
    });
    const sb = await collect(bob, 'sdk:pres', { info: { name: 'Bob' } });
    await waitFor(() => joins.some((j) => j.client === bob.clientId), 5000, "Bob's join");
    const j = joins.find((x) => x.client === bob.clientId);
    assert.equal(j.channel, 'sdk:pres');
    assert.deepEqual(j.info, { name: 'Bob' });

    const p = await sa.presence();
    assert.equal(p.count, 2);
    assert.equal(p.subscribers, 2);
    assert.deepEqual(p.clients.map((c) => c.info?.name).sort(), ['Ann', 'Bob']);
    assert.deepEqual(new Set(p.clients.map((c) => c.client)), new Set([ann.clientId, bob.clientId]));

    // Leaving by unsubscribing...
    await sb.unsubscribe();
    await waitFor(() => leaves.some((l) => l.client === bob.clientId), 5000, "Bob's leave");
    assert.deepEqual(leaves.find((l) => l.client === bob.clientId).info, { name: 'Bob' });
    assert.equal((await ann.presence('sdk:pres')).count, 1);

    // ...and by going away: another client joins, then closes its connection.
    const cid = await connect(srv);
    await collect(cid, 'sdk:pres', { info: { name: 'Cid' } });
    await waitFor(() => joins.some((x) => x.client === cid.clientId), 5000, "Cid's join");
    const cidId = cid.clientId;
    cid.close();
    await waitFor(() => leaves.some((l) => l.client === cidId), 5000, "Cid's leave after close");
    assert.deepEqual(leaves.find((l) => l.client === cidId).info, { name: 'Cid' });
    const p2 = await ann.presence('sdk:pres');
    assert.deepEqual(p2.clients.map((c) => c.info?.name), ['Ann']);
    ann.close();
    bob.close();
  });

  it('unsubscribe stops deliveries; subscribing again works', async () => {
    const a = await connect(srv);
    const b = await connect(srv);
    const sa = await collect(a, 'sdk:unsub');
    const sb = await collect(b, 'sdk:unsub');
    await b.publish('sdk:unsub', 1);
    await waitFor(() => sa.got.length === 1, 5000, 'the first message');
    await sa.unsubscribe();
    assert.equal(a.subs.has('sdk:unsub'), false);
    await b.publish('sdk:unsub', 2);
    await waitFor(() => sb.got.length === 2, 5000, 'the publisher to get its own message');
    await sleep(150);
    assert.deepEqual(offsets(sa.got), [1], 'nothing after unsubscribe');
    const r = await srv.http('GET', '/api/channels/sdk%3Aunsub/presence');
    assert.equal(r.json.count, 1);
    // Unsubscribing twice is harmless.
    await sa.unsubscribe();
    const again = await collect(a, 'sdk:unsub');
    assert.equal(again.offset, 2);
    await b.publish('sdk:unsub', 3);
    await waitFor(() => again.got.length === 1, 5000, 'the message after subscribing again');
    assert.deepEqual(again.got[0].data, 3);
    a.close();
    b.close();
  });
});

describe('refused token', () => {
  it("'unauthorized' closes the client for good: calls reject instead of waiting", async () => {
    const srv = new PlexusServer({ dir: path.join(OUT, 'auth'), args: ['--jwt-secret', 'test-secret'] });
    await srv.start();
    const px = new Plexus(srv.url, { WebSocket, token: 'not.a.jwt', minDelay: 50, maxDelay: 100 });
    clients.add(px);
    const events = [];
    for (const t of ['open', 'reconnecting', 'error', 'closed']) px.on(t, (ev) => events.push([t, ev?.code ?? ev?.error?.code]));
    const sub = px.subscribe('sdk:auth');
    await assert.rejects(px.publish('sdk:auth', 1), { name: 'PlexusError', code: 'unauthorized' });
    await assert.rejects(px.history('sdk:auth'), { code: 'unauthorized' });
    await sleep(300);
    assert.deepEqual(events, [['error', 'unauthorized'], ['closed', 'unauthorized']], 'no open, no reconnect');
    assert.equal(px.connected, false);
    assert.equal(sub.active, false);
    await srv.stopCleanly();
  });
});

/**
 * A subscriber on `channel` with `before` messages; the server is restarted (SIGTERM,
 * same port and data dir) while the subscriber's reconnects are held off by the gate;
 * `gap` messages are published over HTTP; then the gate opens.
 */
async function restartWithGap(srv, channel, before, gap) {
  const { gate, GatedWebSocket } = gatedWebSocket();
  const px = await connect(srv, { WebSocket: GatedWebSocket });
  const failed = [];
  const sub = await collect(px, channel, { onRecoveryFailed: (info) => failed.push(info) });
  const epoch = sub.epoch;
  for (let i = 1; i <= before; i++) assert.equal(await px.publish(channel, { i }), i);
  await waitFor(() => sub.got.length === before, 5000, 'the messages before the restart');

  gate.open = false;
  const t0 = Date.now();
  const port = srv.port;
  await srv.restart();
  assert.equal(srv.port, port, 'restarted on the same port');
  await waitFor(() => px.events.some((e) => e.type === 'close'), 5000, "the SDK's close event");
  assert.equal(px.connected, false);
  for (let i = before + 1; i <= before + gap; i++) assert.equal(await srv.publish(channel, { i }), i);
  // The SDK keeps trying (and failing) meanwhile.
  const attempts = gate.attempts;
  await waitFor(() => gate.attempts > attempts, 5000, 'a reconnect attempt during the gap');
  assert.equal(sub.got.length, before, 'nothing arrives while disconnected');
  const framesBefore = gate.frames.length;
  gate.open = true;
  await waitFor(() => px.events.filter((e) => e.type === 'open').length === 2, 10000, 'the reconnect');
  return { px, sub, gate, epoch, failed, framesBefore, gapMs: Date.now() - t0 };
}

describe('reconnect and recovery', () => {
  let srv;

  it('restart: the missed messages arrive once each, in order, then live ones', async () => {
    srv = new PlexusServer({ dir: path.join(OUT, 'recover') });
    await srv.start();
    const ch = 'sdk:recover';
    const { px, sub, gate, epoch, failed, framesBefore } = await restartWithGap(srv, ch, 3, 4);
    await waitFor(() => sub.got.length >= 7, 5000, 'the 4 missed messages');
    assert.equal(await px.publish(ch, { i: 8 }), 8, 'publishing works after the reconnect');
    await waitFor(() => sub.got.length >= 8, 5000, 'the live message');
    await sleep(200); // anything extra would show up now
    assert.deepEqual(offsets(sub.got), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(sub.got.map((m) => m.data.i), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(sub.epoch, epoch, 'same data dir: same epoch');
    assert.deepEqual(failed, []);
    assert.equal(px.events.filter((e) => e.type === 'recovery-failed').length, 0);
    assert.ok(px.events.some((e) => e.type === 'reconnecting'), "'reconnecting' events");
    // The server itself replayed exactly the gap (no duplicate the SDK had to drop).
    const after = gate.frames.slice(framesBefore);
    const reply = after.find((f) => f.op === 'reply' && f.channel === ch);
    assert.equal(reply.recovered, true);
    assert.equal(reply.epoch, epoch);
    const msgs = after.filter((f) => f.op === 'message' && f.channel === ch).map((f) => f.offset);
    assert.deepEqual(msgs, [4, 5, 6, 7, 8]);
    assert.ok(after.indexOf(reply) < after.findIndex((f) => f.op === 'message'), 'replay follows the reply');
    px.close();
    await srv.stopCleanly();
  });

  it("'recovery-failed' when history cannot cover the gap", async () => {
    srv = new PlexusServer({ dir: path.join(OUT, 'recovery-failed'), args: ['--history-size', '2'] });
    await srv.start();
    const ch = 'sdk:lost';
    const { px, sub, gate, epoch, failed, framesBefore } = await restartWithGap(srv, ch, 3, 5);
    await waitFor(() => failed.length === 1, 5000, 'onRecoveryFailed');
    const ev = px.events.filter((e) => e.type === 'recovery-failed');
    assert.equal(ev.length, 1, "one 'recovery-failed' event");
    assert.deepEqual(ev[0].ev, { channel: ch, epoch, offset: 8 });
    assert.deepEqual(failed[0], { channel: ch, epoch, offset: 8 });
    // Nothing old is replayed; live messages continue from the end.
    assert.equal(await px.publish(ch, { i: 9 }), 9);
    await waitFor(() => sub.got.length >= 4, 5000, 'the live message');
    await sleep(200);
    assert.deepEqual(offsets(sub.got), [1, 2, 3, 9]);
    const reply = gate.frames.slice(framesBefore).find((f) => f.op === 'reply' && f.channel === ch);
    assert.equal(reply.recovered, false);
    // What history still has: the last 2.
    const h = await px.history(ch);
    assert.deepEqual(h.messages.map((m) => m.offset), [8, 9]);
    px.close();
    await srv.stopCleanly();
  });
});

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

describe('history over WebSocket: bounded answers', () => {
  it('follows `more` until `limit` messages are collected', async () => {
    // --output-cap 64KiB: one WebSocket answer holds about 16 KiB of messages.
    const srv = new PlexusServer({ dir: path.join(OUT, 'more'), args: ['--output-cap', '64KiB'] });
    await srv.start();
    const ch = 'sdk:more';
    const big = 'm'.repeat(12000);
    for (let i = 1; i <= 20; i++) assert.equal(await srv.publish(ch, { i, big }), i);
    const { gate, GatedWebSocket } = gatedWebSocket();
    const px = await connect(srv, { WebSocket: GatedWebSocket });

    const asked = () => gate.sent.filter((m) => m.op === 'history').length;
    const h = await px.history(ch, { limit: 15 });
    assert.deepEqual(h.messages.map((m) => m.offset), range(1, 15));
    assert.ok(h.messages.every((m) => m.data.big === big && typeof m.time === 'number'));
    assert.equal(h.epoch, (await srv.http('GET', `/api/channels/${ch}/messages?limit=1`)).json.epoch);
    assert.equal(h.offset, 20);
    assert.equal('more' in h, false);
    assert.equal('truncated' in h, false);
    // It took several answers, each bounded and saying there was more.
    const replies = gate.frames.filter((f) => f.op === 'reply' && Array.isArray(f.messages));
    assert.ok(replies.length > 1, `${replies.length} answers`);
    assert.ok(replies.slice(0, -1).every((r) => r.more === true));
    assert.ok(replies.every((r) => JSON.stringify(r).length < 32 * 1024));
    assert.equal(asked(), replies.length);

    // No limit: the server's default (100) covers all 20; `since` is kept.
    assert.deepEqual((await px.history(ch)).messages.map((m) => m.offset), range(1, 20));
    assert.deepEqual((await px.history(ch, { since: 12, limit: 100 })).messages.map((m) => m.data.i), range(13, 20));
    // A limit one answer can hold takes one request.
    const n = asked();
    assert.deepEqual((await px.history(ch, { since: 19 })).messages.map((m) => m.offset), [20]);
    assert.equal(asked(), n + 1);
    px.close();
    await srv.stopCleanly();
  });
});

/**
 * A stand-in WebSocket the test drives: the SDK's frames land in `sent`, the test
 * feeds server frames with recv() (several in one go, as from one read).
 */
function fakeWebSocket() {
  const made = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      made.push(this);
    }

    send(text) {
      this.sent.push(JSON.parse(text));
    }

    close(code = 1000, reason = '') {
      if (this.closed) return;
      this.closed = true;
      queueMicrotask(() => this.onclose?.({ code, reason }));
    }

    open(client = '00000000000000aa') {
      this.onopen?.({});
      this.recv({ op: 'welcome', client, version: 'test' });
    }

    recv(...msgs) {
      for (const m of msgs) this.onmessage?.({ data: JSON.stringify(m) });
    }

    last(op) {
      return this.sent.filter((m) => m.op === op).at(-1);
    }
  }
  return { made, FakeWebSocket };
}

/** An SDK client on a fake WebSocket, connected (welcome received). */
async function fakeClient(opts = {}) {
  const { made, FakeWebSocket } = fakeWebSocket();
  const px = new Plexus('http://127.0.0.1:9', { WebSocket: FakeWebSocket, minDelay: 20, maxDelay: 40, ...opts });
  clients.add(px);
  px.events = [];
  for (const t of ['open', 'close', 'recovery-failed', 'error', 'closed']) px.on(t, (ev) => px.events.push({ type: t, ev }));
  await waitFor(() => made.length === 1, 2000, 'the SDK to open a WebSocket');
  made[0].open();
  assert.equal(px.connected, true);
  return { px, made };
}

describe('recovery-failed during a catch-up', () => {
  it('the server trims history past a slow catch-up: the gap is reported, live messages follow', async () => {
    // The reader stops reading while it catches up; the server sends replay pages only as
    // its output drains, so the catch-up stalls once the kernel's buffers are full. A
    // burst of publishes then trims history (--history-size N) past the stalled position:
    // the next page is a `recovery-failed` op. The backlog must exceed what the socket
    // buffers hold: the largest send buffer plus the initial receive buffer, plus margin.
    const sysctl = (name, i) => Number(fs.readFileSync(`/proc/sys/net/ipv4/${name}`, 'utf8').trim().split(/\s+/)[i]);
    const SIZE = 60000;
    const buffered = sysctl('tcp_wmem', 2) + 2 * sysctl('tcp_rmem', 1);
    const N = Math.ceil((buffered + (1 << 20)) / SIZE);
    assert.ok(N <= 400, `socket buffers of ${buffered} bytes: a backlog of ${N} messages is too slow a test`);
    const srv = new PlexusServer({ dir: path.join(OUT, 'gap'), args: ['--output-cap', '64KiB', '--history-size', String(N)] });
    await srv.start();
    const ch = 'sdk:gap';
    const data = (i) => ({ i, pad: 'g'.repeat(SIZE) });
    for (let i = 1; i <= N; i++) await srv.publish(ch, data(i));
    const { gate, GatedWebSocket } = gatedWebSocket();
    const px = await connect(srv, { WebSocket: GatedWebSocket });
    const { epoch } = await px.history(ch, { limit: 1 });

    gate.sockets.at(-1).pause(); // stop reading
    const failed = [];
    const sub = px.subscribe(ch, {
      since: { epoch, offset: 0 },
      onMessage: (d, m) => sub.got.push(m.offset),
      onRecoveryFailed: (info) => failed.push(info),
    });
    sub.got = [];
    await sleep(200); // the server fills the buffers and waits for them to drain
    for (let i = N + 1; i <= 2 * N + 5; i++) assert.equal(await srv.publish(ch, data(i)), i);
    const end = 2 * N + 5;
    gate.sockets.at(-1).resume();

    await waitFor(() => failed.length === 1, 10000, 'onRecoveryFailed');
    await sub.ready;
    const gap = gate.frames.find((f) => f.op === 'recovery-failed');
    assert.deepEqual(gap, { op: 'recovery-failed', channel: ch, epoch, offset: end });
    assert.deepEqual(failed, [{ channel: ch, epoch, offset: end }]);
    assert.deepEqual(px.events.filter((e) => e.type === 'recovery-failed').map((e) => e.ev), failed);
    const k = sub.got.length;
    assert.ok(k >= 1 && k < N, `the catch-up stalled (${k} of ${N} replayed before the gap)`);
    assert.deepEqual(sub.got, range(1, k), 'the replay before the gap is in order, without holes');
    assert.equal(sub.offset, end);
    // Live messages continue after the gap; the connection was never closed.
    assert.equal(await px.publish(ch, { live: 1 }), end + 1);
    await waitFor(() => sub.got.length === k + 1, 5000, 'the live message');
    assert.equal(sub.got[k], end + 1);
    assert.equal(px.events.filter((e) => e.type === 'open').length, 1);
    px.close();
    await srv.stopCleanly();
  });

  it('fake server: the op moves the position; stale replays are dropped; a reconnect resumes there', async () => {
    const { px, made } = await fakeClient();
    const got = [];
    const failed = [];
    const sub = px.subscribe('ch', {
      since: { epoch: 'e1', offset: 0 },
      onMessage: (d, m) => got.push(m.offset),
      onRecoveryFailed: (info) => failed.push(info),
    });
    const req = made[0].last('subscribe');
    assert.deepEqual(req.since, { epoch: 'e1', offset: 0 });
    made[0].recv(
      { op: 'reply', id: req.id, channel: 'ch', epoch: 'e1', offset: 40, recovered: true },
      { op: 'message', channel: 'ch', offset: 1, data: 1 },
      { op: 'message', channel: 'ch', offset: 2, data: 2 },
      { op: 'recovery-failed', channel: 'ch', epoch: 'e1', offset: 50 },
      { op: 'message', channel: 'ch', offset: 7, data: 'older than the gap' },
      { op: 'message', channel: 'ch', offset: 51, data: 51 },
      { op: 'recovery-failed', channel: 'not-mine', epoch: 'e1', offset: 9 },
    );
    await sub.ready;
    assert.deepEqual(got, [1, 2, 51]);
    assert.deepEqual(failed, [{ channel: 'ch', epoch: 'e1', offset: 50 }]);
    assert.deepEqual(px.events.filter((e) => e.type === 'recovery-failed').map((e) => e.ev), failed);
    assert.equal(sub.offset, 51);
    made[0].close(1006);
    await waitFor(() => made.length === 2, 2000, 'the reconnect');
    made[1].open();
    assert.deepEqual(made[1].last('subscribe').since, { epoch: 'e1', offset: 51 });
    px.close();
  });

  it('fake server: a reply is applied before the messages that follow it in the same read', async () => {
    const { px, made } = await fakeClient();
    const got = [];
    const sub = px.subscribe('ch', { since: { epoch: 'e1', offset: 10 }, onMessage: (d, m) => got.push(m.offset) });
    const req = made[0].last('subscribe');
    // History no longer covers 10..50; a live message is right behind the reply.
    made[0].recv(
      { op: 'reply', id: req.id, channel: 'ch', epoch: 'e1', offset: 50, recovered: false },
      { op: 'message', channel: 'ch', offset: 51, data: 51 },
    );
    await sub.ready;
    assert.deepEqual(got, [51]);
    assert.equal(sub.offset, 51, 'the position does not go back to the reply\'s offset');
    made[0].close(1006);
    await waitFor(() => made.length === 2, 2000, 'the reconnect');
    made[1].open();
    const again = made[1].last('subscribe');
    assert.deepEqual(again.since, { epoch: 'e1', offset: 51 });
    made[1].recv(
      { op: 'reply', id: again.id, channel: 'ch', epoch: 'e1', offset: 51, recovered: true },
      { op: 'message', channel: 'ch', offset: 51, data: 51 },
      { op: 'message', channel: 'ch', offset: 52, data: 52 },
    );
    assert.deepEqual(got, [51, 52], 'nothing delivered twice');
    px.close();
  });
});

describe('limits: in-flight requests and subscribe rate', () => {
  let srv;
  before(async () => {
    srv = new PlexusServer({
      dir: path.join(OUT, 'limits'),
      args: ['--max-inflight', '2', '--publish-rate', '0', '--subscribe-rate', '10'],
    });
    await srv.start();
  });
  after(async () => {
    await srv.stopCleanly();
  });

  it('requests over maxInflight wait in order; without the window the server refuses some', async () => {
    const px = await connect(srv, { maxInflight: 2 });
    const offs = await Promise.all(range(1, 40).map((i) => px.publish('sdk:window', { i })));
    assert.deepEqual(offs, range(1, 40), 'none refused, in the order they were made');
    const h = await px.history('sdk:window');
    assert.deepEqual(h.messages.map((m) => m.data.i), range(1, 40));

    const raw = await connect(srv, { maxInflight: 0 }); // no window: all sent at once
    const res = await Promise.allSettled(range(1, 40).map((i) => raw.publish('sdk:nowindow', { i })));
    const refused = res.filter((r) => r.status === 'rejected').map((r) => r.reason);
    assert.ok(refused.length > 0, 'some refused by --max-inflight 2');
    for (const e of refused) {
      assert.ok(e instanceof PlexusError);
      assert.equal(e.code, 'too_many_requests');
      assert.match(e.message, /requests of this connection are still being answered/);
    }
    const stored = res.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    assert.deepEqual(stored, range(1, stored.length), 'the others were stored');
    assert.equal(await raw.publish('sdk:nowindow', 'after'), stored.length + 1, 'the connection stays usable');
    px.close();
    raw.close();
  });

  it('subscribes refused with rate_limited are retried with backoff, after a reconnect too', async () => {
    const { gate, GatedWebSocket } = gatedWebSocket();
    const px = await connect(srv, { WebSocket: GatedWebSocket, minDelay: 100, maxDelay: 400 });
    const chans = range(1, 15).map((i) => `sdk:rate${i}`);
    const subs = await Promise.all(chans.map((c) => collect(px, c))); // 15 > the burst of 10
    const limited = () => gate.frames.filter((f) => f.op === 'error' && f.code === 'rate_limited').length;
    assert.ok(limited() >= 1, 'some subscribes were refused at first');
    assert.deepEqual(px.events.filter((e) => e.type === 'error'), [], 'a retried subscribe is no error');

    // The connection is lost: after the reconnect all 15 are sent again at once.
    const before = gate.sent.length;
    const limitedBefore = limited();
    gate.sockets.at(-1).destroy();
    await waitFor(() => px.events.filter((e) => e.type === 'open').length === 2, 10000, 'the reconnect');
    await waitFor(() => subs.every((s) => s.active && s.epoch), 10000, 'every subscription back');
    await waitFor(
      () => chans.every((c) => gate.sent.slice(before).some((m) => m.op === 'subscribe' && m.channel === c)) &&
        gate.frames.filter((f) => f.op === 'reply' && chans.includes(f.channel)).length >= 30,
      10000,
      'the 15 subscribe replies after the reconnect',
    );
    assert.ok(limited() > limitedBefore, 'the resubscribes met the rate limit');
    // Backoff: the n-th retry of a channel waits at least half of min(maxDelay, minDelay * 2^(n-1)).
    const tries = new Map();
    for (const m of gate.sent.slice(before)) if (m.op === 'subscribe') tries.set(m.channel, [...(tries.get(m.channel) ?? []), m.at]);
    for (const [c, at] of tries) {
      assert.ok(at.length <= 12, `${c}: ${at.length} attempts`);
      for (let n = 1; n < at.length; n++) {
        const least = Math.min(400, 100 * 2 ** (n - 1)) / 2 - 5;
        assert.ok(at[n] - at[n - 1] >= least, `${c}: retry ${n} after ${at[n] - at[n - 1]} ms (< ${least})`);
      }
    }
    // Every subscription delivers again.
    for (const c of chans) await srv.publish(c, 'x');
    await waitFor(() => subs.every((s) => s.got.length === 1), 5000, 'a message on each channel');
    px.close();
  });

  it('fake server: too_many_requests on a subscribe is retried too', async () => {
    const { px, made } = await fakeClient({ minDelay: 200, maxDelay: 1000 });
    const sub = px.subscribe('ch');
    let state = 'pending';
    sub.ready.then(() => { state = 'ready'; }, () => { state = 'rejected'; });
    const t0 = Date.now();
    made[0].recv({ op: 'error', id: made[0].last('subscribe').id, code: 'too_many_requests', message: 'busy' });
    await sleep(50);
    assert.equal(made[0].sent.filter((m) => m.op === 'subscribe').length, 1, 'not sent again at once');
    await waitFor(() => made[0].sent.filter((m) => m.op === 'subscribe').length === 2, 2000, 'the retry');
    assert.ok(Date.now() - t0 >= 100, 'after minDelay/2 at least');
    assert.equal(state, 'pending');
    made[0].recv({ op: 'reply', id: made[0].last('subscribe').id, channel: 'ch', epoch: 'e', offset: 3 });
    await sub.ready;
    assert.equal(sub.offset, 3);
    assert.deepEqual(px.events.filter((e) => e.type === 'error'), []);
    px.close();
  });
});

// ---- tokens ------------------------------------------------------------------------------

const SECRET = 'sdk-test-secret-0123456789abcdef';
const nowSec = () => Math.floor(Date.now() / 1000);

/** An HS256 JWT, as the server verifies it. */
function jwt(claims, secret = SECRET) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}`;
  return `${head}.${crypto.createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/**
 * A minimal EventSource for Node (which has none), faithful where the SDK relies on it:
 * named events, lastEventId, readyState, and - as in browsers - it reconnects by itself
 * (with Last-Event-ID) when a stream ends, and gives up (CLOSED) on an HTTP error.
 * `log` gets every response status, so a test can see whether a reconnect was refused.
 */
function testEventSource() {
  const log = [];
  class TestEventSource {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.lastEventId = '';
      this.handlers = new Map();
      this.ctrl = new AbortController();
      this._run();
    }

    addEventListener(type, fn) {
      if (!this.handlers.has(type)) this.handlers.set(type, []);
      this.handlers.get(type).push(fn);
    }

    close() {
      this.readyState = 2;
      this.ctrl.abort();
    }

    async _run() {
      const headers = { accept: 'text/event-stream' };
      if (this.lastEventId) headers['last-event-id'] = this.lastEventId;
      let res;
      try {
        res = await fetch(this.url, { headers, signal: this.ctrl.signal });
      } catch {
        this._lost(true);
        return;
      }
      log.push({ url: this.url, status: res.status });
      if (res.status !== 200) {
        await res.body?.cancel();
        this._lost(false);
        return;
      }
      if (this.readyState === 2) return;
      this.readyState = 1;
      this.onopen?.({});
      const dec = new TextDecoder();
      let buf = '';
      try {
        for await (const chunk of res.body) {
          buf += dec.decode(chunk, { stream: true });
          for (let i; (i = buf.indexOf('\n\n')) >= 0;) {
            this._event(buf.slice(0, i));
            buf = buf.slice(i + 2);
            if (this.readyState === 2) return;
          }
        }
      } catch {
        /* aborted by close(), or the connection broke */
      }
      this._lost(true);
    }

    _lost(reconnect) {
      if (this.readyState === 2) return;
      this.readyState = reconnect ? 0 : 2;
      this.onerror?.({});
      if (reconnect) setTimeout(() => this.readyState === 0 && this._run(), 200);
    }

    _event(block) {
      let type = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (!line || line[0] === ':') continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        const value = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
        if (field === 'event') type = value;
        else if (field === 'data') data.push(value);
        else if (field === 'id') this.lastEventId = value;
      }
      if (!data.length) return;
      const ev = { type, data: data.join('\n'), lastEventId: this.lastEventId };
      if (type === 'message') this.onmessage?.(ev);
      for (const fn of this.handlers.get(type) ?? []) fn(ev);
    }
  }
  return { log, TestEventSource };
}

describe('tokens', { concurrency: true }, () => {
  let srv;
  before(async () => {
    srv = new PlexusServer({ dir: path.join(OUT, 'tokens'), args: ['--jwt-secret', SECRET] });
    await srv.start();
  });
  after(async () => {
    await srv.stopCleanly();
  });

  it('jwtPayload reads the claims without verifying', () => {
    assert.deepEqual(jwtPayload(jwt({ sub: 'ü', exp: 12 })), { sub: 'ü', exp: 12 });
    assert.equal(jwtPayload('not a jwt'), null);
    assert.equal(jwtPayload('a.!!!.c'), null);
  });

  it('a token function renews a short-lived token on the open connection', async () => {
    const issued = [];
    const token = async () => {
      await sleep(5); // as a call to an auth server would
      const t = jwt({ sub: 'renew', exp: nowSec() + 3 });
      issued.push(jwtPayload(t).exp);
      return t;
    };
    const { gate, GatedWebSocket } = gatedWebSocket();
    const px = await connect(srv, { token, WebSocket: GatedWebSocket });
    const client = px.clientId;
    const sub = await collect(px, 'sdk:renew');
    const firstExp = issued[0];
    // Well past the first token's expiry.
    await waitFor(() => Date.now() > firstExp * 1000 + 1500, 10000, 'the first token to expire');
    assert.equal(px.connected, true);
    assert.equal(px.clientId, client, 'the same connection');
    assert.deepEqual(px.events.map((e) => e.type), ['open'], 'no close, no error');
    assert.ok(issued.length >= 2, `the function was called ${issued.length} times`);
    const auths = gate.sent.filter((m) => m.op === 'auth');
    assert.ok(auths.length >= 1);
    const replies = gate.frames.filter((f) => f.op === 'reply' && auths.some((a) => a.id === f.id));
    assert.ok(replies.length >= 1 && replies.every((r) => r.exp > firstExp), 'the server took the new tokens');
    assert.equal(await px.publish('sdk:renew', 'still here'), 1);
    await waitFor(() => sub.got.length === 1, 5000, 'the message');
    px.close();
  });

  it('token_expired: reconnects with a fresh token from the function and resumes', async () => {
    // The function hands out the same short-lived token until the connection is lost
    // (so renewing does not help and the server closes with token_expired).
    const first = jwt({ sub: 'expiring', exp: nowSec() + 2 });
    let fresh = false;
    const token = () => (fresh ? jwt({ sub: 'expiring', exp: nowSec() + 60 }) : first);
    const { gate, GatedWebSocket } = gatedWebSocket();
    const px = await connect(srv, { token, WebSocket: GatedWebSocket });
    px.on('close', () => { fresh = true; });
    const ch = 'sdk:expiring';
    const sub = await collect(px, ch);
    assert.equal(await px.publish(ch, 1), 1);
    await waitFor(() => px.events.some((e) => e.type === 'close'), 8000, 'the token to expire');
    const close = px.events.find((e) => e.type === 'close').ev;
    assert.equal(close.code, 1008);
    assert.ok(gate.frames.some((f) => f.op === 'error' && f.code === 'token_expired'));
    const gapOffset = await srv.publish(ch, 2); // while reconnecting (or just after)
    await waitFor(() => px.events.filter((e) => e.type === 'open').length === 2, 8000, 'the reconnect');
    assert.equal(gapOffset, 2);
    assert.equal(await px.publish(ch, 3), 3);
    await waitFor(() => sub.got.length === 3, 5000, 'all three messages');
    await sleep(100);
    assert.deepEqual(offsets(sub.got), [1, 2, 3]);
    assert.equal(px.connected, true);
    assert.deepEqual(px.events.filter((e) => ['error', 'closed'].includes(e.type)), []);
    px.close();
  });

  it('fake server: a refused renewal is an error event and is tried again with a new token', async () => {
    let n = 0;
    const token = () => jwt({ sub: 'f', n: ++n, exp: nowSec() + 3 });
    const { px, made } = await fakeClient({ token });
    const ws = made[0];
    assert.equal(jwtPayload(new URL(ws.url).searchParams.get('token')).n, 1, 'opened with the first token');
    await waitFor(() => ws.last('auth'), 5000, 'a renewal before expiry');
    const a1 = ws.last('auth');
    assert.equal(jwtPayload(a1.token).n, 2);
    ws.recv({ op: 'error', id: a1.id, code: 'forbidden', message: 'the new token names another user' });
    const err = await waitFor(() => px.events.find((e) => e.type === 'error')?.ev, 2000, "the 'error' event");
    assert.ok(err instanceof PlexusError);
    assert.equal(err.code, 'forbidden');
    assert.equal(px.connected, true, 'a refused renewal does not close the client');
    await waitFor(() => ws.sent.filter((m) => m.op === 'auth').length === 2, 5000, 'another try');
    const a2 = ws.last('auth');
    assert.equal(jwtPayload(a2.token).n, 3, 'with a token from a new call');
    ws.recv({ op: 'reply', id: a2.id, exp: jwtPayload(a2.token).exp });
    await sleep(300);
    assert.equal(ws.sent.filter((m) => m.op === 'auth').length, 2, 'renewed: nothing more until the next margin');
    px.close();
  });

  it('an expired string token closes the client with token_expired', async () => {
    const px = await connect(srv, { token: jwt({ sub: 'plain', exp: nowSec() + 2 }) });
    const sub = await collect(px, 'sdk:plain');
    await waitFor(() => px.events.some((e) => e.type === 'closed'), 8000, 'the client to close');
    const err = px.events.find((e) => e.type === 'error')?.ev;
    assert.ok(err instanceof PlexusError);
    assert.equal(err.code, 'token_expired');
    assert.equal(px.events.find((e) => e.type === 'closed').ev.error.code, 'token_expired');
    await assert.rejects(px.publish('sdk:plain', 1), { name: 'PlexusError', code: 'token_expired' });
    await sleep(300);
    assert.equal(px.events.filter((e) => e.type === 'reconnecting').length, 0, 'no reconnect');
    assert.equal(sub.active, false);
  });

  it('SSE: an expired stream is reopened with a fresh token; nothing lost', async () => {
    const { log, TestEventSource } = testEventSource();
    let calls = 0;
    const token = () => {
      calls++;
      return jwt({ sub: 'sse', exp: nowSec() + 2 });
    };
    const px = await connect(srv, { transport: 'sse', EventSource: TestEventSource, token });
    const ch = 'sdk:sse-token';
    const sub = await collect(px, ch);
    assert.equal(await px.publish(ch, 1), 1);
    await waitFor(() => sub.got.length === 1, 5000, 'the first message');
    // The stream ends at the token's expiry; a second one opens.
    await waitFor(() => log.filter((l) => l.status === 200 && l.url.includes('/events')).length >= 2, 8000, 'a new stream');
    assert.equal(await px.publish(ch, 2), 2);
    await waitFor(() => sub.got.length === 2, 5000, 'the message after the renewal');
    assert.deepEqual(offsets(sub.got), [1, 2]);
    assert.ok(calls >= 2);
    assert.deepEqual(log.filter((l) => l.status !== 200), [], 'no stream reopened with the expired token');
    assert.deepEqual(px.events.filter((e) => ['error', 'closed'].includes(e.type)), []);
    px.close();
  });

  it('SSE: an expired string token closes the client with token_expired', async () => {
    const { TestEventSource } = testEventSource();
    const px = await connect(srv, { transport: 'sse', EventSource: TestEventSource, token: jwt({ sub: 'sse2', exp: nowSec() + 2 }) });
    await collect(px, 'sdk:sse-plain');
    await waitFor(() => px.events.some((e) => e.type === 'closed'), 8000, 'the client to close');
    assert.equal(px.events.find((e) => e.type === 'error')?.ev.code, 'token_expired');
    assert.equal(px.sse.size, 0, 'the stream is closed');
  });
});
