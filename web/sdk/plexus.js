// plexus browser SDK — a dependency-free ES module for the plexus hub protocol
// (docs/protocol.md). WebSocket first; Server-Sent Events + HTTP when a WebSocket
// cannot be opened. Reconnects with jittered exponential backoff and resubscribes
// with `since`, so no message is lost or delivered twice.
//
//   import { Plexus } from '/sdk/plexus.js';
//   const px = new Plexus('http://127.0.0.1:8080', { token });
//   const sub = px.subscribe('room', { onMessage: (data, m) => console.log(m.offset, data) });
//   const offset = await px.publish('room', { text: 'hi' });

/**
 * A token, or a function (sync or async) returning a fresh one. A function is called when a
 * connection needs a token and the last one is about to expire, before renewing it on an open
 * WebSocket ({"op":"auth"}), and after the server said the token expired.
 * @typedef {string | (() => string | Promise<string>)} TokenSource
 */

/**
 * @typedef {Object} PlexusOptions
 * @property {TokenSource} [token] JWT for the server's --jwt-secret (sent as ?token= / Bearer)
 * @property {'auto'|'websocket'|'sse'} [transport] default 'auto': WebSocket, SSE if it cannot open
 * @property {number} [minDelay] first reconnect delay in ms (default 500)
 * @property {number} [maxDelay] largest reconnect delay in ms (default 10000)
 * @property {number} [requestTimeout] ms before a request is rejected (default 10000)
 * @property {number} [openTimeout] ms a WebSocket may take to open (default 2000); a proxy that
 *   holds the upgrade longer, or answers it wrongly, makes 'auto' fall back to SSE
 * @property {number} [maxInflight] requests sent and not yet answered at most (default 32, the
 *   server's --max-inflight default); more wait in the SDK, in order. 0 = no bound
 * @property {any} [WebSocket] WebSocket constructor (default globalThis.WebSocket; Node: the `ws` package)
 * @property {any} [EventSource] EventSource constructor (default globalThis.EventSource)
 * @property {typeof fetch} [fetch] fetch implementation (default globalThis.fetch)
 */

/**
 * @typedef {Object} Message
 * @property {string} channel
 * @property {number} offset
 * @property {any} data
 */

/**
 * @typedef {Object} PresenceEvent
 * @property {string} channel
 * @property {string} client
 * @property {string} [user]
 * @property {any} [info]
 */

/**
 * Where a subscription goes on after history could not cover what it missed: messages up to
 * `offset` are not delivered, live ones after it are.
 * @typedef {Object} RecoveryInfo
 * @property {string} channel
 * @property {string} epoch
 * @property {number} offset
 */

/**
 * @typedef {Object} HistoryResult
 * @property {string|null} epoch the channel's epoch (null: the channel never had a message)
 * @property {number} offset the channel's latest offset
 * @property {{offset: number, time: number, data: any}[]} messages in offset order
 * @property {true} [truncated] some messages after `since` were no longer in history
 */

/**
 * @typedef {Object} SubscribeOptions
 * @property {(data: any, msg: Message) => void} [onMessage]
 * @property {(ev: PresenceEvent) => void} [onJoin] join events (asks the server for them)
 * @property {(ev: PresenceEvent) => void} [onLeave] leave events
 * @property {(info: RecoveryInfo) => void} [onRecoveryFailed]
 *   history no longer covers the gap after a reconnect, or was trimmed during a catch-up
 *   (reload with history())
 * @property {{epoch?: string, offset: number}} [since] start from this position (replays what follows)
 * @property {any} [info] how this client appears in presence when it has no token
 */

/** An error the server answered with: `code` is machine-readable (docs/protocol.md). */
export class PlexusError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = 'PlexusError';
    this.code = code;
  }
}

