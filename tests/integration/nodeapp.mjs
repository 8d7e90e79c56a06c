// nodeapp.mjs: helpers for the tests of the Node addon (not a test itself): a Node app on
// the addon (addon-app.cjs) as a child process, Phusion Passenger Standalone and a private
// Apache around such an app, and small HTTP/WebSocket/SSE clients.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { scaled, sleep, SOURCE_DIR, waitFor } from './plexus-server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const APP = path.join(HERE, 'addon-app.cjs');
export const ADDON = process.env.PLEXUS_ADDON || path.join(SOURCE_DIR, 'build', 'release', 'bindings', 'node', 'plexus.node');
export const BUILD_DIR = path.resolve(process.env.PX_BUILD_DIR || path.join(SOURCE_DIR, 'build', 'release'));

const children = new Set();
process.on('exit', () => {
  for (const p of children) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/** `node addon-app.cjs LISTEN` with options; events are its JSON lines. */
export class AddonApp {
  constructor({ dir, listen = '0', options = {}, env = {}, name = 'app' }) {
    Object.assign(this, { dir, listen, options, env, name });
    this.events = [];
    this.out = '';
    this.err = '';
  }

  async start() {
    fs.mkdirSync(this.dir, { recursive: true });
    const env = { ...process.env, PLEXUS_ADDON: ADDON, PX_ADDON_OPTIONS: JSON.stringify(this.options), ...this.env };
    const proc = spawn(process.execPath, [APP, this.listen], { cwd: this.dir, env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc = proc;
    children.add(proc);
    const log = fs.createWriteStream(path.join(this.dir, `${this.name}.log`));
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
      children.delete(proc);
      this.exitCode = code ?? -1;
      this.exitSignal = signal;
      log.end();
      resolve(this.exitCode);
    }));
    let buf = '';
    proc.stdout.on('data', (c) => {
      this.out += c;
      log.write(c);
      buf += c;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.startsWith('{"event"')) this.events.push(JSON.parse(line));
      }
    });
    proc.stderr.on('data', (c) => {
      this.err += c;
      log.write(c);
    });
    const ev = await this.waitEvent((e) => e.event === 'running' || e.event === 'error', 10000);
    this.running = ev;
    return ev;
  }

  async waitEvent(pred, ms = 5000) {
    return waitFor(() => {
      const e = this.events.find(pred);
      if (e) return e;
      if (this.exitCode !== undefined) throw new Error(`${this.name} exited with ${this.exitCode}:\n${this.out}${this.err}`);
      return null;
    }, ms, `an event of ${this.name}:\n${this.out}${this.err}`);
  }

  send(line) {
    this.proc.stdin.write(line + '\n');
  }

  async publish(channel, data) {
    const id = String(Math.random()).slice(2);
    this.send(`publish ${id} ${channel} ${JSON.stringify(data)}`);
    return this.waitEvent((e) => e.id === id);
  }

  /** The main thread's CPU time in ms (utime + stime of /proc/PID/task/PID/stat). */
  mainThreadCpuMs() {
    return cpuMs(`/proc/${this.proc.pid}/task/${this.proc.pid}/stat`);
  }

  processCpuMs() {
    return cpuMs(`/proc/${this.proc.pid}/stat`);
  }

  async stop(signal = 'SIGTERM', ms = 15000) {
    if (this.exitCode !== undefined) return this.exitCode;
    this.proc.kill(signal);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), scaled(ms));
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }
}

const TICK_MS = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim() || 100);
function cpuMs(file) {
  const s = fs.readFileSync(file, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_MS; // utime, stime (fields 14, 15)
}

/** One HTTP request (TCP `port` or Unix `socketPath`); resolves {status, headers, body}. */
export function request({ port, socketPath, method = 'GET', path: p = '/', headers = {}, body, agent }) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, socketPath, method, path: p, headers, agent }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: data }));
    });
    req.on('error', reject);
    req.setTimeout(scaled(10000), () => req.destroy(new Error(`timeout: ${method} ${p}`)));
    if (body !== undefined) req.write(typeof body === 'string' ? body : JSON.stringify(body));
    req.end();
  });
}

/** A WebSocket client of the native protocol: frames collected in .frames. */
export async function wsClient(url) {
  const ws = new WebSocket(url);
  ws.frames = [];
  ws.on('message', (d) => ws.frames.push(JSON.parse(d.toString())));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
  ws.next = (pred, ms = 5000) => waitFor(() => ws.frames.find(pred), ms, 'a WebSocket frame');
  ws.call = async (msg) => {
    ws.send(JSON.stringify(msg));
    return ws.next((f) => f.id === msg.id && (f.op === 'reply' || f.op === 'error'));
  };
  return ws;
}

