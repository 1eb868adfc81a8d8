// The chat page: pick a nickname and a room (channel `chat:<room>`), see the
// room's recent history, who is in the room, and messages as they come.
// Messages are `{"user": "<nick>", "text": "..."}`. Everything from the
// network is put on the page with textContent, never as HTML.
//
// `?nodes=ws://a:8080/ws,ws://b:8080/ws` (ws:// or wss:// URLs, comma-
// separated) connects to those `duplex serve` nodes in turn instead of the
// page's own `/ws`; the parameter is ignored, with a console warning, if any
// entry is not such a URL.

import { HubClient, describeState, hubUrl } from '/static/client.js';

const HISTORY_LIMIT = 50;
const ROOM_RE = /^[A-Za-z0-9_-]{1,32}$/;

const $ = (id) => document.getElementById(id);
const els = {
  status: $('status'),
  statusText: $('status-text'),
  retry: $('retry'),
  join: $('join'),
  joinForm: $('join-form'),
  nick: $('nick'),
  room: $('room'),
  roomView: $('room-view'),
  roomName: $('room-name'),
  me: $('me'),
  leave: $('leave'),
  messages: $('messages'),
  empty: $('empty'),
  people: $('people'),
  peopleCount: $('people-count'),
  sendForm: $('send-form'),
  text: $('text'),
  send: $('send'),
  error: $('error'),
  notice: $('notice'),
};

/** The current room, while joined. */
let session = null;

// For tests and for the console: the client of the current room.
window.__hub = { client: null, page: 'chat' };

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fullTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** The connection indicator in the top bar (with a countdown while closed). */
let countdown = null;
function showState(detail, client) {
  const { text, retry } = describeState(detail, client);
  els.status.dataset.state = detail.state;
  els.statusText.textContent = text;
  els.retry.hidden = !retry;
  clearTimeout(countdown);
  countdown = retry ? setTimeout(() => showState(detail, client), 1000) : null;
}

function showError(text) {
  els.error.textContent = text;
  els.error.hidden = !text;
}

// ---- messages ----

/** Adds one publication to the list, in offset order, once. */
function addMessage(pub) {
  if (!session || session.shown.has(pub.offset)) return;
  const data = pub.data && typeof pub.data === 'object' ? pub.data : {};
  const user = typeof data.user === 'string' ? data.user : 'someone';
  const text = typeof data.text === 'string' ? data.text : JSON.stringify(pub.data);

  const li = document.createElement('li');
  li.className = 'message';
  li.dataset.offset = String(pub.offset);
  if (user === session.nick) li.classList.add('mine');

  const head = document.createElement('div');
  head.className = 'message-head';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = user;
  const when = document.createElement('time');
  when.className = 'when';
  const date = new Date(typeof pub.time === 'number' ? pub.time : Date.now());
  when.dateTime = date.toISOString();
  when.textContent = timeFormat.format(date);
  when.title = fullTimeFormat.format(date);
  head.append(who, when);

  const body = document.createElement('p');
  body.className = 'text';
  body.textContent = text;
  li.append(head, body);

  // Usually the newest: appended. History loaded after live messages goes
  // before them.
  const pane = els.messages.parentElement;
  const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
  let before = null;
  for (let node = els.messages.lastElementChild; node; node = node.previousElementSibling) {
    if (Number(node.dataset.offset) < pub.offset) break;
    before = node;
  }
  els.messages.insertBefore(li, before);
  session.shown.add(pub.offset);
  els.empty.hidden = true;
  if (atBottom || user === session.nick) pane.scrollTop = pane.scrollHeight;
}

function clearMessages() {
  els.messages.replaceChildren();
  if (session) session.shown.clear();
  els.empty.hidden = false;
}

async function loadHistory() {
  const s = session;
  // Screen readers: the history arrives as one batch, not as news.
  els.messages.setAttribute('aria-busy', 'true');
  try {
    const result = await s.client.history(s.channel, { limit: HISTORY_LIMIT });
    if (s !== session) return;
    for (const pub of result.publications || []) addMessage(pub);
    els.messages.parentElement.scrollTop = els.messages.parentElement.scrollHeight;
  } catch (e) {
    if (s === session) showError(`Could not load the history: ${e.message}`);
  } finally {
    els.messages.removeAttribute('aria-busy');
  }
}

// ---- presence ----

function nameOf(client) {
  const name = client?.info?.name;
  return typeof name === 'string' && name ? name : client?.user || 'anonymous';
}

/** Shows each name once (a person may have more than one connection). */
function renderPeople() {
  if (!session) return;
  const byName = new Map();
  for (const [id, client] of session.people) {
    const name = nameOf(client);
    const me = id === session.client.clientId;
    byName.set(name, byName.get(name) || me);
  }
  const names = [...byName.keys()].sort((a, b) => a.localeCompare(b));
  els.people.replaceChildren(
    ...names.map((name) => {
      const li = document.createElement('li');
      li.dataset.name = name;
      const dot = document.createElement('span');
      dot.className = 'dot online';
      dot.setAttribute('aria-hidden', 'true');
      const label = document.createElement('span');
      label.textContent = name;
      li.append(dot, label);
      if (byName.get(name)) {
        const you = document.createElement('span');
        you.className = 'muted';
        you.textContent = ' (you)';
        li.append(you);
      }
      return li;
    }),
  );
  els.peopleCount.textContent = String(names.length);
}

