// Unit tests of crates/duplex-hub/web/client.js (the pages' HubClient) in node, against a fake
// WebSocket that plays the server: requests and replies, the reconnection
// backoff, the heartbeat, resubscription from the last offset, in-order
// delivery without duplicates, refused subscriptions and recovery_impossible,
// and the rotation through a list of URLs.
//
//   node --test tests/browser/client.test.mjs
//
// Run by crates/duplex-cli/tests/serve_browser.rs; the pages themselves are
// tested in Chromium by chat.mjs and ticker.mjs.

import assert from 'node:assert/strict';
import { test } from 'node:test';

/** Every socket the client opened, newest last. */
const sockets = [];

/** A stand-in for the browser's WebSocket, driven by the test. */
class FakeSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 3;
  constructor(url) {
    this.url = url;
    this.readyState = FakeSocket.CONNECTING;
    /** The requests sent, parsed. */
    this.sent = [];
    sockets.push(this);
  }
  send(text) {
    if (this.readyState !== FakeSocket.OPEN) throw new Error('not open');
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = FakeSocket.CLOSED;
  }
  // ---- what the server does ----
  accept() {
    this.readyState = FakeSocket.OPEN;
    this.onopen?.({});
  }
  refuse() {
    this.readyState = FakeSocket.CLOSED;
    this.onerror?.({});
    this.onclose?.({ code: 1006, reason: '' });
  }
  drop() {
    this.refuse();
  }
  deliver(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
  reply(request, result) {
    this.deliver({ id: request.id, ok: true, result });
  }
  fail(request, code, message = code) {
    this.deliver({ id: request.id, ok: false, error: { code, message } });
  }
}
globalThis.WebSocket = FakeSocket;

const { HubClient, HubError } = await import('../../crates/duplex-hub/web/client.js');

/** Waits until `check()` is truthy (polling every 2 ms, at most 2 s). */
async function until(what, check) {
  const deadline = Date.now() + 2000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  return check();
}

/** The next request with `op` on `socket` not yet looked at. */
async function nextRequest(socket, op) {
  socket.seen ??= new Set();
  const request = await until(`a ${op} request`, () =>
    socket.sent.find((r) => r.op === op && !socket.seen.has(r.id)),
  );
  socket.seen.add(request.id);
  return request;
}

/** A client with short delays, its events, and its connection made. */
async function connected({ url = 'ws://hub.test/ws', ...options } = {}) {
  sockets.length = 0;
  const client = new HubClient(url, {
    info: { name: 'alice' },
    minDelayMs: 20,
    maxDelayMs: 160,
    heartbeatMs: 0,
    requestTimeoutMs: 300,
    ...options,
  });
  const events = [];
  for (const type of ['state', 'message', 'subscribed', 'recovery_impossible', 'join', 'leave']) {
    client.addEventListener(type, (e) => events.push({ type, ...e.detail }));
  }
  client.start();
  const socket = sockets[0];
  socket.accept();
  socket.reply(await nextRequest(socket, 'connect'), { client: 'c1', user: '' });
  await until('open', () => client.state === 'open');
  return { client, socket, events };
}

const messages = (events, channel) =>
  events.filter((e) => e.type === 'message' && (!channel || e.channel === channel));

test('connect carries the info; replies resolve and errors reject with their code', async () => {
  const { client, socket } = await connected();
  assert.deepEqual(socket.sent[0].info, { name: 'alice' });
  assert.equal(client.clientId, 'c1');

  const published = client.publish('chat:lobby', { text: 'hi' });
  const request = await nextRequest(socket, 'publish');
  assert.deepEqual(request.data, { text: 'hi' });
  socket.reply(request, { offset: 7 });
  assert.deepEqual(await published, { offset: 7 });

  const refused = client.publish('ticker:AAPL', {});
  socket.fail(await nextRequest(socket, 'publish'), 'forbidden', 'clients may not publish');
  await assert.rejects(refused, (e) => e instanceof HubError && e.code === 'forbidden');

  // No reply: a timeout.
  await assert.rejects(client.presence('chat:lobby'), (e) => e.code === 'timeout');
  client.close();
});

