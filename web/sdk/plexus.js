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
 * @typedef {Object} PlexusOptions
 * @property {string} [token] JWT for the server's --jwt-secret (sent as ?token= / Bearer)
 * @property {'auto'|'websocket'|'sse'} [transport] default 'auto': WebSocket, SSE if it cannot open
 * @property {number} [minDelay] first reconnect delay in ms (default 500)
 * @property {number} [maxDelay] largest reconnect delay in ms (default 10000)
 * @property {number} [requestTimeout] ms before a request is rejected (default 10000)
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
 * @typedef {Object} SubscribeOptions
 * @property {(data: any, msg: Message) => void} [onMessage]
 * @property {(ev: PresenceEvent) => void} [onJoin] join events (asks the server for them)
 * @property {(ev: PresenceEvent) => void} [onLeave] leave events
 * @property {(info: {channel: string, epoch: string, offset: number}) => void} [onRecoveryFailed]
 *   history no longer covers the gap after a reconnect (reload with history())
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

  /** @param {{since?: number, limit?: number}} [o] */
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

export class Plexus {
  /**
   * @param {string} url base URL of the server: http(s)://host:port (ws:// is derived)
   * @param {PlexusOptions} [options]
   */
  constructor(url, options = {}) {
    const u = new URL(url, globalThis.location?.href);
    this.httpBase = `${u.protocol === 'wss:' ? 'https:' : u.protocol === 'ws:' ? 'http:' : u.protocol}//${u.host}`;
    this.wsUrl = `${u.protocol === 'https:' || u.protocol === 'wss:' ? 'wss:' : 'ws:'}//${u.host}/ws`;
    this.options = { minDelay: 500, maxDelay: 10000, requestTimeout: 10000, transport: 'auto', ...options };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    /** @type {Map<string, Subscription>} */
    this.subs = new Map();
    this.pending = new Map();
    this.nextId = 1;
    this.listeners = new Map();
    this.ws = null;
    this.state = 'idle'; // idle | connecting | open | closed
    this.transport = null; // 'websocket' | 'sse'
    this.clientId = null;
    this.attempt = 0;
    this.sse = new Map();
    this.wsEverOpened = false;
    // Connect on the next microtask, not now: without WebSocket the SSE fallback opens
    // synchronously, and its 'open' event must reach listeners added right after `new`.
    queueMicrotask(() => this._connect());
  }

