// Erasure-coded VDIs on real sheep (erasure-coding-and-md.md Part A): the
// server's acceptance of copy_policy, strip files on disk against A.7,
// partial-stripe writes, degraded reads, recovery after kill -9 of up to
// P nodes, NBD, and too few zones.
import { describe, it, expect, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  Op, Flag, Res, ClusterFlag, timestamp64, encodeFixedString, vidToDataOid, vidToVdiOid, oidToHex, VnodeRing,
  ecSplit, ecEncode, ecPolicyByte, decodeVdiStates, SD_INODE_HEADER_SIZE, decodeStripRecords,
} from '@sheepdog/common';
import { startSheep, stopAll, waitFor, freePort, waitForPort, uniqueClusterId, SheepProc, runCollie } from '../helpers/cluster.js';
import { nodeList, epochOf, recoveryIdle } from '../helpers/cluster-scenarios.js';
import { Wire } from '../helpers/wire.js';
import { RawConn, NBD } from '../helpers/nbd-client.js';

const OBJ = 4 << 20;
const dirs: string[] = [];

afterAll(async () => {
  await stopAll();
  if (!process.env.EC_TEST_KEEP) for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

interface Cluster {
  spec: string;
  nodes: SheepProc[];
  nbdPort?: number;
}

/** n sheep in one local cluster, node i in zone i, in directories this file removes. */
async function startEc(n: number, o: { nbd?: boolean } = {}): Promise<Cluster> {
  const spec = `local:${uniqueClusterId()}`;
  const nodes: SheepProc[] = [];
  const nbdPort = o.nbd ? await freePort() : undefined;
  for (let i = 0; i < n; i++) {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sheep-ec-'));
    dirs.push(dir);
    const args = ['-z', String(i), ...(i === 0 && nbdPort ? ['--nbd', `127.0.0.1:${nbdPort}`] : [])];
    nodes.push(await startSheep({ cluster: spec, dir, args }));
  }
  await waitFor(async () => (await nodeList(nodes[0].port)).length === n, 60_000, `${n} members`);
  if (nbdPort) await waitForPort(nbdPort);
  return { spec, nodes, nbdPort };
}

async function format(port: number, copies: number, copyPolicy = 0, flags = 0): Promise<number> {
  const w = new Wire(port);
  try {
    return (await w.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies, copyPolicy, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES | flags } }, Buffer.from('plain\0'))).rsp.result;
  } finally {
    w.close();
  }
}

async function newVdi(w: Wire, name: string, size: number, copies: number, copyPolicy: number) {
  return w.send({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(size), copies, copyPolicy } }, encodeFixedString(name, 256));
}

/** dog's way: the inode's copies and copy_policy in every object request. */
class DogIo {
  constructor(readonly w: Wire, readonly vid: number, readonly copies: number, readonly cp: number) {}
  async create(idx: number, off: number, data: Buffer): Promise<number> {
    const oid = vidToDataOid(this.vid, idx);
    const r = await this.w.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid, offset: off, copies: this.copies, copyPolicy: this.cp } }, data);
    if (r.rsp.result) return r.rsp.result;
    const e = Buffer.alloc(4);
    e.writeUInt32LE(this.vid);
    return (await this.w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(this.vid), offset: SD_INODE_HEADER_SIZE + 4 * idx, copies: this.copies } }, e)).rsp.result;
  }
  async write(idx: number, off: number, data: Buffer): Promise<number> {
    return (await this.w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(this.vid, idx), offset: off, copies: this.copies, copyPolicy: this.cp } }, data)).rsp.result;
  }
  async read(idx: number, off: number, len: number): Promise<Buffer> {
    const r = await this.w.send({ opcode: Op.READ_OBJ, dataLength: len, obj: { oid: vidToDataOid(this.vid, idx), offset: off, copies: this.copies, copyPolicy: this.cp } });
    if (r.rsp.result) throw Object.assign(new Error(`read of object ${idx}: result 0x${r.rsp.result.toString(16)}`), { result: r.rsp.result });
    return r.data;
  }
}

/** Byte k of the doc's example 3 object: k mod 251. */
const pattern251 = (len: number) => Buffer.from(Array.from({ length: len }, (_, k) => k % 251));

/** The strip files an object should have: data strips, then parity (A.4, A.6). */
function expectedStrips(obj: Buffer, d: number, p: number): Buffer[] {
  const data = ecSplit(obj, d);
  return [...data, ...ecEncode(data, p)];
}

