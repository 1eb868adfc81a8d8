// A real browser against the `static_and_ws` example served over TLS: Debian's
// headless Chromium, driven by playwright-core, loads the chat page from
// https://HOST:PORT/, uses it (types a message, sees it come back), then opens
// two more WebSockets to wss://HOST:PORT/ws from the page, sends text and
// binary messages from one and checks that both get every one back in order,
// and closes them.
//
//   node tests/browser/http2.mjs https://127.0.0.1:PORT/ [--await-shutdown]
//
// With --await-shutdown it then prints the line `ready for shutdown` and waits
// (up to 15 s) for the server to close the chat page's socket, as a server
// shutting down does (1001), and reports what the page showed.
//
// Prints one JSON line to stdout:
//   {"ok":true|false,"reason":...,
//    "page":{"status","nextHopProtocol","cdpProtocol"},
//    "chat":{"status","echoed"},
//    "sockets":[{"extensions","protocol"},...],"messagesMatched":bool,
//    "closes":[{"code","reason","wasClean"},...],
//    "shutdown":{"status":"closed: 1001 ..."} (with --await-shutdown),
//    "handshakes":[{"url","status","request","response"},...],"errors":[...]}
// and exits 0 only when the page, the chat and every broadcast worked and the
// sockets closed cleanly; 1 otherwise, 2 on a usage error. Which HTTP version
// carried what is reported, not judged: the Rust test
// (crates/duplex/tests/browser_http2.rs) asserts that, from this report.
// Everything is bounded by 30 s.
//
// WebSocket over HTTP/2 (RFC 8441) needs no flag: Chromium has used it by
// default since version 91 whenever it already holds an HTTP/2 connection to
// the origin whose server sent SETTINGS_ENABLE_CONNECT_PROTOCOL, which is the
// case here as the page itself came over that connection. It never opens a
// new HTTP/2 connection just for a WebSocket, so a WebSocket opened from a
// page loaded elsewhere would use HTTP/1.1.
//
// Installed by scripts/setup-browser.sh (chromium from Debian, playwright-core
// from tests/browser/package-lock.json).

import { chromium } from 'playwright-core';

const EXECUTABLE = '/usr/bin/chromium';
const LIMIT_MS = 30_000;
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // The server's certificate is self-signed, made by the test.
  '--ignore-certificate-errors',
];

const url = process.argv[2];
const awaitShutdown = process.argv[3] === '--await-shutdown';
if (!url || !/^https:\/\//.test(url) || (process.argv[3] && !awaitShutdown)) {
  console.log(JSON.stringify({ ok: false, reason: 'usage: node http2.mjs https://HOST:PORT/ [--await-shutdown]' }));
  process.exit(2);
}

// What Chromium itself reports: console messages, page errors, WebSocket
// errors, and the WebSocket handshakes and the page's protocol as DevTools saw
// them.
const errors = [];
const handshakes = new Map();
const page = {};
let browser;

function finish(result) {
  const ok =
    !result.reason &&
    result.chat?.echoed === true &&
    result.messagesMatched === true &&
    result.closes?.length === 2 &&
    result.closes.every((c) => c.code === 1000 && c.wasClean === true) &&
    (!awaitShutdown || result.shutdown?.status?.startsWith('closed: 1001') === true);
  const out = { ok, ...result, page, handshakes: [...handshakes.values()], errors };
  if (!ok && !out.reason) out.reason = 'the chat, a broadcast or a close did not go as expected';
  console.log(JSON.stringify(out));
  return ok ? 0 : 1;
}

const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, reason: `timed out after ${LIMIT_MS} ms`, page, errors }));
  // Playwright kills the browser it launched when this process exits.
  process.exit(1);
}, LIMIT_MS);

