// A bucket: its VDI (s3/NAME), the index replayed from its log into memory,
// and the allocator of its data region. Commits (log record, then
// superblock) are serialised per bucket; object bytes are written before
// the record that names them, so a crash leaves unreferenced bytes, never a
// record pointing at bytes that were not written.
import {
  VdiIO, S3ObjectMeta, S3LogRecord, S3Extent, BucketSuper, encodeBucketSuper, decodeBucketSuper, encodeLogRecord,
  decodeLogRecords, S3_LOG_START, S3_DATA_START, S3_SB_SIZE, S3_BUCKET_VDI_SIZE,
} from '@sheepdog/common';
import { S3Error } from './errors.js';
import { log } from '../log.js';

export interface Part {
  n: number;
  size: number;
  etag: string;
  extents: S3Extent[];
  mtime: number;
}

export interface Upload {
  id: string;
  key: string;
  headers: Record<string, string>;
  created: number;
  parts: Map<number, Part>;
}

/** Log replay reads this much at a time. */
const REPLAY_CHUNK = 4 << 20;

export class Bucket {
  readonly objects = new Map<string, S3ObjectMeta>();
  /** The keys of `objects`, sorted by their UTF-8 bytes (S3's order). */
  readonly keys: string[] = [];
  readonly uploads = new Map<string, Upload>();
  /** Settles when the commits queued so far are written (see refresh). */
  private commitTail: Promise<void> = Promise.resolve();
  private dataEnd: number;

  /** When the superblock was last compared with the VDI's (see refresh). */
  private checkedAt = Date.now();
  private refreshing?: Promise<void>;

  private constructor(readonly name: string, public io: VdiIO, private sb: BucketSuper, private readonly reopen: () => Promise<VdiIO>) {
    this.dataEnd = sb.dataEnd;
  }

  get created(): number {
    return this.sb.created;
  }

  /** Replay the log of an opened bucket VDI (writing its superblock if it never got one). */
  static async load(name: string, io: VdiIO, reopen: () => Promise<VdiIO>): Promise<Bucket> {
    if (io.size !== S3_BUCKET_VDI_SIZE) throw new Error(`VDI s3/${name} is not a bucket (size ${io.size})`);
    let sb = decodeBucketSuper(await io.read(0, S3_SB_SIZE));
    if (!sb) {
      sb = { logLen: 0, dataEnd: S3_DATA_START, created: Date.now() };
      await io.write(0, encodeBucketSuper(sb));
    }
    const b = new Bucket(name, io, sb, reopen);
    await b.replay(0, sb.logLen);
    return b;
  }

  private async replay(from: number, to: number): Promise<void> {
    let pos = from;
    let carry = Buffer.alloc(0);
    while (pos < to) {
      const n = Math.min(REPLAY_CHUNK, to - pos);
      const chunk = await this.io.read(S3_LOG_START + pos, n);
      pos += n;
      const buf = carry.length ? Buffer.concat([carry, chunk]) : chunk;
      const { records, used } = decodeLogRecords(buf);
      for (const r of records) this.apply(r);
      carry = Buffer.from(buf.subarray(used));
    }
    if (carry.length) throw new Error(`bucket ${this.name}: the index log ends inside a record`);
  }

  /**
   * Pick up what another gateway committed to this bucket: at most once per
   * `everyMs`, compare the superblock with ours and replay the new records
   * (with the VDI's index read again, since the new bytes live in objects
   * our copy of the index does not name).
   */
  refresh(everyMs: number): Promise<void> {
    if (this.refreshing) return this.refreshing;
    if (Date.now() - this.checkedAt < everyMs) return Promise.resolve();
    this.refreshing = (async () => {
      this.checkedAt = Date.now();
      const sb = decodeBucketSuper(await this.io.read(0, S3_SB_SIZE));
      if (!sb || sb.logLen <= this.sb.logLen) return;
      await this.commitTail;
      this.io = await this.reopen();
      const from = this.sb.logLen;
      this.sb = sb;
      this.dataEnd = Math.max(this.dataEnd, sb.dataEnd);
      await this.replay(from, sb.logLen);
    })().finally(() => { this.refreshing = undefined; });
    return this.refreshing;
  }

