// 66-passenger: plexus under Phusion Passenger Standalone (Debian's `passenger`, the
// builtin engine: offline), as users deploy it: examples/passenger/app.js and
// examples/passenger-api (own C routes, built by npm install).
// px-test: addon (plain builds only: a sanitizer runtime cannot be loaded into node)
// px-test: serial (Passenger and its app processes load the machine)
//
//   - the demo page, WebSocket (subscribe, publish, messages), SSE, the HTTP API through
//     Passenger; every request reaches plexus: its request counter equals the `processed`
//     count of passenger-status;
//   - restart (touch tmp/restart.txt) under publishing: no acknowledged message lost, a new
//     process serves, the old one stopped cleanly (its log says "stopped");
//   - passenger stop: the app stops cleanly (log), its socket path is gone;
//   - examples/passenger-api: npm install builds api.c into the addon; its routes answer
//     through Passenger next to plexus's own;
//   - --min-instances 3: one data directory shared by the three processes (the addon turns
//     --data-dir-shared on under Passenger): a message published through one process reaches
//     subscribers connected to the others, offsets stay one sequence, presence is merged.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { SOURCE_DIR, outDir } from './plexus-server.mjs';
import { alive, BUILD_DIR, freePort, keepArtifacts, makeApp, Passenger, request, sleep, sseClient, waitFor, wsClient } from './nodeapp.mjs';

const OUT = outDir('66-passenger');
const started = [];
after(async () => {
  for (const p of started) await p.stop().catch(() => {});
});

// Passenger's registry holds Unix sockets: keep it short (os.tmpdir), logs copied to OUT.
function shortDir(name) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `px66${name}-`));
}

async function passenger(name, o = {}) {
  const dir = shortDir(name);
  const appDir = o.appDir || makeApp(path.join(dir, 'app'), { 'app.js': path.join(SOURCE_DIR, 'examples', 'passenger', 'app.js') });
  const p = new Passenger({ dir, appDir, port: await freePort(), ...o });
  started.push(p);
  after(() => {
    keepArtifacts(dir, path.join(OUT, name));
  });
  return p.start();
}

async function metric(port, name) {
  const r = await request({ port, path: '/metrics' });
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(r.body);
  return m ? Number(m[1]) : NaN;
}