test('a lost connection rejects what is pending and reconnects with growing, jittered delays', async () => {
  const { client, socket, events } = await connected();
  const pending = client.history('chat:lobby');
  socket.drop();
  await assert.rejects(pending, (e) => e.code === 'disconnected');
  // Requests while not connected fail at once.
  await assert.rejects(client.publish('chat:lobby', {}), (e) => e.code === 'disconnected');

  // Three refused attempts, then one that works.
  for (let i = 1; i <= 3; i++) {
    await until(`attempt ${i}`, () => sockets.length === i + 1);
    sockets[i].refuse();
  }
  await until('attempt 4', () => sockets.length === 5);
  sockets[4].accept();
  const again = await nextRequest(sockets[4], 'connect');
  assert.deepEqual(again.info, { name: 'alice' }, 'connect is sent again, with the same info');
  sockets[4].reply(again, { client: 'c2', user: '' });
  await until('open again', () => client.state === 'open');

  const delays = events.filter((e) => e.type === 'state' && e.state === 'closed').map((e) => e.delayMs);
  assert.equal(delays.length, 4);
  // Ceilings 20, 40, 80, 160 ms; each delay in the upper half of its own.
  [20, 40, 80, 160].forEach((ceiling, i) => {
    assert.ok(delays[i] >= ceiling / 2 && delays[i] <= ceiling, `delay ${i}: ${delays[i]} for ${ceiling}`);
  });
  client.close();
  assert.equal(client.state, 'closed');
});

test('after a reconnection, missed publications come first, in order, each once', async () => {
  const { client, socket, events } = await connected();
  const subscribed = client.subscribe('chat:lobby');
  socket.reply(await nextRequest(socket, 'subscribe'), { offset: 40 });
  assert.deepEqual(await subscribed, { offset: 40 });
  socket.deliver({ push: 'message', channel: 'chat:lobby', offset: 41, time: 1, data: { text: 'a' } });
  assert.equal(client.lastOffset('chat:lobby'), 41);

  socket.drop();
  await until('a new socket', () => sockets.length === 2);
  const next = sockets[1];
  next.accept();
  next.reply(await nextRequest(next, 'connect'), { client: 'c2', user: '' });
  const resubscribe = await nextRequest(next, 'subscribe');
  assert.deepEqual(resubscribe.since, { offset: 41 });
  // A live publication before the reply waits for the recovered ones; those
  // already seen are dropped.
  next.deliver({ push: 'message', channel: 'chat:lobby', offset: 45, time: 5, data: { text: 'e' } });
  next.reply(resubscribe, {
    offset: 44,
    publications: [41, 42, 43, 44].map((offset) => ({ offset, time: offset, data: { text: String(offset) } })),
  });
  next.deliver({ push: 'message', channel: 'chat:lobby', offset: 45, time: 5, data: { text: 'e' } });
  next.deliver({ push: 'message', channel: 'chat:lobby', offset: 46, time: 6, data: { text: 'f' } });

  await until('the resubscription', () => events.some((e) => e.type === 'subscribed' && e.resumed));
  const got = messages(events, 'chat:lobby').map((e) => [e.offset, e.recovered]);
  assert.deepEqual(got, [[41, false], [42, true], [43, true], [44, true], [45, false], [46, false]]);
  assert.equal(client.stats.duplicates, 2);
  const resumed = events.find((e) => e.type === 'subscribed' && e.resumed);
  assert.equal(resumed.recovered, 3);
  client.close();
});