/** Strip i of oid as the i-th node of the placement holds it (its object bytes: the block sums follow them in the file). */
async function stripOnDisk(c: Cluster, ring: VnodeRing, oid: bigint, d: number, p: number, i: number): Promise<Buffer | undefined> {
  const holder = ring.placeOid(oid, d + p)[i];
  const node = c.nodes.find((n) => n.port === holder.port)!;
  const f = await fsp.readFile(path.join(node.dir, 'obj', `${oidToHex(oid)}_${i}`)).catch(() => undefined);
  return f?.subarray(0, OBJ / d);
}

/** Every strip of oid is on its placement's i-th node, as expected. */
async function stripsPlaced(c: Cluster, live: SheepProc[], oid: bigint, obj: Buffer, d: number, p: number): Promise<string | undefined> {
  const ring = new VnodeRing(await nodeList(live[0].port));
  const want = expectedStrips(obj, d, p);
  const n = ring.placeOid(oid, d + p).length;
  for (let i = 0; i < n; i++) {
    const got = await stripOnDisk(c, ring, oid, d, p, i);
    if (!got) return `${oidToHex(oid)}_${i} missing`;
    if (!got.equals(want[i])) return `${oidToHex(oid)}_${i} differs`;
  }
  return undefined;
}

async function settled(live: SheepProc[]): Promise<boolean> {
  const eps = await Promise.all(live.map((s) => epochOf(s.port)));
  if (new Set(eps).size !== 1) return false;
  return (await Promise.all(live.map((s) => recoveryIdle(s.port)))).every(Boolean);
}