describe('passenger standalone (builtin engine)', () => {
  it('serves the demo page, WebSocket, SSE and the HTTP API; every request reaches plexus', async () => {
    const p = await passenger('main');
    const port = p.port;
    const page = await request({ port, path: '/' });
    assert.equal(page.status, 200);
    assert.match(page.body, /<html/i);
    const sdk = await request({ port, path: '/sdk/plexus.js' });
    assert.equal(sdk.status, 200);

    const ws = await wsClient(`ws://127.0.0.1:${port}/ws`);
    assert.equal((await ws.call({ op: 'subscribe', id: 1, channel: 'room' })).op, 'reply');
    const sse = sseClient({ port, channel: 'room' });
    assert.equal((await sse.ready).statusCode, 200);
    await sleep(200); // the SSE subscription takes effect

    const pub = await ws.call({ op: 'publish', id: 2, channel: 'room', data: { via: 'ws' } });
    assert.equal(pub.op, 'reply', JSON.stringify(pub));
    const post = await request({ port, method: 'POST', path: '/api/channels/room/messages', body: { via: 'http' } });
    assert.equal(post.status, 201, post.body);
    const off = JSON.parse(post.body).offset;
    assert.equal(off, pub.offset + 1);
    for (const o of [pub.offset, off]) {
      await ws.next((f) => f.op === 'message' && f.offset === o);
      await sse.next((e) => e.id === o);
    }
    const hist = JSON.parse((await request({ port, path: '/api/channels/room/messages?since=0' })).body);
    assert.deepEqual(hist.messages.map((m) => m.data), [{ via: 'ws' }, { via: 'http' }]);
    ws.close();
    sse.close();

    // Plain requests: Passenger's processed count and plexus's own counter agree.
    for (let i = 0; i < 30; i++) assert.equal((await request({ port, path: '/healthz' })).status, 200);
    await waitFor(() => p.status().processes.every((x) => x.sessions === 0), 5000, 'sessions to close');
    const processed = p.status().processes.reduce((n, x) => n + x.processed, 0);
    const counted = await metric(port, 'plexus_http_requests_total');
    // The /metrics request is counted by plexus as it runs, by Passenger once it is done.
    assert.equal(counted, processed + 1, `plexus ${counted}, passenger ${processed}\n${p.log()}`);
  });

  it('restarts on tmp/restart.txt without losing an acknowledged message', async () => {
    // The publisher runs flat out until the new process answers: keep every message it
    // makes (the default --history-size, 1000, would trim the first ones on a slow restart).
    const p = await passenger('restart', { env: { PLEXUS_HISTORY_SIZE: '1000000' } });
    const port = p.port;
    const pid0 = p.status().processes[0].pid;
    const acked = [];
    let failed = 0;
    let publishing = true;
    const publisher = (async () => {
      for (let i = 0; publishing || i < 20; i++) {
        try {
          const r = await request({ port, method: 'POST', path: '/api/channels/r/messages', body: { i } });
          if (r.status === 201) acked.push({ i, offset: JSON.parse(r.body).offset });
          else failed++;
        } catch {
          failed++;
        }
      }
    })();
    await waitFor(() => acked.length >= 20, 10000, 'messages before the restart');
    fs.mkdirSync(path.join(p.appDir, 'tmp'), { recursive: true });
    fs.writeFileSync(path.join(p.appDir, 'tmp', 'restart.txt'), String(Date.now()));
    await waitFor(() => p.status().processes.some((x) => x.pid !== pid0), 30000, 'a new process');
    const n = acked.length;
    await waitFor(() => acked.length >= n + 20, 10000, 'messages after the restart');
    publishing = false;
    await publisher;
    await waitFor(() => !alive(pid0), 15000, 'the old process to exit');

    // Pages of 1000 (--history-limit-max): the old and the new process both serve during
    // the restart (one data directory), so more than a page may be acknowledged.
    const hist = { messages: [] };
    for (let since = 0; ;) {
      const page = JSON.parse((await request({ port, path: `/api/channels/r/messages?since=${since}&limit=1000` })).body);
      hist.epoch = page.epoch;
      hist.messages.push(...page.messages);
      if (page.messages.length < 1000) break;
      since = page.messages[page.messages.length - 1].offset;
    }
    const stored = new Map(hist.messages.map((m) => [m.offset, m.data.i]));
    const seen = `history: epoch ${hist.epoch}, ${hist.messages.length} messages, offsets ${hist.messages.map((m) => m.offset).slice(0, 5)}…; acked ${JSON.stringify(acked.slice(0, 5))}…\n${p.log()}`;
    for (const a of acked) assert.equal(stored.get(a.offset), a.i, `acknowledged message ${a.i} (offset ${a.offset}) is stored; ${seen}`);
    assert.ok(acked.length >= 40, `${acked.length} acknowledged, ${failed} failed`);
    await waitFor(() => new RegExp(`App ${pid0} output: .*\\bstopped\\b`).test(p.log()), 10000, `"stopped" from process ${pid0}`);
    assert.doesNotMatch(p.log(), /App \d+ output: .* (error|fatal)/i);
  });

  it('stops with passenger stop: the app drains and exits, its socket is gone', async () => {
    const p = await passenger('stop', { env: { PLEXUS_LOG_FILE: 'plexus.log' } });
    const pid = p.status().processes[0].pid;
    const ws = await wsClient(`ws://127.0.0.1:${p.port}/ws`);
    const closed = new Promise((res) => ws.on('close', (code) => res(code)));
    const sockets = () => fs.readdirSync(p.reg, { recursive: true }).filter((f) => /apps\.s\/node\./.test(f));
    assert.equal(sockets().length, 1, 'the app socket in the instance directory');
    assert.equal(await p.stop(), 0, p.log());
    await waitFor(() => !alive(pid), 15000, 'the app process to exit');
    const log = fs.readFileSync(path.join(p.appDir, 'plexus.log'), 'utf8');
    assert.match(log, /listening on fd:\d+/);
    assert.match(log, /\bstopped\b/, log);
    await closed; // by Passenger, whose core closes its clients as it stops
    assert.equal(fs.existsSync(p.reg) ? sockets().length : 0, 0, 'no socket path left behind');
  });

  it('serves your own C routes (examples/passenger-api, built by npm install)', async () => {
    const dir = shortDir('api');
    const appDir = path.join(dir, 'app');
    const src = path.join(SOURCE_DIR, 'examples', 'passenger-api');
    fs.mkdirSync(appDir);
    for (const f of ['api.c', 'app.js']) fs.copyFileSync(path.join(src, f), path.join(appDir, f));
    const pkg = JSON.parse(fs.readFileSync(path.join(src, 'package.json'), 'utf8'));
    pkg.dependencies.plexus = `file:${path.join(SOURCE_DIR, 'bindings', 'node')}`;
    fs.writeFileSync(path.join(appDir, 'package.json'), JSON.stringify(pkg, null, 2));
    // Offline: the only dependency is the local package; libplexus from this build tree.
    execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error'], {
      cwd: appDir, env: { ...process.env, PLEXUS_BUILD_DIR: BUILD_DIR }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    assert.ok(fs.existsSync(path.join(appDir, 'build', 'api.node')), 'npm install built build/api.node');
    const p = await passenger('api', { appDir });
    const r = await request({ port: p.port, path: '/api/hello?name=passenger' });
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).hello, 'passenger');
    const bad = await request({ port: p.port, path: '/api/hello?name=%22' });
    assert.equal(bad.status, 400);
    const ws = await wsClient(`ws://127.0.0.1:${p.port}/ws`);
    await ws.call({ op: 'subscribe', id: 1, channel: 'counter-a' });
    const c = await request({ port: p.port, method: 'POST', path: '/api/counter/a', body: { n: 1 } });
    assert.equal(c.status, 200, c.body);
    const m = await ws.next((f) => f.op === 'message' && f.channel === 'counter-a');
    assert.deepEqual(m.data, { n: 1 });
    ws.close();
    assert.equal((await request({ port: p.port, path: '/' })).status, 200);
  });
  it('runs three processes as one server (--min-instances 3)', async () => {
    const p = await passenger('procs', { minInstances: 3 });
    const port = p.port;
    await waitFor(() => p.status().processes.length === 3, 30000, 'three app processes');
    // Passenger sends a new session to the least busy process: three open WebSockets land
    // on three processes (checked with passenger-status below).
    const clients = [];
    for (let i = 0; i < 3; i++) {
      const ws = await wsClient(`ws://127.0.0.1:${port}/ws`);
      const r = await ws.call({ op: 'subscribe', id: 1, channel: 'procs', presence: true });
      assert.equal(r.op, 'reply', JSON.stringify(r));
      clients.push(ws);
    }
    const busy = p.status().processes.map((x) => x.sessions);
    assert.deepEqual(busy, [1, 1, 1], `one WebSocket per process: ${busy}\n${p.log()}`);
    // Each publishes through its own process; every client receives every message.
    const offsets = [];
    for (let round = 0; round < 2; round++) {
      for (const [i, ws] of clients.entries()) {
        const r = await ws.call({ op: 'publish', id: 10 + round * 3 + i, channel: 'procs', data: { from: i, round } });
        assert.equal(r.op, 'reply', JSON.stringify(r));
        offsets.push(r.offset);
      }
    }
    assert.deepEqual(offsets, [1, 2, 3, 4, 5, 6], 'one sequence across the processes');
    for (const ws of clients) {
      for (const o of offsets) {
        const m = await ws.next((f) => f.op === 'message' && f.channel === 'procs' && f.offset === o);
        assert.deepEqual(m.data, { from: (o - 1) % 3, round: Math.floor((o - 1) / 3) });
      }
    }
    // Presence: every process lists the three members.
    const pres = await clients[0].call({ op: 'presence', id: 30, channel: 'procs' });
    assert.equal(pres.clients.length, 3, JSON.stringify(pres));
    const post = await request({ port, method: 'POST', path: '/api/channels/procs/messages', body: { via: 'http' } });
    assert.equal(post.status, 201, post.body);
    assert.equal(JSON.parse(post.body).offset, 7);
    for (const ws of clients) await ws.next((f) => f.op === 'message' && f.channel === 'procs' && f.offset === 7);
    const hist = JSON.parse((await request({ port, path: '/api/channels/procs/messages?since=0' })).body);
    assert.deepEqual(hist.messages.map((m) => m.offset), [1, 2, 3, 4, 5, 6, 7]);
    for (const ws of clients) ws.close();
    assert.doesNotMatch(p.log(), /App \d+ output: .* (error|fatal)/i);
  });
});
