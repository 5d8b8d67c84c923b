// app.js: the dashboard's shell: hash routes to pages, the navigation, the
// namespace scope of /{org}/pipelines paths, and each page's lifetime (a
// page returns a cleanup function that stops its polling or stream).
import { h, replace } from './dom.js';
import { ApiError } from './api.js';
import { ns, home, parseHash, href } from './routes.js';

const PAGES = [
  { path: 'runs', title: 'Runs', load: () => import('./pages/runs.js') },
  { path: 'pipelines', title: 'Pipelines', load: () => import('./pages/pipelines.js') },
  { path: 'schedules', title: 'Schedules', load: () => import('./pages/schedules.js') },
  { path: 'streams', title: 'Streams', load: () => import('./pages/streams.js') },
  { path: 'host', title: 'Host', load: () => import('./pages/host.js') },
];
const DETAIL = {
  runs: { title: 'Run', load: () => import('./pages/run.js') },
  pipelines: { title: 'Pipeline', load: () => import('./pages/pipeline.js') },
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const banner = document.getElementById('banner');
let cleanup = null;
let generation = 0;

function drawNav(current) {
  replace(nav, ...PAGES.map((p) => h('a', {
    href: href(p.path), 'aria-current': p.path === current ? 'page' : null,
  }, p.title)));
}

/** Shows an error above the page (or hides the banner with null). */
export function showError(err) {
  if (!err) { banner.hidden = true; banner.replaceChildren(); return; }
  const msg = err instanceof ApiError
    ? `${err.message}${err.code ? ` (${err.code}, HTTP ${err.status})` : ` (HTTP ${err.status})`}`
    : err instanceof TypeError ? `The server cannot be reached: ${err.message}` : String(err.message || err);
  replace(banner, h('span', null, msg), h('button', {
    type: 'button', class: 'link', on: { click: () => showError(null) }, 'aria-label': 'Dismiss',
  }, '✕'));
  banner.hidden = false;
}

async function route() {
  const gen = ++generation;
  if (cleanup) { try { cleanup(); } catch (e) { console.warn(e); } cleanup = null; }
  const r = parseHash();
  const base = PAGES.find((p) => p.path === r.page);
  const def = r.id !== null ? DETAIL[r.page] : base;
  drawNav(base ? base.path : null);
  showError(null);
  if (!def) {
    replace(main, h('h1', null, 'Not found'), h('p', null, 'No page ', h('code', null, location.hash), '. ',
      h('a', { href: href(home) }, 'Back to the dashboard')));
    return;
  }
  document.title = `${def.title} · sluice`;
  document.body.dataset.page = r.id !== null ? `${r.page}-detail` : r.page;
  delete document.body.dataset.ready;
  try {
    const mod = await def.load();
    if (gen !== generation) return;
    performance.mark(`sluice:module:${r.page}`);
    const root = h('div', { class: 'page' });
    replace(main, root);
    const ctx = { ns, id: r.id, params: r.params, href, showError, alive: () => gen === generation };
    const stop = await mod.render(root, ctx);
    if (gen !== generation) { if (stop) stop(); return; }
    cleanup = stop || null;
    document.body.dataset.ready = 'true';
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
    performance.mark(`sluice:ready:${document.body.dataset.page}`);
  } catch (err) {
    if (gen !== generation) return;
    replace(main, h('h1', null, def.title));
    showError(err);
    document.body.dataset.ready = 'error';
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
  }
}

if (ns) {
  const scope = document.getElementById('scope');
  scope.textContent = `namespace ${ns}`;
  scope.hidden = false;
}
document.getElementById('skip').addEventListener('click', (e) => { e.preventDefault(); main.focus(); });
window.addEventListener('hashchange', route);
window.addEventListener('unhandledrejection', (e) => {
  if (e.reason && e.reason.name === 'AbortError') e.preventDefault();
});
performance.mark('sluice:app');
route();
