// A real browser against a WebSocket echo server: Debian's headless Chromium,
// driven by playwright-core, opens `new WebSocket(url)` in a page, sends text
// and binary messages (one a 1 MiB repetitive JSON text, which
// permessage-deflate shrinks a lot), checks every echo, and closes with
// `ws.close(4000, 'done')`.
//
//   node tests/browser/deflate.mjs ws://127.0.0.1:PORT/
//
// Prints one JSON line to stdout:
//   {"ok":true|false,"reason":...,"extensions":"...","protocol":"...",
//    "echoes":[{"name","bytes","gotBytes","ok"},...],"allEchoesMatched":bool,
//    "payloadBytes":N,"close":{"code","reason","wasClean"},
//    "handshake":{"request":{...},"status":101,"response":{...}},"errors":[...]}
// (`handshake` holds the headers as Chromium's DevTools saw them, `errors` its
// console errors and WebSocket errors) and exits 0 only when the socket
// opened, every echo matched and the close handshake completed cleanly with
// code 4000; 1 otherwise, 2 on a usage error. Everything is bounded by 30 s.
//
// Installed by scripts/setup-browser.sh (chromium from Debian, playwright-core
// from tests/browser/package-lock.json); run by crates/duplex-cli/tests/browser.rs.

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
];

const url = process.argv[2];
if (!url || !/^wss?:\/\//.test(url)) {
  console.log(JSON.stringify({ ok: false, reason: 'usage: node deflate.mjs ws://HOST:PORT/' }));
  process.exit(2);
}

// What Chromium itself reports: console messages, page errors, WebSocket frame
// errors and the handshake headers (from the DevTools protocol).
const errors = [];
const handshake = {};
let browser;

function finish(result) {
  // The close event carries the server's close frame, which echoes the code
  // and the reason the page closed with.
  const ok =
    !result.reason &&
    result.allEchoesMatched === true &&
    result.close?.code === 4000 &&
    result.close?.reason === 'done' &&
    result.close?.wasClean === true;
  const out = { ok, ...result, handshake, errors };
  if (!ok && !out.reason) out.reason = 'an echo or the close did not match';
  console.log(JSON.stringify(out));
  return ok ? 0 : 1;
}

