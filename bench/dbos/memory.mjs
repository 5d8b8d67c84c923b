// (d) memory: RSS of a DBOS node worker idle after launch, and its peak (VmHWM) under a
// 64-concurrent load, plus the RSS/PSS of every process of the Postgres cluster.
// Usage: node memory.mjs [idleSeconds=12]
import { spawn } from 'node:child_process';
import { procMem, sleep, emit, postgresPids } from './common.mjs';

const IDLE_S = Number(process.argv[2] || 12); // > pg-pool's 10 s idle timeout
const here = new URL('.', import.meta.url).pathname;
const cluster = () => {
  const ps = postgresPids().map((p) => procMem(p));
  const sum = (k) => ps.reduce((a, m) => a + (m[k] ?? 0), 0);
  return { processes: ps.length, rss_kB: sum('rss_kB'), pss_kB: sum('pss_kB'), rss_anon_kB: sum('rss_anon_kB') };
};
const w = spawn(process.execPath, ['idle_worker.mjs'], { cwd: here, stdio: ['pipe', 'pipe', 'inherit'] });
let buf = '';
const seen = [];
w.stdout.on('data', (d) => { buf += d; seen.push(...buf.split('\n').slice(0, -1)); buf = buf.slice(buf.lastIndexOf('\n') + 1); });
const waitFor = async (s, ms = 120000) => { const t0 = Date.now(); while (!seen.includes(s)) { if (Date.now() - t0 > ms) throw new Error(`timeout waiting for ${s}`); await sleep(20); } };
await waitFor('ready');
await sleep(IDLE_S * 1000);
const idle = { node: procMem(w.pid), postgres: cluster() };
w.stdin.write('load\n');
await waitFor('loaded');
const load = { node: procMem(w.pid), postgres: cluster() };
w.stdin.write('quit\n');
await waitFor('bye');
emit('memory', {
  mode: 'memory', idle_s: IDLE_S,
  idle_node_rss_kB: idle.node.rss_kB, idle_postgres_pss_kB: idle.postgres.pss_kB,
  load64_node_hwm_kB: load.node.hwm_kB, load64_postgres_pss_kB: load.postgres.pss_kB,
  idle, after_load64: load,
});
