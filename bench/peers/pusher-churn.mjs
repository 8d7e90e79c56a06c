// Presence churn driver for bench/pusher.sh: N members sit in a presence channel; one more
// connection joins and leaves it as fast as the server answers (subscribe, wait for
// subscription_succeeded, unsubscribe, again). Every join and leave is one
// member_added / member_removed for each of the N members. Measures the server's CPU
// (utime+stime from /proc) over the measured window.
//
//   node bench/peers/pusher-churn.mjs PORT SERVER_PID MEMBERS SECONDS [KEY] [SECRET] [LABEL]
//
// Prints one line: RESULT {"scenario":"churn","members":N,"cycles":C,"cycles_per_s":..,
// "server_cpu_s":..,"cpu_us_per_cycle":..,"cpu_ns_per_notification":..,"notified":..,
// "expected":..,"valid":true|false,"invalid_reason":..}. A run is valid when every member got
// every join and leave of the measured cycles (none lost, none doubled).
import crypto from 'node:crypto';
import fs from 'node:fs';
import { WebSocket } from 'ws';

const [port, pid, members, seconds] = process.argv.slice(2, 6).map(Number);
const KEY = process.argv[6] ?? 'app-key';
const SECRET = process.argv[7] ?? 'app-secret';
const LABEL = process.argv[8] ?? '';
const CH = 'presence-churn';
const TICK = 100 / 1; // clock ticks per second (CLK_TCK; Linux: 100)

function cpu() {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / TICK;
}

function connect(user, onMsg) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/app/${KEY}?protocol=7`, { perMessageDeflate: false });
    ws.on('error', reject);
    ws.on('message', (raw) => {
      const m = JSON.parse(raw);
      if (m.event === 'pusher:connection_established') {
        ws.sid = JSON.parse(m.data).socket_id;
        resolve(ws);
      } else if (m.event === 'pusher:subscription_error' || m.event === 'pusher:error') {
        console.log('RESULT ' + JSON.stringify({ scenario: 'churn', label: LABEL, members, valid: false,
          invalid_reason: `${user}: ${m.event} ${JSON.stringify(m.data)}` }));
        process.exit(1);
      } else onMsg(m);
    });
  });
}

function subMsg(ws, user) {
  const cd = JSON.stringify({ user_id: user });
  const auth = `${KEY}:${crypto.createHmac('sha256', SECRET).update(`${ws.sid}:${CH}:${cd}`).digest('hex')}`;
  return JSON.stringify({ event: 'pusher:subscribe', data: { channel: CH, auth, channel_data: cd } });
}

let counting = false;
let notified = 0;
const ready = [];
const conns = [];
for (let i = 0; i < members; i++) {
  let resolveReady;
  ready.push(new Promise((r) => (resolveReady = r)));
  const ws = await connect(`m${i}`, (m) => {
    if (m.event === 'pusher_internal:subscription_succeeded') resolveReady();
    else if (counting && (m.event === 'pusher_internal:member_added' || m.event === 'pusher_internal:member_removed')) notified++;
  });
  ws.send(subMsg(ws, `m${i}`));
  conns.push(ws);
}
await Promise.all(ready);

let cycles = 0;
let waiting = null;
const churner = await connect('churner', (m) => {
  if (m.event === 'pusher_internal:subscription_succeeded' && waiting) {
    const w = waiting;
    waiting = null;
    w();
  }
});
const cycle = () =>
  new Promise((resolve) => {
    waiting = resolve;
    churner.send(subMsg(churner, 'churner'));
  }).then(() => churner.send(JSON.stringify({ event: 'pusher:unsubscribe', data: { channel: CH } })));

// Warm-up, then the measured window.
const warmEnd = Date.now() + 1000;
while (Date.now() < warmEnd) await cycle();
await new Promise((r) => setTimeout(r, 300));
counting = true;
const c0 = cpu();
const t0 = Date.now();
while (Date.now() - t0 < seconds * 1000) {
  await cycle();
  cycles++;
}
const t1 = Date.now();
const c1 = cpu();
// Let the last leave reach everyone.
const expected = cycles * 2 * members;
const deadline = Date.now() + 10000;
while (notified < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
counting = false;
const cpuS = c1 - c0;
const valid = notified === expected;
console.log(
  'RESULT ' +
    JSON.stringify({
      scenario: 'churn',
      label: LABEL,
      members,
      cycles,
      cycles_per_s: +(cycles / ((t1 - t0) / 1000)).toFixed(1),
      server_cpu_s: +cpuS.toFixed(2),
      cpu_us_per_cycle: cycles ? +((cpuS * 1e6) / cycles).toFixed(1) : null,
      cpu_ns_per_notification: cycles ? +((cpuS * 1e9) / (cycles * 2 * members)).toFixed(1) : null,
      notified,
      expected,
      valid,
      invalid_reason: valid ? null : `members got ${notified} of ${expected} join/leave events`,
    }),
);
for (const ws of [...conns, churner]) ws.terminate();
process.exit(valid ? 0 : 1);
