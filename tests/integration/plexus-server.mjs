// plexus-server.mjs: a small shared helper for the Node integration tests
// (tests/integration/NN-name.mjs, run by `node --test`): start, stop and restart a
// plexus process and wait for its port, the Node twin of pxtest.Server.
//
// Environment (set by ctest, see tests/CMakeLists.txt):
//   PLEXUS_BIN       the plexus binary (default: build/release/plexus)
//   PX_TEST_OUT      output directory; each test file writes under PX_TEST_OUT/<name>/
//   PX_TIMEOUT_MULT  every timeout is multiplied by this (4 under ASan)
//
// A server is started with `--listen 127.0.0.1:0` and is ready once its log says
// "listening on 127.0.0.1:PORT". restart() stops it with SIGTERM (exit code 0
// required: under ASan a leak makes it 99) and starts it again on the same port
// with the same data directory. Servers still running when the test process exits
// are killed by PID.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const SOURCE_DIR = path.resolve(process.env.PX_SOURCE_DIR || path.join(HERE, '..', '..'));
export const PLEXUS_BIN = path.resolve(process.env.PLEXUS_BIN || path.join(SOURCE_DIR, 'build', 'release', 'plexus'));
export const TEST_OUT = path.resolve(
  process.env.PX_TEST_OUT || path.join(path.dirname(PLEXUS_BIN), 'tests', 'out'),
);
export const TIMEOUT_MULT = Number(process.env.PX_TIMEOUT_MULT || 1) || 1;
export const SANITIZER_EXIT = 99;

/** A timeout in milliseconds, scaled for slow (sanitizer) builds. */
export const scaled = (ms) => ms * TIMEOUT_MULT;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Poll `pred` (sync or async) until it returns a truthy value, which is returned;
 * throws after `ms` (scaled here) with `what` in the message.
 */
