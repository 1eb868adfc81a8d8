// The browser client of the duplex hub (`duplex serve`), over the standard
// WebSocket API. Used by the chat and ticker pages; no dependencies.
//
//   import { HubClient, hubUrl } from '/static/client.js';
//   const client = new HubClient(hubUrl(), { info: { name: 'alice' } });
//   // or, for several `duplex serve` nodes: new HubClient(['wss://a/ws', 'wss://b/ws'])
//   client.addEventListener('message', (e) => console.log(e.detail));
//   client.start();
//   await client.subscribe('chat:lobby');
//   await client.publish('chat:lobby', { user: 'alice', text: 'hi' });
//
// Requests carry an id and get a Promise, settled by the reply with that id:
// resolved with `result`, or rejected with a HubError whose `.code` is the
// server's error code. Codes made here: `timeout` (no reply in time),
// `disconnected` (the connection was lost before the reply, or there is none).
//
// Events (an EventTarget; each event's `detail`):
//   state               {state, delayMs, attempt, reason, url}: `connecting`,
//                       `open` (the connect reply arrived), `closed` (with the
//                       delay before the next attempt, or null once close() was
//                       called); `url` is the URL being tried or in use, and in
//                       `closed` the one the next attempt uses
//   message             {channel, offset, time, data, recovered}: a publication,
//                       recovered ones (missed while disconnected) first, in
//                       offset order, each offset once
//   join, leave         {channel, client: {client, user, info}}
//   subscribed          {channel, offset, resumed, recovered}: a subscription is
//                       (re)made; `resumed` after a reconnect, with the number of
//                       publications recovered (delivered, not seen before)
//   recovery_impossible {channel, offset}: the server's history no longer holds
//                       what was missed; the channel is subscribed afresh and the
//                       app should reload its history
//   subscribe_error     {channel, error}: the server refused a subscription
//   unsubscribed        {channel, reason}: the server ended a subscription (the
//                       refreshed token no longer allows the channel, or its
//                       subscription token expired with no getToken to renew
//                       it); the channel is forgotten
//   refresh             {expiresIn, refreshed, error}: the server said the
//                       connection's token expires in `expiresIn` s; `refreshed`
//                       once a fresh token from getToken() was accepted (else
//                       `error`, and the server closes the connection with 4001
//                       at the token's exp, after which the client reconnects
//                       with getToken()'s next token)
//   error               {error}: a reply without an id, or an unreadable message
//
// Tokens: `token` is sent with every `connect`; `getToken` (an async function
// returning a JWT) is called instead for the first connect, on every
// reconnect, and when the server pushes `refresh` (the token expires soon),
// whereupon the client sends `{"op":"refresh","token":...}` by itself and the
// connection goes on (same client id, same subscriptions). In a private
// namespace, subscribe(channel, {getToken}) gets a subscription token for the
// channel from its own getToken on every (re)subscription, and again when the
// server ends the subscription because that token expired (resubscribing with
// `since`, so nothing is missed).
//
// Reconnects by itself with exponential backoff and jitter (0.5 s doubling to
// 10 s by default); on each connection it sends `connect` again (with the same
// info and token) and subscribes every channel again with
// `since: {offset: <last offset seen>}`. A ping every `heartbeatMs` without a
// reply in `requestTimeoutMs` counts as a lost connection.
//
// Given a list of URLs, the first connection tries urls[0], and each lost
// connection or failed attempt moves to the next URL (wrapping around); an
// open connection stays on its URL until it is lost. The backoff then counts
// rounds, not attempts: each URL of the first round after a loss is tried
// after at most `minDelayMs` (jittered as always), and the delay doubles only
// once a whole round of URLs has failed (with 2 URLs and the defaults: 0.5,
// 0.5, 1, 1, 2, 2 s...). With one URL that is the backoff above. The last
// offsets are kept per channel, not per URL: nodes that share an engine
// (`duplex serve --redis`) share each channel's offsets, so the
// resubscription on another node recovers exactly what was missed.

/** An error reply of the hub, or a local failure (`timeout`, `disconnected`). */
export class HubError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'HubError';
    this.code = code;
  }
}

/** The hub's WebSocket URL on the page's own origin. */
export function hubUrl(path = '/ws') {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path;
}

