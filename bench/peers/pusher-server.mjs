// Peer Pusher server for the side-by-side benchmark (bench/pusher.sh): the same subset of
// the Pusher protocol v7 that the benchmark drives, on the Node `ws` package, written the
// way a small Node Pusher server is (no storage, one process).
//
//   node bench/peers/pusher-server.mjs PORT [KEY] [SECRET]
//
//   GET /app/KEY  WebSocket: pusher:connection_established (socket_id, activity_timeout),
//                 pusher:ping/pong, pusher:subscribe / unsubscribe on public, private- and
//                 presence- channels (HMAC-SHA256 signatures checked; presence members per
//                 user, member_added / member_removed once per user, not to the member),
//                 client events (private and presence channels, subscribed senders, never
//                 echoed, user_id on presence).
//
// Listens on 127.0.0.1 only, permessage-deflate off. Prints "ready PORT" on stdout once
// listening. Stops on SIGINT/SIGTERM.
import crypto from 'node:crypto';
import http from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';

const port = Number.parseInt(process.argv[2] ?? '', 10);
const KEY = process.argv[3] ?? 'app-key';
const SECRET = process.argv[4] ?? 'app-secret';
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node pusher-server.mjs PORT [KEY] [SECRET]');
  process.exit(2);
}

const hi = crypto.randomInt(1, 2 ** 31);
let lo = 0;
/** name -> { subs: Set<ws>, members: Map<user, {count, info}> } */
const channels = new Map();

const sign = (s) => crypto.createHmac('sha256', SECRET).update(s).digest('hex');
const authOk = (auth, s) => {
  const want = Buffer.from(`${KEY}:${sign(s)}`);
  const got = Buffer.from(String(auth ?? ''));
  return got.length === want.length && crypto.timingSafeEqual(got, want);
};
const frame = (event, channel, data) => JSON.stringify(channel === undefined ? { event, data } : { event, channel, data });

function broadcast(ch, text, except) {
  const buf = Buffer.from(text); // encoded once; ws builds only the frame header per client
  for (const ws of ch.subs) if (ws !== except && ws.readyState === WebSocket.OPEN) ws.send(buf, { binary: false });
}

function leave(ws, name) {
  const ch = channels.get(name);
  const sub = ws.subs.get(name);
  if (!ch || !sub) return;
  ws.subs.delete(name);
  ch.subs.delete(ws);
  if (sub.user !== undefined) {
    const m = ch.members.get(sub.user);
    if (m && --m.count === 0) {
      ch.members.delete(sub.user);
      const text = frame('pusher_internal:member_removed', name, JSON.stringify({ user_id: sub.user }));
      for (const o of ch.subs) if (o.subs.get(name)?.user !== sub.user && o.readyState === WebSocket.OPEN) o.send(text);
    }
  }
  if (ch.subs.size === 0) channels.delete(name);
}

function subscribe(ws, d) {
  const name = String(d.channel ?? '');
  const err = (status, error) =>
    ws.send(frame('pusher:subscription_error', name, { type: 'AuthError', error, status }));
  if (!/^[A-Za-z0-9_\-=@,.;]{1,200}$/.test(name)) return err(400, 'invalid channel');
  if (ws.subs.has(name)) return;
  const presence = name.startsWith('presence-');
  const priv = presence || name.startsWith('private-');
  if (priv && !authOk(d.auth, presence ? `${ws.sid}:${name}:${d.channel_data}` : `${ws.sid}:${name}`))
    return err(401, 'invalid signature');
  let ch = channels.get(name);
  if (!ch) channels.set(name, (ch = { subs: new Set(), members: new Map() }));
  const sub = {};
  ws.subs.set(name, sub);
  ch.subs.add(ws);
  if (!presence) return ws.send(frame('pusher_internal:subscription_succeeded', name, '{}'));
  let cd;
  try {
    cd = JSON.parse(d.channel_data);
  } catch {
    return err(400, 'bad channel_data');
  }
  const user = String(cd.user_id);
  sub.user = user;
  const m = ch.members.get(user);
  if (m) m.count++;
  else ch.members.set(user, { count: 1, info: cd.user_info ?? null });
  const hash = {};
  for (const [id, v] of ch.members) hash[id] = v.info;
  ws.send(frame('pusher_internal:subscription_succeeded', name,
    JSON.stringify({ presence: { count: ch.members.size, ids: [...ch.members.keys()], hash } })));
  if (!m) {
    const text = frame('pusher_internal:member_added', name, JSON.stringify({ user_id: user, user_info: cd.user_info ?? null }));
    for (const o of ch.subs) if (o.subs.get(name)?.user !== user && o.readyState === WebSocket.OPEN) o.send(text);
  }
}

function clientEvent(ws, msg) {
  const name = String(msg.channel ?? '');
  const sub = ws.subs.get(name);
  if (!sub || !(name.startsWith('private-') || name.startsWith('presence-'))) {
    ws.send(frame('pusher:error', undefined, { code: null, message: 'client event rejected' }));
    return;
  }
  const out = { event: msg.event, channel: name, data: msg.data };
  if (sub.user !== undefined) out.user_id = sub.user;
  broadcast(channels.get(name), JSON.stringify(out), ws);
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1 << 20 });
wss.on('connection', (ws) => {
  ws.sid = `${hi}.${++lo}`;
  ws.subs = new Map();
  ws.send(frame('pusher:connection_established', undefined, JSON.stringify({ socket_id: ws.sid, activity_timeout: 30 })));
  ws.on('message', (raw) => {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    const ev = String(msg.event ?? '');
    let d = msg.data;
    if (typeof d === 'string' && (ev === 'pusher:subscribe' || ev === 'pusher:unsubscribe')) {
      try {
        d = JSON.parse(d);
      } catch {
        d = {};
      }
    }
    if (ev === 'pusher:ping') ws.send('{"event":"pusher:pong","data":"{}"}');
    else if (ev === 'pusher:subscribe') subscribe(ws, d ?? {});
    else if (ev === 'pusher:unsubscribe') leave(ws, String(d?.channel ?? ''));
    else if (ev.startsWith('client-')) clientEvent(ws, msg);
  });
  ws.on('close', () => {
    for (const name of [...ws.subs.keys()]) leave(ws, name);
  });
  ws.on('error', () => {});
});

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('use /app/KEY\n');
});
server.on('upgrade', (req, socket, head) => {
  const path = (req.url ?? '/').split('?')[0];
  if (path !== `/app/${KEY}`) {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});
server.on('clientError', (err, socket) => socket.destroy());
server.listen(port, '127.0.0.1', () => console.log(`ready ${port}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
