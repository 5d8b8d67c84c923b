// pages/streams.js: the event stream: the stream keys written in the last
// hour with their event counts (read with GET /events from an hour ago),
// each consumer's checkpoint and lag (GET /consumers), and a live tail of a
// key or a pattern such as orders:* (GET /events/stream, Server-Sent Events
// read through fetch so the API key stays in a header).
import { h, replace, table } from '../dom.js';
import * as api from '../api.js';
import { time, size, bytes, parseJSON } from '../format.js';

const WINDOW_MS = 3600 * 1000;
const READ_PAGES = 10, PAGE = 1000;
const TAIL_MAX = 200;

async function keyCounts(signal) {
  const counts = new Map();
  let after = null, read = 0, more = false;
  const from = new Date(Date.now() - WINDOW_MS).toISOString();
  for (let i = 0; i < READ_PAGES; i++) {
    const q = after ? { stream: '*', after, limit: PAGE } : { stream: '*', from, limit: PAGE };
    const doc = await api.get(`/events${api.query(q)}`, { signal });
    for (const e of doc.events || []) {
      const c = counts.get(e.stream) || { n: 0, last: null };
      c.n++; c.last = e.ts;
      counts.set(e.stream, c);
    }
    read += (doc.events || []).length;
    if ((doc.events || []).length < PAGE || !doc.next) { more = false; break; }
    more = true;
    after = doc.next;
  }
  return { counts, read, more };
}

export async function render(root, ctx) {
  const abort = new AbortController();
  let tailAbort = null;
  const keysBox = h('section', { 'aria-labelledby': 'keys-title' });
  const consumersBox = h('section', { 'aria-labelledby': 'consumers-title' });
  const pattern = h('input', { id: 'tail-pattern', value: ctx.params.get('tail') || '*', spellcheck: 'false', autocomplete: 'off' });
  const tailState = h('span', { class: 'muted', id: 'tail-state', 'aria-live': 'polite' });
  const tailBody = h('tbody');
  const tailForm = h('form', { class: 'toolbar', 'aria-label': 'Tail a stream' },
    h('label', null, 'Key or pattern (orders:*)', pattern),
    h('button', { type: 'submit', class: 'primary' }, 'Tail'),
    h('button', { type: 'button', id: 'tail-stop' }, 'Stop'), tailState);
  const tailTable = table(['Id', 'Time', 'Stream', 'Type', 'Data'], [], { id: 'tail' });
  tailTable.classList.add('tail');
  tailTable.querySelector('table').replaceChild(tailBody, tailTable.querySelector('tbody'));

  replace(root, h('div', { class: 'page-head' }, h('h1', null, 'Streams and consumers')),
    keysBox, consumersBox, h('h2', null, 'Live tail'), tailForm, tailTable);

  function startTail() {
    if (tailAbort) tailAbort.abort();
    tailAbort = new AbortController();
    const signal = tailAbort.signal;
    const pat = pattern.value.trim() || '*';
    tailBody.replaceChildren();
    tailState.textContent = `following ${pat} from now`;
    api.sse(`/events/stream${api.query({ stream: pat, from: 'LATEST' })}`, (msg) => {
      let e;
      try { e = parseJSON(msg.data); } catch { return; }
      const data = JSON.stringify(e.data);
      const shown = data && data.length > 160 ? `${data.slice(0, 160)}… (${size(bytes(data))})` : data;
      tailBody.prepend(h('tr', { dataset: { id: e.id } },
        h('td', { class: 'mono' }, e.id), h('td', null, time(e.ts)), h('td', { class: 'mono' }, e.stream),
        h('td', null, e.type), h('td', { class: 'mono' }, shown ?? '')));
      while (tailBody.children.length > TAIL_MAX) tailBody.lastChild.remove();
      tailState.textContent = `following ${pat}: ${tailBody.children.length} shown, newest first`;
    }, signal).then(() => { if (!signal.aborted) tailState.textContent = 'the stream ended'; })
      .catch((err) => { if (err.name !== 'AbortError') { tailState.textContent = 'stopped'; ctx.showError(err); } });
  }
  tailForm.addEventListener('submit', (e) => { e.preventDefault(); startTail(); });
  tailForm.querySelector('#tail-stop').addEventListener('click', () => {
    if (tailAbort) tailAbort.abort();
    tailState.textContent = 'stopped';
  });

  const [keys, cons] = await Promise.all([keyCounts(abort.signal), api.get('/consumers', { signal: abort.signal })]);
  const sorted = [...keys.counts.entries()].sort((a, b) => b[1].n - a[1].n || a[0].localeCompare(b[0]));
  replace(keysBox, h('h2', { id: 'keys-title' }, `Stream keys written in the last hour (${sorted.length})`),
    h('p', { class: 'muted' }, `${keys.read} events read${keys.more ? `; showing the first ${keys.read}` : ''}.`),
    table(['Stream key', 'Events', 'Last event', ''], sorted.map(([k, c]) => h('tr', { dataset: { stream: k } },
      h('td', { class: 'mono' }, k), h('td', { class: 'num' }, String(c.n)), h('td', null, time(c.last)),
      h('td', null, h('button', { type: 'button', class: 'link', on: { click: () => { pattern.value = k; startTail(); } } }, 'tail'))))));
  const list = cons.consumers || [];
  replace(consumersBox, h('h2', { id: 'consumers-title' }, `Consumers (${list.length})`),
    table(['Consumer', 'Pattern', 'Checkpoint', 'Lag (events)', 'Updated'], list.map((c) => h('tr', { dataset: { consumer: c.name } },
      h('td', null, h('a', { href: ctx.href('pipelines', `consume:${c.name}`) }, c.name)),
      h('td', { class: 'mono' }, c.stream || c.pattern || ''),
      h('td', { class: 'mono' }, c.checkpoint || '—'),
      h('td', { class: 'num lag' }, String(c.lag ?? '—')),
      h('td', null, time(c.updated_at))))));
  startTail();
  return () => { abort.abort(); if (tailAbort) tailAbort.abort(); };
}
