// Fan-out load for Socket.IO servers (server.js): the counterpart of
// `duplex bench --subscribers N --hub CHANNEL --also URL`, for bench/cluster.sh.
//
//   node load.js --subscribers 10000 --size 64 --rate 5 --duration 10 \
//       ws://127.0.0.1:3001 ws://127.0.0.1:3002
//
// N socket.io-client subscribers, spread round-robin over the servers' URLs
// (WebSocket transport only, no polling, one connection each), join one
// room; one publisher per URL emits 'publish' at an equal share of the total
// rate, with its sequence number and send time in the data (the same object,
// and so the same size, as duplex bench's: bench_seq, bench_t, pad). Every
// subscriber measures the time from a publication's send to its delivery.
//
// As duplex bench does: WARMUP seconds of load, then DURATION seconds
// measured; deliveries of publications sent in the window are counted; the
// run ends when every subscriber got a publication sent after the window, or
// 2 s after the window at the latest. stderr gets a line when every
// subscriber is subscribed (`subscribed: ...`), when measuring starts
// (`measuring`) and when it ends (`measured`), so that a script can read the
// servers' CPU time over the window. stdout gets one JSON object with the
// keys of duplex bench --json. client_cpu_percent is this process's own CPU
// time (process.cpuUsage, user + system) from the window's start to the end
// of the run, over the window's length: above 90, the load generator may be
// the limit.
'use strict';

const { io } = require('socket.io-client');

const GRACE_MS = 2000;

function parseArgs(argv) {
  const opts = {
    urls: [],
    subscribers: 1000,
    size: 64,
    rate: 5,
    duration: 10,
    warmup: 1,
    room: 'fanout:bench',
    concurrency: 100,
  };
  for (let i = 2; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--subscribers': opts.subscribers = Number(value()); break;
      case '--size': opts.size = Number(value()); break;
      case '--rate': opts.rate = Number(value()); break;
      case '--duration': opts.duration = Number(value()); break;
      case '--warmup': opts.warmup = Number(value()); break;
      case '--room': opts.room = value(); break;
      case '--concurrency': opts.concurrency = Number(value()); break;
      default:
        if (arg.startsWith('--')) throw new Error(`unknown option ${arg}`);
        opts.urls.push(arg);
    }
  }
  if (opts.urls.length === 0) throw new Error('give at least one server URL');
  for (const key of ['subscribers', 'size', 'rate', 'duration', 'warmup', 'concurrency']) {
    if (!Number.isFinite(opts[key]) || opts[key] < 0) throw new Error(`--${key}: not a number`);
  }
  if (opts.rate <= 0) throw new Error('--rate must be above 0');
  return opts;
}

/** Milliseconds on a monotonic clock. */
const now = () => performance.now();

/** A growing array of latencies in microseconds. */
class Samples {
  constructor() {
    this.values = new Float64Array(1 << 20);
    this.length = 0;
  }
  push(value) {
    if (this.length === this.values.length) {
      const bigger = new Float64Array(this.values.length * 2);
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values[this.length++] = value;
  }
  percentiles() {
    const sorted = this.values.subarray(0, this.length).sort();
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] : 0);
    return {
      p50: at(0.5),
      p90: at(0.9),
      p99: at(0.99),
      p99_9: at(0.999),
      max: sorted.length ? sorted[sorted.length - 1] : 0,
    };
  }
}

function connect(url, role) {
  return new Promise((resolve, reject) => {
    const socket = io(url, {
      transports: ['websocket'],
      forceNew: true, // one connection per client, not one shared per URL
      reconnection: false,
      timeout: 20000,
    });
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (err) => {
      socket.close();
      reject(new Error(`${role} on ${url}: ${err.message}`));
    });
  });
}

