// routes.js: the dashboard's addresses. Pages live in the hash
// ("#/runs/ID?status=failed"), so the server serves one file for all of
// them; a path /{org}/pipelines[/history|/schedules] scopes the page to
// namespace org and picks the page shown when the hash is empty.

const scoped = location.pathname.match(/^\/([^/]+)\/pipelines(?:\/(history|schedules))?\/?$/);

/** The namespace of the path, or null. */
export const ns = scoped ? decodeURIComponent(scoped[1]) : null;

/** The page an empty hash shows. */
export const home = !scoped ? 'runs'
  : scoped[2] === 'history' ? 'runs' : scoped[2] === 'schedules' ? 'schedules' : 'pipelines';

/** The current route: {page, id, params}. */
export function parseHash() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(2) : home;
  const qi = raw.indexOf('?');
  const path = qi < 0 ? raw : raw.slice(0, qi);
  const params = new URLSearchParams(qi < 0 ? '' : raw.slice(qi + 1));
  const slash = path.indexOf('/');
  const page = slash < 0 ? path : path.slice(0, slash);
  const id = slash < 0 ? null : decodeURIComponent(path.slice(slash + 1));
  return { page: page || home, id, params };
}

/** A hash link: href('runs', id, {status: 'failed'}); empty params are left out. */
export function href(page, id, params) {
  let out = `#/${page}`;
  if (id !== null && id !== undefined) out += `/${encodeURIComponent(id)}`;
  if (params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const qs = q.toString();
    if (qs) out += `?${qs}`;
  }
  return out;
}
