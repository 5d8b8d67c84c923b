// pages/run.js: one run: its status, input, result or error with the
// traceback, the waterfall of its steps, each step's details with its
// stored value (fetched on demand: GET /runs/{id}/step?id=STEP), and the
// buttons to cancel it or rerun it from a step. While the run has not
// ended the page refreshes it once a second.
import { h, replace, table } from '../dom.js';
import * as api from '../api.js';
import { duration, runDuration, size, statusChip, time, triggerText, valueBlock, FINISHED } from '../format.js';
import { waterfall } from '../waterfall.js';

const INTERNAL = /^(sleep|wait|wait_result|send|emit)@/;

function field(name, ...value) {
  return h('div', null, h('dt', null, name), h('dd', null, ...value));
}

export async function render(root, ctx) {
  const id = ctx.id;
  let stopped = false, timer = null, selected = null, run = null;
  const abort = new AbortController();

  const head = h('div', { class: 'page-head' });
  const actions = h('div', { class: 'actions', role: 'group', 'aria-label': 'Run actions' });
  const facts = h('dl', { class: 'facts' });
  const errorBox = h('section', { class: 'error-box', hidden: true, 'aria-labelledby': 'err-title' });
  const io = h('div', { class: 'io' });
  const wf = h('section', { 'aria-labelledby': 'wf-title' });
  const detail = h('section', { class: 'step-detail', 'aria-live': 'polite' });
  const stepsTable = h('section', { 'aria-labelledby': 'steps-title' });
  const logs = h('section', { hidden: true });
  replace(root, head, actions, facts, errorBox, io, wf, detail, stepsTable, logs);

  const VALUE_LIMIT = 10000; // characters of a value shown before "Show all"
  const values = new Map(); // step id -> its value block once fetched (kept across refreshes)

  async function loadValue(st, button) {
    button.disabled = true;
    try {
      const doc = await api.get(`/runs/${api.seg(run.run_id)}/step${api.query({ id: st.id })}`, { signal: abort.signal });
      const block = valueBlock(doc.value, { limit: VALUE_LIMIT, label: 'value' });
      values.set(st.id, block);
      // a refresh may have drawn the step again meanwhile: draw it from the cache
      if (selected === st.id) showStep((run.steps || []).find((x) => x.id === st.id) || st);
      ctx.showError(null);
    } catch (e) {
      button.disabled = false;
      if (e.name !== 'AbortError' && !stopped) ctx.showError(e);
    }
  }

  // the stored value: a button that fetches it, or the block once fetched
  function valueSlot(st, open) {
    const slot = h('div', { class: 'step-value' });
    if (values.has(st.id)) { slot.append(values.get(st.id)); return slot; }
    if (st.status !== 'completed') return slot;
    const button = h('button', { type: 'button', class: 'show-value' }, `Show value (${size(st.size)})`);
    button.addEventListener('click', () => loadValue(st, button));
    slot.append(button);
    if (open) loadValue(st, button);
    return slot;
  }

  function showStep(st, { open = false } = {}) {
    selected = st ? st.id : null;
    if (!st) { detail.replaceChildren(); return; }
    replace(detail,
      h('h2', null, 'Step ', h('code', null, st.id)),
      h('dl', { class: 'facts' },
        field('status', statusChip(st.status)),
        field('started', time(st.started_at)),
        field('duration', duration(st.duration_ms)),
        field('attempts', String(Array.isArray(st.attempts) ? st.attempts.length : st.attempts)),
        field('stored value', size(st.size)),
        st.branch !== undefined ? field('branch', st.branch || 'main') : null),
      st.error ? h('pre', { class: 'traceback' }, typeof st.error === 'string' ? st.error
        : st.error.traceback || st.error.message || JSON.stringify(st.error)) : null,
      valueSlot(st, open));
  }

  async function act(button, fn) {
    button.disabled = true;
    try { await fn(); ctx.showError(null); } catch (e) { ctx.showError(e); } finally { button.disabled = false; }
  }

  let actionsFor = null; // the status and steps the buttons were drawn for
  function drawActions(r) {
    const userSteps = (r.steps || []).filter((st) => !INTERNAL.test(st.id));
    const key = `${r.status}|${userSteps.length}`;
    if (actionsFor === key) return;
    if (!actionsFor || actionsFor.split('|')[0] !== r.status) armed = false;
    actionsFor = key;
    const buttons = [];
    if (!FINISHED.has(r.status)) {
      const cancel = h('button', { type: 'button', class: 'danger', id: 'cancel' }, 'Cancel run');
      cancel.addEventListener('click', () => act(cancel, async () => {
        if (!confirmCancel(r)) return;
        await api.post(`/runs/${api.seg(r.run_id)}/cancel`, {});
        await refresh();
      }));
      if (armed) { cancel.textContent = 'Confirm cancel'; cancel.classList.add('armed'); }
      buttons.push(cancel);
    }
    if (userSteps.length) {
      const pick = h('select', { id: 'rerun-from', 'aria-label': 'Step to rerun from' },
        userSteps.map((st) => h('option', { value: st.id }, st.id)));
      const rerun = h('button', { type: 'button', id: 'rerun' }, 'Rerun from step');
      rerun.addEventListener('click', () => act(rerun, async () => {
        const doc = await api.post(`/runs/${api.seg(r.run_id)}/rerun`, { from: pick.value });
        location.hash = ctx.href('runs', doc.run_id);
      }));
      buttons.push(h('label', null, 'Rerun from ', pick), rerun);
    }
    replace(actions, ...buttons);
  }

  // a dialog-free confirmation keeps the page scriptable: the button asks once
  let armed = false;
  function confirmCancel() {
    if (armed) return true;
    armed = true;
    const b = actions.querySelector('#cancel');
    b.textContent = 'Confirm cancel';
    b.classList.add('armed');
    b.focus();
    return false;
  }

  function draw(r) {
    run = r;
    replace(head, h('h1', null, 'Run ', h('code', { class: 'run-id' }, r.run_id)), statusChip(r.status));
    drawActions(r);
    replace(facts,
      field('pipeline', h('a', { href: ctx.href('pipelines', r.pipeline) }, r.pipeline)),
      field('namespace', r.namespace),
      field('trigger', triggerText(r.trigger)),
      field('created', time(r.created_at)),
      field('started', time(r.started_at)),
      field('finished', time(r.finished_at)),
      field('duration', duration(runDuration(r))),
      field('attempt', String(r.attempt ?? 0)),
      field('progress', r.progress ? `${r.progress.steps_done} of ${r.progress.steps_seen} steps done` : '—'),
      field('source hash', r.source_hash ? h('code', null, r.source_hash) : '—'),
      r.rerun_of ? field('rerun of', h('a', { href: ctx.href('runs', r.rerun_of) }, r.rerun_of),
        r.rerun_from ? ` from ${r.rerun_from}` : '') : null);
    if (r.error && r.error !== null && typeof r.error === 'object') {
      replace(errorBox,
        h('h2', { id: 'err-title' }, 'Error', r.error.step ? ` in step ${r.error.step}` : ''),
        h('p', { class: 'error-message' }, r.error.message || ''),
        r.error.reason ? h('p', { class: 'muted' }, `reason: ${r.error.reason}`) : null,
        r.error.traceback ? h('pre', { class: 'traceback' }, r.error.traceback) : null);
      errorBox.hidden = false;
    } else {
      errorBox.hidden = true;
    }
    replace(io,
      h('section', { class: 'panel' }, h('h2', null, 'Input'), valueBlock(r.input, { label: 'input' })),
      h('section', { class: 'panel' }, h('h2', null, 'Result'),
        r.status === 'completed' ? valueBlock(r.result, { label: 'result' }) : h('p', { class: 'muted' }, FINISHED.has(r.status) ? 'No result.' : 'Not finished yet.')));
    const steps = r.steps || [];
    replace(wf, h('h2', { id: 'wf-title' }, 'Steps over time'), waterfall(r, steps, showStep));
    replace(stepsTable, h('h2', { id: 'steps-title' }, `Steps (${steps.length})`),
      table(['Step', 'Status', 'Started', 'Duration', 'Attempts', 'Stored', 'Error'], steps.map((st) => h('tr', null,
        h('td', { class: 'mono' }, h('button', { type: 'button', class: 'link', on: { click: () => showStep(st) } }, st.id)),
        h('td', null, statusChip(st.status)),
        h('td', null, time(st.started_at)),
        h('td', { class: 'num' }, duration(st.duration_ms)),
        h('td', { class: 'num' }, String(Array.isArray(st.attempts) ? st.attempts.length : st.attempts)),
        h('td', { class: 'num' }, size(st.size), st.status === 'completed' ? [' ', h('button', {
          type: 'button', class: 'link', 'aria-label': `Show the value of step ${st.id}`,
          on: { click: () => { showStep(st, { open: true }); detail.scrollIntoView({ block: 'nearest' }); } },
        }, 'show')] : null),
        h('td', null, st.error ? (typeof st.error === 'string' ? st.error : st.error.message) : '')))));
    if (Array.isArray(r.logs)) {
      replace(logs, h('h2', null, 'Logs'), h('pre', { class: 'logs' },
        r.logs.map((l) => (typeof l === 'string' ? l : `${l.ts || ''} ${l.level || ''} ${l.step ? `[${l.step}] ` : ''}${l.message || JSON.stringify(l)}`)).join('\n')));
      logs.hidden = false;
    }
    if (selected) showStep(steps.find((st) => st.id === selected));
  }

  async function refresh() {
    const r = await api.get(`/runs/${api.seg(id)}`, { signal: abort.signal });
    if (!stopped) draw(r);
    return r;
  }

  async function tick() {
    timer = null;
    if (stopped) return;
    if (!document.hidden) {
      try { await refresh(); } catch (e) { if (e.name !== 'AbortError' && !stopped) ctx.showError(e); }
    }
    if (!stopped && run && !FINISHED.has(run.status)) timer = setTimeout(tick, 1000);
  }

  try {
    await refresh();
  } catch (e) {
    if (e instanceof api.ApiError && e.status === 404) {
      replace(root, h('h1', null, 'Run not found'), h('p', null, 'No run ', h('code', null, id), ' in this namespace. ',
        h('a', { href: ctx.href('runs') }, 'All runs')));
      return null;
    }
    throw e;
  }
  if (!FINISHED.has(run.status)) timer = setTimeout(tick, 1000);
  return () => { stopped = true; if (timer) clearTimeout(timer); abort.abort(); };
}
