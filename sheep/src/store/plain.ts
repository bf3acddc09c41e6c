// "plain" store: one file per object under DIR/obj, named by 16 hex digits.
// Creates are atomic (write a temp file, fsync, rename); unless nosync,
// every write is on disk before it is acknowledged: in the node's journal
// (journal.ts) when it has one, else in its object file.
//
// Every object file carries its version (see ObjectCopy): the epoch of the
// write that last changed it, in an extended attribute. A write in a newer
// epoch raises it, and the raised version is on disk before the write's
// bytes are, so a copy never claims to be older than it is.
import * as fs from 'node:fs';
import { promises as fsp, constants as FS } from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { oidToHex, SheepdogError, Res, SpliceTarget, FarmRepo } from '@sheepdog/common';
import type { ObjectStore, ObjectCopy, FoundBy } from './store.js';
import { FdCache, FdEntry, preadFull, pwriteFull } from './fdcache.js';
import { takePipe, givePipe, readPipeNow } from './pipes.js';
import { WriteQueue } from './writequeue.js';
import { syncPool } from './syncpool.js';
import { tryReadNow, PipeSource, chunkRoom, versionIO, versionIOMissing } from './fileio.js';
import { RecentWrites } from './recent.js';
import { MoveGate } from './movegate.js';
import { SUM_BLOCK, sumBytes, sumsOf, blockSum, firstBad } from './checksums.js';
import { Journal } from './journal.js';
import { replayInto } from './journal-replay.js';
import type { MdDisks, DiskChange } from './md.js';
import { keyFileName, keyOid, parseStripFileName } from '../ec/strip-key.js';

/**
 * Writes this large go straight to their object file and its fdatasync when
 * the object has no record in the journal: through the journal their bytes
 * would reach the disk twice (journal, then object file), and one large
 * write already fills a flush on its own.
 */
const JOURNAL_BYPASS = Number(process.env.SHEEP_JOURNAL_BYPASS ?? 128 * 1024);

/** Where the journal is and how big (see the -j option). */
export interface JournalPlace {
  file: string;
  sizeBytes: number;
}

/** SHEEP_CHECKSUMS=0: new objects carry no block checksums (and large NBD writes are spliced again). */
const CHECKSUMS = process.env.SHEEP_CHECKSUMS !== '0';

/** sumsOf over data placed at off of a size-byte object, in slices that let other work in between. */
async function sumsOfLater(data: Buffer, off: number, size: number): Promise<Buffer> {
  if (off === 0 && data.length <= 1 << 20) return sumsOf(data, size);
  const sums = Buffer.alloc(sumBytes(size));
  const STEP = 256 * SUM_BLOCK; // 1 MiB of CRC at a time (about 0.3 ms here)
  const blk = Buffer.alloc(SUM_BLOCK);
  for (let pos = 0; pos < size; pos += SUM_BLOCK) {
    const n = Math.min(SUM_BLOCK, size - pos);
    let s: number;
    if (pos >= off && pos + n <= off + data.length) s = blockSum(data, pos - off, n);
    else {
      blk.fill(0);
      const from = Math.max(off, pos);
      const to = Math.min(off + data.length, pos + n);
      if (to > from) data.copy(blk, from - pos, from - off, to - off);
      s = blockSum(blk, 0, n);
    }
    sums.writeUInt32LE(s, 4 * (pos / SUM_BLOCK));
    if (pos % STEP === STEP - SUM_BLOCK) await new Promise((r) => setImmediate(r));
  }
  return sums;
}

/**
 * Where live objects sit inside obj/ (farm-and-backup.md C.1):
 * 'flat' (plain, farm): obj/<oid>. 'tree' (tree, as in upstream 1.0): inode,
 * vmstate and attribute objects in obj/meta/<oid>; data, B-tree and ledger
 * objects in obj/XX/<oid>, XX = the low byte of the vid (oid bits 32-39).
 * Set-aside copies are in obj/.stale/<oid> either way.
 */
export type StoreLayout = 'flat' | 'tree';

/** The layout a store driver name uses. */
export const layoutOf = (store: string): StoreLayout => (store === 'tree' ? 'tree' : 'flat');

/** The tree layout's subdirectory of an oid. */
export function treeDirOf(oid: bigint): string {
  const meta = (oid & ((1n << 63n) | (1n << 62n) | (1n << 61n))) !== 0n;
  return meta ? 'meta' : Number((oid >> 32n) & 0xffn).toString(16).padStart(2, '0');
}

const TREE_DIRS = ['meta', ...Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))];

export class PlainStore implements ObjectStore {
  /** The store driver the node was formatted with (plain, tree, farm). */
  name = 'plain';
  private layout: StoreLayout = 'flat';
  readonly objDir: string;
  /** The farm store's repository (DIR/farm). */
  readonly farmDir: string;
  readonly tmpDir: string;
  readonly staleDir: string;
  private fds = new FdCache((oid) => this.p(oid), 512);
  private writes = new WriteQueue();
  private moves = new MoveGate();
  /** The epoch new writes are stamped with (set by the node). */
  epochNow: () => number = () => 0;
  readonly recent = new RecentWrites();

  /** The write-ahead journal, once started (sync mode only). */
  journal?: Journal;

  /** md: objects spread over several disks (md.ts); without it every object is under obj/. */
  constructor(readonly baseDir: string, readonly nosync: boolean, readonly journalPlace?: JournalPlace, readonly md?: MdDisks) {
    this.objDir = path.join(baseDir, 'obj');
    this.farmDir = path.join(baseDir, 'farm');
    this.tmpDir = path.join(baseDir, 'obj', '.tmp');
    this.staleDir = path.join(baseDir, 'obj', '.stale');
    if (md) {
      md.liveSubdirs = () => (this.layout === 'tree' ? TREE_DIRS : ['']);
      md.relocate = (oid, from, to) => this.relocate(oid, from, to);
      md.onChange = (c) => {
        // descriptors of a failed disk must not serve, nor take writes
        if (c.kind === 'failed') void this.fds.closeAll();
        this.onDiskChange?.(c);
      };
    }
  }

  /** Told when md's disk set changes (the node updates its space and recovers a failed disk's objects). */
  onDiskChange?: (c: DiskChange) => void;

