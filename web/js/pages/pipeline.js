// pages/pipeline.js: one pipeline: where it is defined, its parameters and
// schedules, its recent runs as a grid (runs x steps, coloured by status,
// as in Airflow's grid view), its dag as a graph, the duration trend of
// its last 50 finished runs and their success rate.
import { h, replace } from '../dom.js';
import * as api from '../api.js';
import { duration, statusChip, time, FINISHED } from '../format.js';
import { where } from './pipelines.js';

const INTERNAL = /^(sleep|wait|wait_result|send|emit)@/;
const GRID_RUNS = 20;

// fetches with at most n requests in flight
async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) { const i = next++; out[i] = await fn(items[i]); }
  }));
  return out;
}

function stat(value, label, id) {
  return h('div', { class: 'stat', id }, h('b', null, value), h('span', null, label));
}

function gridOf(runs, ctx) {
  // oldest run on the left, as in Airflow
  const cols = runs.slice().reverse();
  const rows = [];
  const seen = new Set();
  for (const r of cols) for (const st of r.steps || []) {
    if (!INTERNAL.test(st.id) && !seen.has(st.id)) { seen.add(st.id); rows.push(st.id); }
  }
  const headRow = h('tr', null, h('th', { scope: 'col' }, h('span', { class: 'muted' }, 'run')), cols.map((r) => h('th', { scope: 'col' },
    h('a', { href: ctx.href('runs', r.run_id), title: `${r.run_id}: ${r.status}` }, h('span', { class: `cell run st-${r.status}` })))));
  const body = rows.map((id) => h('tr', null, h('th', { scope: 'row', title: id }, id), cols.map((r) => {
    const st = (r.steps || []).find((x) => x.id === id);
    const title = st ? `${id} in ${r.run_id}: ${st.status}, ${duration(st.duration_ms)}` : `${id}: not run in ${r.run_id}`;
    return h('td', null, h('a', { href: ctx.href('runs', r.run_id), title, 'aria-label': title },
      h('span', { class: `cell${st ? ` st-${st.status}` : ''}` })));
  })));
  return h('div', { class: 'grid-wrap' }, h('table', { class: 'grid', id: 'grid' }, h('thead', null, headRow), h('tbody', null, body)));
}

// the dag of a run: nodes that name what they are after (steps[].after)
function dagOf(run) {
  const steps = (run.steps || []).filter((st) => Array.isArray(st.after));
  if (!steps.length) return null;
  const edges = [];
  for (const st of steps) for (const a of st.after) edges.push([a, st.id]);
  return { nodes: steps.map((st) => ({ id: st.id, status: st.status })), edges };
}

