'use strict';
// The Node `ws` peer of duplex's interop tests (tests/interop_node.rs).
//
// Two modes:
//
//   node peer.js server [--protocol P]... [--cert PEM --key PEM] [--deflate SPEC]
//     An echo server on 127.0.0.1 (a free port). Prints `listening on PORT`
//     once it accepts connections, then one line per event:
//     `pong <payload>` when a pong answers its ping, and
//     `closed <code> <reason>` when a connection ends (code and reason of the
//     close frame it received from the client, `closed 1006 ` if none).
//     Text messages starting with `cmd:` are commands, anything else is echoed:
//       cmd:close CODE REASON   close with this code and reason
//       cmd:fragments           send "fragmented ☃ message" as 3 text frames
//       cmd:fragments-binary    send bytes 0..9 as 3 binary frames
//       cmd:fragments-ping      as cmd:fragments, with a ping "mid-message"
//                               between the first two frames
//       cmd:ping                ping with payload "node-ping"; once the pong
//                               with that payload arrives, send "pong:node-ping"
//       cmd:protocol            send "protocol:<the agreed subprotocol>"
//       cmd:header NAME         send "header:<value of request header NAME>"
//       cmd:extensions          send "extensions:<the Sec-WebSocket-Extensions
//                               response header it sent>" (empty if none)
//
//   node peer.js client URL [--ca PEM] [--scenario full|tls|json] [--deflate SPEC]
//     Runs a scenario against a server that speaks the same commands (the
//     tests' duplex server), one connection per step at URL + /<step>. Exits 0
//     if every check passed, 1 with a message on stderr at the first that did
//     not. With --deflate, every step must negotiate permessage-deflate and
//     prints `extensions <step> <the response's Sec-WebSocket-Extensions>`;
//     `full` then adds the steps `json` (500 similar JSON messages, then a
//     256 KiB one) and `big` (a 16 MiB JSON-like text and a 16 MiB binary that
//     compress partly). `json` runs that step alone.
//
// Compression (permessage-deflate) is off unless --deflate is given. SPEC is
// `on` (ws's defaults) or a comma-separated list of RFC 7692 parameters, e.g.
// `server_no_context_takeover,client_max_window_bits=10`, given to ws as
// `serverNoContextTakeover: true, clientMaxWindowBits: 10` (a parameter without
// a value is true). Either way `threshold: 0`, so that even the smallest
// messages are compressed.

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocket, WebSocketServer } = require('ws');

const MAX_SIZE = 64 * 1024 * 1024;
const BIG = 16 * 1024 * 1024;
const STEP_TIMEOUT_MS = 20000;
const JSON_MESSAGES = 500;
const JSON_TAIL = 256 * 1024;

function parseArgs(argv) {
  const args = { positional: [], protocol: [], scenario: 'full' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg.startsWith('--')) {
      const name = arg.slice(2);
      const value = argv[++i];
      if (value === undefined) throw new Error(`${arg} needs a value`);
      if (name === 'protocol') args.protocol.push(value);
      else args[name] = value;
    } else {
      args.positional.push(arg);
    }
  }
  return args;
}

// ----- compression -----

// The `perMessageDeflate` option of WebSocketServer or WebSocket.
function deflateOptions(spec) {
  if (spec === undefined) return false;
  const options = { threshold: 0 };
  if (spec === 'on') return options;
  for (const item of spec.split(',')) {
    const [name, value] = item.trim().split('=');
    const camel = name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
    options[camel] = value === undefined ? true : Number(value);
  }
  return options;
}

// Message i of the `json` step; the same in every peer and in the tests.
function jsonMessage(i) {
  return (
    `{"seq":${i},"type":"update","user":"user-${i % 7}",` +
    `"items":[{"id":${i},"qty":${i % 5}},{"id":${i + 1},"qty":${(i + 1) % 5}}],` +
    '"note":"duplex interop over permessage-deflate ☃"}'
  );
}

// Fixed-length JSON-like lines with a counter and a scrambled value, as many
// whole lines as fit in `size` bytes: it compresses, but only partly.
function jsonText(size) {
  const pad = (n, width) => String(n).padStart(width, '0');
  const line = (n) =>
    `{"seq":${pad(n, 8)},"user":"user-${pad(n % 1000, 3)}","event":"tick ☃",` +
    `"value":${pad((n * 7919) % 1000003, 7)}}\n`;
  const count = Math.floor(size / Buffer.byteLength(line(0)));
  const lines = new Array(count);
  for (let n = 0; n < count; n++) lines[n] = line(n);
  return lines.join('');
}