async function main() {
  browser = await chromium.launch({
    executablePath: EXECUTABLE,
    headless: true,
    args: ARGS,
    timeout: LIMIT_MS,
  });
  // Local Network Access (Chromium 14x and later, see deflate.mjs): the page
  // and its sockets are all on 127.0.0.1, so no check should apply, but grant
  // the permission as deflate.mjs does, so that a change in those rules does
  // not show up here as a WebSocket failure.
  const context = await browser.newContext({
    permissions: ['local-network-access'],
    ignoreHTTPSErrors: true,
  });
  const tab = await context.newPage();
  tab.setDefaultTimeout(LIMIT_MS);
  tab.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') errors.push(`console ${m.type()}: ${m.text()}`);
  });
  tab.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  tab.on('websocket', (ws) => ws.on('socketerror', (e) => errors.push(`websocket error: ${e}`)));
  const cdp = await context.newCDPSession(tab);
  cdp.on('Network.responseReceived', (e) => {
    if (e.type === 'Document') page.cdpProtocol = e.response.protocol;
  });
  cdp.on('Network.webSocketCreated', (e) => handshakes.set(e.requestId, { url: e.url }));
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => {
    const h = handshakes.get(e.requestId) || {};
    h.request = e.request.headers;
    handshakes.set(e.requestId, h);
  });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    const h = handshakes.get(e.requestId) || {};
    h.status = e.response.status;
    h.response = e.response.headers;
    handshakes.set(e.requestId, h);
  });
  cdp.on('Network.webSocketFrameError', (e) => errors.push(`frame error: ${e.errorMessage}`));
  await cdp.send('Network.enable');

  const response = await tab.goto(url);
  page.status = response?.status();
  page.nextHopProtocol = await tab.evaluate(
    () => performance.getEntriesByType('navigation')[0]?.nextHopProtocol,
  );

  // The chat page as a user sees it: it connects by itself; type, press Enter,
  // and the message comes back from the broadcast.
  const chat = {};
  await tab.waitForFunction(() => document.getElementById('status').textContent.startsWith('connected'));
  chat.status = await tab.textContent('#status');
  const said = `hello from Chromium ${Date.now()}`;
  await tab.fill('#text', said);
  await tab.press('#text', 'Enter');
  await tab.waitForFunction(
    (said) => [...document.querySelectorAll('#log li')].some((li) => li.textContent === said),
    said,
  );
  chat.echoed = true;

  const result = await tab.evaluate(
    async ({ limitMs }) => {
      const deadline = (what) =>
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), limitMs),
        );
      const wsUrl = `wss://${location.host}/ws`;

      // A socket with an inbox, and its close event as a promise.
      const open = (name) => {
        const ws = new WebSocket(wsUrl);
        ws.binaryType = 'arraybuffer';
        const s = { name, ws, inbox: [], waiter: null, closed: null, failure: null };
        ws.onmessage = (e) => {
          s.inbox.push(e.data);
          if (s.waiter) s.waiter();
        };
        ws.onerror = () => {
          s.failure = 'the WebSocket reported an error';
          if (s.waiter) s.waiter();
        };
        s.closeEvent = new Promise((resolve) => {
          ws.onclose = (e) => {
            s.closed = { code: e.code, reason: e.reason, wasClean: e.wasClean };
            if (s.waiter) s.waiter();
            resolve(s.closed);
          };
        });
        s.opened = Promise.race([
          deadline(`${name} to open`),
          new Promise((resolve, reject) => {
            ws.onopen = resolve;
            s.closeEvent.then((c) => reject(new Error(`${name} closed before open: ${c.code} ${c.reason}`)));
          }),
        ]);
        return s;
      };
      const next = (s, what) =>
        Promise.race([
          deadline(what),
          new Promise((resolve, reject) => {
            const check = () => {
              if (s.inbox.length) {
                s.waiter = null;
                resolve(s.inbox.shift());
              } else if (s.failure || s.closed) {
                s.waiter = null;
                reject(new Error(`${s.failure || `${s.name} closed`} while waiting for ${what}`));
              } else {
                s.waiter = check;
              }
            };
            check();
          }),
        ]);
      const same = (sent, got) => {
        if (typeof sent === 'string') return typeof got === 'string' && got === sent;
        if (!(got instanceof ArrayBuffer) || got.byteLength !== sent.byteLength) return false;
        const a = new Uint8Array(sent);
        const b = new Uint8Array(got);
        return a.every((v, i) => v === b[i]);
      };

      const a = open('a');
      const b = open('b');
      let reason;
      let messagesMatched = false;
      let sockets = [];
      try {
        await a.opened;
        await b.opened;
        sockets = [a, b].map((s) => ({ extensions: s.ws.extensions, protocol: s.ws.protocol }));
        // Text (one 256 KiB, compressible), binary, and a burst.
        const big = JSON.stringify(Array.from({ length: 6000 }, (_, i) => ({ id: i, text: 'the same words' })));
        const messages = [
          'hello over HTTP/2',
          'wörld ☃ 🎉',
          big,
          new Uint8Array(70_000).map((_, i) => (i * 7) & 0xff).buffer,
          ...Array.from({ length: 50 }, (_, i) => `burst ${i}`),
        ];
        for (const m of messages) a.ws.send(m);
        for (const s of [a, b]) {
          for (let i = 0; i < messages.length; i++) {
            const got = await next(s, `${s.name}'s copy of message ${i}`);
            if (!same(messages[i], got)) throw new Error(`${s.name}'s copy of message ${i} differs`);
          }
        }
        messagesMatched = true;
      } catch (e) {
        reason = e.message;
      }
      for (const s of [a, b]) if (!s.closed) s.ws.close(1000, 'done');
      const closes = [];
      for (const s of [a, b]) {
        try {
          closes.push(await Promise.race([deadline(`${s.name}'s close`), s.closeEvent]));
        } catch (e) {
          reason = reason || e.message;
        }
      }
      return { reason, sockets, messagesMatched, closes };
    },
    { limitMs: LIMIT_MS - 20_000 },
  );
  if (awaitShutdown && !result.reason) {
    // The chat page's socket is still open: the server closes it when it
    // shuts down, and the page shows the code and reason.
    console.log('ready for shutdown');
    try {
      await tab.waitForFunction(
        () => document.getElementById('status').textContent.startsWith('closed'),
        null,
        { timeout: 15_000 },
      );
      result.shutdown = { status: await tab.textContent('#status') };
    } catch (e) {
      result.reason = `the chat page's socket was not closed: ${e.message}`;
    }
  }
  return finish({ chat, ...result });
}

let code;
try {
  code = await main();
} catch (e) {
  console.log(JSON.stringify({ ok: false, reason: `${e.name}: ${e.message}`, page, errors }));
  code = 1;
} finally {
  clearTimeout(watchdog);
  if (browser) await browser.close().catch(() => {});
}
process.exit(code);
