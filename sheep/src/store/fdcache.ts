// A cache of open object files (CLOCK-evicted). Entries are reference counted so that
// eviction never closes a descriptor that a read or write is still using.
// Raw descriptors with callback fs calls: the hot path allocates no
// FileHandle promises.
import * as fs from 'node:fs';
import { syncPool } from './syncpool.js';
import { tryReadNow, chunkRoom } from './fileio.js';

export interface FdEntry {
  fd: number;
  /** Used since the eviction sweep last passed it (CLOCK: a second chance). */
  used: boolean;
  refs: number;
  dead: boolean;
  syncing?: Promise<void>;
  syncQueued?: Promise<void>;
  /** The object's version as last read or set (undefined: not read yet). */
  ver?: number;
  /** A version change on its way to the disk: writes wait for it. */
  stamping?: Promise<void>;
  /** The object's size as its checksums know it (0: a file without checksums; undefined: not read yet). */
  size?: number;
  /** Its block checksums (see checksums.ts), once read. */
  sums?: Buffer;
  sumsLoading?: Promise<void>;
  /** Sums writes in flight may leave in a block (what each replaces and what it writes): reads accept them. */
  inflight?: Map<number, number[]>;
  /** Writes in flight, and who waits for none to be. */
  writing?: number;
  drained?: (() => void)[];
  /** Writes that need a block's other bytes go one at a time, after the writes before them. */
  partial?: Promise<void>;
  /** Counts writes starting and ending (a read that saw it move reads again). */
  gen?: number;
  /** The file's inode number and birth time (ns), when the cache identifies files (the journal's records name them). */
  ino?: bigint;
  btime?: bigint;
}

const closeQuietly = (fd: number) => fs.close(fd, () => undefined);

export function preadFull(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  const now = tryReadNow(fd, buf, off, len, pos);
  if (now === len) return Promise.resolve(len);
  return new Promise((resolve, reject) => {
    let got = now > 0 ? now : 0;
    const step = () => {
      fs.read(fd, buf, off + got, len - got, pos + got, (err, n) => {
        if (err) return reject(err);
        got += n;
        if (n === 0 || got >= len) return resolve(got);
        step();
      });
    };
    step();
  });
}

export function pwriteFull(fd: number, buf: Buffer, pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = () => {
      fs.write(fd, buf, done, chunkRoom(pos + done, buf.length - done), pos + done, (err, n) => {
        if (err) return reject(err);
        done += n;
        if (done >= buf.length) return resolve();
        step();
      });
    };
    step();
  });
}

/** Open descriptors by object id; the path is built only to open one. */
export class FdCache {
  private map = new Map<bigint, FdEntry>();
  private opening = new Map<bigint, Promise<FdEntry>>();
  /** Also read each file's identity (inode, birth time) when it is opened. */
  identify = false;
  constructor(private readonly pathOf: (oid: bigint) => string, private readonly max = 256) {}

  use<T>(oid: bigint, fn: (fd: number, e: FdEntry) => Promise<T>): Promise<T> {
    const hit = this.map.get(oid);
    if (hit) {
      hit.used = true;
      hit.refs++;
      return this.run(hit, fn);
    }
    return this.open(oid).then((e) => {
      e.refs++;
      return this.run(e, fn);
    });
  }

  /**
   * The entry of oid with a reference taken, to be given back with
   * release(): at once when the file is open, else once it is.
   */
  acquire(oid: bigint, cb: (err: NodeJS.ErrnoException | null, e?: FdEntry) => void): void {
    const hit = this.acquireOpen(oid);
    if (hit) {
      cb(null, hit);
      return;
    }
    this.open(oid).then((e) => {
      e.refs++;
      cb(null, e);
    }, (err: NodeJS.ErrnoException) => cb(err));
  }

  /** acquire(), if the file is open now; else undefined. */
  acquireOpen(oid: bigint): FdEntry | undefined {
    const hit = this.map.get(oid);
    if (!hit) return undefined;
    hit.used = true;
    hit.refs++;
    return hit;
  }

  /** The open entry of oid, if any, for synchronous use only (no reference taken). */
  peekEntry(oid: bigint): FdEntry | undefined {
    const e = this.map.get(oid);
    if (e) e.used = true;
    return e;
  }

  /**
   * The open descriptor of oid, if there is one, for synchronous use only: no
   * reference is taken, so nothing may wait between this call and the I/O.
   */
  peek(oid: bigint): number | undefined {
    const e = this.map.get(oid);
    if (!e) return undefined;
    e.used = true;
    return e.fd;
  }

  private async run<T>(e: FdEntry, fn: (fd: number, e: FdEntry) => Promise<T>): Promise<T> {
    try {
      return await fn(e.fd, e);
    } finally {
      this.release(e);
    }
  }

  private open(oid: bigint): Promise<FdEntry> {
    let p = this.opening.get(oid);
    if (!p) {
      p = new Promise<FdEntry>((resolve, reject) => {
        fs.open(this.pathOf(oid), 'r+', (err, fd) => {
          if (err) {
            this.opening.delete(oid);
            return reject(err);
          }
          const e: FdEntry = { fd, used: false, refs: 0, dead: false };
          const add = () => {
            this.opening.delete(oid);
            this.map.set(oid, e);
            this.evict();
            resolve(e);
          };
          if (!this.identify) return add();
          fs.fstat(fd, { bigint: true }, (serr, st) => {
            if (serr) {
              this.opening.delete(oid);
              closeQuietly(fd);
              return reject(serr);
            }
            e.ino = st.ino;
            e.btime = st.birthtimeNs;
            add();
          });
        });
      });
      this.opening.set(oid, p);
    }
    return p;
  }

  release(e: FdEntry): void {
    e.refs--;
    if (e.dead && e.refs === 0) closeQuietly(e.fd);
  }

  /**
   * CLOCK eviction over the map's insertion order: a used entry goes to the
   * back with its mark cleared, the first unused one is closed. (Moving every
   * hit to the back, as a strict LRU does, costs a map delete and insert per
   * request.)
   */
  private evict(): void {
    // An entry in use stays: a second entry for the same file would keep
    // its own checksums and miss the first one's writes in flight.
    for (let turns = 2 * this.map.size; this.map.size > this.max && turns > 0; turns--) {
      const [k, e] = this.map.entries().next().value as [bigint, FdEntry];
      this.map.delete(k);
      if (e.used || e.refs > 0) {
        e.used = false;
        this.map.set(k, e);
        continue;
      }
      e.dead = true;
      closeQuietly(e.fd);
    }
  }

  /** Forget an object's descriptor (after rename-over or unlink); open users keep theirs. */
  invalidate(oid: bigint): void {
    const e = this.map.get(oid);
    if (!e) return;
    this.map.delete(oid);
    e.dead = true;
    if (e.refs === 0) closeQuietly(e.fd);
  }

  /**
   * Group commit: one fdatasync covers every write finished before it
   * started, so concurrent writers share syncs instead of queueing them.
   */
  sync(e: FdEntry): Promise<void> {
    if (!e.syncing) {
      e.syncing = syncPool.fdatasync(e.fd).finally(() => { e.syncing = undefined; });
      return e.syncing;
    }
    if (!e.syncQueued) {
      e.syncQueued = e.syncing.catch(() => undefined).then(() => {
        e.syncQueued = undefined;
        return this.sync(e);
      });
    }
    return e.syncQueued;
  }

  async closeAll(): Promise<void> {
    const all = [...this.map.values()];
    this.map.clear();
    for (const e of all) {
      e.dead = true;
      if (e.refs === 0) closeQuietly(e.fd);
    }
  }
}
