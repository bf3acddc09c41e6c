// A node's write-ahead journal (issue 19): durable writes at the speed of
// the disk.
//
// Without it, every acknowledged write waits for an fdatasync of its own
// object file: 32 writes in flight to 32 objects cost 32 flushes. With it,
// a write goes to its object file (the page cache: reads see it at once)
// and, as a record, into the journal; it is acknowledged once both are
// done and the journal write is on disk. Records that arrive while a
// journal write is out go together in the next one, one O_DSYNC pwritev
// (group commit). The object files reach the disk in the background:
// a checkpoint fdatasyncs every object file written since the last one,
// then moves the journal's trim point past the records those files now
// hold (see journal-record.ts for the format).
//
// After a crash, replay (PlainStore.replayJournal) writes every record
// from the trim point on into its object file again, if that file is still
// the one the record was written into (same inode number and birth time):
// an object removed, or replaced by a new copy, after its records were
// written is never re-created or written over by them. A file moved
// between the live and set-aside directories is the same file, and takes
// its records wherever it is.
//
// What writes the object files without a record (a large write taken past
// the journal, patching a copy in place) first waits until the object has
// no record in the journal (settle), so a replay can never put older bytes
// over its newer ones.
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import {
  BLOCK, FIRST_RECORD, REC_HEADER, HEADER_SLOTS, alignUp,
  encodeRecordHead, decodeRecordHead, recordIntact, encodeHeader, decodeHeader,
  type RecordHead, type TrimPoint,
} from './journal-record.js';

const writeP = promisify(fs.write);
const readP = promisify(fs.read);
const fstatP = promisify(fs.fstat);
const openP = promisify(fs.open);
const closeP = promisify(fs.close);
const ftruncateP = promisify(fs.ftruncate);

export const DEFAULT_JOURNAL_MB = 256;
export const MIN_JOURNAL_MB = 16;

export interface JournalRecord extends RecordHead {
  data: Buffer;
}

/** A write on its way through the journal. */
export interface JournalWrite {
  readonly oid: bigint;
  seq?: number;
  applied: boolean;
  /** The journal write failed: the write is made durable by syncing its object file instead. */
  fallback?: boolean;
  onApplied?: () => void;
}

interface Rec extends JournalWrite {
  ino: bigint;
  btime: bigint;
  off: number;
  data: Buffer;
  done: (err: Error | null) => void;
}

/** fdatasync the object files of these objects (wherever they are now). */
export type ObjectSyncer = (oids: bigint[]) => Promise<void>;

interface Flush {
  batch: Rec[];
  /** Where the batch starts (where the head goes back to if it fails) and ends. */
  pos: number;
  end: number;
  finished: boolean;
  err: Error | null;
}

/**
 * Journal writes out at once. One at a time, a batch waits for the flush
 * before it (~1 ms here) and holds only the writes that arrived meanwhile;
 * a few at once keep the disk's queue busy, as fio's QD 32 does.
 */
const MAX_FLUSHES = Math.max(1, Number(process.env.SHEEP_JOURNAL_FLUSHES ?? 4));

/**
 * A checkpoint at least this often while records come in (and whenever the
 * journal is half full): it bounds what a replay has to do.
 */
const CHECKPOINT_MS = Math.max(100, Number(process.env.SHEEP_JOURNAL_CHECKPOINT_MS ?? 1000));

const ZEROS = Buffer.alloc(BLOCK);
/** Records per journal write (each is two iovecs; IOV_MAX is 1024). */
const MAX_BATCH = 256;

export class Journal {
  private nextSeq: number;
  private trimSeq: number;
  /** Where the trim point's record is, and where the next batch goes. */
  private tail: number;
  private head: number;
  private pending: Rec[] = [];
  private pendingOf = new Map<bigint, number>();
  /** Journal writes out, in order; each is acknowledged once it and all before it are done. */
  private flushes: Flush[] = [];
  private kickQueued = false;
  /** After a failed journal write: no write until a checkpoint has trimmed everything before it. */
  private paused = false;
  private wantRoom = false;
  private unapplied = new Set<Rec>();
  /** Objects written since the last checkpoint took its list. */
  private dirty = new Set<bigint>();
  private positions = new Map<number, number>();
  private lastSeq = new Map<bigint, number>();
  private cp?: Promise<void>;
  private cpCount = 0;
  private timer?: NodeJS.Timeout;
  private closed = false;
  /** Counters for the log and the tests. */
  readonly stats = { records: 0, batches: 0, checkpoints: 0, fallbacks: 0, flushMs: 0, checkpointMs: 0 };

