// A Node app on the plexus addon, driven by the integration tests (not a test itself).
//
//   node addon-app.cjs LISTEN          LISTEN: a port ("0" for a free one), a Unix path,
//                                      or "passenger" (Passenger's socket; also the usual
//                                      PhusionPassenger.configure({autoInstall: false}))
// Options come from PX_ADDON_OPTIONS (JSON). Prints one JSON line per event on stdout:
//   {"event":"running","listeners":[..],"address":..,"pid":N}
//   {"event":"ack","id":..,"offset":N,"epoch":".."} / {"event":"nack","id":..,"code":".."}
//   {"event":"error","message":"..","exitCode":N}
// Commands on stdin, one per line (not under Passenger, which owns stdin):
//   publish ID CHANNEL JSON      plexus.publish
//   exit CODE                    process.exit(CODE) (the 'exit' hook stops plexus)
//   stop                         await plexus.stop(), then print {"event":"stopped"}
'use strict';
const http = require('http');
const readline = require('readline');
const plexus = require(process.env.PX_ADDON_PACKAGE || '../../bindings/node');

const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const target = process.argv[2] || '0';
const passenger = typeof PhusionPassenger !== 'undefined';
if (passenger) PhusionPassenger.configure({ autoInstall: false });

// Node itself answers nothing: a request that reaches it is a bug (plexus took the socket).
const server = http.createServer((req, res) => {
  res.statusCode = 500;
  res.end('served by node, not plexus\n');
});
if (target === 'passenger') server.listen('passenger');
else if (/^\d+$/.test(target)) server.listen(Number(target), '127.0.0.1');
else server.listen(target);

plexus.listen(server, JSON.parse(process.env.PX_ADDON_OPTIONS || '{}')).then(
  (r) => emit({ event: 'running', listeners: r.listeners, address: r.address, pid: process.pid }),
  (e) => {
    emit({ event: 'error', message: e.message, exitCode: e.exitCode });
    process.exit(e.exitCode || 1);
  },
);

if (!passenger) {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const [cmd, ...rest] = line.split(' ');
    if (cmd === 'publish') {
      const [id, channel, ...json] = rest;
      plexus.publish(channel, JSON.parse(json.join(' '))).then(
        (a) => emit({ event: 'ack', id, offset: a.offset, epoch: a.epoch }),
        (e) => emit({ event: 'nack', id, code: e.code, message: e.message }),
      );
    } else if (cmd === 'exit') {
      process.exit(Number(rest[0] || 0));
    } else if (cmd === 'stop') {
      plexus.stop().then(() => emit({ event: 'stopped', state: plexus.state() }));
    }
  });
  rl.on('close', () => {}); // stdin closing is not a command here
}
