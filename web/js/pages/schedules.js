// pages/schedules.js: every schedule: its spec in canonical form and in
// words, the next fires, the last fire, how many runs it started, a switch
// to enable or disable it (PUT /schedules/{name}, kept across restarts) and
// a button to trigger it now (POST /schedules/{name}/trigger).
import { h, replace, table } from '../dom.js';
import * as api from '../api.js';
import { time, relative } from '../format.js';
import { inWords } from '../cron_words.js';

/** The next fires of a schedule: the API's list when it gives one, else
 *  what follows from next_run_at for a plain interval (fires at multiples
 *  of the interval in UTC), else only next_run_at. */
export function nextFires(sc, n = 5) {
  if (Array.isArray(sc.next_fires)) return sc.next_fires.slice(0, n);
  if (!sc.next_run_at) return [];
  if (sc.kind === 'interval' && sc.interval_ms && /^every \d+[smhd]$/.test(sc.canonical)) {
    const t = new Date(sc.next_run_at).getTime();
    return Array.from({ length: n }, (_, i) => new Date(t + i * sc.interval_ms).toISOString());
  }
  return [sc.next_run_at];
}

export async function render(root, ctx) {
  const only = ctx.params.get('name');
  const tbody = h('tbody');
  const tbl = h('div', { class: 'table-wrap' }, h('table', { id: 'schedules-table' },
    h('thead', null, h('tr', null, ['Schedule', 'Spec', 'Next fires', 'Last fire', 'Runs', 'Enabled', ''].map((t) => h('th', { scope: 'col' }, t)))),
    tbody));
  replace(root, h('div', { class: 'page-head' }, h('h1', null, ctx.ns ? `Schedules of ${ctx.ns}` : 'Schedules'),
    only ? h('a', { class: 'button', href: ctx.href('schedules') }, 'All schedules') : null), tbl);

  function row(sc) {
    const tr = h('tr', { dataset: { schedule: sc.name, enabled: String(!!sc.enabled) } });
    const toggle = h('input', { type: 'checkbox', role: 'switch', checked: !!sc.enabled, 'aria-label': `enabled: ${sc.name}` });
    const state = h('span', { class: 'state' }, sc.enabled ? 'enabled' : 'disabled');
    toggle.addEventListener('change', async () => {
      toggle.disabled = true;
      try {
        const doc = await api.put(`/schedules/${api.seg(sc.name)}`, { enabled: toggle.checked });
        ctx.showError(null);
        tr.replaceWith(row(doc));
      } catch (e) {
        toggle.checked = !toggle.checked;
        toggle.disabled = false;
        ctx.showError(e);
      }
    });
    const trigger = h('button', { type: 'button', class: 'trigger' }, 'Trigger now');
    const result = h('span', { class: 'trigger-result' });
    trigger.addEventListener('click', async () => {
      trigger.disabled = true;
      try {
        const doc = await api.post(`/schedules/${api.seg(sc.name)}/trigger`, {});
        replace(result, ' ', h('a', { href: ctx.href('runs', doc.run_id) }, doc.run_id));
        ctx.showError(null);
      } catch (e) { ctx.showError(e); } finally { trigger.disabled = false; }
    });
    const fires = sc.enabled ? nextFires(sc) : [];
    const tz = sc.tz || 'UTC';
    replace(tr,
      h('td', null, h('b', null, sc.name), h('span', { class: 'words' }, 'pipeline ',
        h('a', { href: ctx.href('pipelines', sc.pipeline) }, sc.pipeline), sc.source === 'api' ? ' · created over the API' : '')),
      h('td', null, h('code', null, sc.canonical), h('span', { class: 'words' }, `${inWords(sc.canonical)} ${tz}`)),
      h('td', { class: 'next' }, fires.length ? h('ol', { class: 'fires' }, fires.map((f, i) => h('li', null, time(f),
        i === 0 ? h('span', { class: 'muted rel' }, ` ${relative(f)}`) : null)))
        : h('span', { class: 'muted' }, sc.enabled ? 'never' : '—')),
      h('td', null, time(sc.last_run_at)),
      h('td', { class: 'num' }, h('a', { href: ctx.href('runs', null, { pipeline: sc.pipeline }) }, String(sc.runs ?? 0))),
      h('td', null, h('label', { class: 'switch' }, toggle, state)),
      h('td', null, trigger, result));
    return tr;
  }

  const doc = await api.get('/schedules');
  let list = doc.schedules || [];
  if (ctx.ns) list = list.filter((sc) => !sc.namespace || sc.namespace === ctx.ns);
  if (only) list = list.filter((sc) => sc.name === only);
  tbody.replaceChildren(...list.map(row));
  if (!list.length) tbody.append(h('tr', null, h('td', { colspan: 7, class: 'empty' }, 'No schedules.')));
}
