// The store's native file I/O (sheep/native/fileio) on real files and
// sockets: inline page-cache reads, batched writes with per-write results,
// the write queue that feeds batches to the pool, and zero-copy receive
// (socket -> pipe -> file), and I/O buffers on huge pages.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { openSync, closeSync, writeFileSync, readFileSync, writeSync, readSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { dir as tmpDir, DirectoryResult } from 'tmp-promise';
import { spawnSync } from 'node:child_process';
import { fileio, tryReadNow, FILEIO_ADDON_PATH, WRITE_CHUNK, chunkRoom } from '../../sheep/src/store/fileio.js';
import { WriteQueue } from '../../sheep/src/store/writequeue.js';

const queue = new WriteQueue();
const queuedWrite = (fd: number, data: Buffer, pos: number) =>
  new Promise<void>((resolve, reject) => queue.write(fd, data, pos, (err) => (err ? reject(err) : resolve())));

const EBADF = 9;
const ECONNRESET = 104;
const ECANCELED = 125;

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

  it('writes a batch of adjacent, scattered and overlapping pieces of several files with a result for each', async () => {
    const files = ['w0', 'w1'].map((n) => path.join(d.path, n));
    for (const f of files) writeFileSync(f, Buffer.alloc(1 << 20));
    const want = files.map(() => Buffer.alloc(1 << 20));
    // [file, position, bytes]
    const pieces: [number, number, Buffer][] = [
      [0, 0, randomBytes(4096)], [0, 4096, randomBytes(4096)], [0, 8192, randomBytes(100)], // one run
      [1, 8292, randomBytes(5000)], // back to back with the run, but in the other file
      [0, 500_000, randomBytes(70_000)],
      [1, 0, randomBytes(300)],
      [0, 900_000, randomBytes(10)], [0, 900_005, randomBytes(10)], // overlapping: the later one wins
    ];
    for (const [f, pos, b] of pieces) b.copy(want[f], pos);
    const fds = files.map((f) => openSync(f, 'r+'));
    const status = new Int32Array(pieces.length).fill(1);
    await new Promise<void>((r) => fileio!.writeBatch(Int32Array.from(pieces.map((p) => fds[p[0]])), pieces.map((p) => p[2]),
      Float64Array.from(pieces.map((p) => p[1])), status, r));
    fds.forEach((fd) => closeSync(fd));
    expect([...status]).toEqual(pieces.map(() => 0));
    files.forEach((f, i) => expect(readFileSync(f).equals(want[i])).toBe(true));

    // a failing file fails its own pieces only
    const ro = openSync(files[0], 'r');
    const rw = openSync(files[1], 'r+');
    const st = new Int32Array(3);
    const ok = randomBytes(4);
    await new Promise<void>((r) => fileio!.writeBatch(Int32Array.from([ro, ro, rw]), [Buffer.alloc(4), Buffer.alloc(4), ok], Float64Array.from([0, 100, 104]), st, r));
    closeSync(ro);
    closeSync(rw);
    expect([...st]).toEqual([-EBADF, -EBADF, 0]);
    expect(readFileSync(files[1]).subarray(104, 108).equals(ok)).toBe(true);
    const one = Int32Array.from([ro]);
    expect(() => fileio!.writeBatch(new Int32Array(0), [], new Float64Array(0), new Int32Array(0), () => undefined)).toThrow(TypeError);
    expect(() => fileio!.writeBatch(one, [Buffer.alloc(1)], new Float64Array(1), new Int32Array(0), () => undefined)).toThrow(TypeError);
    expect(() => fileio!.writeBatch([ro] as never, [Buffer.alloc(1)], new Float64Array(1), new Int32Array(1), () => undefined)).toThrow(TypeError);
  });

  it('stops every write at chunk boundaries of the file, for runs of pieces and pipes alike, and the bytes land whole', async () => {
    expect(WRITE_CHUNK).toBe(256 * 1024);
    expect(chunkRoom(0, 1 << 20)).toBe(256 * 1024);
    expect(chunkRoom(256 * 1024 - 10, 4096)).toBe(10);
    expect(chunkRoom(300_000, 100)).toBe(100);
    const writeCalls = () => Number(/syscw: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
    const f = path.join(d.path, 'chunks');
    writeFileSync(f, Buffer.alloc(4 << 20));
    const want = Buffer.alloc(4 << 20);
    const fd = openSync(f, 'r+');
    try {
      for (const chunk of [16 * 1024, 0, WRITE_CHUNK]) {
        fileio!.setWriteChunk(chunk);
        // a run of adjacent pieces across several boundaries, from an unaligned start, and a pipe's bytes after it
        const run = [randomBytes(5000), randomBytes(70_001), randomBytes(123), randomBytes(200_000)];
        const start = 3 * 16 * 1024 - 700;
        const piped = randomBytes(100_000);
        const [r, w] = fileio!.pipeOpen(1 << 20);
        let off = 0;
        while (off < piped.length) off += writeSync(w, piped, off);
        const positions: number[] = [];
        let pos = start;
        for (const b of run) { positions.push(pos); b.copy(want, pos); pos += b.length; }
        const pipeAt = 2 << 20;
        piped.copy(want, pipeAt);
        const status = new Int32Array(run.length + 1).fill(1);
        const before = writeCalls();
        await new Promise<void>((res) => fileio!.writeBatch(Int32Array.from([...run.map(() => fd), fd]), [...run, { pipe: r, length: piped.length }],
          Float64Array.from([...positions, pipeAt]), status, res));
        const calls = writeCalls() - before;
        closeSync(r);
        closeSync(w);
        expect([...status]).toEqual(new Array(run.length + 1).fill(0));
        expect(readFileSync(f).equals(want)).toBe(true);
        // 275,124 bytes from 48,452 reach into 18 chunks of 16 KiB: 18 pwritev calls at least (the process may write more meanwhile)
        if (chunk === 16 * 1024) expect(calls).toBeGreaterThanOrEqual(18);
      }
      expect(() => fileio!.setWriteChunk(100)).toThrow(TypeError);
      expect(() => fileio!.setWriteChunk(-1)).toThrow(TypeError);
    } finally {
      fileio!.setWriteChunk(WRITE_CHUNK);
      closeSync(fd);
    }
  });

  it('queues writes to many files: all land, each settles, errors reach their writers', async () => {
    const files = ['q0', 'q1', 'q2'].map((n) => path.join(d.path, n));
    for (const f of files) writeFileSync(f, Buffer.alloc(4 << 20));
    const want = files.map(() => Buffer.alloc(4 << 20));
    const fds = files.map((f) => openSync(f, 'r+'));
    // 3000 writes of 1-12 KiB at random 512-byte offsets of three 4 MiB files: many
    // overlap, with different starts, in one batch and across the two batches the
    // pool may hold
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 3000; i++) {
      const f = Math.floor(Math.random() * files.length);
      const len = 1024 * (1 + Math.floor(Math.random() * 12));
      const pos = 512 * Math.floor(Math.random() * ((4 << 20) - len) / 512);
      const b = randomBytes(len);
      b.copy(want[f], pos);
      writes.push(queuedWrite(fds[f], b, pos)); // issued in order: the later write to a place wins
      if (i % 97 === 0) await new Promise((r) => setImmediate(r)); // let batches go out meanwhile
    }
    await Promise.all(writes);
    fds.forEach((fd) => closeSync(fd));
    files.forEach((f, i) => expect(readFileSync(f).equals(want[i])).toBe(true));

    const ro = openSync(files[0], 'r');
    const rw = openSync(files[1], 'r+');
    const bad = await Promise.allSettled([queuedWrite(ro, Buffer.alloc(8), 0), queuedWrite(rw, Buffer.alloc(8), 0), queuedWrite(ro, Buffer.alloc(8), 8)]);
    closeSync(ro);
    closeSync(rw);
    expect(bad.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'rejected']);
    for (const r of [bad[0], bad[2]]) expect(((r as PromiseRejectedResult).reason as NodeJS.ErrnoException).code).toBe('EBADF');
  });

  it('writes pieces that wait in a pipe, between ordinary ones', async () => {
    const f = path.join(d.path, 'p');
    writeFileSync(f, Buffer.alloc(1 << 20));
    const [r, w, capacity] = fileio!.pipeOpen(1 << 20);
    expect(capacity).toBeGreaterThanOrEqual(64 * 1024);
    const a = randomBytes(4096);
    const b = randomBytes(Math.min(capacity, 300_000));
    const c = randomBytes(4096);
    expect(writeSync(w, b)).toBe(b.length);
    const fd = openSync(f, 'r+');
    const status = new Int32Array(3).fill(1);
    // a, the pipe's bytes right after a, c right after those: three runs, not one
    await new Promise<void>((res) => fileio!.writeBatch(Int32Array.from([fd, fd, fd]), [a, { pipe: r, length: b.length }, c],
      Float64Array.from([0, 4096, 4096 + b.length]), status, res));
    closeSync(fd);
    expect([...status]).toEqual([0, 0, 0]);
    expect(readFileSync(f).subarray(0, 8192 + b.length).equals(Buffer.concat([a, b, c]))).toBe(true);
    expect(() => fileio!.writeBatch(Int32Array.from([fd]), [{ pipe: -1, length: 1 }], new Float64Array(1), new Int32Array(1), () => undefined)).toThrow(TypeError);
    closeSync(r);
    closeSync(w);
  });

  it('moves exactly a payload from a socket into a pipe, whenever it arrives, and reports a peer that leaves', async () => {
    const srv = net.createServer({ pauseOnConnect: true }); // nothing read but by the splicer, until resumed
    await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
    const port = (srv.address() as net.AddressInfo).port;
    const accepted = new Promise<net.Socket>((res) => srv.once('connection', res));
    const client = net.connect(port, '127.0.0.1');
    const sock = await accepted;
    const fdOf = (s: net.Socket) => (s as unknown as { _handle: { fd: number } })._handle.fd;
    const sp = fileio!.splicerOpen(fdOf(sock));
    const [r, w] = fileio!.pipeOpen(1 << 20);
    try {
      // all there already: done at once
      const first = randomBytes(1000);
      await new Promise<void>((res) => client.write(first, () => res()));
      await new Promise((res) => setTimeout(res, 50));
      expect(fileio!.splicerStart(sp, w, 1000, () => { throw new Error('not called when done at once'); })).toBe(1);
      const got = Buffer.alloc(1000);
      expect(readSync(r, got)).toBe(1000);
      expect(got.equals(first)).toBe(true);

      // in pieces, with bytes of the next message after it that must stay in the socket
      const payload = randomBytes(200_000);
      const after = Buffer.from('next request');
      const done = new Promise<number>((res) => expect(fileio!.splicerStart(sp, w, payload.length, res)).toBe(0));
      for (let off = 0; off < payload.length; off += 30_000) {
        client.write(payload.subarray(off, off + 30_000));
        await new Promise((res) => setTimeout(res, 5));
      }
      client.write(after);
      expect(await done).toBe(0);
      const moved = Buffer.alloc(payload.length);
      let n = 0;
      while (n < moved.length) n += readSync(r, moved, n, moved.length - n, null);
      expect(moved.equals(payload)).toBe(true);
      // what follows stays in the socket: read it there
      const rest = Buffer.alloc(after.length);
      expect(readSync(fdOf(sock), rest)).toBe(after.length);
      expect(rest.equals(after)).toBe(true);

      // a pipe with room for one piece, and a payload that arrives in two: full after the first
      const [r1, w1, cap1] = fileio!.pipeOpen(4096);
      expect(cap1).toBe(4096);
      const two = randomBytes(4096);
      const full = new Promise<number>((res) => expect(fileio!.splicerStart(sp, w1, 4096, res)).toBe(0));
      client.write(two.subarray(0, 2000));
      await new Promise((res) => setTimeout(res, 30));
      client.write(two.subarray(2000));
      expect(await full).toBe(2);
      const inPipe = fileio!.splicerMoved(sp);
      expect(inPipe).toBe(2000);
      const head = Buffer.alloc(inPipe);
      expect(readSync(r1, head)).toBe(inPipe);
      const tail = Buffer.alloc(4096 - inPipe); // the rest is still in the socket
      expect(readSync(fdOf(sock), tail)).toBe(tail.length);
      expect(Buffer.concat([head, tail]).equals(two)).toBe(true);
      closeSync(r1);
      closeSync(w1);

      // cancelled while waiting
      const cancelled = new Promise<number>((res) => fileio!.splicerStart(sp, w, 10, res));
      fileio!.splicerClose(sp);
      expect(await cancelled).toBe(-ECANCELED);
      expect(() => fileio!.splicerStart(sp, w, 10, () => undefined)).toThrow(TypeError);

      // the peer leaves before the payload is complete
      const sp2 = fileio!.splicerOpen(fdOf(sock));
      const short = new Promise<number>((res) => fileio!.splicerStart(sp2, w, 5000, res));
      client.end(Buffer.alloc(100));
      expect(await short).toBe(-ECONNRESET);
      fileio!.splicerClose(sp2);
    } finally {
      closeSync(r);
      closeSync(w);
      client.destroy();
      sock.destroy();
      srv.close();
    }
  });

  it('hands out huge-page buffers of exactly the size asked, each its own memory', () => {
    const sizes = [65536, 100_000, 1 << 20, 1 << 20, 1 << 21, 3 << 20, 5000];
    const bufs = sizes.map((n) => fileio!.hugeAlloc(n));
    bufs.forEach((b, i) => {
      expect(b).toBeInstanceOf(Buffer);
      expect(b.length).toBe(sizes[i]);
      expect(b.byteOffset).toBe(0);
      expect(b.buffer.byteLength).toBe(sizes[i]);
      b.fill(i + 1);
    });
    bufs.forEach((b, i) => expect(b.every((x) => x === i + 1)).toBe(true)); // no two share bytes
    expect(new Set(bufs.map((b) => b.buffer)).size).toBe(bufs.length);
    for (const bad of [0, -1, 1.5, 2 ** 31, NaN]) expect(() => fileio!.hugeAlloc(bad)).toThrow(TypeError);
    expect(() => (fileio!.hugeAlloc as unknown as (x: string) => Buffer)('1')).toThrow(TypeError);
  });

  it('puts huge-buffer memory on huge pages where the kernel has them, and gives it back when collected', () => {
    // A child with gc exposed: allocates 2 GiB in all, keeping at most 64 MiB, and reports its memory.
    const script = `
      const addon = require(${JSON.stringify(FILEIO_ADDON_PATH)});
      const { readFileSync } = require('node:fs');
      const huge = () => Number(/AnonHugePages:\\s+(\\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]);
      const fallbacks = () => Number(/thp_fault_fallback (\\d+)/.exec(readFileSync('/proc/vmstat', 'utf8'))[1]);
      const h0 = huge(), f0 = fallbacks();
      let keep = [];
      for (let i = 0; i < 8; i++) keep.push(addon.hugeAlloc(1 << 20));
      const h1 = huge(), f1 = fallbacks();
      let maxRss = 0;
      (async () => {
        for (let i = 0; i < 2048; i++) {
          keep.push(addon.hugeAlloc(i % 3 ? 1 << 20 : 3 << 20));
          if (keep.length > 32) keep = keep.slice(16);
          if (i % 64 === 0) {
            globalThis.gc();
            await new Promise((r) => setImmediate(r)); // finalizers run from the loop
            maxRss = Math.max(maxRss, process.memoryUsage().rss);
          }
        }
        console.log(JSON.stringify({ grew: h1 - h0, fellBack: f1 - f0, maxRssMB: maxRss / 1048576 }));
      })();
    `;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { grew: number; fellBack: number; maxRssMB: number };
    const thp = readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8');
    // 8 MiB in 2 MiB chunks: on huge pages, unless THP is off or the kernel had none to give
    if (!thp.includes('[never]')) expect(out.grew >= 8192 || out.fellBack > 0).toBe(true);
    expect(out.maxRssMB).toBeLessThan(400);
  });
});
