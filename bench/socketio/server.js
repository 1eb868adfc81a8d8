// A Socket.IO 4 server on the Redis adapter, the usual chat pattern: the
// Socket.IO side of bench/cluster.sh.
//
//   node server.js --port 0 --redis redis://127.0.0.1:6379/0
//
// A client's emit('subscribe', room[, ack]) joins the room; its
// emit('publish', room, data, ack) does io.to(room).emit('message', data),
// which reaches the room's sockets on every server through Redis, then acks.
// The first line on stdout is `listening on http://ADDR` (the real port when
// --port is 0), as `duplex serve` prints it. SIGTERM or SIGINT stops it.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  if (at === -1) return fallback;
  const value = process.argv[at + 1];
  if (value === undefined) throw new Error(`${name} needs a value`);
  return value;
}

async function main() {
  const port = Number(option('--port', '3000'));
  const host = option('--host', '127.0.0.1');
  const redisUrl = option('--redis', 'redis://127.0.0.1:6379/0');

  // As the adapter's README does: a client for publishing, a duplicate for
  // the subscriptions.
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  for (const client of [pubClient, subClient]) {
    client.on('error', (err) => console.error(`redis: ${err.message}`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer();
  // Socket.IO 4's defaults (permessage-deflate off, ping every 25 s), the
  // Redis adapter's defaults (every broadcast published on Redis, every
  // server pattern-subscribed to all of them).
  const io = new Server(httpServer, { adapter: createAdapter(pubClient, subClient) });

  io.on('connection', (socket) => {
    socket.on('subscribe', (room, ack) => {
      socket.join(String(room));
      if (typeof ack === 'function') ack({ ok: true });
    });
    socket.on('publish', (room, data, ack) => {
      io.to(String(room)).emit('message', data);
      if (typeof ack === 'function') ack({ ok: true });
    });
  });

  await new Promise((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(port, host, resolve);
  });
  const addr = httpServer.address();
  process.stdout.write(`listening on http://${addr.address}:${addr.port}\n`);

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(`server.js: ${err.stack || err}`);
  process.exit(1);
});
