// The store key of an erasure-code strip. A strip is stored under a key
// that extends its object's 64-bit oid: bits 64 and up hold index + 1. So
// every structure the store keys by bigint (fd cache, write holds, recent
// writes, journal records) keeps the strips of an object apart from each
// other and from replicated objects without knowing about them, and a
// replicated object's key is its oid, exactly as before.
import { oidToHex, stripFileName } from '@sheepdog/common';

const MASK64 = (1n << 64n) - 1n;

export const stripKey = (oid: bigint, idx: number): bigint => oid | (BigInt(idx + 1) << 64n);
/** The oid a store key belongs to. */
export const keyOid = (key: bigint): bigint => key & MASK64;
/** The strip index of a key, or -1 for a replicated object. */
export const keyStrip = (key: bigint): number => Number(key >> 64n) - 1;
/** Bits 64.. of a key (0 for a replicated object): what the journal records beside the oid. */
export const keyTag = (key: bigint): number => Number(key >> 64n);
export const keyFromTag = (oid: bigint, tag: number): bigint => oid | (BigInt(tag) << 64n);

/** The file name of a key: `<oid>` or `<oid>_<idx>` (A.4). */
export function keyFileName(key: bigint): string {
  const idx = keyStrip(key);
  return idx < 0 ? oidToHex(key) : stripFileName(keyOid(key), idx);
}

/** A strip file name's oid and index; undefined for anything else. */
export function parseStripFileName(f: string): { oid: bigint; idx: number } | undefined {
  const m = /^([0-9a-f]{16})_([0-9]{1,2})$/.exec(f);
  if (!m) return undefined;
  const idx = Number(m[2]);
  return idx < 31 ? { oid: BigInt('0x' + m[1]), idx } : undefined;
}
