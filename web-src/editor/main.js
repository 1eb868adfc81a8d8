// The /editor page of duplex serve: CodeMirror 6 on a shared Yjs text,
// synchronized by the y-websocket provider with the server's /docs/NAME, the
// other people's cursors and names shown by y-codemirror.next (awareness).
//
// Query parameters: doc (the document, default "welcome"), name (yours;
// otherwise the one you picked last time, or a random one), token (a JWT
// for hubs that need one; its `docs` claim may make the document read-only).
//
// Bundled into crates/duplex-hub/web/editor.js by scripts/build-editor.sh.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { yCollab } from 'y-codemirror.next'
import { EditorView, basicSetup } from 'codemirror'
import { EditorState } from '@codemirror/state'

const params = new URLSearchParams(location.search)
const docName = params.get('doc') || 'welcome'
const token = params.get('token')

const COLORS = ['#d7263d', '#1b998b', '#2e86ab', '#f46036', '#7b2cbf', '#3a7d44', '#c17c00', '#e4572e']
const ANIMALS = ['otter', 'heron', 'lynx', 'marten', 'ibis', 'fox', 'wren', 'seal', 'hare', 'kite']

function pick (list) {
  return list[Math.floor(Math.random() * list.length)]
}

function storedName () {
  try {
    return localStorage.getItem('duplex-editor-name')
  } catch {
    return null
  }
}

let userName = params.get('name') || storedName() || `${pick(ANIMALS)}-${Math.floor(Math.random() * 90 + 10)}`
let userColor = pick(COLORS)

/** The access the token's `docs` claim gives, as the server decides it. */
function accessOf (jwt, name) {
  if (!jwt) return 'write'
  let claims
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)))
  } catch {
    return 'write'
  }
  const docs = claims.docs
  if (docs === undefined) return 'write'
  if (!docs || typeof docs !== 'object') return 'none'
  if (Object.prototype.hasOwnProperty.call(docs, name)) return docs[name]
  let best = null
  for (const [pattern, rule] of Object.entries(docs)) {
    if (pattern.endsWith('*') && name.startsWith(pattern.slice(0, -1)) &&
        (best === null || pattern.length > best[0].length)) best = [pattern, rule]
  }
  return best ? best[1] : 'none'
}
const readOnly = accessOf(token, docName) !== 'write'

const ydoc = new Y.Doc()
const ytext = ydoc.getText('codemirror')
const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/docs'
const provider = new WebsocketProvider(url, docName, ydoc, {
  params: token ? { token } : {},
  maxBackoffTime: 5000
})
const awareness = provider.awareness
awareness.setLocalStateField('user', { name: userName, color: userColor, colorLight: userColor + '33' })

// ----- the page around the editor -----
const $ = (id) => document.getElementById(id)
$('doc-name').textContent = docName
document.title = `${docName} · duplex editor`
const nameInput = $('user-name')
nameInput.value = userName
$('user-color').style.background = userColor
nameInput.addEventListener('change', () => {
  const name = nameInput.value.trim().slice(0, 40)
  if (!name) {
    nameInput.value = userName
    return
  }
  userName = name
  try { localStorage.setItem('duplex-editor-name', name) } catch {}
  awareness.setLocalStateField('user', { name, color: userColor, colorLight: userColor + '33' })
})
if (readOnly) $('access').hidden = false

const status = $('status')
let connection = 'connecting'
function showStatus () {
  const state = connection === 'connected' ? (provider.synced ? 'synced' : 'syncing') : connection
  status.dataset.state = { synced: 'open', syncing: 'connecting', connecting: 'connecting', disconnected: 'closed' }[state]
  status.dataset.sync = state
  $('status-text').textContent = {
    connecting: 'Connecting…',
    syncing: 'Connected, syncing…',
    synced: 'Connected',
    disconnected: 'Offline: edits are kept and sent on reconnect'
  }[state]
}
provider.on('status', ({ status }) => { connection = status; showStatus() })
provider.on('sync', showStatus)
// Once the others are known, take a colour none of them has, if one is left.
provider.once('sync', () => {
  const taken = new Set([...awareness.getStates().entries()]
    .filter(([client, state]) => client !== ydoc.clientID && state.user)
    .map(([, state]) => state.user.color))
  if (!taken.has(userColor)) return
  const free = COLORS.filter((c) => !taken.has(c))
  if (!free.length) return
  userColor = pick(free)
  $('user-color').style.background = userColor
  awareness.setLocalStateField('user', { name: userName, color: userColor, colorLight: userColor + '33' })
})
provider.on('connection-close', showStatus)
showStatus()

const users = $('users')
function showUsers () {
  users.replaceChildren()
  // You first, then the others in a stable order.
  const states = [...awareness.getStates().entries()]
    .sort(([a], [b]) => (b === ydoc.clientID) - (a === ydoc.clientID) || a - b)
  for (const [client, state] of states) {
    if (!state.user) continue
    const li = document.createElement('li')
    li.className = 'user'
    const dot = document.createElement('span')
    dot.className = 'dot'
    dot.style.background = String(state.user.color || '#888')
    li.append(dot, document.createTextNode(String(state.user.name || 'anonymous')))
    if (client === ydoc.clientID) {
      li.classList.add('me')
      li.append(document.createTextNode(' (you)'))
    }
    users.append(li)
  }
  $('user-count').textContent = String(users.children.length)
}
awareness.on('change', showUsers)
showUsers()

// ----- the editor -----
const undoManager = new Y.UndoManager(ytext)
const view = new EditorView({
  parent: $('editor'),
  state: EditorState.create({
    doc: ytext.toString(),
    extensions: [
      basicSetup,
      EditorView.lineWrapping,
      EditorState.readOnly.of(readOnly),
      EditorView.editable.of(!readOnly),
      EditorView.contentAttributes.of({ 'aria-label': `Document ${docName}` }),
      yCollab(ytext, awareness, { undoManager })
    ]
  })
})

// For tests and the browser console.
window.duplexEditor = { ydoc, ytext, provider, awareness, view, readOnly }