/** One subscription; returned by Plexus.subscribe. */
export class Subscription {
  /** @param {Plexus} client @param {string} channel @param {SubscribeOptions} opts */
  constructor(client, channel, opts) {
    this.client = client;
    this.channel = channel;
    this.opts = opts;
    /** @type {string|null} epoch of the channel, once known */
    this.epoch = opts.since?.epoch ?? null;
    /** @type {number} offset of the last message delivered (0 = none) */
    this.offset = opts.since?.offset ?? 0;
    this.hasPosition = !!opts.since;
    this.active = false;
    this.closed = false;
    /** @type {Promise<void>} resolves once the server confirmed the subscription */
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {});
  }

  /** Stop receiving; resolves when the server confirmed. */
  unsubscribe() {
    return this.client._unsubscribe(this);
  }

  /** @param {{since?: number, limit?: number}} [o] @returns {Promise<HistoryResult>} */
  history(o) {
    return this.client.history(this.channel, o);
  }

  presence() {
    return this.client.presence(this.channel);
  }

  /** @param {any} msg */
  _deliver(msg) {
    if (this.closed) return;
    // Exactly once: a replay after reconnect may overlap what we already have.
    if (msg.offset <= this.offset) return;
    this.offset = msg.offset;
    this.hasPosition = true;
    this.opts.onMessage?.(msg.data, msg);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Without `limit`, history() collects at most this many messages (the server's default). */
const HISTORY_DEFAULT_LIMIT = 100;

/** Errors that mean "not done, try again later" (docs/protocol.md). */
const RETRY_LATER = new Set(['rate_limited', 'too_many_requests']);

/**
 * The payload of a JWT, decoded but not verified (the server verifies it); null if `token`
 * is not a JWT.
 * @param {string} token @returns {Record<string, any>|null}
 */
export function jwtPayload(token) {
  try {
    const b64 = String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const json = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    return json && typeof json === 'object' ? json : null;
  } catch {
    return null;
  }
}

export class Plexus {
  /**
   * @param {string} url base URL of the server: http(s)://host:port (ws:// is derived)
   * @param {PlexusOptions} [options]
   */
  constructor(url, options = {}) {
    const u = new URL(url, globalThis.location?.href);
    this.httpBase = `${u.protocol === 'wss:' ? 'https:' : u.protocol === 'ws:' ? 'http:' : u.protocol}//${u.host}`;
    this.wsUrl = `${u.protocol === 'https:' || u.protocol === 'wss:' ? 'wss:' : 'ws:'}//${u.host}/ws`;
    this.options = { minDelay: 500, maxDelay: 10000, requestTimeout: 10000, openTimeout: 2000, transport: 'auto', maxInflight: 32, ...options };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    /** @type {Map<string, Subscription>} */
    this.subs = new Map();
    this.pending = new Map(); // id -> request (sent, or waiting in `queue`)
    this.queue = []; // requests not sent yet (over maxInflight), in order
    this.inflight = 0; // sent requests that count toward the server's --max-inflight
    this.nextId = 1;
    this.listeners = new Map();
    this.ws = null;
    this.state = 'idle'; // idle | connecting | open | closed
    this.transport = null; // 'websocket' | 'sse'
    this.clientId = null;
    this.attempt = 0;
    this.sse = new Map();
    this.wsEverOpened = false;
    this._leaving = new Map(); // channel -> promise of an unsubscribe still being retried
    // Tokens: a string is used as is; a function is asked for a fresh one when needed.
    this._tokenFn = typeof options.token === 'function' ? options.token : null;
    this._token = null;
    this._tokenExp = 0; // ms; 0 = no exp claim
    this._tokenLife = 0; // ms from issue (or receipt) to exp
    this._tokenP = null; // a call of the token function in progress
    this._tokenCalls = 0;
    if (typeof options.token === 'string' && options.token) this._setToken(options.token);
    // Connect on the next microtask, not now: without WebSocket the SSE fallback opens
    // synchronously, and its 'open' event must reach listeners added right after `new`.
    queueMicrotask(() => this._connect());
  }

  /**
   * Events: 'open' ({transport, client}), 'close' ({code, reason}), 'reconnecting' ({delay, attempt}),
   * 'recovery-failed' (RecoveryInfo), 'error' (PlexusError), 'transport' ({transport}),
   * 'closed' ({error}: closed for good, by close(), a refused token or an expired string token).
   * @param {string} type @param {(ev: any) => void} fn
   */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  _emit(type, ev) {
    for (const fn of this.listeners.get(type) ?? []) {
      try {
        fn(ev);
      } catch (e) {
        setTimeout(() => { throw e; });
      }
    }
  }

  /** True while connected: the WebSocket is open (welcome received) or the SSE fallback is in use. */
  get connected() {
    return this.state === 'open';
  }

  /** Jittered exponential backoff: base/2 + random(base/2), base = min(maxDelay, minDelay * 2^n). */
  _backoff(n) {
    const { minDelay, maxDelay } = this.options;
    const base = Math.min(maxDelay, minDelay * 2 ** Math.min(n, 16));
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  // ---- tokens -------------------------------------------------------------------------

  _setToken(token) {
    this._token = token;
    const p = jwtPayload(token);
    const now = Date.now();
    this._tokenExp = typeof p?.exp === 'number' ? p.exp * 1000 : 0;
    const iat = typeof p?.iat === 'number' && p.iat * 1000 < this._tokenExp ? p.iat * 1000 : now;
    this._tokenLife = this._tokenExp ? Math.max(0, this._tokenExp - Math.min(iat, now)) : 0;
  }

  /**
   * How long before `exp` a token is renewed: 30 s or a tenth of its lifetime, whichever
   * comes first, but no earlier than halfway through its life (short-lived tokens).
   */
  _renewMargin() {
    return Math.min(Math.max(30000, this._tokenLife / 10), this._tokenLife / 2);
  }

  /**
   * The token to use now (null: none). With a token function: the last token while it is
   * not due for renewal, else a fresh one. `stale` (a token the server refused as expired, or
   * the one being renewed) is replaced whatever the clocks say, unless another caller already
   * replaced it. Concurrent callers share one call of the function.
   * Rejects with a PlexusError `token_error` if the function fails.
   * @param {string|null} [stale]
   * @returns {Promise<string|null>}
   */
  _getToken(stale = null) {
    if (!this._tokenFn) return Promise.resolve(this._token);
    const due = stale ? this._token === stale : !this._token || (this._tokenExp && this._tokenExp - Date.now() <= this._renewMargin());
    if (!due && !this._tokenP) return Promise.resolve(this._token);
    this._tokenP ??= (async () => {
      try {
        let t;
        this._tokenCalls++;
        try {
          t = await this._tokenFn();
        } catch (e) {
          throw new PlexusError('token_error', `the token function failed: ${e?.message ?? e}`);
        }
        if (typeof t !== 'string' || !t) throw new PlexusError('token_error', 'the token function returned no token');
        this._setToken(t);
        return t;
      } finally {
        this._tokenP = null;
      }
    })();
    return this._tokenP;
  }

  /** Renew the open WebSocket's token `delay` ms from now (default: its margin before exp). */
  _scheduleRenew(delay) {
    clearTimeout(this._renewTimer);
    const ws = this.ws;
    if (!this._tokenFn || !ws?.plexusExp || this.transport !== 'websocket') return;
    const at = delay ?? ws.plexusExp - this._renewMargin() - Date.now();
    this._renewTimer = setTimeout(() => this._renew(), Math.max(0, at));
  }

  /** Renew the token on the open WebSocket ({"op":"auth"}) before it expires. */
  async _renew() {
    const ws = this.ws;
    if (this.state !== 'open' || !ws || this.transport !== 'websocket') return;
    const exp = ws.plexusExp;
    try {
      const token = await this._getToken(this._token); // always a new one (the last may have been refused)
      if (this.ws !== ws || this.state !== 'open') return; // a reconnect took it
      const r = await this._request({ op: 'auth', token }, { bypass: true });
      if (this.ws !== ws) return;
      ws.plexusToken = token;
      ws.plexusExp = typeof r.exp === 'number' ? r.exp * 1000 : 0;
    } catch (e) {
      if (this.ws !== ws || this.state !== 'open') return;
      this._emit('error', e); // the function failed, or the server refused the new token
    }
    if (!ws.plexusExp) return; // the connection's token no longer expires
    if (ws.plexusExp > exp) {
      this._scheduleRenew();
    } else if (Date.now() < exp) {
      // Not renewed, or the function gave a token that lasts no longer: try again a little
      // later while the current one is valid (at expiry the server closes; reconnect follows).
      this._scheduleRenew(Math.min(Math.max(1000, this._renewMargin() / 4), 30000));
    }
  }

  // ---- connection ---------------------------------------------------------------------

  _connect() {
    if (this.state === 'closed') return;
    const want = this.options.transport;
    const canWs = typeof this.WebSocket === 'function';
    if (want === 'sse' || (want === 'auto' && (!canWs || this._wsBroken))) {
      this._useSse();
      return;
    }
    this.state = 'connecting';
    if (!this._tokenFn) {
      this._openWs(this._token, true);
      return;
    }
    const stale = this._staleToken ?? null;
    this._staleToken = null;
    const calls = this._tokenCalls;
    this._getToken(stale).then(
      (token) => {
        if (this.state === 'closed' || this.ws) return;
        this._openWs(token, this._tokenCalls !== calls);
      },
      (e) => {
        if (this.state === 'closed') return;
        this._emit('error', e); // the token function failed: try again later
        this._scheduleReconnect();
      },
    );
  }

  /** @param {string|null} token @param {boolean} fresh the token function was just asked */
  _openWs(token, fresh) {
    const want = this.options.transport;
    let ws;
    try {
      ws = new this.WebSocket(token ? `${this.wsUrl}?token=${encodeURIComponent(token)}` : this.wsUrl);
    } catch (e) {
      if (want === 'auto') {
        this._wsBroken = true;
        this._useSse();
      } else {
        this._scheduleReconnect();
      }
      return;
    }
    ws.plexusToken = token; // what this connection was opened with (renewals replace it)
    ws.plexusTokenFresh = fresh;
    ws.plexusExp = (token && jwtPayload(token)?.exp * 1000) || 0;
    this.ws = ws;
    let opened = false;
    // A proxy may hold the upgrade without answering: give it up after openTimeout.
    const openTimer = setTimeout(() => {
      if (!opened && this.ws === ws) ws.close();
    }, this.options.openTimeout);
    ws.onopen = () => {
      opened = true;
      this.wsEverOpened = true;
      clearTimeout(openTimer);
    };
    ws.onmessage = (ev) => this._onFrame(typeof ev.data === 'string' ? ev.data : String(ev.data), ws);
    // A failed connection is followed by 'close', which handles it. The listener must exist:
    // Node's `ws` throws an 'error' event nobody listens to (e.g. ECONNREFUSED while the
    // server restarts) as an uncaught exception.
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this._renewTimer);
      const wasOpen = this.state === 'open';
      this.state = this.state === 'closed' ? 'closed' : 'connecting';
      for (const s of this.subs.values()) {
        s.active = false;
        clearTimeout(s._retryTimer);
      }
      this._failPending(new PlexusError('disconnected', 'connection lost'));
      clearTimeout(openTimer);
      if (wasOpen) this._emit('close', { code: ev?.code, reason: ev?.reason });
      if (this.state === 'closed') return;
      // Some front servers drop the upgrade (Apache + Passenger answers 101 without
      // `Connection: Upgrade`; the browser refuses it at once): if a WebSocket never
      // opened, try SSE instead: at once when the server answers plain HTTP (it is up, so
      // the upgrade is what failed), else after a second failed attempt.
      if (!opened && !this.wsEverOpened && want === 'auto') {
        if (++this._wsFailures >= 2) {
          this._wsBroken = true;
          this._useSse();
          return;
        }
        if (typeof this.fetch === 'function' && typeof this.EventSource === 'function') {
          this._probeHttp().then((up) => {
            if (this.state === 'closed' || this.ws || this.transport === 'sse') return;
            if (up) {
              this._wsBroken = true;
              this._useSse();
            } else {
              this._scheduleReconnect();
            }
          });
          return;
        }
      }
      this._scheduleReconnect();
    };
    this._wsFailures ??= 0;
  }

  /** Does the server answer plain HTTP? Any status counts (401 and 404 too). */
  async _probeHttp() {
    const ctl = typeof AbortController === 'function' ? new AbortController() : null;
    const t = setTimeout(() => ctl?.abort(), this.options.openTimeout);
    try {
      await this.fetch(`${this.httpBase}/healthz`, { cache: 'no-store', signal: ctl?.signal });
      return true;
    } catch {
      return false;
    } finally {
      clearTimeout(t);
    }
  }

  _scheduleReconnect() {
    if (this.state === 'closed') return;
    const delay = this._backoff(this.attempt); // jitter: spread reconnect storms
    this.attempt++;
    this._emit('reconnecting', { delay, attempt: this.attempt });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), delay);
  }

  _onFrame(text, ws) {
    if (ws !== this.ws) return;
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    switch (m.op) {
      case 'welcome':
        this.clientId = m.client;
        this.state = 'open';
        this.transport = 'websocket';
        this.attempt = 0;
        this._emit('open', { transport: 'websocket', client: m.client });
        for (const s of this.subs.values()) this._sendSubscribe(s);
        this._scheduleRenew();
        break;
      case 'message': {
        const s = this.subs.get(m.channel);
        if (s?.active) s._deliver(m);
        break;
      }
      case 'recovery-failed': {
        // History was trimmed while this subscription was catching up: what came up to
        // m.offset is lost to it; live messages after it follow.
        const s = this.subs.get(m.channel);
        if (s?.active) this._recoveryFailed(s, { channel: m.channel, epoch: m.epoch, offset: m.offset });
        break;
      }
      case 'join':
        this.subs.get(m.channel)?.opts.onJoin?.(m);
        break;
      case 'leave':
        this.subs.get(m.channel)?.opts.onLeave?.(m);
        break;
      case 'reply':
      case 'pong':
        this._settle(m.id, m, null);
        break;
      case 'error': {
        const err = new PlexusError(m.code, m.message);
        if (m.id !== undefined) {
          if (this.pending.has(m.id)) this._settle(m.id, null, err);
          else this._emit('error', err);
          break;
        }
        if (m.code === 'token_expired') {
          // The server closes the connection (1008) right after this.
          if (this._tokenFn) {
            this._staleToken = ws.plexusToken; // reconnect with a fresh one
          } else {
            this._emit('error', err);
            this._close(err); // a string token cannot be renewed: retrying cannot help
          }
          break;
        }
        if (m.code === 'unauthorized') {
          if (this._tokenFn && !ws.plexusTokenFresh) {
            // A token kept from before, refused (expired by the server's clock?): the
            // reconnect after the close asks the function for a fresh one.
            this._staleToken = ws.plexusToken;
            break;
          }
          this._emit('error', err);
          this._close(err); // retrying cannot help: waiting calls reject instead of hanging
          break;
        }
        this._emit('error', err);
        break;
      }
    }
  }

  _settle(id, value, err) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (p.sent && p.counted) this.inflight--;
    if (err) {
      p.reject(err);
    } else {
      // Synchronously, before the next frame: a subscription's position must be set before
      // the replay that follows its reply is delivered.
      try {
        p.onReply?.(value);
      } catch (e) {
        setTimeout(() => { throw e; });
      }
      p.resolve(value);
    }
    this._pump();
  }

  _failPending(err) {
    this.queue = [];
    this.inflight = 0;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(err);
    }
  }

  /**
   * Send a request and wait for its reply. Requests the server counts toward its
   * --max-inflight wait in order while `maxInflight` of them are unanswered; `bypass`
   * (auth) goes out at once.
   * @param {Record<string, any>} msg
   * @param {{bypass?: boolean, onReply?: (reply: any) => void}} [o]
   */
  _request(msg, o = {}) {
    return new Promise((resolve, reject) => {
      if (this.state !== 'open' || !this.ws) {
        reject(new PlexusError('disconnected', 'not connected'));
        return;
      }
      const id = this.nextId++;
      const timer = setTimeout(
        () => this._settle(id, null, new PlexusError('timeout', `no reply to ${msg.op} in time`)),
        this.options.requestTimeout,
      );
      const counted = !o.bypass && msg.op !== 'unsubscribe' && msg.op !== 'ping';
      const req = { frame: JSON.stringify({ ...msg, id }), resolve, reject, timer, counted, sent: false, onReply: o.onReply };
      this.pending.set(id, req);
      if (o.bypass) {
        req.sent = true;
        this.ws.send(req.frame);
      } else {
        this.queue.push({ id, req });
        this._pump();
      }
    });
  }

  /** Send queued requests, in order, while under maxInflight. */
  _pump() {
    const max = this.options.maxInflight > 0 ? this.options.maxInflight : Infinity;
    while (this.queue.length && this.ws && this.state === 'open') {
      const { id, req } = this.queue[0];
      if (this.pending.get(id) !== req) {
        this.queue.shift(); // timed out while waiting
        continue;
      }
      if (req.counted && this.inflight >= max) break;
      this.queue.shift();
      req.sent = true;
      if (req.counted) this.inflight++;
      this.ws.send(req.frame);
    }
  }

  /** Wait until connected (or closed). */
  _whenOpen() {
    if (this.state === 'open') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(this.closeError ?? new PlexusError('closed', 'client closed'));
    return new Promise((resolve, reject) => {
      const off = this.on('open', () => {
        off();
        offc();
        resolve();
      });
      const offc = this.on('closed', (ev) => {
        off();
        offc();
        reject(ev?.error ?? new PlexusError('closed', 'client closed'));
      });
    });
  }

  // ---- subscriptions ------------------------------------------------------------------

  /**
   * Subscribe to `channel`. Messages published after the subscription took effect (or after
   * `since`) are passed to onMessage in offset order, each exactly once, across reconnects.
   * @param {string} channel @param {SubscribeOptions} [opts]
   * @returns {Subscription}
   */
  subscribe(channel, opts = {}) {
    if (this.subs.has(channel)) throw new PlexusError('already_subscribed', `already subscribed to ${channel}`);
    const s = new Subscription(this, channel, opts);
    this.subs.set(channel, s);
    if (this.state === 'open') {
      if (this.transport === 'websocket') this._sendSubscribe(s);
      else this._sseSubscribe(s);
    }
    return s;
  }

  /** @param {Subscription} s @param {RecoveryInfo} info */
  _recoveryFailed(s, info) {
    s.epoch = info.epoch;
    s.offset = info.offset;
    s.hasPosition = true;
    s.opts.onRecoveryFailed?.(info);
    this._emit('recovery-failed', info);
  }

  /** The server's answer to a subscribe; runs before any replayed message is delivered. */
  _subscribed(s, r) {
    if (s.closed) return;
    const epochChanged = s.epoch && r.epoch !== s.epoch;
    s.epoch = r.epoch;
    if (!s.hasPosition) {
      s.offset = r.offset; // live from here
      s.hasPosition = true;
    }
    if (r.recovered === false || epochChanged) {
      // history does not cover the gap: continue live
      this._recoveryFailed(s, { channel: s.channel, epoch: r.epoch, offset: r.offset });
    }
  }

  async _sendSubscribe(s) {
    clearTimeout(s._retryTimer);
    const ws = this.ws;
    const leaving = this._leaving.get(s.channel);
    if (leaving) {
      // An unsubscribe of the same channel is still being retried: subscribe after it.
      await leaving.catch(() => {});
      if (this.ws !== ws || s.closed || this.subs.get(s.channel) !== s) return; // a reconnect resubscribes
    }
    const msg = { op: 'subscribe', channel: s.channel };
    if (s.hasPosition) msg.since = s.epoch ? { epoch: s.epoch, offset: s.offset } : { offset: s.offset };
    if (s.opts.onJoin || s.opts.onLeave) msg.presence = true;
    if (s.opts.info !== undefined) msg.info = s.opts.info;
    // Messages replayed after the reply are delivered only once active.
    s.active = true;
    try {
      await this._request(msg, { onReply: (r) => this._subscribed(s, r) });
      if (s.closed) return;
      s._retries = 0;
      s._resolveReady();
    } catch (e) {
      s.active = false;
      if (s.closed || this.state === 'closed') return;
      if (e.code === 'disconnected' || e.code === 'timeout') return; // resubscribed on reconnect
      if (RETRY_LATER.has(e.code)) {
        // Over the server's subscribe rate or in-flight bound (many subscriptions sent at
        // once after a reconnect): not done; try again with backoff, `ready` still pending.
        s._retryTimer = setTimeout(() => {
          if (this.ws === ws && this.state === 'open' && !s.closed && this.subs.get(s.channel) === s) this._sendSubscribe(s);
        }, this._backoff((s._retries = (s._retries ?? 0) + 1) - 1));
        return;
      }
      this.subs.delete(s.channel);
      s.closed = true;
      s._rejectReady(e);
      this._emit('error', e);
    }
  }

  async _unsubscribe(s) {
    if (s.closed) return;
    s.closed = true;
    clearTimeout(s._retryTimer);
    this.subs.delete(s.channel);
    if (this.transport === 'sse') {
      this.sse.get(s.channel)?.close();
      this.sse.delete(s.channel);
      return;
    }
    if (this.state !== 'open') return;
    const ws = this.ws;
    const leave = (async () => {
      for (let n = 1; ; n++) {
        try {
          await this._request({ op: 'unsubscribe', channel: s.channel });
          return;
        } catch (e) {
          if (e.code === 'not_subscribed' || e.code === 'disconnected' || this.state === 'closed') return;
          if (e.code !== 'rate_limited' || this.ws !== ws) throw e;
        }
        await sleep(this._backoff(n - 1)); // over --subscribe-rate: not done, try again
        if (this.ws !== ws || this.state !== 'open') return; // the server forgot it with the connection
      }
    })();
    this._leaving.set(s.channel, leave);
    try {
      await leave;
    } finally {
      if (this._leaving.get(s.channel) === leave) this._leaving.delete(s.channel);
    }
  }

  // ---- requests --------------------------------------------------------------------------

  /**
   * Publish `data` (any JSON value) to `channel`. Resolves with the message's offset once the
   * server has stored it; rejects with a PlexusError carrying the server's code and message.
   * @param {string} channel @param {any} data @returns {Promise<number>}
   */
  async publish(channel, data) {
    await this._whenOpen();
    if (this.transport === 'sse') {
      const r = await this._http('POST', `/api/channels/${encodeURIComponent(channel)}/messages`, data);
      return r.offset;
    }
    const r = await this._request({ op: 'publish', channel, data });
    return r.offset;
  }

  /**
   * Messages of `channel` after `since` (default 0: the oldest kept), at most `limit`
   * (default 100). Over WebSocket one answer is bounded in bytes: the SDK asks again from
   * where it ended (`more`) until it has `limit` messages or there are no more.
   * @param {string} channel @param {{since?: number, limit?: number}} [o]
   * @returns {Promise<HistoryResult>}
   */
  async history(channel, o = {}) {
    await this._whenOpen();
    if (this.transport === 'sse') {
      const q = new URLSearchParams();
      if (o.since !== undefined) q.set('since', String(o.since));
      if (o.limit !== undefined) q.set('limit', String(o.limit));
      return this._http('GET', `/api/channels/${encodeURIComponent(channel)}/messages?${q}`);
    }
    const limit = o.limit ?? HISTORY_DEFAULT_LIMIT;
    for (let restarts = 0; ; restarts++) {
      const messages = [];
      let since = o.since;
      let truncated = false;
      let first = null;
      let r;
      for (;;) {
        const msg = { op: 'history', channel };
        if (since !== undefined) msg.since = since;
        // Without a limit the server's default applies to every page; the total is cut below.
        if (o.limit !== undefined) msg.limit = o.limit - messages.length;
        r = await this._request(msg);
        first ??= r;
        if (r.epoch !== first.epoch) break; // history was lost meanwhile: start over
        messages.push(...r.messages);
        // A page that does not reach back to its `since` means messages are missing there
        // (trimmed while this was being read): say so as for the first one.
        truncated ||= r.truncated === true;
        if (!r.more || r.messages.length === 0 || messages.length >= limit) break;
        since = r.messages[r.messages.length - 1].offset;
      }
      if (r.epoch !== first.epoch && restarts < 2) continue;
      const out = { ...r, messages: messages.slice(0, limit) };
      delete out.more;
      delete out.truncated;
      if (truncated) out.truncated = true;
      return out;
    }
  }

  /**
   * Who is subscribed to `channel`.
   * @param {string} channel
   * @returns {Promise<{count: number, subscribers: number, clients: {client: string, user?: string, info?: any}[]}>}
   */
  async presence(channel) {
    await this._whenOpen();
    if (this.transport === 'sse') return this._http('GET', `/api/channels/${encodeURIComponent(channel)}/presence`);
    return this._request({ op: 'presence', channel });
  }

  /** Close for good (no reconnect). */
  close() {
    this._close(new PlexusError('closed', 'client closed'));
  }

  /** @param {PlexusError} err what pending and waiting calls are rejected with */
  _close(err) {
    if (this.state === 'closed' && !this.ws && this.sse.size === 0) return;
    this.state = 'closed';
    this.closeError = err;
    clearTimeout(this._timer);
    clearTimeout(this._renewTimer);
    for (const s of this.subs.values()) {
      s.active = false;
      clearTimeout(s._retryTimer);
    }
    this._failPending(err);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    for (const es of this.sse.values()) es.close();
    this.sse.clear();
    this._emit('closed', { error: err });
  }

  // ---- SSE + HTTP fallback ------------------------------------------------------------------

  _useSse() {
    if (typeof this.EventSource !== 'function' || typeof this.fetch !== 'function') {
      this._scheduleReconnect();
      return;
    }
    this.transport = 'sse';
    this.state = 'open';
    this.attempt = 0;
    this._emit('transport', { transport: 'sse' });
    this._emit('open', { transport: 'sse', client: null });
    for (const s of this.subs.values()) this._sseSubscribe(s);
  }

  /**
   * Subscribe over SSE. First ask where the channel stands (GET .../messages): that checks the
   * channel name (errors reject `ready` as over WebSocket), positions a new subscription at the
   * end (so `ready` knows `offset`, and the EventSource's own reconnects resume from there via
   * ?since= even before a first event gave it a Last-Event-ID), and tells whether history
   * still covers a known position (else 'recovery-failed', as over WebSocket).
   */
  async _sseSubscribe(s) {
    const live = () => !s.closed && this.subs.get(s.channel) === s && this.state !== 'closed';
    const base = `/api/channels/${encodeURIComponent(s.channel)}`;
    const since = s.hasPosition ? s.offset : Number.MAX_SAFE_INTEGER;
    let r;
    let token;
    try {
      r = await this._http('GET', `${base}/messages?since=${since}&limit=1`);
      token = await this._getToken();
    } catch (e) {
      if (!live()) return;
      if (e instanceof PlexusError && e.code !== 'bad_response' && e.code !== 'http_error' && e.code !== 'token_error') {
        this.subs.delete(s.channel);
        s.closed = true;
        s._rejectReady(e);
        this._emit('error', e);
      } else {
        if (e.code === 'token_error') this._emit('error', e);
        this._sseRetry(s); // the server is unreachable (restarting?): try again later
      }
      return;
    }
    if (!live()) return;
    if (!s.hasPosition) {
      s.offset = r.offset;
      s.hasPosition = true;
    } else if (r.truncated || (s.epoch && r.epoch !== s.epoch) || r.offset < s.offset) {
      // history does not cover the gap: continue live
      this._recoveryFailed(s, { channel: s.channel, epoch: r.epoch, offset: r.offset });
    }
    s.epoch = r.epoch;

    const q = new URLSearchParams();
    q.set('since', String(s.offset));
    if (token) q.set('token', token);
    const es = new this.EventSource(`${this.httpBase}${base}/events?${q}`);
    this.sse.set(s.channel, es);
    s.active = true;
    es.onopen = () => {
      s._sseAttempt = 0;
      s._resolveReady();
    };
    es.onmessage = (ev) => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      // EventSource resumes by itself with Last-Event-ID after a network error.
      s._deliver({ channel: s.channel, offset: Number(ev.lastEventId), data });
    };
    // A resume (Last-Event-ID after a network error) that history no longer covers: the server
    // says so with this event, then streams live messages from its position.
    es.addEventListener?.('recovery-failed', (ev) => {
      let info;
      try {
        info = JSON.parse(ev.data);
      } catch {
        return;
      }
      this._recoveryFailed(s, info);
    });
    // The token in the URL expired: the server ends the stream. With a token function, open
    // it again with a fresh token from where it was; a string token cannot be renewed.
    es.addEventListener?.('token-expired', () => {
      if (this.sse.get(s.channel) !== es) return;
      es.close();
      this.sse.delete(s.channel);
      s.active = false;
      if (!live()) return;
      if (!this._tokenFn) {
        const err = new PlexusError('token_expired', 'the token expired');
        this._emit('error', err);
        this._close(err);
        return;
      }
      this._getToken(token).then(
        () => live() && this._sseSubscribe(s),
        (e) => {
          if (!live()) return;
          this._emit('error', e);
          this._sseRetry(s);
        },
      );
    });
    es.onerror = () => {
      // After an HTTP error (a 503 while the server shuts down...) EventSource gives up for
      // good (readyState CLOSED): start over from the last delivered offset.
      if (es.readyState !== 2 || this.sse.get(s.channel) !== es) return;
      es.close();
      this.sse.delete(s.channel);
      if (live()) this._sseRetry(s);
    };
  }

  _sseRetry(s) {
    s._sseAttempt = (s._sseAttempt ?? 0) + 1;
    setTimeout(() => {
      if (!s.closed && this.subs.get(s.channel) === s && this.state !== 'closed') this._sseSubscribe(s);
    }, this._backoff(s._sseAttempt - 1));
  }

  async _http(method, path, body, retried = false) {
    const token = await this._getToken();
    const headers = { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await this.fetch(`${this.httpBase}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      throw new PlexusError('bad_response', `HTTP ${res.status}`);
    }
    if (res.status === 401 && token && this._tokenFn && !retried) {
      await this._getToken(token); // refused (expired?): once more with a fresh token
      return this._http(method, path, body, true);
    }
    if (!res.ok) throw new PlexusError(json.error ?? 'http_error', json.message ?? `HTTP ${res.status}`);
    return json;
  }
}

export default Plexus;
export { sleep as _sleep };
