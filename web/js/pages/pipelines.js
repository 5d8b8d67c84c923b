// pages/pipelines.js: the pipelines serve has loaded (GET /pipelines): file,
// description, parameters, schedules, triggers and options of each.
import { h, replace, table } from '../dom.js';
import * as api from '../api.js';

function list(v) {
  if (!v) return [];
  if (Array.isArray(v)) return v;
  if (typeof v === 'object') return Object.keys(v);
  return [String(v)];
}

function names(v) {
  return list(v).map((x) => (x && typeof x === 'object' ? x.name || x.event || x.pattern || JSON.stringify(x) : String(x)));
}

export function where(p) {
  if (!p.file) return '—';
  return p.line ? `${p.file}:${p.line}` : p.file;
}

export async function render(root, ctx) {
  const doc = await api.get('/pipelines');
  const ps = (doc.pipelines || []).slice().sort((a, b) => a.name.localeCompare(b.name));
  replace(root,
    h('div', { class: 'page-head' }, h('h1', null, ctx.ns ? `Pipelines of ${ctx.ns}` : 'Pipelines'),
      h('span', { class: 'muted' }, `${ps.length} loaded`)),
    table(['Pipeline', 'Description', 'File', 'Parameters', 'Schedules', 'Triggers', 'Runs'], ps.map((p) => h('tr', { dataset: { pipeline: p.name } },
      h('td', null, h('a', { href: ctx.href('pipelines', p.name) }, p.name)),
      h('td', null, p.description || ''),
      h('td', { class: 'mono' }, where(p)),
      h('td', null, list(p.parameters).join(', ')),
      h('td', null, names(p.schedules).join(', ')),
      h('td', null, [...names(p.on).map((n) => `on ${n}`), ...names(p.consumers).map((n) => `consume ${n}`)].join(', ')),
      h('td', null, h('a', { href: ctx.href('runs', null, { pipeline: p.name }) }, 'history'))))));
  if (!ps.length) root.append(h('p', { class: 'muted' }, 'No pipelines are loaded: put .lua files in serve\'s folder.'));
}