// 16-byte records: a big-endian counter, a multiplicative hash of it (high
// entropy), 8 repeated bytes; `size` must be a multiple of 16.
function partlyRandomBinary(size) {
  const buf = Buffer.allocUnsafe(size);
  for (let n = 0, at = 0; at < size; n++, at += 16) {
    buf.writeUInt32BE(n, at);
    buf.writeUInt32BE(Math.imul(n, 2654435761) >>> 0, at + 4);
    buf.fill(n % 251, at + 8, at + 16);
  }
  return buf;
}

// ----- server -----

function command(ws, req, text) {
  const space = text.indexOf(' ');
  const name = space < 0 ? text : text.slice(0, space);
  const arg = space < 0 ? '' : text.slice(space + 1);
  switch (name) {
    case 'close': {
      const at = arg.indexOf(' ');
      const code = Number(at < 0 ? arg : arg.slice(0, at));
      ws.close(code, at < 0 ? '' : arg.slice(at + 1));
      break;
    }
    case 'fragments':
      ws.send('frag', { fin: false });
      ws.send('mented ', { fin: false });
      ws.send('☃ message', { fin: true });
      break;
    case 'fragments-ping':
      // A ping between the frames of a (compressed, if agreed) message.
      ws.send('frag', { fin: false });
      ws.ping(Buffer.from('mid-message'));
      ws.send('mented ', { fin: false });
      ws.send('☃ message', { fin: true });
      break;
    case 'fragments-binary':
      ws.send(Buffer.from([0, 1, 2]), { binary: true, fin: false });
      ws.send(Buffer.from([3, 4, 5, 6]), { binary: true, fin: false });
      ws.send(Buffer.from([7, 8, 9]), { binary: true, fin: true });
      break;
    case 'ping': {
      const onPong = (data) => {
        if (data.toString() !== 'node-ping') return;
        ws.off('pong', onPong);
        console.log('pong node-ping');
        ws.send('pong:node-ping');
      };
      ws.on('pong', onPong);
      ws.ping(Buffer.from('node-ping'));
      break;
    }
    case 'protocol':
      ws.send(`protocol:${ws.protocol}`);
      break;
    case 'header':
      ws.send(`header:${req.headers[arg.toLowerCase()] || ''}`);
      break;
    case 'extensions':
      ws.send(`extensions:${req.extensionsAnswered || ''}`);
      break;
    default:
      ws.send(`error:unknown command ${name}`);
  }
}

function runServer(args) {
  const server = args.cert
    ? https.createServer({ cert: fs.readFileSync(args.cert), key: fs.readFileSync(args.key) })
    : http.createServer();
  const wss = new WebSocketServer({
    server,
    perMessageDeflate: deflateOptions(args.deflate),
    maxPayload: MAX_SIZE,
    // The first protocol of ours the client offers; none if it offers none of them.
    handleProtocols: (offered) => args.protocol.find((p) => offered.has(p)) || false,
  });
  // What the 101 response says, for cmd:extensions.
  wss.on('headers', (headers, req) => {
    const line = headers.find((h) => /^sec-websocket-extensions:/i.test(h));
    req.extensionsAnswered = line ? line.slice(line.indexOf(':') + 1).trim() : '';
  });
  wss.on('connection', (ws, req) => {
    ws.on('message', (data, isBinary) => {
      if (!isBinary) {
        const text = data.toString();
        if (text.startsWith('cmd:')) return command(ws, req, text.slice(4));
      }
      ws.send(data, { binary: isBinary });
    });
    ws.on('error', (err) => console.error(`connection error: ${err.message}`));
    ws.on('close', (code, reason) => console.log(`closed ${code} ${reason.toString()}`));
  });
  server.listen(0, '127.0.0.1', () => {
    console.log(`listening on ${server.address().port}`);
  });
}

// ----- client -----

class Failed extends Error {}

function check(condition, what) {
  if (!condition) throw new Failed(what);
}

function show(value) {
  const text = typeof value === 'string' ? JSON.stringify(value) : `<${value.length} bytes ${value.subarray(0, 16).toString('hex')}>`;
  return text.length < 120 ? text : `${text.slice(0, 100)}... (${value.length} long)`;
}

