// The chat page's script: plain JavaScript, no build step. It opens a
// WebSocket to /ws on the server the page came from (over HTTP/2 when the page
// did: the browser opens it as a stream of the same connection, RFC 8441),
// shows what arrives, and sends what is typed.
'use strict';

const status = document.getElementById('status');
const log = document.getElementById('log');
const form = document.getElementById('send');
const input = document.getElementById('text');
const button = form.querySelector('button');

// How the page itself arrived: "h2" or "http/1.1".
const pageProtocol = performance.getEntriesByType('navigation')[0]?.nextHopProtocol || '?';

function show(text, kind) {
  const item = document.createElement('li');
  item.textContent = text;
  if (kind) item.className = kind;
  log.append(item);
  log.scrollTop = log.scrollHeight;
}

const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
const ws = new WebSocket(`${scheme}//${location.host}/ws`);
ws.binaryType = 'arraybuffer';

ws.onopen = () => {
  const compression = ws.extensions.includes('permessage-deflate') ? ', compressed' : '';
  status.textContent = `connected (page over ${pageProtocol}${compression})`;
  input.disabled = false;
  button.disabled = false;
  input.focus();
};
ws.onmessage = (event) => {
  if (typeof event.data === 'string') show(event.data);
  else show(`[${event.data.byteLength} bytes of binary]`, 'system');
};
ws.onclose = (event) => {
  status.textContent = `closed: ${event.code} ${event.reason || ''}`.trim();
  show(`connection closed (${event.code}${event.reason ? ': ' + event.reason : ''})`, 'system');
  input.disabled = true;
  button.disabled = true;
};

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (text && ws.readyState === WebSocket.OPEN) ws.send(text);
  input.value = '';
});
