// Helpers of the document tests: real yjs documents and y-websocket
// providers (with the `ws` package as their WebSocket) against duplex serve.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

export { Y, WebSocket }

/** How long any awaited condition may take before the script fails. */
export const LIMIT_MS = 15000

/** A provider for document `name` on server `base` (http://ADDR). */
export function provider (base, name, { doc = new Y.Doc(), params = {}, user } = {}) {
  const url = base.replace(/^http/, 'ws').replace(/\/$/, '') + '/docs'
  const p = new WebsocketProvider(url, name, doc, {
    WebSocketPolyfill: WebSocket,
    params,
    disableBc: true,
    maxBackoffTime: 200
  })
  if (user) p.awareness.setLocalStateField('user', { name: user, color: '#30bced' })
  return p
}

/**
 * Resolves once `check()` is true, re-checking whenever `emitter` emits one of
 * `events`; rejects with `what` after `limit` ms.
 */
export function until (what, check, emitters, limit = LIMIT_MS) {
  return new Promise((resolve, reject) => {
    const subs = []
    const done = (fn, v) => {
      clearTimeout(timer)
      for (const [e, ev, f] of subs) e.off(ev, f)
      fn(v)
    }
    const test = () => {
      try {
        if (check()) done(resolve)
      } catch (err) {
        done(reject, err)
      }
    }
    const timer = setTimeout(() => done(reject, new Error(`timed out waiting for ${what}`)), limit)
    for (const [e, ev] of emitters) {
      const f = () => test()
      e.on(ev, f)
      subs.push([e, ev, f])
    }
    test()
  })
}

/** Waits for a provider's first full sync with the server. */
export function synced (p) {
  return until('sync', () => p.synced, [[p, 'sync']])
}

/** Waits for `p`'s text `key` to equal `text`. */
export function textIs (p, text, key = 'text') {
  const t = p.doc.getText(key)
  return until(`text ${JSON.stringify(text).slice(0, 80)}`, () => t.toString() === text, [[p.doc, 'update']])
}

/** The state vector of a document, base64. */
export function stateVector (doc) {
  return Buffer.from(Y.encodeStateVector(doc)).toString('base64')
}

/** Prints the report and exits (0 if `ok`). */
export function report (value) {
  console.log(JSON.stringify(value))
  process.exit(value.ok ? 0 : 1)
}

/** Runs `main`, reporting a thrown error as `{ok:false, reason}`. */
export function run (main) {
  main().then(report, (err) => report({ ok: false, reason: String(err && err.stack ? err.stack : err) }))
}

/** A raw WebSocket to /docs/NAME: opens, collects messages and the close. */
export function raw (base, name, query = '') {
  const url = base.replace(/^http/, 'ws').replace(/\/$/, '') + '/docs/' + name + query
  const ws = new WebSocket(url)
  const state = { ws, messages: [], close: null, error: null, status: null }
  ws.on('message', (data) => state.messages.push(new Uint8Array(data)))
  ws.on('close', (code, reason) => { state.close = { code, reason: reason.toString() } })
  ws.on('unexpected-response', (_req, res) => { state.status = res.statusCode; ws.terminate() })
  ws.on('error', (err) => { state.error = String(err) })
  state.opened = new Promise((resolve) => ws.on('open', resolve))
  state.closed = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no close on ${url} within ${LIMIT_MS} ms`)), LIMIT_MS)
    ws.on('close', () => { clearTimeout(timer); resolve() })
  })
  return state
}
