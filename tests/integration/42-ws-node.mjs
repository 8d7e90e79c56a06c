// WebSocket interop with the Node `ws` client (tests/package.json; `make npm-deps`),
// against examples/echo: text and binary echoes of several sizes with and without
// permessage-deflate, a 16 MiB message, ping/pong, close codes both ways (the
// server closes TCP promptly after the handshake), and /broadcast with three
// clients (every client gets every message, each sender's in order).
//
//   PX_BUILD_DIR=build/h-ws node --test tests/integration/42-ws-node.mjs
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

// Shared with the other Node suites; its PlexusServer runs the plexus binary
// (with hub flags examples/echo does not take), so echo is spawned below.
import { outDir, scaled, SOURCE_DIR } from './plexus-server.mjs';

let WebSocket;
try {
  ({ default: WebSocket } = await import('ws'));
} catch (e) {
  throw new Error(`the Node "ws" package is missing: run \`make npm-deps\` (npm ci in tests/): ${e.message}`);
}

const buildDir = process.env.PX_BUILD_DIR || path.join(SOURCE_DIR, 'build', 'release');
const examplesDir = process.env.PX_EXAMPLES_DIR || path.join(buildDir, 'examples');
const MiB = 1 << 20;
const T = scaled(60000); // per test: every test stops by itself

// ---- the server process (the pxtest.Server pattern: port 0, port from the log) ----

function startEcho() {
  const logPath = path.join(outDir('42-ws-node'), 'echo.log');
  const log = fs.openSync(logPath, 'w');
  const bin = path.join(examplesDir, 'echo');
  const proc = spawn(bin, ['--listen', '127.0.0.1:0', '--workers', '2'], {
    stdio: ['ignore', log, log],
  });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  // If this test process dies first, do not leave the server behind.
  process.on('exit', () => proc.exitCode === null && proc.kill('SIGKILL'));
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + scaled(10000);
    const poll = () => {
      const text = fs.readFileSync(logPath, 'utf8');
      const m = /listening on ([^\s"]+)/.exec(text);
      if (m) return resolve({ proc, exited, logPath, addr: m[1] });
      if (proc.exitCode !== null) return reject(new Error(`echo exited early:\n${text}`));
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        return reject(new Error(`echo not ready:\n${text}`));
      }
      setTimeout(poll, 10);
    };
    poll();
  });
}

let server;
let base;

before(async () => {
  server = await startEcho();
  base = `ws://${server.addr}`;
}, { timeout: scaled(15000) });

after(async () => {
  server.proc.kill('SIGTERM');
  const timer = setTimeout(() => server.proc.kill('SIGKILL'), scaled(15000));
  const { code, signal } = await server.exited;
  clearTimeout(timer);
  // Sanitizer builds exit with 99 on a leak or error report.
  assert.equal(code, 0, `echo exit code ${code} signal ${signal}; log: ${server.logPath}\n` +
    fs.readFileSync(server.logPath, 'utf8').slice(-4000));
}, { timeout: scaled(30000) });

// ---- client helpers ----

function open(route = '/echo', opts = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + route, { perMessageDeflate: false, maxPayload: 64 * MiB, ...opts });
    ws.once('upgrade', (res) => { ws.extHeader = res.headers['sec-websocket-extensions'] || ''; });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function nextMessage(ws, timeout = 30000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no message in time')), scaled(timeout));
    const onClose = (code, reason) => {
      clearTimeout(t);
      reject(new Error(`closed ${code} ${reason} instead of a message`));
    };
    ws.once('close', onClose);
    ws.once('message', (data, isBinary) => {
      clearTimeout(t);
      ws.off('close', onClose);
      resolve({ data, isBinary });
    });
  });
}

async function assertEcho(ws, payload, binary) {
  const p = nextMessage(ws);
  ws.send(payload, { binary });
  const { data, isBinary } = await p;
  assert.equal(isBinary, binary);
  const want = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  assert.equal(data.length, want.length);
  assert.ok(want.equals(data), 'echo differs');
}

// Resolve with {code, reason, ms} when the TCP connection is gone.
function closed(ws) {
  const t0 = Date.now();
  return new Promise((resolve) => {
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString(), ms: Date.now() - t0 }));
  });
}

// A valid UTF-8 string of exactly n bytes mixing 1- to 4-byte characters.
function text(n, seed = 1) {
  const pieces = ['a', 'Z', ' ', 'é', 'ß', '€', '字', '😀', '\u{10fffd}'];
  const unit = [];
  let x = seed;
  for (let i = 0; i < 4096; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    unit.push(pieces[x % pieces.length]);
  }
  const u = Buffer.from(unit.join(''));
  const b = Buffer.alloc(n);
  for (let off = 0; off < n; off += u.length) u.copy(b, off, 0, Math.min(u.length, n - off));
  // Only the tail can be a cut sequence: it decodes to U+FFFD (which the pieces
  // never contain), so drop that and pad with ASCII.
  const whole = Buffer.from(b.toString('utf8').replace(/\uFFFD+$/u, ''));
  return whole.toString() + 'x'.repeat(n - whole.length);
}

const SIZES = [0, 1, 125, 126, 255, 256, 65535, 65536, 1 * MiB];

// ---- tests ----

