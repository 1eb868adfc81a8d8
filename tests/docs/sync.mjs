// Real y-websocket providers against duplex serve's /docs/NAME; one scenario
// per run: node sync.mjs SCENARIO BASE [ARGS...]; prints one JSON report.
//
//   converge BASE DOC    two providers type concurrently and converge; a third
//                        joins later and gets the full state; awareness flows
//                        (BASE may be a comma list of nodes: the providers
//                        use them in turn)
//   write BASE DOC TEXT  inserts TEXT, waits until a second provider sees it
//   read BASE DOC        the text and state vector of a fresh provider
//   offline BASE DOC     edits made while disconnected arrive after reconnect
//   readonly BASE DOC SECRET  tokens (HS256 with SECRET): read-only sees edits,
//                        its own are ignored; no access, bad token: refused
//   malformed BASE DOC   a bad update closes with 1007, the document is intact
//   limits BASE DOC      over the message rate: 1008; over the message size: 1009
import { Y, provider, synced, textIs, until, stateVector, run, raw } from './lib.mjs'
import * as encoding from 'lib0/encoding'
import { createHmac } from 'node:crypto'

const [scenario, base, name, ...rest] = process.argv.slice(2)

const scenarios = {
  async converge () {
    const bases = base.split(',')
    const on = (i) => bases[i % bases.length]
    const a = provider(on(0), name, { user: 'ann' })
    const b = provider(on(1), name, { user: 'bob' })
    await Promise.all([synced(a), synced(b)])
    const ta = a.doc.getText('text')
    const tb = b.doc.getText('text')
    // Concurrent typing: each inserts 100 characters, one update each, at
    // positions that depend on what it has seen so far.
    const typing = (doc, text, ch, n) => new Promise((resolve) => {
      let i = 0
      const step = () => {
        if (i === n) return resolve()
        doc.transact(() => text.insert(Math.floor(text.length * ((i * 7919) % 101) / 101), ch + (i % 10)))
        i++
        setImmediate(step)
      }
      step()
    })
    await Promise.all([typing(a.doc, ta, 'a', 100), typing(b.doc, tb, 'b', 100)])
    await until('convergence', () => ta.length === 400 && ta.toString() === tb.toString(), [[a.doc, 'update'], [b.doc, 'update']])
    // Awareness: each sees the other's user.
    const names = (p) => [...p.awareness.getStates().values()].map((s) => s.user && s.user.name).filter(Boolean).sort()
    await until('awareness', () => names(a).length === 2 && names(b).length === 2, [[a.awareness, 'change'], [b.awareness, 'change']])
    const c = provider(on(2), name, { user: 'cid' })
    await synced(c)
    await textIs(c, ta.toString())
    // The others' states come with the join, on any node: well before the
    // providers renew theirs (every 15 s), which must not be what it waits for.
    await until('awareness of the late joiner', () => names(c).length === 3, [[c.awareness, 'change']], 5000)
    // Bob leaves: the server removes his awareness state for the others.
    b.destroy()
    await until('bob gone from awareness', () => !names(a).includes('bob') && !names(c).includes('bob'), [[a.awareness, 'change'], [c.awareness, 'change']])
    const result = {
      ok: true,
      a: ta.toString(),
      b: tb.toString(),
      c: c.doc.getText('text').toString(),
      sv_a: stateVector(a.doc),
      sv_c: stateVector(c.doc),
      awareness_a: names(a),
      awareness_c: names(c)
    }
    a.destroy(); c.destroy()
    return result
  },

  async write () {
    const [text] = rest
    const a = provider(base, name)
    await synced(a)
    a.doc.getText('text').insert(a.doc.getText('text').length, text)
    // The server stores an update before it sends it on: once a second
    // provider has it, it is on disk.
    const b = provider(base, name)
    await synced(b)
    await textIs(b, a.doc.getText('text').toString())
    const result = { ok: true, text: a.doc.getText('text').toString(), sv: stateVector(a.doc) }
    a.destroy(); b.destroy()
    return result
  },

  async read () {
    const a = provider(base, name)
    await synced(a)
    const result = {
      ok: true,
      text: a.doc.getText('text').toString(),
      sv: stateVector(a.doc),
      state: Buffer.from(Y.encodeStateAsUpdate(a.doc)).toString('base64')
    }
    a.destroy()
    return result
  },

  async offline () {
    const a = provider(base, name, { user: 'ann' })
    const b = provider(base, name, { user: 'bob' })
    await Promise.all([synced(a), synced(b)])
    a.doc.getText('text').insert(0, 'shared. ')
    await textIs(b, 'shared. ')
    a.disconnect()
    await until('a disconnected', () => !a.wsconnected, [[a, 'status']])
    // Edits on both sides while A is offline.
    a.doc.getText('text').insert(8, 'offline edit by ann. ')
    b.doc.getText('text').insert(0, 'online edit by bob. ')
    const bSawWhileOffline = b.doc.getText('text').toString().includes('offline')
    a.connect()
    await synced(a)
    const ta = a.doc.getText('text')
    const tb = b.doc.getText('text')
    await until('convergence after reconnect', () => ta.toString() === tb.toString() && ta.toString().includes('offline edit by ann') && ta.toString().includes('online edit by bob'), [[a.doc, 'update'], [b.doc, 'update']])
    // A third provider gets both from the server.
    const c = provider(base, name)
    await synced(c)
    await textIs(c, ta.toString())
    const result = { ok: !bSawWhileOffline, a: ta.toString(), b: tb.toString(), c: c.doc.getText('text').toString() }
    a.destroy(); b.destroy(); c.destroy()
    return result
  },

  async readonly () {
    const [secret] = rest
    const token = (claims) => {
      const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url')
      const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`
      return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`
    }
    const writer = provider(base, name, { params: { token: token({ sub: 'w', docs: { [name]: 'write' } }) } })
    const reader = provider(base, name, { params: { token: token({ sub: 'r', docs: { '*': 'read' } }) } })
    await Promise.all([synced(writer), synced(reader)])
    writer.doc.getText('text').insert(0, 'from the writer')
    await textIs(reader, 'from the writer')
    reader.doc.getText('text').insert(0, 'READER ')
    // The writer's next edit reaches the reader after the server handled
    // the reader's; a third provider then shows what the server holds.
    writer.doc.getText('text').insert(15, '!')
    await until('the second writer edit', () => reader.doc.getText('text').toString().includes('!'), [[reader.doc, 'update']])
    const check = provider(base, name, { params: { token: token({ sub: 'c' }) } })
    await synced(check)
    // Refused before the upgrade: no access, a bad signature.
    const status = async (query) => {
      const r = raw(base, name, query)
      await r.closed
      return r.status
    }
    const result = {
      ok: true,
      server: check.doc.getText('text').toString(),
      writer: writer.doc.getText('text').toString(),
      reader: reader.doc.getText('text').toString(),
      reader_connected: reader.wsconnected,
      no_access: await status('?token=' + token({ sub: 'x', docs: { 'other-*': 'write' } })),
      bad_signature: await status('?token=' + token({ sub: 'x' }).slice(0, -4) + 'AAAA')
    }
    writer.destroy(); reader.destroy(); check.destroy()
    return result
  },

  async limits () {
    // Run against a hub with [docs] messages_per_second = 5, burst = 10,
    // max_message_size = 65536.
    const flood = raw(base, name)
    await flood.opened
    for (let i = 0; i < 40; i++) flood.ws.send(new Uint8Array([3]))
    await flood.closed
    const big = raw(base, name)
    await big.opened
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, 0)
    encoding.writeVarUint(e, 2)
    encoding.writeVarUint8Array(e, new Uint8Array(70000))
    big.ws.send(encoding.toUint8Array(e))
    await big.closed
    const aw = raw(base, name)
    await aw.opened
    const a = encoding.createEncoder()
    encoding.writeVarUint(a, 1)
    const inner = encoding.createEncoder()
    encoding.writeVarUint(inner, 1)
    encoding.writeVarUint(inner, 77)
    encoding.writeVarUint(inner, 1)
    encoding.writeVarString(inner, JSON.stringify({ user: { name: 'x'.repeat(20000) } }))
    encoding.writeVarUint8Array(a, encoding.toUint8Array(inner))
    aw.ws.send(encoding.toUint8Array(a))
    await aw.closed
    // A well-behaved provider still works.
    const p = provider(base, name)
    await synced(p)
    const result = { ok: true, flood: flood.close, too_big: big.close, awareness: aw.close }
    p.destroy()
    return result
  },

  async malformed () {
    const a = provider(base, name)
    await synced(a)
    a.doc.getText('text').insert(0, 'intact')
    const b = provider(base, name)
    await synced(b)
    await textIs(b, 'intact')
    b.destroy()
    // An Update message whose update is garbage.
    const bad = raw(base, name)
    await bad.opened
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, 0)
    encoding.writeVarUint(e, 2)
    encoding.writeVarUint8Array(e, new Uint8Array([5, 0xff, 0xff, 0x01, 0x02, 0x03, 0x07, 0x09]))
    bad.ws.send(encoding.toUint8Array(e))
    await bad.closed
    // Not y-websocket at all.
    const junk = raw(base, name)
    await junk.opened
    junk.ws.send(new Uint8Array([0, 7, 1, 2]))
    await junk.closed
    const text = raw(base, name)
    await text.opened
    text.ws.send('hello')
    await text.closed
    const c = provider(base, name)
    await synced(c)
    const result = {
      ok: true,
      bad_update: bad.close,
      bad_message: junk.close,
      text_message: text.close,
      text: c.doc.getText('text').toString()
    }
    a.destroy(); c.destroy()
    return result
  }
}

run(async () => {
  const fn = scenarios[scenario]
  if (!fn) throw new Error(`unknown scenario ${scenario}`)
  return fn()
})