function withTimeout(promise, what, ms = STEP_TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failed(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A connection whose messages are read one at a time with `next()`.
class Conn {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    this.closedPromise = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        resolve(this.closed);
        this.wake();
      });
    });
    ws.on('message', (data, isBinary) => {
      this.queue.push(isBinary ? data : data.toString());
      this.wake();
    });
    ws.on('error', (err) => {
      this.error = err;
    });
  }

  wake() {
    while (this.waiters.length && (this.queue.length || this.closed)) {
      const waiter = this.waiters.shift();
      if (this.queue.length) waiter.resolve(this.queue.shift());
      else waiter.reject(new Failed(`connection closed (${this.closed.code} ${this.closed.reason})`));
    }
  }

  next() {
    return withTimeout(
      new Promise((resolve, reject) => {
        this.waiters.push({ resolve, reject });
        this.wake();
      }),
      'waiting for a message',
    );
  }

  async echo(message, what) {
    this.ws.send(message);
    const back = await this.next();
    check(typeof back === typeof message, `${what}: echo came back as ${typeof back}`);
    const same = typeof message === 'string' ? back === message : Buffer.compare(back, message) === 0;
    check(same, `${what}: echo differs: sent ${show(message)}, got ${show(back)}`);
  }

  async ask(text) {
    this.ws.send(text);
    return this.next();
  }

  async close(code, reason) {
    this.ws.close(code, reason);
    return withTimeout(this.closedPromise, 'waiting for the close');
  }
}

// Opens the connection of one step. `env`: the base URL, the CA, the deflate spec.
function open(env, step, protocols = ['x-unknown', 'chat.v2']) {
  const ws = new WebSocket(`${env.base.replace(/\/$/, '')}/${step}`, protocols, {
    ca: env.ca,
    perMessageDeflate: deflateOptions(env.deflate),
    maxPayload: MAX_SIZE,
    handshakeTimeout: STEP_TIMEOUT_MS,
    headers: { 'X-Peer': 'node-ws' },
  });
  const conn = new Conn(ws);
  ws.once('upgrade', (res) => {
    conn.answered = res.headers['sec-websocket-extensions'] || '';
  });
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', () => resolve(conn));
      ws.once('error', reject);
    }),
    `connecting to ${step}`,
  );
}

// With --deflate: checks permessage-deflate was agreed on this connection and
// prints the server's answer.
function negotiated(env, c, step) {
  if (env.deflate === undefined) return;
  check(
    c.answered.startsWith('permessage-deflate') && c.ws.extensions === 'permessage-deflate',
    `compression not agreed: the server answered ${JSON.stringify(c.answered)}, extensions ${JSON.stringify(c.ws.extensions)}`,
  );
  console.log(`extensions ${step} ${c.answered}`);
}

// The server's own report of the extensions it answered must be what arrived here.
async function checkServerView(c) {
  const back = await c.ask('cmd:extensions');
  check(back === `extensions:${c.answered}`, `the server says ${show(back)}, we got ${JSON.stringify(c.answered)}`);
}

async function stepMain(env) {
  const c = await open(env, 'main');
  check(c.ws.protocol === 'chat.v2', `agreed subprotocol ${JSON.stringify(c.ws.protocol)}, wanted "chat.v2"`);
  negotiated(env, c, 'main');
  if (env.deflate !== undefined) await checkServerView(c);
  let back = await c.ask('cmd:protocol');
  check(back === 'protocol:chat.v2', `server says ${show(back)}`);
  await c.echo('hello from node ☃', 'text');
  await c.echo(Buffer.from(Array.from({ length: 256 }, (_, i) => i)), 'binary');
  await c.echo('', 'empty text');
  const big = Buffer.alloc(BIG);
  for (let i = 0; i < BIG; i++) big[i] = i % 251;
  await c.echo(big, '16 MiB binary');
  const unit = 'duplex ☃ héllo 𝄞 ';
  await c.echo(unit.repeat(Math.floor(BIG / Buffer.byteLength(unit))), '16 MiB text');
  // A fragmented message: one frame per send, the last with fin.
  c.ws.send('frag', { fin: false });
  c.ws.send('mented ', { fin: false });
  c.ws.send('☃ message', { fin: true });
  back = await c.next();
  check(back === 'fragmented ☃ message', `fragmented text echoed as ${show(back)}`);
  c.ws.send(Buffer.from([0, 1]), { binary: true, fin: false });
  c.ws.send(Buffer.from([2, 3, 4]), { binary: true, fin: false });
  c.ws.send(Buffer.from([5]), { binary: true, fin: true });
  back = await c.next();
  check(Buffer.isBuffer(back) && back.equals(Buffer.from([0, 1, 2, 3, 4, 5])), `fragmented binary echoed as ${show(back)}`);
  // Our ping: the pong must carry its payload.
  const pong = new Promise((resolve) => c.ws.once('pong', resolve));
  c.ws.ping(Buffer.from('node-client-ping'));
  const payload = await withTimeout(pong, 'waiting for the pong');
  check(payload.toString() === 'node-client-ping', `pong payload ${show(payload)}`);
  // The server's ping: ws answers it; the server reports the pong.
  back = await c.ask('cmd:ping');
  check(back === 'pong:rs-ping', `after cmd:ping the server says ${show(back)}`);
  const closed = await c.close(4002, 'client says bye');
  check(closed.code === 4002, `close answered with code ${closed.code}, wanted 4002`);
}