  syncer: ObjectSyncer = async () => undefined;
  onError: (msg: string) => void = () => undefined;

  private constructor(readonly file: string, private fd: number, private size: number, trim: TrimPoint) {
    this.nextSeq = trim.seq;
    this.trimSeq = trim.seq;
    this.tail = trim.pos;
    this.head = trim.pos;
  }

  /**
   * Open (or create) the journal file; its records from the trim point on
   * are read with replay(), then start() makes it ready for new ones.
   */
  static async open(file: string, sizeBytes: number): Promise<Journal> {
    const fd = await openP(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_DSYNC, 0o644);
    try {
      const st = await fstatP(fd);
      let trim: TrimPoint | undefined;
      let slot = 0;
      const head = Buffer.alloc(BLOCK);
      const { bytesRead } = await readP(fd, head, 0, BLOCK, 0);
      HEADER_SLOTS.forEach((at, i) => {
        const t = bytesRead >= at + 64 ? decodeHeader(head.subarray(at, at + 64)) : undefined;
        if (t && (!trim || t.seq > trim.seq)) {
          trim = t;
          slot = i;
        }
      });
      const size = trim ? Math.max(st.size, trim.size) : sizeBytes;
      // a trim point at the very end: the next record is at the start (replay wraps there)
      if (trim && (trim.pos < FIRST_RECORD || trim.pos > size)) trim = undefined;
      const j = new Journal(file, fd, size, trim ?? { seq: 1, pos: FIRST_RECORD, size });
      j.want = { size: alignUp(sizeBytes), fresh: !trim, damaged: !trim && st.size > 0 };
      // the next header goes over the other slot: a torn header write leaves the newest one
      j.cpCount = slot + 1;
      return j;
    } catch (e) {
      fs.close(fd, () => undefined);
      throw e;
    }
  }

  private want = { size: 0, fresh: true, damaged: false };
  /** Why the last replay stopped where it did (a torn record, or the end). */
  replayEnd = '';
  /** Records the replay found. */
  private found = 0;

  /**
   * The records from the trim point on, in order. Each one's data is valid
   * only until the next one is asked for.
   */
  async *replay(): AsyncGenerator<JournalRecord> {
    if (this.want.fresh) {
      this.replayEnd = this.want.damaged ? 'the journal file has no valid header: NOTHING REPLAYED (writes acknowledged before a crash may be missing)' : 'new journal';
      if (this.want.damaged) this.onError(`${this.file}: ${this.replayEnd}`);
      return;
    }
    const WINDOW = 8 << 20;
    let win = Buffer.alloc(0);
    let winPos = 0;
    const read = async (pos: number, len: number): Promise<Buffer> => {
      if (pos >= winPos && pos + len <= winPos + win.length) return win.subarray(pos - winPos, pos - winPos + len);
      const n = Math.min(Math.max(len, WINDOW), this.size - pos);
      const b = Buffer.alloc(n);
      const { bytesRead } = await readP(this.fd, b, 0, n, pos);
      win = b.subarray(0, bytesRead);
      winPos = pos;
      return win.subarray(0, Math.min(len, bytesRead));
    };
    let pos = this.tail;
    let expect = this.trimSeq;
    let triedWrap = false;
    for (;;) {
      if (pos + REC_HEADER > this.size) pos = FIRST_RECORD;
      const h = await read(pos, REC_HEADER);
      const r = h.length === REC_HEADER ? decodeRecordHead(h) : undefined;
      let ok = false;
      let data: Buffer | undefined;
      if (r && r.seq === expect && pos + REC_HEADER + r.len <= this.size) {
        data = await read(pos + REC_HEADER, r.len);
        // the window may have moved: the header again, from where it is now
        const h2 = await read(pos, REC_HEADER);
        ok = data.length === r.len && recordIntact(h2, data);
        if (!ok) {
          this.replayEnd = `record ${expect} at byte ${pos} is torn (its checksum does not match): dropped, never applied`;
          break;
        }
      }
      if (!ok) {
        // a batch ends on a block boundary; one that did not fit before the end went to the start
        if (pos % BLOCK) {
          pos = alignUp(pos);
          continue;
        }
        if (!triedWrap && pos !== FIRST_RECORD) {
          triedWrap = true;
          pos = FIRST_RECORD;
          continue;
        }
        this.replayEnd = `the end of the journal (record ${expect} is not there)`;
        break;
      }
      triedWrap = false;
      this.found++;
      yield { ...r!, data: data! };
      pos += REC_HEADER + r!.len;
      expect++;
    }
    this.nextSeq = expect;
  }