export async function waitFor(pred, ms, what = 'condition', interval = 20) {
  const deadline = Date.now() + scaled(ms);
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${scaled(ms)} ms waiting for ${what}`);
    await sleep(interval);
  }
}

/** A fresh (emptied) output directory PX_TEST_OUT/<name>. */
export function outDir(name) {
  const d = path.join(TEST_OUT, name);
  fs.rmSync(d, { recursive: true, force: true });
  fs.mkdirSync(d, { recursive: true });
  return d;
}

const running = new Set();
/** Every PlexusServer created in this process (see stopAll). */
export const servers = new Set();
process.on('exit', () => {
  for (const s of running) {
    try {
      process.kill(s.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

const LISTEN_RE = /listening on 127\.0\.0\.1:(\d+)/;

export class PlexusServer {
  /**
   * @param {object} o
   * @param {string} o.dir output directory: logs go there, and the data directory
   *   (o.dataDir, default <dir>/data) unless given
   * @param {string[]} [o.args] extra arguments (besides --listen/--data-dir/--allow-anonymous/--workers)
   * @param {string} [o.name] log file prefix
   * @param {number} [o.readyTimeout] ms (scaled) to wait for the listening line
   */
  constructor({ dir, args = [], name = 'plexus', dataDir, readyTimeout = 10000 }) {
    this.dir = dir;
    this.name = name;
    this.args = args;
    this.dataDir = dataDir ?? path.join(dir, 'data');
    this.readyTimeout = readyTimeout;
    this.port = 0;
    this.proc = null;
    this.starts = 0;
    this.exitCode = null;
    this.logText = '';
    servers.add(this);
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid() {
    return this.proc?.pid;
  }

  running() {
    return this.proc !== null && this.exitCode === null;
  }

  /** Start on `port` (default: the port of the previous run, or 0 = any). */
  async start(port = this.port) {
    if (this.running()) throw new Error(`${this.name} is already running`);
    fs.mkdirSync(this.dataDir, { recursive: true });
    this.starts++;
    const cmd = [
      '--listen', `127.0.0.1:${port}`,
      '--data-dir', this.dataDir,
      '--allow-anonymous',
      '--workers', '2',
      ...this.args,
    ];
    this.logPath = path.join(this.dir, `${this.name}${this.starts > 1 ? `.${this.starts}` : ''}.log`);
    const log = fs.createWriteStream(this.logPath);
    log.write(`# ${PLEXUS_BIN} ${cmd.join(' ')}\n`);
    this.logText = '';
    this.exitCode = null;
    const proc = spawn(PLEXUS_BIN, cmd, { stdio: ['ignore', 'pipe', 'pipe'], cwd: this.dir });
    this.proc = proc;
    running.add(proc);
    // A server left running by a failed test must not keep the test process alive:
    // the 'exit' handler above kills it. (Waiting in stop() holds a timer.)
    proc.unref();
    proc.stdout.unref?.();
    proc.stderr.unref?.();
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        running.delete(proc);
        this.exitCode = code ?? (signal ? -1 : 0);
        this.exitSignal = signal;
        resolve(this.exitCode);
      });
    });
    proc.on('error', (e) => {
      this.logText += `spawn error: ${e.message}\n`;
    });
    const onData = (chunk) => {
      this.logText += chunk.toString();
      log.write(chunk);
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    this.exited.then(() => log.end());
    const deadline = Date.now() + scaled(this.readyTimeout);
    for (;;) {
      const m = LISTEN_RE.exec(this.logText);
      if (m) {
        this.port = Number(m[1]);
        return this;
      }
      if (this.exitCode !== null) {
        throw new Error(`${this.name} exited with ${this.exitCode} before it was ready:\n${this.logText}`);
      }
      if (Date.now() > deadline) {
        this.kill();
        throw new Error(`${this.name} not ready after ${scaled(this.readyTimeout)} ms:\n${this.logText}`);
      }
      await sleep(10);
    }
  }

  /** Send `signal` and wait up to `timeout` ms (scaled); returns the exit code. */
  async stop(signal = 'SIGTERM', timeout = 15000) {
    if (!this.proc) return null;
    if (this.exitCode === null) {
      this.proc.kill(signal);
      const t = setTimeout(() => this.exitCode === null && this.proc.kill('SIGKILL'), scaled(timeout));
      const code = await this.exited;
      clearTimeout(t);
      if (this.exitSignal === 'SIGKILL' && signal !== 'SIGKILL') {
        throw new Error(`${this.name} did not exit within ${scaled(timeout)} ms of ${signal}:\n${this.logText}`);
      }
      return code;
    }
    return this.exitCode;
  }

  /** Stop with SIGTERM, requiring exit code 0 (a sanitizer report is 99). */
  async stopCleanly(timeout = 15000) {
    const code = await this.stop('SIGTERM', timeout);
    if (code !== 0) {
      throw new Error(
        `${this.name} exited with ${code}${code === SANITIZER_EXIT ? ' (sanitizer report or leak)' : ''}:\n${this.logText}`,
      );
    }
    return code;
  }

  /** SIGKILL, no questions asked. */
  kill() {
    if (this.proc && this.exitCode === null) this.proc.kill('SIGKILL');
  }

  /** stopCleanly(), then start again on the same port and data directory. */
  async restart() {
    await this.stopCleanly();
    return this.start(this.port);
  }

  /**
   * One HTTP request to the server; resolves { status, headers, json, text }.
   * `body` (any JSON value) is sent as JSON.
   */
  async http(method, urlPath, body) {
    const res = await fetch(`${this.url}${urlPath}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, json, text };
  }

  /** Publish over the HTTP API; resolves the offset (throws unless 201). */
  async publish(channel, data) {
    const r = await this.http('POST', `/api/channels/${encodeURIComponent(channel)}/messages`, data);
    if (r.status !== 201) throw new Error(`publish to ${channel}: HTTP ${r.status} ${r.text}`);
    return r.json.offset;
  }
}

/**
 * Stop every server this process started that still runs (for after() hooks).
 * Throws if one does not exit with 0 (a sanitizer report, a crash); with `force`
 * they are killed instead (e.g. after a test already failed).
 */
export async function stopAll({ force = false } = {}) {
  const errors = [];
  for (const s of servers) {
    if (!s.running()) continue;
    if (force) {
      s.kill();
      await s.exited;
      continue;
    }
    try {
      await s.stopCleanly();
    } catch (e) {
      errors.push(e.message);
    }
  }
  if (errors.length) throw new Error(errors.join('\n'));
}

/** new PlexusServer(o).start() */
export async function startPlexus(o) {
  const s = new PlexusServer(o);
  await s.start();
  return s;
}
