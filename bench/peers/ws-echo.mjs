// Peer WebSocket server for the side-by-side benchmark (bench/ws.sh, bench/wsload).
//
//   node bench/peers/ws-echo.mjs PORT
//
//   /echo       every message is sent back to its sender (same opcode: text or binary)
//   /broadcast  every message is sent to every client connected on /broadcast,
//               the sender included (wsload counts subscriber receipts only)
//
// Listens on 127.0.0.1 only, permessage-deflate off. Prints "ready PORT" on stdout
// once listening. Stops on SIGINT/SIGTERM.
import http from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';

const port = Number.parseInt(process.argv[2] ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node ws-echo.mjs PORT');
  process.exit(2);
}

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('use /echo or /broadcast\n');
});

const opts = { noServer: true, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 };
const echo = new WebSocketServer(opts);
const broadcast = new WebSocketServer({ ...opts, clientTracking: true });

echo.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
  ws.on('error', () => {});
});

broadcast.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    // ws has no public "frame once, write many" call (Sender.frame is private),
    // so this is its documented broadcast loop. send() with the received Buffer
    // does not copy the payload; only the 2..10-byte header is built per client.
    for (const client of broadcast.clients) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
  ws.on('error', () => {});
});

server.on('upgrade', (req, socket, head) => {
  const path = (req.url ?? '/').split('?')[0];
  const target = path === '/echo' ? echo : path === '/broadcast' ? broadcast : null;
  if (target === null) {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  target.handleUpgrade(req, socket, head, (ws) => target.emit('connection', ws, req));
});

server.on('clientError', (err, socket) => {
  socket.destroy();
});

server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  console.log(`ready ${port}`);
});

const stop = () => {
  for (const ws of echo.clients) ws.terminate();
  for (const ws of broadcast.clients) ws.terminate();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