describe('copy_policy acceptance', () => {
  it('refuses invalid bytes everywhere, forces nr_copies to D+P, and never lets EC be altered', async () => {
    const c = await startEc(1);
    const port = c.nodes[0].port;
    // P = 0, D = 6, D = 0, D = 18 (0x9_), and nonsense: refused, and the daemon stays up
    for (const bad of [0x10, 0x20, 0x31, 0x01, 0x0f, 0x91, 0xff]) expect(await format(port, 3, bad)).toBe(Res.INVALID_PARMS);
    expect(await format(port, 3)).toBe(Res.SUCCESS);
    const w = new Wire(port);
    try {
      for (const bad of [0x10, 0x31, 0x01, 0x91, 0xff]) expect((await newVdi(w, `bad${bad}`, 8 << 20, 3, bad)).rsp.result).toBe(Res.INVALID_PARMS);
      // a valid one with a wrong count: nr_copies is D+P whatever the request says
      const r = await newVdi(w, 'ec21', 8 << 20, 7, 0x11);
      expect(r.rsp.result).toBe(Res.SUCCESS);
      expect(r.rsp.vdi.copies).toBe(3);
      const vid = r.rsp.vdi.vdiId;
      const ino = await w.inode(vid);
      expect(ino.header.copyPolicy).toBe(0x11);
      expect(ino.header.nrCopies).toBe(3);
      const st = decodeVdiStates((await w.send({ opcode: Op.GET_VDI_COPIES, dataLength: 731136 })).data).find((x) => x.vid === vid)!;
      expect([st.nrCopies, st.copyPolicy]).toEqual([3, 0x11]);
      // object I/O with an impossible policy byte
      const rd = await w.send({ opcode: Op.READ_OBJ, dataLength: 512, obj: { oid: vidToDataOid(vid, 0), copyPolicy: 0x10 } });
      expect(rd.rsp.result).toBe(Res.INVALID_PARMS);
      const wr = await w.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, 0), copyPolicy: 0x73 } }, Buffer.alloc(512));
      expect(wr.rsp.result).toBe(Res.INVALID_PARMS);
      // alter-copy with a policy, or of an EC VDI: refused (A.1)
      expect((await w.send({ opcode: Op.ALTER_CLUSTER_COPY, cluster: { copies: 3, copyPolicy: 0x11 } })).rsp.result).toBe(Res.INVALID_PARMS);
      expect((await w.send({ opcode: Op.ALTER_VDI_COPY, vdiState: { newVid: vid, copies: 3, copyPolicy: 0x11 } })).rsp.result).toBe(Res.INVALID_PARMS);
      expect((await w.send({ opcode: Op.ALTER_VDI_COPY, vdiState: { newVid: vid, copies: 2, copyPolicy: 0 } })).rsp.result).toBe(Res.INVALID_PARMS);
      // peer requests: an index past D+P, or bytes past the 2 MiB strip of a 4 MiB 2:1 object
      const epoch = (await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} })).rsp.epoch;
      const oid = vidToDataOid(vid, 0);
      for (const ecIndex of [3, 31, 255]) {
        expect((await w.send({ opcode: Op.READ_PEER, epoch, dataLength: 512, obj: { oid, copyPolicy: 0x11, ecIndex } })).rsp.result).toBe(Res.INVALID_PARMS);
        expect((await w.send({ opcode: Op.CREATE_AND_WRITE_PEER, epoch, flags: Flag.CMD_WRITE, obj: { oid, copyPolicy: 0x11, ecIndex } }, Buffer.alloc(512))).rsp.result).toBe(Res.INVALID_PARMS);
      }
      expect((await w.send({ opcode: Op.CREATE_AND_WRITE_PEER, epoch, flags: Flag.CMD_WRITE, obj: { oid, copyPolicy: 0x11, ecIndex: 1, offset: (2 << 20) - 100 } }, Buffer.alloc(512))).rsp.result).toBe(Res.INVALID_PARMS);
      expect((await w.send({ opcode: Op.WRITE_PEER, epoch, flags: Flag.CMD_WRITE, obj: { oid, copyPolicy: 0x11, ecIndex: 1, offset: 3 << 20 } }, Buffer.alloc(512))).rsp.result).toBe(Res.INVALID_PARMS);
      // the policy byte of the VDI stands in for a request's 0
      expect((await w.send({ opcode: Op.READ_PEER, epoch, dataLength: 512, obj: { oid, ecIndex: 7 } })).rsp.result).toBe(Res.INVALID_PARMS);
      // a strip the peer stores is <oid>_<idx>, 2 MiB
      expect((await w.send({ opcode: Op.CREATE_AND_WRITE_PEER, epoch, flags: Flag.CMD_WRITE, obj: { oid, copyPolicy: 0x11, ecIndex: 2, offset: 512 } }, Buffer.alloc(512, 9))).rsp.result).toBe(Res.SUCCESS);
      const f = await fsp.readFile(path.join(c.nodes[0].dir, 'obj', `${oidToHex(oid)}_2`));
      expect(f.length).toBeGreaterThanOrEqual(2 << 20);
      expect(f.subarray(0, 1024).equals(Buffer.concat([Buffer.alloc(512), Buffer.alloc(512, 9)]))).toBe(true);
      const rp = await w.send({ opcode: Op.READ_PEER, epoch, dataLength: 1024, obj: { oid, copyPolicy: 0x11, ecIndex: 2 } });
      expect(rp.data.equals(f.subarray(0, 1024))).toBe(true);
      expect((await w.send({ opcode: Op.READ_PEER, epoch, dataLength: 512, obj: { oid, copyPolicy: 0x11, ecIndex: 0 } })).rsp.result).toBe(Res.NO_OBJ);
      expect((await w.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 })).rsp.result).toBe(Res.SUCCESS);
    } finally {
      w.close();
    }
  });

  it('keeps an EC cluster default (MAKE_FS) in STAT_CLUSTER, GET_CLUSTER_DEFAULT and the VDIs created without copies', async () => {
    const c = await startEc(1);
    const port = c.nodes[0].port;
    expect(await format(port, 0, 0x22)).toBe(Res.SUCCESS);
    const w = new Wire(port);
    try {
      const def = await w.send({ opcode: Op.GET_CLUSTER_DEFAULT });
      expect([def.rsp.clusterDefault.nrCopies, def.rsp.clusterDefault.copyPolicy]).toEqual([6, 0x22]);
      const sc = await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 4096, cluster: { nodesNr: 1 } });
      expect([sc.data[25], sc.data[26]]).toEqual([6, 0x22]);
      const r = await newVdi(w, 'dflt', 8 << 20, 0, 0);
      expect(r.rsp.vdi.copies).toBe(6);
      const st = decodeVdiStates((await w.send({ opcode: Op.GET_VDI_COPIES, dataLength: 731136 })).data).find((x) => x.vid === r.rsp.vdi.vdiId)!;
      expect([st.nrCopies, st.copyPolicy]).toEqual([6, 0x22]);
      expect((await w.send({ opcode: Op.ALTER_CLUSTER_COPY, cluster: { copies: 2 } })).rsp.result).toBe(Res.INVALID_PARMS);
    } finally {
      w.close();
    }
    // the node's own state keeps it across a restart
    const n = c.nodes[0];
    await n.stop();
    const again = await startSheep({ cluster: `local:${uniqueClusterId()}`, dir: n.dir, port: n.port, args: ['-z', '0'] });
    const w2 = new Wire(again.port);
    try {
      await waitFor(async () => (await w2.send({ opcode: Op.STAT_CLUSTER, dataLength: 4096, cluster: { nodesNr: 1 } })).rsp.result === Res.SUCCESS, 60_000, 'the cluster back');
      const def = await w2.send({ opcode: Op.GET_CLUSTER_DEFAULT });
      expect([def.rsp.clusterDefault.nrCopies, def.rsp.clusterDefault.copyPolicy]).toEqual([6, 0x22]);
    } finally {
      w2.close();
    }
  });
});

