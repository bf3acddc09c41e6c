// An LRU of open object files. Handles are reference counted so that
// eviction never closes a descriptor that a read or write is still using.
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

interface Entry {
  fh: FileHandle;
  refs: number;
  dead: boolean;
  syncing?: Promise<void>;
  syncQueued?: Promise<void>;
}

export class FdCache {
  private map = new Map<string, Entry>();
  private opening = new Map<string, Promise<Entry>>();
  constructor(private readonly max = 256) {}

  async use<T>(path: string, fn: (fh: FileHandle, e: Entry) => Promise<T>): Promise<T> {
    const e = await this.acquire(path);
    try {
      return await fn(e.fh, e);
    } finally {
      this.release(e);
    }
  }

  private async acquire(path: string): Promise<Entry> {
    const hit = this.map.get(path);
    if (hit && !hit.dead) {
      this.map.delete(path);
      this.map.set(path, hit);
      hit.refs++;
      return hit;
    }
    let p = this.opening.get(path);
    if (!p) {
      p = fsp.open(path, 'r+').then((fh) => {
        const e: Entry = { fh, refs: 0, dead: false };
        this.map.set(path, e);
        this.evict();
        return e;
      });
      this.opening.set(path, p);
      p.finally(() => this.opening.delete(path)).catch(() => undefined);
    }
    const e = await p;
    e.refs++;
    return e;
  }

  private release(e: Entry): void {
    e.refs--;
    if (e.dead && e.refs === 0) e.fh.close().catch(() => undefined);
  }

  private evict(): void {
    while (this.map.size > this.max) {
      const [k, e] = this.map.entries().next().value as [string, Entry];
      this.map.delete(k);
      e.dead = true;
      if (e.refs === 0) e.fh.close().catch(() => undefined);
    }
  }

  /** Forget a path (after rename-over or unlink); open users keep their handle. */
  invalidate(path: string): void {
    const e = this.map.get(path);
    if (!e) return;
    this.map.delete(path);
    e.dead = true;
    if (e.refs === 0) e.fh.close().catch(() => undefined);
  }

  /**
   * Group commit: one fdatasync covers every write finished before it
   * started, so concurrent writers share syncs instead of queueing them.
   */
  sync(e: Entry): Promise<void> {
    if (!e.syncing) {
      e.syncing = e.fh.datasync().finally(() => { e.syncing = undefined; });
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
    await Promise.all(all.map((e) => { e.dead = true; return e.refs === 0 ? e.fh.close().catch(() => undefined) : undefined; }));
  }
}
