// Your own C API (api.c) on plexus, as a Node.js app: Passenger's startup file.
// `npm install` built api.c into build/api.node (package.json); this loads that addon.
// Same defaults as examples/passenger: the demo page, anonymous access, data in ./var,
// unless PLEXUS_* environment variables say otherwise (docs/passenger.md).
const http = require('http');
const path = require('path');
const plexus = require('plexus').use(path.join(__dirname, 'build', 'api.node'));

const underPassenger = typeof PhusionPassenger !== 'undefined';
if (underPassenger) PhusionPassenger.configure({ autoInstall: false });

const server = http.createServer();
if (underPassenger) server.listen('passenger');
else server.listen(Number(process.env.PORT || 8080), process.env.HOST || '127.0.0.1');
plexus
  .listen(server, { 'allow-anonymous': true, 'data-dir': path.join(__dirname, 'var') })
  .catch((e) => {
    console.error(e.message);
    process.exit(e.exitCode || 1);
  });
