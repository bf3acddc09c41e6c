// VdiIO (common/src/vdiio.ts), QEMU's block-I/O logic, over the real wire
// against a real sheep: zeros for holes, create / COW / plain writes, one
// coalesced index update per request, concurrent creates of one object,
// discard, READONLY reload after an external snapshot.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  SheepClient, VdiIO, ClientVdiBackend, VdiBackend, openVdi, Op, Flag, Res, SheepdogError, vidToVdiOid, vidToDataOid,
  oidToHex, encodeFixedString, SD_INODE_HEADER_SIZE,
} from '@sheepdog/common';
import { startFormatted, stopAll, SheepProc } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';

const MB = 1 << 20;
const exists = (f: string) => fsp.access(f).then(() => true, () => false);

/** Records the requests a VdiIO makes, forwarding them to a real backend. */
class Recorder implements VdiBackend {
  log: string[] = [];
  constructor(readonly inner: VdiBackend) {}
  readObj(oid: bigint, off: number, len: number, copies: number) {
    this.log.push(`read ${oidToHex(oid)} ${off} ${len}`);
    return this.inner.readObj(oid, off, len, copies);
  }
  writeObj(oid: bigint, off: number, data: Buffer, copies: number) {
    this.log.push(`write ${oidToHex(oid)} ${off} ${data.length}`);
    return this.inner.writeObj(oid, off, data, copies);
  }
  createObj(oid: bigint, cow: bigint, off: number, data: Buffer, copies: number) {
    this.log.push(`create ${oidToHex(oid)} cow=${cow ? oidToHex(cow) : '0'} ${off} ${data.length}`);
    return this.inner.createObj(oid, cow, off, data, copies);
  }
  writeIndex(vid: number, first: number, entries: Buffer, copies: number) {
    this.log.push(`index ${vid.toString(16)} ${first} ${entries.length / 4}`);
    return this.inner.writeIndex(vid, first, entries, copies);
  }
}

