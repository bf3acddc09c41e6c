// The daemon through the real wire: every opcode of the foundation issue,
// copy-on-write, reclaim, malformed input and restart.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as net from 'node:net';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import {
  Op, Flag, Res, ClusterFlag, encodeRequest, ResponseHeader, encodeFixedString, timestamp64, vidToVdiOid,
  vidToDataOid, vidToAttrOid, decodeNodes, decodeClusterInfo, decodeEpochLogs, decodeRecoveryState,
  encodeThrottling, decodeThrottling, decodeStat, decodeVdiStates, decodeMdInfo, encodeAttr, decodeAttr, hash24,
  SD_VDI_BITMAP_SIZE, SD_CLUSTER_INFO_SIZE, SD_ATTR_OBJ_SIZE, oidToHex, addrToString, SD_INODE_SIZE,
  dataOidToLedgerOid,
} from '@sheepdog/common';
import { startSheep, stopAll, SheepProc, waitFor } from '../helpers/cluster.js';
import { Wire, nameTag } from '../helpers/wire.js';

const MB = 1 << 20;
const objFile = (s: SheepProc, oid: bigint) => path.join(s.dir, 'obj', oidToHex(oid));
const exists = (f: string) => fsp.access(f).then(() => true, () => false);
const bit = (bm: Buffer, v: number) => (bm[v >> 3] & (1 << (v & 7))) !== 0;

