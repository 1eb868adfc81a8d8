// The pages' client (crates/duplex-hub/web/client.js, served as /static/client.js) in headless
// Chromium across the expiry of its tokens: getToken() hands out short-lived
// tokens signed by the test, the hub pushes `refresh` before each expires,
// the client answers with `op: refresh`, and the connection goes on past the
// first token's exp (and the hub's leeway): the same client id, one
// connection, the ticker's publications still arriving, a publish answered.
//
//   node tests/browser/refresh.mjs http://127.0.0.1:PORT/ TOKEN... [--screenshot FILE.png]
//
// The tokens are JWTs of one user, each expiring later than the one before;
// getToken() gives them in order (and fails once they are used up). The
// first token's exp (read from it) is the moment the script waits past.
//
// Prints one JSON line to stdout (see run() in pages.mjs):
//   {"ok","reason","firstExp","waitedUntil","clientIds":[...],"stats":{...},
//    "refreshPushes":[{"expires_in","at"}],"refreshRequests":[{"ok","at"}],
//    "events":[{type,...}],"tickerAfterExp":N,"published":{"offset"},
//    "echoed":bool,"tokensLeft":N,"errors"}
// and exits 0 only when all of that held; 1 otherwise, 2 on a usage error.

import { openPage, run, screenshot, until, waitIn, WAIT_MS } from './pages.mjs';

const args = process.argv.slice(2);
const base = args.shift();
let shotFile = null;
const tokens = [];
while (args.length) {
  const arg = args.shift();
  if (arg === '--screenshot' && args.length) shotFile = args.shift();
  else tokens.push(arg);
}
if (!base || !/^https?:\/\//.test(base) || tokens.length < 2) {
  console.log(JSON.stringify({ ok: false, reason: 'usage: node refresh.mjs http://HOST:PORT/ TOKEN TOKEN... [--screenshot FILE.png]' }));
  process.exit(2);
}

/** A token's `exp`, from its payload. */
function expOf(token) {
  const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
  return JSON.parse(Buffer.from(payload, 'base64').toString('utf8')).exp;
}

await run(async (browser, errors, report) => {
  report.firstExp = expOf(tokens[0]);
  report.refreshPushes = [];
  report.refreshRequests = [];
  const { page } = await openPage(browser, base, 'refresh', errors, (p) =>
    p.on('websocket', (ws) => {
      const refreshIds = new Set();
      ws.on('framesent', ({ payload }) => {
        try {
          const m = JSON.parse(payload);
          if (m.op === 'refresh') refreshIds.add(m.id);
        } catch {
          // Not JSON: not the client's.
        }
      });
      ws.on('framereceived', ({ payload }) => {
        let m;
        try {
          m = JSON.parse(payload);
        } catch {
          return;
        }
        if (m.push === 'refresh') report.refreshPushes.push({ expires_in: m.expires_in, at: Date.now() });
        else if (m.id != null && refreshIds.has(m.id)) report.refreshRequests.push({ ok: m.ok, at: Date.now() });
      });
    }),
  );

  // The client, on the index page, with the test's tokens.
  await page.evaluate(async (tokens) => {
    const { HubClient, hubUrl } = await import('/static/client.js');
    const left = [...tokens];
    window.tokensLeft = () => left.length;
    const client = new HubClient(hubUrl(), {
      getToken: async () => {
        if (!left.length) throw new Error('no tokens left');
        return left.shift();
      },
    });
    window.client = client;
    window.events = [];
    window.ticker = [];
    window.clientIds = [];
    for (const type of ['state', 'refresh', 'unsubscribed', 'subscribe_error']) {
      client.addEventListener(type, (e) => {
        const { error, ...rest } = e.detail;
        window.events.push({ type, ...rest, error: error ? `${error.code}: ${error.message}` : undefined, at: Date.now() });
        if (type === 'state' && e.detail.state === 'open') window.clientIds.push(client.clientId);
      });
    }
    client.addEventListener('message', (e) => {
      if (e.detail.channel === 'ticker:AAPL') window.ticker.push(Date.now());
      if (e.detail.channel === 'chat:refresh') window.echo = e.detail.data;
    });
    client.start();
    await client.subscribe('ticker:AAPL');
    await client.subscribe('chat:refresh');
  }, tokens);

  // Past the first token's exp and the leeway (1 s), and a second after.
  const past = (report.firstExp + 2) * 1000;
  report.waitedUntil = past;
  await until('the first token to be long expired', () => Date.now() > past, Math.max(WAIT_MS, past - Date.now() + 2000));
  await waitIn(page, 'a ticker publication after the wait', (t) => window.ticker.some((at) => at > t), past);
  report.published = await page.evaluate(() => window.client.publish('chat:refresh', { text: 'still here' }));
  await waitIn(page, 'the publication to come back', () => window.echo?.text === 'still here');
  report.echoed = true;

  const state = await page.evaluate(() => ({
    clientIds: window.clientIds,
    clientId: window.client.clientId,
    state: window.client.state,
    stats: window.client.stats,
    events: window.events,
    tokensLeft: window.tokensLeft(),
  }));
  // Publications after exp plus the leeway, when a connection left with the
  // first token would have been closed.
  state.tickerAfterExp = await page.evaluate((t) => window.ticker.filter((at) => at > t).length, (report.firstExp + 1) * 1000);
  Object.assign(report, state);
  await screenshot(page, shotFile);

  if (state.state !== 'open') report.reason = `the client is ${state.state}`;
  else if (state.stats.connections !== 1) report.reason = `${state.stats.connections} connections: the connection did not stay open`;
  else if (state.clientIds.length !== 1 || state.clientId !== state.clientIds[0]) report.reason = 'the client id changed';
  else if (!report.refreshPushes.length || !report.refreshRequests.some((r) => r.ok)) report.reason = 'no refresh was made';
  else if (!state.tickerAfterExp) report.reason = 'no publication after the first token expired';
});
