// (c) recovery: a workflow of N steps in a child node process is SIGKILLed (by PID) once
// KILL_AT step bodies ran; after 0.5 s a fresh process recovers it; "restart to completion" is
// spawn -> durable SUCCESS (workflow_status.updated_at); also spawn -> exit, and the phases.
// Adapted from ../shared/peers/dbos/bench_recovery.mjs (one run per invocation).
// Usage: node recovery.mjs [steps=10000] [runs=1] [killFraction=0.5]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { adminClient, emit, sleep } from './common.mjs';

const N = Number(process.argv[2] || 10000);
const RUNS = Number(process.argv[3] || 1);
const KILL_AT = Math.floor(N * Number(process.argv[4] || 0.5));
const here = new URL('.', import.meta.url).pathname;
const dir = fs.mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), 'dbos-recovery-'));

function startChild(args) {
  const child = spawn(process.execPath, ['recovery_worker.mjs', ...args], { cwd: here, stdio: ['ignore', 'pipe', 'inherit'] });
  let buf = '';
  const lines = [], waiters = [];
  child.stdout.on('data', (d) => {
    buf += d;
    let k;
    while ((k = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, k)));
      buf = buf.slice(k + 1);
      waiters.splice(0).forEach((w) => w());
    }
  });
  const exited = new Promise((r) => child.on('exit', (code, sig) => r({ code, sig })));
  const nextLine = async () => {
    while (lines.length === 0) await new Promise((r) => waiters.push(r));
    return lines.shift();
  };
  return { child, exited, nextLine };
}
// the timeout's timer is unref'd: it must not keep node alive once the work is done
const withTimeout = (p, ms, what) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timeout: ${what}`)), ms).unref())]);

const admin = await adminClient();
try {
  for (let r = 0; r < RUNS; r++) {
    const wfid = `recovery-${N}-${randomUUID()}`;
    const side = path.join(dir, `${wfid}.txt`);
    fs.writeFileSync(side, '');
    const a = startChild(['start', wfid, String(N), side]);
    await withTimeout(a.nextLine(), 60000, 'start');
    const tStart = Date.now();
    for (;;) {
      if (fs.statSync(side).size >= KILL_AT * 8) break;
      if (Date.now() - tStart > 180000) { a.child.kill('SIGKILL'); throw new Error('no progress'); }
      await sleep(1);
    }
    process.kill(a.child.pid, 'SIGKILL');
    const tKill = Date.now();
    await a.exited;
    const before = fs.statSync(side).size / 8;
    const cp = Number((await admin.query('SELECT count(*) AS c FROM dbos.operation_outputs WHERE workflow_uuid=$1', [wfid])).rows[0].c);
    await sleep(500);
    const tSpawn = Date.now();
    const b = startChild(['recover', wfid, String(N), side]);
    const out = await withTimeout(b.nextLine(), 300000, 'recover');
    await b.exited;
    const tExit = Date.now();
    const fin = (await admin.query('SELECT status, updated_at FROM dbos.workflow_status WHERE workflow_uuid=$1', [wfid])).rows[0];
    const recs = fs.readFileSync(side, 'utf8').trim().split('\n').map(Number);
    const after = recs.slice(before);
    const counts = new Map();
    for (const i of recs) counts.set(i, (counts.get(i) || 0) + 1);
    const dups = [...counts.entries()].filter(([, c]) => c > 1).map(([i]) => i);
    const missing = N - counts.size;
    const reexec = after.filter((i) => i < cp).length;
    const replayMs = out.t_first_exec - out.t_body_start;
    emit('recovery', {
      mode: 'recovery', run: r + 1, steps: N, kill_at: KILL_AT, killed_after_ms: tKill - tStart,
      executed_before_kill: before, checkpointed_before_kill: cp, executed_after_restart: after.length,
      reexecuted_committed_steps: reexec, duplicates: dups, missing, final_status: fin.status,
      restart_to_completion_ms: Number(fin.updated_at) - tSpawn, restart_to_exit_ms: tExit - tSpawn,
      phases_ms: {
        spawn_to_main: out.t_main - tSpawn, imports: out.t_imported - out.t_main, launch: out.t_launched - out.t_imported,
        launch_to_body: out.t_body_start - out.t_launched, replay_memoized: replayMs,
        execute_remaining: out.t_last_exec - out.t_first_exec, last_step_to_success: Number(fin.updated_at) - out.t_last_exec,
      },
      replay_us_per_step: +((replayMs * 1000) / cp).toFixed(1),
      verified: fin.status === 'SUCCESS' && missing === 0 && reexec === 0 && dups.length <= 1,
    });
  }
} finally {
  await admin.end();
  fs.rmSync(dir, { recursive: true, force: true });
}
