// The NBD data path under stress, in both receive modes (payloads filled in
// place by the socket, or spliced into the object file when large and the
// object is allocated; or assembled from stream chunks) and both file I/O
// modes (native: page-cache hits read inline with RWF_NOWAIT and writes
// batched per file; or one libuv request per read and write): requests
// split at every possible point, large payloads spanning
// objects, and pooled buffers under socket backpressure must never mix up
// bytes between requests.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Res } from '@sheepdog/common';
import { stopAll, freePort } from '../helpers/cluster.js';
import { metric } from '../helpers/metrics.js';
import { Wire } from '../helpers/wire.js';
import { startNbdSheep, NbdSheep } from '../helpers/nbd.js';
import { RawConn, NBD } from '../helpers/nbd-client.js';

const KB = 1024;
const MB = 1 << 20;
const SIZE = 64 * MB;

describe.each([
  {
    mode: 'direct receive, native file I/O',
    // the splice path carries payloads that never pass through memory, so it runs without block checksums
    env: { SHEEP_NBD_DIRECT: '1', SHEEP_NATIVE_IO: '1', SHEEP_CHECKSUMS: '0' },
    reads: /file I\/O: native: page-cache hits up to \d+ bytes read inline.*I\/O buffers on huge pages/,
    splice: true,
  },
  {
    mode: 'stream receive, one pool request per I/O',
    env: { SHEEP_NBD_DIRECT: '0', SHEEP_NATIVE_IO: '0' },
    reads: /file I\/O: one thread-pool request per read and write \(SHEEP_NATIVE_IO=0\)/,
    splice: false,
  },
])('NBD data path ($mode)', ({ env, reads, splice }) => {
  let n: NbdSheep;
  let w: Wire;
  const conns: RawConn[] = [];
  let metricsPort = 0;
  /** NBD write payloads the daemon has spliced so far (its metric). */
  const splicedWrites = () => metric(metricsPort, 'sheep_nbd_spliced_writes_total');
  /** What the disk should hold (the test's model). */
  const model = Buffer.alloc(SIZE);

  const attach = async (): Promise<RawConn> => {
    const c = new RawConn(n.nbdPort);
    conns.push(c);
    await c.hello();
    const r = await c.go('disk');
    if ('error' in r) throw new Error(`GO: ${r.error}`);
    return c;
  };
  const readBack = async (c: RawConn, off: number, len: number) => {
    const r = await c.cmd(NBD.CMD.READ, off, len);
    expect(r.error).toBe(0);
    return r.data!;
  };

  beforeAll(async () => {
    metricsPort = await freePort();
    n = await startNbdSheep(1, ['--metrics', `127.0.0.1:${metricsPort}`], env);
    expect(n.s.output()).toMatch(reads); // the mode under test is the one running
    w = new Wire(n.s.port);
    expect((await w.newVdi('disk', BigInt(SIZE))).rsp.result).toBe(Res.SUCCESS);
  });
  afterAll(async () => {
    conns.forEach((c) => c.close());
    w?.close();
    await stopAll();
  });

  it('assembles requests split at any point, with payloads of every size class', async () => {
    const c = await attach();
    const writes = [
      { off: 0, data: randomBytes(4 * KB) },
      { off: MB + 1, data: randomBytes(64 * KB + 7) }, // just over the pooled size
      { off: 20 * MB, data: randomBytes(64 * KB - 1) }, // just under it
      { off: 10 * MB + 123, data: randomBytes(200 * KB) },
      { off: 4 * MB - 300 * KB, data: randomBytes(MB) }, // spans two objects
      { off: 30 * MB, data: randomBytes(4 * MB) }, // a whole object
    ];
    // tiny segments for the small and just-pooled payloads, then MTU-like and large ones for all
    for (const [max, some] of [[7, 3], [1500, 6], [70_000, 6]]) {
      const round = writes.slice(0, some);
      const frames = round.map((x) => c.frame(NBD.CMD.WRITE, x.off, x.data.length, x.data));
      const flush = c.frame(NBD.CMD.FLUSH, 0, 0);
      await c.writeFragmented(Buffer.concat([...frames.map((f) => f.bytes), flush.bytes]), max);
      const seen = new Set<bigint>();
      for (let i = 0; i <= frames.length; i++) {
        const r = await c.reply();
        expect(r.error).toBe(0);
        seen.add(r.handle);
      }
      expect([...frames, flush].every((f) => seen.has(f.handle))).toBe(true);
      for (const x of round) {
        x.data.copy(model, x.off);
        expect((await readBack(c, x.off, x.data.length)).equals(x.data)).toBe(true);
        x.data = randomBytes(x.data.length); // next round writes new bytes to the same places
      }
    }
    // one read across everything written so far, and across an object boundary
    expect((await readBack(c, 0, 32 * MB)).equals(model.subarray(0, 32 * MB))).toBe(true);
    expect((await readBack(c, 4 * MB - 700 * KB, 2 * MB)).equals(model.subarray(4 * MB - 700 * KB, 2 * MB + 4 * MB - 700 * KB))).toBe(true);
    expect(n.s.proc.exitCode).toBe(null);
  });

  it('keeps pipelined large reads and writes intact while the client is slow to read', async () => {
    const c = await attach();
    // fill 16 MiB with known bytes
    const regions = Array.from({ length: 16 }, (_, i) => ({ off: 40 * MB + i * MB, data: randomBytes(MB) }));
    for (const r of regions) c.request(NBD.CMD.WRITE, r.off, MB, r.data);
    for (let i = 0; i < regions.length; i++) expect((await c.reply()).error).toBe(0);
    for (const r of regions) r.data.copy(model, r.off);
    // 48 reads of 1 MiB queued at once; the client does not read replies for a while,
    // so the server's socket writes back up while more (pooled) writes arrive
    const lens = new Map<bigint, number>();
    const want = new Map<bigint, Buffer>();
    for (let k = 0; k < 48; k++) {
      const r = regions[(k * 7) % regions.length];
      const h = c.request(NBD.CMD.READ, r.off, MB);
      lens.set(h, MB);
      want.set(h, Buffer.from(r.data));
    }
    const fresh = Array.from({ length: 8 }, (_, i) => ({ off: 56 * MB + i * MB, data: randomBytes(MB) }));
    for (const f of fresh) c.request(NBD.CMD.WRITE, f.off, MB, f.data);
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 48 + fresh.length; i++) {
      const r = await c.reply(lens);
      expect(r.error).toBe(0);
      if (want.has(r.handle)) expect(r.data!.equals(want.get(r.handle)!)).toBe(true);
    }
    for (const f of fresh) {
      f.data.copy(model, f.off);
      expect((await readBack(c, f.off, MB)).equals(f.data)).toBe(true);
    }
    expect((await readBack(c, 40 * MB, 24 * MB)).equals(model.subarray(40 * MB, 64 * MB))).toBe(true);
  });

  it('keeps the bytes of many small writes in flight at once (more than any receive buffer holds)', async () => {
    const c = await attach();
    // 1024 writes of 4 KiB into 4 objects, all sent before any reply is read:
    // 4 MiB of payloads that wait in the server's queues while later ones arrive
    const base = 44 * MB;
    const writes = Array.from({ length: 1024 }, (_, i) => ({ off: base + ((i * 389) % 1024) * 4 * KB, data: randomBytes(4 * KB) }));
    c.write(Buffer.concat(writes.map((x) => c.frame(NBD.CMD.WRITE, x.off, x.data.length, x.data).bytes)));
    for (let i = 0; i < writes.length; i++) expect((await c.reply()).error).toBe(0);
    for (const x of writes) x.data.copy(model, x.off);
    const got = await readBack(c, base, 4 * MB);
    for (const x of writes) {
      const at = x.off - base;
      if (!got.subarray(at, at + x.data.length).equals(x.data)) throw new Error(`the 4 KiB written at ${x.off} read back different`);
    }
  });

  it('takes large payloads for allocated objects however they arrive, and none from a client that hangs up', async () => {
    const c = await attach();
    const base = 36 * MB; // one object, allocated first
    for (let i = 0; i < 4; i++) {
      const d = randomBytes(MB);
      expect((await c.cmd(NBD.CMD.WRITE, base + i * MB, MB, d)).error).toBe(0);
      d.copy(model, base + i * MB);
    }
    const splicedBefore = await splicedWrites();
    // the header alone, then the payload in pieces of every size class, a while later
    for (const [i, max] of [[0, 4096], [1, 1500], [2, 70_000], [3, MB]]) {
      const d = randomBytes(i === 3 ? 512 * KB : MB);
      const f = c.frame(NBD.CMD.WRITE, base + i * MB + 4096, d.length, d);
      c.write(f.bytes.subarray(0, 28));
      await new Promise((r) => setTimeout(r, 20));
      await c.writeFragmented(f.bytes.subarray(28), max);
      const r = await c.reply();
      expect([r.handle, r.error]).toEqual([f.handle, 0]);
      d.copy(model, base + i * MB + 4096);
    }
    // pipelined: each header follows a large payload
    const burst = Array.from({ length: 6 }, (_, i) => ({ off: base + ((i * 5) % 12) * 256 * KB, data: randomBytes(256 * KB + 512 * (i % 3)) }));
    c.write(Buffer.concat(burst.map((x) => c.frame(NBD.CMD.WRITE, x.off, x.data.length, x.data).bytes)));
    for (let i = 0; i < burst.length; i++) expect((await c.reply()).error).toBe(0);
    for (const x of burst) x.data.copy(model, x.off);
    expect((await readBack(c, base, 4 * MB)).equals(model.subarray(base, base + 4 * MB))).toBe(true);
    // the payloads went through pipes exactly when splicing is possible
    const spliced = (await splicedWrites()) - splicedBefore;
    if (splice) expect(spliced).toBeGreaterThanOrEqual(1);
    else expect(spliced).toBe(0);

    // a snapshot taken while a payload is on its way: the write lands in the new working VDI only
    const before = Buffer.from(model.subarray(base + 2 * MB, base + 3 * MB));
    const oldVid = await w.vid('disk');
    const late = randomBytes(MB);
    const lf = c.frame(NBD.CMD.WRITE, base + 2 * MB, MB, late);
    c.write(lf.bytes.subarray(0, 28));
    await new Promise((r) => setTimeout(r, 20));
    await c.writeFragmented(lf.bytes.subarray(28, 28 + 300 * KB), 64 * KB);
    expect((await w.newVdi('disk', BigInt(SIZE), { base: oldVid, snapshot: true })).rsp.result).toBe(Res.SUCCESS);
    await c.writeFragmented(lf.bytes.subarray(28 + 300 * KB), 64 * KB);
    expect((await c.reply()).error).toBe(0);
    late.copy(model, base + 2 * MB);
    expect((await readBack(c, base + 2 * MB, MB)).equals(late)).toBe(true);
    expect((await w.readVdi(oldVid, base + 2 * MB, MB)).equals(before)).toBe(true);
    expect(await w.vid('disk')).not.toBe(oldVid);

    // a client that sends half a payload and hangs up writes nothing
    const h = await attach();
    const f = h.frame(NBD.CMD.WRITE, base + MB, MB, randomBytes(MB));
    h.write(f.bytes.subarray(0, 28));
    await new Promise((r) => setTimeout(r, 20));
    await h.writeFragmented(f.bytes.subarray(28, 28 + 600 * KB), 64 * KB);
    await new Promise((r) => setTimeout(r, 20));
    h.close();
    const d = await attach();
    expect((await readBack(d, base, 4 * MB)).equals(model.subarray(base, base + 4 * MB))).toBe(true);
    expect(n.s.proc.exitCode).toBe(null);
  });

  it('drops a connection that hangs up mid-payload and serves the next one', async () => {
    const c = await attach();
    const f = c.frame(NBD.CMD.WRITE, 8 * MB, MB, randomBytes(MB));
    await c.writeFragmented(f.bytes.subarray(0, 300 * KB), 64 * KB);
    c.close();
    const d = await attach();
    expect((await readBack(d, 8 * MB, MB)).equals(model.subarray(8 * MB, 9 * MB))).toBe(true);
    expect(n.s.proc.exitCode).toBe(null);
  });
});