/** The doc's A.7 example 2 stripe for D = 2 or 4. */
function asciiStripe(d: number): Buffer {
  const b = Buffer.alloc(512);
  if (d === 2) {
    b.write('ABCDEFGH', 0);
    b.write('abcdefgh', 256);
  } else {
    b.write('ABCDEFGH', 0);
    b.write('abcdefgh', 128);
    b.write('01234567', 256);
    b.write('IJKLMNOP', 384);
  }
  return b;
}

const A7: Record<string, { ex2: string[]; ex3: string[] }> = {
  '2:1': {
    ex2: ['4142434445464748', '6162636465666768', '0102030405060708'],
    ex3: ['0001020304050607', '05060708090a0b0c', '0a0f08151e1b1c11'],
  },
  '4:2': {
    ex2: ['4142434445464748', '6162636465666768', '3031323334353637', '494a4b4c4d4e4f50', 'b3c0b126b7c4b517', '58415a735c455e99'],
    ex3: ['0001020304050607', '8081828384858687', '05060708090a0b0c', '85868788898a8b8c', '3a573820 93fe9124'.replace(' ', ''), '854687f2ae6dacf6'],
  },
};

for (const [d, p, nodes] of [[2, 1, 3], [4, 2, 6], [2, 2, 4]] as const) {
  const name = `${d}:${p}`;
  describe(`EC ${name} on ${nodes} nodes`, () => {
    it('stores A.7 strips, keeps neighbours of partial writes, reads degraded and after recovery with P nodes killed, also over NBD', async () => {
      const c = await startEc(nodes, { nbd: true });
      const port = c.nodes[0].port;
      const cp = ecPolicyByte(d, p);
      // 2:2 through the cluster default (VDI created with copies 0), the others as dog does
      expect(await format(port, d === 2 && p === 2 ? 0 : 3, d === 2 && p === 2 ? cp : 0)).toBe(Res.SUCCESS);
      const w = new Wire(port, 120_000);
      try {
        const r = d === 2 && p === 2 ? await newVdi(w, 'ec', 64 << 20, 0, 0) : await newVdi(w, 'ec', 64 << 20, d + p, cp);
        expect(r.rsp.result).toBe(Res.SUCCESS);
        expect(r.rsp.vdi.copies).toBe(d + p);
        const vid = r.rsp.vdi.vdiId;
        const io = new DogIo(w, vid, d + p, cp);
        const model = new Map<number, Buffer>();

        // object 0: example 3 (byte k = k mod 251) over the whole object
        model.set(0, pattern251(OBJ));
        expect(await io.create(0, 0, model.get(0)!)).toBe(Res.SUCCESS);
        // object 1: example 2's one stripe, the rest zeros (a create zero-fills)
        model.set(1, Buffer.alloc(OBJ));
        asciiStripe(d).copy(model.get(1)!, 0);
        expect(await io.create(1, 0, asciiStripe(d))).toBe(Res.SUCCESS);

        const ring = new VnodeRing(await nodeList(port));
        const a7 = A7[name];
        for (let i = 0; i < d + p; i++) {
          const s3 = (await stripOnDisk(c, ring, vidToDataOid(vid, 0), d, p, i))!;
          const s2 = (await stripOnDisk(c, ring, vidToDataOid(vid, 1), d, p, i))!;
          if (a7) {
            expect(s3.subarray(0, 8).toString('hex'), `example 3 strip ${i}`).toBe(a7.ex3[i]);
            expect(s2.subarray(0, 8).toString('hex'), `example 2 strip ${i}`).toBe(a7.ex2[i]);
          }
        }
        for (const idx of [0, 1]) expect(await stripsPlaced(c, c.nodes, vidToDataOid(vid, idx), model.get(idx)!, d, p)).toBeUndefined();
        // the inode is replicated on D+P nodes, not striped
        const inodeFiles = await Promise.all(c.nodes.map((n) => fsp.access(path.join(n.dir, 'obj', oidToHex(vidToVdiOid(vid)))).then(() => 1, () => 0)));
        expect(inodeFiles.reduce((a: number, b) => a + b, 0)).toBe(Math.min(d + p, nodes));

        // partial stripes: A.8's case (100 bytes at 512), one that starts unaligned inside one stripe,
        // one spanning three stripes with both ends unaligned, and one at the object's end
        for (const [off, len] of [[512, 100], [1030, 7], [2000, 1200], [OBJ - 300, 300]] as const) {
          const piece = randomBytes(len);
          piece.copy(model.get(0)!, off);
          expect(await io.write(0, off, piece)).toBe(Res.SUCCESS);
          expect((await io.read(0, 0, 8192)).equals(model.get(0)!.subarray(0, 8192)), `after writing ${len} at ${off}`).toBe(true);
        }
        expect((await io.read(0, 0, OBJ)).equals(model.get(0)!)).toBe(true);
        expect(await stripsPlaced(c, c.nodes, vidToDataOid(vid, 0), model.get(0)!, d, p)).toBeUndefined();

        // NBD (QEMU-style requests, copy_policy 0: the VDI's is used) on objects 2 and 3
        const nbd = new RawConn(c.nbdPort!);
        try {
          await nbd.hello();
          const g = await nbd.go('ec');
          expect('error' in g).toBe(false);
          const blob = randomBytes(OBJ + 64 * 1024);
          expect((await nbd.cmd(NBD.CMD.WRITE, 2 * OBJ + 4096, blob.length, blob)).error).toBe(0);
          const m2 = Buffer.alloc(2 * OBJ);
          blob.copy(m2, 4096);
          model.set(2, m2.subarray(0, OBJ));
          model.set(3, m2.subarray(OBJ));
          const back = await nbd.cmd(NBD.CMD.READ, 2 * OBJ + 4096, blob.length);
          expect(back.error).toBe(0);
          expect(back.data!.equals(blob)).toBe(true);
        } finally {
          nbd.close();
        }
        for (const idx of [2, 3]) expect(await stripsPlaced(c, c.nodes, vidToDataOid(vid, idx), model.get(idx)!, d, p)).toBeUndefined();
        expect((await w.readVdi(vid, 2 * OBJ, 2 * OBJ)).equals(Buffer.concat([model.get(2)!, model.get(3)!]))).toBe(true);

        // a damaged strip (each data strip in turn: one byte flipped on disk, its checksum fails):
        // the read decodes from the other strips, and the holder rebuilds it in the background
        for (let i = 0; i < d; i++) {
          const oid = vidToDataOid(vid, 0);
          const holder = ring.placeOid(oid, d + p)[i];
          const node = c.nodes.find((n) => n.port === holder.port)!;
          const fh = await fsp.open(path.join(node.dir, 'obj', `${oidToHex(oid)}_${i}`), 'r+');
          try {
            const b = Buffer.alloc(1);
            await fh.read(b, 0, 1, 1000);
            b[0] ^= 0x5a;
            await fh.write(b, 0, 1, 1000);
          } finally {
            await fh.close();
          }
          expect((await io.read(0, 0, OBJ)).equals(model.get(0)!), `read with strip ${i} damaged`).toBe(true);
          await waitFor(async () => (await stripsPlaced(c, c.nodes, oid, model.get(0)!, d, p)) === undefined, 60_000, `strip ${i} repaired`);
          expect(node.output() + (await fsp.readFile(path.join(node.dir, 'sheep.log'), 'utf8'))).toMatch(new RegExp(`repaired strip ${i} of ${oidToHex(oid)}`));
        }

        // kill -9 P nodes (never node 0, the gateway and NBD server), recovery held off: reads go on
        const all = async (via: DogIo) => {
          for (const [idx, m] of model) expect((await via.read(idx, 0, OBJ)).equals(m), `object ${idx}`).toBe(true);
        };
        expect((await w.send({ opcode: Op.DISABLE_RECOVER })).rsp.result).toBe(Res.SUCCESS);
        const victims = c.nodes.slice(1, 1 + p);
        for (const v of victims) await v.kill();
        const live = c.nodes.filter((n) => !victims.includes(n));
        await all(io);
        expect((await w.send({ opcode: Op.ENABLE_RECOVER })).rsp.result).toBe(Res.SUCCESS);
        // recovery: each strip the new placement names is where it should be, with the right bytes
        await waitFor(() => settled(live), 120_000, 'recovery');
        for (const [idx, m] of model) {
          await waitFor(async () => (await stripsPlaced(c, live, vidToDataOid(vid, idx), m, d, p)) === undefined, 60_000, `strips of object ${idx} in place`);
        }
        await all(io);
        // fewer zones than D+P now (no flag at format): writes are refused with HALT, reads go on
        if (live.length < d + p) {
          expect(await io.write(0, 0, Buffer.alloc(512, 1))).toBe(Res.HALT);
          await all(io);
        } else {
          const piece = randomBytes(700);
          piece.copy(model.get(1)!, 300);
          expect(await io.write(1, 300, piece)).toBe(Res.SUCCESS);
          await all(io);
        }
        // the killed nodes come back: strips move to where the full placement puts them, and each node
        // ends up holding only its own index of each object (the others are dropped after recovery)
        const back = [];
        for (const v of victims) back.push(await startSheep({ cluster: c.spec, dir: v.dir, port: v.port, args: ['-z', String(c.nodes.indexOf(v))] }));
        const everyone = [...live, ...back];
        c.nodes.splice(0, c.nodes.length, ...c.nodes.map((n) => back.find((b) => b.port === n.port) ?? n));
        await waitFor(async () => (await nodeList(port)).length === nodes && settled(everyone), 120_000, 'rejoin and recovery');
        for (const [idx, m] of model) {
          await waitFor(async () => (await stripsPlaced(c, everyone, vidToDataOid(vid, idx), m, d, p)) === undefined, 60_000, `strips of object ${idx} back in place`);
        }
        const ring2 = new VnodeRing(await nodeList(port));
        await waitFor(async () => {
          for (const [idx] of model) {
            const oid = vidToDataOid(vid, idx);
            const t = ring2.placeOid(oid, d + p);
            for (const n of everyone) {
              const want = t.findIndex((x) => x.port === n.port);
              const have = (await fsp.readdir(path.join(n.dir, 'obj'))).filter((f) => f.startsWith(`${oidToHex(oid)}_`));
              if (have.join() !== (want < 0 ? '' : `${oidToHex(oid)}_${want}`)) return false;
            }
          }
          return true;
        }, 60_000, 'each node to hold only its own strip index');
        await all(io);
        const piece = randomBytes(1000);
        piece.copy(model.get(2)!, 777);
        expect(await io.write(2, 777, piece)).toBe(Res.SUCCESS);
        await all(io);
      } finally {
        w.close();
        await stopAll();
      }
    }, 600_000);
  });
}

