// Codecs of this implementation's recovery peer operations (OBJ_COPIES,
// FETCH_OBJ, CHECK_HELD; see constants): which copies of which objects a
// node holds, and at which version.

/** Flags of one copy record. */
export const CopyFlag = {
  /** Set aside: not served until recovery decides about it. */
  STALE: 1,
  /** Written while a member failed or the cluster crashed: its replicas may differ. */
  SUSPECT: 2,
  /** Not a copy: a tombstone. The object was removed in epoch `version`; copies older than that are garbage. */
  REMOVED: 4,
} as const;

export interface CopyRecord {
  oid: bigint;
  version: number;
  flags: number;
}

/** OBJ_COPIES reply: a 16-byte header, then 16-byte records. */
export interface ObjectCopies {
  /** The epoch in which this node's store joined the cluster: it can vouch for no earlier epoch. */
  born: number;
  records: CopyRecord[];
  /** More records follow (OBJ_COPIES pages by oid). */
  more?: boolean;
}

export const COPIES_HEADER_SIZE = 16;
export const COPY_RECORD_SIZE = 16;
const COPIES_MAGIC = 0x53445643; // "SDVC"

export function encodeObjectCopies(c: ObjectCopies): Buffer {
  const b = Buffer.alloc(COPIES_HEADER_SIZE + c.records.length * COPY_RECORD_SIZE);
  b.writeUInt32LE(COPIES_MAGIC, 0);
  b.writeUInt32LE(c.born, 4);
  b.writeUInt32LE(c.records.length, 8);
  b.writeUInt32LE(c.more ? 1 : 0, 12);
  let off = COPIES_HEADER_SIZE;
  for (const r of c.records) {
    b.writeBigUInt64LE(r.oid, off);
    b.writeUInt32LE(r.version, off + 8);
    b.writeUInt32LE(r.flags, off + 12);
    off += COPY_RECORD_SIZE;
  }
  return b;
}

export function decodeObjectCopies(b: Buffer): ObjectCopies {
  if (b.length < COPIES_HEADER_SIZE || b.readUInt32LE(0) !== COPIES_MAGIC) throw new Error('not an object copies reply');
  const n = b.readUInt32LE(8);
  if (b.length !== COPIES_HEADER_SIZE + n * COPY_RECORD_SIZE) throw new Error('object copies reply of the wrong length');
  const records: CopyRecord[] = [];
  for (let off = COPIES_HEADER_SIZE; off < b.length; off += COPY_RECORD_SIZE) {
    records.push({ oid: b.readBigUInt64LE(off), version: b.readUInt32LE(off + 8), flags: b.readUInt32LE(off + 12) });
  }
  return { born: b.readUInt32LE(4), records, more: b.readUInt32LE(12) === 1 };
}

/** FETCH_OBJ reply: the copy's version and flags, then its bytes. */
export const FETCH_HEADER_SIZE = 8;

export function encodeFetchHeader(version: number, flags: number, into: Buffer): void {
  into.writeUInt32LE(version, 0);
  into.writeUInt32LE(flags, 4);
}

export function decodeFetched(b: Buffer): { version: number; flags: number; data: Buffer } {
  if (b.length < FETCH_HEADER_SIZE) throw new Error('short FETCH_OBJ reply');
  return { version: b.readUInt32LE(0), flags: b.readUInt32LE(4), data: b.subarray(FETCH_HEADER_SIZE) };
}

/** CHECK_HELD payload: 16-byte records (oid, version, 0); reply: the oids held, 8 bytes each. */
export function encodeHeldQuery(records: { oid: bigint; version: number }[]): Buffer {
  return encodeObjectCopies({ born: 0, records: records.map((r) => ({ ...r, flags: 0 })) }).subarray(COPIES_HEADER_SIZE);
}

export function decodeHeldQuery(b: Buffer): { oid: bigint; version: number }[] {
  const out: { oid: bigint; version: number }[] = [];
  for (let off = 0; off + COPY_RECORD_SIZE <= b.length; off += COPY_RECORD_SIZE) out.push({ oid: b.readBigUInt64LE(off), version: b.readUInt32LE(off + 8) });
  return out;
}

export function encodeOids(oids: bigint[]): Buffer {
  const b = Buffer.alloc(oids.length * 8);
  oids.forEach((o, i) => b.writeBigUInt64LE(o, i * 8));
  return b;
}

export function decodeOids(b: Buffer): bigint[] {
  const out: bigint[] = [];
  for (let off = 0; off + 8 <= b.length; off += 8) out.push(b.readBigUInt64LE(off));
  return out;
}
