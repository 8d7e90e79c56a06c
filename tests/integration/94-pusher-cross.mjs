// 94-pusher-cross: every Pusher channel is a hub channel (issue 14, docs/pusher.md). A
// pusher-js client, a native WebSocket client (/ws) and a Server-Sent Events client
// (/api/channels/{channel}/events) on the same channel see what each other publishes:
//   - an SDK trigger reaches the native client as its data (the JSON string the SDK sent);
//   - a native publish (WebSocket or HTTP) reaches pusher-js as event "message", data decoded;
//   - a client event reaches the native and SSE clients;
//   - an app with a channel-prefix lives in its own part of the hub ("two:room").

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { APP, client, collect, sdk, startAuthServer, startPusherServer, subscribed } from './pusher-kit.mjs';
import { stopAll, waitFor } from './plexus-server.mjs';

const APP2 = { id: '2', key: 'two-key', secret: 'two-secret', 'channel-prefix': 'two:' };

let srv;
let server;
let auth;
const closers = [];

/** A native protocol client: subscribe, publish, and the messages it got per channel. */
async function nativeClient() {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/ws`);
  const got = [];
  let id = 0;
  const replies = new Map();
  ws.on('message', (d) => {
    const m = JSON.parse(String(d));
    if (m.op === 'message') got.push(m);
    if (m.op === 'reply' || m.op === 'error') replies.get(m.id)?.(m);
  });
  await new Promise((r) => ws.on('open', r));
  closers.push(() => ws.close());
  const call = (o) =>
    new Promise((resolve) => {
      const i = ++id;
      replies.set(i, resolve);
      ws.send(JSON.stringify({ ...o, id: i }));
    });
  return { got, call };
}

/** An SSE client on `channel`: the data of each event. */
async function sseClient(channel) {
  const ctl = new AbortController();
  const res = await fetch(`http://127.0.0.1:${srv.port}/api/channels/${encodeURIComponent(channel)}/events`, { signal: ctl.signal });
  assert.equal(res.status, 200);
  const got = [];
  (async () => {
    const dec = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = ev.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
          if (data && !ev.includes('event:')) got.push(JSON.parse(data));
        }
      }
    } catch {
      /* aborted */
    }
  })();
  closers.push(() => ctl.abort());
  return got;
}

describe('Pusher, native and SSE clients share channels', () => {
  before(async () => {
    srv = await startPusherServer('94-pusher-cross', { apps: [APP, APP2] });
    server = sdk(srv);
    auth = await startAuthServer(server);
  });
  after(async () => {
    for (const c of closers) c();
    await auth?.close();
    await stopAll();
  });

  it('an SDK trigger reaches native and SSE clients; a native publish reaches pusher-js', async () => {
    const p = client(srv);
    closers.push(() => p.disconnect());
    const { ch } = await subscribed(p, 'cross');
    const n = await nativeClient();
    assert.equal((await n.call({ op: 'subscribe', channel: 'cross' })).op, 'reply');
    const sse = await sseClient('cross');
    const fromNative = collect(ch, 'message');
    const greet = collect(ch, 'greet');

    await server.trigger('cross', 'greet', { a: 1 });
    await waitFor(() => n.got.length === 1 && sse.length === 1 && greet.length === 1, 5000, 'the trigger everywhere');
    assert.deepEqual(greet[0], { a: 1 });
    assert.equal(n.got[0].channel, 'cross');
    assert.equal(n.got[0].data, '{"a":1}'); // the SDK's data: a JSON string
    assert.equal(sse[0], '{"a":1}');

    assert.equal((await n.call({ op: 'publish', channel: 'cross', data: { b: 2 } })).op, 'reply');
    await waitFor(() => fromNative.length === 1, 5000, 'the native publish in pusher-js');
    assert.deepEqual(fromNative[0], { b: 2 });
    const r = await srv.http('POST', '/api/channels/cross/messages', { c: 3 });
    assert.equal(r.status, 201);
    await waitFor(() => fromNative.length === 2 && sse.length === 3, 5000, 'the HTTP publish');
    assert.deepEqual(fromNative[1], { c: 3 });
    assert.deepEqual(sse.slice(1), [{ b: 2 }, { c: 3 }]);
  });

  it('a client event reaches native and SSE subscribers of the channel', async () => {
    const p = client(srv, { auth, user: 'u' });
    closers.push(() => p.disconnect());
    const { ch } = await subscribed(p, 'private-cross');
    const n = await nativeClient();
    await n.call({ op: 'subscribe', channel: 'private-cross' });
    const sse = await sseClient('private-cross');
    ch.trigger('client-note', { d: 4 });
    await waitFor(() => n.got.length === 1 && sse.length === 1, 5000, 'the client event');
    assert.deepEqual(n.got[0].data, { d: 4 });
    assert.deepEqual(sse[0], { d: 4 });
    // And the other way: a native publish on a private channel reaches the Pusher client.
    const got = collect(ch, 'message');
    await n.call({ op: 'publish', channel: 'private-cross', data: 'plain' });
    await waitFor(() => got.length === 1, 5000, 'native to private');
    assert.equal(got[0], 'plain');
  });

  it("an app's channel-prefix keeps its channels apart", async () => {
    const one = client(srv);
    const two = client(srv, { app: APP2 });
    closers.push(() => one.disconnect(), () => two.disconnect());
    const { ch: c1 } = await subscribed(one, 'room');
    const { ch: c2 } = await subscribed(two, 'room');
    const g1 = collect(c1, 'ev');
    const g2 = collect(c2, 'ev');
    const n = await nativeClient();
    await n.call({ op: 'subscribe', channel: 'two:room' });
    await sdk(srv, APP2).trigger('room', 'ev', 'for two');
    await waitFor(() => g2.length === 1 && n.got.length === 1, 5000, 'app two');
    assert.equal(g1.length, 0);
    assert.equal(n.got[0].channel, 'two:room');
    const list = await (await sdk(srv, APP2).get({ path: '/channels' })).json();
    assert.deepEqual(Object.keys(list.channels), ['room']);
    await server.trigger('room', 'ev', 'for one');
    await waitFor(() => g1.length === 1, 5000, 'app one');
    assert.equal(g2.length, 1);
  });
});
