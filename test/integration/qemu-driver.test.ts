// The sheepdog protocol as QEMU's driver uses it (spec §13), driven through
// the real wire by test/helpers/qemu-driver.ts against a real sheep.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Op, Flag, Res, vidToDataOid, vidToVdiOid, oidToHex, encodeFixedString, SD_INODE_QEMU_SIZE } from '@sheepdog/common';
import { startFormatted, stopAll, SheepProc } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { QemuDriver, oneShot } from '../helpers/qemu-driver.js';

const MB = 1 << 20;
const exists = (f: string) => fsp.access(f).then(() => true, () => false);

describe('QEMU sheepdog driver sequences (§13)', () => {
  let s: SheepProc;
  let w: Wire;
  let t: { port: number };
  const objFile = (oid: bigint) => path.join(s.dir, 'obj', oidToHex(oid));
  const gone = async (oid: bigint) => {
    for (let i = 0; i < 60 && (await exists(objFile(oid))); i++) await new Promise((r) => setTimeout(r, 50));
    return !(await exists(objFile(oid)));
  };

  beforeAll(async () => {
    s = await startFormatted(1);
    w = new Wire(s.port);
    t = { port: s.port };
  });
  afterAll(async () => {
    w.close();
    await stopAll();
  });

  it('creates with options, opens (LOCK_VDI v1 + 4,198,968-byte inode), does pipelined I/O, closes', async () => {
    const vid = await QemuDriver.create(t, 'alice', 10 * MB + 100, { redundancy: 1, objectSize: 1 * MB });
    const d = await QemuDriver.open(t, 'alice');
    expect(d.sent[0]).toMatchObject({ conn: 'new', opcode: Op.LOCK_VDI, protoVer: 1, dataLength: 512, result: Res.SUCCESS });
    expect(d.sent[1]).toMatchObject({ conn: 'new', opcode: Op.READ_OBJ, dataLength: SD_INODE_QEMU_SIZE, oid: vidToVdiOid(vid), result: Res.SUCCESS });
    expect(d.header.vdiId).toBe(vid);
    expect(d.header.vdiSize).toBe(BigInt(10 * MB + 512)); // rounded up to 512
    expect(d.header.blockSizeShift).toBe(20);
    expect(d.header.nrCopies).toBe(1);
    // 40 concurrent writes across objects, then read back
    const bufs = Array.from({ length: 40 }, () => randomBytes(64 * 1024));
    await Promise.all(bufs.map((b, i) => d.write(i * 256 * 1024 + 1000, b)));
    const io = d.sent.filter((x) => x.conn === 'io');
    expect(io.map((x) => x.id).sort((a, b) => a - b)).toEqual(io.map((_, i) => i)); // ids 0,1,2,...
    expect(io.filter((x) => x.opcode === Op.CREATE_AND_WRITE_OBJ)).toHaveLength(10);
    expect(io.every((x) => x.flags & Flag.CMD_CACHE)).toBe(true);
    for (let i = 0; i < 40; i++) expect((await d.read(i * 256 * 1024 + 1000, 64 * 1024)).equals(bufs[i])).toBe(true);
    expect((await w.readVdi(vid, 1000, 64 * 1024)).equals(bufs[0])).toBe(true);
    await d.close();
    const rel = d.sent[d.sent.length - 1];
    expect(rel).toMatchObject({ opcode: Op.RELEASE_VDI, dataLength: 'alice'.length + 1, result: Res.SUCCESS });
    await expect(QemuDriver.open(t, 'nobody')).rejects.toMatchObject({ result: Res.NO_VDI });
  });

  it('flush gets INVALID_PARMS without a cache and switches to direct mode; cache=none sends no flush', async () => {
    const d = await QemuDriver.open(t, 'alice');
    await d.write(0, Buffer.from('x'.repeat(512)));
    await d.flush();
    const fl = d.sent.filter((x) => x.opcode === Op.FLUSH_VDI);
    expect(fl).toHaveLength(1);
    expect(fl[0]).toMatchObject({ conn: 'io', flags: Flag.CMD_CACHE, result: Res.INVALID_PARMS });
    expect(d.cacheFlags).toBe(Flag.CMD_DIRECT);
    await d.write(512, Buffer.alloc(512, 1));
    await d.flush();
    expect(d.sent.filter((x) => x.opcode === Op.FLUSH_VDI)).toHaveLength(1);
    expect(d.sent[d.sent.length - 1].flags & Flag.CMD_DIRECT).toBeTruthy();
    await d.close();
    const n = await QemuDriver.open(t, 'alice', { cache: 'none' });
    await n.flush();
    expect(n.sent.filter((x) => x.opcode === Op.FLUSH_VDI)).toHaveLength(0);
    await n.close();
  });

  it('discards whole objects with 4-byte zero index writes and the server frees them', async () => {
    const vid = await QemuDriver.create(t, 'disc', 16 * MB);
    const d = await QemuDriver.open(t, 'disc');
    await d.write(0, Buffer.alloc(12 * MB, 3));
    expect(await exists(objFile(vidToDataOid(vid, 1)))).toBe(true);
    const before = d.sent.length;
    await d.discard(2 * MB, 8 * MB); // whole object 1 only
    const dis = d.sent.slice(before);
    expect(dis).toHaveLength(1);
    expect(dis[0]).toMatchObject({ conn: 'io', opcode: Op.WRITE_OBJ, oid: vidToVdiOid(vid), offset: 4664 + 4, dataLength: 4 });
    expect((await w.inode(vid)).dataVdiId[1]).toBe(0);
    expect(await gone(vidToDataOid(vid, 1))).toBe(true);
    expect((await d.read(4 * MB, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    expect((await d.read(0, 4096)).equals(Buffer.alloc(4096, 3))).toBe(true);
    await d.close();
  });

  it('resizes with a 4664-byte header write (also implicitly on a write past the end)', async () => {
    const vid = await QemuDriver.create(t, 'grow', 4 * MB);
    const d = await QemuDriver.open(t, 'grow');
    await d.resize(8 * MB);
    const hw = d.sent[d.sent.length - 1];
    expect(hw).toMatchObject({ conn: 'new', opcode: Op.WRITE_OBJ, offset: 0, dataLength: 4664, oid: vidToVdiOid(vid), result: Res.SUCCESS });
    expect((await w.inode(vid)).header.vdiSize).toBe(BigInt(8 * MB));
    await d.write(10 * MB, Buffer.from('tail'));
    expect((await w.inode(vid)).header.vdiSize).toBe(BigInt(10 * MB + 4));
    expect((await w.readVdi(vid, 10 * MB, 4)).toString()).toBe('tail');
    await d.close();
  });

  it('reloads after an external snapshot (READONLY) and retries as COW on the new working VDI', async () => {
    const v1 = await QemuDriver.create(t, 'ext', 8 * MB);
    const d = await QemuDriver.open(t, 'ext');
    await d.write(0, Buffer.alloc(8192, 1));
    // dog vdi snapshot -s s1 ext, behind QEMU's back
    await w.c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(v1), offset: 256 } }, encodeFixedString('s1', 256));
    const v2 = (await w.newVdi('ext', BigInt(8 * MB), { base: v1, snapshot: true })).rsp.vdi.vdiId;
    const before = d.sent.length;
    await d.write(4096, Buffer.alloc(4096, 2));
    const seq = d.sent.slice(before).map((x) => [x.conn, x.opcode, x.result]);
    expect(seq).toEqual([
      ['io', Op.WRITE_OBJ, Res.READONLY],
      ['new', Op.GET_VDI_INFO, Res.SUCCESS],
      ['new', Op.READ_OBJ, Res.SUCCESS],
      ['io', Op.CREATE_AND_WRITE_OBJ, Res.SUCCESS],
      ['io', Op.WRITE_OBJ, Res.SUCCESS],
    ]);
    expect(d.header.vdiId).toBe(v2);
    const cow = d.sent[d.sent.length - 2];
    expect(cow.oid).toBe(vidToDataOid(v2, 0));
    expect((await w.readVdi(v2, 0, 8192)).equals(Buffer.concat([Buffer.alloc(4096, 1), Buffer.alloc(4096, 2)]))).toBe(true);
    expect((await w.readVdi(v1, 0, 8192)).equals(Buffer.alloc(8192, 1))).toBe(true);
    await d.close();
  });

  it('clones from a backing snapshot (sheepdog:base:1) and refuses a non-snapshot base', async () => {
    await QemuDriver.create(t, 'gold', 8 * MB);
    const g = await QemuDriver.open(t, 'gold');
    await g.write(0, Buffer.alloc(8 * MB, 0x47));
    const snapId = await g.snapshotCreate('v1');
    expect(snapId).toBe(1);
    await g.close();
    const cvid = await QemuDriver.create(t, 'charlie', 8 * MB, { backingFile: { name: 'gold', snapid: 1 } });
    const c = await QemuDriver.open(t, 'charlie');
    expect(c.header.parentVdiId).toBe(await w.vid('gold', 1));
    expect((await c.read(0, 8 * MB)).equals(Buffer.alloc(8 * MB, 0x47))).toBe(true);
    await c.write(100, Buffer.from('mine'));
    expect((await w.inode(cvid)).dataVdiId[0]).toBe(cvid);
    expect((await w.readVdi(await w.vid('gold', 1), 100, 4)).equals(Buffer.alloc(4, 0x47))).toBe(true);
    await c.close();
    await expect(QemuDriver.create(t, 'bad', 8 * MB, { backingFile: { name: 'gold' } })).rejects.toThrow(/non snapshot/);
    // by tag too, and preallocation=full fills every object
    const pvid = await QemuDriver.create(t, 'prealloc', 3 * MB, { backingFile: { name: 'gold', tag: 'v1' }, preallocation: 'full', objectSize: MB });
    const pi = await w.inode(pvid);
    expect([pi.dataVdiId[0], pi.dataVdiId[1], pi.dataVdiId[2]]).toEqual([pvid, pvid, pvid]);
  });

  it('snapshot create / list / goto (loadvm with data) / delete, with vmstate save and load', async () => {
    await QemuDriver.create(t, 'vm', 8 * MB);
    const d = await QemuDriver.open(t, 'vm');
    await d.write(0, Buffer.alloc(4 * MB, 0xa1));
    const state = randomBytes(5 * MB + 123); // spans two vmstate objects
    const v1 = d.header.vdiId;
    await d.saveVmstate(state, 0);
    const id1 = await d.snapshotCreate('first', { stateSize: BigInt(state.length), clockNsec: 42n });
    expect(id1).toBe(1);
    expect(d.header.vdiId).not.toBe(v1);
    expect(d.header.parentVdiId).toBe(v1);
    await d.write(0, Buffer.alloc(4 * MB, 0xb2));
    await d.write(4 * MB, Buffer.alloc(4096, 0xb3));
    const id2 = await d.snapshotCreate('second');
    expect(id2).toBe(2);
    const list = await d.snapshotList();
    expect(list.map((x) => [x.id, x.name])).toEqual([[1, 'first'], [2, 'second']]);
    expect(list[0].vmStateSize).toBe(BigInt(state.length));
    expect(list[0].vmClockNsec).toBe(42n);
    await d.write(0, Buffer.alloc(4096, 0xc4)); // working VDI has its own data now
    // loadvm first: DEL_VDI of the non-empty working VDI must really delete it,
    // so QEMU takes the clone path (§13.9)
    const work = d.header.vdiId;
    await d.snapshotGoto('first');
    expect(d.lastBranchDeleted).toBe(true);
    const delReq = d.sent.filter((x) => x.opcode === Op.DEL_VDI).pop()!;
    expect(delReq.result).toBe(Res.SUCCESS);
    const newVdi = d.sent.filter((x) => x.opcode === Op.NEW_VDI).pop()!;
    expect(newVdi.result).toBe(Res.SUCCESS);
    expect(d.header.parentVdiId).toBe(v1);
    expect(d.isSnapshot).toBe(false);
    expect((await d.read(0, 4 * MB)).equals(Buffer.alloc(4 * MB, 0xa1))).toBe(true);
    expect((await d.read(4 * MB, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    expect((await d.loadVmstate(state.length, 0)).equals(state)).toBe(true);
    // the old working VDI is gone and its own objects reclaimed
    expect((await w.info('vm')).rsp.vdi.vdiId).toBe(d.header.vdiId);
    expect((await w.inode(work)).header.name).toBe('');
    expect(await gone(vidToDataOid(work, 0))).toBe(true);
    // a write after goto is an ordinary COW write
    await d.write(0, Buffer.alloc(512, 0xd5));
    expect((await w.readVdi(v1, 0, 512)).equals(Buffer.alloc(512, 0xa1))).toBe(true);
    // delete snapshot 2 by id: the snapshot disappears and its own objects go
    const s2 = list[1].vid;
    await d.snapshotDelete('2');
    expect((await d.snapshotList()).map((x) => x.id)).toEqual([1]);
    expect((await w.info('vm', 2)).rsp.result).not.toBe(Res.SUCCESS);
    expect((await w.inode(s2)).header.name).toBe('');
    expect(await gone(vidToDataOid(s2, 1))).toBe(true); // 0xb3 object owned only by snapshot 2
    // ...and (as the driver does) the opened VDI's index was wiped first
    expect((await w.inode(d.header.vdiId)).dataVdiId[0]).toBe(0);
    // snapshot 1 survives intact
    expect((await w.readVdi(v1, 0, 4 * MB)).equals(Buffer.alloc(4 * MB, 0xa1))).toBe(true);
    await expect(d.snapshotDelete('abc')).rejects.toThrow(/invalid snapshot id/);
    await d.close();
  });

  it('writing to an image opened as a snapshot branches off it', async () => {
    await QemuDriver.create(t, 'br', 4 * MB);
    const a = await QemuDriver.open(t, 'br');
    await a.write(0, Buffer.alloc(4096, 1));
    await a.snapshotCreate('base');
    await a.write(0, Buffer.alloc(4096, 2));
    await a.close();
    const s = await QemuDriver.open(t, 'br', { tag: 'base' });
    expect(s.isSnapshot).toBe(true);
    expect((await s.read(0, 4096)).equals(Buffer.alloc(4096, 1))).toBe(true);
    await s.write(4096, Buffer.alloc(4096, 3));
    expect(s.isSnapshot).toBe(false);
    const wv = await w.vid('br');
    expect(wv).toBe(s.header.vdiId);
    expect((await w.readVdi(wv, 0, 8192)).equals(Buffer.concat([Buffer.alloc(4096, 1), Buffer.alloc(4096, 3)]))).toBe(true);
    await s.close();
    // GET_CLUSTER_DEFAULT as QEMU asks it
    const cd = await oneShot(t, { opcode: Op.GET_CLUSTER_DEFAULT, protoVer: 1 });
    expect(cd.rsp.result).toBe(Res.SUCCESS);
    expect(cd.rsp.clusterDefault.blockSizeShift).toBe(22);
  });
});