/** Raw socket conversation for malformed-input tests. */
function rawConn(port: number) {
  const sock = net.connect({ host: '127.0.0.1', port });
  let buf = Buffer.alloc(0);
  let closed = false;
  sock.on('data', (b) => (buf = Buffer.concat([buf, b])));
  sock.on('close', () => (closed = true));
  sock.on('error', () => undefined);
  const ready = new Promise<void>((r) => sock.once('connect', () => r()));
  return {
    sock,
    ready,
    async read(n: number, ms = 5000): Promise<Buffer> {
      const end = Date.now() + ms;
      while (buf.length < n) {
        if (Date.now() > end || (closed && buf.length < n)) throw new Error(`wanted ${n} bytes, have ${buf.length}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      const out = buf.subarray(0, n);
      buf = buf.subarray(n);
      return out;
    },
    async waitClosed(ms = 5000): Promise<boolean> {
      const end = Date.now() + ms;
      while (!closed && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      return closed;
    },
  };
}

describe('sheep before format', () => {
  let s: SheepProc;
  let w: Wire;
  beforeAll(async () => {
    s = await startSheep();
    w = new Wire(s.port);
  });
  afterAll(async () => {
    w.close();
    await stopAll();
  });

  it('lists itself and reports the vnode strategy', async () => {
    const nl = await w.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 });
    expect(nl.rsp.result).toBe(Res.SUCCESS);
    expect(nl.rsp.node.nrNodes).toBe(1);
    const nodes = decodeNodes(nl.data);
    expect(nodes).toHaveLength(1);
    expect(addrToString(nodes[0].addr)).toBe('127.0.0.1');
    expect(nodes[0].port).toBe(s.port);
    expect(nodes[0].nrVnodes).toBe(128);
    const ci = await w.send({ opcode: Op.CLUSTER_INFO, dataLength: SD_CLUSTER_INFO_SIZE });
    expect(ci.rsp.dataLength).toBe(SD_CLUSTER_INFO_SIZE);
    const info = decodeClusterInfo(ci.data);
    expect(info.ctime).toBe(0n);
    expect(info.flags & ClusterFlag.AUTO_VNODES).toBeTruthy();
    expect(info.protoVer).toBe(0x0a);
  });

  it('answers STAT_CLUSTER with WAIT_FOR_FORMAT and refuses non-force ops', async () => {
    const st = await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} });
    expect(st.rsp.result).toBe(Res.WAIT_FOR_FORMAT);
    expect(st.rsp.dataLength).toBe(0);
    const nv = await w.newVdi('early', 1n << 20n);
    expect(nv.rsp.result).toBe(Res.WAIT_FOR_FORMAT);
    const rv = await w.send({ opcode: Op.READ_VDIS, dataLength: SD_VDI_BITMAP_SIZE });
    expect(rv.rsp.result).toBe(Res.SUCCESS);
    const cd = await w.send({ opcode: Op.GET_CLUSTER_DEFAULT, protoVer: 1 });
    expect(cd.rsp.result).toBe(Res.SUCCESS);
    expect(cd.rsp.clusterDefault.nrCopies).toBe(0);
  });

  it('rejects an unknown store and lists the stores it has', async () => {
    const r = await w.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 1, ctime: timestamp64() } }, Buffer.from('nosuch\0'));
    expect(r.rsp.result).toBe(Res.NO_STORE);
    const sl = await w.send({ opcode: Op.GET_STORE_LIST, dataLength: 512 });
    expect(sl.data.toString()).toBe('farm tree plain ');
  });
});

describe('sheep formatted', () => {
  let s: SheepProc;
  let w: Wire;
  beforeAll(async () => {
    s = await startSheep();
    w = new Wire(s.port);
    const r = await w.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 1, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES } }, Buffer.from('plain\0'));
    expect(r.rsp.result).toBe(Res.SUCCESS);
  });
  afterAll(async () => {
    w.close();
    await stopAll();
  });

  it('reports epoch 1 in STAT_CLUSTER and cluster defaults', async () => {
    const st = await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48 + 80, cluster: { nodesNr: 1 } });
    expect(st.rsp.result).toBe(Res.SUCCESS);
    expect(st.rsp.epoch).toBe(1);
    const logs = decodeEpochLogs(st.data, 1);
    expect(logs).toHaveLength(1);
    expect(logs[0].epoch).toBe(1);
    expect(logs[0].nodes[0].port).toBe(s.port);
    expect(logs[0].drvName).toBe('plain');
    expect(logs[0].nrCopies).toBe(1);
    const cd = await w.send({ opcode: Op.GET_CLUSTER_DEFAULT, protoVer: 1 });
    expect(cd.rsp.clusterDefault).toEqual({ nrCopies: 1, copyPolicy: 0, blockSizeShift: 22 });
    const small = await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: { nodesNr: 0 } });
    expect(small.rsp.result).toBe(Res.SUCCESS);
    expect(small.rsp.dataLength).toBe(48);
  });

  it('creates, finds and refuses duplicate VDIs', async () => {
    const nv = await w.newVdi('Alice', 1n << 30n);
    expect(nv.rsp.result).toBe(Res.SUCCESS);
    expect(nv.rsp.vdi.vdiId).toBe(0x15d167);
    expect(nv.rsp.vdi.copies).toBe(1);
    expect(nv.rsp.vdi.blockSizeShift).toBe(22);
    expect((await w.newVdi('Alice', 1n << 30n)).rsp.result).toBe(Res.VDI_EXIST);
    const info = await w.info('Alice');
    expect(info.rsp.vdi.vdiId).toBe(0x15d167);
    expect((await w.info('Nobody')).rsp.result).toBe(Res.NO_VDI);
    expect((await w.info('Alice', 0, 'notag')).rsp.result).toBe(Res.NO_TAG);
    // QEMU-style lookups with proto_ver 1 and LOCK/RELEASE
    const lk = await w.send({ protoVer: 1, opcode: Op.LOCK_VDI, flags: Flag.CMD_WRITE, vdi: {} }, nameTag('Alice'));
    expect(lk.rsp.vdi.vdiId).toBe(0x15d167);
    const rel = await w.send({ protoVer: 0, opcode: Op.RELEASE_VDI, flags: Flag.CMD_WRITE, vdi: { baseVdiId: 0x15d167 } }, Buffer.from('Alice\0'));
    expect(rel.rsp.result).toBe(Res.SUCCESS);
    // wrong payload sizes
    expect((await w.send({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: 1n } }, Buffer.alloc(100))).rsp.result).toBe(Res.INVALID_PARMS);
    expect((await w.send({ opcode: Op.GET_VDI_INFO, flags: Flag.CMD_WRITE, vdi: {} }, Buffer.alloc(300))).rsp.result).toBe(Res.INVALID_PARMS);
    const bm = await w.send({ opcode: Op.READ_VDIS, dataLength: SD_VDI_BITMAP_SIZE });
    expect(bit(bm.data, 0x15d167)).toBe(true);
    expect((await w.send({ opcode: Op.READ_VDIS, dataLength: 100 })).rsp.result).toBe(Res.INVALID_PARMS);
  });

  it('writes and reads data, pipelined, with exact reply lengths', async () => {
    const vid = await w.vid('Alice');
    const data = randomBytes(6 * MB);
    await w.writeVdi(vid, 3 * MB, data);
    expect((await w.readVdi(vid, 3 * MB, 6 * MB)).equals(data)).toBe(true);
    // unallocated space reads as zeros through the index
    expect((await w.readVdi(vid, 100 * MB, 4096)).every((b) => b === 0)).toBe(true);
    // many reads in flight on one connection
    const reads = Array.from({ length: 64 }, (_, i) =>
      w.send({ opcode: Op.READ_OBJ, dataLength: 4096, obj: { oid: vidToDataOid(vid, 1), offset: i * 4096 } }));
    const got = await Promise.all(reads);
    got.forEach((r, i) => {
      expect(r.rsp.dataLength).toBe(4096);
      const want = data.subarray(MB + i * 4096, MB + (i + 1) * 4096);
      expect(r.data.equals(want)).toBe(true);
    });
    // write replies carry no data even if data_length is large
    const wr = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, 1), offset: 0 } }, Buffer.from('xyz'));
    expect(wr.rsp.result).toBe(Res.SUCCESS);
    expect(wr.rsp.dataLength).toBe(0);
    // missing object
    const miss = await w.send({ opcode: Op.READ_OBJ, dataLength: 16, obj: { oid: vidToDataOid(vid, 500) } });
    expect(miss.rsp.result).toBe(Res.NO_OBJ);
    expect(miss.rsp.dataLength).toBe(0);
    const wmiss = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, 501) } }, Buffer.from('a'));
    expect(wmiss.rsp.result).toBe(Res.NO_OBJ);
    // FLUSH_VDI tells QEMU there is no cache to flush
    const fl = await w.send({ opcode: Op.FLUSH_VDI, flags: Flag.CMD_CACHE, id: 77, obj: { oid: vidToVdiOid(vid) } });
    expect(fl.rsp.result).toBe(Res.INVALID_PARMS);
    expect(fl.rsp.id).toBe(77);
  });

  it('snapshots copy-on-write and keeps snapshot data read-only', async () => {
    const base = await w.vid('Alice');
    const before = await w.readVdi(base, 0, 8 * MB);
    // tag the working VDI then snapshot it, like dog vdi snapshot -s snap1
    await w.c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(base), offset: 256 } }, encodeFixedString('snap1', 256));
    const sn = await w.newVdi('Alice', 1n << 30n, { base, snapshot: true });
    expect(sn.rsp.result).toBe(Res.SUCCESS);
    const work = sn.rsp.vdi.vdiId;
    expect(work).toBe(0x15d168);
    expect(await w.vid('Alice')).toBe(work);
    expect(await w.vid('Alice', 0, 'snap1')).toBe(base);
    expect(await w.vid('Alice', 1)).toBe(base);
    const wi = await w.inode(work);
    expect(wi.header.parentVdiId).toBe(base);
    expect(wi.header.snapId).toBe(2);
    expect(wi.dataVdiId[1]).toBe(base);
    // the snapshot's data objects are read-only now
    const ro = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(base, 1) } }, Buffer.from('no'));
    expect(ro.rsp.result).toBe(Res.READONLY);
    const ro2 = await w.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(base, 9) } }, Buffer.from('no'));
    expect(ro2.rsp.result).toBe(Res.READONLY);
    // COW write into the working VDI
    await w.writeVdi(work, 0, Buffer.from('CHANGED'));
    expect((await w.readVdi(work, 0, 7)).toString()).toBe('CHANGED');
    const snapNow = await w.readVdi(base, 0, 8 * MB);
    expect(snapNow.equals(before)).toBe(true);
    const workNow = await w.readVdi(work, 0, 8 * MB);
    expect(workNow.subarray(7).equals(before.subarray(7))).toBe(true);
    // a clone of the snapshot shares its data
    const cl = await w.newVdi('Bob', 1n << 30n, { base });
    expect(cl.rsp.result).toBe(Res.SUCCESS);
    const bob = cl.rsp.vdi.vdiId;
    expect((await w.readVdi(bob, 0, 8 * MB)).equals(before)).toBe(true);
    await w.writeVdi(bob, 4 * MB + 10, Buffer.from('bob'));
    expect((await w.readVdi(bob, 4 * MB + 10, 3)).toString()).toBe('bob');
    expect((await w.readVdi(base, 4 * MB + 10, 3)).equals(before.subarray(4 * MB + 10, 4 * MB + 13))).toBe(true);
  });

  it('rolls back: delete working VDI, clone the snapshot under the same name', async () => {
    const base = await w.vid('Alice', 1);
    const work = await w.vid('Alice');
    const del = await w.send({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE, vdi: {} }, nameTag('Alice'));
    expect(del.rsp.result).toBe(Res.SUCCESS);
    expect(del.rsp.vdi.vdiId).toBe(work);
    expect((await w.info('Alice')).rsp.result).toBe(Res.NO_VDI);
    const dv = await w.send({ opcode: Op.READ_DEL_VDIS, dataLength: SD_VDI_BITMAP_SIZE });
    expect(bit(dv.data, work)).toBe(true);
    const rb = await w.newVdi('Alice', 1n << 30n, { base });
    expect(rb.rsp.result).toBe(Res.SUCCESS);
    const nw = rb.rsp.vdi.vdiId;
    const ino = await w.inode(nw);
    expect(ino.header.snapId).toBe(2); // newest snapshot's snap_id + 1
    expect(ino.header.parentVdiId).toBe(base);
    expect((await w.readVdi(nw, 0, 7)).toString()).not.toBe('CHANGED');
    // the working VDI's own COW object is gone; the snapshot's are kept
    expect(await exists(objFile(s, vidToDataOid(work, 0)))).toBe(false);
    expect(await exists(objFile(s, vidToDataOid(base, 0)))).toBe(true);
  });

  it('reclaims objects once no inode references them', async () => {
    const nv = await w.newVdi('Reclaim', 64n * BigInt(MB));
    const v = nv.rsp.vdi.vdiId;
    await w.writeVdi(v, 0, randomBytes(2 * MB));
    // snapshot then delete the snapshot with dog's index wipe
    const sn = await w.newVdi('Reclaim', 64n * BigInt(MB), { base: v, snapshot: true });
    const work = sn.rsp.vdi.vdiId;
    await w.c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(v), offset: 4664 } }, Buffer.alloc(4));
    expect((await w.send({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE, vdi: { snapid: 1 } }, nameTag('Reclaim'))).rsp.result).toBe(Res.SUCCESS);
    await new Promise((r) => setTimeout(r, 200));
    // still referenced by the working VDI
    expect(await exists(objFile(s, vidToDataOid(v, 0)))).toBe(true);
    expect((await w.readVdi(work, 0, 16)).length).toBe(16);
    // overwrite in the working VDI (COW) drops the last reference
    await w.writeVdi(work, 0, Buffer.from('x'));
    const gone = (f: string) => waitFor(async () => !(await exists(f)), 10_000, `${f} removed`);
    await gone(objFile(s, vidToDataOid(v, 0)));
    await gone(objFile(s, dataOidToLedgerOid(vidToDataOid(v, 0))));
    // deleting the working VDI with its index still full also frees its objects (in the background)
    expect((await w.send({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE, vdi: {} }, nameTag('Reclaim'))).rsp.result).toBe(Res.SUCCESS);
    await gone(objFile(s, vidToDataOid(work, 0)));
    expect(await exists(objFile(s, vidToDataOid(v, 0)))).toBe(false);
  });

  it('handles VDI attributes (create, lookup, exclusive, delete)', async () => {
    const rec = (key: string, value: string) => encodeAttr({ name: 'Bob', tag: '', ctime: 0n, snapId: 0, key, value: Buffer.from(value) });
    const flagsW = Flag.CMD_WRITE;
    const set = await w.send({ opcode: Op.GET_VDI_ATTR, flags: flagsW | Flag.CMD_CREAT, vdi: {} }, rec('mykey', 'myvalue'));
    expect(set.rsp.result).toBe(Res.SUCCESS);
    expect(set.rsp.vdi.vdiId).toBe(hash24('Bob'));
    const get = await w.send({ opcode: Op.GET_VDI_ATTR, flags: flagsW, vdi: {} }, rec('mykey', ''));
    expect(get.rsp.result).toBe(Res.SUCCESS);
    const obj = await w.c.request({ opcode: Op.READ_OBJ, dataLength: SD_ATTR_OBJ_SIZE, obj: { oid: vidToAttrOid(get.rsp.vdi.vdiId, get.rsp.vdi.attrId) } });
    expect(decodeAttr(obj.data).value.toString()).toBe('myvalue');
    const excl = await w.send({ opcode: Op.GET_VDI_ATTR, flags: flagsW | Flag.CMD_CREAT | Flag.CMD_EXCL, vdi: {} }, rec('mykey', 'x'));
    expect(excl.rsp.result).toBe(Res.VDI_EXIST);
    expect((await w.send({ opcode: Op.GET_VDI_ATTR, flags: flagsW, vdi: {} }, rec('nokey', ''))).rsp.result).toBe(Res.NO_OBJ);
    expect((await w.send({ opcode: Op.GET_VDI_ATTR, flags: flagsW | Flag.CMD_DEL, vdi: {} }, rec('mykey', ''))).rsp.result).toBe(Res.SUCCESS);
    expect((await w.send({ opcode: Op.GET_VDI_ATTR, flags: flagsW, vdi: {} }, rec('mykey', ''))).rsp.result).not.toBe(Res.SUCCESS);
    expect((await w.send({ opcode: Op.GET_VDI_ATTR, flags: flagsW, vdi: {} }, Buffer.alloc(10))).rsp.result).toBe(Res.INVALID_PARMS);
  });

  it('answers node-local admin ops', async () => {
    const ss = await w.send({ opcode: Op.STAT_SHEEP });
    expect(ss.rsp.node.storeSize > 0n).toBe(true);
    expect(ss.rsp.node.storeFree <= ss.rsp.node.storeSize).toBe(true);
    const sr = await w.send({ opcode: Op.STAT_RECOVERY, dataLength: 24 });
    expect(decodeRecoveryState(sr.data).inRecovery).toBe(false);
    const t = { maxExecCount: 1, queueWorkInterval: 100n, throttling: true };
    expect((await w.send({ opcode: Op.SET_RECOVERY, flags: Flag.CMD_WRITE }, encodeThrottling(t))).rsp.result).toBe(Res.SUCCESS);
    expect(decodeThrottling((await w.send({ opcode: Op.GET_RECOVERY, dataLength: 24 })).data)).toEqual(t);
    const lvl = Buffer.alloc(4);
    lvl.writeInt32LE(7);
    expect((await w.send({ opcode: Op.SET_LOGLEVEL, flags: Flag.CMD_WRITE }, lvl)).rsp.result).toBe(Res.SUCCESS);
    expect((await w.send({ opcode: Op.GET_LOGLEVEL, dataLength: 4 })).data.readInt32LE(0)).toBe(7);
    lvl.writeInt32LE(9);
    expect((await w.send({ opcode: Op.SET_LOGLEVEL, flags: Flag.CMD_WRITE }, lvl)).rsp.result).toBe(Res.INVALID_PARMS);
    const st = decodeStat((await w.send({ opcode: Op.STAT, dataLength: 120 })).data);
    expect(st.gwWrite > 0n).toBe(true);
    const md = decodeMdInfo((await w.send({ opcode: Op.MD_INFO, dataLength: 263688 })).data);
    expect(md).toHaveLength(1);
    expect(md[0].path).toBe(path.join(s.dir, 'obj'));
    expect((await w.send({ opcode: Op.MD_PLUG, flags: Flag.CMD_WRITE }, Buffer.from('/tmp\0'))).rsp.result).toBe(Res.NO_SUPPORT);
    const vc = await w.send({ opcode: Op.GET_VDI_COPIES, dataLength: 731136 });
    const states = decodeVdiStates(vc.data);
    expect(states.find((x) => x.vid === 0x15d167)?.snapshot).toBe(true);
    expect((await w.send({ opcode: Op.GET_VDI_COPIES, dataLength: 10 })).rsp.result).toBe(Res.BUFFER_SMALL);
    const vn = Buffer.alloc(8);
    vn.writeInt32LE(64);
    expect((await w.send({ opcode: Op.SET_VNODES, flags: Flag.CMD_WRITE }, vn)).rsp.result).toBe(Res.INVALID_VNODES_STRATEGY);
    expect((await w.send({ opcode: Op.GET_VNODES, dataLength: 4 })).data.readInt32LE(0)).toBe(128);
    expect((await w.send({ opcode: Op.FORCE_RECOVER, dataLength: 491520 })).rsp.result).toBe(Res.FORCE_RECOVER);
    expect((await w.send({ opcode: Op.FLUSH_DEL_CACHE })).rsp.result).toBe(Res.SUCCESS);
    expect((await w.send({ opcode: Op.TRACE_STATUS, dataLength: 100 })).rsp.result).toBe(Res.NO_SUPPORT);
  });

  it('answers object queries used by dog vdi check and object location', async () => {
    const vid = await w.vid('Bob');
    const ino = await w.inode(vid);
    const oid = vidToDataOid(ino.dataVdiId[1], 1);
    const ex = await w.send({ opcode: Op.EXIST, epoch: 1, obj: { oid } });
    expect(ex.rsp.result).toBe(Res.SUCCESS);
    expect((await w.send({ opcode: Op.EXIST, obj: { oid: vidToDataOid(vid, 999) } })).rsp.result).toBe(Res.NO_OBJ);
    const h = await w.send({ opcode: Op.GET_HASH, obj: { oid, tgtEpoch: 1 } });
    // the hash covers the object's bytes, not the block checksums after them
    const body = (await fsp.readFile(objFile(s, oid))).subarray(0, 4 * MB);
    expect(h.rsp.hash.equals(createHash('sha1').update(body).digest())).toBe(true);
    const ids = Buffer.alloc(16);
    ids.writeBigUInt64LE(oid, 0);
    ids.writeBigUInt64LE(vidToDataOid(vid, 999), 8);
    const oe = await w.send({ opcode: Op.OIDS_EXIST, flags: Flag.CMD_WRITE | Flag.CMD_PIGGYBACK }, ids);
    expect(oe.rsp.result).toBe(Res.NO_OBJ);
    expect(oe.rsp.dataLength).toBe(8);
    expect(oe.data.readBigUInt64LE(0)).toBe(vidToDataOid(vid, 999));
    const ol = await w.send({ opcode: Op.GET_OBJ_LIST, dataLength: 1 << 20 });
    const oids = Array.from({ length: ol.data.length / 8 }, (_, i) => ol.data.readBigUInt64LE(i * 8));
    expect(oids).toContain(oid);
    const ge = await w.send({ opcode: Op.GET_EPOCH, dataLength: 1024, obj: { tgtEpoch: 1 } });
    expect(decodeNodes(ge.data, 1)[0].port).toBe(s.port);
    // peer ops, epoch checked
    const rp = await w.send({ opcode: Op.READ_PEER, epoch: 1, dataLength: 8, obj: { oid } });
    expect(rp.data.equals(body.subarray(0, 8))).toBe(true);
    expect((await w.send({ opcode: Op.READ_PEER, epoch: 0, dataLength: 8, obj: { oid } })).rsp.result).toBe(Res.OLD_NODE_VER);
    const tmpOid = vidToDataOid(vid, 1000);
    expect((await w.send({ opcode: Op.CREATE_AND_WRITE_PEER, epoch: 1, flags: Flag.CMD_WRITE, obj: { oid: tmpOid } }, Buffer.from('peer'))).rsp.result).toBe(Res.SUCCESS);
    expect((await w.send({ opcode: Op.WRITE_PEER, epoch: 1, flags: Flag.CMD_WRITE, obj: { oid: tmpOid, offset: 4 } }, Buffer.from('!'))).rsp.result).toBe(Res.SUCCESS);
    expect((await fsp.readFile(objFile(s, tmpOid))).subarray(0, 5).toString()).toBe('peer!');
    expect((await w.send({ opcode: Op.REMOVE_PEER, epoch: 1, obj: { oid: tmpOid } })).rsp.result).toBe(Res.SUCCESS);
    expect(await exists(objFile(s, tmpOid))).toBe(false);
    // gateway remove and the old-QEMU discard
    await w.c.request({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: tmpOid } }, Buffer.from('gone'));
    expect((await w.send({ opcode: Op.REMOVE_OBJ, obj: { oid: tmpOid } })).rsp.result).toBe(Res.SUCCESS);
    expect(await exists(objFile(s, tmpOid))).toBe(false);
    await w.writeVdi(vid, 20 * MB, Buffer.from('discard me'));
    const dOid = vidToDataOid(vid, 5);
    expect(await exists(objFile(s, dOid))).toBe(true);
    expect((await w.send({ opcode: Op.DISCARD_OBJ, flags: Flag.CMD_CACHE, dataLength: 4 * MB, obj: { oid: dOid } })).rsp.result).toBe(Res.SUCCESS);
    expect((await w.inode(vid)).dataVdiId[5]).toBe(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(await exists(objFile(s, dOid))).toBe(false);
    // REPAIR_REPLICA from ourselves rewrites the object
    const fw = Buffer.alloc(16);
    fw[12] = 127; fw[15] = 1;
    expect((await w.send({ opcode: Op.REPAIR_REPLICA, epoch: 1, forw: { oid, addr: fw, port: s.port } })).rsp.result).toBe(Res.SUCCESS);
    expect((await fsp.readFile(objFile(s, oid))).subarray(0, 4 * MB).equals(body)).toBe(true);
  });

  it('changes copies and registers VDIs cluster-wide', async () => {
    const cc = await w.send({ opcode: Op.ALTER_CLUSTER_COPY, cluster: { copies: 2 } });
    expect(cc.rsp.result).toBe(Res.SUCCESS);
    expect((await w.send({ opcode: Op.GET_CLUSTER_DEFAULT })).rsp.clusterDefault.nrCopies).toBe(2);
    expect((await w.send({ opcode: Op.ALTER_CLUSTER_COPY, cluster: { copies: 2, copyPolicy: 0x11 } })).rsp.result).toBe(Res.INVALID_PARMS);
    const bob = await w.vid('Bob');
    expect((await w.send({ opcode: Op.ALTER_VDI_COPY, vdiState: { newVid: bob, copies: 1 } })).rsp.result).toBe(Res.SUCCESS);
    const states = decodeVdiStates((await w.send({ opcode: Op.GET_VDI_COPIES, dataLength: 731136 })).data);
    expect(states.find((x) => x.vid === bob)?.nrCopies).toBe(1);
    expect((await w.send({ opcode: Op.NOTIFY_VDI_ADD, vdiState: { newVid: 0x123456, copies: 1, setBitmap: 1 } })).rsp.result).toBe(Res.SUCCESS);
    const bm = await w.send({ opcode: Op.READ_VDIS, dataLength: SD_VDI_BITMAP_SIZE });
    expect(bit(bm.data, 0x123456)).toBe(true);
    const del = Buffer.alloc(4);
    del.writeUInt32LE(0x123456);
    expect((await w.send({ opcode: Op.NOTIFY_VDI_DEL, flags: Flag.CMD_WRITE }, del)).rsp.result).toBe(Res.SUCCESS);
    const dbm = await w.send({ opcode: Op.READ_DEL_VDIS, dataLength: SD_VDI_BITMAP_SIZE });
    expect(bit(dbm.data, 0x123456)).toBe(true);
    expect((await w.send({ opcode: Op.DISABLE_RECOVER })).rsp.result).toBe(Res.SUCCESS);
    let st = await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} });
    expect(st.data[24]).toBe(1);
    expect((await w.send({ opcode: Op.ENABLE_RECOVER })).rsp.result).toBe(Res.SUCCESS);
    st = await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} });
    expect(st.data[24]).toBe(0);
    expect((await w.send({ opcode: Op.ALTER_CLUSTER_COPY, cluster: { copies: 1 } })).rsp.result).toBe(Res.SUCCESS);
    for (const op of [Op.REWEIGHT, Op.CLEANUP, Op.COMPLETE_RECOVERY, Op.DELETE_CACHE]) {
      expect((await w.send({ opcode: op })).rsp.result).toBe(Res.SUCCESS);
    }
  });

  it('survives malformed requests and keeps serving others', async () => {
    // unknown opcode, wrong versions
    expect((await w.send({ opcode: 0x7e })).rsp.result).toBe(Res.INVALID_PARMS);
    expect((await w.send({ protoVer: 0x02, opcode: Op.GET_NODE_LIST, dataLength: 80 })).rsp.result).toBe(Res.VER_MISMATCH);
    expect((await w.send({ protoVer: 0x05, opcode: Op.READ_VDIS, dataLength: SD_VDI_BITMAP_SIZE })).rsp.result).toBe(Res.VER_MISMATCH);
    // unknown opcode with a payload: the payload is consumed, the stream stays in sync
    const r1 = await w.send({ opcode: 0x33, flags: Flag.CMD_WRITE, id: 5 }, Buffer.alloc(1000, 7));
    expect(r1.rsp.result).toBe(Res.INVALID_PARMS);
    expect((await w.info('Bob')).rsp.result).toBe(Res.SUCCESS);

    // truncated header, then close
    const t = rawConn(s.port);
    await t.ready;
    t.sock.end(Buffer.alloc(20, 1));
    await t.waitClosed();

    // 4 GiB data_length with the WRITE flag: error result and a closed connection
    const big = rawConn(s.port);
    await big.ready;
    const hdr = encodeRequest({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, id: 9, obj: { oid: 1n } });
    hdr.writeUInt32LE(0xffffffff, 12);
    big.sock.write(hdr);
    const rsp = new ResponseHeader(await big.read(48));
    expect(rsp.result).toBe(Res.INVALID_PARMS);
    expect(rsp.id).toBe(9);
    expect(await big.waitClosed()).toBe(true);

    // a read-type request asking for 4 GiB gets an error, not 4 GiB
    const rd = rawConn(s.port);
    await rd.ready;
    const rh = encodeRequest({ opcode: Op.READ_OBJ, id: 3, obj: { oid: vidToDataOid(0x15d167, 1) } });
    rh.writeUInt32LE(0xffffffff, 12);
    rd.sock.write(rh);
    const rr = new ResponseHeader(await rd.read(48));
    expect(rr.result).not.toBe(Res.SUCCESS);
    expect(rr.dataLength).toBe(0);
    rd.sock.destroy();

    // garbage bytes
    const g = rawConn(s.port);
    await g.ready;
    g.sock.write(randomBytes(48 * 3));
    await new Promise((r) => setTimeout(r, 200));
    g.sock.destroy();

    // the daemon still serves
    expect((await w.info('Bob')).rsp.result).toBe(Res.SUCCESS);
    const again = new Wire(s.port);
    expect((await again.info('Bob')).rsp.result).toBe(Res.SUCCESS);
    again.close();
  });

  it('restarts on the same directory with everything intact', async () => {
    const bob = await w.vid('Bob');
    const data = await w.readVdi(bob, 0, 8 * MB);
    w.close();
    await s.stop();
    s = await startSheep({ dir: s.dir, port: s.port });
    w = new Wire(s.port);
    const st = await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} });
    expect(st.rsp.result).toBe(Res.SUCCESS);
    expect(st.rsp.epoch).toBe(1);
    expect(await w.vid('Bob')).toBe(bob);
    expect((await w.readVdi(bob, 0, 8 * MB)).equals(data)).toBe(true);
    expect(await w.vid('Alice', 0, 'snap1')).toBe(0x15d167);
    const ro = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(0x15d167, 1) } }, Buffer.from('no'));
    expect(ro.rsp.result).toBe(Res.READONLY);
    const dv = await w.send({ opcode: Op.READ_DEL_VDIS, dataLength: SD_VDI_BITMAP_SIZE });
    expect(bit(dv.data, 0x15d168)).toBe(true);
    expect(SD_INODE_SIZE).toBe(12587576);
  });

  it('shuts down on SHUTDOWN and on KILL_NODE', async () => {
    const r = await w.send({ opcode: Op.SHUTDOWN });
    expect(r.rsp.result).toBe(Res.SUCCESS);
    expect(await s.exited).toBe(0);
    w.close();
    const k = await startSheep({ dir: s.dir, port: s.port });
    const kw = new Wire(k.port);
    expect((await kw.send({ opcode: Op.KILL_NODE })).rsp.result).toBe(Res.SUCCESS);
    expect(await k.exited).toBe(0);
    kw.close();
  });
});