async function main() {
  const opts = parseArgs(process.argv);
  const state = {
    window: null, // { start, end } in ms
    samples: new Samples(),
    delivered: 0,
    published: 0,
    errors: 0,
    ended: false,
  };
  const payloadPad = 'x'.repeat(Math.max(0, opts.size - 48));

  // Subscribers, opts.concurrency connecting at a time.
  const began = now();
  const subscribers = new Array(opts.subscribers);
  let remaining = 0; // subscribers that have not yet seen the end of the window
  let finish = null;
  const done = new Promise((resolve) => { finish = resolve; });
  const subscriberDone = (sub) => {
    if (sub.done) return;
    sub.done = true;
    remaining--;
    if (remaining === 0 && state.ended) finish();
  };
  let next = 0;
  const connectOne = async () => {
    while (next < opts.subscribers) {
      const i = next++;
      const url = opts.urls[i % opts.urls.length];
      const socket = await connect(url, `subscriber ${i}`);
      const sub = { socket, done: false };
      subscribers[i] = sub;
      socket.on('message', (data) => {
        const w = state.window;
        if (!w || sub.done) return;
        const sent = data.bench_t / 1e6;
        if (sent >= w.start && sent < w.end) {
          state.samples.push((now() - sent) * 1000);
          state.delivered++;
        } else if (sent >= w.end) {
          subscriberDone(sub);
        }
      });
      socket.on('disconnect', (reason) => {
        if (!sub.done && reason !== 'io client disconnect') {
          state.errors++;
          console.error(`subscriber ${i} disconnected: ${reason}`);
          subscriberDone(sub);
        }
      });
      const reply = await socket.timeout(10000).emitWithAck('subscribe', opts.room);
      if (!reply || reply.ok !== true) throw new Error(`subscriber ${i}: subscribe refused`);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency) }, connectOne));
  remaining = opts.subscribers;

  // One publisher per URL.
  const publishers = [];
  for (const url of opts.urls) publishers.push(await connect(url, 'publisher'));
  console.error(
    `subscribed: ${opts.subscribers} subscribers over ${opts.urls.length} servers ` +
      `in ${((now() - began) / 1000).toFixed(1)} s`,
  );

  const start = now() + opts.warmup * 1000;
  const end = start + opts.duration * 1000;
  state.window = { start, end };
  let cpuBefore = null;
  setTimeout(() => {
    cpuBefore = process.cpuUsage();
    console.error('measuring');
  }, Math.max(0, start - now()));
  setTimeout(() => console.error('measured'), Math.max(0, end - now()));

  // Publishing: the total rate shared by the publishers, their schedules
  // interleaved; each keeps to its own schedule whatever the acks.
  const interval = 1000 / opts.rate; // between two publications, all publishers together
  const k = publishers.length;
  const t0 = now();
  let seq = 0;
  const publishing = publishers.map((socket, p) => new Promise((resolve) => {
    let n = 0;
    const tick = () => {
      const t = now();
      const mySeq = seq++;
      const data = { bench_seq: mySeq, bench_t: Math.round(t * 1e6), pad: payloadPad };
      socket.emit('publish', opts.room, data, () => {});
      if (t >= start && t < end) state.published++;
      if (t >= end) {
        resolve();
        return;
      }
      n++;
      const due = t0 + (n * k + p) * interval;
      setTimeout(tick, Math.max(0, due - now()));
    };
    setTimeout(tick, Math.max(0, t0 + p * interval - now()));
  }));
  await Promise.all(publishing);
  state.ended = true;
  if (remaining === 0) finish();
  const grace = new Promise((resolve) => setTimeout(resolve, Math.max(0, end + GRACE_MS - now())));
  await Promise.race([done, grace]);

  const cpu = process.cpuUsage(cpuBefore || undefined);
  const seconds = opts.duration;
  const report = {
    url: opts.urls.join(' '),
    mode: 'fan-out',
    connections: opts.subscribers + k,
    size: opts.size,
    duration_s: seconds,
    deflate: false,
    messages: state.delivered,
    messages_per_sec: state.delivered / seconds,
    mb_per_sec: (state.delivered / seconds) * opts.size / 1e6,
    latency_us: state.samples.percentiles(),
    client_cpu_percent: (100 * (cpu.user + cpu.system) / 1e6) / seconds,
    errors: state.errors,
    subscribers: opts.subscribers,
    published: state.published,
    published_per_sec: state.published / seconds,
    servers: k,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
  for (const sub of subscribers) sub.socket.disconnect();
  for (const socket of publishers) socket.disconnect();
  setTimeout(() => process.exit(state.errors === 0 ? 0 : 1), 100);
}

main().catch((err) => {
  console.error(`load.js: ${err.stack || err}`);
  process.exit(2);
});
