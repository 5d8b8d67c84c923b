// api.js: the page's only door to the server: the public JSON API of
// `sluice serve` (README "HTTP API"), the same routes a script uses. The API
// key, once the server asks for one (401), lives in sessionStorage for this
// tab and travels in the X-API-Key header, never in a URL.
import { parseJSON } from './format.js';
import { askKey } from './keydialog.js';

const KEY = 'sluice.api_key';

export class ApiError extends Error {
  constructor(status, doc, path) {
    super(doc && doc.error ? doc.error : `HTTP ${status} on ${path}`);
    this.status = status;
    this.code = doc && doc.code;
    this.doc = doc;
  }
}

export function apiKey() { return sessionStorage.getItem(KEY); }
export function forgetKey() { sessionStorage.removeItem(KEY); }

let asking = null; // one dialog however many requests got a 401

async function keyAfter401(doc) {
  if (!asking) {
    asking = askKey(doc && doc.error).then((k) => {
      asking = null;
      if (k) sessionStorage.setItem(KEY, k);
      return k;
    });
  }
  return asking;
}

/** One request. opts: body (sent as JSON), text (answer read as text),
 *  signal, headers. Returns the decoded document (or text); throws ApiError
 *  for an error status, after asking for a key on a 401. */
export async function request(method, path, opts = {}) {
  for (;;) {
    const headers = { Accept: opts.text ? 'text/plain' : 'application/json', ...(opts.headers || {}) };
    const key = apiKey();
    if (key) headers['X-API-Key'] = key;
    const init = { method, headers, signal: opts.signal, cache: 'no-store', credentials: 'omit' };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    const res = await fetch(path, init);
    const text = await res.text();
    let doc = null;
    if (!opts.text || !res.ok) {
      try { doc = text ? parseJSON(text) : null; } catch { doc = { error: text.slice(0, 200) }; }
    }
    if (res.status === 401) {
      if (await keyAfter401(doc)) continue;
      throw new ApiError(401, doc, path);
    }
    if (!res.ok) throw new ApiError(res.status, doc, path);
    return opts.text ? text : doc;
  }
}

export const get = (path, opts) => request('GET', path, opts);
export const post = (path, body, opts = {}) => request('POST', path, { ...opts, body });
export const put = (path, body, opts = {}) => request('PUT', path, { ...opts, body });

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Path segments for ids that may hold "/" (pipelines "gcp/cost", run ids). */
export const seg = (id) => String(id).split('/').map(encodeURIComponent).join('/');

/** Reads a Server-Sent Events route with fetch (so the key goes in a
 *  header, which EventSource cannot send). onEvent gets {id, event, data}.
 *  Resolves when the stream ends or signal aborts. */
export async function sse(path, onEvent, signal) {
  for (;;) {
    const headers = { Accept: 'text/event-stream' };
    const key = apiKey();
    if (key) headers['X-API-Key'] = key;
    const res = await fetch(path, { headers, signal, cache: 'no-store', credentials: 'omit' });
    if (res.status === 401) {
      let doc = null;
      try { doc = parseJSON(await res.text()); } catch { /* not JSON */ }
      if (await keyAfter401(doc)) continue;
      throw new ApiError(401, doc, path);
    }
    if (!res.ok) {
      let doc = null;
      try { doc = parseJSON(await res.text()); } catch { /* not JSON */ }
      throw new ApiError(res.status, doc, path);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let ev = { id: null, event: 'message', data: [] };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          if (line === '') {
            if (ev.data.length) onEvent({ id: ev.id, event: ev.event, data: ev.data.join('\n') });
            ev = { id: ev.id, event: 'message', data: [] };
          } else if (!line.startsWith(':')) {
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (field === 'data') ev.data.push(val);
            else if (field === 'id') ev.id = val;
            else if (field === 'event') ev.event = val;
          }
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}
