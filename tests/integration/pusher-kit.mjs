// pusher-kit.mjs: what the Pusher integration tests (9x-pusher-*.mjs) share: a plexus with
// Pusher apps, pusher-js clients (Node), the `pusher` server SDK, a small auth server that
// signs subscriptions and sign-ins with the SDK (as a Laravel app's /broadcasting/auth does),
// a webhook receiver, and promise helpers. Not a test file itself (no number).

import http from 'node:http';
import { createRequire } from 'node:module';
import { outDir, PlexusServer, scaled, sleep } from './plexus-server.mjs';

const require = createRequire(import.meta.url);
export const Pusher = require('pusher-js/node');
export const PusherServer = require('pusher');

export const APP = { id: '101', key: 'app-key', secret: 'app-secret' };
export const MASTER_KEY = Buffer.alloc(32, 7).toString('base64'); // encrypted channels

Pusher.logToConsole = false;

/** A plexus with the Pusher app(s) given as a config file (pusher-apps) and flags. */
export async function startPusherServer(name, { apps = null, args = [], workers = 2 } = {}) {
  const dir = outDir(name);
  const cfgApps = apps ?? [{ ...APP }];
  const fs = await import('node:fs');
  const path = await import('node:path');
  const cfg = path.join(dir, 'plexus.json');
  fs.writeFileSync(cfg, JSON.stringify({ 'pusher-apps': cfgApps }));
  const srv = new PlexusServer({ dir, args: ['--config', cfg, '--workers', String(workers), ...args] });
  await srv.start();
  return srv;
}

/** The `pusher` server SDK pointed at `srv`. */
export function sdk(srv, app = APP, extra = {}) {
  return new PusherServer({
    appId: app.id,
    key: app.key,
    secret: app.secret,
    host: '127.0.0.1',
    port: String(srv.port),
    useTLS: false,
    encryptionMasterKeyBase64: MASTER_KEY,
    ...extra,
  });
}

/**
 * An auth server like a Laravel app's: POST /auth signs channel subscriptions (presence:
 * the user from the X-User header, user_info {name}), POST /user-auth signs sign-ins (the
 * user and its watchlist from X-User / X-Watch), and GET serves `files` ({path: {type, body}}:
 * a test page). Returns {url, close, requests}.
 */
export async function startAuthServer(server, files = {}) {
  const requests = [];
  const srv = http.createServer((req, res) => {
    const file = req.method === 'GET' && files[req.url.split('?')[0]];
    if (file) {
      res.writeHead(200, { 'content-type': file.type });
      res.end(file.body);
      return;
    }
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const form = new URLSearchParams(body);
      const user = req.headers['x-user'] || 'anon';
      requests.push({ path: req.url, form: Object.fromEntries(form), user });
      const cors = {
        'access-control-allow-origin': req.headers.origin || '*',
        'access-control-allow-headers': 'content-type, x-user, x-watch, x-csrf-token, authorization',
        'access-control-allow-credentials': 'true',
      };
      if (req.method === 'OPTIONS') {
        res.writeHead(204, cors);
        res.end();
        return;
      }
      if (req.method !== 'POST') {
        res.writeHead(404, cors);
        res.end();
        return;
      }
      if (req.headers['x-deny']) {
        res.writeHead(403, { 'content-type': 'application/json', ...cors });
        res.end('{"error":"denied"}');
        return;
      }
      let out;
      const socketId = form.get('socket_id');
      if (req.url.startsWith('/user-auth')) {
        const watch = req.headers['x-watch'] ? String(req.headers['x-watch']).split(',') : undefined;
        out = server.authenticateUser(socketId, { id: user, user_info: { name: `User ${user}` }, watchlist: watch });
      } else {
        const channel = form.get('channel_name');
        out = channel.startsWith('presence-')
          ? server.authorizeChannel(socketId, channel, { user_id: user, user_info: { name: `User ${user}` } })
          : server.authorizeChannel(socketId, channel);
      }
      res.writeHead(200, { 'content-type': 'application/json', ...cors });
      res.end(JSON.stringify(out));
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${srv.address().port}`;
  return { url, requests, close: () => new Promise((r) => srv.close(r)), server: srv };
}

/** A webhook receiver: collects {headers, body, json}; `status` (a function or number) answers. */
export async function startHookReceiver(status = 200) {
  const hits = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      let json;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      hits.push({ headers: req.headers, body, json, at: Date.now() });
      const code = typeof status === 'function' ? status(hits.length) : status;
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${srv.address().port}/hook`,
    hits,
    events: () => hits.flatMap((h) => (h.json ? h.json.events : [])),
    close: () => new Promise((r) => srv.close(r)),
  };
}

/** A pusher-js client (Node) on `srv`; `user` goes to the auth server as X-User. */
export function client(srv, { app = APP, auth = null, user = null, watch = null, transports = ['ws'], extra = {} } = {}) {
  const headers = {};
  if (user) headers['X-User'] = user;
  if (watch) headers['X-Watch'] = watch.join(',');
  const c = new Pusher(app.key, {
    cluster: 'plexus',
    wsHost: '127.0.0.1',
    wsPort: srv.port,
    httpHost: '127.0.0.1',
    httpPort: srv.port,
    forceTLS: false,
    enabledTransports: transports,
    disableStats: true,
    channelAuthorization: auth ? { endpoint: `${auth.url}/auth`, transport: 'ajax', headers } : undefined,
    userAuthentication: auth ? { endpoint: `${auth.url}/user-auth`, transport: 'ajax', headers } : undefined,
    ...extra,
  });
  return c;
}

/** Resolve with the first `event` on `emitter` (a channel, the connection, the user...). */
export function once(emitter, event, ms = 5000, what = event) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      emitter.unbind(event, on);
      reject(new Error(`timed out after ${scaled(ms)} ms waiting for ${what}`));
    }, scaled(ms));
    const on = (d) => {
      clearTimeout(t);
      emitter.unbind(event, on);
      resolve(d);
    };
    emitter.bind(event, on);
  });
}

/** Collect every `event` on `emitter` into an array (returned). */
export function collect(emitter, event) {
  const got = [];
  emitter.bind(event, (d, meta) => got.push(meta && Object.keys(meta).length ? { data: d, meta } : d));
  return got;
}

/** Wait until the client is connected; resolve its socket id. */
export async function connected(c, ms = 8000) {
  if (c.connection.state === 'connected') return c.connection.socket_id;
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`not connected after ${scaled(ms)} ms (${c.connection.state})`)), scaled(ms));
    c.connection.bind('connected', () => {
      clearTimeout(t);
      resolve();
    });
  });
  return c.connection.socket_id;
}

/** Subscribe and wait for subscription_succeeded (resolves the channel and its data). */
export async function subscribed(c, name, ms = 5000) {
  const ch = c.subscribe(name);
  const data = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no subscription_succeeded on ${name}`)), scaled(ms));
    ch.bind('pusher:subscription_succeeded', (d) => {
      clearTimeout(t);
      resolve(d);
    });
    ch.bind('pusher:subscription_error', (e) => {
      clearTimeout(t);
      reject(new Error(`subscription_error on ${name}: ${JSON.stringify(e)}`));
    });
  });
  return { ch, data };
}

/** The close code a pusher-js client got (its 'error' events carry it). */
export function closeCodes(c) {
  const codes = [];
  c.connection.bind('error', (e) => {
    const code = e?.error?.data?.code ?? e?.data?.code;
    if (code) codes.push(code);
  });
  return codes;
}

export { sleep, scaled };