export async function render(root, ctx) {
  const name = ctx.id;
  const nsq = ctx.ns ? { namespace: ctx.ns } : {};
  const [pdoc, rdoc, sdoc] = await Promise.all([
    api.get('/pipelines'),
    api.get(`/runs${api.query({ pipeline: name, limit: 50, ...nsq })}`),
    api.get('/schedules'),
  ]);
  const p = (pdoc.pipelines || []).find((x) => x.name === name);
  const runs = rdoc.runs || [];
  const schedules = (sdoc.schedules || []).filter((x) => x.pipeline === name);
  const detailed = await pool(runs.slice(0, GRID_RUNS), 6, (r) => api.get(`/runs/${api.seg(r.run_id)}`));
  const finished = runs.filter((r) => FINISHED.has(r.status));
  const ok = finished.filter((r) => r.status === 'completed').length;
  const rate = finished.length ? Math.round((ok / finished.length) * 1000) / 10 : null;
  const durations = finished.map((r) => r.duration_ms).filter((d) => typeof d === 'number').sort((a, b) => a - b);
  const median = durations.length ? durations[Math.floor(durations.length / 2)] : null;
  const newest = runs[0];

  const params = p && p.parameters && typeof p.parameters === 'object' ? Object.entries(p.parameters) : [];
  replace(root,
    h('div', { class: 'page-head' }, h('h1', null, 'Pipeline ', h('code', null, name)),
      h('a', { class: 'button', href: ctx.href('runs', null, { pipeline: name }) }, 'All runs')),
    p ? null : h('p', { class: 'muted' }, 'This pipeline is not loaded by this serve; its runs are shown below.'),
    p && p.description ? h('p', null, p.description) : null,
    h('dl', { class: 'facts' },
      h('div', null, h('dt', null, 'file'), h('dd', { class: 'mono', id: 'pipeline-file' }, p ? where(p) : '—')),
      h('div', null, h('dt', null, 'source hash'), h('dd', null, newest && newest.source_hash ? h('code', null, newest.source_hash) : '—',
        newest && newest.source_hash ? h('span', { class: 'muted note' }, 'of the newest run') : null)),
      p && p.concurrency ? h('div', null, h('dt', null, 'concurrency'), h('dd', null, JSON.stringify(p.concurrency))) : null,
      p && p.timeout ? h('div', null, h('dt', null, 'timeout'), h('dd', null, String(p.timeout))) : null),
    h('h2', null, 'Parameters'),
    params.length ? h('ul', null, params.map(([k, v]) => h('li', null, h('code', null, k), ': ',
      typeof v === 'object' ? `${v.type || 'any'}${v.required ? ', required' : ''}${v.description ? ` — ${v.description}` : ''}` : String(v))))
      : h('p', { class: 'muted' }, 'None declared.'),
    h('h2', null, 'Schedules'),
    schedules.length ? h('ul', null, schedules.map((sc) => h('li', null, h('a', { href: ctx.href('schedules', null, { name: sc.name }) }, sc.name),
      ` · ${sc.canonical} ${sc.tz || 'UTC'} · `, sc.enabled ? 'next ' : 'disabled', sc.enabled && sc.next_run_at ? time(sc.next_run_at) : null)))
      : h('p', { class: 'muted' }, 'None.'),
    h('h2', null, `Recent runs (${runs.length})`),
    h('div', { class: 'stats' },
      stat(rate === null ? '—' : `${rate}%`, `success rate of ${finished.length} finished`, 'success-rate'),
      stat(duration(median), 'median duration'),
      stat(newest ? newest.status : '—', newest ? 'newest run' : 'no runs yet')),
    h('div', { id: 'trend' }),
    h('h2', null, `Steps of the last ${detailed.length} runs`),
    detailed.length ? gridOf(detailed, ctx) : h('p', { class: 'muted' }, 'No runs yet.'),
    h('h2', null, 'Graph'),
    h('div', { id: 'dag' }));

  const trendBox = root.querySelector('#trend');
  const series = finished.filter((r) => typeof r.duration_ms === 'number').slice(0, 50).reverse();
  if (series.length >= 2) {
    const { trend } = await import('../chart.js');
    trendBox.append(await trend(series, Math.min(root.clientWidth || 900, 1100) - 20));
  } else {
    trendBox.append(h('p', { class: 'muted' }, 'The trend needs two finished runs.'));
  }

  const dagBox = root.querySelector('#dag');
  const withDag = detailed.map(dagOf).find(Boolean);
  if (withDag) {
    const { drawGraph } = await import('../graph.js');
    dagBox.append(h('div', { class: 'graph' }, await drawGraph(withDag.nodes, withDag.edges)));
    dagBox.append(h('p', { class: 'muted' }, 'From the newest run with a dag; status colours are that run\'s.'));
  } else {
    dagBox.append(h('p', { class: 'muted' }, newest ? 'No dag in the recent runs (the API gives a dag node\'s dependencies as steps[].after).' : 'No runs yet.'));
  }
  if (newest) dagBox.append(h('p', null, 'Newest run: ', h('a', { href: ctx.href('runs', newest.run_id) }, newest.run_id), ' ', statusChip(newest.status)));
}
