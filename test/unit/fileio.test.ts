// The store's native file I/O (sheep/native/fileio) on real files: inline
// page-cache reads, batched writes with per-write results, and the write
// queue that feeds batches one per file at a time.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { openSync, closeSync, writeFileSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { dir as tmpDir, DirectoryResult } from 'tmp-promise';
import { fileio, tryReadNow } from '../../sheep/src/store/fileio.js';
import { queuedWrite } from '../../sheep/src/store/writequeue.js';

const EBADF = 9;

describe('native file I/O', () => {
  let d: DirectoryResult;
  beforeAll(async () => { d = await tmpDir({ unsafeCleanup: true }); });
  afterAll(async () => { await d.cleanup(); });

  it('is built (npm run build builds it; CI would otherwise test only the fallback)', () => {
    expect(fileio).toBeDefined();
  });

  it('reads cached data inline and reports errors as -errno', () => {
    const f = path.join(d.path, 'r');
    const data = randomBytes(64 * 1024);
    writeFileSync(f, data);
    const fd = openSync(f, 'r');
    try {
      const b = Buffer.alloc(5000);
      expect(fileio!.readNow(fd, b, 100, 4000, 1234)).toBe(4000);
      expect(b.subarray(100, 4100).equals(data.subarray(1234, 5234))).toBe(true);
      expect(tryReadNow(fd, b, 0, 5000, 62_000)).toBe(64 * 1024 - 62_000); // short at the end of the file
      expect(() => fileio!.readNow(fd, b, 4000, 2000, 0)).toThrow(RangeError);
    } finally {
      closeSync(fd);
    }
    expect(fileio!.readNow(fd, Buffer.alloc(10), 0, 10, 0)).toBe(-EBADF);
  });

  it('writes a batch of adjacent, scattered and overlapping pieces with a result for each', async () => {
    const f = path.join(d.path, 'w');
    writeFileSync(f, Buffer.alloc(1 << 20));
    const want = Buffer.alloc(1 << 20);
    const pieces: [number, Buffer][] = [
      [0, randomBytes(4096)], [4096, randomBytes(4096)], [8192, randomBytes(100)], // one run
      [500_000, randomBytes(70_000)],
      [900_000, randomBytes(10)], [900_005, randomBytes(10)], // overlapping: the later one wins
    ];
    for (const [pos, b] of pieces) b.copy(want, pos);
    const fd = openSync(f, 'r+');
    const status = new Int32Array(pieces.length).fill(1);
    await new Promise<void>((r) => fileio!.writeBatch(fd, pieces.map((p) => p[1]), Float64Array.from(pieces.map((p) => p[0])), status, r));
    closeSync(fd);
    expect([...status]).toEqual(pieces.map(() => 0));
    expect(readFileSync(f).equals(want)).toBe(true);

    const ro = openSync(f, 'r');
    const st = new Int32Array(2);
    await new Promise<void>((r) => fileio!.writeBatch(ro, [Buffer.alloc(4), Buffer.alloc(4)], Float64Array.from([0, 100]), st, r));
    closeSync(ro);
    expect([...st]).toEqual([-EBADF, -EBADF]);
    expect(() => fileio!.writeBatch(ro, [], new Float64Array(0), new Int32Array(0), () => undefined)).toThrow(TypeError);
    expect(() => fileio!.writeBatch(ro, [Buffer.alloc(1)], new Float64Array(1), new Int32Array(0), () => undefined)).toThrow(TypeError);
  });

  it('queues writes per file: all land, each settles, errors reach their writers', async () => {
    const f = path.join(d.path, 'q');
    writeFileSync(f, Buffer.alloc(4 << 20));
    const want = Buffer.alloc(4 << 20);
    const fd = openSync(f, 'r+');
    const file = { fd };
    // 2000 writes of 1-12 KiB at random 512-byte offsets of 4 MiB: many overlap, with
    // different starts, in one batch and across the two batches the pool may hold
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 2000; i++) {
      const len = 1024 * (1 + Math.floor(Math.random() * 12));
      const pos = 512 * Math.floor(Math.random() * ((4 << 20) - len) / 512);
      const b = randomBytes(len);
      b.copy(want, pos);
      writes.push(queuedWrite(file, b, pos)); // issued in order: the later write to a place wins
      if (i % 97 === 0) await new Promise((r) => setImmediate(r)); // let batches go out meanwhile
    }
    await Promise.all(writes);
    closeSync(fd);
    expect(readFileSync(f).equals(want)).toBe(true);

    const ro = openSync(f, 'r');
    const roFile = { fd: ro };
    const bad = await Promise.allSettled([queuedWrite(roFile, Buffer.alloc(8), 0), queuedWrite(roFile, Buffer.alloc(8), 8)]);
    closeSync(ro);
    for (const r of bad) {
      expect(r.status).toBe('rejected');
      expect(((r as PromiseRejectedResult).reason as NodeJS.ErrnoException).code).toBe('EBADF');
    }
  });
});
