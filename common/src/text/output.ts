// Text helpers: dog's number formats, column padding, raw escaping. Shared by
// collie and sheepfs (which must print the same bytes); pure functions only.

/**
 * dog's strnumber(): bytes as MB/GB/... with printf rounding ("%.1f" below 10,
 * "%.0f" otherwise); raw mode prints plain decimal bytes.
 */
export function strnumber(bytes: bigint | number, raw = false): string {
  const b = typeof bytes === 'bigint' ? bytes : BigInt(Math.floor(bytes));
  if (raw) return b.toString();
  const units = ['MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];
  let v = Number(b) / 1048576;
  let i = 0;
  while (i < units.length - 1 && v >= 1024) {
    v /= 1024;
    i++;
  }
  return v >= 10 ? `${printfFixed(v, 0)} ${units[i]}` : `${printfFixed(v, 1)} ${units[i]}`;
}

/**
 * printf("%.Nf"): rounds the exact binary value, ties to even (glibc), unlike
 * Number#toFixed which rounds ties away from zero.
 */
export function printfFixed(v: number, digits: number): string {
  if (!Number.isFinite(v)) return String(v);
  const neg = v < 0;
  const exact = Math.abs(v).toFixed(Math.min(100, digits + 60)); // exact for our magnitudes
  const [ip, fp = ''] = exact.split('.');
  const keep = ip + fp.slice(0, digits);
  const rest = fp.slice(digits);
  let up = false;
  if (rest[0] > '5') up = true;
  else if (rest[0] === '5') up = /[1-9]/.test(rest.slice(1)) || Number(keep[keep.length - 1]) % 2 === 1;
  let digitsStr = keep;
  if (up) {
    const arr = keep.split('').map(Number);
    let k = arr.length - 1;
    while (k >= 0) {
      if (arr[k] === 9) { arr[k] = 0; k--; } else { arr[k]++; break; }
    }
    digitsStr = (k < 0 ? '1' : '') + arr.join('');
  }
  const il = digitsStr.length - digits;
  const out = digits ? `${digitsStr.slice(0, il)}.${digitsStr.slice(il)}` : digitsStr;
  return (neg ? '-' : '') + out;
}

/** printf("%Ns") */
export const rpad = (s: string | number | bigint, n: number): string => String(s).padStart(n, ' ');
/** printf("%-Ns") */
export const lpad = (s: string | number | bigint, n: number): string => String(s).padEnd(n, ' ');
export const hex = (n: number | bigint): string => n.toString(16);
export const hex16 = (n: bigint): string => n.toString(16).padStart(16, '0');

/** Raw output escapes white space and backslashes in names with a backslash. */
export function escapeName(name: string): string {
  return name.replace(/[\s\\]/g, (c) => '\\' + c);
}

const pad2 = (n: number) => String(n).padStart(2, '0');

/** strftime-like local time: "%Y-%m-%d %H:%M" or with ":%S". */
export function localTime(sec: number, withSeconds = false): string {
  const d = new Date(sec * 1000);
  const s = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return withSeconds ? `${s}:${pad2(d.getSeconds())}` : s;
}
export function localDate(sec: number): string {
  const d = new Date(sec * 1000);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}
export function localClock(sec: number): string {
  const d = new Date(sec * 1000);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** ctime(3) text, including its trailing newline. */
export function ctime(sec: number): string {
  const d = new Date(sec * 1000);
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const mons = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  return `${days[d.getDay()]} ${mons[d.getMonth()]} ${rpad(d.getDate(), 2)} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())} ${d.getFullYear()}\n`;
}

/** Redundancy text: "3" or "D:P" for an erasure-code policy byte. */
export function redundancy(copies: number, copyPolicy: number): string {
  if (!copyPolicy) return String(copies);
  return `${(copyPolicy >> 4) * 2}:${copyPolicy & 0x0f}`;
}