  /** Replay or commit one record; `live` (a commit) also releases the space it made unreferenced. */
  private apply(r: S3LogRecord, live = false): void {
    switch (r.t) {
      case 'put': {
        const old = this.objects.get(r.k);
        this.setObject(r.k, r.o);
        if (live && old) this.release(old.extents);
        break;
      }
      case 'del': {
        const old = this.objects.get(r.k);
        this.removeObject(r.k);
        if (live && old) this.release(old.extents);
        break;
      }
      case 'mpu': this.uploads.set(r.id, { id: r.id, key: r.k, headers: r.h, created: r.m, parts: new Map() }); break;
      case 'part': {
        const parts = this.uploads.get(r.id)?.parts;
        const old = parts?.get(r.n);
        parts?.set(r.n, { n: r.n, size: r.size, etag: r.etag, extents: r.x, mtime: r.m });
        if (live && old) this.release(old.extents);
        break;
      }
      case 'mpuend': {
        const u = this.uploads.get(r.id);
        this.uploads.delete(r.id);
        if (live && u) {
          // the parts a completed upload's object took are its object's now
          const used = new Set((this.objects.get(u.key)?.extents ?? []).map((x) => x[0]));
          for (const p of u.parts.values()) this.release(p.extents.filter((x) => !used.has(x[0])));
        }
        break;
      }
    }
  }

  private setObject(k: string, o: S3ObjectMeta): void {
    if (!this.objects.has(k)) this.keys.splice(this.keyIndex(k), 0, k);
    this.objects.set(k, o);
  }

  private removeObject(k: string): void {
    if (!this.objects.delete(k)) return;
    this.keys.splice(this.keyIndex(k), 1);
  }

  /** First position whose key is >= k. */
  keyIndex(k: string): number {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareKeys(this.keys[mid], k) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Address space for len bytes. Objects of a whole VDI object or more start
   * on an object boundary, so deleting them frees whole objects.
   */
  alloc(len: number): number {
    const os = this.io.objectSize;
    let at = this.dataEnd;
    if (len >= os) at = Math.ceil(at / os) * os;
    if (at + len > S3_BUCKET_VDI_SIZE) throw new S3Error('EntityTooLarge', `bucket ${this.name} has no address space left`);
    this.dataEnd = at + Math.max(len, 1);
    return at;
  }

  /**
   * Append records and publish them (superblock), in order. Commits that
   * arrive while one is being written go out together in the next: one log
   * write and one superblock write for all of them (group commit).
   */
  commit(recs: S3LogRecord[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ recs, resolve, reject });
      if (!this.writing) this.commitTail = this.writing = this.drainQueue().finally(() => { this.writing = undefined; });
    });
  }

  private queue: { recs: S3LogRecord[]; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private writing?: Promise<void>;

  private async drainQueue(): Promise<void> {
    while (this.queue.length) {
      const batch = this.queue.splice(0, this.queue.length);
      try {
        const bufs: Buffer[] = [];
        for (const c of batch) for (const r of c.recs) bufs.push(encodeLogRecord(r));
        const total = bufs.reduce((a, b) => a + b.length, 0);
        if (S3_LOG_START + this.sb.logLen + total > S3_DATA_START) {
          throw new S3Error('ServiceUnavailable', `the index log of bucket ${this.name} is full`);
        }
        await this.io.write(S3_LOG_START + this.sb.logLen, bufs.length === 1 ? bufs[0] : Buffer.concat(bufs));
        const next = { ...this.sb, logLen: this.sb.logLen + total, dataEnd: Math.max(this.sb.dataEnd, this.dataEnd) };
        await this.io.write(0, encodeBucketSuper(next));
        this.sb = next;
        for (const c of batch) for (const r of c.recs) this.apply(r, true);
        for (const c of batch) c.resolve();
      } catch (e) {
        for (const c of batch) c.reject(e);
      }
    }
  }

  /** GETs and copies reading this bucket's bytes now. */
  private readers = 0;
  /** Extents released while some were: a reader may still be on them. */
  private deferred: S3Extent[][] = [];

  /**
   * Run a read of objects' bytes: releases wait until it ends. Call it in
   * the same turn as the lookup of the object, so no release comes between.
   */
  async reading<T>(fn: () => Promise<T>): Promise<T> {
    this.readers++;
    try {
      return await fn();
    } finally {
      if (--this.readers === 0) for (const x of this.deferred.splice(0)) this.release(x);
    }
  }

  /**
   * Give back the whole VDI objects of extents no longer referenced (their
   * bytes read as zeros after): at once, or when no read is in progress
   * (one that began before the object was replaced must still get its bytes).
   */
  release(extents: S3Extent[]): void {
    if (this.readers > 0) {
      this.deferred.push(extents);
      return;
    }
    const os = this.io.objectSize;
    for (const [off, len] of extents) {
      const a = Math.ceil(off / os) * os;
      const z = Math.floor((off + len) / os) * os;
      if (z > a) this.io.discard(a, z - a).catch((e) => log.warn(`s3: bucket ${this.name}: discarding [${a}, ${z}): ${(e as Error).message}`));
    }
  }
}

/** S3 lists keys in the order of their UTF-8 bytes. */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  // UTF-16 order is UTF-8 order except where surrogates meet U+E000..U+FFFF
  if (HIGH.test(a) && HIGH.test(b)) return Buffer.compare(Buffer.from(a), Buffer.from(b));
  return a < b ? -1 : 1;
}
const HIGH = /[\ud800-\uffff]/;
