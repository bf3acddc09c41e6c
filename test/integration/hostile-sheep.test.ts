// The sheepdog port against hostile clients: each finding of the hostile
// input issue as a test. A sheep with a small configured budget
// (--conn-budget 16M --node-budget 128M) must keep its memory within it
// whatever length fields say, answer absurd fields with errors, keep
// serving valid clients next to abusive ones, refuse peer and admin
// opcodes from strangers, and close connections that stall halfway.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import {
  Op, Flag, Res, encodeRequest, vidToDataOid, vidToVdiOid, encodeFixedString, SD_VDI_BITMAP_SIZE, encodeAddr, SD_INODE_HEADER_SIZE,
} from '@sheepdog/common';
import { startFormatted, stopAll, SheepProc, ROOT, startSheep } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { Raw, rss, sleep, once } from '../helpers/hostile.js';

const MB = 1 << 20;
const BUDGET = 128 * MB;
/** Memory a sheep may hold beyond its budget: the buffer pool's free list (64 MiB) and collector lag. */
const SLACK = 96 * MB;
const log = (s: SheepProc) => readFileSync(path.join(s.dir, 'sheep.log'), 'utf8');

describe('sheepdog port under hostile input', () => {
  let s: SheepProc;
  let w: Wire;
  let vid: number;
  let oid: bigint;
  let base: number;
  const alive = async () => {
    const r = await once(s.port, { opcode: Op.GET_NODE_LIST, dataLength: 491520 });
    expect(r?.h.result).toBe(Res.SUCCESS);
    expect(s.proc.exitCode).toBe(null);
  };

  beforeAll(async () => {
    s = await startFormatted(1, ['--conn-budget', '16M', '--node-budget', '128M', '--max-conns-per-addr', '1000', '--request-timeout', '2']);
    w = new Wire(s.port);
    vid = (await w.newVdi('hostile', 64n * BigInt(MB))).rsp.vdi.vdiId;
    oid = vidToDataOid(vid, 0);
    const c = await w.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid } }, Buffer.alloc(4 * MB, 7));
    expect(c.rsp.result).toBe(Res.SUCCESS);
    await sleep(500);
    base = rss(s.proc.pid!);
  });
  afterAll(async () => {
    w?.close();
    await stopAll();
  });

  it('answers a header claiming 1-2 GiB for object writes with INVALID_PARMS and lives', async () => {
    for (const opcode of [Op.CREATE_AND_WRITE_OBJ, Op.WRITE_OBJ, Op.CREATE_AND_WRITE_PEER, Op.WRITE_PEER]) {
      for (const len of [2 ** 30 + 1, 2 ** 30 + 12345, 2 ** 31 - 1, 2 ** 31]) {
        const c = new Raw(s.port);
        await c.ready;
        c.send({ opcode, flags: Flag.CMD_WRITE, id: 9, dataLength: len, obj: { oid } });
        const r = await c.reply();
        expect(r?.h.result).toBe(Res.INVALID_PARMS);
        expect(await c.waitClosed()).toBe(true);
      }
    }
    await alive();
    expect(rss(s.proc.pid!) - base).toBeLessThan(SLACK);
  });

  it('keeps 100 connections holding 2 GiB headers and 100 holding 4 MiB headers without payload within its budget, and serves valid clients', async () => {
    const conns: Raw[] = [];
    for (let i = 0; i < 100; i++) {
      const a = new Raw(s.port);
      a.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, dataLength: 2 ** 31, obj: { oid } });
      const b = new Raw(s.port);
      b.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, dataLength: 4 * MB, obj: { oid } });
      conns.push(a, b);
    }
    await Promise.all(conns.map((c) => c.ready));
    let peak = 0;
    for (let i = 0; i < 10; i++) {
      await sleep(100);
      peak = Math.max(peak, rss(s.proc.pid!));
    }
    // a valid client is answered while they hold their headers
    const r = await once(s.port, { opcode: Op.READ_OBJ, dataLength: 4096, obj: { oid, offset: 0 } });
    expect(r?.h.result).toBe(Res.SUCCESS);
    expect(r?.data.equals(Buffer.alloc(4096, 7))).toBe(true);
    peak = Math.max(peak, rss(s.proc.pid!));
    conns.forEach((c) => c.close());
    expect(peak - base).toBeLessThan(BUDGET + SLACK);
    await alive();
  });

  it('answers READ_PEER and READ_OBJ asking for 1 GiB with INVALID_PARMS and no data', async () => {
    const before = rss(s.proc.pid!);
    for (const opcode of [Op.READ_PEER, Op.READ_OBJ]) {
      for (let i = 0; i < 4; i++) {
        const r = await once(s.port, { opcode, dataLength: 2 ** 30, obj: { oid, offset: 0 } });
        expect(r?.h.result).toBe(Res.INVALID_PARMS);
        expect(r?.data.length).toBe(0);
      }
    }
    expect(rss(s.proc.pid!) - before).toBeLessThan(SLACK);
  });

  it('refuses DISCARD_OBJ of an index entry no inode has (found by the fuzzer), leaves the inode intact and logs no damage', async () => {
    // data object index 2^32-1: its entry would lie 16 GiB into a 12 MiB inode
    for (const bad of [vidToDataOid(vid, 0) | 0xffffffffn, vidToDataOid(vid, 0) | BigInt(1 << 20), vidToVdiOid(vid)]) {
      const r = await once(s.port, { opcode: Op.DISCARD_OBJ, obj: { oid: bad } });
      expect(r?.h.result).toBe(Res.INVALID_PARMS);
    }
    const r = await w.send({ opcode: Op.READ_OBJ, dataLength: 4096, obj: { oid } });
    expect(r.rsp.result).toBe(Res.SUCCESS);
    expect(r.data.equals(Buffer.alloc(4096, 7))).toBe(true);
    const ino = await w.send({ opcode: Op.READ_OBJ, dataLength: 4, obj: { oid: vidToVdiOid(vid), offset: SD_INODE_HEADER_SIZE } });
    expect(ino.rsp.result).toBe(Res.SUCCESS);
    expect(readFileSync(path.join(s.dir, 'sheep.log'), 'utf8')).not.toMatch(/is damaged/);
    await alive();
  });

  it('holds at most its budget for a client that never reads its replies', async () => {
    const before = rss(s.proc.pid!);
    const c = new Raw(s.port, undefined, { read: false });
    await c.ready;
    c.sock.pause();
    const reqs: Buffer[] = [];
    for (let i = 0; i < 520; i++) reqs.push(encodeRequest({ opcode: Op.READ_OBJ, id: i, dataLength: 4 * MB, obj: { oid, offset: 0 } }));
    c.sock.write(Buffer.concat(reqs)); // 25 KB of requests asking for 2 GiB of replies
    let peak = 0;
    for (let i = 0; i < 20; i++) {
      await sleep(100);
      peak = Math.max(peak, rss(s.proc.pid!));
    }
    await alive();
    c.close();
    // its own budget (16 MiB), the kernel's socket buffers aside
    expect(peak - before).toBeLessThan(16 * MB + SLACK);
  });

  it('costs little memory per idle connection', async () => {
    await sleep(300);
    const before = rss(s.proc.pid!);
    const conns: Raw[] = [];
    for (let i = 0; i < 800; i++) conns.push(new Raw(s.port));
    await Promise.all(conns.map((c) => c.ready));
    await sleep(500);
    const per = (rss(s.proc.pid!) - before) / conns.length;
    conns.forEach((c) => c.close());
    expect(per).toBeLessThan(32 * 1024);
    await alive();
  });

  it('refuses unchecked fields (a block-size shift of 49) with INVALID_PARMS, not a RangeError', async () => {
    const odd = 0x777777;
    const add = await w.send({ opcode: Op.NOTIFY_VDI_ADD, vdiState: { newVid: odd, copies: 1, blockSizeShift: 49, setBitmap: 1 } });
    expect(add.rsp.result).toBe(Res.INVALID_PARMS);
    const nv = await w.send({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: 1n << 40n, blockSizeShift: 49 } }, encodeFixedString('shift49', 256));
    expect(nv.rsp.result).toBe(Res.INVALID_PARMS);
    const alter = await w.send({ opcode: Op.ALTER_VDI_COPY, vdiState: { newVid: vid, copies: 1, blockSizeShift: 49 } });
    expect(alter.rsp.result).toBe(Res.INVALID_PARMS);
    const rd = await w.send({ opcode: Op.READ_OBJ, dataLength: 4096, obj: { oid: vidToDataOid(odd, 0) } });
    expect(rd.rsp.result).toBe(Res.NO_OBJ);
    const copies = await w.send({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: 1n << 30n, copies: 200 } }, encodeFixedString('copies200', 256));
    expect(copies.rsp.result).toBe(Res.INVALID_PARMS);
    const badName = Buffer.alloc(256, 0x41); // no NUL inside the field
    expect((await w.send({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: 1n << 30n } }, badName)).rsp.result).toBe(Res.INVALID_PARMS);
    const notUtf8 = Buffer.alloc(256);
    Buffer.from([0x66, 0xff, 0xfe, 0x80]).copy(notUtf8);
    expect((await w.send({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: 1n << 30n } }, notUtf8)).rsp.result).toBe(Res.INVALID_PARMS);
    const range = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid, offset: 4 * MB - 10 } }, Buffer.alloc(100));
    expect(range.rsp.result).toBe(Res.INVALID_PARMS);
    expect(log(s)).not.toMatch(/RangeError|TypeError/);
  });

  it('answers every opcode with absurd fields with an error or a closed connection, never a crash', async () => {
    const skip = new Set<number>([Op.SHUTDOWN, Op.KILL_NODE]);
    const results = new Map<number, number[]>();
    for (let opcode = 0; opcode < 256; opcode++) {
      if (skip.has(opcode)) continue;
      const variants: [number, number, Buffer?][] = [
        [0, 0xffffffff],
        [Flag.CMD_WRITE, 2 ** 31 + 1],
        [0xffff, 64, Buffer.alloc(64, 0xff)],
      ];
      for (const [flags, dataLength, payload] of variants) {
        const c = new Raw(s.port);
        await c.ready;
        const hdr = encodeRequest({ opcode, flags, dataLength, id: 1 });
        hdr.fill(0xff, 16); // every field of every variant of the union at its largest
        hdr[0] = opcode >= 0x80 ? 0x0a : 0x02;
        c.sock.write(payload ? Buffer.concat([hdr, payload]) : hdr);
        const r = await c.reply(10_000);
        c.close();
        if (r) {
          expect({ opcode, flags, result: r.h.result }).not.toEqual({ opcode, flags, result: Res.SYSTEM_ERROR });
          expect(r.data.length).toBeLessThanOrEqual(SD_VDI_BITMAP_SIZE);
          results.set(opcode, [...(results.get(opcode) ?? []), r.h.result]);
        }
      }
    }
    // the ones whose fields mean something refuse them
    for (const op of [Op.READ_OBJ, Op.READ_PEER, Op.NEW_VDI, Op.MAKE_FS, Op.NOTIFY_VDI_ADD, Op.ALTER_CLUSTER_COPY, Op.ALTER_VDI_COPY, Op.REPAIR_REPLICA, Op.STAT_CLUSTER, Op.GET_VDI_INFO, Op.DEL_VDI, Op.LOCK_VDI]) {
      for (const res of results.get(op) ?? []) expect({ op, res }).not.toEqual({ op, res: Res.SUCCESS });
    }
    await alive();
    expect(log(s)).not.toMatch(/RangeError|TypeError|crashed/);
    expect(rss(s.proc.pid!) - base).toBeLessThan(BUDGET + SLACK);
  });

  it('serves a valid client within a second while 24 abusive clients run', async () => {
    const abuser = spawn(process.execPath, [path.join(ROOT, 'test/helpers/abuser.mjs'), String(s.port), oid.toString(16), '8'], { stdio: 'ignore' });
    const exited = new Promise((r) => abuser.once('exit', r));
    try {
      await sleep(2500); // let them fill what they can
      const c = new Wire(s.port);
      const slow: number[] = [];
      for (let i = 0; i < 10; i++) {
        const t0 = Date.now();
        const a = await c.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 });
        const b = await c.send({ opcode: Op.READ_OBJ, dataLength: 4096, obj: { oid, offset: 4096 * i } });
        const d = await c.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: 4664 } }, Buffer.from([vid & 0xff, (vid >> 8) & 0xff, vid >> 16, 0]));
        const ms = Date.now() - t0;
        expect([a.rsp.result, b.rsp.result, d.rsp.result]).toEqual([Res.SUCCESS, Res.SUCCESS, Res.SUCCESS]);
        if (ms >= 1000) slow.push(ms);
        await sleep(200);
      }
      c.close();
      expect(slow).toEqual([]);
      expect(rss(s.proc.pid!) - base).toBeLessThan(BUDGET + SLACK);
    } finally {
      abuser.kill('SIGKILL');
      await exited;
    }
    await alive();
  });

  it('closes a connection whose header stops halfway, after the request timeout', async () => {
    const c = new Raw(s.port);
    await c.ready;
    c.sock.write(encodeRequest({ opcode: Op.READ_OBJ, dataLength: 4096, obj: { oid } }).subarray(0, 20));
    const t0 = Date.now();
    expect(await c.waitClosed(8000)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
    expect(log(s)).toMatch(/closing connection from 127\.0\.0\.1: no byte of its request for \d+ ms/);
    // a connection that is merely idle stays open
    const idle = new Raw(s.port);
    await idle.ready;
    await sleep(3000);
    expect(idle.closed).toBe(false);
    idle.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 });
    expect((await idle.reply())?.h.result).toBe(Res.SUCCESS);
    idle.close();
  });
});

