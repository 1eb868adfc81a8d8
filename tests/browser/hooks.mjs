// The chat page with backend hooks: a person logs in at the application's
// backend (tests/backend/backend.py), which sets an HttpOnly session cookie
// for 127.0.0.1; the hub's /chat page, on another port of the same host,
// opens its WebSocket with that cookie and no token, and the hub's connect
// hook makes the person the backend's user.
//
//   node tests/browser/hooks.mjs http://127.0.0.1:HUB_PORT/ http://127.0.0.1:BACKEND_PORT/ [--screenshot FILE.png]
//
// The person types the nickname "guest": the connection's user is still the
// backend's ("alice"), and the list of people shows the backend's name
// (its info). A message sent goes through the publish hook (which marks it
// checked) and shows on the page.
//
// Prints one JSON line (see run() in pages.mjs): the user the connect reply
// named, the people shown, the messages, and the data of the publication as
// the page's client received it. Exits 0 only when all of it happened.

import { messagesOf, peopleOf, send } from './chat-page.mjs';
import { openPage, run, screenshot, waitIn } from './pages.mjs';

const [hub, backend, ...rest] = process.argv.slice(2);
const shotFile = rest[0] === '--screenshot' ? rest[1] : null;
if (!/^http:\/\//.test(hub || '') || !/^http:\/\//.test(backend || '')) {
  console.log(JSON.stringify({ ok: false, reason: 'usage: node hooks.mjs HUB_URL BACKEND_URL [--screenshot FILE]' }));
  process.exit(2);
}

await run(async (browser, errors, report) => {
  const { page } = await openPage(browser, new URL('/login?user=alice', backend).href, 'alice', errors);
  report.login = (await page.textContent('body')).trim();
  report.cookieHttpOnly = (await page.context().cookies()).some((c) => c.name === 'sid' && c.httpOnly);
  const received = [];
  page.on('websocket', (ws) =>
    ws.on('framereceived', (f) => {
      try {
        const msg = JSON.parse(f.payload);
        if (msg.push === 'message') received.push(msg.data);
      } catch {}
    }),
  );
  const response = await page.goto(new URL('/chat', hub).href);
  if (!response || response.status() !== 200) throw new Error(`GET /chat answered ${response?.status()}`);
  await page.fill('#nick', 'guest');
  await page.fill('#room', 'lobby');
  await page.click('#join-form button[type=submit]');
  await waitIn(page, 'the page to connect', () => document.getElementById('status').dataset.state === 'open');
  report.user = await page.evaluate(() => window.__hub.client?.user ?? null);
  await waitIn(page, 'alice in the list of people', () =>
    [...document.querySelectorAll('#people li')].some((li) => li.dataset.name === 'alice'));
  report.people = await peopleOf(page);
  await send(page, 'hello through the hooks');
  report.messages = await messagesOf(page);
  report.received = received;
  await screenshot(page, shotFile);
});
