// plexus as a Node.js app: upload this folder, point the panel's "startup file" at
// app.js, run npm install, done. The demo page at /, WebSocket at /ws, the HTTP API
// under /api, Server-Sent Events, /metrics: all served by plexus's C threads.
//
// Defaults are those of `make run`: the demo page, anonymous access (anyone may publish:
// see README.md before the app goes public), data in var/ next to this file. PLEXUS_*
// environment variables override them (PLEXUS_JWT_SECRET, PLEXUS_ALLOW_ANONYMOUS=false,
// PLEXUS_API_KEY, PLEXUS_WORKERS...): set them in the panel, or in .htaccess (SetEnv).
const http = require('http');
const path = require('path');
const plexus = require('plexus');

const underPassenger = typeof PhusionPassenger !== 'undefined';
if (underPassenger) PhusionPassenger.configure({ autoInstall: false });

const server = http.createServer();
// Passenger: its socket. Elsewhere: PORT (default 8080) on HOST (default 127.0.0.1).
if (underPassenger) server.listen('passenger');
else server.listen(Number(process.env.PORT || 8080), process.env.HOST || '127.0.0.1');
plexus
  .listen(server, { 'allow-anonymous': true, 'data-dir': path.join(__dirname, 'var') })
  .catch((e) => {
    console.error(e.message);
    process.exit(e.exitCode || 1);
  });