  /**
   * After replay (whose records the caller has made durable in their
   * object files): everything so far is trimmed, and new records go in.
   */
  async start(): Promise<void> {
    // The file grows as the first lap writes it (a node that writes little
    // keeps a small one). Nothing of an unreadable journal may pass for a
    // record later: it starts empty.
    if (this.want.fresh) await ftruncateP(this.fd, 0);
    const resized = this.want.size !== this.size;
    this.size = this.want.size;
    if (this.want.fresh || resized || this.found > 0) {
      this.trimSeq = this.nextSeq;
      this.tail = this.head = FIRST_RECORD;
      await this.writeHeader({ seq: this.trimSeq, pos: FIRST_RECORD, size: this.size });
    }
    // else the trim point stays where the header has it: a clean restart writes nothing
    this.timer = setInterval(() => {
      if (this.nextSeq > this.trimSeq && !this.cp) void this.checkpoint().catch((e) => this.onError(`journal checkpoint failed: ${(e as Error).message}`));
    }, CHECKPOINT_MS);
    this.timer.unref();
  }

  get sizeBytes(): number {
    return this.size;
  }

  /** The biggest write a record may carry (bigger ones go past the journal). */
  get maxRecord(): number {
    return Math.floor((this.size - FIRST_RECORD) / 4) - REC_HEADER;
  }

  /**
   * Journal a write of data at off of the object file (ino, btime) of oid.
   * done(err) once the record is on disk (or, after a journal write error,
   * once the object file is synced instead). The caller says applied() when
   * its write into the object file is done.
   */
  append(oid: bigint, ino: bigint, btime: bigint, off: number, data: Buffer, done: (err: Error | null) => void): JournalWrite {
    const r: Rec = { oid, ino, btime, off, data, done, applied: false };
    this.pending.push(r);
    this.pendingOf.set(oid, (this.pendingOf.get(oid) ?? 0) + 1);
    this.stats.records++;
    if (!this.kickQueued) {
      this.kickQueued = true;
      queueMicrotask(this.kick);
    }
    return r;
  }

  private readonly kick = () => {
    this.kickQueued = false;
    this.flush();
  };

  /** The object write of w is done (its bytes are in the object file, not necessarily on disk). */
  applied(w: JournalWrite): void {
    const r = w as Rec;
    if (r.applied) return;
    r.applied = true;
    this.unapplied.delete(r);
    this.dirty.add(r.oid);
    r.onApplied?.();
    // the journal is full of records waiting for their object writes: this may free room
    if (this.wantRoom && !this.cp) void this.checkpoint().catch((e) => this.onError(`journal checkpoint failed: ${(e as Error).message}`));
  }

  /** Whether oid has records a replay would apply (or that are on their way to the journal). */
  holds(oid: bigint): boolean {
    return (this.pendingOf.get(oid) ?? 0) > 0 || (this.lastSeq.get(oid) ?? -1) >= this.trimSeq;
  }

  /** Resolves once oid has no record in the journal. */
  async settle(oid: bigint): Promise<void> {
    for (let i = 0; this.holds(oid); i++) {
      if (this.closed) throw new Error('the journal is closed');
      await this.checkpoint();
      if (this.holds(oid)) await new Promise((r) => setTimeout(r, Math.min(50, 1 + i)));
    }
  }

  /** Bytes of records the journal holds that a checkpoint has not trimmed yet. */
  get usedBytes(): number {
    return this.used();
  }

  private used(): number {
    if (this.trimSeq === this.nextSeq) return 0;
    return this.head >= this.tail ? this.head - this.tail : this.size - this.tail + this.head - FIRST_RECORD;
  }

  /** Where a batch of total bytes goes (-1: no room until a checkpoint). */
  private place(total: number): number {
    if (this.trimSeq === this.nextSeq) {
      if (this.head + total <= this.size) return this.head;
      return FIRST_RECORD + total <= this.size ? FIRST_RECORD : -1;
    }
    if (this.head >= this.tail) {
      if (this.head + total <= this.size) return this.head;
      return FIRST_RECORD + total < this.tail ? FIRST_RECORD : -1;
    }
    return this.head + total < this.tail ? this.head : -1;
  }