async function stepServerCloses(env) {
  const c = await open(env, 'server-closes');
  negotiated(env, c, 'server-closes');
  c.ws.send('cmd:close 4001 server says bye');
  const closed = await withTimeout(c.closedPromise, "waiting for the server's close");
  check(c.queue.length === 0, `wanted the server's close, got ${show(c.queue[0] || '')}`);
  check(closed.code === 4001, `close code ${closed.code}, wanted 4001`);
  check(closed.reason === 'server says bye', `close reason ${JSON.stringify(closed.reason)}`);
}

async function stepNoCommonProtocol(env) {
  // ws fails a connection whose server agrees on none of the subprotocols it
  // offered (browsers accept it): our server answers without one, so this fails.
  let refused = null;
  try {
    const c = await open(env, 'no-protocol-offered', ['x-unknown']);
    c.ws.terminate();
  } catch (err) {
    refused = err;
  }
  check(refused && /no subprotocol/.test(refused.message), `offering only x-unknown: ${refused}`);
  // Offering none: none is agreed.
  const c = await open(env, 'no-protocol', []);
  check(c.ws.protocol === '', `agreed subprotocol ${JSON.stringify(c.ws.protocol)}, wanted none`);
  negotiated(env, c, 'no-protocol');
  const back = await c.ask('cmd:header X-Peer');
  check(back === 'header:node-ws', `server says ${show(back)}`);
  const closed = await c.close(1000, '');
  check(closed.code === 1000, `close answered with code ${closed.code}, wanted 1000`);
}

// Many similar JSON messages (context takeover at its best), echoed one by one,
// then one larger than any window.
async function stepJson(env) {
  const c = await open(env, 'json');
  negotiated(env, c, 'json');
  await checkServerView(c);
  for (let i = 0; i < JSON_MESSAGES; i++) await c.echo(jsonMessage(i), `JSON message ${i}`);
  await c.echo(jsonText(JSON_TAIL), '256 KiB JSON text');
  const closed = await c.close(1000, '');
  check(closed.code === 1000, `close answered with code ${closed.code}, wanted 1000`);
}

// 16 MiB messages that compress only partly.
async function stepBig(env) {
  const c = await open(env, 'big');
  negotiated(env, c, 'big');
  await c.echo(jsonText(BIG), '16 MiB JSON text');
  await c.echo(partlyRandomBinary(BIG), '16 MiB binary');
  const closed = await c.close(1000, '');
  check(closed.code === 1000, `close answered with code ${closed.code}, wanted 1000`);
}

async function runClient(args) {
  const base = args.positional[1];
  if (!base) throw new Error('client mode needs a URL');
  const env = { base, ca: args.ca ? fs.readFileSync(args.ca) : undefined, deflate: args.deflate };
  let steps = [['main', stepMain]];
  if (args.scenario === 'full') {
    steps.push(['server-closes', stepServerCloses], ['no-protocol', stepNoCommonProtocol]);
    if (env.deflate !== undefined) steps.push(['json', stepJson], ['big', stepBig]);
  } else if (args.scenario === 'json') {
    steps = [['json', stepJson]];
  }
  for (const [name, step] of steps) {
    const started = Date.now();
    try {
      await withTimeout(step(env), `step ${name}`, 4 * STEP_TIMEOUT_MS);
    } catch (err) {
      throw new Failed(`step ${name}: ${err instanceof Failed ? err.message : err.stack || err}`);
    }
    console.log(`ok ${name} (${((Date.now() - started) / 1000).toFixed(2)} s)`);
  }
  console.log('node client: all steps passed');
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const mode = args.positional[0];
  if (mode === 'server') {
    runServer(args);
  } else if (mode === 'client') {
    runClient(args).then(
      () => process.exit(0),
      (err) => {
        console.error(`node client: FAILED: ${err.message}`);
        process.exit(1);
      },
    );
  } else {
    console.error('usage: node peer.js server [--protocol P]... [--cert PEM --key PEM] [--deflate SPEC]');
    console.error('       node peer.js client URL [--ca PEM] [--scenario full|tls|json] [--deflate SPEC]');
    process.exit(2);
  }
}

main();
