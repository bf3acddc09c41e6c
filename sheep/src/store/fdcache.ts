// An LRU of open object files. Entries are reference counted so that
// eviction never closes a descriptor that a read or write is still using.
// Raw descriptors with callback fs calls: the hot path allocates no
// FileHandle promises.
import * as fs from 'node:fs';
import { syncPool } from './syncpool.js';
import { tryReadNow } from './fileio.js';
import type { WriteQueue } from './writequeue.js';

export interface FdEntry {
  fd: number;
  /** Writes waiting for or with the thread pool (writequeue.ts). */
  writes?: WriteQueue;
  refs: number;
  dead: boolean;
  syncing?: Promise<void>;
  syncQueued?: Promise<void>;
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
      fs.write(fd, buf, done, buf.length - done, pos + done, (err, n) => {
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
  constructor(private readonly pathOf: (oid: bigint) => string, private readonly max = 256) {}

  use<T>(oid: bigint, fn: (fd: number, e: FdEntry) => Promise<T>): Promise<T> {
    const hit = this.map.get(oid);
    if (hit && !hit.dead) {
      this.map.delete(oid);
      this.map.set(oid, hit);
      hit.refs++;
      return this.run(hit, fn);
    }
    return this.open(oid).then((e) => {
      e.refs++;
      return this.run(e, fn);
    });
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
          this.opening.delete(oid);
          if (err) return reject(err);
          const e: FdEntry = { fd, refs: 0, dead: false };
          this.map.set(oid, e);
          this.evict();
          resolve(e);
        });
      });
      this.opening.set(oid, p);
    }
    return p;
  }

  private release(e: FdEntry): void {
    e.refs--;
    if (e.dead && e.refs === 0) closeQuietly(e.fd);
  }

  private evict(): void {
    while (this.map.size > this.max) {
      const [k, e] = this.map.entries().next().value as [bigint, FdEntry];
      this.map.delete(k);
      e.dead = true;
      if (e.refs === 0) closeQuietly(e.fd);
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
