// Tombstones: which objects the cluster removed (a deleted VDI's objects),
// and in which epoch.
//
// A member that is away when an object is removed keeps its copy. Back, it
// lists that copy to recovery like any other, and without a record of the
// removal recovery would restore it as the only copy of an object nobody
// refers to (churn simulator, seeds 712 and 1708): space lost for good, and
// if the VDI id is used again, old bytes under a new VDI's unwritten
// ranges. Every member that takes part in a removal keeps a tombstone and
// lists it to recovery beside its copies (OBJ_COPIES, CopyFlag.REMOVED); a
// copy whose version is older than the removal is garbage wherever it is.
// A copy written in the removal's epoch or later belongs to an object made
// again under the same id, so the tombstone never needs undoing.
//
// On disk: `removed` in the node's directory, 16-byte records appended as
// removals happen (oid u64, epoch u32, CRC-32 of those 12 bytes). Appends
// are not synced: a tombstone lost in a crash costs only the leak it would
// have prevented, and the other members keep theirs. A damaged record is
// named in the log and skipped; the file is rewritten compact when mostly
// superseded. A format clears it.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { log } from '../log.js';

const RECORD = 16;
/** Tombstones kept at most (about 100 bytes of memory each); the oldest go first. */
const MAX_KEPT = 1 << 21;

function encode(oid: bigint, epoch: number): Buffer {
  const b = Buffer.alloc(RECORD);
  b.writeBigUInt64LE(oid, 0);
  b.writeUInt32LE(epoch, 8);
  b.writeUInt32LE(crc32(b.subarray(0, 12)), 12);
  return b;
}

export class Tombstones {
  /** oid -> the epoch it was last removed in; insertion order is roughly epoch order. */
  private readonly removed = new Map<bigint, number>();
  private readonly file: string;
  private pending: Buffer[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private scheduled = false;
  private records = 0;

  constructor(dir: string) {
    this.file = path.join(dir, 'removed');
  }

  async load(): Promise<void> {
    this.removed.clear();
    const b = await fsp.readFile(this.file).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return Buffer.alloc(0);
      throw e;
    });
    let bad = 0;
    const whole = b.length - (b.length % RECORD);
    for (let off = 0; off < whole; off += RECORD) {
      if (crc32(b.subarray(off, off + 12)) !== b.readUInt32LE(off + 12)) {
        bad++;
        continue;
      }
      this.put(b.readBigUInt64LE(off), b.readUInt32LE(off + 8));
    }
    this.records = whole / RECORD;
    if (bad) log.err(`${this.file}: ${bad} damaged tombstone record(s) skipped (their objects may come back as leaked copies)`);
    if (b.length !== whole) log.warn(`${this.file}: a torn record at the end (a crash while it was written) is dropped`);
    if (bad || b.length !== whole || this.records > 2 * this.removed.size + 1024) await this.rewrite();
  }

  /** The epoch oid was removed in, if it ever was (as far as this node knows). */
  get(oid: bigint): number | undefined {
    return this.removed.get(oid);
  }

  get size(): number {
    return this.removed.size;
  }

  entries(): IterableIterator<[bigint, number]> {
    return this.removed.entries();
  }

  /** oid was removed in epoch (or, learnt from a peer, before it). */
  add(oid: bigint, epoch: number): void {
    const had = this.removed.get(oid);
    if (had !== undefined && had >= epoch) return;
    this.put(oid, epoch);
    this.pending.push(encode(oid, epoch));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flushing = this.flushing.then(() => this.flush());
      });
    }
  }

  /** Every tombstone written to disk. */
  async settled(): Promise<void> {
    await this.flushing;
    if (this.pending.length) {
      this.flushing = this.flushing.then(() => this.flush());
      await this.flushing;
    }
  }

  /** Forget everything (the cluster is formatted anew: epochs start again). */
  async clear(): Promise<void> {
    await this.flushing;
    this.pending = [];
    this.removed.clear();
    this.records = 0;
    await fsp.rm(this.file, { force: true });
  }

  private put(oid: bigint, epoch: number): void {
    this.removed.delete(oid);
    this.removed.set(oid, epoch);
    if (this.removed.size > MAX_KEPT) {
      let n = this.removed.size - Math.floor(MAX_KEPT * 0.9);
      log.warn(`more than ${MAX_KEPT} tombstones: the ${n} oldest are dropped`);
      for (const k of this.removed.keys()) {
        if (n-- <= 0) break;
        this.removed.delete(k);
      }
    }
  }

  private async flush(): Promise<void> {
    if (!this.pending.length) return;
    const batch = Buffer.concat(this.pending);
    this.pending = [];
    try {
      await fsp.appendFile(this.file, batch);
      this.records += batch.length / RECORD;
      if (this.records > 2 * this.removed.size + 65536) await this.rewrite();
    } catch (e) {
      log.warn(`${this.file}: cannot record tombstones: ${(e as Error).message}`);
    }
  }

  private async rewrite(): Promise<void> {
    const b = Buffer.alloc(this.removed.size * RECORD);
    let off = 0;
    for (const [oid, epoch] of this.removed) {
      encode(oid, epoch).copy(b, off);
      off += RECORD;
    }
    const tmp = `${this.file}.tmp`;
    await fsp.writeFile(tmp, b);
    await fsp.rename(tmp, this.file);
    this.records = this.removed.size;
  }
}
