// The chat page of `duplex serve` (/chat) in headless Chromium, as people use
// it: each person in their own browser context, typing into the page.
//
//   node tests/browser/chat.mjs http://127.0.0.1:PORT/ two-users|recovery|gap|restart [--screenshot FILE.png]
//
// two-users: alice (through the index page's link) and bob join the room
//   `lobby`; each sees the other in the list of who is in the room, both send
//   messages (one full of HTML, which must show as text), each page shows
//   both, with the right sender. carol joins later and sees the room's
//   history. bob closes his page: alice's list drops him. alice leaves and
//   joins the room `second`, which is empty.
//
// recovery: alice and bob are in the room; alice's context goes offline and
//   her connection drops; bob sends three messages; alice's context comes back
//   online and her page shows the three, once each and in order, recovered by
//   the client's resubscription from the last offset it saw.
//
//   What Chromium does in offline mode (context.setOffline(true), which is
//   DevTools' network emulation): it does not close a WebSocket that is
//   already open. The socket stays OPEN, with frames held both ways until
//   the context is online again: a ping sent meanwhile gets no reply,
//   publications the server pushes arrive only then (late, all at once), and
//   even ws.close() does not complete (no close event) until then. New connections
//   fail at once with net::ERR_INTERNET_DISCONNECTED. So the page's client is
//   made to give up the held socket with dropConnectionForTest() (the same
//   path as a heartbeat that goes unanswered); its reconnection attempts then
//   really fail while offline, and one made by its backoff after
//   setOffline(false) gets through.
//
// gap: as recovery, but the server keeps only 3 messages per room (the test
//   starts it with such a config) and bob sends five: the server answers
//   alice's resubscription with recovery_impossible, and her page keeps what
//   it showed, adds the newest three from the history and says that some
//   messages are no longer available.
//
// restart: alice and bob are in the room and alice has said something; the
//   script prints `stop the server` and waits for `stopped` on its standard
//   input (the test kills the server); both pages lose their connection and
//   their reconnection attempts are refused; it prints `start the server` and
//   waits for `started` (a new server on the same address and data folder).
//   Both pages reconnect by themselves, bob's next message reaches alice, and
//   carol, who comes after, sees the whole conversation: history is on disk.
//
// Prints one JSON line to stdout (see run() in pages.mjs): what each page
// showed (messages as {offset, user, text, time, markup}, people by name),
// and for recovery the client's events and Chromium's behaviour offline.
// Exits 0 only when everything happened as described; 1 otherwise, 2 on a
// usage error. Everything is bounded (pages.mjs: LIMIT_MS).

import { join as joinRoom, messagesOf, peopleOf, recordClient, send, waitForPeople, waitForText } from './chat-page.mjs';
import { ask, openPage, parseArgs, run, screenshot, unlabelledFields, waitIn } from './pages.mjs';

const { base, scenario, screenshot: shotFile } = parseArgs('chat.mjs', ['two-users', 'recovery', 'gap', 'restart']);
const chatUrl = new URL('/chat', base).href;
const ROOM = 'lobby';
// A message that would be markup if the page used innerHTML.
const HTML_TEXT = '<b>bold?</b> <img src=x onerror="window.__pwned=1"> & <script>window.__pwned=2</script>';

/** Joins `room` (by default the room of these scenarios) as `nick`: see chat-page.mjs. */
const join = (page, nick, room = ROOM) => joinRoom(page, nick, room);

