// The demo page: a multi-room chat on the plexus SDK, and a live server panel.
import { Plexus } from '/sdk/plexus.js';

const MAX_TEXT = 2000; // characters; the server's limit (--max-payload) is far larger
const CHANNEL_RE = /^[A-Za-z0-9_\-=@,.;:/]{1,60}$/;

const $ = (id) => document.getElementById(id);
const px = new Plexus(location.origin);
let sub = null;
let me = { name: '', room: '' };
const present = new Map(); // client id -> name

function setStatus(text, cls) {
  const el = $('status');
  el.textContent = text;
  el.className = `status ${cls ?? ''}`;
}

px.on('open', (ev) => {
  setStatus(`connected (${ev.transport})`, 'ok');
  $('stat-transport').textContent = ev.transport;
  if (sub) refreshPresence();
});
px.on('close', () => setStatus('connection lost, reconnecting…', 'bad'));
px.on('reconnecting', (ev) => setStatus(`reconnecting in ${(ev.delay / 1000).toFixed(1)} s…`, 'bad'));
px.on('recovery-failed', () => systemLine('Some messages could not be recovered; showing new ones.'));
px.on('error', (e) => setStatus(`error: ${e.message}`, 'bad'));

function systemLine(text) {
  const li = document.createElement('li');
  li.className = 'system';
  li.textContent = text;
  append(li);
}

function append(li) {
  const list = $('messages');
  const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
  list.append(li);
  while (list.children.length > 500) list.firstElementChild.remove();
  if (atEnd) list.scrollTop = list.scrollHeight;
}

function showMessage(data, offset) {
  if (!data || typeof data.text !== 'string') return;
  const li = document.createElement('li');
  li.dataset.offset = String(offset);
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = typeof data.name === 'string' ? data.name : 'someone';
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = data.text;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = data.ts ? new Date(data.ts).toLocaleTimeString() : '';
  li.append(who, text, meta);
  append(li);
}

function renderPresence() {
  const ul = $('who');
  ul.replaceChildren();
  const names = [...present.values()].sort((a, b) => a.localeCompare(b));
  for (const n of names) {
    const li = document.createElement('li');
    li.textContent = n;
    ul.append(li);
  }
  $('who-count').textContent = `(${names.length})`;
}

function nameOf(ev) {
  return (ev.info && typeof ev.info.name === 'string' && ev.info.name) || ev.user || ev.client.slice(0, 6);
}

async function refreshPresence() {
  if (!sub) return;
  try {
    const p = await px.presence(sub.channel);
    present.clear();
    for (const c of p.clients ?? []) present.set(c.client, nameOf(c));
    renderPresence();
  } catch {
    /* shown by the status line */
  }
}

$('join-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('name').value.trim();
  const room = $('room').value.trim();
  const err = $('join-error');
  if (!name) {
    err.textContent = 'Please enter a name.';
    $('name').focus();
    return;
  }
  if (!CHANNEL_RE.test(room)) {
    err.textContent = 'Room names use letters, digits and _ - = @ , . ; : / (up to 60).';
    $('room').focus();
    return;
  }
  err.textContent = '';
  me = { name, room };
  $('messages').replaceChildren();
  present.clear();
  sub = px.subscribe(room, {
    info: { name },
    onMessage: (data, m) => showMessage(data, m.offset),
    onJoin: (ev) => {
      present.set(ev.client, nameOf(ev));
      renderPresence();
    },
    onLeave: (ev) => {
      present.delete(ev.client);
      renderPresence();
    },
  });
  $('room-title').textContent = `# ${room}`;
  $('join').hidden = true;
  $('chat').hidden = false;
  $('text').focus();
  try {
    await sub.ready;
    // Recent history first, then live messages continue after it.
    const h = await px.history(room, { since: Math.max(0, sub.offset - 50), limit: 50 });
    const live = [...$('messages').children];
    $('messages').replaceChildren();
    for (const m of h.messages) showMessage(m.data, m.offset);
    for (const li of live) if (Number(li.dataset.offset) > (h.messages.at(-1)?.offset ?? 0)) append(li);
    await refreshPresence();
  } catch (e2) {
    $('send-error').textContent = `Could not join: ${e2.message}`;
  }
});

$('leave').addEventListener('click', async () => {
  if (sub) await sub.unsubscribe().catch(() => {});
  sub = null;
  $('chat').hidden = true;
  $('join').hidden = false;
  $('name').focus();
});

$('send-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('text');
  const text = input.value.trim();
  const err = $('send-error');
  if (!text) {
    err.textContent = 'Type a message first.';
    return;
  }
  if (text.length > MAX_TEXT) {
    err.textContent = `That message is ${text.length} characters; the limit is ${MAX_TEXT}.`;
    return;
  }
  err.textContent = '';
  try {
    await px.publish(me.room, { name: me.name, text, ts: Date.now() });
    input.value = '';
  } catch (e2) {
    err.textContent = `Not sent: ${e2.message} (${e2.code})`;
  }
});

// ---- live server panel (from /metrics) -------------------------------------------------

let last = null;
function parseMetrics(text) {
  const m = { total: new Map(), worker: new Map() };
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const mm = /^([a-z_]+)(\{worker="(\d+)"\})? (-?\d+(\.\d+)?)$/.exec(line);
    if (!mm) continue;
    const v = Number(mm[4]);
    if (mm[3] !== undefined) {
      if (!m.worker.has(mm[3])) m.worker.set(mm[3], {});
      m.worker.get(mm[3])[mm[1]] = v;
      m.total.set(mm[1], (m.total.get(mm[1]) ?? 0) + v);
    } else {
      m.total.set(mm[1], v);
    }
  }
  return m;
}

async function pollStats() {
  try {
    const res = await fetch('/metrics');
    const m = parseMetrics(await res.text());
    const now = performance.now();
    $('stat-conns').textContent = String(m.total.get('plexus_connections') ?? 0);
    if (last) {
      const dt = (now - last.t) / 1000;
      const rate = (k) => Math.max(0, ((m.total.get(k) ?? 0) - (last.m.total.get(k) ?? 0)) / dt);
      $('stat-in').textContent = rate('plexus_hub_publishes_total').toFixed(1);
      $('stat-out').textContent = rate('plexus_hub_deliveries_total').toFixed(1);
    }
    last = { t: now, m };
    const tbody = $('workers');
    tbody.replaceChildren();
    for (const [w, v] of [...m.worker.entries()].sort((a, b) => Number(a[0]) - Number(b[0]))) {
      const tr = document.createElement('tr');
      for (const cell of [w, v.plexus_connections ?? 0, `${v.plexus_loop_lag_milliseconds ?? 0} ms`]) {
        const td = document.createElement('td');
        td.textContent = String(cell);
        tr.append(td);
      }
      tbody.append(tr);
    }
  } catch {
    /* the status line shows connectivity */
  }
}
pollStats();
setInterval(pollStats, 2000);

$('name').value = localStorage.getItem('plexus-name') ?? '';
$('name').addEventListener('change', () => localStorage.setItem('plexus-name', $('name').value.trim()));
(($('name').value ? $('room') : $('name'))).focus();
