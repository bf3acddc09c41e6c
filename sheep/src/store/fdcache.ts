// An LRU of open object files. Entries are reference counted so that
// eviction never closes a descriptor that a read or write is still using.
// Raw descriptors with callback fs calls: the hot path allocates no
// FileHandle promises.
import * as fs from 'node:fs';
import { syncPool } from './syncpool.js';
import { tryReadNow } from './fileio.js';

export interface FdEntry {
  fd: number;
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

export class FdCache {
  private map = new Map<string, FdEntry>();
  private opening = new Map<string, Promise<FdEntry>>();
  constructor(private readonly max = 256) {}

  async use<T>(path: string, fn: (fd: number, e: FdEntry) => Promise<T>): Promise<T> {
    const e = await this.acquire(path);
    try {
      return await fn(e.fd, e);
    } finally {
      this.release(e);
    }
  }

  private acquire(path: string): Promise<FdEntry> | FdEntry {
    const hit = this.map.get(path);
    if (hit && !hit.dead) {
      this.map.delete(path);
      this.map.set(path, hit);
      hit.refs++;
      return hit;
    }
    let p = this.opening.get(path);
    if (!p) {
      p = new Promise<FdEntry>((resolve, reject) => {
        fs.open(path, 'r+', (err, fd) => {
          this.opening.delete(path);
          if (err) return reject(err);
          const e: FdEntry = { fd, refs: 0, dead: false };
          this.map.set(path, e);
          this.evict();
          resolve(e);
        });
      });
      this.opening.set(path, p);
    }
    return p.then((e) => {
      e.refs++;
      return e;
    });
  }

  private release(e: FdEntry): void {
    e.refs--;
    if (e.dead && e.refs === 0) closeQuietly(e.fd);
  }

  private evict(): void {
    while (this.map.size > this.max) {
      const [k, e] = this.map.entries().next().value as [string, FdEntry];
      this.map.delete(k);
      e.dead = true;
      if (e.refs === 0) closeQuietly(e.fd);
    }
  }

  /** Forget a path (after rename-over or unlink); open users keep their descriptor. */
  invalidate(path: string): void {
    const e = this.map.get(path);
    if (!e) return;
    this.map.delete(path);
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