export class HubClient extends EventTarget {
  #urls;
  #urlIndex = 0;
  #info;
  #token;
  #getToken;
  #ws = null;
  #nextId = 1;
  #pending = new Map(); // id -> {resolve, reject, timer, op}
  #subs = new Map(); // channel -> subscription (see subscribe())
  #attempt = 0;
  #retryTimer = null;
  #heartbeatTimer = null;
  #stopped = true;

  /** `idle` before start(), then `connecting`, `open` or `closed`. */
  state = 'idle';
  /** The server-assigned client id and user id of the current connection. */
  clientId = null;
  user = null;
  /** When the next connection attempt is due (ms since epoch), while closed. */
  retryAt = null;
  /** Counters, for the status line and for tests. */
  stats = { connections: 0, delivered: 0, recovered: 0, duplicates: 0, refreshes: 0 };

  /**
   * @param {string | string[]} url ws:// or wss:// URL of the hub (see
   *   hubUrl()), or a non-empty list of them, tried in turn (see above)
   * @param {object} [options]
   * @param {object} [options.info] free JSON shown to others in presence
   * @param {string} [options.token] a JWT, sent with `connect`
   * @param {() => Promise<string>} [options.getToken] returns a fresh JWT:
   *   called for the first connect, on every reconnect and on a `refresh`
   *   push (then sent with `op: refresh`); wins over `token`
   * @param {number} [options.requestTimeoutMs=10000]
   * @param {number} [options.minDelayMs=500] first reconnect delay
   * @param {number} [options.maxDelayMs=10000] longest reconnect delay
   * @param {number} [options.heartbeatMs=15000] ping interval (0: none)
   */
  constructor(url, options = {}) {
    super();
    if (Array.isArray(url)) {
      if (url.length === 0) throw new TypeError('HubClient: the list of URLs is empty');
      const bad = url.findIndex((u) => typeof u !== 'string');
      if (bad !== -1) {
        throw new TypeError(`HubClient: url[${bad}] is not a string (${url[bad] === null ? 'null' : typeof url[bad]})`);
      }
      this.#urls = [...url];
    } else {
      this.#urls = [url];
    }
    this.#info = options.info;
    this.#token = options.token;
    this.#getToken = options.getToken;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.minDelayMs = options.minDelayMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 10_000;
    this.heartbeatMs = options.heartbeatMs ?? 15_000;
  }

  /** The URL of the current connection or attempt, or of the next one while closed. */
  get url() {
    return this.#urls[this.#urlIndex];
  }

  /** Starts connecting (and keeps reconnecting until close()). */
  start() {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#attempt = 0;
    this.#open();
  }

  /** Closes the connection for good and rejects what is pending. */
  close() {
    this.#stopped = true;
    this.#lost(this.#ws, 'closed by the page');
  }