/** Server-Sent Events of a channel: events collected in .events; .close(). */
export function sseClient({ port, socketPath, channel, headers = {} }) {
  const c = { events: [], buf: '' };
  c.ready = new Promise((resolve, reject) => {
    c.req = http.get({ host: '127.0.0.1', port, socketPath, path: `/api/channels/${channel}/events`, headers }, (res) => {
      c.status = res.statusCode;
      res.setEncoding('utf8');
      res.on('data', (d) => {
        c.buf += d;
        let i;
        while ((i = c.buf.indexOf('\n\n')) >= 0) {
          const block = c.buf.slice(0, i);
          c.buf = c.buf.slice(i + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
          const id = block.split('\n').find((l) => l.startsWith('id: '));
          if (data) c.events.push({ id: id ? Number(id.slice(4)) : null, data: JSON.parse(data) });
        }
      });
      resolve(res);
    });
    c.req.on('error', reject);
  });
  c.next = (pred, ms = 5000) => waitFor(() => c.events.find(pred), ms, `an SSE event on ${channel}`);
  c.close = () => c.req.destroy();
  return c;
}

export async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

export { sleep, waitFor, scaled };

/** Make an app folder: `files` (name -> text or a path to copy) and node_modules/plexus
 *  linked to this tree's package (its addon comes from PLEXUS_ADDON). */
/** Copy a test's directory to its output dir for the record, leaving out node_modules and
 * sockets. A file that vanishes while it is copied (an app still closing its database after
 * the front server stopped: SQLite removes its -wal and -shm) is skipped, not an error. */
export function keepArtifacts(src, dst) {
  let entries;
  try {
    entries = fs.readdirSync(src, { withFileTypes: true });
  } catch (e) {
    if (e.code === 'ENOENT') return;
    throw e;
  }
  fs.mkdirSync(dst, { recursive: true });
  for (const e of entries) {
    if (e.name === 'node_modules' || /\.s$|node\.|\.sock/.test(e.name)) continue;
    const from = path.join(src, e.name);
    const to = path.join(dst, e.name);
    try {
      if (e.isDirectory()) keepArtifacts(from, to);
      else if (e.isFile()) fs.copyFileSync(from, to);
    } catch (err) {
      if (err.code !== 'ENOENT') throw err;
    }
  }
}

export function makeApp(dir, files) {
  fs.mkdirSync(path.join(dir, 'node_modules'), { recursive: true });
  for (const [name, src] of Object.entries(files)) {
    const text = src.startsWith('/') ? fs.readFileSync(src, 'utf8') : src;
    fs.writeFileSync(path.join(dir, name), text);
  }
  const link = path.join(dir, 'node_modules', 'plexus');
  if (!fs.existsSync(link)) fs.symlinkSync(path.join(SOURCE_DIR, 'bindings', 'node'), link);
  return dir;
}

/**
 * A server process (Passenger, Apache) that `server` has just spawned as `server.proc`:
 * tracked (killed if the test process exits; `server.exited` resolves with its exit code,
 * also in `server.exitCode`), then awaited until 127.0.0.1:`server.port`/healthz answers
 * 200. If it exits first, the error carries `server.log()`. Resolves with `server`.
 */
async function healthy(server, what) {
  children.add(server.proc);
  server.exited = new Promise((resolve) => server.proc.on('exit', (code) => {
    children.delete(server.proc);
    server.exitCode = code;
    resolve(code);
  }));
  await waitFor(async () => {
    if (server.exitCode !== undefined) throw new Error(`${what} exited with ${server.exitCode}:\n${server.log()}`);
    try {
      return (await request({ port: server.port, path: '/healthz' })).status === 200;
    } catch {
      return false;
    }
  }, 60000, `${what} on port ${server.port}`, 200);
  return server;
}

/** The exit code of a server `healthy()` tracks, once it exits; SIGKILL after 30 s. */
async function reaped(server) {
  const t = setTimeout(() => server.proc.kill('SIGKILL'), scaled(30000));
  const code = await server.exited;
  clearTimeout(t);
  return code;
}

/**
 * Phusion Passenger Standalone (Debian's `passenger`) with the builtin engine (the nginx
 * engine needs a download), serving `appDir` on 127.0.0.1:port; its files (registry,
 * logs) under `dir`, which must be short (Unix socket paths).
 */
export class Passenger {
  constructor({ dir, appDir, port, minInstances = 1, env = {}, startupFile = 'app.js' }) {
    Object.assign(this, { dir, appDir, port, minInstances, env, startupFile });
    this.reg = path.join(dir, 'reg');
    this.pidFile = path.join(dir, 'passenger.pid');
    this.logFile = path.join(dir, 'passenger.log');
  }

  get env2() {
    return { ...process.env, PLEXUS_ADDON: ADDON, PASSENGER_INSTANCE_REGISTRY_DIR: this.reg, ...this.env };
  }

  async start() {
    fs.mkdirSync(this.reg, { recursive: true });
    const args = ['start', '--engine=builtin', '--address', '127.0.0.1', '--port', String(this.port),
      '--app-type', 'node', '--startup-file', this.startupFile, '--environment', 'production',
      '--min-instances', String(this.minInstances), '--max-pool-size', String(Math.max(this.minInstances, 2)),
      '--log-file', this.logFile, '--pid-file', this.pidFile, '--instance-registry-dir', this.reg,
      // Offline: no security-update check, no telemetry (both would reach the Internet).
      '--disable-security-update-check', '--disable-anonymous-telemetry'];
    const out = fs.openSync(path.join(this.dir, 'passenger-start.log'), 'w');
    this.proc = spawn('passenger', args, { cwd: this.appDir, env: this.env2, stdio: ['ignore', out, out] });
    return healthy(this, 'passenger');
  }

  log() {
    const read = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
    return read(path.join(this.dir, 'passenger-start.log')) + read(this.logFile);
  }

  /** passenger-status as {processes: [{pid, processed, sessions}]} */
  status() {
    const xml = execFileSync('passenger-status', ['--show=xml'], { env: this.env2, encoding: 'utf8' });
    const processes = [];
    for (const m of xml.matchAll(/<process>([\s\S]*?)<\/process>/g)) {
      const get = (tag) => Number((new RegExp(`<${tag}>(\\d+)</${tag}>`).exec(m[1]) || [])[1]);
      processes.push({ pid: get('pid'), processed: get('processed'), sessions: get('sessions') });
    }
    return { processes };
  }

  async stop() {
    if (this.exitCode !== undefined) return this.exitCode;
    execFileSync('passenger', ['stop', '--pid-file', this.pidFile], { env: this.env2, stdio: 'ignore' });
    return reaped(this);
  }
}

/** Is process `pid` alive? */
export function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A private Apache 2.4 with libapache2-mod-passenger (never the system's: its own
 * ServerRoot, config, pid and logs under `dir`, one loopback port) serving the Node app in
 * `appDir` the way hosting panels configure it.
 */
export class Apache {
  constructor({ dir, appDir, port, env = {} }) {
    Object.assign(this, { dir, appDir, port, env });
    this.conf = path.join(dir, 'httpd.conf');
    this.reg = path.join(dir, 'reg');
  }

  async start() {
    for (const d of ['run', 'reg', 'public_html']) fs.mkdirSync(path.join(this.dir, d), { recursive: true });
    const mod = (name, file) => `LoadModule ${name} /usr/lib/apache2/modules/${file}`;
    const setenv = Object.entries({ PLEXUS_ADDON: ADDON, ...this.env }).map(([k, v]) => `  SetEnv ${k} "${v}"`).join('\n');
    fs.writeFileSync(this.conf, `ServerRoot "${this.dir}"
Listen 127.0.0.1:${this.port}
PidFile "${this.dir}/run/httpd.pid"
DefaultRuntimeDir "${this.dir}/run"
ErrorLog "${this.dir}/error.log"
LogLevel warn
ServerName 127.0.0.1
User nobody
Group nogroup
${mod('mpm_event_module', 'mod_mpm_event.so')}
${mod('authz_core_module', 'mod_authz_core.so')}
${mod('env_module', 'mod_env.so')}
${mod('passenger_module', 'mod_passenger.so')}
PassengerRoot /usr/lib/ruby/vendor_ruby/phusion_passenger/locations.ini
PassengerDefaultRuby /usr/bin/ruby
PassengerInstanceRegistryDir "${this.reg}"
PassengerLogFile "${this.dir}/passenger.log"
PassengerDisableSecurityUpdateCheck on
PassengerDisableAnonymousTelemetry on
PassengerDefaultUser root
<VirtualHost 127.0.0.1:${this.port}>
  DocumentRoot "${this.dir}/public_html"
  <Directory "${this.dir}/public_html">
    Require all granted
    AllowOverride All
  </Directory>
  # What a panel's "Setup Node.js App" writes (CloudLinux writes it into .htaccess).
  PassengerAppRoot "${this.appDir}"
  PassengerBaseURI "/"
  PassengerNodejs "${process.execPath}"
  PassengerAppType node
  PassengerStartupFile app.js
${setenv}
</VirtualHost>
`);
    const out = fs.openSync(path.join(this.dir, 'apache.out'), 'w');
    this.proc = spawn('/usr/sbin/apache2', ['-f', this.conf, '-DFOREGROUND'], { stdio: ['ignore', out, out],
      env: { ...process.env, APACHE_RUN_DIR: path.join(this.dir, 'run'), APACHE_LOG_DIR: this.dir } });
    return healthy(this, 'apache');
  }

  log() {
    const read = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
    return ['apache.out', 'error.log', 'passenger.log'].map((f) => read(path.join(this.dir, f))).join('\n');
  }

  async stop() {
    if (this.exitCode !== undefined) return this.exitCode;
    this.proc.kill('SIGTERM');
    return reaped(this);
  }
}