describe('VdiIO over the wire', () => {
  let s: SheepProc;
  let w: Wire;
  let c: SheepClient;
  beforeAll(async () => {
    s = await startFormatted(1);
    w = new Wire(s.port);
    c = new SheepClient({ port: s.port, timeout: 30_000 });
  });
  afterAll(async () => {
    c.close();
    w.close();
    await stopAll();
  });

  /** A 16 MiB VDI base with 8 MiB of random bytes, snapshotted, and a clone of that snapshot. */
  const cloneWithData = async (base: string, clone: string) => {
    expect((await w.newVdi(base, 16n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    const bvid = await w.vid(base);
    const orig = randomBytes(8 * MB);
    await (await VdiIO.open(new ClientVdiBackend(c), bvid)).write(0, orig);
    expect((await w.newVdi(base, 16n * BigInt(MB), { base: bvid, snapshot: true })).rsp.result).toBe(Res.SUCCESS);
    expect((await w.newVdi(clone, 16n * BigInt(MB), { base: bvid })).rsp.result).toBe(Res.SUCCESS);
    return { bvid, cvid: await w.vid(clone), orig };
  };

  it('reads zeros from holes and writes across object boundaries with one index update', async () => {
    expect((await w.newVdi('v1', 64n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    const vid = await w.vid('v1');
    const rec = new Recorder(new ClientVdiBackend(c));
    const io = await VdiIO.open(rec, vid);
    expect(io.size).toBe(64 * MB);
    expect(io.objectSize).toBe(4 * MB);
    expect((await io.read(0, 9 * MB)).equals(Buffer.alloc(9 * MB))).toBe(true);
    rec.log = [];
    // spans objects 0, 1, 2
    const data = randomBytes(6 * MB);
    await io.write(3 * MB, data);
    const creates = rec.log.filter((l) => l.startsWith('create'));
    expect(creates).toHaveLength(3);
    expect(rec.log.filter((l) => l.startsWith('index'))).toEqual([`index ${vid.toString(16)} 0 3`]);
    expect(rec.log[rec.log.length - 1]).toMatch(/^index/);
    expect((await io.read(3 * MB, 6 * MB)).equals(data)).toBe(true);
    // a second client sees the same bytes through the on-disk index
    expect((await w.readVdi(vid, 3 * MB, 6 * MB)).equals(data)).toBe(true);
    const ino = await w.inode(vid);
    expect([ino.dataVdiId[0], ino.dataVdiId[1], ino.dataVdiId[2], ino.dataVdiId[3]]).toEqual([vid, vid, vid, 0]);
    // rewrite: plain WRITE_OBJ, no index update
    rec.log = [];
    await io.write(4 * MB + 100, Buffer.from('hello'));
    expect(rec.log).toEqual([`write ${oidToHex(vidToDataOid(vid, 1))} 100 5`]);
    // out of range
    await expect(io.read(64 * MB - 1, 2)).rejects.toBeInstanceOf(SheepdogError);
  });

  it('serialises concurrent creates of one object and pipelines many requests', async () => {
    expect((await w.newVdi('v2', 32n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    const vid = await w.vid('v2');
    const rec = new Recorder(new ClientVdiBackend(c));
    const io = await VdiIO.open(rec, vid);
    // 64 concurrent 4 KiB writes into two unallocated objects
    const bufs = Array.from({ length: 64 }, (_, i) => Buffer.alloc(4096, i + 1));
    await Promise.all(bufs.map((b, i) => io.write((i % 2) * 4 * MB + Math.floor(i / 2) * 4096, b)));
    expect(rec.log.filter((l) => l.startsWith('create'))).toHaveLength(2);
    expect(rec.log.filter((l) => l.startsWith('index'))).toHaveLength(2);
    const all = await w.readVdi(vid, 0, 8 * MB);
    for (let i = 0; i < 64; i++) {
      const at = (i % 2) * 4 * MB + Math.floor(i / 2) * 4096;
      expect(all.subarray(at, at + 4096).equals(bufs[i])).toBe(true);
    }
    expect(c.inFlight).toBe(0);
  });

  it('copy-on-writes a clone and leaves the snapshot intact', async () => {
    const { bvid, cvid, orig } = await cloneWithData('base', 'clone');
    const rec = new Recorder(new ClientVdiBackend(c));
    const cio = await VdiIO.open(rec, cvid);
    expect((await cio.read(0, 8 * MB)).equals(orig)).toBe(true);
    rec.log = [];
    await cio.write(4 * MB + 10, Buffer.from('COW!'));
    expect(rec.log).toEqual([
      // the entry on disk first: another client may have allocated the object meanwhile
      `read ${oidToHex(vidToVdiOid(cvid))} ${SD_INODE_HEADER_SIZE + 4} 4`,
      `create ${oidToHex(vidToDataOid(cvid, 1))} cow=${oidToHex(vidToDataOid(bvid, 1))} 10 4`,
      `index ${cvid.toString(16)} 1 1`,
    ]);
    const expectClone = Buffer.from(orig);
    Buffer.from('COW!').copy(expectClone, 4 * MB + 10);
    expect((await cio.read(0, 8 * MB)).equals(expectClone)).toBe(true);
    expect((await w.readVdi(cvid, 0, 8 * MB)).equals(expectClone)).toBe(true);
    expect((await w.readVdi(bvid, 0, 8 * MB)).equals(orig)).toBe(true);
  });

  it('a write acknowledged after a failed index update is referenced by the index on disk (chaos seed 4101)', async () => {
    // A clone whose object 1 is the parent's; the index update of the first
    // write into it fails (as when the cluster changes under it).
    const { cvid, orig } = await cloneWithData('cbase', 'cclone');
    const flaky = new Recorder(new ClientVdiBackend(c));
    let failIndex = 1;
    flaky.writeIndex = (vid, first, entries, copies) => {
      flaky.log.push(`index ${vid.toString(16)} ${first} ${entries.length / 4}`);
      if (failIndex-- > 0) return Promise.reject(new SheepdogError(Res.NETWORK_ERROR, 'cut'));
      return flaky.inner.writeIndex(vid, first, entries, copies);
    };
    const cio = await VdiIO.open(flaky, cvid);
    await expect(cio.write(4 * MB + 512, Buffer.alloc(512, 1))).rejects.toThrow(/cut/);
    // the next write to that object allocates it again: acknowledged once the index refers to it
    const mine = Buffer.alloc(512, 2);
    await cio.write(4 * MB + 4096, mine);
    expect(flaky.log.filter((l) => l.startsWith('index')).length).toBe(2);
    const fresh = await VdiIO.open(new ClientVdiBackend(c), cvid);
    expect((await fresh.read(4 * MB + 4096, 512)).equals(mine)).toBe(true);
    expect((await w.readVdi(cvid, 4 * MB + 4096, 512)).equals(mine)).toBe(true);
    // the failed write is seen nowhere: neither by this client nor by a fresh one
    const parentAt = orig.subarray(4 * MB + 512, 4 * MB + 1024);
    expect((await cio.read(4 * MB + 512, 512)).equals(parentAt)).toBe(true);
    expect((await fresh.read(4 * MB + 512, 512)).equals(parentAt)).toBe(true);
    // the rest of the object is still the parent's
    expect((await fresh.read(4 * MB + 8192, 4096)).equals(orig.subarray(4 * MB + 8192, 4 * MB + 12288))).toBe(true);
    // a later write there, with the index in place again, is a plain write
    flaky.log = [];
    await cio.write(4 * MB + 8192, mine);
    expect(flaky.log).toEqual([`write ${oidToHex(vidToDataOid(cvid, 1))} 8192 512`]);
  });

  it('an index update that landed although it failed is kept: the client and a fresh open agree', async () => {
    expect((await w.newVdi('lbase', 16n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    const vid = await w.vid('lbase');
    const flaky = new Recorder(new ClientVdiBackend(c));
    let failIndex = 1;
    flaky.writeIndex = async (v, first, entries, copies) => {
      flaky.log.push(`index ${v.toString(16)} ${first} ${entries.length / 4}`);
      await flaky.inner.writeIndex(v, first, entries, copies);
      if (failIndex-- > 0) throw new SheepdogError(Res.NETWORK_ERROR, 'answer lost');
    };
    const io = await VdiIO.open(flaky, vid);
    const first = Buffer.alloc(512, 7);
    await expect(io.write(2 * 4 * MB, first)).rejects.toThrow(/answer lost/);
    expect((await io.read(2 * 4 * MB, 512)).equals(first)).toBe(true);
    const fresh = await VdiIO.open(new ClientVdiBackend(c), vid);
    expect((await fresh.read(2 * 4 * MB, 512)).equals(first)).toBe(true);
    // the object is the VDI's own now: a plain write
    flaky.log = [];
    await io.write(2 * 4 * MB + 512, first);
    expect(flaky.log).toEqual([`write ${oidToHex(vidToDataOid(vid, 2))} 512 512`]);
  });

  it('a client whose index is out of date does not copy the parent over an object another client allocated (chaos seed 4802)', async () => {
    const { cvid, orig } = await cloneWithData('sbase', 'sclone');
    // two clients (say NBD exports on two gateways), both opened before any write
    const old = await VdiIO.open(new ClientVdiBackend(c), cvid);
    const other = await VdiIO.open(new ClientVdiBackend(c), cvid);
    const first = Buffer.alloc(4096, 0xa1);
    await other.write(4 * MB + 8192, first);
    // the old client still thinks object 1 is the parent's
    const second = Buffer.alloc(4096, 0xb2);
    await old.write(4 * MB + 65536, second);
    const fresh = await VdiIO.open(new ClientVdiBackend(c), cvid);
    expect((await fresh.read(4 * MB + 8192, 4096)).equals(first)).toBe(true);
    expect((await fresh.read(4 * MB + 65536, 4096)).equals(second)).toBe(true);
    expect((await fresh.read(4 * MB, 8192)).equals(orig.subarray(4 * MB, 4 * MB + 8192))).toBe(true);
  });

  it('discards whole objects by zeroing index entries, and the object is reclaimed', async () => {
    expect((await w.newVdi('v3', 16n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    const vid = await w.vid('v3');
    const rec = new Recorder(new ClientVdiBackend(c));
    const io = await VdiIO.open(rec, vid);
    await io.write(0, Buffer.alloc(12 * MB, 7));
    rec.log = [];
    // covers object 1 fully, objects 0 and 2 partially
    await io.discard(1 * MB, 10 * MB);
    expect(rec.log).toEqual([`index ${vid.toString(16)} 1 1`]);
    expect((await io.read(4 * MB, 4 * MB)).equals(Buffer.alloc(4 * MB))).toBe(true);
    expect((await io.read(0, 4 * MB)).equals(Buffer.alloc(4 * MB, 7))).toBe(true);
    expect((await w.inode(vid)).dataVdiId[1]).toBe(0);
    const f = path.join(s.dir, 'obj', oidToHex(vidToDataOid(vid, 1)));
    for (let i = 0; i < 50 && (await exists(f)); i++) await new Promise((r) => setTimeout(r, 50));
    expect(await exists(f)).toBe(false);
    // write-zeroes: whole object unmapped, partial written
    rec.log = [];
    await io.writeZeroes(0, 4 * MB + 4096);
    expect((await io.read(0, 4 * MB + 8192)).subarray(0, 4 * MB + 4096).equals(Buffer.alloc(4 * MB + 4096))).toBe(true);
  });

  it('reloads after an external snapshot (READONLY) and continues as COW on the new working VDI', async () => {
    expect((await w.newVdi('v4', 16n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    const io = await openVdi(c, 'v4');
    const v1 = io.vid;
    await io.write(0, Buffer.alloc(4096, 1));
    // someone else snapshots it (like collie vdi snapshot)
    await w.c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(v1), offset: 256 } }, encodeFixedString('s1', 256));
    const sn = await w.newVdi('v4', 16n * BigInt(MB), { base: v1, snapshot: true });
    expect(sn.rsp.result).toBe(Res.SUCCESS);
    const v2 = sn.rsp.vdi.vdiId;
    await io.write(0, Buffer.alloc(4096, 2));
    expect(io.vid).toBe(v2);
    expect((await w.inode(v2)).dataVdiId[0]).toBe(v2);
    expect((await w.readVdi(v2, 0, 4096)).equals(Buffer.alloc(4096, 2))).toBe(true);
    expect((await w.readVdi(v1, 0, 4096)).equals(Buffer.alloc(4096, 1))).toBe(true);
    // a snapshot opened read-only refuses writes
    const sio = await openVdi(c, 'v4', { tag: 's1' });
    expect(sio.vid).toBe(v1);
    await expect(sio.write(0, Buffer.alloc(512))).rejects.toMatchObject({ result: Res.READONLY });
    expect((await sio.read(0, 4096)).equals(Buffer.alloc(4096, 1))).toBe(true);
  });

  it('after following a snapshot, reads see what other clients wrote before it (chaos seed 4105)', async () => {
    expect((await w.newVdi('v5', 16n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    // a client that read the index at open, and then was idle (a held NBD export)
    const idle = await openVdi(c, 'v5');
    const v1 = idle.vid;
    // the VM moved: another gateway's client wrote object 2
    const other = await openVdi(c, 'v5');
    const moved = randomBytes(4096);
    await other.write(2 * 4 * MB, moved);
    // someone snapshots the VDI
    const sn = await w.newVdi('v5', 16n * BigInt(MB), { base: v1, snapshot: true });
    expect(sn.rsp.result).toBe(Res.SUCCESS);
    // the idle client writes elsewhere (READONLY: it follows to the new working VDI) ...
    await idle.write(0, Buffer.alloc(4096, 5));
    expect(idle.vid).toBe(sn.rsp.vdi.vdiId);
    // ... and reads object 2 as the new working VDI has it, not as zeros
    expect((await idle.read(2 * 4 * MB, 4096)).equals(moved)).toBe(true);
  });

  it('FLUSH_VDI without a cache switches the backend to direct mode', async () => {
    const io = await openVdi(c, 'v1');
    const be = io.backend as ClientVdiBackend;
    expect(be.cacheFlags).toBe(Flag.CMD_CACHE);
    await io.flush();
    expect(be.cacheFlags).toBe(Flag.CMD_DIRECT);
    expect(SD_INODE_HEADER_SIZE).toBe(4664);
  });
});