async function twoUsers(browser, errors, report) {
  // alice comes in through the index page.
  const alice = await openPage(browser, base, 'alice', errors);
  report.index = await alice.page.evaluate(() =>
    [...document.querySelectorAll('main a')].map((a) => ({ href: a.getAttribute('href'), text: a.textContent.trim() })),
  );
  await Promise.all([alice.page.waitForURL(chatUrl), alice.page.click('a[href="/chat"]')]);
  report.unlabelled = await unlabelledFields(alice.page);
  const bob = await openPage(browser, chatUrl, 'bob', errors);
  await join(alice.page, 'alice');
  await join(bob.page, 'bob');
  await waitForPeople(alice.page, ['alice', 'bob'], 'alice');
  await waitForPeople(bob.page, ['alice', 'bob'], 'bob');
  report.peopleBefore = { alice: await peopleOf(alice.page), bob: await peopleOf(bob.page) };

  const said = [
    ['alice', alice.page, 'hello bob, alice here'],
    ['bob', bob.page, 'hi alice! bob speaking'],
    ['alice', alice.page, HTML_TEXT],
  ];
  for (const [, page, text] of said) await send(page, text);
  for (const [, , text] of said) {
    await waitForText(alice.page, text, 'alice');
    await waitForText(bob.page, text, 'bob');
  }
  report.sent = said.map(([user, , text]) => ({ user, text }));
  report.messages = { alice: await messagesOf(alice.page), bob: await messagesOf(bob.page) };
  report.pwned = await alice.page.evaluate(() => window.__pwned ?? null) ?? await bob.page.evaluate(() => window.__pwned ?? null);
  await screenshot(alice.page, shotFile);

  // Someone who comes later sees the room's history.
  const carol = await openPage(browser, chatUrl, 'carol', errors);
  await join(carol.page, 'carol');
  await waitForText(carol.page, said[said.length - 1][2], 'carol');
  report.messages.carol = await messagesOf(carol.page);
  await waitForPeople(alice.page, ['alice', 'bob', 'carol'], 'alice');
  await carol.context.close();
  await waitForPeople(alice.page, ['alice', 'bob'], 'alice');

  // bob closes his page: alice's list drops him.
  await bob.context.close();
  await waitForPeople(alice.page, ['alice'], 'alice');
  report.peopleAfterBobLeft = { alice: await peopleOf(alice.page) };

  // alice leaves and goes to another room: empty, and only she is there.
  await alice.page.click('#leave');
  await waitIn(alice.page, 'the join form again', () => !document.getElementById('join').hidden);
  await join(alice.page, 'alice', 'second');
  await waitIn(alice.page, 'the empty room\'s placeholder', () => !document.getElementById('empty').hidden);
  report.secondRoom = {
    room: await alice.page.textContent('#room-name'),
    messages: await messagesOf(alice.page),
    people: await peopleOf(alice.page),
  };
}

/**
 * Takes `who`'s context offline and makes its page's client give up its
 * (held) socket, then waits until two reconnection attempts by the backoff
 * have failed. Returns what Chromium did with the open socket meanwhile.
 */
async function goOffline(who) {
  await who.context.setOffline(true);
  await waitIn(who.page, 'the page to be offline', () => navigator.onLine === false);
  // The open socket is held, not closed: a ping gets no reply (bounded by
  // 1.5 s: waiting for something that does not happen).
  const held = await who.page.evaluate(async () => {
    const client = window.__hub.client;
    const reply = await Promise.race([
      client.request('ping').then(() => 'replied', (e) => `failed: ${e.code}`),
      new Promise((resolve) => setTimeout(() => resolve('no reply within 1.5 s'), 1500)),
    ]);
    return { ping: reply, stateAfter: client.state };
  });
  await who.page.evaluate(() => window.__hub.client.dropConnectionForTest());
  await waitIn(who.page, 'two failed reconnection attempts while offline', () =>
    window.__log.some((e) => e.type === 'state' && e.state === 'closed' && e.attempt >= 3));
  return { socketWhileOffline: held.stateAfter, pingWhileOffline: held.ping };
}

/** alice and bob in the room, alice having said `first`, her client recorded. */
async function aliceAndBob(browser, errors, first) {
  const alice = await openPage(browser, chatUrl, 'alice', errors);
  const bob = await openPage(browser, chatUrl, 'bob', errors);
  await join(alice.page, 'alice');
  await join(bob.page, 'bob');
  await waitForPeople(alice.page, ['alice', 'bob'], 'alice');
  await send(alice.page, first);
  await waitForText(bob.page, first, 'bob');
  await recordClient(alice.page);
  return { alice, bob };
}