describe('restricted opcodes and connection limits', () => {
  let s: SheepProc;
  beforeAll(async () => {
    // members (all on 127.0.0.1 here) and 127.0.0.1 may; 127.0.0.2, a loopback address that is neither, may not
    s = await startSheep({ args: ['--admin-allow', '127.0.0.1/32', '--max-conns-per-addr', '8'] });
  });
  afterAll(async () => {
    await stopAll();
  });

  it("refuses a non-member's peer and admin opcodes, and logs it", async () => {
    const stranger = '127.0.0.2';
    const oid = vidToDataOid(1, 0);
    const asks: [number, number, Buffer?][] = [
      [Op.READ_PEER, 0], [Op.WRITE_PEER, Flag.CMD_WRITE, Buffer.alloc(4096)], [Op.REMOVE_PEER, 0], [Op.GET_OBJ_LIST, 0],
      [Op.SHUTDOWN, 0], [Op.KILL_NODE, 0], [Op.MAKE_FS, Flag.CMD_WRITE, Buffer.from('plain\0')], [Op.FORCE_RECOVER, 0],
      [Op.SET_LOGLEVEL, Flag.CMD_WRITE, Buffer.from([7, 0, 0, 0])], [Op.REPAIR_REPLICA, 0], [Op.NOTIFY_VDI_DEL, Flag.CMD_WRITE, Buffer.from([1, 0, 0, 0])],
    ];
    for (const [opcode, flags, payload] of asks) {
      const r = await once(s.port, { opcode, flags, dataLength: payload?.length ?? 4096, obj: { oid } }, payload, stranger);
      expect({ opcode, result: r?.h.result }).toEqual({ opcode, result: Res.NOT_PERMITTED });
    }
    expect(s.proc.exitCode).toBe(null);
    expect(log(s)).toMatch(/refused READ_PEER from 127\.0\.0\.2: not a cluster member, nor allowed by --admin-allow \(127\.0\.0\.1\/32\)/);
    // public requests from the same address are served
    const nl = await once(s.port, { opcode: Op.GET_NODE_LIST, dataLength: 491520 }, undefined, stranger);
    expect(nl?.h.result).toBe(Res.SUCCESS);
    // and the allowed address may
    const ok = await once(s.port, { opcode: Op.SET_LOGLEVEL, flags: Flag.CMD_WRITE, dataLength: 4 }, Buffer.from([6, 0, 0, 0]), '127.0.0.1');
    expect(ok?.h.result).toBe(Res.SUCCESS);
    const rp = await once(s.port, { opcode: Op.REPAIR_REPLICA, forw: { oid, addr: encodeAddr('127.0.0.1'), port: 1 } }, undefined, '127.0.0.1');
    expect(rp?.h.result).toBe(Res.INVALID_PARMS); // not a member's address: sheep connects to members only
  });

  it('caps connections per address, with a log line', async () => {
    const conns: Raw[] = [];
    for (let i = 0; i < 8; i++) conns.push(new Raw(s.port));
    await Promise.all(conns.map((c) => c.ready));
    await sleep(200);
    const extra = new Raw(s.port);
    expect(await extra.waitClosed(3000)).toBe(true);
    expect(conns.some((c) => c.closed)).toBe(false);
    expect(log(s)).toMatch(/refusing connections from 127\.0\.0\.1: it has 8 open, the most one address may/);
    // another address has its own count
    const other = await once(s.port, { opcode: Op.GET_NODE_LIST, dataLength: 491520 }, undefined, '127.0.0.3');
    expect(other?.h.result).toBe(Res.SUCCESS);
    conns.forEach((c) => c.close());
    await sleep(300);
    const again = await once(s.port, { opcode: Op.GET_NODE_LIST, dataLength: 491520 });
    expect(again?.h.result).toBe(Res.SUCCESS);
  });
});
