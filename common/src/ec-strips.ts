// EC_STRIPS reply: the strip files of erasure-coded objects one node holds,
// for recovery to decide who rebuilds which strip from where. A record is
// 16 bytes: oid (u64), version (u32: the epoch of the last write), strip
// index (u8), 3 bytes of zeros. Records follow an 8-byte header: the
// record count (u32) and a flag word (u32, bit 0: more records follow,
// ask again with obj.cow_oid = the last oid received).
import { oidToHex } from './oid.js';
import { isVdiObj, isVdiBtreeObj, isLedgerObj } from './oid.js';

export interface StripRecord {
  oid: bigint;
  idx: number;
  version: number;
}

export const STRIPS_HEADER_SIZE = 8;
export const STRIP_RECORD_SIZE = 16;

export function encodeStripRecords(records: StripRecord[], more: boolean): Buffer {
  const b = Buffer.alloc(STRIPS_HEADER_SIZE + records.length * STRIP_RECORD_SIZE);
  b.writeUInt32LE(records.length, 0);
  b.writeUInt32LE(more ? 1 : 0, 4);
  records.forEach((r, i) => {
    const at = STRIPS_HEADER_SIZE + i * STRIP_RECORD_SIZE;
    b.writeBigUInt64LE(r.oid, at);
    b.writeUInt32LE(r.version >>> 0, at + 8);
    b[at + 12] = r.idx;
  });
  return b;
}

/** Throws on a reply that does not hold what its header says (the count is checked against the bytes, never trusted). */
export function decodeStripRecords(b: Buffer): { records: StripRecord[]; more: boolean } {
  if (b.length < STRIPS_HEADER_SIZE) throw new Error(`strip list of ${b.length} bytes`);
  const n = b.readUInt32LE(0);
  if (n > (b.length - STRIPS_HEADER_SIZE) / STRIP_RECORD_SIZE) throw new Error(`strip list claims ${n} records in ${b.length} bytes`);
  const records: StripRecord[] = [];
  for (let i = 0; i < n; i++) {
    const at = STRIPS_HEADER_SIZE + i * STRIP_RECORD_SIZE;
    records.push({ oid: b.readBigUInt64LE(at), version: b.readUInt32LE(at + 8), idx: b[at + 12] });
  }
  return { records, more: (b.readUInt32LE(4) & 1) !== 0 };
}

/**
 * Whether an object of an erasure-coded VDI is striped (A.3): data,
 * vmstate and attribute objects are; the inode, B-tree nodes and ledgers
 * are replicated with D+P copies.
 */
export const isEcStriped = (oid: bigint): boolean => !isVdiObj(oid) && !isVdiBtreeObj(oid) && !isLedgerObj(oid);

/**
 * Bytes of each strip file of an object of objSize bytes: whole stripes,
 * 1/D of each. A data object (a power of two) divides exactly (A.4); an
 * attribute object (66,320 bytes) ends inside its last stripe, which is
 * striped whole as if zero-padded (upstream sizes these strips by the
 * VDI's object size instead: 2 MiB each for 2:1).
 */
export const stripFileSize = (objSize: number, d: number): number => (Math.ceil(objSize / 512) * 512) / d;

/** A strip file's name (A.4): `<oid as 16 hex digits>_<index>`. */
export const stripFileName = (oid: bigint, idx: number): string => `${oidToHex(oid)}_${idx}`;
