// The ticker page of `duplex serve` (/ticker) in headless Chromium: the
// simulated feed's prices change on the page, for the symbols it subscribed
// to and only those.
//
//   node tests/browser/ticker.mjs http://127.0.0.1:PORT/ [--screenshot FILE.png]
//
// The page starts with AAPL, MSFT and GOOG. The script waits until each shows
// at least three different prices, adds NVDA with the form and waits for it to
// change too, then unsubscribes GOOG with its button: the row goes, and after
// the server's reply to the unsubscribe no more GOOG publications reach the
// page, while the others go on. It also reads what arrives on the page's
// WebSocket, to see that symbols never subscribed (AMZN, TSLA) never came.
//
// Prints one JSON line to stdout (see run() in pages.mjs):
//   {"ok","reason","simulatedLabel":{"visible","text"},"samples":{SYMBOL:[price texts]},
//    "rowsAtEnd":[SYMBOL...],"framesBySymbol":{SYMBOL:N},"gogAfterUnsubscribe":N,
//    "othersAfterUnsubscribe":N,"directions":[{"direction","colour"}],"status","errors"}
// and exits 0 only when all of that held; 1 otherwise, 2 on a usage error.

import { openPage, parseArgs, run, screenshot, unlabelledFields, until, waitIn } from './pages.mjs';

const { base, screenshot: shotFile } = parseArgs('ticker.mjs');
const tickerUrl = new URL('/ticker', base).href;

/** The symbols in the table, top to bottom. */
function rowsOf(page) {
  return page.evaluate(() => [...document.querySelectorAll('#rows tr')].map((tr) => tr.dataset.symbol));
}

/** What the table shows now: SYMBOL -> {price, change, percent, direction, colour}. */
function quotesOf(page) {
  return page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll('#rows tr')].map((tr) => {
        const change = tr.querySelector('.change');
        return [
          tr.dataset.symbol,
          {
            price: tr.querySelector('.price').textContent,
            change: change.textContent,
            percent: tr.querySelector('.percent').textContent,
            direction: tr.dataset.direction,
            colour: getComputedStyle(change).color,
          },
        ];
      }),
    ),
  );
}

await run(async (browser, errors, report) => {
  // Every publication that reaches the page, by symbol, in order of arrival,
  // and the replies to unsubscribe requests, read off the WebSocket.
  const frames = [];
  // The page is reached through the index page's link.
  const { page } = await openPage(browser, base, 'ticker', errors, (p) =>
    p.on('websocket', (ws) => {
      const sent = new Map();
      ws.on('framesent', ({ payload }) => {
        try {
          const m = JSON.parse(payload);
          if (m.op) sent.set(m.id, m);
        } catch {
          // Not JSON: not the page's.
        }
      });
      ws.on('framereceived', ({ payload }) => {
        let m;
        try {
          m = JSON.parse(payload);
        } catch {
          return;
        }
        if (m.push === 'message' && m.channel?.startsWith('ticker:')) {
          frames.push({ kind: 'quote', symbol: m.channel.slice(7) });
        } else if (m.id != null && sent.get(m.id)?.op === 'unsubscribe') {
          frames.push({ kind: 'unsubscribed', channel: sent.get(m.id).channel, ok: m.ok });
        }
      });
    }),
  );
  await Promise.all([page.waitForURL(tickerUrl), page.click('a[href="/ticker"]')]);
  await waitIn(page, 'the page to connect', () => document.getElementById('status').dataset.state === 'open');

  // Prices change: at least three different values for each symbol.
  const samples = {};
  const directions = new Map();
  const sample = async () => {
    const quotes = await quotesOf(page);
    for (const [symbol, q] of Object.entries(quotes)) {
      const seen = (samples[symbol] ||= []);
      if (q.price !== '—' && seen[seen.length - 1] !== q.price) seen.push(q.price);
      if (q.direction !== 'flat') directions.set(q.direction, q.colour);
    }
    return quotes;
  };
  const changing = (symbols) =>
    until(`prices of ${symbols.join(', ')} to change twice`, async () => {
      await sample();
      return symbols.every((s) => (samples[s] || []).length >= 3);
    });
  report.rowsAtStart = await rowsOf(page);
  report.unlabelled = await unlabelledFields(page);
  await changing(['AAPL', 'MSFT', 'GOOG']);

  report.simulatedLabel = await page.evaluate(() => {
    const el = document.getElementById('simulated');
    return { visible: !el.hidden && el.offsetParent !== null, text: el.textContent.trim().replace(/\s+/g, ' ') };
  });

  // Add NVDA with the form.
  await page.fill('#symbol', 'nvda');
  await page.click('#add');
  await waitIn(page, 'an NVDA row', () => !!document.querySelector('#rows tr[data-symbol="NVDA"]'));
  await changing(['AAPL', 'MSFT', 'GOOG', 'NVDA']);
  await screenshot(page, shotFile);

  // Unsubscribe GOOG with its button.
  await page.click('#rows tr[data-symbol="GOOG"] button');
  await waitIn(page, 'the GOOG row to go', () => !document.querySelector('#rows tr[data-symbol="GOOG"]'));
  const replied = await until('the reply to unsubscribe ticker:GOOG', () =>
    frames.findIndex((f) => f.kind === 'unsubscribed' && f.channel === 'ticker:GOOG') + 1);
  const unsubscribedAt = replied - 1;
  report.unsubscribeReply = frames[unsubscribedAt];
  // The others go on: wait for eight more of their publications (about two
  // ticks each), then count GOOG's since the reply.
  await until('more publications of AAPL, MSFT and NVDA', () =>
    frames.slice(unsubscribedAt).filter((f) => f.kind === 'quote' && f.symbol !== 'GOOG').length >= 8);
  const after = frames.slice(unsubscribedAt + 1).filter((f) => f.kind === 'quote');
  report.gogAfterUnsubscribe = after.filter((f) => f.symbol === 'GOOG').length;
  report.othersAfterUnsubscribe = after.length - report.gogAfterUnsubscribe;
  await sample();

  report.samples = samples;
  report.rowsAtEnd = await rowsOf(page);
  report.framesBySymbol = frames
    .filter((f) => f.kind === 'quote')
    .reduce((n, f) => ({ ...n, [f.symbol]: (n[f.symbol] || 0) + 1 }), {});
  report.directions = [...directions].map(([direction, colour]) => ({ direction, colour }));
  report.status = await page.textContent('#status-text');
});