describe('echo without permessage-deflate', () => {
  it('text and binary of several sizes', { timeout: T }, async () => {
    const ws = await open();
    assert.equal(ws.extensions, '');
    assert.equal(ws.extHeader, '');
    for (const n of SIZES) {
      await assertEcho(ws, text(n, n), false);
      await assertEcho(ws, randomBytes(n), true);
    }
    const c = closed(ws);
    ws.close(1000);
    const r = await c;
    assert.equal(r.code, 1000);
    assert.ok(r.ms < scaled(2000), `server took ${r.ms} ms to close TCP`);
  });

  it('16 MiB binary message', { timeout: T }, async () => {
    const ws = await open();
    await assertEcho(ws, randomBytes(16 * MiB), true);
    ws.close();
    await closed(ws);
  });
});

describe('echo with permessage-deflate', () => {
  const variants = [
    ['default offer', { threshold: 0 }, []],
    ['server_no_context_takeover', { threshold: 0, serverNoContextTakeover: true }, []],
    ['client_no_context_takeover', { threshold: 0, clientNoContextTakeover: true }, ['client_no_context_takeover']],
    ['server_max_window_bits=9', { threshold: 0, serverMaxWindowBits: 9 }, ['server_max_window_bits=9']],
    ['client_max_window_bits=10', { threshold: 0, clientMaxWindowBits: 10 }, ['client_max_window_bits=10']],
  ];
  for (const [name, pmd, want] of variants) {
    it(name, { timeout: T }, async () => {
      const ws = await open('/echo', { perMessageDeflate: pmd });
      assert.equal(ws.extensions, 'permessage-deflate');
      assert.match(ws.extHeader, /^permessage-deflate; server_no_context_takeover/);
      for (const p of want) assert.match(ws.extHeader, new RegExp(`; ${p}(;|$)`));
      for (const n of SIZES) {
        await assertEcho(ws, text(n, n + 1), false);
        await assertEcho(ws, Buffer.alloc(n, n & 0xff), true); // highly compressible
        await assertEcho(ws, randomBytes(Math.min(n, 70000)), true); // incompressible
      }
      const c = closed(ws);
      ws.close(4000, 'bye');
      const r = await c;
      assert.equal(r.code, 4000);
    });
  }

  it('16 MiB text message, compressed both ways', { timeout: T }, async () => {
    const ws = await open('/echo', { perMessageDeflate: { threshold: 0 } });
    await assertEcho(ws, text(16 * MiB, 16), false);
    ws.close();
    await closed(ws);
  });
});

describe('ping/pong', () => {
  it('pong carries the ping payload', { timeout: T }, async () => {
    const ws = await open();
    for (const payload of [Buffer.alloc(0), Buffer.from('hello'), randomBytes(125)]) {
      const pong = new Promise((resolve) => ws.once('pong', resolve));
      ws.ping(payload);
      assert.ok(payload.equals(await pong));
    }
    ws.close();
    await closed(ws);
  });
});

describe('close codes', () => {
  for (const code of [1000, 1001, 1003, 1011, 3000, 3999, 4000, 4999]) {
    it(`client close ${code} is echoed and TCP closed`, { timeout: T }, async () => {
      const ws = await open();
      const c = closed(ws);
      ws.close(code, `reason ${code}`);
      const r = await c;
      assert.equal(r.code, code);
      assert.equal(r.reason, '');
      assert.ok(r.ms < scaled(2000), `server took ${r.ms} ms to close TCP`);
    });
  }

  it('server closes with 1007 for invalid UTF-8 text', { timeout: T }, async () => {
    const ws = await open();
    ws.on('error', () => {});
    const c = closed(ws);
    ws.send(Buffer.from([0x68, 0x69, 0xff]), { binary: false }); // ws does not validate what it sends
    const r = await c;
    assert.equal(r.code, 1007);
  });
});

describe('/broadcast with 3 clients', () => {
  it('every client receives every message, each sender in order', { timeout: T }, async () => {
    const clients = await Promise.all([open('/broadcast'), open('/broadcast', { perMessageDeflate: true }),
      open('/broadcast')]);
    const N = 100;
    const got = clients.map(() => []);
    const done = clients.map((ws, i) => new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`client ${i}: ${got[i].length} messages`)), scaled(30000));
      ws.on('message', (data, isBinary) => {
        got[i].push(isBinary ? `b${data.subarray(0, data.indexOf(0)).toString()}` : data.toString());
        if (got[i].length === 1 + 3 * N) {
          clearTimeout(t);
          resolve();
        }
      });
    }));
    // A first message through one member proves all three have joined.
    const first = Promise.all(clients.map((ws) => new Promise((r) => ws.once('message', r))));
    clients[0].send('ready');
    await first;
    for (let k = 0; k < N; k++) {
      clients.forEach((ws, i) => {
        if (k % 2) ws.send(`${i}:${k}`);
        else ws.send(Buffer.concat([Buffer.from(`${i}:${k}`), Buffer.alloc(1), randomBytes(1000)]), { binary: true });
      });
    }
    await Promise.all(done);
    for (let i = 0; i < 3; i++) {
      assert.equal(got[i][0], 'ready');
      const bySender = [[], [], []];
      for (const m of got[i].slice(1)) {
        const [s, k] = m.replace(/^b/, '').split(':').map(Number);
        bySender[s].push(k);
      }
      for (let s = 0; s < 3; s++) {
        assert.deepEqual(bySender[s], Array.from({ length: N }, (_, k) => k), `client ${i}, sender ${s}`);
      }
    }
    await Promise.all(clients.map((ws) => { const c = closed(ws); ws.close(); return c; }));
  });
});