  private flush(): void {
    if (this.flushes.length >= MAX_FLUSHES || this.paused || this.closed || !this.pending.length) return;
    const cap = Math.min(8 << 20, Math.floor((this.size - FIRST_RECORD) / 4));
    let n = 0;
    let bytes = 0;
    while (n < this.pending.length && n < MAX_BATCH) {
      const l = REC_HEADER + this.pending[n].data.length;
      if (n && bytes + l > cap) break;
      bytes += l;
      n++;
    }
    const total = alignUp(bytes);
    const pos = this.place(total);
    if (pos < 0) {
      this.wantRoom = true;
      void this.checkpoint().catch((e) => this.onError(`journal checkpoint failed: ${(e as Error).message}`));
      return;
    }
    const batch = this.pending.splice(0, n);
    const heads = Buffer.allocUnsafe(REC_HEADER * n);
    const iov: Buffer[] = [];
    let at = pos;
    for (let i = 0; i < n; i++) {
      const r = batch[i];
      r.seq = this.nextSeq++;
      const h = heads.subarray(i * REC_HEADER, (i + 1) * REC_HEADER);
      encodeRecordHead(h, r as Rec & { seq: number }, r.data);
      this.positions.set(r.seq, at);
      this.lastSeq.set(r.oid, r.seq);
      const left = this.pendingOf.get(r.oid)! - 1;
      if (left) this.pendingOf.set(r.oid, left); else this.pendingOf.delete(r.oid);
      if (!r.applied) this.unapplied.add(r);
      iov.push(h, r.data);
      at += REC_HEADER + r.data.length;
    }
    if (total > bytes) iov.push(ZEROS.subarray(0, total - bytes));
    const f: Flush = { batch, pos, end: pos + total, finished: false, err: null };
    this.flushes.push(f);
    this.head = pos + total;
    this.stats.batches++;
    const t0 = performance.now();
    fs.writev(this.fd, iov, pos, (err) => {
      this.stats.flushMs += performance.now() - t0;
      f.finished = true;
      f.err = err;
      this.settleFlushes();
      this.flush();
      if (this.used() > this.size / 2 && !this.cp) void this.checkpoint().catch((e) => this.onError(`journal checkpoint failed: ${(e as Error).message}`));
    });
    // more room for another write out: what is left goes now
    if (this.pending.length) this.flush();
  }

  /**
   * Acknowledge finished journal writes in order: a replay stops at the
   * first record missing, so a batch is durable only once every batch
   * before it is. After a failure, the batches out after it are lost to a
   * replay as well.
   */
  private settleFlushes(): void {
    while (this.flushes.length && this.flushes[0].finished) {
      const f = this.flushes.shift()!;
      if (f.err || this.brokenAt !== undefined) {
        this.brokenAt ??= f.pos;
        this.failed(f.batch, f.err ?? new Error('an earlier journal write failed'));
      } else {
        for (const r of f.batch) r.done(null);
      }
    }
    if (this.brokenAt !== undefined && !this.flushes.length) {
      // nothing is out any more: the next batch goes where the first failed one went
      this.head = this.brokenAt;
      this.brokenAt = undefined;
      this.resumeAfterFailure();
    }
  }

  private brokenAt?: number;

  /**
   * A journal write failed (a full or failing disk): its writes are made
   * durable the old way, each object file synced once the write is in it;
   * the journal takes no record until a checkpoint has trimmed past the
   * failed batch (whose numbers a replay must never expect).
   */
  private failed(batch: Rec[], err: Error): void {
    this.stats.fallbacks += batch.length;
    this.unlogged += batch.length;
    // a full or failing device fails every write: a line per 10 s says so
    if (Date.now() - this.loggedAt >= 10_000) {
      this.onError(`journal write failed (${err.message}): ${this.unlogged} write(s) synced in their object files instead`);
      this.loggedAt = Date.now();
      this.unlogged = 0;
    }
    this.paused = true;
    for (const r of batch) {
      r.fallback = true;
      this.positions.delete(r.seq!);
      this.unapplied.delete(r);
      const sync = () => this.syncer([r.oid]).then(() => r.done(null), (e: Error) => r.done(e));
      if (r.applied) void sync(); else r.onApplied = sync;
    }
  }