const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, reason: `timed out after ${LIMIT_MS} ms`, handshake, errors }));
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
  // Chromium's Local Network Access checks (on since Chromium 14x) stop a page
  // from connecting to 127.0.0.1 unless the user allowed it: without the
  // permission the WebSocket fails with
  // net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS. The permission is granted
  // here, as a user would, and so Chromium's checks stay on. It cannot be
  // granted to about:blank (an opaque origin), so the page is an empty one at
  // the server's origin (http://127.0.0.1:PORT/duplex-browser-test), served by
  // Playwright itself: no HTTP request reaches the server.
  const context = await browser.newContext({ permissions: ['local-network-access'] });
  const page = await context.newPage();
  page.setDefaultTimeout(LIMIT_MS);
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') errors.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('websocket', (ws) => ws.on('socketerror', (e) => errors.push(`websocket error: ${e}`)));
  const cdp = await context.newCDPSession(page);
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => {
    handshake.request = e.request.headers;
  });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    handshake.status = e.response.status;
    handshake.response = e.response.headers;
  });
  cdp.on('Network.webSocketFrameError', (e) => errors.push(`frame error: ${e.errorMessage}`));
  await cdp.send('Network.enable');
  const pageUrl = new URL('/duplex-browser-test', url.replace(/^ws/, 'http')).href;
  await page.route(pageUrl, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>duplex</title>' }),
  );
  await page.goto(pageUrl);

  const result = await page.evaluate(
    async ({ url, limitMs }) => {
      const deadline = (what) =>
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), limitMs),
        );
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      const inbox = [];
      let waiter = null;
      let closed = null;
      let failure = null;
      ws.onmessage = (e) => {
        inbox.push(e.data);
        if (waiter) waiter();
      };
      ws.onerror = () => {
        failure = 'the WebSocket reported an error';
        if (waiter) waiter();
      };
      const closeEvent = new Promise((resolve) => {
        ws.onclose = (e) => {
          closed = { code: e.code, reason: e.reason, wasClean: e.wasClean };
          if (waiter) waiter();
          resolve(closed);
        };
      });
      const next = (what) =>
        Promise.race([
          deadline(what),
          new Promise((resolve, reject) => {
            const check = () => {
              if (inbox.length) {
                waiter = null;
                resolve(inbox.shift());
              } else if (failure || closed) {
                waiter = null;
                reject(new Error(`${failure || 'the WebSocket closed'} while waiting for ${what}` +
                  (closed ? ` (close ${closed.code} ${JSON.stringify(closed.reason)})` : '')));
              } else {
                waiter = check;
              }
            };
            check();
          }),
        ]);

      try {
        await Promise.race([
          deadline('open'),
          new Promise((resolve, reject) => {
            ws.onopen = resolve;
            closeEvent.then((c) => reject(new Error(`closed before open: ${c.code} ${JSON.stringify(c.reason)}`)));
          }),
        ]);
      } catch (e) {
        return { reason: e.message, close: closed };
      }
      const extensions = ws.extensions;
      const protocol = ws.protocol;

      // The messages: small and empty texts, non-ASCII text, a 1 MiB repetitive
      // JSON text, binary (incompressible and repetitive), then a burst of
      // near-identical texts sent at once (context takeover across messages).
      const json = (() => {
        const items = [];
        let size = 2;
        for (let i = 0; size < 1 << 20; i++) {
          const item = JSON.stringify({ id: i, kind: 'event', user: `user-${i % 37}`, tags: ['alpha', 'beta'], ok: i % 3 === 0 });
          items.push(item);
          size += item.length + 1;
        }
        return `[${items.join(',')}]`;
      })();
      let seed = 0x2545f491;
      const noise = new Uint8Array(64 * 1024).map(() => {
        seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
        return seed & 0xff;
      });
      const pattern = new Uint8Array(256 * 1024).map((_, i) => (i * 7) & 0xff);
      const messages = [
        ['text hello', 'hello'],
        ['text empty', ''],
        ['text non-ASCII', 'wörld ☃ 🎉 Ζεύς'],
        ['text 1 MiB JSON', json],
        ['binary 64 KiB noise', noise.buffer],
        ['binary 256 KiB pattern', pattern.buffer],
        ['binary empty', new ArrayBuffer(0)],
      ];
      const burst = Array.from({ length: 20 }, (_, i) => [`text burst ${i}`, `{"seq":${i},"msg":"the same words again and again"}`]);

      const same = (sent, got) => {
        if (typeof sent === 'string') return typeof got === 'string' && got === sent;
        if (!(got instanceof ArrayBuffer) || got.byteLength !== sent.byteLength) return false;
        const a = new Uint8Array(sent);
        const b = new Uint8Array(got);
        for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
        return true;
      };
      const size = (m) => (typeof m === 'string' ? new TextEncoder().encode(m).length : m.byteLength);
      const echoes = [];
      let reason;
      try {
        for (const [name, message] of messages) {
          ws.send(message);
          const got = await next(`the echo of ${name}`);
          echoes.push({ name, bytes: size(message), ok: same(message, got), gotBytes: size(got) });
        }
        for (const [, message] of burst) ws.send(message);
        for (const [name, message] of burst) {
          const got = await next(`the echo of ${name}`);
          echoes.push({ name, bytes: size(message), ok: same(message, got), gotBytes: size(got) });
        }
      } catch (e) {
        reason = e.message;
      }
      const allEchoesMatched =
        !reason && echoes.length === messages.length + burst.length && echoes.every((e) => e.ok);

      if (!closed) ws.close(4000, 'done');
      let close;
      try {
        close = await Promise.race([deadline('the close'), closeEvent]);
      } catch (e) {
        reason = reason || e.message;
      }
      const payloadBytes = echoes.reduce((n, e) => n + e.bytes, 0);
      return { reason, extensions, protocol, echoes, allEchoesMatched, payloadBytes, close };
    },
    { url, limitMs: LIMIT_MS - 5_000 },
  );
  return finish(result);
}

let code;
try {
  code = await main();
} catch (e) {
  console.log(JSON.stringify({ ok: false, reason: `${e.name}: ${e.message}`, handshake, errors }));
  code = 1;
} finally {
  clearTimeout(watchdog);
  if (browser) await browser.close().catch(() => {});
}
process.exit(code);
