// Failover of the chat page between two `duplex serve` nodes that share
// Redis, in headless Chromium: a node is killed under a page, which moves to
// the other node by itself and recovers what it missed, once and in order.
//
//   node tests/browser/cluster.mjs http://127.0.0.1:PA/ http://127.0.0.1:PB/ [--screenshot FILE.png]
//
// The two arguments are the origins of node A and node B (each must accept
// the other's pages: `server.allowed_origins`). In browser contexts of their
// own, alice opens the chat page from node A with
// `?room=failover&nodes=ws://A/ws,ws://B/ws` and bob opens it from node B
// with `nodes=ws://B/ws,ws://A/ws`: each page's client (crates/duplex-hub/web/client.js)
// connects to the first URL of its list and moves to the next one when its
// connection is lost. Both join the room through the form and take turns
// saying something (a-1, b-1, a-2, b-2), each message awaited on the other
// page. Then bob keeps sending, as fast as the page lets him (b-3, b-4 ...),
// and meanwhile the script prints the JSON line `{"ready":"kill node A"}` and
// waits for `killed` on its standard input (the test kills node A with
// SIGKILL). alice's connection to A is gone: her page must reconnect to node
// B by itself and resubscribe from the last offset it saw, recovering what
// was published meanwhile. bob stops three messages after alice is back;
// then alice sends a-3 and a-4, which bob's page must show.
//
// alice's client waits 1 to 2 s before its first reconnection (its public
// `minDelayMs` set to 2000 from here, instead of the page's default 500,
// which makes it 0.25 to 0.5 s): so that, whatever the load of the machine,
// bob sends several messages while she is away and they can only reach her
// through recovery. Nothing else of the page or of its client is changed.
//
// Prints one JSON line to stdout (see run() in pages.mjs) with:
//   nodes     {a, b}: the nodes' WebSocket URLs
//   sent      [{user, text}]: every message sent, in the order sent (one
//             sender at a time, so the order of the offsets)
//   messages  {alice, bob}: what each page's message list shows, top to
//             bottom ({offset, user, text, time, markup}, as in chat.mjs)
//   texts     {alice, bob}: the same, only the texts
//   states    {alice, bob}: the client's `state` events ({state, url, attempt,
//             delayMs, reason}) from the end of the first exchange on
//   log       {alice, bob}: all that the clients did from then on (states,
//             messages with `recovered`, subscriptions; chat-page.mjs)
//   stats     {alice, bob}: the clients' counters (connections, delivered,
//             recovered, duplicates)
//   urls      {before, after}: {alice, bob}: each client's URL in use
//   bobSends  [{text, alice}]: bob's messages of the failover and alice's
//             client state when each had been shown on bob's page
//   killedAfter, backAfter: how many messages bob had sent when the script
//             asked for node A to be killed, and when alice was back
//   statusWhileAway: alice's status line once her connection was lost
//   people    {alice, bob}: the names each page lists at the end
//   status    alice's status line at the end
// When the scenario fails part way, the report still says what the pages
// showed then, with the `reason`. Exits 0 only when everything happened as
// described; 1 otherwise, 2 on a usage error. Everything is bounded
// (pages.mjs: LIMIT_MS, WAIT_MS).

import { join, messagesOf, peopleOf, recordClient, send, waitForPeople, waitForText } from './chat-page.mjs';
import { ask, openPage, run, screenshot, waitIn } from './pages.mjs';

const ROOM = 'failover';
/** bob's messages after the first exchange are bounded by this. */
const MAX_BOB_SENDS = 300;
/** How many messages bob sends once alice is back, before he stops. */
const AFTER_RETURN = 3;

/**
 * Reads `A B [--screenshot FILE]` from the command line, A and B the nodes'
 * http://HOST:PORT/ origins. Exits 2 with a usage line on anything else.
 */
