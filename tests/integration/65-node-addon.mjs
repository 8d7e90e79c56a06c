// 65-node-addon: the Node.js addon (bindings/node) under plain node, no Passenger.
// px-test: addon (plain builds only: a sanitizer runtime cannot be loaded into node)
//
//   - TCP: plexus.listen takes the listening socket of Node's http.Server (a dup of its
//     fd, Node's server closed): the demo page, /healthz, WebSocket and the HTTP API are
//     answered by plexus, never by Node's handler; plexus.publish from JavaScript resolves
//     with the offset once durable and reaches WebSocket subscribers; C logs arrive on
//     Node's stdout; SIGTERM stops plexus gracefully and exits 0;
//   - a Unix socket: the path survives the hand-off (Node unlinks it when its server
//     closes: the addon moves it aside meanwhile), requests over it work; stop() resolves
//     and the state is 'stopped';
//   - the client address in logs (px_req_peer): on the Unix socket (Passenger's) the front
//     server's !~Passenger-Client-Address, else the last X-Forwarded-For entry; on TCP
//     the socket's peer, whatever the headers say;
//   - process.exit() (which skips N-API cleanup hooks): the 'exit' hook still stops plexus;
//   - Node's main thread stays idle under load: 5000 requests, its CPU time barely moves;
//   - options are the CLI's: a value out of range rejects naming it (exitCode 2), and
//     PLEXUS_* environment variables override the options given in JavaScript.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { outDir } from './plexus-server.mjs';
import { AddonApp, request, wsClient, waitFor } from './nodeapp.mjs';

const OUT = outDir('65-node-addon');
const apps = [];
after(async () => {
  for (const a of apps) await a.stop('SIGKILL');
});

function app(name, o = {}) {
  const a = new AddonApp({ ...o, dir: path.join(OUT, name), name, options: { workers: 2, 'allow-anonymous': true, ...o.options } });
  apps.push(a);
  return a;
}