  /** While waiting to reconnect: try now instead. */
  reconnectNow() {
    if (this.#stopped || this.state !== 'closed') return;
    clearTimeout(this.#retryTimer);
    this.#open();
  }

  /**
   * Abandons the current connection as a lost one (as when a heartbeat goes
   * unanswered): the socket is closed without waiting for the closing
   * handshake, and the client reconnects with its backoff. For tests.
   */
  dropConnectionForTest() {
    if (this.#ws) this.#lost(this.#ws, 'connection dropped');
  }

  /** The offset of the last publication seen on `channel`, or null. */
  lastOffset(channel) {
    return this.#subs.get(channel)?.offset ?? null;
  }

  /** The channels this client wants to be subscribed to. */
  channels() {
    return [...this.#subs.keys()];
  }

  /**
   * Subscribes to `channel`, now if connected, else on the next connection,
   * and again on every reconnection. Resolves with the first subscribe
   * result (`{offset}`); rejects if the server refuses it.
   *
   * @param {string} channel
   * @param {object} [options]
   * @param {(channel: string) => Promise<string>} [options.getToken] returns
   *   a subscription token for the channel (private namespaces): called for
   *   every subscribe request of it
   */
  subscribe(channel, { getToken } = {}) {
    const existing = this.#subs.get(channel);
    if (existing) return existing.ready;
    const sub = { channel, offset: null, inFlight: false, buffer: [], settle: null, getToken };
    sub.ready = new Promise((resolve, reject) => {
      sub.settle = { resolve, reject };
    });
    // The caller handles a rejection; this keeps it from being reported twice.
    sub.ready.catch(() => {});
    this.#subs.set(channel, sub);
    if (this.state === 'open') this.#subscribeNow(sub);
    return sub.ready;
  }

  /** Stops receiving `channel` (and forgets it for reconnections). */
  async unsubscribe(channel) {
    const sub = this.#subs.get(channel);
    if (!sub) return;
    this.#subs.delete(channel);
    sub.settle?.reject(new HubError('unsubscribed', `unsubscribed from ${channel}`));
    if (this.state !== 'open') return;
    try {
      await this.request('unsubscribe', { channel });
    } catch (e) {
      if (e.code !== 'not_subscribed' && e.code !== 'disconnected') throw e;
    }
  }

  /** Publishes `data` to `channel`; resolves with `{offset}`. */
  publish(channel, data) {
    return this.request('publish', { channel, data });
  }

  /** Who is subscribed to `channel`: resolves with `{clients: [...]}`. */
  presence(channel) {
    return this.request('presence', { channel });
  }

  /** The newest `limit` publications before offset `before` (both optional). */
  history(channel, { limit, before } = {}) {
    const fields = { channel };
    if (limit != null) fields.limit = limit;
    if (before != null) fields.before = before;
    return this.request('history', fields);
  }

  /**
   * Sends one request on the open connection. Resolves with the reply's
   * `result`; rejects with a HubError.
   */
  request(op, fields = {}) {
    if (this.state !== 'open' || !this.#ws) {
      return Promise.reject(new HubError('disconnected', `not connected (${op} not sent)`));
    }
    return this.#send(this.#ws, op, fields);
  }

  // ---- connection ----

  #setState(state, extra = {}) {
    this.state = state;
    this.retryAt = extra.delayMs != null ? Date.now() + extra.delayMs : null;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, attempt: this.#attempt, url: this.url, ...extra } }));
  }

  #open() {
    this.#retryTimer = null;
    this.#setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.#ws = null;
      this.#lost(null, `cannot open the WebSocket: ${e.message}`);
      return;
    }
    this.#ws = ws;
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (e) => this.#onMessage(ws, e.data);
    // A failed connection gets an error event then a close event.
    ws.onerror = () => {};
    ws.onclose = (e) =>
      this.#lost(ws, `closed (${e.code}${e.reason ? ` ${e.reason}` : ''})`);
  }

  async #onOpen(ws) {
    const fields = {};
    if (this.#info !== undefined) fields.info = this.#info;
    let result;
    try {
      let token = this.#token;
      if (this.#getToken) {
        try {
          token = await this.#getToken();
        } catch (e) {
          throw new HubError('no_token', `getToken failed: ${e.message}`);
        }
      }
      if (token) fields.token = token;
      if (ws !== this.#ws) return;
      result = await this.#send(ws, 'connect', fields);
    } catch (e) {
      if (ws === this.#ws) {
        this.dispatchEvent(new CustomEvent('error', { detail: { error: e } }));
        this.#lost(ws, `connect failed: ${e.code}: ${e.message}`);
      }
      return;
    }
    if (ws !== this.#ws) return;
    this.clientId = result.client ?? null;
    this.user = result.user ?? null;
    this.#attempt = 0;
    this.stats.connections++;
    this.#setState('open');
    this.#startHeartbeat(ws);
    for (const sub of this.#subs.values()) this.#subscribeNow(sub);
  }

  /**
   * The connection `ws` is gone (or is given up): forget it, fail what waits
   * for a reply, and schedule the next attempt unless close() was called.
   */
  #lost(ws, reason) {
    if (ws !== this.#ws) return;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close(1000);
      } catch {
        // Already closed or closing.
      }
    }
    this.#ws = null;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new HubError('disconnected', `the connection was lost before the reply to ${p.op}`));
    }
    for (const sub of this.#subs.values()) {
      sub.inFlight = false;
      sub.buffer = [];
    }
    this.clientId = null;
    if (this.#stopped) {
      this.#setState('closed', { reason, delayMs: null });
      return;
    }
    // The next attempt goes to the next URL; the delay doubles with each full
    // round of URLs that failed (with one URL, with each failed attempt).
    this.#urlIndex = (this.#urlIndex + 1) % this.#urls.length;
    const rounds = Math.floor(this.#attempt / this.#urls.length);
    const ceiling = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** rounds);
    // Jitter: somewhere in the upper half, so clients do not come back in step.
    const delayMs = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.#attempt++;
    this.#setState('closed', { reason, delayMs });
    this.#retryTimer = setTimeout(() => this.#open(), delayMs);
  }

  #startHeartbeat(ws) {
    if (!this.heartbeatMs) return;
    this.#heartbeatTimer = setInterval(() => {
      this.#send(ws, 'ping', {}).catch((e) => {
        if (e.code === 'timeout') this.#lost(ws, 'no reply to a ping');
      });
    }, this.heartbeatMs);
  }

  #send(ws, op, fields) {
    return new Promise((resolve, reject) => {
      const id = this.#nextId++;
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new HubError('timeout', `no reply to ${op} within ${this.requestTimeoutMs} ms`));
      }, this.requestTimeoutMs);
      this.#pending.set(id, { resolve, reject, timer, op });
      try {
        ws.send(JSON.stringify({ id, op, ...fields }));
      } catch (e) {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(new HubError('disconnected', `${op} not sent: ${e.message}`));
      }
    });
  }

  #onMessage(ws, text) {
    if (ws !== this.#ws) return;
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      this.dispatchEvent(new CustomEvent('error', { detail: { error: new HubError('bad_message', 'a message that is not JSON') } }));
      return;
    }
    if (typeof msg.push === 'string') {
      this.#onPush(msg);
      return;
    }
    const pending = msg.id != null ? this.#pending.get(msg.id) : undefined;
    if (!pending) {
      if (msg.ok === false) {
        const err = new HubError(msg.error?.code || 'internal', msg.error?.message);
        this.dispatchEvent(new CustomEvent('error', { detail: { error: err } }));
      }
      return;
    }
    this.#pending.delete(msg.id);
    clearTimeout(pending.timer);
    if (msg.ok) pending.resolve(msg.result ?? {});
    else pending.reject(new HubError(msg.error?.code || 'internal', msg.error?.message));
  }

  /** The `refresh` push: a fresh token from getToken() goes in `op: refresh`. */
  async #onRefresh(ws, expiresIn) {
    const detail = { expiresIn, refreshed: false, error: null };
    if (!this.#getToken) {
      detail.error = new HubError('no_token', 'the token expires soon and there is no getToken option to renew it');
    } else {
      try {
        const token = await this.#getToken();
        if (ws !== this.#ws) return;
        await this.#send(ws, 'refresh', { token });
        detail.refreshed = true;
        this.stats.refreshes++;
      } catch (e) {
        detail.error = e instanceof HubError ? e : new HubError('no_token', `getToken failed: ${e.message}`);
      }
    }
    if (ws === this.#ws) this.dispatchEvent(new CustomEvent('refresh', { detail }));
  }

  #onPush(msg) {
    if (msg.push === 'refresh') {
      this.#onRefresh(this.#ws, msg.expires_in);
      return;
    }
    const sub = this.#subs.get(msg.channel);
    if (!sub) return;
    if (msg.push === 'unsubscribe') {
      sub.inFlight = false;
      sub.buffer = [];
      if (sub.getToken && /expired/.test(msg.reason || '')) {
        // A fresh subscription token, and what was missed meanwhile.
        this.#subscribeNow(sub);
        return;
      }
      this.#subs.delete(sub.channel);
      sub.settle?.reject(new HubError('unsubscribed', msg.reason || `unsubscribed from ${sub.channel}`));
      this.dispatchEvent(new CustomEvent('unsubscribed', { detail: { channel: sub.channel, reason: msg.reason } }));
      return;
    }
    if (msg.push === 'message') {
      const pub = { offset: msg.offset, time: msg.time, data: msg.data };
      // While the subscribe reply is on its way, live publications wait, so
      // that recovered ones come first.
      if (sub.inFlight) sub.buffer.push(pub);
      else this.#deliver(sub, pub, false);
    } else if (msg.push === 'join' || msg.push === 'leave') {
      this.dispatchEvent(new CustomEvent(msg.push, { detail: { channel: msg.channel, client: msg.client } }));
    }
  }

  /** Hands one publication to the app, unless its offset was seen already. */
  #deliver(sub, pub, recovered) {
    if (sub.offset != null && pub.offset <= sub.offset) {
      this.stats.duplicates++;
      return false;
    }
    sub.offset = pub.offset;
    this.stats.delivered++;
    if (recovered) this.stats.recovered++;
    this.dispatchEvent(
      new CustomEvent('message', {
        detail: { channel: sub.channel, offset: pub.offset, time: pub.time, data: pub.data, recovered },
      }),
    );
    return true;
  }

  async #subscribeNow(sub) {
    if (sub.inFlight) return;
    const resumed = sub.offset != null;
    const fields = { channel: sub.channel };
    if (resumed) fields.since = { offset: sub.offset };
    sub.inFlight = true;
    sub.buffer = [];
    let result;
    try {
      if (sub.getToken) {
        const ws = this.#ws;
        try {
          fields.token = await sub.getToken(sub.channel);
        } catch (e) {
          throw new HubError('no_token', `getToken for ${sub.channel} failed: ${e.message}`);
        }
        if (ws !== this.#ws) throw new HubError('disconnected', 'the connection was lost');
      }
      result = await this.request('subscribe', fields);
    } catch (e) {
      sub.inFlight = false;
      if (this.#subs.get(sub.channel) !== sub) return;
      if (e.code === 'recovery_impossible') {
        const missedAfter = sub.offset;
        sub.offset = null;
        this.dispatchEvent(new CustomEvent('recovery_impossible', { detail: { channel: sub.channel, offset: missedAfter } }));
        this.#subscribeNow(sub);
      } else if (e.code === 'timeout' && this.#ws) {
        this.#lost(this.#ws, `no reply to subscribe ${sub.channel}`);
      } else if (e.code !== 'disconnected') {
        this.#subs.delete(sub.channel);
        sub.settle?.reject(e);
        this.dispatchEvent(new CustomEvent('subscribe_error', { detail: { channel: sub.channel, error: e } }));
      }
      // Disconnected: the next connection subscribes again.
      return;
    }
    sub.inFlight = false;
    if (this.#subs.get(sub.channel) !== sub) {
      // Unsubscribed while the reply was on its way.
      this.request('unsubscribe', { channel: sub.channel }).catch(() => {});
      return;
    }
    let recovered = 0;
    for (const pub of resumed ? result.publications || [] : []) {
      if (this.#deliver(sub, pub, true)) recovered++;
    }
    if (!resumed || sub.offset == null) {
      // A fresh subscription starts at the channel's current offset: older
      // publications are the app's to fetch with history().
      sub.offset = Math.max(sub.offset ?? 0, result.offset ?? 0);
    }
    const buffered = sub.buffer;
    sub.buffer = [];
    for (const pub of buffered) this.#deliver(sub, pub, false);
    sub.settle?.resolve(result);
    sub.settle = null;
    this.dispatchEvent(
      new CustomEvent('subscribed', {
        detail: { channel: sub.channel, offset: result.offset, resumed, recovered },
      }),
    );
  }
}

/**
 * Words for a `state` event's detail, for a status line: `{text, retry}`,
 * `retry` true while waiting to reconnect (a "retry now" is useful then).
 * With the client, the countdown to the next attempt is counted from now.
 */
export function describeState(detail, client) {
  switch (detail.state) {
    case 'connecting':
      return { text: detail.attempt ? `Reconnecting (attempt ${detail.attempt + 1})…` : 'Connecting…', retry: false };
    case 'open':
      return { text: 'Connected', retry: false };
    case 'closed': {
      if (detail.delayMs == null) return { text: 'Disconnected', retry: false };
      const at = client?.retryAt ?? Date.now() + detail.delayMs;
      const seconds = Math.max(0, Math.ceil((at - Date.now()) / 1000));
      return { text: `Connection lost, retrying in ${seconds} s`, retry: true };
    }
    default:
      return { text: 'Not connected', retry: false };
  }
}
