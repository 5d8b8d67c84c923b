// waterfall.js: a run's steps on a time axis. Each step is a bar from its
// start for its duration (all attempts: retries are marked on the bar, or
// drawn one by one when the API lists them); a durable sleep or wait is a
// gap from where it began to where the run went on, labelled with its
// reason; emits and sends are marks. Steps that ran at the same time sit in
// separate lanes: by branch when the API names it, otherwise by overlap
// (concurrent steps never share a lane).
import { h } from './dom.js';
import { duration, FINISHED } from './format.js';

// internal steps the engine records as "<kind>@<branch position>"
const INTERNAL = /^(sleep|wait|wait_result|send|emit)@(?:(.*)\/)?\d+$/;
const GAP_KINDS = { sleep: 'sleep', wait: 'waiting for an event' };

const RESOLUTION_MS = 1;

const ms = (iso) => new Date(iso).getTime();

/** The layout of a run's steps: {items, lanes, t0, span}. Pure. */
export function layout(run, steps, now = Date.now()) {
  const list = (steps || []).filter((st) => st.started_at).map((st) => {
    const m = INTERNAL.exec(st.id);
    return { step: st, kind: m ? m[1] : 'step', start: ms(st.started_at), dur: Math.max(0, st.duration_ms || 0) };
  }).sort((a, b) => a.start - b.start);
  const t0 = Math.min(ms(run.started_at || run.created_at), ...list.map((i) => i.start));
  const runEnd = run.finished_at ? ms(run.finished_at) : FINISHED.has(run.status) ? null : now;
  let tEnd = Math.max(runEnd || 0, ...list.map((i) => i.start + i.dur));
  const hasBranch = list.some((i) => typeof i.step.branch === 'string');
  for (const it of list) {
    it.end = it.start + it.dur;
    if (GAP_KINDS[it.kind]) {
      // the gap lasts until the next thing in its branch (or the run) happened
      const later = list.filter((o) => o !== it && o.start >= it.start &&
        (!hasBranch || o.step.branch === it.step.branch) && o.start + o.dur > it.start);
      const next = later.length ? Math.min(...later.map((o) => o.start)) : null;
      it.end = next !== null && next > it.start ? next : (runEnd || tEnd);
      it.gap = { reason: GAP_KINDS[it.kind], open: next === null && !FINISHED.has(run.status) };
    }
    tEnd = Math.max(tEnd, it.end);
  }
  // lanes
  const lanes = [];
  if (hasBranch) {
    const byName = new Map();
    for (const it of list) {
      const b = it.step.branch || '';
      if (!byName.has(b)) { byName.set(b, lanes.length); lanes.push({ name: b || 'main', items: [] }); }
      it.lane = byName.get(b);
      lanes[it.lane].items.push(it);
    }
  } else {
    const ends = [];
    for (const it of list) {
      // times have millisecond resolution: two steps one after the other
      // within a millisecond look overlapped, so an overlap counts from 1 ms
      let lane = ends.findIndex((e) => e <= it.start + RESOLUTION_MS);
      if (lane < 0) { lane = ends.length; ends.push(0); lanes.push({ name: lanes.length ? `lane ${lanes.length + 1}` : 'main', items: [] }); }
      ends[lane] = Math.max(ends[lane], it.end);
      it.lane = lane;
      lanes[lane].items.push(it);
    }
  }
  return { items: list, lanes, t0, span: Math.max(1, tEnd - t0) };
}

function ticks(span) {
  const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5,
    18e5, 36e5, 72e5, 216e5, 432e5, 864e5];
  const step = steps.find((st) => span / st <= 6) || span / 6;
  const out = [];
  for (let t = 0; t <= span; t += step) out.push(t);
  return out;
}

const pct = (x, span) => `${Math.min(100, Math.max(0, (x / span) * 100))}%`;

