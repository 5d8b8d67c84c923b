// cron_words.js: a schedule's canonical spec in words, for people:
// "0 9 * * 1" -> "every Monday at 09:00". The canonical form (numbers,
// Sunday as 0, no macros or names) is what GET /schedules returns, so only
// that form is read here; anything not recognised reads "cron <spec>".

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September',
  'October', 'November', 'December'];
const pad = (n) => String(n).padStart(2, '0');

function values(field, lo, hi) {
  if (field === '*') return null;
  const out = new Set();
  for (const item of field.split(',')) {
    const m = /^(\*|\d+)(?:-(\d+))?(?:\/(\d+))?$/.exec(item);
    if (!m) return undefined;
    const a = m[1] === '*' ? lo : Number(m[1]);
    const b = m[2] !== undefined ? Number(m[2]) : m[1] === '*' || m[3] ? hi : a;
    const st = m[3] ? Number(m[3]) : 1;
    for (let v = a; v <= b; v += st) out.add(v);
  }
  return [...out].sort((x, y) => x - y);
}

function join(list) {
  if (list.length <= 1) return list.join('');
  return `${list.slice(0, -1).join(', ')} and ${list[list.length - 1]}`;
}

function dayList(dows) {
  const set = new Set(dows.map((d) => d % 7));
  const key = [...set].sort().join(',');
  if (key === '1,2,3,4,5') return 'every weekday';
  if (key === '0,6') return 'every Saturday and Sunday';
  return `every ${join([...set].sort().map((d) => DAYS[d]))}`;
}

function ordinal(n) {
  const s = n % 100 >= 11 && n % 100 <= 13 ? 'th' : ['th', 'st', 'nd', 'rd'][n % 10] || 'th';
  return `${n}${s}`;
}

function interval(spec) {
  const m = /^every (\d+)([smhd])(?: at (\d\d):(\d\d))?$/.exec(spec);
  if (!m) return null;
  const n = Number(m[1]);
  const unit = { s: 'second', m: 'minute', h: 'hour', d: 'day' }[m[2]];
  const every = n === 1 ? `every ${unit}` : `every ${n} ${unit}s`;
  return m[3] ? `${every} at ${m[3]}:${m[4]}` : every;
}

/** canonical spec -> words (without the time zone) */
export function inWords(spec) {
  const iv = interval(spec);
  if (iv) return iv;
  const f = spec.trim().split(/\s+/);
  if (f.length !== 5) return `cron ${spec}`;
  const [mi, hr, dom, mon, dow] = f;
  const minutes = values(mi, 0, 59), hours = values(hr, 0, 23);
  const doms = values(dom, 1, 31), months = values(mon, 1, 12), dows = values(dow, 0, 7);
  if ([minutes, hours, doms, months, dows].includes(undefined)) return `cron ${spec}`;
  let when;
  const stepOf = (field) => { const m = /^\*\/(\d+)$/.exec(field); return m ? Number(m[1]) : null; };
  if (minutes === null && hours === null) when = 'every minute';
  else if (stepOf(mi) && hours === null) when = `every ${stepOf(mi)} minutes`;
  else if (minutes && hours === null) when = minutes.length === 1 && minutes[0] === 0 ? 'every hour'
    : `every hour at minute ${join(minutes.map(String))}`;
  else if (minutes && stepOf(hr)) when = `every ${stepOf(hr)} hours at minute ${join(minutes.map(String))}`;
  else if (minutes && hours && minutes.length * hours.length <= 6) {
    when = `at ${join(hours.flatMap((hh) => minutes.map((mm) => `${pad(hh)}:${pad(mm)}`)))}`;
  } else if (minutes === null && hours) when = `every minute of hour ${join(hours.map(String))}`;
  else return `cron ${spec}`;
  const parts = [];
  if (doms === null && dows === null) parts.push(when.startsWith('at') ? `every day ${when}` : when);
  else {
    const dayParts = [];
    if (doms) dayParts.push(`on the ${join(doms.map(ordinal))}`);
    if (dows) dayParts.push(dayList(dows));
    parts.push(`${dayParts.join(' or ')} ${when}`);
  }
  if (months) parts.push(`in ${join(months.map((m) => MONTHS[m - 1]))}`);
  return parts.join(' ');
}
