// Text helpers shared by collie and sheepfs so both print identical text.

/** dog's strnumber: MB, GB, … with one decimal below 10 (spec §15). */
export function sizeToStr(bytes: bigint | number, raw = false): string {
  const b = typeof bytes === 'bigint' ? bytes : BigInt(Math.floor(bytes));
  if (raw) return b.toString();
  const units = ['MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];
  let v = Number(b) / 1048576;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return v < 10 ? `${(Math.floor(v * 10) / 10).toFixed(1)} ${units[i]}` : `${Math.floor(v)} ${units[i]}`;
}

/** Parse "256G", "1024k", "10M", "123" (bytes) like dog's option parser. */
export function parseSize(s: string): bigint {
  const m = /^(\d+)([kKmMgGtTpPeE]?)$/.exec(s.trim());
  if (!m) throw new Error(`Invalid size '${s}'`);
  const mul: Record<string, bigint> = { '': 1n, k: 1n << 10n, m: 1n << 20n, g: 1n << 30n, t: 1n << 40n, p: 1n << 50n, e: 1n << 60n };
  return BigInt(m[1]) * mul[m[2].toLowerCase()];
}

const pad2 = (n: number) => String(n).padStart(2, '0');
/** Local time "YYYY-MM-DD HH:MM" (with seconds if asked). */
export function formatLocalTime(sec: number, withSeconds = false): string {
  const d = new Date(sec * 1000);
  const s = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return withSeconds ? `${s}:${pad2(d.getSeconds())}` : s;
}

/** ctime(3) without the trailing newline: "Mon Nov 23 20:00:25 2026". */
export function ctimeString(sec: number): string {
  const d = new Date(sec * 1000);
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const mons = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  return `${days[d.getDay()]} ${mons[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())} ${d.getFullYear()}`;
}

/** Redundancy text: "3" or "D:P" for an erasure-code policy byte. */
export function redundancyStr(copies: number, copyPolicy: number): string {
  if (!copyPolicy) return String(copies);
  const d = (copyPolicy >> 4) * 2;
  const p = copyPolicy & 0x0f;
  return `${d}:${p}`;
}