  async init(): Promise<void> {
    if (!versionIO) throw new Error(`the native addon is needed for object versions (${versionIOMissing()})`);
    for (const root of this.roots()) {
      const tmp = path.join(root, '.tmp');
      await fsp.mkdir(tmp, { recursive: true });
      await fsp.mkdir(path.join(root, '.stale'), { recursive: true });
      // leftovers of creates interrupted by a crash were never acknowledged
      for (const f of await fsp.readdir(tmp)) await fsp.rm(path.join(tmp, f), { force: true });
    }
  }

  /** The directory an object's files are under: obj/, or with md the disk the object is on (an object's strips are on its disk). */
  private rootOf(oid: bigint): string {
    return this.md ? this.md.rootOf(keyOid(oid)) : this.objDir;
  }

  /** Every directory that holds object files. */
  private roots(): string[] {
    return this.md ? this.md.roots() : [this.objDir];
  }

  // oid: a store key, an object's oid or one of its strips (see ec/strip-key.ts)
  private p(oid: bigint, root = this.rootOf(oid)): string {
    if (this.layout === 'tree') return path.join(root, treeDirOf(oid), keyFileName(oid));
    return path.join(root, keyFileName(oid));
  }

  /**
   * Use the layout of a store driver (at start-up, from the node's config;
   * at format, after wipe()). Objects already in another layout are not
   * moved: a store changes only when it is formatted.
   */
  async setDriver(store: string): Promise<void> {
    const layout = layoutOf(store);
    if (layout !== this.layout) await this.fds.closeAll();
    this.name = store;
    this.layout = layout;
    if (layout === 'tree') {
      for (const root of this.roots()) for (const d of TREE_DIRS) await fsp.mkdir(path.join(root, d), { recursive: true });
    }
    // farm: the node's own content-addressed repository, in dog's repository
    // format, beside the working objects (kept across formats)
    if (store === 'farm') await new FarmRepo(this.farmDir).init({ recursive: true });
    await this.md?.rescan();
  }

  /** The directories that hold live objects. */
  private liveDirs(): string[] {
    return this.roots().flatMap((root) => (this.layout === 'tree' ? TREE_DIRS.map((d) => path.join(root, d)) : [root]));
  }

  /** The directories that hold set-aside copies. */
  private staleDirs(): string[] {
    return this.roots().map((root) => path.join(root, '.stale'));
  }

  /** Names in the live directories (each with its directory). */
  private async liveFiles(): Promise<{ dir: string; f: string }[]> {
    const out: { dir: string; f: string }[] = [];
    for (const dir of this.liveDirs()) {
      for (const f of await fsp.readdir(dir).catch(() => [] as string[])) if (/^[0-9a-f]{16}$/.test(f)) out.push({ dir, f });
    }
    return out;
  }

  /** md: a NO_OBJ from the disk an object was on when a request started, while it moved to another. */
  private movedAway(e: unknown, oid: bigint, root: string): boolean {
    return e instanceof SheepdogError && e.result === Res.NO_OBJ && (this.relocating.has(oid) || this.md!.rootOf(oid) !== root);
  }

  async read(oid: bigint, off: number, len: number, into?: Buffer, by: FoundBy = 'read'): Promise<Buffer> {
    const buf = into ?? Buffer.allocUnsafe(len);
    let bad: string | undefined;
    const root = this.md?.rootOf(oid);
    try {
      bad = await this.fds.use(oid, async (fd, e) => {
        for (let tries = 0; ; tries++) {
          // a write that starts and ends while we read makes our bytes older
          // than the sums we check them against: read again
          const gen = e.gen ?? 0;
          const got = await preadFull(fd, buf, 0, len, off);
          if (got < len) {
            // every object file is created at its full size: a short one lost its end,
            // unless the read asks for bytes past the size the object was made with
            const loading = this.loadSums(e);
            if (loading) await loading;
            if (e.size && off + len > e.size) throw new SheepdogError(Res.INVALID_PARMS, `bytes ${off}-${off + len - 1} are beyond ${oid.toString(16)}'s ${e.size}`);
            return `the file ends at ${off + got}, before byte ${off + len} of the object`;
          }
          const why = await this.verify(e, fd, buf, off, len);
          if (!why || tries === 3 || (e.gen ?? 0) === gen) return why;
        }
      });
    } catch (e) {
      const err = this.mapErr(e);
      if (root !== undefined) this.md!.failedAt(err, root);
      if (root !== undefined && this.movedAway(err, oid, root)) {
        await this.relocating.get(oid);
        return this.read(oid, off, len, into, by);
      }
      throw err;
    }
    if (bad) throw this.damaged(oid, bad, by);
    return buf;
  }

  /** Read e's size and checksums, once. */
  private loadSums(e: FdEntry): Promise<void> | undefined {
    if (e.size !== undefined) return undefined;
    e.sumsLoading ??= (async () => {
      const size = versionIO!.getObjectSize(e.fd);
      if (size <= 0) {
        e.size = 0;
        return;
      }
      const sums = Buffer.alloc(sumBytes(size));
      const got = await preadFull(e.fd, sums, 0, sums.length, size);
      if (got < sums.length) sums.fill(0, got); // a cut trailer: those blocks go unchecked (the data read says the rest)
      e.sums = sums;
      e.size = size;
    })().finally(() => { e.sumsLoading = undefined; });
    return e.sumsLoading;
  }

  /** Why the len bytes buf holds from off are not what e's checksums say (undefined: they are). */
  private async verify(e: FdEntry, fd: number, buf: Buffer, off: number, len: number): Promise<string | undefined> {
    const loading = this.loadSums(e);
    if (loading) await loading;
    const size = e.size!;
    if (!size || !e.sums || len === 0) return undefined;
    const sums = e.sums;
    const accept = e.inflight?.size ? (b: number, sum: number) => !!e.inflight!.get(b)?.includes(sum) : undefined;
    const first = Math.floor(off / SUM_BLOCK);
    const last = Math.floor((off + len - 1) / SUM_BLOCK);
    const tmp = (off % SUM_BLOCK || ((off + len) % SUM_BLOCK && off + len < size)) ? Buffer.allocUnsafe(SUM_BLOCK) : undefined;
    for (let b = first; b <= last; b++) {
      const pos = b * SUM_BLOCK;
      const n = Math.min(SUM_BLOCK, size - pos);
      let bad: number;
      if (pos >= off && pos + n <= off + len) {
        bad = firstBad(sums, size, buf, pos - off, pos, n, accept);
      } else {
        // the read covers part of the block: the rest comes from the file (the page cache, mostly)
        const got = await preadFull(fd, tmp!, 0, n, pos);
        if (got < n) return `the file ends at ${pos + got}, in block ${b}`;
        bad = firstBad(sums, size, tmp!, 0, pos, n, accept);
      }
      if (bad >= 0) return `block ${bad} (bytes ${bad * SUM_BLOCK}-${bad * SUM_BLOCK + SUM_BLOCK - 1}) does not match its checksum`;
    }
    return undefined;
  }