test('recovery_impossible tells the app and subscribes afresh', async () => {
  const { client, socket, events } = await connected();
  client.subscribe('chat:lobby');
  socket.reply(await nextRequest(socket, 'subscribe'), { offset: 3 });
  socket.drop();
  await until('a new socket', () => sockets.length === 2);
  const next = sockets[1];
  next.accept();
  next.reply(await nextRequest(next, 'connect'), { client: 'c2', user: '' });
  const withSince = await nextRequest(next, 'subscribe');
  assert.deepEqual(withSince.since, { offset: 3 });
  next.fail(withSince, 'recovery_impossible', 'history no longer holds offset 4');
  const fresh = await nextRequest(next, 'subscribe');
  assert.equal(fresh.since, undefined);
  next.reply(fresh, { offset: 2000 });
  await until('subscribed', () => events.some((e) => e.type === 'subscribed'));
  assert.deepEqual(
    events.filter((e) => e.type === 'recovery_impossible').map((e) => [e.channel, e.offset]),
    [['chat:lobby', 3]],
  );
  assert.equal(client.lastOffset('chat:lobby'), 2000);
  client.close();
});

test('an unsubscribed channel is not subscribed again on reconnection, and its pushes are ignored', async () => {
  const { client, socket, events } = await connected();
  client.subscribe('ticker:AAPL');
  client.subscribe('ticker:GOOG');
  socket.reply(await nextRequest(socket, 'subscribe'), { offset: 1 });
  socket.reply(await nextRequest(socket, 'subscribe'), { offset: 1 });
  const unsubscribed = client.unsubscribe('ticker:GOOG');
  socket.reply(await nextRequest(socket, 'unsubscribe'), {});
  await unsubscribed;
  socket.deliver({ push: 'message', channel: 'ticker:GOOG', offset: 2, time: 2, data: {} });
  assert.equal(messages(events, 'ticker:GOOG').length, 0);
  assert.deepEqual(client.channels(), ['ticker:AAPL']);

  socket.drop();
  await until('a new socket', () => sockets.length === 2);
  sockets[1].accept();
  sockets[1].reply(await nextRequest(sockets[1], 'connect'), { client: 'c2', user: '' });
  const again = await nextRequest(sockets[1], 'subscribe');
  assert.equal(again.channel, 'ticker:AAPL');
  // The client sends every resubscription at once, on the connect reply.
  assert.equal(sockets[1].sent.filter((r) => r.op === 'subscribe').length, 1);
  client.close();
});

test('join and leave pushes become events', async () => {
  const { client, socket, events } = await connected();
  client.subscribe('chat:lobby');
  socket.reply(await nextRequest(socket, 'subscribe'), { offset: 0 });
  const bob = { client: 'c9', user: '', info: { name: 'bob' } };
  socket.deliver({ push: 'join', channel: 'chat:lobby', client: bob });
  socket.deliver({ push: 'leave', channel: 'chat:lobby', client: bob });
  assert.deepEqual(
    events.filter((e) => e.type === 'join' || e.type === 'leave').map((e) => [e.type, e.client.info.name]),
    [['join', 'bob'], ['leave', 'bob']],
  );
  client.close();
});

test('a ping without a reply counts as a lost connection', async () => {
  const { client, socket, events } = await connected({ heartbeatMs: 30, requestTimeoutMs: 60 });
  const ping = await nextRequest(socket, 'ping');
  assert.deepEqual(Object.keys(ping).sort(), ['id', 'op']);
  await until('the connection given up', () =>
    events.some((e) => e.type === 'state' && e.state === 'closed' && e.reason === 'no reply to a ping'));
  assert.equal(socket.readyState, FakeSocket.CLOSED, 'the silent socket is closed');
  await until('a new attempt', () => sockets.length === 2);
  client.close();
});

test('a refused subscription rejects, is reported, and is forgotten', async () => {
  const { client, socket, events } = await connected();
  const events2 = [];
  client.addEventListener('subscribe_error', (e) => events2.push(e.detail));
  const refused = client.subscribe('chat:no room');
  socket.fail(await nextRequest(socket, 'subscribe'), 'bad_channel', 'a space is not allowed');
  await assert.rejects(refused, (e) => e.code === 'bad_channel');
  assert.deepEqual(events2.map((d) => [d.channel, d.error.code]), [['chat:no room', 'bad_channel']]);
  assert.deepEqual(client.channels(), []);
  assert.equal(events.filter((e) => e.type === 'subscribed').length, 0);
  client.close();
});

