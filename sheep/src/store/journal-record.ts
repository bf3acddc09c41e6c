// The on-disk format of the write-ahead journal (see journal.ts).
//
// The file: two header slots in its first 4 KiB, then records, written in
// batches that start and end on 4 KiB boundaries (so that no batch write
// needs a page read first), wrapping round to the first record position.
//
// A header slot (64 bytes at 0 or 512): magic, CRC-32 of bytes 8-63, the
// sequence number and position of the first record still needed (the trim
// point), the file's size. Checkpoints write the slots in turn, so a torn
// header write leaves the other one; the valid one with the higher trim
// sequence wins.
//
// A record: a 64-byte header, then the data. Header: magic, CRC-32 of
// header bytes 8-63 and the data, the record's sequence number (one more
// than the record before it, across wraps and restarts), the data length,
// the object id, the inode number and birth time (ns) of the object file
// the write went into, the offset in the object. Replay reads records from
// the trim point while each one checks out and carries the next sequence
// number: a torn record ends the journal, and a record left from an earlier
// lap of the file carries an older number.
import { crc32 } from 'node:zlib';

export const BLOCK = 4096;
/** Records start here: the header slots live before it. */
export const FIRST_RECORD = BLOCK;
export const REC_HEADER = 64;
const REC_MAGIC = 0x31524a53; // 'SJR1'
const HDR_MAGIC = 0x31484a53; // 'SJH1'
export const HEADER_SLOTS = [0, 512];

export interface RecordHead {
  seq: number;
  oid: bigint;
  ino: bigint;
  btime: bigint;
  off: number;
  len: number;
}

export interface TrimPoint {
  seq: number;
  pos: number;
  size: number;
}

export const alignUp = (n: number, to = BLOCK): number => Math.ceil(n / to) * to;

function putU64(b: Buffer, at: number, v: number): void {
  b.writeUInt32LE(v % 0x100000000, at);
  b.writeUInt32LE(Math.floor(v / 0x100000000), at + 4);
}

const getU64 = (b: Buffer, at: number): number => b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 0x100000000;

/** Fill h (REC_HEADER bytes) for a record of data. */
export function encodeRecordHead(h: Buffer, r: Omit<RecordHead, 'len'>, data: Buffer): void {
  h.writeUInt32LE(REC_MAGIC, 0);
  putU64(h, 8, r.seq);
  h.writeUInt32LE(data.length, 16);
  // a strip's key carries its index above the oid's 64 bits (ec/strip-key.ts): in the word that was always 0
  h.writeUInt32LE(Number(r.oid >> 64n), 20);
  h.writeBigUInt64LE(r.oid & 0xffffffffffffffffn, 24);
  h.writeBigUInt64LE(r.ino, 32);
  h.writeBigUInt64LE(r.btime, 40);
  putU64(h, 48, r.off);
  putU64(h, 56, 0);
  h.writeUInt32LE(crc32(data, crc32(h.subarray(8, REC_HEADER))), 4);
}

/** A record header's fields, if its magic is right (the CRC needs the data: see recordIntact). */
export function decodeRecordHead(h: Buffer): RecordHead | undefined {
  if (h.length < REC_HEADER || h.readUInt32LE(0) !== REC_MAGIC) return undefined;
  return {
    seq: getU64(h, 8),
    len: h.readUInt32LE(16),
    oid: h.readBigUInt64LE(24) | (BigInt(h.readUInt32LE(20)) << 64n),
    ino: h.readBigUInt64LE(32),
    btime: h.readBigUInt64LE(40),
    off: getU64(h, 48),
  };
}

/** Whether a record's header and data are what its checksum says. */
export function recordIntact(h: Buffer, data: Buffer): boolean {
  return h.readUInt32LE(4) === crc32(data, crc32(h.subarray(8, REC_HEADER)));
}

export function encodeHeader(t: TrimPoint): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(HDR_MAGIC, 0);
  putU64(b, 8, t.seq);
  putU64(b, 16, t.pos);
  putU64(b, 24, t.size);
  b.writeUInt32LE(crc32(b.subarray(8)), 4);
  return b;
}

export function decodeHeader(b: Buffer): TrimPoint | undefined {
  if (b.length < 64 || b.readUInt32LE(0) !== HDR_MAGIC || b.readUInt32LE(4) !== crc32(b.subarray(8, 64))) return undefined;
  return { seq: getU64(b, 8), pos: getU64(b, 16), size: getU64(b, 24) };
}