async function recovery(browser, errors, report) {
  const { alice, bob } = await aliceAndBob(browser, errors, 'before the outage');
  const offsetBefore = await alice.page.evaluate((ch) => window.__hub.client.lastOffset(ch), `chat:${ROOM}`);
  report.offline = await goOffline(alice);

  const missed = ['missed one', 'missed two', 'missed three'];
  for (const text of missed) await send(bob.page, text);
  report.aliceWhileOffline = (await messagesOf(alice.page)).map((m) => m.text);
  report.statusWhileOffline = await alice.page.textContent('#status-text');
  await screenshot(alice.page, shotFile && shotFile.replace(/(\.png)?$/, '-offline.png'));

  await alice.context.setOffline(false);
  await waitForText(alice.page, missed[missed.length - 1], 'alice');
  await waitIn(alice.page, 'alice\'s page to be connected again', () => document.getElementById('status').dataset.state === 'open');
  // Live messages still come after the recovered ones.
  await send(bob.page, 'after the outage');
  await waitForText(alice.page, 'after the outage', 'alice');
  await waitForPeople(alice.page, ['alice', 'bob'], 'alice');
  await waitForPeople(bob.page, ['alice', 'bob'], 'bob');

  report.offsetBefore = offsetBefore;
  report.messages = { alice: await messagesOf(alice.page), bob: await messagesOf(bob.page) };
  report.log = await alice.page.evaluate(() => window.__log);
  report.stats = await alice.page.evaluate(() => window.__hub.client.stats);
  report.people = { alice: await peopleOf(alice.page), bob: await peopleOf(bob.page) };
  report.notice = await alice.page.evaluate(() => (document.getElementById('notice').hidden ? null : document.getElementById('notice').textContent));
  await screenshot(alice.page, shotFile);
}

async function gap(browser, errors, report) {
  const { alice, bob } = await aliceAndBob(browser, errors, 'before the gap');
  report.offline = await goOffline(alice);
  report.sentWhileOffline = ['gap one', 'gap two', 'gap three', 'gap four', 'gap five'];
  for (const text of report.sentWhileOffline) await send(bob.page, text);

  await alice.context.setOffline(false);
  await waitForText(alice.page, 'gap five', 'alice');
  await waitIn(alice.page, 'the notice of a gap', () => !document.getElementById('notice').hidden);
  report.notice = await alice.page.textContent('#notice');
  await send(bob.page, 'after the gap');
  await waitForText(alice.page, 'after the gap', 'alice');

  report.messages = { alice: await messagesOf(alice.page), bob: await messagesOf(bob.page) };
  report.log = await alice.page.evaluate(() => window.__log);
  report.stats = await alice.page.evaluate(() => window.__hub.client.stats);
  await screenshot(alice.page, shotFile);
}

async function restart(browser, errors, report) {
  const alice = await openPage(browser, chatUrl, 'alice', errors);
  const bob = await openPage(browser, chatUrl, 'bob', errors);
  await join(alice.page, 'alice');
  await join(bob.page, 'bob');
  await waitForPeople(alice.page, ['alice', 'bob'], 'alice');
  await send(alice.page, 'before the restart');
  await waitForText(bob.page, 'before the restart', 'bob');
  await recordClient(alice.page);
  await recordClient(bob.page);

  const refusedTwice = () =>
    window.__log.filter((e) => e.type === 'state' && e.state === 'closed').length >= 2;
  if ((await ask('stop the server')) !== 'stopped') throw new Error('the test did not stop the server');
  await waitIn(alice.page, 'alice\'s page to lose its connection and be refused once', refusedTwice);
  await waitIn(bob.page, 'bob\'s page to lose its connection and be refused once', refusedTwice);
  report.statusWhileStopped = await alice.page.textContent('#status-text');
  if ((await ask('start the server')) !== 'started') throw new Error('the test did not start the server');

  for (const [name, page] of [['alice', alice.page], ['bob', bob.page]]) {
    await waitIn(page, `${name}'s page to reconnect`, () => document.getElementById('status').dataset.state === 'open');
  }
  await waitForPeople(alice.page, ['alice', 'bob'], 'alice');
  await waitForPeople(bob.page, ['alice', 'bob'], 'bob');
  await send(bob.page, 'after the restart');
  await waitForText(alice.page, 'after the restart', 'alice');

  const carol = await openPage(browser, chatUrl, 'carol', errors);
  await join(carol.page, 'carol');
  await waitForText(carol.page, 'after the restart', 'carol');

  report.messages = { alice: await messagesOf(alice.page), bob: await messagesOf(bob.page), carol: await messagesOf(carol.page) };
  report.log = { alice: await alice.page.evaluate(() => window.__log), bob: await bob.page.evaluate(() => window.__log) };
  report.stats = { alice: await alice.page.evaluate(() => window.__hub.client.stats) };
  await screenshot(alice.page, shotFile);
}

await run(async (browser, errors, report) => {
  report.scenario = scenario;
  if (scenario === 'two-users') await twoUsers(browser, errors, report);
  else if (scenario === 'recovery') await recovery(browser, errors, report);
  else if (scenario === 'gap') await gap(browser, errors, report);
  else await restart(browser, errors, report);
});