  /** Called with an object whose copy here is damaged (the node repairs it from another replica). */
  onDamage?: (oid: bigint, why: string, by: FoundBy) => void;

  /** A damaged copy: never served; named in the log; repaired by whoever listens. */
  private damaged(oid: bigint, why: string, by: FoundBy): SheepdogError {
    const what = `${this.p(oid)} is damaged: ${why}`;
    this.onDamage?.(oid, what, by);
    return new SheepdogError(Res.EIO, what);
  }

  readCached(oid: bigint, off: number, len: number, into: Buffer, at: number): boolean {
    const e = this.fds.peekEntry(oid);
    // checksums not read yet, or a read of part of a block: read() does those
    if (e === undefined || e.size === undefined) return false;
    const size = e.size;
    if (size && (off % SUM_BLOCK || ((off + len) % SUM_BLOCK && off + len < size))) return false;
    // a short read may be a page not cached or the end of the file: read() tells them apart
    if (tryReadNow(e.fd, into, at, len, off) !== len) return false;
    if (!size || !e.sums) return true;
    const accept = e.inflight?.size ? (b: number, sum: number) => !!e.inflight!.get(b)?.includes(sum) : undefined;
    // a mismatch goes the long way, which reports and repairs it
    return firstBad(e.sums, size, into, at, off, len, accept) < 0;
  }

  // Callbacks rather than async steps: this is every write's path, and each
  // await would cost a promise and a microtask turn.
  /** Objects being replaced by a repair: writes to them wait for it (so none lands on the copy thrown away). */
  private held = new Map<bigint, Promise<void>>();

  /** Hold writes to oid until the returned release is called. */
  hold(oid: bigint): () => void {
    let release!: () => void;
    this.held.set(oid, new Promise<void>((r) => (release = r)));
    return () => {
      this.held.delete(oid);
      release();
    };
  }

  /** Resolves once no create and no I/O is in flight on oid's file (hold it first, or writes keep coming). */
  async idle(oid: bigint): Promise<void> {
    for (let i = 0; this.installing.has(oid) || (this.fds.peekEntry(oid)?.refs ?? 0) > 0; i++) await new Promise((r) => setTimeout(r, Math.min(50, 1 + i)));
  }

  write(oid: bigint, off: number, data: Buffer): Promise<void> {
    if (this.held.size) {
      const h = this.held.get(oid);
      if (h) return h.then(() => this.write(oid, off, data));
    }
    if (this.md) return this.mdWrite(oid, off, data);
    return this.writeNow(oid, off, data);
  }

  /** md: a write whose disk failed while it ran may have reached only that disk: the requester retries it. */
  private async mdWrite(oid: bigint, off: number, data: Buffer): Promise<void> {
    const root = this.md!.rootOf(oid);
    try {
      await this.writeNow(oid, off, data);
    } catch (e) {
      // an error on a descriptor of root's: root's
      this.md!.failedAt(e, root);
      // moved to another disk while its file was being opened: write it there
      if (!this.movedAway(e, oid, root)) throw e;
      return this.write(oid, off, data);
    }
    if (this.md!.isFailed(root)) throw new SheepdogError(Res.NETWORK_ERROR, `${root} failed during a write to ${oidToHex(oid)}; try again`);
  }

