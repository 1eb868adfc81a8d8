// Shared by the scripts that drive the pages of `duplex serve` (chat.mjs,
// ticker.mjs): launching Debian's headless Chromium, opening pages in their
// own browser contexts, collecting what Chromium reports, waiting with a
// deadline, and printing the one JSON line the Rust tests read
// (crates/duplex-cli/tests/serve_browser.rs).

import { chromium } from 'playwright-core';

/** Debian's Chromium (scripts/setup-browser.sh installs it). */
export const EXECUTABLE = '/usr/bin/chromium';
/** A whole script run is bounded by this. */
export const LIMIT_MS = 45_000;
/** One wait for something on a page is bounded by this. */
export const WAIT_MS = 15_000;
export const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Reads `BASE [SCENARIO] [--screenshot FILE]` from the command line: BASE is
 * the server's http://HOST:PORT/ and SCENARIO one of `scenarios` (when given).
 * Exits 2 with a usage line on anything else.
 */
export function parseArgs(script, scenarios = []) {
  const args = process.argv.slice(2);
  const out = { base: args.shift(), scenario: null, screenshot: null };
  if (scenarios.length) out.scenario = args.shift();
  while (args.length) {
    const flag = args.shift();
    if (flag === '--screenshot' && args.length) out.screenshot = args.shift();
    else out.base = null;
  }
  const usage = `usage: node ${script} http://HOST:PORT/${scenarios.length ? ` ${scenarios.join('|')}` : ''} [--screenshot FILE.png]`;
  if (!out.base || !/^https?:\/\//.test(out.base) || (scenarios.length && !scenarios.includes(out.scenario))) {
    console.log(JSON.stringify({ ok: false, reason: usage }));
    process.exit(2);
  }
  return out;
}

/**
 * Runs `main(browser, errors)` under a watchdog of LIMIT_MS, prints the
 * report it returns as one JSON line, with `ok` (true when the report has no
 * `reason`) and `errors` (what Chromium reported), and exits 0 only when ok.
 * A thrown error becomes the `reason`.
 */
export async function run(main) {
  const errors = [];
  let report = {};
  let browser;
  const watchdog = setTimeout(() => {
    console.log(JSON.stringify({ ok: false, reason: `timed out after ${LIMIT_MS} ms`, ...report, errors }));
    // Playwright kills the browser it launched when this process exits.
    process.exit(1);
  }, LIMIT_MS);
  try {
    browser = await chromium.launch({ executablePath: EXECUTABLE, headless: true, args: ARGS, timeout: WAIT_MS });
    await main(browser, errors, report);
  } catch (e) {
    report.reason = `${e.name}: ${e.message}`;
  } finally {
    clearTimeout(watchdog);
    if (browser) await browser.close().catch(() => {});
  }
  const ok = !report.reason;
  console.log(JSON.stringify({ ok, ...report, errors }));
  process.exit(ok ? 0 : 1);
}

/**
 * A new browser context (its own cookies, storage and network conditions,
 * like another person's browser) with one page at `url`, whose console
 * errors and warnings, page errors and WebSocket errors go to `errors`,
 * each prefixed with `name`. `setup(page)`, when given, runs before the page
 * is loaded (to listen to its WebSockets from the start, say).
 */
export async function openPage(browser, url, name, errors, setup) {
  // Local Network Access (Chromium 14x and later): the page and its socket
  // are on the same 127.0.0.1 origin, so no check applies, but the permission
  // is granted as a user would, so that a change in those rules does not show
  // up as a WebSocket failure.
  const context = await browser.newContext({
    permissions: ['local-network-access'],
    viewport: { width: 1100, height: 720 },
  });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') errors.push(`${name}: console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`${name}: page error: ${e.message}`));
  page.on('websocket', (ws) => ws.on('socketerror', (e) => errors.push(`${name}: websocket error: ${e}`)));
  if (setup) await setup(page);
  const response = await page.goto(url);
  if (!response || response.status() !== 200) {
    throw new Error(`${name}: GET ${url} answered ${response ? response.status() : 'nothing'}`);
  }
  return { context, page };
}

/**
 * Waits until `fn(arg)`, evaluated in `page`, returns a truthy value (polled
 * every 50 ms, at most `ms`), and returns that value; on time out, throws
 * an error that says what was awaited.
 */
export async function waitIn(page, what, fn, arg, ms = WAIT_MS) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: ms, polling: 50 });
    return await handle.jsonValue();
  } catch (e) {
    throw new Error(`timed out after ${ms} ms waiting for ${what}${e.name === 'TimeoutError' ? '' : ` (${e.message})`}`);
  }
}

/** Polls `check()` in this process every 50 ms until it is truthy, at most `ms`. */
export async function until(what, check, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Saves a screenshot of the whole page when a file was asked for. */
export async function screenshot(page, file) {
  if (file) await page.screenshot({ path: file, fullPage: true });
}

/** Lines of standard input not yet asked for, and who waits for the next. */
const stdinLines = [];
let stdinWaiter = null;
let stdinReader = null;

/**
 * Prints `line` (a request to the test that runs this script, such as `stop
 * the server`) and returns the next line of standard input, its answer;
 * throws after `ms` without one.
 */
export async function ask(line, ms = WAIT_MS) {
  if (!stdinReader) {
    const { createInterface } = await import('node:readline');
    stdinReader = createInterface({ input: process.stdin });
    stdinReader.on('line', (l) => {
      stdinLines.push(l.trim());
      stdinWaiter?.();
    });
  }
  console.log(line);
  let timer;
  try {
    return await new Promise((resolve, reject) => {
      const check = () => {
        if (stdinLines.length) {
          stdinWaiter = null;
          resolve(stdinLines.shift());
        }
      };
      stdinWaiter = check;
      timer = setTimeout(() => reject(new Error(`no answer to ${JSON.stringify(line)} within ${ms} ms`)), ms);
      check();
    });
  } finally {
    clearTimeout(timer);
    stdinWaiter = null;
  }
}

/** The ids of the page's form fields that have no label (none, if accessible). */
export function unlabelledFields(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('input, select, textarea')]
      .filter((f) => f.type !== 'hidden' && !f.labels?.length && !f.getAttribute('aria-label'))
      .map((f) => f.id || f.name || f.outerHTML),
  );
}
