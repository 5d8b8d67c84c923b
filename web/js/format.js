// format.js: how values read: durations, times, sizes, statuses, JSON.
import { h } from './dom.js';

export const FINISHED = new Set(['completed', 'failed', 'cancelled']);

/** 1234 -> "1.23 s"; 0.4 -> "0.4 ms"; 7380000 -> "2 h 3 m" */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms < 1) return `${Math.round(ms * 1000) / 1000} ms`;
  if (ms < 1000) return `${Math.round(ms * 10) / 10} ms`;
  const sec = ms / 1000;
  if (sec < 60) return `${sec < 10 ? sec.toFixed(2) : sec.toFixed(1)} s`;
  const m = Math.floor(sec / 60), ss = Math.floor(sec % 60);
  if (m < 60) return `${m} m ${ss} s`;
  const hh = Math.floor(m / 60), mm = m % 60;
  if (hh < 48) return `${hh} h ${mm} m`;
  return `${Math.floor(hh / 24)} d ${hh % 24} h`;
}

/** bytes -> "512 B", "1.5 KB", "3.2 MB" (powers of 1024) */
export function size(n) {
  if (n === null || n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n, i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** An ISO 8601 time as the reader's local "YYYY-MM-DD HH:MM:SS". */
export function localTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The reader's local time of day, "HH:MM:SS" (without Intl, whose first
 *  use costs tens of milliseconds: this is on the runs page's first paint). */
export function clock(d = new Date()) {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "3 min ago", "in 5 h" */
export function relative(iso, now = Date.now()) {
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return '';
  const d = (t - now) / 1000, a = Math.abs(d);
  let text;
  if (a < 45) text = `${Math.round(a)} s`;
  else if (a < 3600) text = `${Math.round(a / 60)} min`;
  else if (a < 86400 * 2) text = `${Math.round(a / 3600)} h`;
  else text = `${Math.round(a / 86400)} d`;
  return d < 0 ? `${text} ago` : `in ${text}`;
}

/** <time> showing local time, with the UTC instant as datetime and title. */
export function time(iso, { rel = false } = {}) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: `${iso} (UTC)` },
    rel ? relative(iso) : localTime(iso));
}

/** A run's duration: recorded, or running so far. */
export function runDuration(run, now = Date.now()) {
  if (run.duration_ms !== null && run.duration_ms !== undefined) return run.duration_ms;
  const from = run.started_at || run.created_at;
  if (!from || FINISHED.has(run.status)) return null;
  return Math.max(0, now - new Date(from).getTime());
}

export function statusChip(status) {
  return h('span', { class: `status s-${status || 'unknown'}` }, status || 'unknown');
}

export function triggerText(t) {
  if (!t || typeof t !== 'object') return '—';
  return t.by !== null && t.by !== undefined && t.by !== '' ? `${t.kind}: ${t.by}` : t.kind;
}

/** JSON text to a value, keeping integers beyond 2^53 exact (as BigInt)
 *  where the browser gives the reviver the source text. */
export function parseJSON(text) {
  return JSON.parse(text, (k, v, ctx) => {
    if (typeof v === 'number' && !Number.isSafeInteger(v) && ctx && /^-?\d+$/.test(ctx.source)) {
      return BigInt(ctx.source);
    }
    return v;
  });
}

/** A value as indented JSON (BigInt as its digits). */
export function pretty(v) {
  if (v === undefined) return 'null';
  return JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? `\u0000bigint:${x}\u0000` : x), 2)
    .replace(/"\\u0000bigint:(-?\d+)\\u0000"/g, '$1');
}

/** The number of UTF-8 bytes of a string. */
export function bytes(str) {
  return new TextEncoder().encode(str).length;
}

/** A <pre> of a value: the first `limit` characters, and a button that
 *  shows all of it; the size in bytes is shown either way. */
export function valueBlock(v, { limit = 600, label = 'value' } = {}) {
  const text = pretty(v);
  const pre = h('pre', { class: 'value' });
  const wrap = h('div', { class: 'value-block' });
  const n = bytes(text);
  const meta = h('div', { class: 'value-meta muted' }, `${label}: ${size(n)} as JSON`);
  wrap.append(meta, pre);
  if (text.length <= limit) {
    pre.textContent = text;
    return wrap;
  }
  pre.textContent = text.slice(0, limit) + '…';
  let open = false;
  const btn = h('button', { type: 'button', class: 'link', 'aria-expanded': 'false' },
    `Show all ${size(n)}`);
  btn.addEventListener('click', () => {
    open = !open;
    pre.textContent = open ? text : text.slice(0, limit) + '…';
    btn.textContent = open ? 'Show less' : `Show all ${size(n)}`;
    btn.setAttribute('aria-expanded', String(open));
  });
  meta.append(' · ', btn);
  return wrap;
}