test('a first subscription starts at the current offset: older publications are for history()', async () => {
  const { client, socket, events } = await connected();
  client.subscribe('chat:lobby');
  const request = await nextRequest(socket, 'subscribe');
  assert.equal(request.since, undefined);
  // Pushed before the reply: offset 10 is in the history, 11 is new.
  socket.deliver({ push: 'message', channel: 'chat:lobby', offset: 10, time: 10, data: {} });
  socket.deliver({ push: 'message', channel: 'chat:lobby', offset: 11, time: 11, data: {} });
  socket.reply(request, { offset: 10 });
  await until('subscribed', () => events.some((e) => e.type === 'subscribed'));
  assert.deepEqual(messages(events).map((e) => e.offset), [11]);
  client.close();
});

test('requests before the connection is open fail at once; subscriptions wait for it', async () => {
  sockets.length = 0;
  const client = new HubClient('ws://hub.test/ws', { heartbeatMs: 0, requestTimeoutMs: 300 });
  await assert.rejects(client.history('chat:lobby'), (e) => e.code === 'disconnected');
  const subscribed = client.subscribe('chat:lobby');
  client.start();
  const socket = sockets[0];
  socket.accept();
  const connect = await nextRequest(socket, 'connect');
  assert.equal(connect.info, undefined, 'no info given, none sent');
  assert.equal(socket.sent.filter((r) => r.op === 'subscribe').length, 0, 'not before the connect reply');
  socket.reply(connect, { client: 'c1', user: '' });
  socket.reply(await nextRequest(socket, 'subscribe'), { offset: 0 });
  assert.deepEqual(await subscribed, { offset: 0 });
  client.close();
});

const A = 'ws://a.hub.test/ws';
const B = 'ws://b.hub.test/ws';
const C = 'wss://c.hub.test/ws';

/** The `closed` state events with a next attempt, as [url, delayMs]. */
const retries = (events) =>
  events.filter((e) => e.type === 'state' && e.state === 'closed' && e.delayMs != null).map((e) => [e.url, e.delayMs]);

test('with two URLs, a lost connection moves to the other one and recovers from the last offset seen', async () => {
  const { client, socket, events } = await connected({ url: [A, B] });
  assert.equal(socket.url, A);
  assert.equal(client.url, A);
  assert.equal(events.find((e) => e.type === 'state' && e.state === 'open').url, A);
  const subscribed = client.subscribe('chat:lobby');
  socket.reply(await nextRequest(socket, 'subscribe'), { offset: 40 });
  await subscribed;
  socket.deliver({ push: 'message', channel: 'chat:lobby', offset: 41, time: 41, data: {} });
  socket.deliver({ push: 'message', channel: 'chat:lobby', offset: 42, time: 42, data: {} });
  assert.equal(client.lastOffset('chat:lobby'), 42);

  socket.drop();
  assert.equal(client.url, B, 'the next attempt is on B');
  assert.deepEqual(retries(events).map(([url]) => url), [B]);
  await until('a socket on B', () => sockets.length === 2);
  const next = sockets[1];
  assert.equal(next.url, B);
  next.accept();
  next.reply(await nextRequest(next, 'connect'), { client: 'c2', user: '' });
  const resubscribe = await nextRequest(next, 'subscribe');
  assert.equal(resubscribe.channel, 'chat:lobby');
  assert.deepEqual(resubscribe.since, { offset: 42 }, 'the last offset seen on A');
  next.reply(resubscribe, {
    offset: 43,
    publications: [42, 43].map((offset) => ({ offset, time: offset, data: {} })),
  });
  await until('the resubscription', () => events.some((e) => e.type === 'subscribed' && e.resumed));
  next.deliver({ push: 'message', channel: 'chat:lobby', offset: 44, time: 44, data: {} });
  next.deliver({ push: 'message', channel: 'chat:lobby', offset: 44, time: 44, data: {} });
  next.deliver({ push: 'message', channel: 'chat:lobby', offset: 45, time: 45, data: {} });

  assert.deepEqual(
    messages(events, 'chat:lobby').map((e) => [e.offset, e.recovered]),
    [[41, false], [42, false], [43, true], [44, false], [45, false]],
  );
  assert.equal(client.stats.duplicates, 2, 'offset 42 recovered again and offset 44 pushed twice');
  assert.equal(client.url, B, 'an open connection stays on its URL');
  assert.equal(events.filter((e) => e.type === 'state' && e.state === 'open').at(-1).url, B);
  client.close();
  assert.equal(client.url, B);
});

