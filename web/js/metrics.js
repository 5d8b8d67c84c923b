// metrics.js: reads the Prometheus text format of GET /metrics (0.0.4)
// into samples {name, labels, value}, and sums what the host page shows.

/** text -> [{name, labels: {k: v}, value}], with .types: the families
 *  declared by # TYPE lines (a declared family without samples sums to 0) */
export function parse(text) {
  const out = [];
  out.types = new Set();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) /.exec(line);
    if (t) out.types.add(t[1]);
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3]))) labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\(["\\])/g, '$1');
    }
    const v = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : Number(m[4]);
    out.push({ name: m[1], labels, value: v });
  }
  return out;
}

/** The sum of every sample of a name (over its labels), or null if none. */
export function total(samples, name, where) {
  let sum = null;
  for (const x of samples) {
    if (x.name !== name) continue;
    if (where && !Object.entries(where).every(([k, v]) => x.labels[k] === v)) continue;
    sum = (sum || 0) + x.value;
  }
  if (sum === null && samples.types && samples.types.has(name)) return 0;
  return sum;
}

/** A histogram's mean (sum / count) and a quantile estimated from its
 *  buckets (the upper bound of the bucket it falls in), over all labels. */
export function histogram(samples, name, q = 0.99) {
  const count = total(samples, `${name}_count`), sum = total(samples, `${name}_sum`);
  if (!count) return { count: count || 0, mean: null, quantile: null };
  const buckets = new Map();
  for (const x of samples) {
    if (x.name !== `${name}_bucket`) continue;
    const le = x.labels.le === '+Inf' ? Infinity : Number(x.labels.le);
    buckets.set(le, (buckets.get(le) || 0) + x.value);
  }
  const les = [...buckets.keys()].sort((a, b) => a - b);
  const target = q * count;
  const hit = les.find((le) => buckets.get(le) >= target);
  return { count, mean: sum / count, quantile: hit === undefined ? null : hit };
}