async function loadPresence() {
  const s = session;
  try {
    const result = await s.client.presence(s.channel);
    if (s !== session) return;
    s.people = new Map((result.clients || []).map((c) => [c.client, c]));
    renderPeople();
  } catch (e) {
    if (s === session && e.code !== 'disconnected') showError(`Could not load who is here: ${e.message}`);
  }
}

// ---- joining and leaving ----

/** The hub URLs of the page's `?nodes=` list, if valid, else its own `/ws`. */
function hubUrls() {
  const nodes = new URLSearchParams(location.search).get('nodes');
  if (!nodes) return hubUrl();
  const urls = nodes.split(',').map((u) => u.trim());
  const bad = urls.filter((u) => !/^wss?:\/\/\S+$/i.test(u));
  if (bad.length) {
    console.warn(`?nodes= ignored: not ws:// or wss:// URLs: ${bad.map((u) => JSON.stringify(u)).join(', ')}`);
    return hubUrl();
  }
  return urls;
}

function join(nick, room) {
  const channel = `chat:${room}`;
  const client = new HubClient(hubUrls(), { info: { name: nick } });
  session = { nick, room, channel, client, shown: new Set(), people: new Map() };
  window.__hub.client = client;

  client.addEventListener('state', (e) => {
    showState(e.detail, client);
    els.roomView.dataset.connection = e.detail.state;
    els.send.disabled = e.detail.state !== 'open';
  });
  client.addEventListener('message', (e) => {
    if (e.detail.channel === channel) addMessage(e.detail);
  });
  client.addEventListener('join', (e) => {
    if (e.detail.channel !== channel || !session) return;
    session.people.set(e.detail.client.client, e.detail.client);
    renderPeople();
  });
  client.addEventListener('leave', (e) => {
    if (e.detail.channel !== channel || !session) return;
    session.people.delete(e.detail.client.client);
    renderPeople();
  });
  client.addEventListener('subscribed', (e) => {
    // After a reconnection: who came and went meanwhile is not replayed.
    if (e.detail.channel === channel && e.detail.resumed) loadPresence();
  });
  client.addEventListener('recovery_impossible', (e) => {
    if (e.detail.channel !== channel) return;
    // The server no longer holds all that was missed: what is shown stays,
    // the newest of the history joins it, and the page says there is a gap.
    const reload = (s) => {
      if (s.detail.channel !== channel) return;
      client.removeEventListener('subscribed', reload);
      if (session?.client !== client) return;
      els.notice.textContent =
        'Some messages sent while you were disconnected are no longer kept by the server; ' +
        'the newest ones are shown.';
      els.notice.hidden = false;
      loadHistory();
      loadPresence();
    };
    client.addEventListener('subscribed', reload);
  });
  els.retry.onclick = () => client.reconnectNow();

  els.roomName.textContent = room;
  els.me.textContent = `as ${nick}`;
  els.join.hidden = true;
  els.roomView.hidden = false;
  clearMessages();
  showError('');
  els.notice.hidden = true;
  document.title = `#${room} · Chat · duplex`;
  const url = new URL(location.href);
  url.searchParams.set('room', room);
  history.replaceState(null, '', url);

  client.start();
  client
    .subscribe(channel)
    .then(() => {
      if (session?.client !== client) return;
      loadHistory();
      loadPresence();
      els.text.focus();
    })
    .catch((e) => {
      if (session?.client === client) showError(`Could not join #${room}: ${e.message}`);
    });
}

function leave() {
  if (!session) return;
  session.client.close();
  session = null;
  window.__hub.client = null;
  els.roomView.hidden = true;
  els.join.hidden = false;
  els.people.replaceChildren();
  els.messages.replaceChildren();
  showState({ state: 'idle' });
  document.title = 'Chat · duplex';
  els.nick.focus();
}

els.joinForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const nick = els.nick.value.trim();
  const room = els.room.value.trim() || 'lobby';
  if (!nick) {
    els.nick.focus();
    return;
  }
  if (!ROOM_RE.test(room)) {
    els.room.setCustomValidity('Letters, digits, - and _ only (at most 32).');
    els.room.reportValidity();
    return;
  }
  try {
    localStorage.setItem('duplex.nick', nick);
  } catch {
    // Storage may be off; the nickname is then asked again next time.
  }
  join(nick, room);
});
els.room.addEventListener('input', () => els.room.setCustomValidity(''));
els.leave.addEventListener('click', leave);

els.sendForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const s = session;
  const text = els.text.value.trim();
  if (!s || !text) return;
  els.send.disabled = true;
  try {
    // Our own message comes back as a push, like everyone's: that shows it.
    await s.client.publish(s.channel, { user: s.nick, text });
    if (s !== session) return;
    showError('');
    if (els.text.value.trim() === text) els.text.value = '';
  } catch (err) {
    if (s === session) showError(`Not sent (${err.code || 'error'}): ${err.message}`);
  } finally {
    if (s === session) els.send.disabled = s.client.state !== 'open';
    els.text.focus();
  }
});

// Start: prefill from the address (?room=) and the last nickname used.
{
  const params = new URLSearchParams(location.search);
  const room = params.get('room');
  if (room && ROOM_RE.test(room)) els.room.value = room;
  try {
    els.nick.value = localStorage.getItem('duplex.nick') || '';
  } catch {
    // No storage: nothing to prefill.
  }
  (els.nick.value ? els.room : els.nick).focus();
}