describe('NBD data path: a spliced payload that outgrows its pipe', () => {
  let n: NbdSheep;
  let w: Wire;
  const conns: RawConn[] = [];
  beforeAll(async () => {
    // pipes of 128 KiB: 32 pieces, fewer than a payload sent in 64 segments needs
    n = await startNbdSheep(1, ['-l', 'level=debug'], { SHEEP_SPLICE_PIPE_SIZE: String(128 * KB), SHEEP_CHECKSUMS: '0' });
    w = new Wire(n.s.port);
    expect((await w.newVdi('disk', BigInt(16 * MB))).rsp.result).toBe(Res.SUCCESS);
  });
  afterAll(async () => {
    conns.forEach((c) => c.close());
    w?.close();
    await stopAll();
  });

  it('receives the rest as usual and writes every byte', async () => {
    const c = new RawConn(n.nbdPort);
    conns.push(c);
    await c.hello();
    expect('error' in (await c.go('disk'))).toBe(false);
    const first = randomBytes(MB);
    expect((await c.cmd(NBD.CMD.WRITE, 0, MB, first)).error).toBe(0); // allocates the object
    expect((await c.cmd(NBD.CMD.WRITE, 0, MB, first)).error).toBe(0); // and opens its file
    const d = randomBytes(128 * KB);
    const f = c.frame(NBD.CMD.WRITE, 64 * KB, d.length, d);
    c.write(f.bytes.subarray(0, 28));
    await new Promise((r) => setTimeout(r, 20));
    for (let off = 0; off < d.length; off += 2 * KB) {
      await new Promise<void>((r) => c.sock.write(d.subarray(off, off + 2 * KB), () => r()));
      await new Promise((r) => setTimeout(r, 3));
    }
    const r = await c.reply();
    expect([r.handle, r.error]).toEqual([f.handle, 0]);
    d.copy(first, 64 * KB);
    const back = await c.cmd(NBD.CMD.READ, 0, MB);
    expect(back.data!.equals(first)).toBe(true);
    expect(n.s.output()).toMatch(/pipe full after \d+, receiving the rest as usual/);
  });
});
