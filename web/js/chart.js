// chart.js: the duration trend of a pipeline's runs, drawn by uPlot
// (vendored). uPlot's minified build is a classic script: it is loaded once
// with a <script> element from this origin (allowed by the page's CSP).
import { h } from './dom.js';
import { duration } from './format.js';

let loading = null;
function loadUPlot() {
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      document.head.append(h('link', { rel: 'stylesheet', href: '/ui/vendor/uplot/uPlot.min.css' }));
      const sc = h('script', { src: '/ui/vendor/uplot/uPlot.iife.min.js' });
      sc.addEventListener('load', () => resolve(window.uPlot));
      sc.addEventListener('error', () => reject(new Error('uPlot did not load')));
      document.head.append(sc);
    });
  }
  return loading;
}

/** runs: [{created_at, duration_ms, status}] oldest first -> element */
export async function trend(runs, width) {
  const uPlot = await loadUPlot();
  // x is the run's place in the series (oldest 1): runs come in bursts and
  // gaps, and a time axis would crowd a burst into one spot
  const xs = [], ok = [], bad = [];
  for (const r of runs) {
    xs.push(xs.length + 1);
    const sec = r.duration_ms / 1000;
    ok.push(r.status === 'completed' ? sec : null);
    bad.push(r.status === 'completed' ? null : sec);
  }
  const css = getComputedStyle(document.documentElement);
  const okc = css.getPropertyValue('--ok').trim(), badc = css.getPropertyValue('--bad').trim();
  const fg = css.getPropertyValue('--muted').trim(), grid = css.getPropertyValue('--line').trim();
  const el = h('div', { class: 'chart', role: 'img', 'aria-label': `duration of the last ${runs.length} finished runs` });
  const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
  // eslint-disable-next-line no-new
  new uPlot({
    width: Math.max(280, width), height: 200,
    scales: { x: { time: false } },
    series: [{ label: 'run', value: (u, v) => (v === null || !runs[v - 1] ? '—' : `#${v} ${runs[v - 1].run_id}`) }, { label: 'completed', stroke: okc, width: 1.5, points: { show: true, size: 5 }, spanGaps: true,
      value: (u, v) => (v === null ? '—' : duration(v * 1000)) },
    { label: 'failed / cancelled', stroke: badc, width: 0, points: { show: true, size: 7, fill: badc },
      value: (u, v) => (v === null ? '—' : duration(v * 1000)) }],
    axes: [{ ...axis, label: 'runs, oldest to newest', values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : '')) }, { ...axis, values: (u, vals) => vals.map((v) => duration(v * 1000)), size: 70 }],
  }, [xs, ok, bad], el);
  return el;
}
