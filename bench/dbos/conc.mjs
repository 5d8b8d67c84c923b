// R workflows of K sequential trivial steps, all started at once (the sluice `conc R` shape).
// Usage: node conc.mjs [R=64] [K=50] [runs=1]
import { DBOS } from '@dbos-inc/dbos-sdk';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { configureDBOS, now, emit, adminClient, pgCpuSnapshot, pgCpuMsSince, procMem } from './common.mjs';

const R = Number(process.argv[2] || 64);
const K = Number(process.argv[3] || 50);
const RUNS = Number(process.argv[4] || 1);
const step = DBOS.registerStep(async (i) => ({ i, ok: true }), { name: 'trivialStep' });
const wf = DBOS.registerWorkflow(async (k) => {
  let last;
  for (let i = 0; i < k; i++) last = await step(i);
  return last;
}, { name: 'concWorkflow' });

configureDBOS();
await DBOS.launch();
const admin = await adminClient();
await Promise.all(Array.from({ length: 8 }, () => wf(10))); // warm-up
// write transactions (the next xid: exact at once) and xact_commit (lags ~1 s)
const txCounters = async () => {
  const row = (await admin.query(`SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS x, (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())::text AS c`)).rows[0];
  return [Number(row.x), Number(row.c)];
};
for (let r = 0; r < RUNS; r++) {
  const tag = `conc-${R}-${randomUUID()}`;
  const tx0 = await txCounters();
  const pg0 = pgCpuSnapshot();
  const cpu0 = process.cpuUsage();
  const t0 = now();
  const hs = await Promise.all(Array.from({ length: R }, (_, j) => DBOS.startWorkflow(wf, { workflowID: `${tag}-${j}` })(K)));
  const res = await Promise.all(hs.map((h) => h.getResult()));
  const total = now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const pgCpu = pgCpuMsSince(pg0);
  const tx1 = await txCounters();
  if (!res.every((x) => x.i === K - 1)) throw new Error('bad result');
  const done = Number((await admin.query(`SELECT count(*) AS c FROM dbos.workflow_status WHERE workflow_uuid LIKE $1 AND status='SUCCESS'`, [`${tag}-%`])).rows[0].c);
  if (done !== R) throw new Error(`expected ${R} SUCCESS rows, got ${done}`);
  emit('conc', {
    mode: 'conc', runs: R, steps_per_run: K, steps: R * K, pool: process.env.POOL || 'default(10)',
    total_ms: +total.toFixed(1), steps_per_s: +((R * K) / (total / 1000)).toFixed(1),
    node_cpu_ms: Math.round((cpu.user + cpu.system) / 1000), postgres_cpu_ms: pgCpu, node_mem: procMem(),
    write_xacts: tx1[0] - tx0[0], xact_commit: tx1[1] - tx0[1], loadavg: fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3),
  });
}
await admin.end();
await DBOS.shutdown();