test('the rotation wraps around: A, then B, then A again', async () => {
  const { client, socket, events } = await connected({ url: [A, B] });
  socket.drop();
  await until('a socket on B', () => sockets.length === 2);
  assert.equal(sockets[1].url, B);
  sockets[1].refuse();
  await until('a socket on A again', () => sockets.length === 3);
  assert.equal(sockets[2].url, A);
  sockets[2].accept();
  sockets[2].reply(await nextRequest(sockets[2], 'connect'), { client: 'c3', user: '' });
  await until('open on A', () => client.state === 'open');
  assert.equal(client.url, A);
  assert.deepEqual(retries(events).map(([url]) => url), [B, A]);
  assert.deepEqual(
    events.filter((e) => e.type === 'state' && e.state === 'connecting').map((e) => e.url),
    [A, B, A],
  );
  client.close();
});

test('with several URLs, each is first tried after the minimum delay; the backoff grows once per failed round', async () => {
  const { client, socket, events } = await connected({ url: [A, B, C] });
  socket.drop();
  // Six refused attempts (B, C, A, B, C, A), then one on B that works.
  for (let i = 1; i <= 6; i++) {
    await until(`attempt ${i}`, () => sockets.length === i + 1);
    sockets[i].refuse();
  }
  await until('attempt 7', () => sockets.length === 8);
  assert.deepEqual(sockets.map((s) => s.url), [A, B, C, A, B, C, A, B]);
  sockets[7].accept();
  sockets[7].reply(await nextRequest(sockets[7], 'connect'), { client: 'c2', user: '' });
  await until('open again', () => client.state === 'open');

  const got = retries(events);
  assert.deepEqual(got.map(([url]) => url), [B, C, A, B, C, A, B]);
  // minDelayMs 20: ceilings of 20 ms for the first round (B, C and A again),
  // 40 for the second, then 80; each delay in the upper half of its own.
  [20, 20, 20, 40, 40, 40, 80].forEach((ceiling, i) => {
    const delay = got[i][1];
    assert.ok(delay >= ceiling / 2 && delay <= ceiling, `delay ${i}: ${delay} for ${ceiling}`);
  });

  // Once open, the count starts again: the next loss waits the minimum delay.
  sockets[7].drop();
  assert.deepEqual(retries(events).at(-1)[0], C);
  assert.ok(retries(events).at(-1)[1] <= 20);
  client.close();
});

test('a list of URLs must be non-empty and hold only strings', () => {
  assert.throws(() => new HubClient([]), (e) => e instanceof TypeError && /empty/.test(e.message));
  assert.throws(() => new HubClient([42]), (e) => e instanceof TypeError && /url\[0\] is not a string/.test(e.message));
  assert.throws(() => new HubClient([A, null]), (e) => e instanceof TypeError && /url\[1\]/.test(e.message));
  assert.equal(new HubClient([A]).url, A);
  assert.equal(new HubClient(A).url, A);
});

