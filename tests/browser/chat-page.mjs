// Driving the chat page (/chat, crates/duplex-hub/web/chat.js) as a person would, shared by
// chat.mjs (one `duplex serve`) and cluster.mjs (two nodes over Redis):
// joining a room through the form, sending from the composer, waiting for
// messages and people to show, reading what the page shows, and recording
// what the page's client (window.__hub.client, crates/duplex-hub/web/client.js) does.

import { waitIn } from './pages.mjs';

/** Fills the join form and waits until the page is connected and lists `nick`. */
export async function join(page, nick, room = 'lobby') {
  await page.fill('#nick', nick);
  await page.fill('#room', room);
  await page.click('#join-form button[type=submit]');
  await waitIn(page, `${nick}'s page to connect`, () => document.getElementById('status').dataset.state === 'open');
  await waitIn(page, `${nick} in ${nick}'s own list of people`, (n) =>
    [...document.querySelectorAll('#people li')].some((li) => li.dataset.name === n), nick);
}

/**
 * Sends `text` from the composer and waits until the page shows it. Waits
 * first for the Send button to be enabled: the page disables it while its
 * previous publish waits for the reply (which may come after the message's
 * own push), and pressing Enter in a form whose submit button is disabled
 * submits nothing.
 */
export async function send(page, text) {
  await waitIn(page, `the Send button to be enabled before sending ${JSON.stringify(text)}`, () =>
    !document.getElementById('send').disabled);
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
  await waitForText(page, text, 'its sender');
}

/** Waits until the message list of `page` has a message with `text`. */
export function waitForText(page, text, who) {
  return waitIn(page, `${JSON.stringify(text)} on ${who}'s page`, (t) =>
    [...document.querySelectorAll('#messages li .text')].some((p) => p.textContent === t), text);
}

/** The messages a page shows, top to bottom. */
export function messagesOf(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#messages li')].map((li) => ({
      offset: Number(li.dataset.offset),
      user: li.querySelector('.who')?.textContent,
      text: li.querySelector('.text')?.textContent,
      time: li.querySelector('time')?.dateTime,
      // Elements inside the text: any means data became markup.
      markup: li.querySelector('.text')?.children.length ?? -1,
    })),
  );
}

/** The names in a page's list of people. */
export function peopleOf(page) {
  return page.evaluate(() => [...document.querySelectorAll('#people li')].map((li) => li.dataset.name));
}

/** Waits until the page lists exactly `names` (in any order). */
export function waitForPeople(page, names, who) {
  return waitIn(page, `${who}'s list of people to be ${names.join(', ')}`, (want) => {
    const have = [...document.querySelectorAll('#people li')].map((li) => li.dataset.name).sort();
    return have.length === want.length && have.every((n, i) => n === want[i]);
  }, [...names].sort());
}

/**
 * Records what the page's client does from now on in `window.__log`: state
 * changes (with the URL tried or in use), messages (with whether they were
 * recovered), (re)subscriptions and recovery_impossible.
 */
export function recordClient(page) {
  return page.evaluate(() => {
    const client = window.__hub.client;
    window.__log = [];
    for (const type of ['state', 'message', 'subscribed', 'recovery_impossible']) {
      client.addEventListener(type, (e) => {
        const d = e.detail;
        window.__log.push(
          type === 'message'
            ? { type, offset: d.offset, text: d.data?.text, recovered: d.recovered }
            : type === 'state'
              ? { type, state: d.state, url: d.url, attempt: d.attempt, delayMs: d.delayMs ?? null, reason: d.reason ?? null }
              : { type, ...d },
        );
      });
    }
  });
}
