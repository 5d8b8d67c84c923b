// pages/host.js: the serve process: uptime (GET /health), runs active,
// writer batch size and commit latency, store size, HTTP connections and
// totals (GET /metrics), refreshed every two seconds.
import { h, replace, table } from '../dom.js';
import * as api from '../api.js';
import { clock, duration, size } from '../format.js';
import { parse, total, histogram } from '../metrics.js';

function stat(id, value, label) {
  return h('div', { class: 'stat', id }, h('b', null, value), h('span', null, label));
}

export async function render(root, ctx) {
  const stats = h('div', { class: 'stats' });
  const byStatus = h('section');
  const updated = h('span', { class: 'muted' });
  replace(root, h('div', { class: 'page-head' }, h('h1', null, 'Host'), updated), stats, byStatus);
  let stopped = false, timer = null;
  const abort = new AbortController();

  async function load() {
    const [health, text] = await Promise.all([
      api.get('/health', { signal: abort.signal }),
      api.get('/metrics', { signal: abort.signal, text: true }),
    ]);
    if (stopped) return;
    const m = parse(text);
    const batch = histogram(m, 'sluice_writer_batch_size', 0.99);
    const commit = histogram(m, 'sluice_writer_commit_seconds', 0.99);
    const fmtMs = (sec) => (sec === null || sec === Infinity ? '—' : duration(sec * 1000));
    replace(stats,
      stat('uptime', duration((health.uptime_s ?? 0) * 1000), 'uptime'),
      stat('runs-active', String(total(m, 'sluice_runs_active') ?? '—'), 'runs active'),
      stat('batch-size', batch.mean === null ? '—' : batch.mean.toFixed(1), `writer batch size (mean of ${batch.count} commits)`),
      stat('commit-latency', fmtMs(commit.mean), `commit latency, mean (p99 ≤ ${fmtMs(commit.quantile)})`),
      stat('store-size', size(total(m, 'sluice_store_map_bytes')), 'store map size'),
      stat('http-connections', String(total(m, 'sluice_http_connections') ?? '—'), 'HTTP connections'),
      stat('events-appended', String(total(m, 'sluice_events_appended_total') ?? '—'), 'events appended'));
    const statuses = new Map();
    for (const x of m) if (x.name === 'sluice_runs_total') statuses.set(x.labels.status, (statuses.get(x.labels.status) || 0) + x.value);
    replace(byStatus, h('h2', null, 'Runs finished since start, by status'),
      statuses.size ? table(['Status', 'Runs'], [...statuses.entries()].sort().map(([k, v]) => h('tr', null, h('td', null, k), h('td', { class: 'num' }, String(v)))))
        : h('p', { class: 'muted' }, 'None yet.'),
      h('p', { class: 'muted' }, 'Store: ', h('code', null, String(health.store ?? '—'))));
    updated.textContent = `updated ${clock()}`;
  }

  async function tick() {
    timer = null;
    if (!document.hidden) {
      try { await load(); ctx.showError(null); } catch (e) { if (e.name !== 'AbortError' && !stopped) ctx.showError(e); }
    }
    if (!stopped) timer = setTimeout(tick, 2000);
  }
  await load();
  timer = setTimeout(tick, 2000);
  return () => { stopped = true; if (timer) clearTimeout(timer); abort.abort(); };
}
