// plexus for Node.js: the plexus server (C, on its own threads) on a socket Node listens
// on — Phusion Passenger's, or a plain port or path. Node only starts and stops it.
//
//   const http = require('http');
//   const plexus = require('plexus');
//   const server = http.createServer();
//   server.listen(process.env.PORT || 8080);       // or listen('passenger') under Passenger
//   plexus.listen(server, { 'allow-anonymous': true });
//
// docs/passenger.md is the guide.
'use strict';
const fs = require('fs');
const path = require('path');

let addonPath = process.env.PLEXUS_ADDON || path.join(__dirname, 'build', 'Release', 'plexus.node');
let addon = null;
let running = null; // { listeners, workers } while plexus runs
let stopping = null; // the promise of a stop in progress
let hooksInstalled = false;

function load() {
  if (!addon) addon = require(addonPath);
  return addon;
}

// Use another build of the addon: one with your own C routes (build.js --out FILE api.c).
function use(file) {
  if (addon) throw new Error('plexus.use() must come before listen()');
  addonPath = path.resolve(file);
  return module.exports;
}

// The bundled web/ directory (demo page, browser SDK): next to the package once packed,
// or the repository's when the package is used from a checkout.
function defaultStatic() {
  for (const dir of [path.join(__dirname, 'web'), path.join(__dirname, '..', '..', 'web')])
    if (fs.existsSync(path.join(dir, 'index.html'))) return dir;
  return null;
}

// { dataDir: 'x', allowAnonymous: true } and { 'data-dir': 'x' } alike: the keys are the
// CLI's flag names (plexus --help), camelCase accepted. Arrays stay arrays (listen, tls-cert).
function optionsJson(options) {
  const out = {};
  for (const [k, v] of Object.entries(options || {})) {
    if (v === undefined || v === null) continue;
    const key = k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
    out[key] = Array.isArray(v) || typeof v === 'boolean' ? v : String(v);
  }
  return JSON.stringify(out);
}

function writeLog(line) {
  process.stdout.write(line);
}

// Stop gracefully, then exit: on SIGTERM/SIGINT and Passenger's shutdown.
function stopAndExit(code) {
  stop().then(() => process.exit(code), () => process.exit(1));
}

function installHooks(options) {
  if (hooksInstalled) return;
  hooksInstalled = true;
  // process.exit() skips N-API cleanup hooks: 'exit' listeners still run, synchronously.
  process.on('exit', () => {
    if (addon && running) addon.stopSync();
  });
  if (options.handleSignals !== false) {
    for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => stopAndExit(0));
  }
  // Passenger closes the app's stdin to stop it; its loader then emits 'exit' when the app
  // listens for it (else it calls process.exit(0) at once, with no time to drain).
  if (typeof PhusionPassenger !== 'undefined' && PhusionPassenger.on)
    PhusionPassenger.on('exit', () => stopAndExit(0));
}

// Take the listening socket from Node's server (inside its 'listening' event: Passenger
// checks its socket path right after), close Node's server, and return the fd.
function takeFd(server) {
  const handle = server._handle;
  if (!handle || typeof handle.fd !== 'number' || handle.fd < 0)
    throw new Error('plexus.listen: the server has no listening socket');
  const fd = load().dup(handle.fd);
  const addr = server.address();
  if (typeof addr === 'string' && addr && addr[0] !== '\0') {
    // Closing a Node server on a Unix socket unlinks its path at once: move the path
    // aside while Node closes, then put it back, so the socket stays reachable by name.
    const aside = `${addr}.plexus-${process.pid}`;
    fs.renameSync(addr, aside);
    try {
      server.close();
    } finally {
      fs.renameSync(aside, addr);
    }
  } else {
    server.close();
  }
  return { fd, address: addr };
}

// listen(server, options) -> Promise<{ listeners, workers, address }>
function listen(server, options = {}) {
  if (running || stopping) return Promise.reject(new Error('plexus.listen: plexus runs once per process'));
  const { handleSignals, staticDir, ...rest } = options;
  if (rest.static === undefined && staticDir !== undefined) rest.static = staticDir;
  // Passenger may run several processes of the app (--min-instances, restarts overlap):
  // they share the data directory as one server unless told otherwise.
  if (typeof PhusionPassenger !== 'undefined' && rest['data-dir-shared'] === undefined &&
      rest.dataDirShared === undefined && process.env.PLEXUS_DATA_DIR_SHARED === undefined)
    rest['data-dir-shared'] = true;
  const json = optionsJson(rest);
  return new Promise((resolve, reject) => {
    let done = false;
    const go = () => {
      if (done) return;
      done = true;
      let taken;
      try {
        taken = takeFd(server);
        running = load().start(taken.fd, json, rest.static === undefined ? defaultStatic() : null, writeLog);
      } catch (e) {
        if (taken) load().close(taken.fd);
        running = null;
        reject(e);
        return;
      }
      installHooks({ handleSignals });
      running.address = taken.address;
      resolve(running);
    };
    if (!server.listening) {
      server.once('listening', go);
      server.once('error', (e) => { if (!done) { done = true; reject(e); } });
    } else {
      // Listening already: inside its 'listening' event (plexus.listen called from the
      // listen callback), or before it was emitted. Node emits it on the next tick (and
      // only while the server is open), so wait for it, or take the socket on the next tick.
      server.once('listening', go);
      process.nextTick(go);
    }
  });
}

// Publish `data` (any JSON value) on `channel`; resolves once durable: { offset, epoch }.
function publish(channel, data) {
  if (!running) return Promise.reject(new Error('plexus.publish: plexus is not running'));
  let text;
  try {
    text = JSON.stringify(data === undefined ? null : data);
    return load().publish(String(channel), text);
  } catch (e) {
    return Promise.reject(e);
  }
}

function stop() {
  if (stopping) return stopping;
  if (!running) return Promise.resolve();
  stopping = load().stop().then(() => {
    running = null;
  });
  return stopping;
}

function state() {
  return addon ? addon.state() : 'idle';
}

module.exports = { listen, publish, stop, state, use };
