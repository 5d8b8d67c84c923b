// (b) N workflows of 3 trivial steps at concurrency C (async workers in one node process).
// Usage: node workflows.mjs [workflows=1000] [concurrency=32] [runs=1]
import { DBOS } from '@dbos-inc/dbos-sdk';
import { randomUUID } from 'node:crypto';
import { configureDBOS, now, latencySummary, emit, adminClient, pgCpuSnapshot, pgCpuMsSince, procMem } from './common.mjs';

const N = Number(process.argv[2] || 1000);
const C = Number(process.argv[3] || 32);
const RUNS = Number(process.argv[4] || 1);
const s1 = DBOS.registerStep(async (x) => ({ a: x }), { name: 's1' });
const s2 = DBOS.registerStep(async (x) => ({ b: x + 1 }), { name: 's2' });
const s3 = DBOS.registerStep(async (x) => ({ c: x + 2 }), { name: 's3' });
const three = DBOS.registerWorkflow(async (x) => {
  const a = await s1(x);
  const b = await s2(a.a);
  const c = await s3(b.b);
  return { x, sum: a.a + b.b + c.c };
}, { name: 'threeSteps' });

configureDBOS();
await DBOS.launch();
const admin = await adminClient();

async function batch(n, conc, tag) {
  const lat = [];
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const t0 = now();
      const res = await DBOS.startWorkflow(three, { workflowID: `${tag}-${i}` })(i).then((h) => h.getResult());
      lat.push(now() - t0);
      if (res.sum !== 3 * i + 4) throw new Error('bad result');
    }
  };
  const t0 = now();
  await Promise.all(Array.from({ length: conc }, worker));
  return { total: now() - t0, lat };
}

await batch(100, 8, `warm-${randomUUID()}`);
for (let r = 0; r < RUNS; r++) {
  const tag = `wf-c${C}-${randomUUID()}`;
  const pg0 = pgCpuSnapshot();
  const cpu0 = process.cpuUsage();
  const { total, lat } = await batch(N, C, tag);
  const cpu = process.cpuUsage(cpu0);
  const pgCpu = pgCpuMsSince(pg0);
  const done = Number((await admin.query(`SELECT count(*) AS c FROM dbos.workflow_status WHERE workflow_uuid LIKE $1 AND status='SUCCESS'`, [`${tag}-%`])).rows[0].c);
  if (done !== N) throw new Error(`expected ${N} SUCCESS rows, got ${done}`);
  emit('workflows', {
    mode: 'wf', workflows: N, steps_per_workflow: 3, concurrency: C, pool: process.env.POOL || 'default(10)',
    total_ms: +total.toFixed(1), workflows_per_s: +(N / (total / 1000)).toFixed(1), steps_per_s: +((3 * N) / (total / 1000)).toFixed(1),
    per_workflow: latencySummary(lat), node_cpu_ms: Math.round((cpu.user + cpu.system) / 1000), postgres_cpu_ms: pgCpu,
    node_mem: procMem(),
  });
}
await admin.end();
await DBOS.shutdown();
