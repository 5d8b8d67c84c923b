// Shared helpers of the DBOS peer benchmarks (adapted from ../shared/peers/dbos/common.mjs).
import fs from 'node:fs';
import pg from 'pg';
import { DBOS } from '@dbos-inc/dbos-sdk';

export const PGPORT = process.env.DBOS_PG_PORT || '55432';
export const DB_NAME = process.env.BENCH_DB || 'dbos_bench';
export const DB_URL = `postgresql://postgres@127.0.0.1:${PGPORT}/${DB_NAME}`;
export const ADMIN_URL = `postgresql://postgres@127.0.0.1:${PGPORT}/postgres`;
export const PGDATA = process.env.PGDATA_BENCH; // set by run.sh
const OUTDIR = process.env.BENCH_OUT || new URL('../out/', import.meta.url).pathname;

export function configureDBOS(extra = {}) {
  const cfg = {
    name: 'dbos-bench',
    systemDatabaseUrl: DB_URL,
    logLevel: process.env.DBOS_LOG_LEVEL || 'warn',
    applicationVersion: 'bench-v1', // fixed, so the recovering process matches the killed one
    ...extra,
  };
  if (process.env.POOL) cfg.systemDatabasePoolSize = Number(process.env.POOL);
  DBOS.setConfig(cfg);
}

export const now = () => performance.now();
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function pct(sorted, p) {
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}
export function latencySummary(arr) {
  const s = [...arr].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  const r = (x) => +x.toFixed(3);
  return { n: s.length, mean_ms: r(mean), p50_ms: r(pct(s, 50)), p90_ms: r(pct(s, 90)), p99_ms: r(pct(s, 99)), max_ms: r(s[s.length - 1]) };
}
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export async function adminClient(url = DB_URL) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

export function procMem(pid = 'self') {
  const out = {};
  try {
    const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    for (const [k, n] of [['VmRSS', 'rss_kB'], ['VmHWM', 'hwm_kB'], ['RssAnon', 'rss_anon_kB'], ['RssFile', 'rss_file_kB'], ['RssShmem', 'rss_shmem_kB']]) {
      const m = st.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm'));
      if (m) out[n] = Number(m[1]);
    }
  } catch { /* gone */ }
  try {
    const sm = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const m = sm.match(/^Pss:\s+(\d+) kB/m);
    if (m) out.pss_kB = Number(m[1]);
  } catch { /* ignore */ }
  return out;
}

// Every process of the benchmark cluster: the postmaster (postmaster.pid) and its children.
export function postgresPids() {
  const pm = Number(fs.readFileSync(`${PGDATA}/postmaster.pid`, 'utf8').split('\n')[0]);
  const pids = [pm];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === pm) pids.push(Number(d));
    } catch { /* raced */ }
  }
  return pids;
}
const cpuTicks = (pid) => {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch { return 0; }
};
export function pgCpuSnapshot() {
  const m = new Map();
  for (const p of postgresPids()) m.set(p, cpuTicks(p));
  return m;
}
export function pgCpuMsSince(snap) {
  let t = 0;
  for (const p of postgresPids()) t += cpuTicks(p) - (snap.get(p) ?? 0);
  return t * 10; // CLK_TCK = 100
}

export function emit(bench, obj) {
  const line = JSON.stringify({
    bench: `dbos.${bench}`, at: new Date().toISOString(), session: process.env.BENCH_SESSION || '',
    dbos_sdk: '5.3.0', durability: 'postgres fsync=on synchronous_commit=on (default)', ...obj,
  });
  fs.mkdirSync(OUTDIR, { recursive: true });
  fs.appendFileSync(`${OUTDIR}/dbos.jsonl`, line + '\n');
  if (process.env.SESSION_OUT) fs.appendFileSync(process.env.SESSION_OUT, line + '\n');
  console.log(line);
}
