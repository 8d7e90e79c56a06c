// 91-pusher-api: the Pusher HTTP API and webhooks (issue 14). The `pusher` SDK's calls
// (trigger with info, batches, channel listings and info, users) and, by hand, every way a
// request can be refused: a bad signature, an old timestamp, a wrong key or body_md5 (401),
// a disabled app (403), an unknown one (404), a payload over the limit (413), the rate (429),
// bad channels and events (400). Webhooks: channel_occupied / vacated, member_added /
// removed debounced, client_event, cache_miss, filters, signatures checked with the SDK's
// webhook.isValid(), retries after failures, and the queue's bound when the receiver is down.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  APP,
  client,
  collect,
  connected,
  sdk,
  sleep,
  startAuthServer,
  startHookReceiver,
  startPusherServer,
  subscribed,
} from './pusher-kit.mjs';
import { stopAll, waitFor } from './plexus-server.mjs';

const clients = [];
const track = (c) => (clients.push(c), c);

/** One unlabelled sample of /metrics (NaN when absent). */
async function metric(srv, name) {
  const m = await srv.http('GET', '/metrics');
  const v = new RegExp(`^${name} (-?\\d+)$`, 'm').exec(m.text);
  return v ? Number(v[1]) : NaN;
}

/** A request to the API signed like the SDKs do, with overrides to break it. */
async function signed(srv, method, path, { body, params = {}, app = APP, secret = app.secret, key = app.key, ts, md5, sig } = {}) {
  const q = { auth_key: key, auth_timestamp: String(ts ?? Math.floor(Date.now() / 1000)), auth_version: '1.0', ...params };
  const raw = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  if (raw !== undefined) q.body_md5 = md5 ?? crypto.createHash('md5').update(raw).digest('hex');
  const sorted = Object.keys(q)
    .sort()
    .map((k) => `${k}=${q[k]}`)
    .join('&');
  const full = `/apps/${app.id}${path}`;
  const signature = sig ?? crypto.createHmac('sha256', secret).update(`${method}\n${full}\n${sorted}`).digest('hex');
  const res = await fetch(`http://127.0.0.1:${srv.port}${full}?${sorted}&auth_signature=${signature}`, {
    method,
    headers: raw === undefined ? {} : { 'content-type': 'application/json' },
    body: raw,
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

describe('the Pusher HTTP API', () => {
  let srv;
  let server;
  const apps = [
    { ...APP, 'max-event-payload': '1KiB' },
    { id: '201', key: 'off-key', secret: 'off-secret', enabled: false },
    { id: '202', key: 'rate-key', secret: 'rate-secret', 'max-backend-events-per-second': 4 },
  ];
  before(async () => {
    srv = await startPusherServer('91-pusher-api', { apps });
    server = sdk(srv);
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await stopAll();
  });

  it('the SDK: trigger with info, batches with info, channel listings', async () => {
    const auth = await startAuthServer(server);
    try {
      const a = track(client(srv, { auth, user: 'ann' }));
      const b = track(client(srv, { auth, user: 'ben' }));
      await subscribed(a, 'presence-lobby');
      await subscribed(b, 'presence-lobby');
      await subscribed(a, 'news');
      const r = await server.trigger(['presence-lobby', 'news'], 'ev', 'x', { info: 'user_count,subscription_count' });
      assert.deepEqual(await r.json(), {
        channels: {
          'presence-lobby': { subscription_count: 2, user_count: 2 },
          news: { subscription_count: 1 },
        },
      });
      const rb = await server.triggerBatch([
        { channel: 'news', name: 'e', data: '1', info: 'subscription_count' },
        { channel: 'presence-lobby', name: 'e', data: '2', info: 'user_count' },
      ]);
      assert.deepEqual(await rb.json(), { batch: [{ subscription_count: 1 }, { user_count: 2 }] });
      const all = await (await server.get({ path: '/channels' })).json();
      assert.deepEqual(Object.keys(all.channels).sort(), ['news', 'presence-lobby']);
      const pres = await (await server.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
      assert.deepEqual(pres, { channels: { 'presence-lobby': { user_count: 2 } } });
      const empty = await (await server.get({ path: '/channels/nobody-here', params: { info: 'subscription_count' } })).json();
      assert.deepEqual(empty, { occupied: false, subscription_count: 0 });
      a.disconnect();
      b.disconnect();
    } finally {
      await auth.close();
    }
  });

  it('signatures: each broken part is 401, with a message saying what', async () => {
    const ok = await signed(srv, 'POST', '/events', { body: { name: 'e', channel: 'c', data: '{}' } });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, {});
    const cases = [
      [{ sig: '0'.repeat(64) }, /Invalid signature/],
      [{ secret: 'wrong' }, /Invalid signature/],
      [{ ts: Math.floor(Date.now() / 1000) - 700 }, /auth_timestamp/],
      [{ ts: Math.floor(Date.now() / 1000) + 700 }, /auth_timestamp/],
      [{ key: 'other-key' }, /auth_key/],
      [{ md5: 'f'.repeat(32) }, /body_md5/],
    ];
    for (const [o, re] of cases) {
      const r = await signed(srv, 'POST', '/events', { body: { name: 'e', channel: 'c', data: '{}' }, ...o });
      assert.equal(r.status, 401, JSON.stringify(o));
      assert.match(r.json.message, re);
    }
    // The timestamp window is enforced at its edge too (600 s).
    const edge = await signed(srv, 'GET', '/channels', { ts: Math.floor(Date.now() / 1000) - 590 });
    assert.equal(edge.status, 200);
    const noTs = await fetch(`http://127.0.0.1:${srv.port}/apps/${APP.id}/channels?auth_key=${APP.key}`);
    assert.equal(noTs.status, 401);
  });

  it('apps: unknown 404, disabled 403; limits: 413, 400, 429', async () => {
    assert.equal((await signed(srv, 'GET', '/channels', { app: { id: '999', key: 'k', secret: 's' } })).status, 404);
    assert.equal((await signed(srv, 'GET', '/channels', { app: apps[1] })).status, 403);
    const big = await signed(srv, 'POST', '/events', { body: { name: 'e', channel: 'c', data: 'x'.repeat(2000) } });
    assert.equal(big.status, 413);
    const many = await signed(srv, 'POST', '/events', {
      body: { name: 'e', channels: Array.from({ length: 101 }, (_, i) => `c${i}`), data: '1' },
    });
    assert.equal(many.status, 400);
    assert.match(many.json.message, /100 channels/);
    const batch = await signed(srv, 'POST', '/batch_events', {
      body: { batch: Array.from({ length: 11 }, () => ({ name: 'e', channel: 'c', data: '1' })) },
    });
    assert.equal(batch.status, 400);
    for (const body of [
      { name: 'e', channel: 'bad channel!', data: '1' },
      { name: 'pusher:internal', channel: 'c', data: '1' },
      { name: 'e', channel: 'c', data: '1', socket_id: 'nope' },
      { name: 'e', data: '1' },
      { name: 'e', channel: 'c' },
      { name: 'e', channel: '#not-a-user-channel', data: '1' },
    ]) {
      const r = await signed(srv, 'POST', '/events', { body });
      assert.equal(r.status, 400, JSON.stringify(body));
    }
    assert.equal((await signed(srv, 'POST', '/events', { body: '{"name":' })).status, 400);
    assert.equal((await signed(srv, 'GET', '/channels', { params: { info: 'user_count' } })).status, 400);
    assert.equal((await signed(srv, 'GET', '/channels/news', { params: { info: 'user_count' } })).status, 400);
    assert.equal((await signed(srv, 'GET', '/channels/news/users')).status, 400);
    // 4 events per second: a burst of 12 gets some 429s.
    const codes = await Promise.all(
      Array.from({ length: 12 }, () => signed(srv, 'POST', '/events', { app: apps[2], body: { name: 'e', channel: 'c', data: '1' } })),
    );
    const statuses = codes.map((c) => c.status);
    assert.ok(statuses.includes(429), statuses.join(','));
    assert.ok(statuses.includes(200), statuses.join(','));
  });
});

describe('webhooks', () => {
  let srv;
  let server;
  let hook;
  let onlyPresence;
  let flaky;
  let failures = 0;
  before(async () => {
    hook = await startHookReceiver(200);
    onlyPresence = await startHookReceiver(200);
    flaky = await startHookReceiver(() => (++failures <= 2 ? 500 : 200));
    const apps = [
      {
        ...APP,
        webhooks: [
          { url: hook.url },
          { url: onlyPresence.url, events: ['channel_occupied'], 'channel-prefix': 'presence-' },
        ],
      },
      { id: '301', key: 'flaky-key', secret: 'flaky-secret', webhooks: [{ url: flaky.url, events: ['channel_occupied'] }] },
    ];
    srv = await startPusherServer('91-pusher-webhooks', { apps });
    server = sdk(srv);
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await stopAll();
    await hook.close();
    await onlyPresence.close();
    await flaky.close();
  });

  const named = (name) => hook.events().filter((e) => e.name === name);

  it('occupied and vacated, signed so that webhook.isValid() accepts them', async () => {
    const a = track(client(srv));
    await subscribed(a, 'hooked');
    assert.equal(await metric(srv, 'plexus_pusher_connections'), 1);
    await waitFor(() => named('channel_occupied').some((e) => e.channel === 'hooked'), 5000, 'channel_occupied');
    a.unsubscribe('hooked');
    await waitFor(() => named('channel_vacated').some((e) => e.channel === 'hooked'), 5000, 'channel_vacated');
    for (const h of hook.hits) {
      const wh = server.webhook({ headers: h.headers, rawBody: h.body });
      assert.ok(wh.isValid(), 'signature and key');
      assert.ok(typeof h.json.time_ms === 'number' && Math.abs(h.json.time_ms - Date.now()) < 60000);
    }
    const forged = server.webhook({ headers: { ...hook.hits[0].headers, 'x-pusher-signature': '0'.repeat(64) }, rawBody: hook.hits[0].body });
    assert.ok(!forged.isValid());
    a.disconnect();
    await waitFor(async () => (await metric(srv, 'plexus_pusher_connections')) === 0, 5000, 'the connection gauge back to 0');
    assert.ok((await metric(srv, 'plexus_pusher_webhooks_sent_total')) >= 2);
  });

  it('members: added and removed once per user, debounced (a quick reload causes neither)', async () => {
    const auth = await startAuthServer(server);
    try {
      const a1 = track(client(srv, { auth, user: 'amy' }));
      await subscribed(a1, 'presence-hooks');
      const a2 = track(client(srv, { auth, user: 'amy' }));
      await subscribed(a2, 'presence-hooks');
      await waitFor(() => named('member_added').length === 1, 6000, 'member_added after the debounce');
      assert.deepEqual(named('member_added')[0], { name: 'member_added', channel: 'presence-hooks', user_id: 'amy' });
      // Both tabs close and one comes back at once (a reload): nothing.
      a1.disconnect();
      a2.disconnect();
      await sleep(300);
      const a3 = track(client(srv, { auth, user: 'amy' }));
      await subscribed(a3, 'presence-hooks');
      await sleep(3800);
      assert.equal(named('member_removed').length, 0);
      assert.equal(named('member_added').length, 1);
      a3.disconnect();
      await waitFor(() => named('member_removed').length === 1, 6000, 'member_removed');
      // The filtered webhook only got presence- occupancy.
      await waitFor(() => onlyPresence.events().length >= 1, 5000, 'the filtered webhook');
      for (const e of onlyPresence.events()) {
        assert.equal(e.name, 'channel_occupied');
        assert.match(e.channel, /^presence-/);
      }
    } finally {
      await auth.close();
    }
  });

  it('client_event (with socket_id and user_id) and cache_miss', async () => {
    const auth = await startAuthServer(server);
    try {
      const a = track(client(srv, { auth, user: 'zed' }));
      const sid = await connected(a);
      const { ch } = await subscribed(a, 'presence-chat');
      ch.trigger('client-hello', { hi: 1 });
      await waitFor(() => named('client_event').length === 1, 5000, 'client_event');
      assert.deepEqual(named('client_event')[0], {
        name: 'client_event',
        channel: 'presence-chat',
        event: 'client-hello',
        data: '{"hi":1}',
        socket_id: sid,
        user_id: 'zed',
      });
      a.subscribe('cache-miss-me');
      await waitFor(() => named('cache_miss').length === 1, 5000, 'cache_miss');
      assert.equal(named('cache_miss')[0].channel, 'cache-miss-me');
      a.disconnect();
    } finally {
      await auth.close();
    }
  });

  it('a failing receiver gets the same batch again, with backoff, until it takes it', async () => {
    const c = track(client(srv, { app: { key: 'flaky-key' } }));
    await subscribed(c, 'retry-me');
    await waitFor(() => flaky.hits.length >= 3, 10000, 'two failures and a success');
    assert.equal(flaky.hits[0].body, flaky.hits[2].body);
    assert.ok(flaky.hits[1].at - flaky.hits[0].at >= 900, 'waited before the first retry');
    assert.ok(flaky.hits[2].at - flaky.hits[1].at >= 1800, 'waited longer before the second');
    assert.ok((await metric(srv, 'plexus_pusher_webhook_retries_total')) >= 2);
    c.disconnect();
  });
});

describe('webhooks: a receiver that is down', () => {
  it('keeps a bounded queue: the oldest are dropped, counted and logged', async () => {
    // A port that refuses connections (bound, never listening).
    const hold = net.createServer();
    await new Promise((r) => hold.listen(0, '127.0.0.1', r));
    const port = hold.address().port;
    await new Promise((r) => hold.close(r));
    const srv = await startPusherServer('91-pusher-webhooks-down', {
      apps: [{ ...APP, 'webhook-queue-max': 5, webhooks: [{ url: `http://127.0.0.1:${port}/down`, events: ['channel_occupied', 'channel_vacated'] }] }],
    });
    try {
      const c = track(client(srv));
      await connected(c);
      for (let i = 0; i < 12; i++) {
        await subscribed(c, `busy-${i}`);
        c.unsubscribe(`busy-${i}`);
        await sleep(80);
      }
      await waitFor(async () => {
        const m = await srv.http('GET', '/metrics');
        const v = /plexus_pusher_webhook_events_dropped_total (\d+)/.exec(m.text);
        return v && Number(v[1]) > 0;
      }, 8000, 'dropped events in /metrics');
      await waitFor(() => /is not keeping up: \d+ oldest event\(s\) dropped/.test(srv.logText), 5000, 'the log line');
      c.disconnect();
    } finally {
      await stopAll();
    }
  });
});