  private loggedAt = 0;
  private unlogged = 0;

  private resumeAfterFailure(): void {
    void (async () => {
      for (let i = 0; !this.closed; i++) {
        await this.checkpoint().catch(() => undefined);
        if (this.trimSeq === this.nextSeq) break;
        await new Promise((r) => setTimeout(r, Math.min(100, 1 + i)));
      }
      this.paused = false;
      this.flush();
    })();
  }

  /**
   * Sync the object files written since the last checkpoint, then move the
   * trim point past every record whose write is in them. Concurrent callers
   * share one run.
   */
  checkpoint(): Promise<void> {
    this.cp ??= this.runCheckpoint().finally(() => { this.cp = undefined; });
    return this.cp;
  }

  private async runCheckpoint(): Promise<void> {
    // after a failed write, the trim point waits for the writes still out (they count as failed too)
    if (this.paused && this.flushes.length) return;
    let t = this.nextSeq;
    for (const r of this.unapplied) if (r.seq! < t) t = r.seq!;
    if (t <= this.trimSeq) return;
    const pos = this.positions.get(t) ?? this.head;
    const oids = [...this.dirty];
    this.dirty.clear();
    const t0 = performance.now();
    try {
      await this.syncer(oids);
    } catch (e) {
      for (const o of oids) this.dirty.add(o);
      throw e;
    }
    await this.writeHeader({ seq: t, pos, size: this.size });
    this.trimSeq = t;
    this.tail = pos;
    this.stats.checkpoints++;
    this.stats.checkpointMs += performance.now() - t0;
    for (const s of this.positions.keys()) {
      if (s >= t) break;
      this.positions.delete(s);
    }
    for (const [o, s] of this.lastSeq) if (s < t) this.lastSeq.delete(o);
    if (this.wantRoom) {
      this.wantRoom = false;
      this.flush();
    }
  }

  private async writeHeader(t: TrimPoint): Promise<void> {
    const at = HEADER_SLOTS[this.cpCount++ % HEADER_SLOTS.length];
    await writeP(this.fd, encodeHeader(t), 0, 64, at);
  }

  /** The byte ranges of journal writes not finished yet (a power cut may keep any part of them). For crash tests. */
  unfinishedWrites(): { pos: number; end: number }[] {
    return this.flushes.filter((f) => !f.finished).map(({ pos, end }) => ({ pos, end }));
  }

  /** Stop as a crash would: nothing more is written (what is out still lands), no checkpoint. For crash tests. */
  async crash(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.closed = true;
    for (const r of this.pending.splice(0)) r.done(new Error('the journal stopped (a simulated crash)'));
    for (let i = 0; this.flushes.length && i < 500; i++) await new Promise((r) => setTimeout(r, 2));
    if (this.cp) await this.cp.catch(() => undefined);
    await closeP(this.fd).catch(() => undefined);
  }

  /** Write out what is queued, checkpoint (a clean stop leaves nothing to replay) and close. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.timer) clearInterval(this.timer);
    for (let i = 0; (this.pending.length || this.flushes.length || this.paused) && i < 500; i++) await new Promise((r) => setTimeout(r, 2));
    await this.checkpoint().catch((e) => this.onError(`journal checkpoint at close failed: ${(e as Error).message}`));
    this.closed = true;
    await closeP(this.fd).catch(() => undefined);
  }
}

/** `-j` option: 'none'/'off', or dir=PATH,size=MB (either may be left out). */
export interface JournalOption {
  off: boolean;
  dir?: string;
  sizeMB: number;
}

export function parseJournalOpt(v: string): JournalOption {
  if (v === 'none' || v === 'off') return { off: true, sizeMB: 0 };
  const o: JournalOption = { off: false, sizeMB: DEFAULT_JOURNAL_MB };
  for (const kv of v.split(',')) {
    const i = kv.indexOf('=');
    const k = i < 0 ? kv : kv.slice(0, i);
    const val = i < 0 ? '' : kv.slice(i + 1);
    if (k === 'dir' && val) o.dir = val;
    else if (k === 'size' && /^\d+$/.test(val) && Number(val) >= MIN_JOURNAL_MB && Number(val) <= 1 << 20) o.sizeMB = Number(val);
    else throw new Error(`Invalid journal option '${kv}' (dir=PATH, size=MB with MB >= ${MIN_JOURNAL_MB}, or none)`);
  }
  return o;
}