describe('node addon', () => {
  it('serves a TCP port taken from Node, publishes from JavaScript, stops on SIGTERM', async () => {
    const a = app('tcp', { options: { 'access-log': 'json' } });
    const r = await a.start();
    assert.equal(r.event, 'running', a.out + a.err);
    assert.match(r.listeners[0], /^fd:\d+$/);
    const port = r.address.port;
    assert.ok(port > 0);

    const health = await request({ port, path: '/healthz' });
    assert.equal(health.status, 200);
    assert.deepEqual(JSON.parse(health.body), { status: 'ok' });
    const page = await request({ port, path: '/' });
    assert.equal(page.status, 200);
    assert.match(page.body, /<html/i);
    assert.doesNotMatch(page.body, /served by node/);

    const ws = await wsClient(`ws://127.0.0.1:${port}/ws`);
    const sub = await ws.call({ op: 'subscribe', id: 1, channel: 'room' });
    assert.equal(sub.op, 'reply');
    const ack = await a.publish('room', { text: 'from js' });
    assert.equal(ack.event, 'ack');
    assert.equal(ack.offset, 1);
    assert.match(ack.epoch, /^[0-9a-f]{16}$/);
    const m = await ws.next((f) => f.op === 'message' && f.offset === 1);
    assert.deepEqual(m.data, { text: 'from js' });
    const post = await request({ port, method: 'POST', path: '/api/channels/room/messages', body: { text: 'http' } });
    assert.equal(post.status, 201);
    assert.equal(JSON.parse(post.body).offset, 2);
    await ws.next((f) => f.op === 'message' && f.offset === 2);
    ws.close();

    const bad = await a.publish('bad\\channel', {});
    assert.equal(bad.event, 'nack');
    assert.equal(bad.code, 'invalid_channel');

    // On TCP the forwarding headers are not believed.
    await request({ port, path: '/healthz?spoof', headers: { 'X-Forwarded-For': '192.0.2.7', '!~Passenger-Client-Address': '192.0.2.8' } });
    const line = await waitFor(() => a.out.split('\n').find((l) => l.includes('?spoof')), 5000, 'the access log line');
    assert.match(JSON.parse(line.slice(line.indexOf('{'))).peer, /^127\.0\.0\.1:\d+$/);

    // C logs reach Node's stdout, not stderr.
    assert.match(a.out, /listening on fd:\d+/);
    assert.doesNotMatch(a.err, /listening on/);

    assert.equal(await a.stop('SIGTERM'), 0, a.out + a.err);
    assert.match(a.out, /SIGTERM|stopped/);
    assert.match(a.out, /\bstopped\b/);
  });

  it('keeps the path of a Unix socket through the hand-off', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'px65-'));
    const sock = path.join(dir, 'app.sock');
    const a = app('unix', { listen: sock, options: { 'access-log': 'json' } });
    const r = await a.start();
    assert.equal(r.event, 'running', a.out + a.err);
    assert.equal(r.address, sock);
    assert.ok(fs.lstatSync(sock).isSocket(), 'the socket path is still there');
    assert.deepEqual(fs.readdirSync(dir), ['app.sock'], 'nothing left aside');
    const res = await request({ socketPath: sock, path: '/healthz' });
    assert.equal(res.status, 200);
    const hist = await request({ socketPath: sock, path: '/api/channels/none/messages?since=0' });
    assert.equal(hist.status, 200);
    const peers = async (headers, tag) => {
      await request({ socketPath: sock, path: `/healthz?${tag}`, headers });
      const line = await waitFor(() => a.out.split('\n').find((l) => l.includes(`?${tag}`)), 5000, 'the access log line');
      return JSON.parse(line.slice(line.indexOf('{'))).peer;
    };
    assert.equal(await peers({}, 'none'), 'unix');
    assert.equal(await peers({ 'X-Forwarded-For': '10.1.2.3, 192.0.2.7' }, 'xff'), '192.0.2.7');
    assert.equal(await peers({ 'X-Forwarded-For': '10.1.2.3', '!~Passenger-Client-Address': '203.0.113.9' }, 'psg'), '203.0.113.9');
    assert.equal(await peers({ 'X-Forwarded-For': '<script>' }, 'junk'), 'unix');

    a.send('stop');
    const st = await a.waitEvent((e) => e.event === 'stopped');
    assert.equal(st.state, 'stopped');
    await assert.rejects(request({ socketPath: sock, path: '/healthz' }));
    a.send('exit 0');
    assert.equal(await a.exited, 0);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('stops plexus on process.exit() (N-API cleanup hooks do not run then)', async () => {
    const a = app('exit');
    const r = await a.start();
    const port = r.address.port;
    // A subscriber: the graceful stop closes it with 1001 (going away), not a reset.
    const ws = await wsClient(`ws://127.0.0.1:${port}/ws`);
    const closed = new Promise((res) => ws.on('close', (code) => res(code)));
    a.send('exit 0');
    assert.equal(await a.exited, 0, a.out + a.err);
    assert.match(a.out, /\bstopped\b/);
    assert.equal(await closed, 1001);
  });

  it("leaves Node's main thread idle under load", async () => {
    const a = app('load');
    const r = await a.start();
    const port = r.address.port;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    await request({ port, path: '/healthz', agent });
    const main0 = a.mainThreadCpuMs();
    const all0 = a.processCpuMs();
    for (let i = 0; i < 50; i++) {
      const batch = [];
      for (let j = 0; j < 100; j++) batch.push(request({ port, path: '/healthz', agent }));
      for (const res of await Promise.all(batch)) assert.equal(res.status, 200);
    }
    agent.destroy();
    const main = a.mainThreadCpuMs() - main0;
    const all = a.processCpuMs() - all0;
    console.log(`5000 requests: plexus ${all} ms of CPU, Node's main thread ${main} ms`);
    assert.ok(all >= 30, `plexus did the work: ${all} ms of CPU for 5000 requests`);
    assert.ok(main <= 20, `main thread: ${main} ms of ${all} ms`);
    assert.equal(await a.stop(), 0);
  });

  it('takes the CLI options: a bad value names the option; the environment overrides', async () => {
    const bad = app('bad', { options: { workers: 999 } });
    const e = await bad.start();
    assert.equal(e.event, 'error');
    assert.match(e.message, /workers.*999.*out of range \(0\.\.256\)/);
    assert.equal(e.exitCode, 2);
    assert.equal(await bad.exited, 2);

    const unknown = app('unknown', { options: { 'no-such-option': 1 } });
    const u = await unknown.start();
    assert.match(u.message, /unknown key "no-such-option"/);

    const a = app('env', { options: { maxPayload: '1KiB' }, env: { PLEXUS_MAX_PAYLOAD: '16' } });
    await a.start();
    const small = await a.publish('c', 'x'.repeat(8));
    assert.equal(small.event, 'ack');
    const big = await a.publish('c', 'x'.repeat(100));
    assert.equal(big.event, 'nack');
    assert.equal(big.code, 'payload_too_large');
    assert.equal(await a.stop(), 0);
  });
});
