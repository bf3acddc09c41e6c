// The S3 gateway's structures inside VDIs (see the README, "S3 gateway"):
// one VDI per bucket, `s3/BUCKET`, holding a superblock, an append-only
// index log and the objects' bytes; and one VDI `s3/.users` holding the
// access keys. Both the daemon and collie read them through these codecs.
import { crc32 } from 'node:zlib';

export const S3_BUCKET_PREFIX = 's3/';
/** Bucket names cannot start with '.', so this never names a bucket. */
export const S3_USERS_VDI = 's3/.users';
export const S3_USERS_VDI_SIZE = 4 << 20;

/** A bucket VDI has the largest size a 4 MiB-object VDI can have. */
export const S3_BUCKET_VDI_SIZE = 2 ** 42;
export const S3_SB_SIZE = 64;
export const S3_LOG_START = 4096;
/** The index log ends where object data starts. */
export const S3_DATA_START = 2 ** 30;
/** One log record: an object with up to 10,000 extents and its metadata fits. */
export const S3_MAX_RECORD = 1 << 20;

const SB_MAGIC = Buffer.from('SDS3BKT1');
const USERS_MAGIC = Buffer.from('SDS3USR1');

export interface BucketSuper {
  /** Bytes of log records committed after S3_LOG_START. */
  logLen: number;
  /** Everything at or past this offset is unallocated. */
  dataEnd: number;
  /** Creation time, ms since the epoch. */
  created: number;
}

/** Superblock at offset 0: magic, version 1, logLen, dataEnd, created (LE u64s). */
export function encodeBucketSuper(s: BucketSuper): Buffer {
  const b = Buffer.alloc(S3_SB_SIZE);
  SB_MAGIC.copy(b, 0);
  b.writeUInt32LE(1, 8);
  b.writeBigUInt64LE(BigInt(s.logLen), 16);
  b.writeBigUInt64LE(BigInt(s.dataEnd), 24);
  b.writeBigUInt64LE(BigInt(s.created), 32);
  b.writeUInt32LE(crc32(b.subarray(0, 40)), 40);
  return b;
}

/** undefined for an all-zero block (a bucket VDI whose superblock was never written). */
export function decodeBucketSuper(b: Buffer): BucketSuper | undefined {
  if (b.length < S3_SB_SIZE) throw new Error('bucket superblock truncated');
  if (b.subarray(0, S3_SB_SIZE).every((x) => x === 0)) return undefined;
  if (!b.subarray(0, 8).equals(SB_MAGIC)) throw new Error('not an S3 bucket VDI (bad superblock magic)');
  if (b.readUInt32LE(8) !== 1) throw new Error(`S3 bucket layout version ${b.readUInt32LE(8)} is not supported`);
  if (b.readUInt32LE(40) !== crc32(b.subarray(0, 40))) throw new Error('bucket superblock checksum mismatch');
  const logLen = Number(b.readBigUInt64LE(16));
  const dataEnd = Number(b.readBigUInt64LE(24));
  if (logLen > S3_DATA_START - S3_LOG_START || dataEnd < S3_DATA_START || dataEnd > S3_BUCKET_VDI_SIZE) throw new Error('bucket superblock out of range');
  return { logLen, dataEnd, created: Number(b.readBigUInt64LE(32)) };
}

/** [offset, length] of object bytes in the bucket VDI. */
export type S3Extent = [number, number];

export interface S3ObjectMeta {
  size: number;
  etag: string;
  /** ms since the epoch */
  mtime: number;
  /** Stored response headers: content-type, cache-control, ... and x-amz-meta-*. */
  headers: Record<string, string>;
  extents: S3Extent[];
}

/** The index log's records, replayed in order. */
export type S3LogRecord =
  | { t: 'put'; k: string; o: S3ObjectMeta }
  | { t: 'del'; k: string }
  | { t: 'mpu'; id: string; k: string; h: Record<string, string>; m: number }
  | { t: 'part'; id: string; n: number; size: number; etag: string; x: S3Extent[]; m: number }
  | { t: 'mpuend'; id: string };

/** [u32 length][u32 crc32 of the JSON][JSON]. */
export function encodeLogRecord(r: S3LogRecord): Buffer {
  const j = Buffer.from(JSON.stringify(r));
  if (j.length > S3_MAX_RECORD) throw new Error('index record too large');
  const b = Buffer.allocUnsafe(8 + j.length);
  b.writeUInt32LE(j.length, 0);
  b.writeUInt32LE(crc32(j), 4);
  j.copy(b, 8);
  return b;
}

/**
 * Decode the records of a log; `buf` holds whole records only. A record
 * that does not check is an error: the superblock says it was committed.
 */
export function decodeLogRecords(buf: Buffer): { records: S3LogRecord[]; used: number } {
  const records: S3LogRecord[] = [];
  let p = 0;
  while (p + 8 <= buf.length) {
    const len = buf.readUInt32LE(p);
    if (len > S3_MAX_RECORD) throw new Error(`index record at ${p} claims ${len} bytes`);
    if (p + 8 + len > buf.length) break;
    const j = buf.subarray(p + 8, p + 8 + len);
    if (crc32(j) !== buf.readUInt32LE(p + 4)) throw new Error(`index record at ${p}: checksum mismatch`);
    records.push(JSON.parse(j.toString()) as S3LogRecord);
    p += 8 + len;
  }
  return { records, used: p };
}

export interface S3User {
  name: string;
  accessKey: string;
  secretKey: string;
  /** ms since the epoch */
  created: number;
}

/** s3/.users: magic, u32 length, u32 crc32, JSON {users: [...]} */
export function encodeS3Users(users: S3User[]): Buffer {
  const j = Buffer.from(JSON.stringify({ users }));
  if (16 + j.length > S3_USERS_VDI_SIZE) throw new Error('too many S3 users');
  const b = Buffer.alloc(16 + j.length);
  USERS_MAGIC.copy(b, 0);
  b.writeUInt32LE(j.length, 8);
  b.writeUInt32LE(crc32(j), 12);
  j.copy(b, 16);
  return b;
}

/** Decode from the first bytes of s3/.users; `more` says how many bytes past 16 are needed. */
export function s3UsersLength(head: Buffer): number {
  if (head.subarray(0, 16).every((x) => x === 0)) return 0;
  if (!head.subarray(0, 8).equals(USERS_MAGIC)) throw new Error('s3/.users is not an S3 user list (bad magic)');
  const len = head.readUInt32LE(8);
  if (16 + len > S3_USERS_VDI_SIZE) throw new Error('s3/.users: length out of range');
  return len;
}

export function decodeS3Users(b: Buffer): S3User[] {
  const len = s3UsersLength(b);
  if (len === 0) return [];
  const j = b.subarray(16, 16 + len);
  if (j.length !== len || crc32(j) !== b.readUInt32LE(12)) throw new Error('s3/.users: checksum mismatch');
  const d = JSON.parse(j.toString()) as { users?: S3User[] };
  return Array.isArray(d.users) ? d.users : [];
}

/** S3's bucket naming rules (the DNS-compatible ones). */
export function validBucketName(n: string): boolean {
  return /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(n) && !n.includes('..') && !/^\d+\.\d+\.\d+\.\d+$/.test(n);
}
