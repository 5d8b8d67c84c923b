// R workflows of K sequential trivial steps, all started at once (the sluice `conc R` shape).
// Usage: node conc.mjs [R=64] [K=50] [runs=1]
import { DBOS } from '@dbos-inc/dbos-sdk';
import { randomUUID } from 'node:crypto';
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
for (let r = 0; r < RUNS; r++) {
  const tag = `conc-${R}-${randomUUID()}`;
  const pg0 = pgCpuSnapshot();
  const cpu0 = process.cpuUsage();
  const t0 = now();
  const hs = await Promise.all(Array.from({ length: R }, (_, j) => DBOS.startWorkflow(wf, { workflowID: `${tag}-${j}` })(K)));
  const res = await Promise.all(hs.map((h) => h.getResult()));
  const total = now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const pgCpu = pgCpuMsSince(pg0);
  if (!res.every((x) => x.i === K - 1)) throw new Error('bad result');
  const done = Number((await admin.query(`SELECT count(*) AS c FROM dbos.workflow_status WHERE workflow_uuid LIKE $1 AND status='SUCCESS'`, [`${tag}-%`])).rows[0].c);
  if (done !== R) throw new Error(`expected ${R} SUCCESS rows, got ${done}`);
  emit('conc', {
    mode: 'conc', runs: R, steps_per_run: K, steps: R * K, pool: process.env.POOL || 'default(10)',
    total_ms: +total.toFixed(1), steps_per_s: +((R * K) / (total / 1000)).toFixed(1),
    node_cpu_ms: Math.round((cpu.user + cpu.system) / 1000), postgres_cpu_ms: pgCpu, node_mem: procMem(),
  });
}
await admin.end();
await DBOS.shutdown();
