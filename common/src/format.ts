// Short aliases kept for older callers; the one implementation of dog's
// text formats lives in text/output.ts.
import { strnumber, localTime, ctime, redundancy } from './text/output.js';

/** dog's strnumber: MB, GB, … with printf rounding (spec §15). */
export const sizeToStr = (bytes: bigint | number, raw = false): string => strnumber(bytes, raw);

/** Parse "256G", "1024k", "10M", "123" (bytes). */
export function parseSize(s: string): bigint {
  const m = /^(\d+)([kKmMgGtTpPeE]?)$/.exec(s.trim());
  if (!m) throw new Error(`Invalid size '${s}'`);
  const mul: Record<string, bigint> = { '': 1n, k: 1n << 10n, m: 1n << 20n, g: 1n << 30n, t: 1n << 40n, p: 1n << 50n, e: 1n << 60n };
  return BigInt(m[1]) * mul[m[2].toLowerCase()];
}

export const formatLocalTime = (sec: number, withSeconds = false): string => localTime(sec, withSeconds);
export const ctimeString = (sec: number): string => ctime(sec).trimEnd();
export const redundancyStr = (copies: number, copyPolicy: number): string => redundancy(copies, copyPolicy);
