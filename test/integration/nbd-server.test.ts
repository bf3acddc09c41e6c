// The NBD server at the protocol level with a raw client: handshake options,
// error replies, read-only snapshot exports refusing writes server-side,
// out-of-order completion, multi-connection coherence, and malformed input
// (which must close the connection or answer an error, never kill sheep).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Op, Flag, Res, vidToVdiOid, encodeFixedString } from '@sheepdog/common';
import { stopAll, freePort, waitFor } from '../helpers/cluster.js';
import { metric } from '../helpers/metrics.js';
import { Wire } from '../helpers/wire.js';
import { startNbdSheep, NbdSheep } from '../helpers/nbd.js';
import { RawConn, NBD } from '../helpers/nbd-client.js';

const MB = 1 << 20;

describe('NBD server protocol', () => {
  let n: NbdSheep;
  let w: Wire;
  const conns: RawConn[] = [];
  const conn = async (): Promise<RawConn> => {
    const c = new RawConn(n.nbdPort);
    conns.push(c);
    return c;
  };
  const attached = async (name: string) => {
    const c = await conn();
    await c.hello();
    const r = await c.go(name);
    if ('error' in r) throw new Error(`GO ${name}: ${r.error.toString(16)}`);
    return { c, ...r };
  };

  beforeAll(async () => {
    n = await startNbdSheep(1);
    w = new Wire(n.s.port);
    expect((await w.newVdi('disk', 16n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
  });
  afterAll(async () => {
    conns.forEach((c) => c.close());
    w?.close();
    await stopAll();
  });

  it('greets with fixed newstyle and answers LIST, INFO, unknown options and unknown exports', async () => {
    const c = await conn();
    const hs = await c.hello();
    expect(hs & 1).toBe(1); // FIXED_NEWSTYLE
    c.sendOpt(NBD.OPT.LIST);
    const names: string[] = [];
    for (;;) {
      const r = await c.optReply();
      if (r.type === NBD.REP.ACK) break;
      expect(r.type).toBe(NBD.REP.SERVER);
      names.push(r.data.toString('utf8', 4, 4 + r.data.readUInt32BE(0)));
    }
    expect(names).toContain('disk');
    c.sendOpt(NBD.OPT.LIST, Buffer.from('x'));
    expect((await c.optReply()).type).toBe(NBD.REP.ERR_INVALID);
    c.sendOpt(NBD.OPT.STRUCTURED_REPLY);
    expect((await c.optReply()).type).toBe(NBD.REP.ERR_UNSUP);
    c.sendOpt(NBD.OPT.STARTTLS);
    expect((await c.optReply()).type).toBe(NBD.REP.ERR_POLICY);
    c.sendOpt(0x4242);
    expect((await c.optReply()).type).toBe(NBD.REP.ERR_UNSUP);
    const info = await c.go('disk', NBD.OPT.INFO);
    expect(info).toEqual({ size: 16n * BigInt(MB), flags: expect.any(Number) });
    const fl = (info as { flags: number }).flags;
    expect(fl & NBD.TX.CAN_MULTI_CONN).toBeTruthy();
    expect(fl & NBD.TX.READ_ONLY).toBe(0);
    expect(await c.go('nope')).toEqual({ error: NBD.REP.ERR_UNKNOWN });
    // a malformed GO payload
    c.sendOpt(NBD.OPT.GO, Buffer.from([0, 0, 0, 99, 1]));
    expect((await c.optReply()).type).toBe(NBD.REP.ERR_INVALID);
    // still usable: GO succeeds and I/O works
    const g = await c.go('disk');
    expect('size' in g).toBe(true);
    expect((await c.cmd(NBD.CMD.READ, 0, 512)).data!.equals(Buffer.alloc(512))).toBe(true);
    // option bytes after GO are a bad request magic in transmission: hang up
    const stray = Buffer.alloc(28);
    stray.writeBigUInt64BE(NBD.IHAVEOPT, 0);
    c.write(stray);
    expect(await c.waitClosed()).toBe(true);
  });

  it('supports old clients with EXPORT_NAME and ABORT', async () => {
    const c = await conn();
    await c.hello(1); // no NO_ZEROES: 124 zero bytes follow
    c.sendOpt(NBD.OPT.EXPORT_NAME, Buffer.from('disk'));
    const r = await c.read(8 + 2 + 124);
    expect(r.readBigUInt64BE(0)).toBe(16n * BigInt(MB));
    expect(r.subarray(10).equals(Buffer.alloc(124))).toBe(true);
    const wr = await c.cmd(NBD.CMD.WRITE, 4096, 4, Buffer.from('OLD!'));
    expect(wr.error).toBe(0);
    expect((await c.cmd(NBD.CMD.READ, 4096, 4)).data!.toString()).toBe('OLD!');
    c.request(NBD.CMD.DISC, 0, 0);
    expect(await c.waitClosed()).toBe(true);
    // EXPORT_NAME of an unknown export closes the connection
    const d = await conn();
    await d.hello();
    d.sendOpt(NBD.OPT.EXPORT_NAME, Buffer.from('missing'));
    expect(await d.waitClosed()).toBe(true);
    const e = await conn();
    await e.hello();
    e.sendOpt(NBD.OPT.ABORT);
    expect((await e.optReply()).type).toBe(NBD.REP.ACK);
    expect(await e.waitClosed()).toBe(true);
  });

  it('answers errors for bad requests and completes many requests out of order', async () => {
    const { c } = await attached('disk');
    expect((await c.cmd(NBD.CMD.READ, 16 * MB - 512, 1024)).error).toBe(22); // EINVAL
    expect((await c.cmd(NBD.CMD.WRITE, 16 * MB - 2, 4, Buffer.alloc(4))).error).toBe(28); // ENOSPC
    expect((await c.cmd(NBD.CMD.BLOCK_STATUS, 0, 4096)).error).toBe(22);
    expect((await c.cmd(99, 0, 0)).error).toBe(22);
    // 64 writes in flight, then 64 reads
    const bufs = Array.from({ length: 64 }, () => randomBytes(4096));
    const hs = bufs.map((b, i) => c.request(NBD.CMD.WRITE, i * 64 * 1024, 4096, b, i % 8 === 0 ? NBD.FLAG.FUA : 0));
    const seen = new Set<bigint>();
    for (let i = 0; i < 64; i++) {
      const r = await c.reply();
      expect(r.error).toBe(0);
      seen.add(r.handle);
    }
    expect(hs.every((h) => seen.has(h))).toBe(true);
    const lens = new Map<bigint, number>();
    const rh = bufs.map((_, i) => { const h = c.request(NBD.CMD.READ, i * 64 * 1024, 4096); lens.set(h, 4096); return h; });
    const got = new Map<bigint, Buffer>();
    for (let i = 0; i < 64; i++) {
      const r = await c.reply(lens);
      expect(r.error).toBe(0);
      got.set(r.handle, r.data!);
    }
    rh.forEach((h, i) => expect(got.get(h)!.equals(bufs[i])).toBe(true));
    expect((await c.cmd(NBD.CMD.FLUSH, 0, 0)).error).toBe(0);
    // trim of a whole object, write-zeroes with NO_HOLE
    expect((await c.cmd(NBD.CMD.WRITE, 8 * MB, 4096, Buffer.alloc(4096, 9))).error).toBe(0);
    expect((await c.cmd(NBD.CMD.TRIM, 8 * MB, 4 * MB)).error).toBe(0);
    expect((await c.cmd(NBD.CMD.READ, 8 * MB, 4096)).data!.equals(Buffer.alloc(4096))).toBe(true);
    expect((await c.cmd(NBD.CMD.WRITE_ZEROES, 64 * 1024, 8192, undefined, NBD.FLAG.NO_HOLE)).error).toBe(0);
    expect((await c.cmd(NBD.CMD.READ, 64 * 1024, 8192)).data!.equals(Buffer.alloc(8192))).toBe(true);
  });

  it('keeps connections to one export coherent (multi-conn)', async () => {
    const a = (await attached('disk')).c;
    const b = (await attached('disk')).c;
    // concurrent first writes to the same unallocated object from two connections
    const pa = a.cmd(NBD.CMD.WRITE, 12 * MB, 4096, Buffer.alloc(4096, 0xaa));
    const pb = b.cmd(NBD.CMD.WRITE, 12 * MB + 4096, 4096, Buffer.alloc(4096, 0xbb));
    expect((await pa).error).toBe(0);
    expect((await pb).error).toBe(0);
    expect((await a.cmd(NBD.CMD.FLUSH, 0, 0)).error).toBe(0);
    const r = await b.cmd(NBD.CMD.READ, 12 * MB, 8192);
    expect(r.data!.subarray(0, 4096).equals(Buffer.alloc(4096, 0xaa))).toBe(true);
    expect(r.data!.subarray(4096).equals(Buffer.alloc(4096, 0xbb))).toBe(true);
  });

  it('a connection attaching to a held export sees objects another gateway allocated meanwhile (chaos seed 4802)', async () => {
    expect((await w.newVdi('moved', 16n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    // a connection holds the export open (as one whose requests are still draining would)
    const held = (await attached('moved')).c;
    expect((await held.cmd(NBD.CMD.READ, 0, 4096)).data!.equals(Buffer.alloc(4096))).toBe(true);
    // the VM moved: its writes now come through the sheepdog protocol (another gateway's client)
    const vid = await w.vid('moved');
    const data = randomBytes(4096);
    await w.writeVdi(vid, 8 * MB + 4096, data);
    // a new connection to the held export reads them
    const next = (await attached('moved')).c;
    const r = await next.cmd(NBD.CMD.READ, 8 * MB + 4096, 4096);
    expect(r.error).toBe(0);
    expect(r.data!.equals(data)).toBe(true);
    held.close();
  });

  it('a connection attaching to a held export follows a snapshot taken meanwhile (chaos seed 4105, replayed)', async () => {
    expect((await w.newVdi('snapped', 16n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    const held = (await attached('snapped')).c;
    const first = randomBytes(4096);
    expect((await held.cmd(NBD.CMD.WRITE, 4 * MB, 4096, first)).error).toBe(0);
    // through another gateway: a snapshot (the working VDI gets a new vid),
    // then a write into the new working VDI, copied on write
    const old = await w.vid('snapped');
    expect((await w.newVdi('snapped', 16n * BigInt(MB), { base: old, snapshot: true })).rsp.result).toBe(Res.SUCCESS);
    const cur = await w.vid('snapped');
    expect(cur).not.toBe(old);
    const second = randomBytes(4096);
    await w.writeVdi(cur, 4 * MB, second);
    // a new connection to the held export reads the working VDI, not the snapshot
    const next = (await attached('snapped')).c;
    const r = await next.cmd(NBD.CMD.READ, 4 * MB, 4096);
    expect(r.error).toBe(0);
    expect(r.data!.equals(second)).toBe(true);
    // and writes there without a detour
    const third = randomBytes(4096);
    expect((await next.cmd(NBD.CMD.WRITE, 4 * MB + 4096, 4096, third)).error).toBe(0);
    expect((await w.readVdi(cur, 4 * MB, 8192)).equals(Buffer.concat([second, third]))).toBe(true);
    expect((await w.readVdi(old, 4 * MB, 4096)).equals(first)).toBe(true);
    held.close();
  });

  it('refuses writes to snapshot exports on the server side', async () => {
    const vid = await w.vid('disk');
    await w.c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: 256 } }, encodeFixedString('t1', 256));
    expect((await w.newVdi('disk', 16n * BigInt(MB), { base: vid, snapshot: true })).rsp.result).toBe(Res.SUCCESS);
    const { c, flags } = await attached('disk:t1');
    expect(flags & NBD.TX.READ_ONLY).toBeTruthy();
    expect((await c.cmd(NBD.CMD.WRITE, 0, 4, Buffer.from('nope'))).error).toBe(1); // EPERM
    expect((await c.cmd(NBD.CMD.TRIM, 0, 4 * MB)).error).toBe(1);
    expect((await c.cmd(NBD.CMD.WRITE_ZEROES, 0, 4096)).error).toBe(1);
    expect((await c.cmd(NBD.CMD.READ, 4096, 4)).data!.toString()).toBe('OLD!');
    // the working VDI (a new vid now) is still writable under its name
    const { c: wc, flags: wf } = await attached('disk');
    expect(wf & NBD.TX.READ_ONLY).toBe(0);
    expect((await wc.cmd(NBD.CMD.WRITE, 4096, 4, Buffer.from('NEW!'))).error).toBe(0);
    expect((await c.cmd(NBD.CMD.READ, 4096, 4)).data!.toString()).toBe('OLD!');
    expect((await wc.cmd(NBD.CMD.READ, 4096, 4)).data!.toString()).toBe('NEW!');
  });

  it('closes connections on garbage and survives', async () => {
    const g1 = await conn();
    await g1.hello();
    g1.write(Buffer.alloc(64, 0xff)); // bad option magic
    expect(await g1.waitClosed()).toBe(true);
    const g2 = await conn();
    await g2.read(18);
    g2.write(Buffer.from([0, 0, 0, 0])); // no FIXED_NEWSTYLE
    expect(await g2.waitClosed()).toBe(true);
    const g3 = await conn();
    await g3.hello();
    const big = Buffer.alloc(16);
    big.writeBigUInt64BE(NBD.IHAVEOPT, 0);
    big.writeUInt32BE(NBD.OPT.GO, 8);
    big.writeUInt32BE(0xffffffff, 12); // absurd option length
    g3.write(big);
    expect(await g3.waitClosed()).toBe(true);
    const { c: g4 } = await attached('disk');
    g4.request(NBD.CMD.WRITE, 0, 0x7fffffff); // absurd write length, no payload
    expect(await g4.waitClosed()).toBe(true);
    const { c: g5 } = await attached('disk');
    g5.write(Buffer.alloc(28, 0x41)); // bad request magic
    expect(await g5.waitClosed()).toBe(true);
    // half a request then hang up mid-payload
    const { c: g6 } = await attached('disk');
    const h = Buffer.alloc(28);
    h.writeUInt32BE(NBD.REQ_MAGIC, 0);
    h.writeUInt16BE(NBD.CMD.WRITE, 6);
    h.writeUInt32BE(65536, 24);
    g6.write(Buffer.concat([h, Buffer.alloc(100)]));
    g6.close();
    // the daemon is fine
    const { c: ok } = await attached('disk');
    expect((await ok.cmd(NBD.CMD.READ, 4096, 4)).data!.toString()).toBe('NEW!');
    expect(n.s.proc.exitCode).toBe(null);
  });
});

describe('NBD exports and clients that hang up', () => {
  let n: NbdSheep;
  let mport = 0;
  const openExports = () => metric(mport, 'sheep_nbd_exports_open');
  beforeAll(async () => {
    mport = await freePort();
    n = await startNbdSheep(1, ['--metrics', `127.0.0.1:${mport}`]);
    const w = new Wire(n.s.port);
    expect((await w.newVdi('gone', 16n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    w.close();
  });
  afterAll(async () => {
    await stopAll();
  });

  it('an export opened for a client that hung up during GO is let go of (chaos seed 4105: it was held for good)', async () => {
    expect(await openExports()).toBe(0);
    for (let i = 0; i < 20; i++) {
      const c = new RawConn(n.nbdPort);
      await c.hello();
      const nb = Buffer.from('gone');
      const d = Buffer.alloc(4 + nb.length + 2);
      d.writeUInt32BE(nb.length, 0);
      nb.copy(d, 4);
      c.sendOpt(i % 2 ? NBD.OPT.GO : NBD.OPT.EXPORT_NAME, i % 2 ? d : nb);
      // gone before the export is open
      c.close();
    }
    await waitFor(async () => (await openExports()) === 0, 5000, 'every export let go of');
    // an attached client holds it, and lets go when it leaves
    const c = new RawConn(n.nbdPort);
    await c.hello();
    expect('error' in (await c.go('gone'))).toBe(false);
    expect(await openExports()).toBe(1);
    c.close();
    await waitFor(async () => (await openExports()) === 0, 5000, 'the export let go of');
    expect(n.s.proc.exitCode).toBe(null);
  });
});
