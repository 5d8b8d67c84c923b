// Worker of memory.mjs: DBOS launched with the benchmark workflows registered, then idle.
// stdin: "load" -> 1000 x 3-step workflows at concurrency 64 (like sluice's 64-run load), "quit".
import { DBOS } from '@dbos-inc/dbos-sdk';
import { randomUUID } from 'node:crypto';
import readline from 'node:readline';
import { configureDBOS } from './common.mjs';

const s1 = DBOS.registerStep(async (x) => ({ a: x }), { name: 's1' });
const s2 = DBOS.registerStep(async (x) => ({ b: x + 1 }), { name: 's2' });
const s3 = DBOS.registerStep(async (x) => ({ c: x + 2 }), { name: 's3' });
const three = DBOS.registerWorkflow(async (x) => {
  const a = await s1(x); const b = await s2(a.a); const c = await s3(b.b);
  return a.a + b.b + c.c;
}, { name: 'threeSteps' });

configureDBOS();
await DBOS.launch();
console.log('ready');
const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (line === 'load') {
    const tag = randomUUID();
    let next = 0;
    await Promise.all(Array.from({ length: 64 }, async () => {
      for (;;) { const i = next++; if (i >= 1000) return; await DBOS.startWorkflow(three, { workflowID: `mem-${tag}-${i}` })(i).then((h) => h.getResult()); }
    }));
    console.log('loaded');
  } else if (line === 'quit') break;
}
await DBOS.shutdown();
console.log('bye');
process.exit(0);