/** The waterfall element; onSelect(step) when a bar is chosen. */
// Where a bar's label goes: right of the bar while a fifth of the track is
// left there, else on the side with more room, or inside a step's bar when
// the bar itself is the widest place (a step that fills the track: its
// label would be clipped at either edge).
function placeText(it, L) {
  const right = 1 - (it.end - L.t0) / L.span;
  const left = (it.start - L.t0) / L.span;
  const inside = it.kind === 'step' ? (it.end - it.start) / L.span : 0;
  if (right >= 0.2) return '';
  if (inside > left && inside > right) return ' inside';
  return left > right ? ' left' : '';
}

export function waterfall(run, steps, onSelect) {
  const L = layout(run, steps);
  const root = h('div', { class: 'waterfall', role: 'list', 'aria-label': `Steps of run ${run.run_id} on a time axis` });
  if (!L.items.length) {
    root.append(h('p', { class: 'muted' }, 'No steps recorded yet.'));
    return root;
  }
  const axis = h('div', { class: 'wf-row wf-axis', 'aria-hidden': 'true' }, h('div', { class: 'wf-label' }, 'time'));
  const track = h('div', { class: 'wf-track' });
  for (const t of ticks(L.span)) {
    const tick = h('span', { class: t / L.span > 0.85 ? 'wf-tick end' : 'wf-tick' }, `+${duration(t)}`);
    tick.style.left = pct(t, L.span);
    track.append(tick);
  }
  axis.append(track);
  root.append(axis);
  L.lanes.forEach((lane, li) => {
    if (L.lanes.length > 1) {
      root.append(h('div', { class: 'wf-lane-head', role: 'presentation' }, lane.name));
    }
    for (const it of lane.items) {
      const st = it.step;
      const label = it.gap ? `${it.kind}` : st.id;
      const bar = h('button', {
        type: 'button',
        class: ['wf-bar', it.gap ? 'wf-gap' : it.kind === 'step' ? `wf-step st-${st.status}` : 'wf-mark',
          st.attempts > 1 ? 'wf-retried' : ''],
        dataset: { step: st.id, lane: String(li) },
        title: it.gap
          ? `${st.id}: ${it.gap.reason} for ${duration(it.end - it.start)}${it.gap.open ? ' so far' : ''}`
          : `${st.id}: ${st.status}, ${duration(st.duration_ms)}${st.attempts > 1 ? `, ${st.attempts} attempts` : ''}`,
      });
      bar.style.left = pct(it.start - L.t0, L.span);
      bar.style.width = it.kind === 'step' || it.gap ? pct(Math.max(it.end - it.start, L.span / 400), L.span) : '';
      if (Array.isArray(st.attempts)) {
        // the API lists attempts: one segment each
        for (const a of st.attempts) {
          const seg = h('span', { class: `wf-attempt st-${a.status || (a.error ? 'failed' : 'completed')}` });
          seg.style.left = pct(ms(a.started_at) - it.start, Math.max(1, it.end - it.start));
          seg.style.width = pct(a.duration_ms || 0, Math.max(1, it.end - it.start));
          bar.append(seg);
        }
      }
      const text = it.gap ? `${it.gap.reason} ${duration(it.end - it.start)}${it.gap.open ? '…' : ''}`
        : it.kind === 'step' ? `${duration(st.duration_ms)}${st.attempts > 1 ? ` ×${typeof st.attempts === 'number' ? st.attempts : st.attempts.length}` : ''}`
          : it.kind;
      bar.append(h('span', { class: `wf-bar-text${it.gap ? '' : placeText(it, L)}` }, text));
      bar.addEventListener('click', () => onSelect && onSelect(st));
      root.append(h('div', { class: ['wf-row', it.gap ? 'is-gap' : ''], role: 'listitem' },
        h('div', { class: 'wf-label mono', title: st.id }, label),
        h('div', { class: 'wf-track' }, bar)));
    }
  });
  return root;
}
