// pages/runs.js: the list of runs, newest first: filters (pipeline, status,
// namespace, since), a search by run id, pages by the API's cursor, and
// live updates by polling the shown page at most once a second while the
// tab is visible (GET /runs is served from indexes: a page costs the same
// in a store of a million runs).
import { h, replace, table } from '../dom.js';
import * as api from '../api.js';
import { clock, duration, runDuration, statusChip, time, triggerText, relative } from '../format.js';

const STATUSES = ['pending', 'running', 'sleeping', 'waiting', 'completed', 'failed', 'cancelled'];
const PAGE = 50;
const POLL_MS = 1000;

function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const off = d.getTimezoneOffset() * 60000;
  return new Date(d.getTime() - off).toISOString().slice(0, 16);
}

export async function render(root, ctx) {
  const p = ctx.params;
  const f = {
    pipeline: p.get('pipeline') || '', status: p.get('status') || '',
    namespace: ctx.ns || p.get('namespace') || '', since: p.get('since') || '', before: p.get('before') || '',
  };

  // the first page is asked for before the page is built: the request and
  // the building overlap (what first paint waits for is this response)
  let abort = new AbortController();
  const listQuery = () => `/runs${api.query({ pipeline: f.pipeline, status: f.status, namespace: f.namespace, since: f.since, before: f.before, limit: PAGE })}`;
  const firstPage = api.get(listQuery(), { signal: abort.signal });
  firstPage.catch(() => {}); // awaited below; this only keeps an early failure from being "unhandled"

  const pipelineIn = h('input', { id: 'f-pipeline', name: 'pipeline', value: f.pipeline, list: 'pipelines-seen', autocomplete: 'off', placeholder: 'any' });
  const seen = h('datalist', { id: 'pipelines-seen' });
  const statusIn = h('select', { id: 'f-status', name: 'status' },
    h('option', { value: '' }, 'any'), STATUSES.map((s) => h('option', { value: s, selected: s === f.status }, s)));
  const nsIn = h('input', { id: 'f-namespace', name: 'namespace', value: f.namespace, placeholder: 'default', disabled: !!ctx.ns });
  const sinceIn = h('input', { id: 'f-since', name: 'since', type: 'datetime-local', value: toLocalInput(f.since) });
  const filterForm = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs' },
    h('label', null, 'Pipeline', pipelineIn), seen,
    h('label', null, 'Status', statusIn),
    h('label', null, 'Namespace', nsIn),
    h('label', null, 'Since', sinceIn),
    h('button', { type: 'submit', class: 'primary' }, 'Filter'),
    h('a', { href: ctx.href('runs'), class: 'button' }, 'Clear'));
  filterForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const since = sinceIn.value ? new Date(sinceIn.value).toISOString() : '';
    location.hash = ctx.href('runs', null, {
      pipeline: pipelineIn.value.trim(), status: statusIn.value,
      namespace: ctx.ns ? '' : nsIn.value.trim(), since,
    });
  });

  const idIn = h('input', { id: 'run-search', name: 'id', placeholder: 'run id', autocomplete: 'off', spellcheck: 'false' });
  const searchForm = h('form', { class: 'search', role: 'search', 'aria-label': 'Find a run by id' },
    h('label', null, 'Run id', idIn), h('button', { type: 'submit' }, 'Open'));
  searchForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = idIn.value.trim();
    if (id) location.hash = ctx.href('runs', id);
  });

  const live = h('input', { type: 'checkbox', id: 'live', checked: true });
  const updated = h('span', { class: 'muted', id: 'updated' });
  const tbody = h('tbody');
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of runs' });
  const showNs = !ctx.ns;
  const head = ['Status', 'Run', 'Pipeline', 'Trigger', 'Created', 'Duration'].concat(showNs ? ['Namespace'] : []);
  const tbl = table(head, [], { class: 'runs', id: 'runs-table' });
  tbl.querySelector('table').replaceChild(tbody, tbl.querySelector('tbody'));

  replace(root,
    h('div', { class: 'page-head' }, h('h1', null, ctx.ns ? `Runs of ${ctx.ns}` : 'Runs'),
      h('label', { class: 'live' }, live, ' Live'), updated),
    filterForm, searchForm, tbl, pager);

  let stopped = false, timer = null;
  const pipelines = new Set();
  const rows = new Map(); // run id -> {tr, sig}

  function row(run) {
    const cells = [
      h('td', null, statusChip(run.status)),
      h('td', { class: 'mono' }, h('a', { href: ctx.href('runs', run.run_id), title: run.run_id }, run.run_id)),
      h('td', null, h('a', { href: ctx.href('pipelines', run.pipeline) }, run.pipeline)),
      h('td', null, triggerText(run.trigger)),
      h('td', null, time(run.created_at), h('span', { class: 'muted rel' }, ` ${relative(run.created_at)}`)),
      h('td', { class: 'num' }, duration(runDuration(run))),
    ];
    if (showNs) cells.push(h('td', null, run.namespace));
    return h('tr', { dataset: { run: run.run_id, status: run.status } }, cells);
  }

  function draw(doc) {
    const list = doc.runs || [];
    for (const r of list) {
      if (!pipelines.has(r.pipeline)) {
        pipelines.add(r.pipeline);
        seen.append(h('option', { value: r.pipeline }));
      }
    }
    const focused = document.activeElement && tbody.contains(document.activeElement)
      ? document.activeElement.getAttribute('href') : null;
    const out = list.map((r) => {
      const sig = `${r.status}|${runDuration(r)}|${r.created_at}`;
      const old = rows.get(r.run_id);
      if (old && old.sig === sig) return old.tr;
      const tr = row(r);
      rows.set(r.run_id, { tr, sig });
      return tr;
    });
    const same = out.length === tbody.children.length && out.every((tr, i) => tbody.children[i] === tr);
    if (!same) {
      tbody.replaceChildren(...out);
      if (focused) { const a = tbody.querySelector(`a[href="${CSS.escape(focused)}"]`); if (a) a.focus(); }
    }
    for (const id of [...rows.keys()]) if (!list.some((r) => r.run_id === id)) rows.delete(id);
    if (!list.length) {
      tbody.replaceChildren(h('tr', null, h('td', { colspan: head.length, class: 'empty' },
        f.before ? 'No older runs.' : 'No runs match.')));
    }
    const links = [];
    if (f.before) links.push(h('a', { href: ctx.href('runs', null, { ...f, before: '' }), class: 'button' }, '« Newest'));
    if (doc.next) links.push(h('a', { href: ctx.href('runs', null, { ...f, before: doc.next }), class: 'button', rel: 'next' }, 'Older »'));
    const hrefs = links.map((a) => a.getAttribute('href')).join(' ');
    if (pager.dataset.hrefs !== hrefs) { pager.dataset.hrefs = hrefs; replace(pager, ...links); }
    updated.textContent = `updated ${clock()}`;
  }

  async function load() {
    abort = new AbortController();
    const doc = await api.get(listQuery(), { signal: abort.signal });
    if (!stopped) draw(doc);
  }

  async function tick() {
    timer = null;
    const started = performance.now();
    if (!document.hidden && live.checked) {
      try { await load(); ctx.showError(null); } catch (e) { if (e.name !== 'AbortError' && !stopped) ctx.showError(e); }
    }
    if (!stopped) timer = setTimeout(tick, Math.max(POLL_MS - (performance.now() - started), POLL_MS / 2));
  }

  const firstDoc = await firstPage;
  performance.mark('sluice:runs:data');
  draw(firstDoc);
  timer = setTimeout(tick, POLL_MS);
  return () => { stopped = true; if (timer) clearTimeout(timer); if (abort) abort.abort(); };
}
