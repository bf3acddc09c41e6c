// fdatasync on dedicated worker threads. A sync can hold a thread for
// milliseconds; doing it in libuv's pool would stall the cached reads and
// writes queued behind it, and that pool works best small (about one thread
// per core: more threads mostly add contention on small requests).
import { Worker } from 'node:worker_threads';

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
parentPort.on('message', ({ id, fd, full }) => {
  try { if (full) fs.fsyncSync(fd); else fs.fdatasyncSync(fd); parentPort.postMessage({ id }); }
  catch (e) { parentPort.postMessage({ id, code: e.code, message: e.message }); }
});
`;

interface Waiter { resolve: () => void; reject: (e: Error) => void }

export class SyncPool {
  private workers: Worker[] = [];
  private waiters = new Map<number, Waiter>();
  private nextId = 1;
  private rr = 0;

  constructor(private readonly size = 4) {}

  private start(): void {
    for (let i = 0; i < this.size; i++) {
      const w = new Worker(WORKER_SOURCE, { eval: true });
      w.unref();
      w.on('message', (m: { id: number; code?: string; message?: string }) => {
        const wt = this.waiters.get(m.id);
        if (!wt) return;
        this.waiters.delete(m.id);
        if (m.code || m.message) wt.reject(Object.assign(new Error(m.message), { code: m.code }));
        else wt.resolve();
      });
      w.on('error', () => undefined);
      this.workers.push(w);
    }
  }

  fdatasync(fd: number): Promise<void> {
    return this.post(fd, false);
  }

  /** fsync: also the file's metadata, where an object's version lives. */
  fsync(fd: number): Promise<void> {
    return this.post(fd, true);
  }

  private post(fd: number, full: boolean): Promise<void> {
    if (!this.workers.length) this.start();
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.waiters.set(id, { resolve, reject });
      this.workers[this.rr++ % this.workers.length].postMessage({ id, fd, full });
    });
  }

  async close(): Promise<void> {
    const ws = this.workers;
    this.workers = [];
    await Promise.all(ws.map((w) => w.terminate()));
  }
}

export const syncPool = new SyncPool(4);
