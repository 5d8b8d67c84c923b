// Worker of recovery.mjs (adapted from ../shared/peers/dbos/recovery_worker.mjs).
// Usage: node recovery_worker.mjs start|recover <workflowID> <steps> <sideEffectFile>
//  start:   launch DBOS, start the long workflow (the parent SIGKILLs this process midway)
//  recover: launch DBOS (re-enqueues the PENDING workflow and runs it), wait for the result,
//           print timings as one JSON line, exit
const T_MAIN = Date.now();
const { DBOS } = await import('@dbos-inc/dbos-sdk');
const fs = await import('node:fs');
const { configureDBOS } = await import('./common.mjs');
const T_IMPORTED = Date.now();

const [mode, WFID, N_STR, SIDE] = process.argv.slice(2);
const N = Number(N_STR);
const fd = fs.openSync(SIDE, 'a');
let tBodyStart = 0, tFirstExec = 0, tLastExec = 0, execs = 0;

// side effect: one fixed-width 8-byte record per execution of the step body
const step = DBOS.registerStep(async (i) => {
  if (!tFirstExec) tFirstExec = Date.now();
  execs++;
  fs.writeSync(fd, String(i).padStart(7, '0') + '\n');
  tLastExec = Date.now();
  return { i };
}, { name: 'countedStep' });
const longWorkflow = DBOS.registerWorkflow(async (n) => {
  if (!tBodyStart) tBodyStart = Date.now();
  let last;
  for (let i = 0; i < n; i++) last = await step(i);
  return { done: n, last: last.i };
}, { name: 'longWorkflow' });

configureDBOS();
await DBOS.launch();
const T_LAUNCHED = Date.now();
if (mode === 'start') {
  const h = await DBOS.startWorkflow(longWorkflow, { workflowID: WFID })(N);
  process.stdout.write(JSON.stringify({ started: WFID }) + '\n');
  await h.getResult();
  process.stdout.write(JSON.stringify({ unexpected_completion: true }) + '\n');
} else {
  const res = await DBOS.retrieveWorkflow(WFID).getResult();
  process.stdout.write(JSON.stringify({
    result: res, t_main: T_MAIN, t_imported: T_IMPORTED, t_launched: T_LAUNCHED, t_body_start: tBodyStart,
    t_first_exec: tFirstExec, t_last_exec: tLastExec, t_result: Date.now(), execs_in_this_process: execs,
  }) + '\n');
}
fs.closeSync(fd);
await DBOS.shutdown();
process.exit(0);