  private writeNow(oid: bigint, off: number, data: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.fds.acquire(oid, (err, e) => {
        if (err) reject(this.mapErr(err));
        else if (data.length === 0) {
          // nothing to write: the object exists, and stays as it is
          this.fds.release(e!);
          resolve();
        } else if (e!.size === 0) {
          this.queueWrite(e!, data, off, resolve, reject, undefined, oid);
        } else {
          this.writeSummed(e!, oid, data, off).then(resolve, reject);
        }
      });
    });
  }

  /**
   * A write into a file with checksums: the sums of the blocks it touches
   * go with it, in the same batch, synced with it. A write that covers part
   * of a block needs the block's other bytes, so it waits for every write
   * before it and goes alone; one of whole blocks waits only for such a
   * write. Takes over the caller's reference to e.
   */
  private async writeSummed(e: FdEntry, oid: bigint, data: Buffer, off: number): Promise<void> {
    try {
      const loading = this.loadSums(e);
      if (loading) await loading;
    } catch (err) {
      this.fds.release(e);
      throw this.mapErr(err);
    }
    if (!e.size || !e.sums) return new Promise<void>((resolve, reject) => this.queueWrite(e, data, off, resolve, reject, undefined, oid));
    const size = e.size;
    const partial = (off % SUM_BLOCK !== 0) || ((off + data.length) % SUM_BLOCK !== 0 && off + data.length < size);
    if (!partial && !e.partial) return this.writeBlocks(e, oid, data, off);
    const run = (e.partial ?? Promise.resolve()).then(() => this.drain(e)).then(() => this.writeBlocks(e, oid, data, off));
    const done: Promise<void> = run.then(() => undefined, () => undefined).then(() => { if (e.partial === done) e.partial = undefined; });
    e.partial = done;
    return run;
  }

  /** Resolves when no write is in flight on e. */
  private drain(e: FdEntry): Promise<void> {
    if (!e.writing) return Promise.resolve();
    return new Promise((r) => (e.drained ??= []).push(r));
  }

  /** Compute the new sums of the blocks data touches, and write both (gives back e's reference). */
  private async writeBlocks(e: FdEntry, oid: bigint, data: Buffer, off: number): Promise<void> {
    const size = e.size!;
    const sums = e.sums!;
    const first = Math.floor(off / SUM_BLOCK);
    const last = Math.floor((off + data.length - 1) / SUM_BLOCK);
    const fresh: number[] = [];
    try {
      for (let b = first; b <= last; b++) {
        const pos = b * SUM_BLOCK;
        const n = Math.min(SUM_BLOCK, size - pos);
        if (pos >= off && pos + n <= off + data.length) {
          fresh.push(blockSum(data, pos - off, n));
          continue;
        }
        // part of the block: its other bytes as they are now (no write is in flight: see writeSummed)
        const blk = Buffer.alloc(n);
        await preadFull(e.fd, blk, 0, n, pos);
        const from = Math.max(off, pos);
        data.copy(blk, from - pos, from - off, Math.min(off + data.length, pos + n) - off);
        fresh.push(blockSum(blk, 0, n));
      }
    } catch (err) {
      this.fds.release(e);
      throw this.mapErr(err);
    }
    // while the write is in flight a read may find the old bytes or the new
    const inflight = (e.inflight ??= new Map());
    const added: [number, number, number][] = [];
    for (let b = first; b <= last; b++) {
      const was = sums.readUInt32LE(4 * b);
      const now = fresh[b - first];
      const l = inflight.get(b);
      if (l) l.push(was, now); else inflight.set(b, [was, now]);
      added.push([b, was, now]);
      sums.writeUInt32LE(now, 4 * b);
    }
    e.writing = (e.writing ?? 0) + 1;
    e.gen = (e.gen ?? 0) + 1;
    const trailer = { data: Buffer.from(sums.subarray(4 * first, 4 * (last + 1))), off: size + 4 * first };
    try {
      await new Promise<void>((resolve, reject) => this.queueWrite(e, data, off, resolve, reject, undefined, oid, trailer));
    } finally {
      for (const [b, was, now] of added) {
        const l = inflight.get(b);
        if (!l) continue;
        for (let i = 0; i + 1 < l.length; i += 2) {
          if (l[i] === was && l[i + 1] === now) {
            l.splice(i, 2);
            break;
          }
        }
        if (!l.length) inflight.delete(b);
      }
      e.writing--;
      e.gen = (e.gen ?? 0) + 1;
      if (!e.writing && e.drained) for (const r of e.drained.splice(0)) r();
    }
  }

  /**
   * Raise the version of e's object to the current epoch before a write
   * into it; then() once the version is on disk (at once when it already
   * is). A version is never lowered.
   */
  private stamp(e: FdEntry, then: () => void, reject: (e: Error) => void): void {
    if (e.stamping) {
      e.stamping.then(then, reject);
      return;
    }
    const ep = this.epochNow();
    if (e.ver === undefined) {
      const v = versionIO!.getVersion(e.fd);
      e.ver = v > 0 ? v : 0;
    }
    if (e.ver >= ep) return then();
    const r = versionIO!.setVersion(e.fd, ep);
    if (r < 0) return reject(new SheepdogError(Res.EIO, `cannot set the version of an object: errno ${-r}`));
    e.ver = ep;
    if (this.nosync) return then();
    e.stamping = syncPool.fsync(e.fd).finally(() => { e.stamping = undefined; });
    e.stamping.then(then, (err) => reject(this.mapErr(err)));
  }

  /** Write data at off through e (whose reference this gives back), synced unless nosync. */
  private queueWrite(e: FdEntry, data: Buffer | PipeSource, off: number, resolve: () => void, reject: (e: Error) => void, written?: (ok: boolean) => void, oid?: bigint, also?: { data: Buffer; off: number }): void {
    if (oid !== undefined) this.recent.add(oid);
    this.stamp(e, () => this.queueStamped(e, data, off, resolve, reject, written, also, oid), (err) => {
      written?.(false);
      this.fds.release(e);
      reject(err);
    });
  }

  /** also: a second piece (the sums) that goes in the same batch and is synced with data. */
  private queueStamped(e: FdEntry, data: Buffer | PipeSource, off: number, resolve: () => void, reject: (e: Error) => void, written?: (ok: boolean) => void, also?: { data: Buffer; off: number }, oid?: bigint): void {
    const j = this.journal;
    if (j && oid !== undefined && e.ino !== undefined && Buffer.isBuffer(data) && data.length <= j.maxRecord &&
        (data.length < JOURNAL_BYPASS || j.holds(oid))) {
      return this.queueJournaled(j, e, data, off, resolve, reject, also, oid);
    }
    if (j && oid !== undefined && j.holds(oid)) {
      // past the journal (a spliced payload, a large write) only once the object has no record there
      // that a replay could put over it; checked again when it goes, in the same turn
      j.settle(oid).then(() => this.queueStamped(e, data, off, resolve, reject, written, also, oid), (err) => {
        written?.(false);
        this.fds.release(e);
        reject(this.mapErr(err));
      });
      return;
    }
    let alsoErr: Error | null = null;
    if (also) this.writes.write(e.fd, also.data, also.off, (werr) => { alsoErr = werr; });
    this.writes.write(e.fd, data, off, (werr0) => {
      const werr = werr0 ?? alsoErr;
      written?.(!werr);
      if (werr || this.nosync) {
        this.fds.release(e);
        return werr ? reject(this.mapErr(werr)) : resolve();
      }
      this.fds.sync(e).then(
        () => { this.fds.release(e); resolve(); },
        (serr) => { this.fds.release(e); reject(this.mapErr(serr)); },
      );
    });
  }

  /**
   * A write through the journal: into the object file (the page cache),
   * and as a record into the journal; acknowledged once both are done, the
   * record on disk. The object file reaches the disk at a checkpoint.
   */
  private queueJournaled(j: Journal, e: FdEntry, data: Buffer, off: number, resolve: () => void, reject: (e: Error) => void, also: { data: Buffer; off: number } | undefined, oid: bigint): void {
    let left = 2;
    let failed: Error | null = null;
    const fin = (err: Error | null) => {
      if (err && !failed) failed = err;
      if (--left) return;
      this.fds.release(e);
      if (failed) reject(this.mapErr(failed));
      else resolve();
    };
    const w = j.append(oid, e.ino!, e.btime!, off, data, fin);
    let alsoErr: Error | null = null;
    if (also) this.writes.write(e.fd, also.data, also.off, (werr) => { alsoErr = werr; });
    this.writes.write(e.fd, data, off, (werr) => {
      j.applied(w);
      fin(werr ?? alsoErr);
    });
  }

  /** The object's file must be open already: a target is offered only when nothing need wait. */
  spliceTarget(oid: bigint, off: number, len: number): SpliceTarget | undefined {
    // the bytes of a spliced payload never pass through memory, where their sums would be computed;
    // nor can they go into a journal record: they go past it, as large writes do
    if (CHECKSUMS || this.held.has(oid) || this.journal?.holds(oid)) return undefined;
    const e = this.fds.acquireOpen(oid);
    if (!e) return undefined;
    const p = takePipe(len);
    if (!p) {
      this.fds.release(e);
      return undefined;
    }
    let settled = false;
    const takeBack = (into: Buffer, n: number): void => {
      settled = true;
      try {
        readPipeNow(p, into, n);
        givePipe(p, true);
      } catch (err) {
        givePipe(p, false);
        throw err;
      } finally {
        this.fds.release(e);
      }
    };
    return {
      pipe: p.w,
      commit: () => {
        // dropped from the cache meanwhile (the file replaced or removed, or just evicted): the full way reopens it
        if (e.dead) return undefined;
        settled = true;
        return new Promise<void>((resolve, reject) => {
          // a failed write may leave bytes in the pipe: then it is not reused
          this.queueWrite(e, { pipe: p.r, length: len }, off, resolve, reject, (ok) => givePipe(p, ok), oid);
        });
      },
      drain: () => {
        const buf = Buffer.allocUnsafe(len);
        try {
          takeBack(buf, len);
        } catch (err) {
          return Promise.reject(this.mapErr(err));
        }
        return Promise.resolve(buf);
      },
      takeBack,
      abort: () => {
        if (settled) return;
        settled = true;
        givePipe(p, false);
        this.fds.release(e);
      },
    };
  }

  async create(oid: bigint, size: number, off: number, data: Buffer): Promise<void> {
    // an empty create of an object that exists changes nothing (dog vdi create -P sends them)
    if (data.length === 0 && (await this.exists(oid))) return;
    this.recent.add(oid);
    return this.install(oid, size, off, data, this.epochNow());
  }

  /** Atomically (re)create an object with the given version: a temporary file, synced, renamed into place. */
  private async install(oid: bigint, size: number, off: number, data: Buffer, version: number): Promise<void> {
    // an object moving between md disks: its file goes where the move put it
    for (let r = this.relocating.get(oid); r; r = this.relocating.get(oid)) await r;
    // the temporary file on the disk it is renamed into
    const root = this.rootOf(oid);
    const tmp = path.join(root, '.tmp', `${keyFileName(oid)}.${randomBytes(4).toString('hex')}`);
    this.installing.set(oid, (this.installing.get(oid) ?? 0) + 1);
    let fh;
    try {
      fh = await fsp.open(tmp, FS.O_CREAT | FS.O_EXCL | FS.O_RDWR, 0o644);
      await fh.truncate(size);
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await fh.write(data, done, chunkRoom(off + done, data.length - done), off + done);
        done += bytesWritten;
      }
      let r: number;
      if (CHECKSUMS) {
        const sums = await sumsOfLater(data, off, size);
        const { bytesWritten } = await fh.write(sums, 0, sums.length, size);
        if (bytesWritten !== sums.length) throw new SheepdogError(Res.EIO, `short write of the checksums of ${oidToHex(oid)}`);
        r = versionIO!.setMeta(fh.fd, version, size);
      } else {
        r = versionIO!.setVersion(fh.fd, version);
      }
      if (r < 0) throw new SheepdogError(Res.EIO, `cannot set the version of ${oidToHex(oid)}: errno ${-r}`);
      if (!this.nosync) await syncPool.fsync(fh.fd);
      await fh.close();
      fh = undefined;
      await fsp.rename(tmp, this.p(oid, root));
      this.fds.invalidate(oid);
      // a ring change meanwhile: md finds it where it is until it is moved
      this.md?.placed(oid, root);
    } catch (e) {
      if (fh) await fh.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw this.mapErr(e);
    } finally {
      const n = this.installing.get(oid)! - 1;
      if (n) this.installing.set(oid, n); else this.installing.delete(oid);
    }
  }

  /** md: objects whose files are moving between disks, and creates in flight (a move waits for them). */
  private relocating = new Map<bigint, Promise<void>>();
  private installing = new Map<bigint, number>();

  /**
   * md: move an object's files (live and set aside) from one disk to
   * another, with writes to it held and no create or I/O on it in flight;
   * a rename when both are on one file system, else a copy (with its
   * version and size attributes) renamed into place and the original
   * removed. Where the target already has a file at least as new, the
   * moved one is dropped.
   */
  private async relocate(oid: bigint, from: string, to: string): Promise<void> {
    // after a repair holding it (its create would wait for us), and after another move
    for (;;) {
      const w = this.relocating.get(oid) ?? this.held.get(oid);
      if (!w) break;
      await w;
    }
    let done!: () => void;
    this.relocating.set(oid, new Promise<void>((r) => (done = r)));
    const release = this.hold(oid);
    try {
      await this.moves.move(async () => {
        await this.idle(oid);
        await this.journal?.settle(oid);
        this.fds.invalidate(oid);
        for (const [src, dst] of [[this.p(oid, from), this.p(oid, to)], [this.sp(oid, from), this.sp(oid, to)]]) {
          const sv = this.fileVersion(src);
          if (sv === undefined) continue;
          const dv = this.fileVersion(dst);
          if (dv !== undefined && dv >= sv) {
            await fsp.unlink(src);
            continue;
          }
          await fsp.mkdir(path.dirname(dst), { recursive: true });
          try {
            await fsp.rename(src, dst);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
            const tmp = path.join(to, '.tmp', `${keyFileName(oid)}.${randomBytes(4).toString('hex')}`);
            try {
              await fsp.copyFile(src, tmp);
              const size = versionIO!.getObjectSize(src);
              const fh = await fsp.open(tmp, 'r+');
              try {
                const r = size > 0 ? versionIO!.setMeta(fh.fd, sv, size) : versionIO!.setVersion(fh.fd, sv);
                if (r < 0) throw Object.assign(new Error(`cannot set the version of ${tmp}: errno ${-r}`), { path: tmp });
                if (!this.nosync) await fh.sync();
              } finally {
                await fh.close();
              }
              await fsp.rename(tmp, dst);
            } catch (err) {
              await fsp.rm(tmp, { force: true }).catch(() => undefined);
              throw err;
            }
            await fsp.unlink(src);
          }
        }
        this.md!.movedHome(oid, from);
      });
    } finally {
      release();
      this.relocating.delete(oid);
      done();
    }
  }

  async createFull(oid: bigint, size: number, data: Buffer, version?: number): Promise<void> {
    const body = data.length > size ? data.subarray(0, size) : data;
    const v = version ?? this.epochNow();
    try {
      await this.install(oid, size, 0, body, v);
    } catch (e) {
      // a full disk has no room for a new copy; the old one can often be patched where it differs
      if (!(e instanceof SheepdogError && e.result === Res.NO_SPACE)) throw e;
      // the old copy may be set aside (a node that rejoined): it is the one to patch
      if (!(await this.exists(oid)) && !(await this.restoreStale(oid))) throw e;
      await this.patchInPlace(oid, size, body, v);
    }
  }

  /**
   * Bring an existing copy to the given bytes by rewriting, in place, only
   * the 4 KiB pages that differ (pages written before have their blocks
   * already). Not atomic: the copy's version is 0 (older than any) until
   * every page is in, so a crash half-way leaves a copy recovery replaces.
   */
  private async patchInPlace(oid: bigint, size: number, data: Buffer, version: number): Promise<void> {
    const PAGE = 4096;
    // bytes written past the journal: a replay must not put older records over them
    await this.journal?.settle(oid);
    await this.fds.use(oid, async (fd, e) => {
      if (versionIO!.setVersion(fd, 0) < 0) throw new SheepdogError(Res.EIO, `cannot clear the version of ${oidToHex(oid)}`);
      e.ver = 0;
      const mine = Buffer.alloc(PAGE);
      const want = Buffer.alloc(PAGE);
      for (let off = 0; off < size; off += PAGE) {
        const n = Math.min(PAGE, size - off);
        want.fill(0);
        data.copy(want, 0, off, Math.min(data.length, off + n));
        const got = await preadFull(fd, mine, 0, n, off);
        if (got === n && mine.subarray(0, n).equals(want.subarray(0, n))) continue;
        await pwriteFull(fd, want.subarray(0, n), off).catch((err: Error) => { throw Object.assign(new Error(`patching ${oidToHex(oid)} at ${off}: ${err.message}`), { code: (err as NodeJS.ErrnoException).code }); });
      }
      if (e.size) {
        const sums = sumsOf(data, size);
        await pwriteFull(fd, sums, size);
        e.sums = sums;
      }
      if (!this.nosync) await syncPool.fdatasync(fd);
      if (versionIO!.setVersion(fd, version) < 0) throw new SheepdogError(Res.EIO, `cannot set the version of ${oidToHex(oid)}`);
      e.ver = version;
      if (!this.nosync) await syncPool.fsync(fd);
    }).catch((err) => { throw this.mapErr(err); });
  }

  /**
   * Every object this node holds a copy of, once, with its best copy: the
   * newer of a live and a set-aside one (the live one when equal).
   */
  copies(): Promise<ObjectCopy[]> {
    return this.moves.list(() => this.scanCopies());
  }

  private async scanCopies(): Promise<ObjectCopy[]> {
    const byOid = new Map<bigint, ObjectCopy>();
    const dirs: [string, boolean][] = [...this.liveDirs().map((d) => [d, false] as [string, boolean]), ...this.staleDirs().map((d) => [d, true] as [string, boolean])];
    for (const [dir, stale] of dirs) {
      const names = await fsp.readdir(dir).catch(() => [] as string[]);
      for (let i = 0; i < names.length; i++) {
        const f = names[i];
        if (!/^[0-9a-f]{16}$/.test(f)) continue;
        const version = this.fileVersion(path.join(dir, f));
        if (version === undefined) continue; // removed meanwhile
        const oid = BigInt('0x' + f);
        const had = byOid.get(oid);
        if (!had || version > had.version) byOid.set(oid, { oid, version, stale });
        // a syscall per file: let requests in between
        if (i % 256 === 255) await new Promise((r) => setImmediate(r));
      }
    }
    return [...byOid.values()];
  }

  /**
   * After a crash: a write's bytes and its block sums may not both have
   * reached the disk. For the copies changed since ms, the sums are
   * recomputed from the bytes (the replicas of those objects are compared
   * and reconciled by recovery, see Sheep.copyRecords). Returns how many
   * copies had sums to fix.
   */
  async rebuildSums(sinceMs: number): Promise<number> {
    let fixed = 0;
    for (const dir of [...this.liveDirs(), ...this.staleDirs()]) {
      for (const f of await fsp.readdir(dir).catch(() => [] as string[])) {
        if (!/^[0-9a-f]{16}$/.test(f) && !parseStripFileName(f)) continue;
        const file = path.join(dir, f);
        try {
          if ((await fsp.stat(file)).mtimeMs < sinceMs) continue;
          const fh = await fsp.open(file, 'r+');
          try {
            if (!(await this.rebuildFileSums(fh.fd))) continue;
            if (!this.nosync) await syncPool.fdatasync(fh.fd);
            fixed++;
          } finally {
            await fh.close();
          }
        } catch { /* removed meanwhile */ }
      }
    }
    return fixed;
  }

  /** Whether a copy (live, or the one set aside) was modified at or after the time ms. */
  async changedSince(oid: bigint, stale: boolean, ms: number): Promise<boolean> {
    try {
      return (await fsp.stat(stale ? this.sp(oid) : this.p(oid))).mtimeMs >= ms;
    } catch {
      return false;
    }
  }

  /** Remove the copy set aside, if any. */
  dropStale(oid: bigint): Promise<void> {
    return this.moves.move(() => fsp.rm(this.sp(oid), { force: true }));
  }

  /** A live copy's version (undefined: no live copy). */
  async versionOf(oid: bigint): Promise<number | undefined> {
    const v = versionIO!.getVersion(this.p(oid));
    if (v === -2) return undefined;
    return v > 0 ? v : 0;
  }

  /** Which copy is the best (see copies()): undefined when there is none. */
  bestCopy(oid: bigint): 'live' | 'stale' | undefined {
    const live = this.fileVersion(this.p(oid));
    const stale = this.fileVersion(this.sp(oid));
    if (stale !== undefined && (live === undefined || stale > live)) return 'stale';
    return live === undefined ? undefined : 'live';
  }

  /** A whole copy and its version: the live one, or (with anyCopy) the best one, which may be set aside. */
  async readCopy(oid: bigint, size: number, anyCopy: boolean, by: FoundBy = 'recovery'): Promise<{ data: Buffer; version: number; stale: boolean }> {
    // the live copy may be set aside (or a newer one installed) between the
    // look and the open: look again rather than answer NO_OBJ for an object
    // that is here
    for (let tries = 0; ; tries++) {
      try {
        return await this.readCopyOnce(oid, size, anyCopy, by);
      } catch (e) {
        if (tries === 2 || !(e instanceof SheepdogError && e.result === Res.NO_OBJ) || this.bestCopy(oid) === undefined) throw e;
      }
    }
  }

  private async readCopyOnce(oid: bigint, size: number, anyCopy: boolean, by: FoundBy): Promise<{ data: Buffer; version: number; stale: boolean }> {
    const which = this.bestCopy(oid);
    if (which === 'live' || (which === 'stale' && !anyCopy && this.fileVersion(this.p(oid)) !== undefined)) {
      return this.fds.use(oid, async (fd, e) => {
        // a write raises the version before its bytes land: read the version first
        const v = versionIO!.getVersion(fd);
        const data = Buffer.alloc(size);
        for (let tries = 0; ; tries++) {
          const gen = e.gen ?? 0;
          const got = await preadFull(fd, data, 0, size, 0);
          if (got < size) throw this.damaged(oid, `the file ends at ${got}, before the object's ${size} bytes`, by);
          const bad = await this.verify(e, fd, data, 0, size);
          if (!bad) break;
          if (tries === 3 || (e.gen ?? 0) === gen) throw this.damaged(oid, bad, by);
        }
        return { data, version: v > 0 ? v : 0, stale: false };
      }).catch((err) => { throw this.mapErr(err); });
    }
    if (which !== 'stale' || !anyCopy) throw new SheepdogError(Res.NO_OBJ);
    const version = this.fileVersion(this.sp(oid)) ?? 0;
    return { data: await this.staleRead(oid, 0, size), version, stale: true };
  }

  /** Remove the object: its live copy and any copy set aside (a recovery would bring that one back). */
  async remove(oid: bigint): Promise<boolean> {
    this.fds.invalidate(oid);
    const aside = await this.moves.move(() => fsp.unlink(this.sp(oid)).then(() => true, () => false));
    try {
      await fsp.unlink(this.p(oid));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return aside;
      throw this.mapErr(e);
    }
  }

  async exists(oid: bigint): Promise<boolean> {
    try {
      await fsp.access(this.p(oid));
      return true;
    } catch {
      return false;
    }
  }

  /** How many live objects there are (a directory listing, no stat). */
  async count(): Promise<number> {
    return (await this.list()).length + (await this.staleList()).length;
  }

  async list(): Promise<bigint[]> {
    return (await this.liveFiles()).map(({ f }) => BigInt('0x' + f));
  }

  /** Live strip files of erasure-coded objects (which list(), copies() and the replicated recovery never see). */
  private async stripFiles(): Promise<{ dir: string; f: string }[]> {
    const out: { dir: string; f: string }[] = [];
    for (const dir of this.liveDirs()) {
      for (const f of await fsp.readdir(dir).catch(() => [] as string[])) if (parseStripFileName(f)) out.push({ dir, f });
    }
    return out;
  }

  /** The live strips held here, with their versions (EC recovery's listing). */
  async strips(): Promise<{ oid: bigint; idx: number; version: number }[]> {
    const out: { oid: bigint; idx: number; version: number }[] = [];
    const files = await this.stripFiles();
    for (let i = 0; i < files.length; i++) {
      const s = parseStripFileName(files[i].f)!;
      const version = this.fileVersion(path.join(files[i].dir, files[i].f));
      if (version !== undefined) out.push({ ...s, version });
      // a syscall per file: let requests in between
      if (i % 256 === 255) await new Promise((r) => setImmediate(r));
    }
    return out;
  }

  private usageScan?: Promise<{ used: bigint; size: bigint; free: bigint }>;

  /**
   * Callers that arrive while a scan is running share it (it stats every
   * object file), so node statistics polled by many clients cost one scan.
   */
  usage(): Promise<{ used: bigint; size: bigint; free: bigint }> {
    this.usageScan ??= this.scanUsage().finally(() => { this.usageScan = undefined; });
    return this.usageScan;
  }

  private async scanUsage(): Promise<{ used: bigint; size: bigint; free: bigint }> {
    let used = 0n;
    for (const { dir, f } of [...await this.liveFiles(), ...await this.stripFiles()]) {
      try {
        const st = await fsp.stat(path.join(dir, f));
        used += BigInt(st.blocks) * 512n;
      } catch { /* removed meanwhile */ }
    }
    return { used, ...(await this.capacity()) };
  }

  async capacity(): Promise<{ size: bigint; free: bigint }> {
    if (this.md) {
      // the disks' sizes as measured when each was first used (upstream's md size); free space as it is now
      let free = 0n;
      for (const root of this.md.disks.map((d) => d.path)) {
        const sf = await fsp.statfs(root).catch(() => undefined);
        if (sf) free += BigInt(sf.bavail) * BigInt(sf.bsize);
      }
      return { size: this.md.space, free };
    }
    const sf = await fsp.statfs(this.baseDir);
    return { size: BigInt(sf.blocks) * BigInt(sf.bsize), free: BigInt(sf.bavail) * BigInt(sf.bsize) };
  }

  /** SHA-1 of the live copy's bytes, which must pass their checksums (a damaged copy has no hash to compare). */
  async sha1(oid: bigint, by: FoundBy = 'read'): Promise<Buffer> {
    const size = versionIO!.getObjectSize(this.p(oid));
    if (size <= 0) return this.hashFile(this.p(oid));
    const { data } = await this.readCopy(oid, size, false, by);
    return createHash('sha1').update(data).digest();
  }

  /** SHA-1 of a copy's bytes (not of the checksums after them). */
  private async hashFile(file: string): Promise<Buffer> {
    const h = createHash('sha1');
    try {
      const fh = await fsp.open(file, 'r');
      try {
        const buf = Buffer.allocUnsafe(1 << 20);
        const size = versionIO!.getObjectSize(fh.fd);
        const end = size > 0 ? size : Infinity;
        let pos = 0;
        for (;;) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
          if (!bytesRead) break;
          h.update(buf.subarray(0, bytesRead));
          pos += bytesRead;
        }
      } finally {
        await fh.close();
      }
    } catch (e) {
      throw this.mapErr(e);
    }
    return h.digest();
  }

  async wipe(): Promise<void> {
    await this.fds.closeAll();
    for (const root of this.roots()) {
      for (const f of await fsp.readdir(root)) {
        if (f === '.tmp' || f === '.stale') continue;
        // an md disk is the administrator's directory: only what the store made goes
        if (this.md && !/^[0-9a-f]{16}$/.test(f) && !TREE_DIRS.includes(f)) continue;
        await fsp.rm(path.join(root, f), { force: true, recursive: true });
      }
    }
    await this.purgeStale();
    // the tree's directories were removed with their objects
    this.layout = 'flat';
    this.name = 'plain';
  }

  private sp(oid: bigint, root = this.rootOf(oid)): string {
    return path.join(root, '.stale', keyFileName(oid));
  }

  /** A file's version: undefined when there is no such file. */
  private fileVersion(file: string): number | undefined {
    const v = versionIO!.getVersion(file);
    if (v === -2) return undefined;
    return v > 0 ? v : 0;
  }

  // One live and one set-aside copy of an object can exist side by side (a
  // copy set aside, then a newer one fetched); whatever moves between them,
  // the newer of the two is what stays.
  setAside(oid: bigint): Promise<void> {
    return this.moves.move(() => this.moveAside(oid));
  }

  private async moveAside(oid: bigint): Promise<void> {
    this.fds.invalidate(oid);
    const live = this.fileVersion(this.p(oid));
    if (live === undefined) return;
    const stale = this.fileVersion(this.sp(oid));
    try {
      if (stale !== undefined && stale > live) await fsp.unlink(this.p(oid));
      else await fsp.rename(this.p(oid), this.sp(oid));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw this.mapErr(e);
    }
  }

  async staleList(): Promise<bigint[]> {
    const out: bigint[] = [];
    for (const dir of this.staleDirs()) for (const f of await fsp.readdir(dir)) if (/^[0-9a-f]{16}$/.test(f)) out.push(BigInt('0x' + f));
    return out;
  }

  async staleRead(oid: bigint, off: number, len: number): Promise<Buffer> {
    const buf = Buffer.alloc(len);
    let fh;
    try {
      fh = await fsp.open(this.sp(oid), 'r');
      let got = 0;
      while (got < len) {
        const { bytesRead } = await fh.read(buf, got, len - got, off + got);
        if (!bytesRead) break;
        got += bytesRead;
      }
    } catch (e) {
      throw this.mapErr(e);
    } finally {
      await fh?.close();
    }
    return buf;
  }

  staleSha1(oid: bigint): Promise<Buffer> {
    return this.hashFile(this.sp(oid));
  }

  restoreStale(oid: bigint): Promise<boolean> {
    return this.moves.move(() => this.moveBack(oid));
  }

  private async moveBack(oid: bigint): Promise<boolean> {
    const stale = this.fileVersion(this.sp(oid));
    if (stale === undefined) return false;
    const live = this.fileVersion(this.p(oid));
    try {
      if (live !== undefined && live >= stale) {
        await fsp.unlink(this.sp(oid));
      } else {
        await fsp.rename(this.sp(oid), this.p(oid));
        this.fds.invalidate(oid);
      }
      return true;
    } catch {
      return false;
    }
  }

  async purgeStale(): Promise<void> {
    for (const dir of this.staleDirs()) {
      for (const f of await fsp.readdir(dir).catch(() => [] as string[])) await fsp.rm(path.join(dir, f), { force: true });
    }
  }

  async close(): Promise<void> {
    const j = this.journal;
    this.journal = undefined;
    await j?.close();
    await this.fds.closeAll();
  }

  /**
   * Open the journal (sync mode, when the node has one): replay what a
   * crash left in it into the object files, then journal every write.
   * Returns what the replay did, for the log.
   */
  async startJournal(onError: (msg: string) => void): Promise<string | undefined> {
    if (this.nosync || !this.journalPlace || this.journal) return undefined;
    await fsp.mkdir(path.dirname(this.journalPlace.file), { recursive: true });
    const j = await Journal.open(this.journalPlace.file, this.journalPlace.sizeBytes);
    j.onError = onError;
    const r = await replayInto(j, {
      candidates: (oid) => [...new Set(this.roots().flatMap((root) => [path.join(root, keyFileName(oid)), path.join(root, treeDirOf(oid), keyFileName(oid)), this.sp(oid, root)]))],
      rebuildSums: (fd) => this.rebuildFileSums(fd),
      sync: (fd) => syncPool.fsync(fd),
    }, onError);
    await j.start();
    j.syncer = (oids) => this.syncObjects(oids);
    this.fds.identify = true;
    this.journal = j;
    return `journal ${this.journalPlace.file} (${Math.round(j.sizeBytes / 1048576)} MiB): ${r}`;
  }

  /** fdatasync the files of these objects, live and set aside (a journal checkpoint). */
  private async syncObjects(oids: bigint[]): Promise<void> {
    let next = 0;
    const syncFile = (file: string) => new Promise<void>((resolve, reject) => {
      fs.open(file, 'r', (err, fd) => {
        if (err) return err.code === 'ENOENT' ? resolve() : reject(err);
        syncPool.fdatasync(fd).then(() => fs.close(fd, () => resolve()), (e: Error) => fs.close(fd, () => reject(e)));
      });
    });
    const worker = async () => {
      while (next < oids.length) {
        const oid = oids[next++];
        const e = this.fds.acquireOpen(oid);
        if (e) {
          try {
            await this.fds.sync(e);
          } finally {
            this.fds.release(e);
          }
        } else {
          await syncFile(this.p(oid));
        }
        // moved aside since it was written
        await syncFile(this.sp(oid));
      }
    };
    await Promise.all(Array.from({ length: Math.min(16, oids.length) }, worker));
  }

  /** Recompute the checksums of an object file from its bytes (true: they were off). */
  private async rebuildFileSums(fd: number): Promise<boolean> {
    const size = versionIO!.getObjectSize(fd);
    if (size <= 0) return false;
    const data = Buffer.alloc(size);
    const got = await preadFull(fd, data, 0, size, 0);
    if (got < size) return false; // cut short: damaged, not torn; reads will say so
    const want = await sumsOfLater(data, 0, size);
    const have = Buffer.alloc(want.length);
    await preadFull(fd, have, 0, have.length, size);
    if (have.equals(want)) return false;
    await pwriteFull(fd, want, size);
    return true;
  }

  private mapErr(e: unknown): Error {
    if (e instanceof SheepdogError) return e;
    const code = (e as NodeJS.ErrnoException).code;
    const md = this.md && code ? this.md.classify(e as NodeJS.ErrnoException) : undefined;
    if (md) return md;
    if (code === 'ENOENT') return new SheepdogError(Res.NO_OBJ);
    if (code === 'ENOSPC' || code === 'EDQUOT') return new SheepdogError(Res.NO_SPACE, `no space: ${(e as Error).message}`);
    return new SheepdogError(Res.EIO, `I/O error: ${(e as Error).message}`);
  }
}