test('a single URL in a list behaves as the string form', async () => {
  const { client, socket, events } = await connected({ url: [A] });
  socket.drop();
  await until('a new socket', () => sockets.length === 2);
  sockets[1].refuse();
  await until('a third socket', () => sockets.length === 3);
  assert.deepEqual(sockets.map((s) => s.url), [A, A, A]);
  const got = retries(events);
  [20, 40].forEach((ceiling, i) => {
    assert.ok(got[i][1] >= ceiling / 2 && got[i][1] <= ceiling, `delay ${i}: ${got[i][1]} for ${ceiling}`);
  });
  client.close();
});

test('getToken gives the token of every connect and of a refresh when the server asks', async () => {
  const given = [];
  let n = 0;
  const getToken = async () => {
    n++;
    given.push(`t${n}`);
    return `t${n}`;
  };
  const { client, socket } = await connected({ getToken, token: 'ignored' });
  assert.equal(socket.sent[0].token, 't1', 'getToken wins over token');
  const refreshes = [];
  client.addEventListener('refresh', (e) => refreshes.push(e.detail));

  socket.deliver({ push: 'refresh', expires_in: 25 });
  const refresh = await nextRequest(socket, 'refresh');
  assert.equal(refresh.token, 't2');
  socket.reply(refresh, { expires_in: 60 });
  await until('the refresh event', () => refreshes.length === 1);
  assert.deepEqual(refreshes[0], { expiresIn: 25, refreshed: true, error: null });
  assert.equal(client.stats.refreshes, 1);
  assert.equal(client.clientId, 'c1', 'the same connection');

  // Refused: said so, and the connection waits for the server's close.
  socket.deliver({ push: 'refresh', expires_in: 3 });
  socket.fail(await nextRequest(socket, 'refresh'), 'forbidden');
  await until('the second refresh event', () => refreshes.length === 2);
  assert.equal(refreshes[1].refreshed, false);
  assert.equal(refreshes[1].error.code, 'forbidden');

  // Closed for the expired token: the reconnection asks for a fresh one.
  socket.onclose?.({ code: 4001, reason: 'token expired' });
  await until('a new socket', () => sockets.length === 2);
  sockets[1].accept();
  const connect = await nextRequest(sockets[1], 'connect');
  assert.equal(connect.token, 't4');
  assert.deepEqual(given, ['t1', 't2', 't3', 't4']);
  client.close();
});

test('a private subscription takes its token from getToken, again when it expires', async () => {
  const { client, socket, events } = await connected();
  const unsubscribed = [];
  client.addEventListener('unsubscribed', (e) => unsubscribed.push(e.detail));
  let n = 0;
  const subscribed = client.subscribe('dm:a', { getToken: async (channel) => `${channel}#${++n}` });
  const first = await nextRequest(socket, 'subscribe');
  assert.equal(first.token, 'dm:a#1');
  socket.reply(first, { offset: 4 });
  await subscribed;
  socket.deliver({ push: 'message', channel: 'dm:a', offset: 5, time: 5, data: 'x' });

  socket.deliver({ push: 'unsubscribe', channel: 'dm:a', reason: 'the subscription token expired' });
  const again = await nextRequest(socket, 'subscribe');
  assert.equal(again.token, 'dm:a#2');
  assert.deepEqual(again.since, { offset: 5 });
  socket.reply(again, { offset: 6, publications: [{ offset: 6, time: 6, data: 'y' }] });
  await until('the resubscription', () => events.some((e) => e.type === 'subscribed' && e.resumed));
  assert.deepEqual(messages(events, 'dm:a').map((e) => e.offset), [5, 6]);

  // Any other reason: the channel is gone.
  client.subscribe('chat:b');
  socket.reply(await nextRequest(socket, 'subscribe'), { offset: 0 });
  socket.deliver({ push: 'unsubscribe', channel: 'chat:b', reason: 'the refreshed token does not allow the channel' });
  await until('unsubscribed', () => unsubscribed.length === 1);
  assert.equal(unsubscribed[0].channel, 'chat:b');
  assert.deepEqual(client.channels(), ['dm:a']);
  assert.equal(unsubscribed.length, 1, 'dm:a was not given up');
  client.close();
});
