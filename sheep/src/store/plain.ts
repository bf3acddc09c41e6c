// "plain" store: one file per object under DIR/obj, named by 16 hex digits.
// Creates are atomic (write a temp file, fsync, rename); unless nosync,
// every write is on disk before it is acknowledged.
import { promises as fsp, constants as FS } from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { oidToHex, SheepdogError, Res, SpliceTarget } from '@sheepdog/common';
import type { ObjectStore } from './store.js';
import { FdCache, FdEntry, preadFull } from './fdcache.js';
import { takePipe, givePipe, readPipeNow } from './pipes.js';
import { WriteQueue } from './writequeue.js';
import { syncPool } from './syncpool.js';
import { tryReadNow, PipeSource, chunkRoom } from './fileio.js';

export class PlainStore implements ObjectStore {
  readonly name: string = 'plain';
  readonly objDir: string;
  readonly tmpDir: string;
  readonly staleDir: string;
  private fds = new FdCache((oid) => this.p(oid), 512);
  private writes = new WriteQueue();

  constructor(readonly baseDir: string, readonly nosync: boolean) {
    this.objDir = path.join(baseDir, 'obj');
    this.tmpDir = path.join(baseDir, 'obj', '.tmp');
    this.staleDir = path.join(baseDir, 'obj', '.stale');
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.tmpDir, { recursive: true });
    await fsp.mkdir(this.staleDir, { recursive: true });
    // leftovers of creates interrupted by a crash were never acknowledged
    for (const f of await fsp.readdir(this.tmpDir)) await fsp.rm(path.join(this.tmpDir, f), { force: true });
  }

  private p(oid: bigint): string {
    return path.join(this.objDir, oidToHex(oid));
  }

  async read(oid: bigint, off: number, len: number, into?: Buffer): Promise<Buffer> {
    const buf = into ?? Buffer.allocUnsafe(len);
    try {
      const got = await this.fds.use(oid, (fd) => preadFull(fd, buf, 0, len, off));
      if (got < len) buf.fill(0, got); // past the end of a short file reads as zeros
    } catch (e) {
      throw this.mapErr(e);
    }
    return buf;
  }

  readCached(oid: bigint, off: number, len: number, into: Buffer, at: number): boolean {
    const fd = this.fds.peek(oid);
    // a short read may be a page not cached or the end of the file: read() tells them apart
    return fd !== undefined && tryReadNow(fd, into, at, len, off) === len;
  }

  // Callbacks rather than async steps: this is every write's path, and each
  // await would cost a promise and a microtask turn.
  write(oid: bigint, off: number, data: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.fds.acquire(oid, (err, e) => {
        if (err) reject(this.mapErr(err));
        else this.queueWrite(e!, data, off, resolve, reject);
      });
    });
  }

  /** Write data at off through e (whose reference this gives back), synced unless nosync. */
  private queueWrite(e: FdEntry, data: Buffer | PipeSource, off: number, resolve: () => void, reject: (e: Error) => void, written?: (ok: boolean) => void): void {
    this.writes.write(e.fd, data, off, (werr) => {
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

  /** The object's file must be open already: a target is offered only when nothing need wait. */
  spliceTarget(oid: bigint, off: number, len: number): SpliceTarget | undefined {
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
          this.queueWrite(e, { pipe: p.r, length: len }, off, resolve, reject, (ok) => givePipe(p, ok));
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
    const tmp = path.join(this.tmpDir, `${oidToHex(oid)}.${randomBytes(4).toString('hex')}`);
    let fh;
    try {
      fh = await fsp.open(tmp, FS.O_CREAT | FS.O_EXCL | FS.O_RDWR, 0o644);
      await fh.truncate(size);
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await fh.write(data, done, chunkRoom(off + done, data.length - done), off + done);
        done += bytesWritten;
      }
      if (!this.nosync) await syncPool.fdatasync(fh.fd);
      await fh.close();
      fh = undefined;
      await fsp.rename(tmp, this.p(oid));
      this.fds.invalidate(oid);
    } catch (e) {
      if (fh) await fh.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw this.mapErr(e);
    }
  }

  createFull(oid: bigint, size: number, data: Buffer): Promise<void> {
    return this.create(oid, size, 0, data.length > size ? data.subarray(0, size) : data);
  }

  async remove(oid: bigint): Promise<boolean> {
    this.fds.invalidate(oid);
    try {
      await fsp.unlink(this.p(oid));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
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

  async list(): Promise<bigint[]> {
    const out: bigint[] = [];
    for (const f of await fsp.readdir(this.objDir)) if (/^[0-9a-f]{16}$/.test(f)) out.push(BigInt('0x' + f));
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
    for (const f of await fsp.readdir(this.objDir)) {
      if (!/^[0-9a-f]{16}$/.test(f)) continue;
      try {
        const st = await fsp.stat(path.join(this.objDir, f));
        used += BigInt(st.blocks) * 512n;
      } catch { /* removed meanwhile */ }
    }
    return { used, ...(await this.capacity()) };
  }

  async capacity(): Promise<{ size: bigint; free: bigint }> {
    const sf = await fsp.statfs(this.baseDir);
    return { size: BigInt(sf.blocks) * BigInt(sf.bsize), free: BigInt(sf.bavail) * BigInt(sf.bsize) };
  }

  sha1(oid: bigint): Promise<Buffer> {
    return this.hashFile(this.p(oid));
  }

  private async hashFile(file: string): Promise<Buffer> {
    const h = createHash('sha1');
    try {
      const fh = await fsp.open(file, 'r');
      try {
        const buf = Buffer.allocUnsafe(1 << 20);
        let pos = 0;
        for (;;) {
          const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
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
    for (const f of await fsp.readdir(this.objDir)) {
      if (f === '.tmp' || f === '.stale') continue;
      await fsp.rm(path.join(this.objDir, f), { force: true, recursive: true });
    }
    await this.purgeStale();
  }

  private sp(oid: bigint): string {
    return path.join(this.staleDir, oidToHex(oid));
  }

  async setAside(oid: bigint): Promise<void> {
    this.fds.invalidate(oid);
    try {
      await fsp.rename(this.p(oid), this.sp(oid));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw this.mapErr(e);
    }
  }

  async staleList(): Promise<bigint[]> {
    const out: bigint[] = [];
    for (const f of await fsp.readdir(this.staleDir)) if (/^[0-9a-f]{16}$/.test(f)) out.push(BigInt('0x' + f));
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

  async restoreStale(oid: bigint): Promise<boolean> {
    try {
      await fsp.rename(this.sp(oid), this.p(oid));
      this.fds.invalidate(oid);
      return true;
    } catch {
      return false;
    }
  }

  async purgeStale(): Promise<void> {
    for (const f of await fsp.readdir(this.staleDir).catch(() => [] as string[])) {
      await fsp.rm(path.join(this.staleDir, f), { force: true });
    }
  }

  close(): Promise<void> {
    return this.fds.closeAll();
  }

  private mapErr(e: unknown): Error {
    if (e instanceof SheepdogError) return e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return new SheepdogError(Res.NO_OBJ);
    if (code === 'ENOSPC' || code === 'EDQUOT') return new SheepdogError(Res.NO_SPACE);
    return new SheepdogError(Res.EIO, `I/O error: ${(e as Error).message}`);
  }
}