function parseNodes() {
  const args = process.argv.slice(2);
  const out = { a: args.shift(), b: args.shift(), screenshot: null };
  while (args.length) {
    const flag = args.shift();
    if (flag === '--screenshot' && args.length) out.screenshot = args.shift();
    else out.a = null;
  }
  const origin = (u) => typeof u === 'string' && /^http:\/\/[^/?#]+\/?$/.test(u);
  if (!origin(out.a) || !origin(out.b)) {
    const usage = 'usage: node cluster.mjs http://HOST:PORT/ http://HOST:PORT/ [--screenshot FILE.png]';
    console.log(JSON.stringify({ ok: false, reason: usage }));
    process.exit(2);
  }
  return out;
}

const { a: baseA, b: baseB, screenshot: shotFile } = parseNodes();
/** The hub's WebSocket URL on the node of origin `base`. */
const wsOf = (base) => `ws://${new URL(base).host}/ws`;
const wsA = wsOf(baseA);
const wsB = wsOf(baseB);

/** The chat page of the node at `base`, in the room, with the list `nodes`. */
function chatUrl(base, nodes) {
  return `${new URL('/chat', base).href}?room=${ROOM}&nodes=${nodes.join(',')}`;
}

/** The URL the page's client uses (or will try next). */
function urlOf(who) {
  return who.page.evaluate(() => window.__hub.client.url);
}

/** The client's counters. */
function statsOf(who) {
  return who.page.evaluate(() => window.__hub.client.stats);
}

/** What `who`'s client did since recordClient(). */
function logOf(who) {
  return who.page.evaluate(() => window.__log);
}

/**
 * What the pages show and what their clients did, into `report` (see the
 * top of this file); also when the scenario fails part way, to show where.
 */
async function collect(report, alice, bob) {
  report.messages = { alice: await messagesOf(alice.page), bob: await messagesOf(bob.page) };
  report.texts = { alice: report.messages.alice.map((m) => m.text), bob: report.messages.bob.map((m) => m.text) };
  report.log = { alice: await logOf(alice), bob: await logOf(bob) };
  report.states = {
    alice: (report.log.alice ?? []).filter((e) => e.type === 'state'),
    bob: (report.log.bob ?? []).filter((e) => e.type === 'state'),
  };
  report.stats = { alice: await statsOf(alice), bob: await statsOf(bob) };
  report.urls.after = { alice: await urlOf(alice), bob: await urlOf(bob) };
  report.people = { alice: await peopleOf(alice.page), bob: await peopleOf(bob.page) };
  report.status = await alice.page.textContent('#status-text');
}

await run(async (browser, errors, report) => {
  report.nodes = { a: wsA, b: wsB };
  report.urls = {};
  const alice = { name: 'alice', ...(await openPage(browser, chatUrl(baseA, [wsA, wsB]), 'alice', errors)) };
  const bob = { name: 'bob', ...(await openPage(browser, chatUrl(baseB, [wsB, wsA]), 'bob', errors)) };
  await join(alice.page, 'alice', ROOM);
  await join(bob.page, 'bob', ROOM);
  // Presence across the nodes, through Redis.
  await waitForPeople(alice.page, ['alice', 'bob'], 'alice');
  await waitForPeople(bob.page, ['alice', 'bob'], 'bob');
  report.urls.before = { alice: await urlOf(alice), bob: await urlOf(bob) };
  try {
    await failover(alice, bob, report);
  } catch (e) {
    // What the pages showed when it failed (if they still answer).
    await collect(report, alice, bob).catch(() => {});
    throw e;
  }
  await collect(report, alice, bob);
  await screenshot(alice.page, shotFile);
});

/**
 * The scenario, from two people in the room on their own nodes to alice,
 * moved to node B, heard by bob (see the top of this file).
 */
async function failover(alice, bob, report) {
  const sent = [];
  report.sent = sent;
  /** `who` sends `text` from the composer (see send()) and it is noted. */
  const say = async (who, text) => {
    await send(who.page, text);
    sent.push({ user: who.name, text });
  };

  // Each in turn, each message awaited on the other page (through Redis).
  for (const [who, other, text] of [
    [alice, bob, 'a-1'],
    [bob, alice, 'b-1'],
    [alice, bob, 'a-2'],
    [bob, alice, 'b-2'],
  ]) {
    await say(who, text);
    await waitForText(other.page, text, other.name);
  }
  await recordClient(alice.page);
  await recordClient(bob.page);
  await alice.page.evaluate(() => {
    window.__hub.client.minDelayMs = 2000;
  });

  // bob keeps sending until told to stop; each of his messages notes alice's
  // client state once bob's page shows it.
  let bobCount = 2;
  let stopBob = false;
  report.bobSends = [];
  const bobLoop = (async () => {
    while (!stopBob) {
      if (bobCount >= MAX_BOB_SENDS) throw new Error(`bob sent ${MAX_BOB_SENDS} messages and was not told to stop`);
      const text = `b-${++bobCount}`;
      await say(bob, text);
      report.bobSends.push({ text, alice: await alice.page.evaluate(() => window.__hub.client.state) });
    }
  })();
  // Settles only if bob's loop fails: raced against every wait meanwhile.
  const bobFailed = bobLoop.then(() => new Promise(() => {}));
  bobFailed.catch(() => {});
  const whileBobSends = (promise) => Promise.race([promise, bobFailed]);
  /** Waits until bob's page shows b-`n`. */
  const bobReaches = (n) =>
    whileBobSends(waitIn(bob.page, `bob's page to show b-${n}`, (t) =>
      [...document.querySelectorAll('#messages li .text')].some((p) => p.textContent === t), `b-${n}`));

  try {
    // Node A is killed in the middle of bob's stream.
    await bobReaches(4);
    report.killedAfter = bobCount;
    const answer = await whileBobSends(ask(JSON.stringify({ ready: 'kill node A' })));
    if (answer !== 'killed') throw new Error(`the test answered ${JSON.stringify(answer)}, not "killed"`);
    await whileBobSends(waitIn(alice.page, 'alice\'s page to lose its connection to node A', () =>
      window.__log.some((e) => e.type === 'state' && e.state === 'closed')));
    report.statusWhileAway = await alice.page.textContent('#status-text');
    await whileBobSends(waitIn(alice.page, 'alice\'s page to be connected to node B and resubscribed', (b) =>
      window.__log.some((e) => e.type === 'state' && e.state === 'open' && e.url === b) &&
      window.__log.some((e) => e.type === 'subscribed' && e.resumed), wsB));
    report.backAfter = bobCount;
    await bobReaches(bobCount + AFTER_RETURN);
  } finally {
    stopBob = true;
  }
  await bobLoop;

  // alice, now on node B, says something: bob sees it.
  for (const text of ['a-3', 'a-4']) {
    await say(alice, text);
    await waitForText(bob.page, text, 'bob');
  }
  // Both pages show a-4, the last message: what they show is complete (the
  // client delivers in offset order, the page lists by offset), so missing
  // or doubled messages are for the test to find in the report.
  await waitForPeople(alice.page, ['alice', 'bob'], 'alice');
  await waitForPeople(bob.page, ['alice', 'bob'], 'bob');
}