  /**
   * Events: 'open' ({transport, client}), 'close', 'reconnecting' ({delay, attempt}),
   * 'recovery-failed' ({channel, epoch, offset}), 'error' (PlexusError), 'transport' ({transport}),
   * 'closed' ({error}: closed for good, by close() or after an `unauthorized` error).
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
    let ws;
    try {
      const url = this.options.token ? `${this.wsUrl}?token=${encodeURIComponent(this.options.token)}` : this.wsUrl;
      ws = new this.WebSocket(url);
    } catch (e) {
      if (want === 'auto') {
        this._wsBroken = true;
        this._useSse();
      } else {
        this._scheduleReconnect();
      }
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.wsEverOpened = true;
    };
    ws.onmessage = (ev) => this._onFrame(typeof ev.data === 'string' ? ev.data : String(ev.data));
    // A failed connection is followed by 'close', which handles it. The listener must exist:
    // Node's `ws` throws an 'error' event nobody listens to (e.g. ECONNREFUSED while the
    // server restarts) as an uncaught exception.
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const wasOpen = this.state === 'open';
      this.state = this.state === 'closed' ? 'closed' : 'connecting';
      for (const s of this.subs.values()) s.active = false;
      this._failPending(new PlexusError('disconnected', 'connection lost'));
      if (wasOpen) this._emit('close', { code: ev?.code, reason: ev?.reason });
      if (this.state === 'closed') return;
      // Some proxies drop the upgrade: if a WebSocket never opened, try SSE instead.
      if (!opened && !this.wsEverOpened && want === 'auto' && ++this._wsFailures >= 2) {
        this._wsBroken = true;
        this._useSse();
        return;
      }
      this._scheduleReconnect();
    };
    this._wsFailures ??= 0;
  }

  _scheduleReconnect() {
    if (this.state === 'closed') return;
    const { minDelay, maxDelay } = this.options;
    const base = Math.min(maxDelay, minDelay * 2 ** Math.min(this.attempt, 16));
    const delay = Math.round(base / 2 + Math.random() * (base / 2)); // jitter: spread reconnect storms
    this.attempt++;
    this._emit('reconnecting', { delay, attempt: this.attempt });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), delay);
  }

  _onFrame(text) {
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
        break;
      case 'message': {
        const s = this.subs.get(m.channel);
        if (s?.active) s._deliver(m);
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
        if (m.id !== undefined && this.pending.has(m.id)) this._settle(m.id, null, err);
        else this._emit('error', err);
        // Retrying cannot help: close for good, so that waiting calls reject instead of hanging.
        if (m.code === 'unauthorized') this._close(err);
        break;
      }
    }
  }

  _settle(id, value, err) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(value);
  }

  _failPending(err) {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
    }
  }

  /** Send a request and wait for its reply. */
  _request(msg) {
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
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...msg, id }));
    });
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

  async _sendSubscribe(s) {
    const msg = { op: 'subscribe', channel: s.channel };
    if (s.hasPosition) msg.since = s.epoch ? { epoch: s.epoch, offset: s.offset } : { offset: s.offset };
    if (s.opts.onJoin || s.opts.onLeave) msg.presence = true;
    if (s.opts.info !== undefined) msg.info = s.opts.info;
    // Messages replayed after the reply are delivered only once active.
    s.active = true;
    try {
      const r = await this._request(msg);
      if (s.closed) return;
      const epochChanged = s.epoch && r.epoch !== s.epoch;
      s.epoch = r.epoch;
      if (!s.hasPosition) {
        s.offset = r.offset; // live from here
        s.hasPosition = true;
      }
      if (r.recovered === false || epochChanged) {
        s.offset = r.offset; // history does not cover the gap: continue live
        const info = { channel: s.channel, epoch: r.epoch, offset: r.offset };
        s.opts.onRecoveryFailed?.(info);
        this._emit('recovery-failed', info);
      }
      s._resolveReady();
    } catch (e) {
      s.active = false;
      if (e.code === 'disconnected' || e.code === 'timeout') return; // resubscribed on reconnect
      this.subs.delete(s.channel);
      s.closed = true;
      s._rejectReady(e);
      this._emit('error', e);
    }
  }

  async _unsubscribe(s) {
    if (s.closed) return;
    s.closed = true;
    this.subs.delete(s.channel);
    if (this.transport === 'sse') {
      this.sse.get(s.channel)?.close();
      this.sse.delete(s.channel);
      return;
    }
    if (this.state === 'open') {
      try {
        await this._request({ op: 'unsubscribe', channel: s.channel });
      } catch (e) {
        if (e.code !== 'not_subscribed' && e.code !== 'disconnected') throw e;
      }
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
   * Messages of `channel` after `since` (default 0: the oldest kept), at most `limit`.
   * @param {string} channel @param {{since?: number, limit?: number}} [o]
   * @returns {Promise<{epoch: string|null, offset: number, messages: {offset: number, time: number, data: any}[]}>}
   */
  async history(channel, o = {}) {
    await this._whenOpen();
    if (this.transport === 'sse') {
      const q = new URLSearchParams();
      if (o.since !== undefined) q.set('since', String(o.since));
      if (o.limit !== undefined) q.set('limit', String(o.limit));
      return this._http('GET', `/api/channels/${encodeURIComponent(channel)}/messages?${q}`);
    }
    const msg = { op: 'history', channel };
    if (o.since !== undefined) msg.since = o.since;
    if (o.limit !== undefined) msg.limit = o.limit;
    return this._request(msg);
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
    try {
      r = await this._http('GET', `${base}/messages?since=${since}&limit=1`);
    } catch (e) {
      if (!live()) return;
      if (e instanceof PlexusError && e.code !== 'bad_response' && e.code !== 'http_error') {
        this.subs.delete(s.channel);
        s.closed = true;
        s._rejectReady(e);
        this._emit('error', e);
      } else {
        this._sseRetry(s); // the server is unreachable (restarting?): try again later
      }
      return;
    }
    if (!live()) return;
    if (!s.hasPosition) {
      s.offset = r.offset;
      s.hasPosition = true;
    } else if (r.truncated || (s.epoch && r.epoch !== s.epoch) || r.offset < s.offset) {
      s.offset = r.offset; // history does not cover the gap: continue live
      const info = { channel: s.channel, epoch: r.epoch, offset: r.offset };
      s.epoch = r.epoch;
      s.opts.onRecoveryFailed?.(info);
      this._emit('recovery-failed', info);
    }
    s.epoch = r.epoch;

    const q = new URLSearchParams();
    q.set('since', String(s.offset));
    if (this.options.token) q.set('token', this.options.token);
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
      s.epoch = info.epoch;
      s.offset = info.offset;
      s.opts.onRecoveryFailed?.(info);
      this._emit('recovery-failed', info);
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
    const { minDelay, maxDelay } = this.options;
    s._sseAttempt = (s._sseAttempt ?? 0) + 1;
    const base = Math.min(maxDelay, minDelay * 2 ** Math.min(s._sseAttempt - 1, 16));
    setTimeout(() => {
      if (!s.closed && this.subs.get(s.channel) === s && this.state !== 'closed') this._sseSubscribe(s);
    }, Math.round(base / 2 + Math.random() * (base / 2)));
  }

  async _http(method, path, body) {
    const headers = { 'content-type': 'application/json' };
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
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
    if (!res.ok) throw new PlexusError(json.error ?? 'http_error', json.message ?? `HTTP ${res.status}`);
    return json;
  }
}

export default Plexus;
export { sleep as _sleep };