describe('EC snapshots and attributes', () => {
  it('copies on write from an EC snapshot, and stripes VDI attribute objects (A.3)', async () => {
    const c = await startEc(3);
    const port = c.nodes[0].port;
    expect(await format(port, 3)).toBe(Res.SUCCESS);
    const w = new Wire(port);
    try {
      const base = randomBytes(OBJ);
      const vid1 = (await newVdi(w, 'snapme', 16 << 20, 3, 0x11)).rsp.vdi.vdiId;
      expect(await new DogIo(w, vid1, 3, 0x11).create(0, 0, base)).toBe(Res.SUCCESS);
      // dog's snapshot: the same name with the inode's copies and policy, based on the working VDI
      const snap = await w.send({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: 16n << 20n, baseVdiId: vid1, snapid: 1, copies: 3, copyPolicy: 0x11 } }, encodeFixedString('snapme', 256));
      expect(snap.rsp.result).toBe(Res.SUCCESS);
      const vid2 = snap.rsp.vdi.vdiId;
      expect(vid2).not.toBe(vid1);
      // a partial write into the new working VDI copies the object from the snapshot's strips
      const piece = randomBytes(100);
      const cow = await w.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE | Flag.CMD_COW, obj: { oid: vidToDataOid(vid2, 0), cowOid: vidToDataOid(vid1, 0), offset: 1000, copies: 3, copyPolicy: 0x11 } }, piece);
      expect(cow.rsp.result).toBe(Res.SUCCESS);
      const want = Buffer.from(base);
      piece.copy(want, 1000);
      expect((await new DogIo(w, vid2, 3, 0x11).read(0, 0, OBJ)).equals(want)).toBe(true);
      expect((await new DogIo(w, vid1, 3, 0x11).read(0, 0, OBJ)).equals(base)).toBe(true);
      const ring = new VnodeRing(await nodeList(port));
      expect(await stripsPlaced(c, c.nodes, vidToDataOid(vid2, 0), want, 2, 1)).toBeUndefined();
      // an attribute: its object is striped like upstream's 2001e5c05c1b3d4b_0/_1/_2
      const set = await runCollie(['vdi', 'setattr', 'snapme', 'mykey', 'myvalue'], { port });
      expect(set.code, set.stderr).toBe(0);
      const get = await runCollie(['vdi', 'getattr', 'snapme', 'mykey'], { port });
      expect(get.stdout.trim()).toBe('myvalue');
      const names = (await Promise.all(c.nodes.map((n) => fsp.readdir(path.join(n.dir, 'obj'))))).flat().filter((f) => /^2[0-9a-f]{15}_\d+$/.test(f));
      expect(names.map((f) => f.slice(-2)).sort()).toEqual(['_0', '_1', '_2']);
      expect(new Set(names.map((f) => f.slice(0, 16))).size).toBe(1);
      expect(ring.placeOid(BigInt('0x' + names[0].slice(0, 16)), 3)).toHaveLength(3);
    } finally {
      w.close();
      await stopAll();
    }
  });
});

