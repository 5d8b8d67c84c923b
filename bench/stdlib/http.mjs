// bench/stdlib/http.mjs URL N C: the same as http.lua with node's built-in
// fetch (undici): a warm-up of 2*C requests, then N GETs from C async
// workers, latency from performance.now() around fetch + text(). One JSON line.
const [url, nArg, cArg] = process.argv.slice(2);
const n = Number(nArg), c = Number(cArg);
async function run(total, lat) {
  let next = 0;
  async function worker() {
    for (;;) {
      const i = next++;
      if (i >= total) return;
      const t0 = performance.now();
      const r = await fetch(url);
      const body = await r.text();
      if (lat) lat[i] = performance.now() - t0;
      if (r.status !== 200 || body.length <= 10) throw new Error("bad reply");
    }
  }
  await Promise.all(Array.from({ length: c }, worker));
}
await run(2 * c);
const lat = new Float64Array(n);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
await run(n, lat);
const wall = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
lat.sort();
const pct = (p) => Math.round(lat[Math.min(n - 1, Math.ceil((p / 100) * n) - 1)] * 1000) / 1000;
console.log(JSON.stringify({
  bench: "http", impl: "node-fetch", node: process.version, n, concurrency: c,
  wall_s: Math.round(wall * 1000) / 1000, rps: Math.round(n / wall),
  p50_ms: pct(50), p90_ms: pct(90), p99_ms: pct(99), max_ms: pct(100),
  cpu_s: Math.round((cpu.user + cpu.system) / 1000) / 1000,
  hwm_kb: Math.round(process.resourceUsage().maxRSS),
}));
