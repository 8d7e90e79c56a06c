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
// The WebSocket is the `ws` package's (Node 20 has none). For the reconnect tests it
// is wrapped in a "gate": while the gate is shut the SDK's reconnect attempts go to
// a path that answers 404, so the messages published during the gap are certainly
// published before the client is back (no race with the reconnect timer).
//
//   PLEXUS_BIN=build/h-web/plexus node --test tests/integration/60-sdk.mjs

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { Plexus, PlexusError } from '../../web/sdk/plexus.js';
import { outDir, PlexusServer, scaled, sleep, stopAll, waitFor } from './plexus-server.mjs';

const OUT = outDir('60-sdk');
const clients = new Set();

/** A WebSocket class whose connections fail (HTTP 404) while gate.open is false. */
function gatedWebSocket() {
  const gate = { open: true, frames: [], attempts: 0 };
  class GatedWebSocket extends WebSocket {
    constructor(url, ...rest) {
      gate.attempts++;
      super(gate.open ? url : String(url).replace(/\/ws$/, '/ws-gate-shut'), ...rest);
      // Every frame the server sends, as parsed JSON (the SDK filters duplicates;
      // this lets the test see whether the server sent any).
      this.addEventListener('message', (ev) => gate.frames.push(JSON.parse(String(ev.data))));
    }
  }
  return { gate, GatedWebSocket };
}

/** A connected SDK client; `events` records every SDK event in order. */
async function connect(srv, opts = {}) {
  const px = new Plexus(srv.url, { WebSocket, minDelay: 100, maxDelay: 400, requestTimeout: scaled(10000), ...opts });
  clients.add(px);
  px.events = [];
  for (const t of ['open', 'close', 'reconnecting', 'recovery-failed', 'error', 'transport']) {
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