describe('EC removal while a holder is away', () => {
  it('the strips of a VDI deleted while one of their holders was away do not come back with it', async () => {
    const c = await startEc(4);
    const port = c.nodes[0].port;
    expect(await format(port, 3)).toBe(Res.SUCCESS);
    const w = new Wire(port, 120_000);
    try {
      const vid = (await newVdi(w, 'gone', 16 << 20, 3, 0x11)).rsp.vdi.vdiId;
      const io = new DogIo(w, vid, 3, 0x11);
      for (let i = 0; i < 4; i++) expect(await io.create(i, 0, randomBytes(OBJ))).toBe(Res.SUCCESS);
      // away: a node (not the gateway) holding strips of these objects
      const oids = [0, 1, 2, 3].map((i) => vidToDataOid(vid, i));
      const ring = new VnodeRing(await nodeList(port));
      const away = c.nodes.slice(1).find((n) => oids.some((o) => ring.placeOid(o, 3).some((t) => t.port === n.port)))!;
      const held = async (n: SheepProc) => (await fsp.readdir(path.join(n.dir, 'obj'))).filter((f) => f.includes('_'));
      expect((await held(away)).length).toBeGreaterThan(0);
      await away.kill();
      const live = c.nodes.filter((n) => n !== away);
      await waitFor(() => settled(live), 120_000, 'recovery without it');
      expect((await w.send({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE }, Buffer.concat([encodeFixedString('gone', 256), Buffer.alloc(256)]))).rsp.result).toBe(Res.SUCCESS);
      await waitFor(async () => (await Promise.all(live.map(held))).flat().length === 0, 60_000, 'the strips reclaimed on the nodes present');
      const back = await startSheep({ cluster: c.spec, dir: away.dir, port: away.port, args: ['-z', String(c.nodes.indexOf(away))] });
      const everyone = [...live, back];
      await waitFor(async () => (await nodeList(port)).length === 4 && settled(everyone), 120_000, 'rejoin');
      // its leftovers are dropped, and nobody rebuilt them
      await waitFor(async () => (await Promise.all(everyone.map(held))).flat().length === 0, 60_000, 'the leftovers dropped');
      await new Promise((r) => setTimeout(r, 2000));
      expect((await Promise.all(everyone.map(held))).flat()).toEqual([]);
    } finally {
      w.close();
      await stopAll();
    }
  });
});

