// The ticker page: live quotes from the channels `ticker:<SYMBOL>`, each
// publication `{"symbol","price","change","change_percent","simulated"}`.
// Symbols can be added and removed; AAPL, MSFT and GOOG to begin with.

import { HubClient, describeState, hubUrl } from '/static/client.js';

const DEFAULT_SYMBOLS = ['AAPL', 'MSFT', 'GOOG'];
const SYMBOL_RE = /^[A-Z0-9.]{1,10}$/;

const $ = (id) => document.getElementById(id);
const els = {
  status: $('status'),
  statusText: $('status-text'),
  retry: $('retry'),
  simulated: $('simulated'),
  addForm: $('add-form'),
  symbol: $('symbol'),
  error: $('error'),
  rows: $('rows'),
  none: $('none'),
};

const price = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const signed = new Intl.NumberFormat('en-US', {
  minimumFractionDigits: 2,
  maximumFractionDigits: 2,
  signDisplay: 'exceptZero',
});
const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

const client = new HubClient(hubUrl());
/** SYMBOL -> its table row's cells. */
const rows = new Map();

// For tests and for the console.
window.__hub = { client, page: 'ticker' };

function showError(text) {
  els.error.textContent = text;
  els.error.hidden = !text;
}

let countdown = null;
function showState(detail) {
  const { text, retry } = describeState(detail, client);
  els.status.dataset.state = detail.state;
  els.statusText.textContent = text;
  els.retry.hidden = !retry;
  clearTimeout(countdown);
  countdown = retry ? setTimeout(() => showState(detail), 1000) : null;
}

function cell(className, text) {
  const td = document.createElement('td');
  td.className = className;
  td.textContent = text;
  return td;
}

function addRow(symbol) {
  const tr = document.createElement('tr');
  tr.dataset.symbol = symbol;
  tr.dataset.direction = 'flat';
  const name = document.createElement('th');
  name.scope = 'row';
  name.className = 'symbol';
  name.textContent = symbol;
  const priceCell = cell('num price', '—');
  const change = cell('num change', '');
  const percent = cell('num percent', '');
  const when = cell('num when-col when', 'waiting…');
  const actions = document.createElement('td');
  actions.className = 'actions';
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.className = 'small';
  // On narrow screens only the cross shows; the label is for everyone.
  const cross = document.createElement('span');
  cross.setAttribute('aria-hidden', 'true');
  cross.textContent = '✕';
  const label = document.createElement('span');
  label.className = 'label';
  label.textContent = ' Unsubscribe';
  remove.append(cross, label);
  remove.setAttribute('aria-label', `Unsubscribe from ${symbol}`);
  remove.addEventListener('click', () => removeSymbol(symbol));
  actions.append(remove);
  tr.append(name, priceCell, change, percent, when, actions);
  els.rows.append(tr);
  const row = { tr, price: priceCell, change, percent, when, offset: 0 };
  rows.set(symbol, row);
  els.none.hidden = true;
  return row;
}

/** Shows one quote (publications older than the one shown are ignored). */
function showQuote(symbol, pub) {
  const row = rows.get(symbol);
  const q = pub.data;
  if (!row || !q || typeof q.price !== 'number' || pub.offset <= row.offset) return;
  row.offset = pub.offset;
  const direction = q.change > 0 ? 'up' : q.change < 0 ? 'down' : 'flat';
  row.tr.dataset.direction = direction;
  row.price.textContent = price.format(q.price);
  row.change.textContent = typeof q.change === 'number' ? signed.format(q.change) : '';
  row.percent.textContent = typeof q.change_percent === 'number' ? `${signed.format(q.change_percent)}%` : '';
  row.when.textContent = clock.format(new Date(typeof pub.time === 'number' ? pub.time : Date.now()));
  // A brief flash of the price cell: restart the animation on every change.
  row.price.classList.remove('flash-up', 'flash-down');
  if (direction !== 'flat') {
    void row.price.offsetWidth;
    row.price.classList.add(direction === 'up' ? 'flash-up' : 'flash-down');
  }
  if (q.simulated === true) els.simulated.hidden = false;
}

async function addSymbol(symbol) {
  if (rows.has(symbol)) {
    showError(`${symbol} is already in the table.`);
    return;
  }
  addRow(symbol);
  const channel = `ticker:${symbol}`;
  try {
    await client.subscribe(channel);
  } catch (e) {
    if (e.code === 'unsubscribed') return;
    removeRow(symbol);
    showError(`Could not subscribe to ${symbol} (${e.code || 'error'}): ${e.message}`);
    return;
  }
  // The latest quote at once, rather than at the next tick.
  try {
    const { publications = [] } = await client.history(channel, { limit: 1 });
    for (const pub of publications) showQuote(symbol, pub);
    const row = rows.get(symbol);
    if (!publications.length && row && !row.offset) row.when.textContent = 'no data yet';
  } catch {
    // The next tick shows it.
  }
}

function removeRow(symbol) {
  rows.get(symbol)?.tr.remove();
  rows.delete(symbol);
  els.none.hidden = rows.size > 0;
}

function removeSymbol(symbol) {
  removeRow(symbol);
  client.unsubscribe(`ticker:${symbol}`).catch((e) => showError(`Could not unsubscribe from ${symbol}: ${e.message}`));
}

client.addEventListener('state', (e) => showState(e.detail));
client.addEventListener('message', (e) => {
  const { channel } = e.detail;
  if (channel.startsWith('ticker:')) showQuote(channel.slice('ticker:'.length), e.detail);
});
client.addEventListener('subscribe_error', (e) => {
  showError(`${e.detail.channel}: ${e.detail.error.message}`);
});
els.retry.addEventListener('click', () => client.reconnectNow());

els.addForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const symbol = els.symbol.value.trim().toUpperCase();
  if (!SYMBOL_RE.test(symbol)) {
    showError('A symbol is 1 to 10 letters, digits or dots, e.g. NVDA.');
    return;
  }
  showError('');
  els.symbol.value = '';
  addSymbol(symbol);
});

client.start();
for (const symbol of DEFAULT_SYMBOLS) addSymbol(symbol);
