// (a) one workflow of N sequential trivial steps: per-step latency (around each step call,
// inside the workflow) and steps/s. One warm-up workflow of 100 steps, then RUNS measured ones.
// Usage: node steps.mjs [steps=1000] [runs=1]
import { DBOS } from '@dbos-inc/dbos-sdk';
import { randomUUID } from 'node:crypto';
import { configureDBOS, now, latencySummary, emit, adminClient, pgCpuSnapshot, pgCpuMsSince, procMem } from './common.mjs';

const STEPS = Number(process.argv[2] || 1000);
const RUNS = Number(process.argv[3] || 1);
let lat = [];
const step = DBOS.registerStep(async (i) => ({ i, ok: true }), { name: 'trivialStep' });
const wf = DBOS.registerWorkflow(async (n) => {
  let last;
  for (let i = 0; i < n; i++) {
    const t0 = now();
    last = await step(i);
    lat.push(now() - t0);
  }
  return last;
}, { name: 'stepsWorkflow' });

configureDBOS();
await DBOS.launch();
const admin = await adminClient();
await wf(100); // warm-up
for (let r = 0; r < RUNS; r++) {
  lat = [];
  const id = `steps-${STEPS}-${randomUUID()}`;
  const pg0 = pgCpuSnapshot();
  const cpu0 = process.cpuUsage();
  const t0 = now();
  const res = await DBOS.startWorkflow(wf, { workflowID: id })(STEPS).then((h) => h.getResult());
  const total = now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const pgCpu = pgCpuMsSince(pg0);
  const rows = Number((await admin.query('SELECT count(*) AS c FROM dbos.operation_outputs WHERE workflow_uuid=$1', [id])).rows[0].c);
  if (res.i !== STEPS - 1 || rows !== STEPS) throw new Error(`bad result ${JSON.stringify(res)} rows=${rows}`);
  emit('steps', {
    mode: 'seq', steps: STEPS, total_ms: +total.toFixed(1), steps_per_s: +(STEPS / (total / 1000)).toFixed(1),
    per_step: latencySummary(lat), node_cpu_ms: Math.round((cpu.user + cpu.system) / 1000), postgres_cpu_ms: pgCpu,
    node_mem: procMem(),
  });
}
await admin.end();
await DBOS.shutdown();