describe('zones', () => {
  it('refuses EC writes with fewer zones than D+P, and any I/O with fewer than D', async () => {
    const c = await startEc(2);
    const port = c.nodes[0].port;
    expect(await format(port, 2)).toBe(Res.SUCCESS);
    const w = new Wire(port);
    try {
      const v21 = (await newVdi(w, 'e21', 8 << 20, 3, 0x11)).rsp.vdi.vdiId;
      const v42 = (await newVdi(w, 'e42', 8 << 20, 6, 0x22)).rsp.vdi.vdiId;
      const io21 = new DogIo(w, v21, 3, 0x11);
      const io42 = new DogIo(w, v42, 6, 0x22);
      expect(await io21.create(0, 0, Buffer.alloc(512, 7))).toBe(Res.HALT);
      expect(await io21.write(0, 100, Buffer.alloc(10, 7))).toBe(Res.HALT);
      expect(await io42.create(0, 0, Buffer.alloc(512, 7))).toBe(Res.HALT);
      await expect(io42.read(0, 0, 512)).rejects.toMatchObject({ result: Res.HALT });
      // nothing was stored anywhere
      for (const n of c.nodes) expect((await fsp.readdir(path.join(n.dir, 'obj'))).filter((f) => f.includes('_'))).toEqual([]);
      expect((await w.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 })).rsp.result).toBe(Res.SUCCESS);
    } finally {
      w.close();
      await stopAll();
    }
  });

  it('stores a strip per zone (data, then parity) when the cluster was formatted to allow fewer zones', async () => {
    const c = await startEc(3);
    const port = c.nodes[0].port;
    expect(await format(port, 3, 0, ClusterFlag.EC_FEW_ZONES)).toBe(Res.SUCCESS);
    const w = new Wire(port);
    try {
      const vid = (await newVdi(w, 'e22', 8 << 20, 4, 0x12)).rsp.vdi.vdiId;
      const io = new DogIo(w, vid, 4, 0x12);
      const data = randomBytes(OBJ);
      expect(await io.create(0, 0, data)).toBe(Res.SUCCESS);
      expect((await io.read(0, 0, OBJ)).equals(data)).toBe(true);
      const oid = vidToDataOid(vid, 0);
      const ring = new VnodeRing(await nodeList(port));
      const want = expectedStrips(data, 2, 2);
      for (let i = 0; i < 3; i++) expect((await stripOnDisk(c, ring, oid, 2, 2, i))?.equals(want[i]), `strip ${i}`).toBe(true);
      const names = (await Promise.all(c.nodes.map((n) => fsp.readdir(path.join(n.dir, 'obj'))))).flat().filter((f) => f.startsWith(oidToHex(oid)));
      expect(names.sort()).toEqual([0, 1, 2].map((i) => `${oidToHex(oid)}_${i}`));
      // EC_STRIPS pages: 40 more objects (a stripe each) give every node 41 strips; pages of 32 records
      // never split an object, and together list what one large reply lists
      for (let i = 1; i <= 40; i++) expect(await io.create(i, 512 * i, Buffer.alloc(512, i))).toBe(Res.SUCCESS);
      const epoch = (await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} })).rsp.epoch;
      const whole = decodeStripRecords((await w.send({ opcode: Op.EC_STRIPS, epoch, dataLength: 1 << 20 })).data);
      expect(whole.more).toBe(false);
      expect(whole.records.length).toBeGreaterThanOrEqual(41);
      const paged: typeof whole.records = [];
      for (let cursor = 0n, pages = 0; ; pages++) {
        const pg = decodeStripRecords((await w.send({ opcode: Op.EC_STRIPS, epoch, dataLength: 8 + 16 * 32, obj: { cowOid: cursor } })).data);
        expect(pg.records.length).toBeLessThanOrEqual(32);
        if (paged.length && pg.records.length) expect(pg.records[0].oid > paged[paged.length - 1].oid).toBe(true);
        paged.push(...pg.records);
        if (!pg.more) { expect(pages).toBeGreaterThan(0); break; }
        cursor = pg.records[pg.records.length - 1].oid;
      }
      const key = (r: { oid: bigint; idx: number }) => `${r.oid}_${r.idx}`;
      expect(paged.map(key).sort()).toEqual(whole.records.map(key).sort());
      expect((await w.send({ opcode: Op.EC_STRIPS, epoch, dataLength: 8 + 16 * 31 })).rsp.result).toBe(Res.BUFFER_SMALL);
      // the data object is referenced from the inode's index: deleting the VDI reclaims every strip
      const e = Buffer.alloc(4);
      e.writeUInt32LE(vid);
      expect((await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: SD_INODE_HEADER_SIZE, copies: 4 } }, e)).rsp.result).toBe(Res.SUCCESS);
      expect((await w.send({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE }, Buffer.concat([encodeFixedString('e22', 256), Buffer.alloc(256)]))).rsp.result).toBe(Res.SUCCESS);
      await waitFor(async () => (await Promise.all(c.nodes.map((n) => fsp.readdir(path.join(n.dir, 'obj'))))).flat().every((f) => !f.includes('_')), 60_000, 'the strips reclaimed');
    } finally {
      w.close();
      await stopAll();
    }
  });
});
