// What collie puts on the wire (spec §14): a fake sheep records every request
// and answers from a tiny in-memory model.
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import * as net from 'node:net';
import {
  RequestHeader, encodeResponse, Op, Flag, Res, encodeInodeHeader, emptyInodeHeader, InodeHeader, vidToVdiOid,
  vidToDataOid, vidToAttrOid, encodeNodes, makeNode, SD_INODE_SIZE, SD_INODE_HEADER_SIZE, encodeAttr, hash24,
} from '@sheepdog/common';
import { run } from '../../collie/src/main.js';
import { BufferSink } from '../../collie/src/output.js';

interface Req {
  h: RequestHeader;
  payload: Buffer;
}
type Reply = { result?: number; data?: Buffer; vdiId?: number; attrId?: number; epoch?: number };

class FakeSheep {
  server = net.createServer((s) => this.conn(s));
  port = 0;
  reqs: Req[] = [];
  inodes = new Map<number, Buffer>();
  handler: (r: Req) => Reply | undefined = () => undefined;

  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
  }
  stop(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
  addInode(h: Partial<InodeHeader>, index: [number, number][] = []): void {
    const b = Buffer.alloc(SD_INODE_SIZE);
    encodeInodeHeader({ ...emptyInodeHeader(), blockSizeShift: 22, nrCopies: 1, ...h }, b);
    for (const [i, v] of index) b.writeUInt32LE(v, SD_INODE_HEADER_SIZE + 4 * i);
    this.inodes.set(h.vdiId!, b);
  }
  private conn(s: net.Socket): void {
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (buf.length < 48) return;
        const h = new RequestHeader(Buffer.from(buf.subarray(0, 48)));
        const plen = h.flags & Flag.CMD_WRITE ? h.dataLength : 0;
        if (buf.length < 48 + plen) return;
        const payload = Buffer.from(buf.subarray(48, 48 + plen));
        buf = buf.subarray(48 + plen);
        const req = { h, payload };
        this.reqs.push(req);
        const r = this.handler(req) ?? this.defaultReply(req);
        const data = r.data ?? Buffer.alloc(0);
        s.write(Buffer.concat([encodeResponse({
          opcode: h.opcode, id: h.id, epoch: r.epoch ?? 1, result: r.result ?? Res.SUCCESS, dataLength: data.length,
          vdi: { vdiId: r.vdiId ?? 0, attrId: r.attrId ?? 0 },
        }), data]));
      }
    });
    s.on('error', () => undefined);
  }
  private defaultReply({ h }: Req): Reply {
    switch (h.opcode) {
      case Op.GET_NODE_LIST: return { data: encodeNodes([makeNode('127.0.0.1', this.port, { zone: 0 })]) };
      case Op.STAT_CLUSTER: return { data: Buffer.alloc(h.dataLength), epoch: 1 };
      case Op.READ_OBJ: {
        const o = h.obj;
        const ino = this.inodes.get(Number((o.oid >> 32n) & 0xffffffn));
        if (o.oid >> 63n && ino) return { data: ino.subarray(o.offset, o.offset + h.dataLength) };
        return { data: Buffer.alloc(h.dataLength) };
      }
      case Op.READ_VDIS: case Op.READ_DEL_VDIS: return { data: Buffer.alloc(h.dataLength) };
      default: return {};
    }
  }
}

let fake: FakeSheep;
beforeEach(async () => {
  fake = new FakeSheep();
  await fake.start();
});
afterEach(async () => {
  await fake.stop();
});

async function dog(args: string[]) {
  const sink = new BufferSink();
  const code = await run([...args, '-p', String(fake.port)], { prog: 'dog', sink, env: {} });
  return { code, stdout: sink.stdout, stderr: sink.stderr };
}

const hexRows = (b: Buffer) => [0, 16, 32].map((o) => [...b.subarray(o, o + 16)].map((x) => x.toString(16).padStart(2, '0')).join(' '));
const ops = () => fake.reqs.map((r) => r.h.opcode);

describe('requests collie sends', () => {
  it('node-list prologue: GET_NODE_LIST, then the 48-byte STAT_CLUSTER probe (spec §17.7 I)', async () => {
    const r = await dog(['node', 'list', '-r']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`0 127.0.0.1:${fake.port} 128 0\n`);
    expect(ops()).toEqual([Op.GET_NODE_LIST, Op.STAT_CLUSTER]);
    const nl = fake.reqs[0].h;
    expect([nl.protoVer, nl.flags, nl.dataLength]).toEqual([0x0a, 0, 491520]);
    expect(hexRows(fake.reqs[1].h.raw)).toEqual([
      '0a 87 00 00 00 00 00 00 00 00 00 00 30 00 00 00',
      '00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00',
      '00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00',
    ]);
  });

  it('GET_VDI_INFO header and payload (spec §17.7 A)', async () => {
    fake.handler = (q) => (q.h.opcode === Op.GET_VDI_INFO ? { result: Res.NO_VDI } : undefined);
    const r = await dog(['vdi', 'read', 'Alice', '0', '1']);
    expect(r.code).toBe(1);
    expect(hexRows(fake.reqs[0].h.raw)).toEqual([
      '02 14 01 00 00 00 00 00 00 00 00 00 00 02 00 00',
      '00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00',
      '00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00',
    ]);
    const p = fake.reqs[0].payload;
    expect(p.length).toBe(512);
    expect(p.subarray(0, 6).toString('latin1')).toBe('Alice\0');
    expect(p.subarray(5).every((x) => x === 0)).toBe(true);
  });

  it('vdi delete: full inode read (not DIRECT), index wipe in runs of 128 entries, then DEL_VDI', async () => {
    const vid = 0x15d167;
    const index: [number, number][] = [];
    for (let i = 0; i < 130; i++) index.push([i, i % 2 ? vid : 0x42]);
    index.push([300, vid]);
    fake.addInode({ name: 'Alice', vdiId: vid, vdiSize: 2n << 30n, nrCopies: 2 }, index);
    // an upstream sheep: it does not know RECLAIM_STATUS (ours reclaims in the background, see below)
    fake.handler = (q) => (q.h.opcode === Op.GET_VDI_INFO ? { vdiId: vid } : q.h.opcode === Op.RECLAIM_STATUS ? { result: Res.NO_SUPPORT } : undefined);
    const r = await dog(['vdi', 'delete', 'Alice']);
    expect(r.code).toBe(0);
    expect(ops()).toEqual([Op.GET_VDI_INFO, Op.READ_OBJ, Op.RECLAIM_STATUS, Op.WRITE_OBJ, Op.WRITE_OBJ, Op.DEL_VDI]);
    const read = fake.reqs[1].h;
    expect([read.flags, read.dataLength, read.obj.oid, read.obj.offset]).toEqual([0, SD_INODE_SIZE, vidToVdiOid(vid), 0]);
    const wipes = fake.reqs.slice(3, 5).map((q) => ({
      flags: q.h.flags, off: q.h.obj.offset, len: q.h.dataLength, zero: q.payload.every((x) => x === 0), copies: q.h.obj.copies, oid: q.h.obj.oid,
    }));
    expect(wipes).toEqual([
      { flags: Flag.CMD_WRITE | Flag.CMD_DIRECT, off: SD_INODE_HEADER_SIZE, len: 4 * 128, zero: true, copies: 2, oid: vidToVdiOid(vid) },
      { flags: Flag.CMD_WRITE | Flag.CMD_DIRECT, off: SD_INODE_HEADER_SIZE + 4 * 128, len: 4 * (301 - 128), zero: true, copies: 2, oid: vidToVdiOid(vid) },
    ]);
    const del = fake.reqs[5];
    expect([del.h.flags, del.h.dataLength, del.h.vdi.snapid, del.payload.length]).toEqual([Flag.CMD_WRITE, 512, 0, 512]);
  });

  it('vdi delete on a sheep that reclaims in the background: no index wipe, DEL_VDI at once', async () => {
    const vid = 0x15d169;
    fake.addInode({ name: 'Bob', vdiId: vid, vdiSize: 2n << 30n, nrCopies: 2 }, [[0, vid], [5, vid]]);
    fake.handler = (q) => (q.h.opcode === Op.GET_VDI_INFO ? { vdiId: vid } : undefined);
    const r = await dog(['vdi', 'delete', 'Bob']);
    expect(r.code).toBe(0);
    expect(ops()).toEqual([Op.GET_VDI_INFO, Op.READ_OBJ, Op.RECLAIM_STATUS, Op.DEL_VDI]);
  });

  it('vdi write: COW create + SETIDX, plain write, fresh create + SETIDX', async () => {
    const vid = 0x15d168, parent = 0x15d167;
    fake.addInode({ name: 'Alice', vdiId: vid, vdiSize: 3n << 20n, blockSizeShift: 20, nrCopies: 3 }, [[0, parent], [1, vid]]);
    fake.handler = (q) => (q.h.opcode === Op.GET_VDI_INFO ? { vdiId: vid } : undefined);
    const sink = new BufferSink();
    const data = Buffer.alloc(3 << 20, 7);
    // feed stdin through a stream: run() reads process.stdin, so swap it for this test
    const { Readable } = await import('node:stream');
    const orig = Object.getOwnPropertyDescriptor(process, 'stdin')!;
    Object.defineProperty(process, 'stdin', { value: Readable.from([data]), configurable: true });
    let code: number;
    try {
      code = await run(['vdi', 'write', 'Alice', '-p', String(fake.port)], { prog: 'dog', sink, env: {} });
    } finally {
      Object.defineProperty(process, 'stdin', orig);
    }
    expect(code).toBe(0);
    expect(ops().slice(0, 2)).toEqual([Op.GET_VDI_INFO, Op.READ_OBJ]);
    expect(fake.reqs[1].h.flags).toBe(Flag.CMD_DIRECT);
    const writes = fake.reqs.slice(2).map((q) => ({
      op: q.h.opcode, flags: q.h.flags, oid: q.h.obj.oid, cow: q.h.obj.cowOid, off: q.h.obj.offset, len: q.h.dataLength, copies: q.h.obj.copies,
      val: q.h.opcode === Op.WRITE_OBJ && q.h.obj.oid === vidToVdiOid(vid) ? q.payload.readUInt32LE(0) : undefined,
    }));
    const W = Flag.CMD_WRITE;
    expect(writes).toEqual(expect.arrayContaining([
      { op: Op.CREATE_AND_WRITE_OBJ, flags: W | Flag.CMD_COW, oid: vidToDataOid(vid, 0), cow: vidToDataOid(parent, 0), off: 0, len: 1 << 20, copies: 3, val: undefined },
      { op: Op.WRITE_OBJ, flags: W, oid: vidToVdiOid(vid), cow: 0n, off: SD_INODE_HEADER_SIZE, len: 4, copies: 3, val: vid },
      { op: Op.WRITE_OBJ, flags: W, oid: vidToDataOid(vid, 1), cow: 0n, off: 0, len: 1 << 20, copies: 3, val: undefined },
      { op: Op.CREATE_AND_WRITE_OBJ, flags: W, oid: vidToDataOid(vid, 2), cow: 0n, off: 0, len: 1 << 20, copies: 3, val: undefined },
      { op: Op.WRITE_OBJ, flags: W, oid: vidToVdiOid(vid), cow: 0n, off: SD_INODE_HEADER_SIZE + 8, len: 4, copies: 3, val: vid },
    ]));
    expect(writes.length).toBe(5);
    // each SETIDX follows its create
    const pos = (oid: bigint, off: number) => fake.reqs.findIndex((q) => q.h.obj.oid === oid && q.h.obj.offset === off && q.h.opcode !== Op.READ_OBJ);
    expect(pos(vidToVdiOid(vid), SD_INODE_HEADER_SIZE)).toBeGreaterThan(pos(vidToDataOid(vid, 0), 0));
    expect(pos(vidToVdiOid(vid), SD_INODE_HEADER_SIZE + 8)).toBeGreaterThan(pos(vidToDataOid(vid, 2), 0));
  });

  it('vdi list: bitmaps, 4672-byte header reads of live ids, index reads at 4664', async () => {
    const inuse = Buffer.alloc(1 << 21);
    const del = Buffer.alloc(1 << 21);
    const ids = [0x10, 0x11, 0x12];
    for (const v of ids) inuse[v >> 3] |= 1 << (v & 7);
    del[0x11 >> 3] |= 1 << (0x11 & 7);
    fake.addInode({ name: 'a', vdiId: 0x10, vdiSize: 10n << 20n }, [[0, 0x10], [2, 0x10]]);
    fake.addInode({ name: 'b', vdiId: 0x12, vdiSize: 4n << 20n, copyPolicy: 0x11, nrCopies: 3 });
    fake.handler = (q) => {
      if (q.h.opcode === Op.READ_VDIS) return { data: inuse };
      if (q.h.opcode === Op.READ_DEL_VDIS) return { data: del };
      return undefined;
    };
    const r = await dog(['vdi', 'list', '-r']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('= a 0 10485760 8388608 0 0 10 1  22\n= b 0 4194304 0 0 0 12 2:1  22\n');
    expect(fake.reqs.slice(0, 2).map((q) => [q.h.opcode, q.h.dataLength])).toEqual([[Op.READ_VDIS, 2097152], [Op.READ_DEL_VDIS, 2097152]]);
    const reads = fake.reqs.slice(2).map((q) => [q.h.obj.oid, q.h.obj.offset, q.h.dataLength, q.h.flags]);
    expect(reads).toEqual(expect.arrayContaining([
      [vidToVdiOid(0x10), 0, 4672, Flag.CMD_DIRECT],
      [vidToVdiOid(0x10), 4664, 4 * 3, Flag.CMD_DIRECT],
      [vidToVdiOid(0x12), 0, 4672, Flag.CMD_DIRECT],
      [vidToVdiOid(0x12), 4664, 4, Flag.CMD_DIRECT],
    ]));
    expect(reads.length).toBe(4); // the deleted id 0x11 is never read
  });

  it('vdi getattr: GET_VDI_ATTR lookup (WRITE only), then READ_OBJ of the attribute object', async () => {
    const rec = encodeAttr({ name: 'Alice', tag: '', ctime: 0n, snapId: 0, key: 'k', value: Buffer.from('v4lue') });
    fake.handler = (q) => {
      if (q.h.opcode === Op.GET_VDI_ATTR) return { vdiId: hash24('Alice'), attrId: 0x1234 };
      if (q.h.opcode === Op.READ_OBJ) return { data: rec };
      return undefined;
    };
    const r = await dog(['vdi', 'getattr', 'Alice', 'k']);
    expect(r.stdout).toBe('v4lue');
    const [a, b] = fake.reqs;
    expect([a.h.opcode, a.h.flags, a.h.dataLength, a.payload.length]).toEqual([Op.GET_VDI_ATTR, Flag.CMD_WRITE, 66320, 66320]);
    expect(a.payload.toString('latin1', 528, 530)).toBe('k\0');
    expect([b.h.opcode, b.h.obj.oid, b.h.dataLength, b.h.flags]).toEqual([Op.READ_OBJ, vidToAttrOid(hash24('Alice'), 0x1234), 66320, Flag.CMD_DIRECT]);

    fake.reqs = [];
    fake.handler = () => ({ result: Res.SUCCESS });
    await dog(['vdi', 'setattr', '-x', 'Alice', 'k', 'v']);
    expect(fake.reqs[0].h.flags).toBe(Flag.CMD_WRITE | Flag.CMD_CREAT | Flag.CMD_EXCL);
    expect(fake.reqs[0].payload.readUInt32LE(524)).toBe(1);
    fake.reqs = [];
    await dog(['vdi', 'setattr', '-d', 'Alice', 'k']);
    expect(fake.reqs[0].h.flags).toBe(Flag.CMD_WRITE | Flag.CMD_DEL);
  });

  it('vdi snapshot -s TAG: tag lookup, working VDI lookup, tag write at 256, NEW_VDI snapid=1', async () => {
    const vid = 0x15d167;
    fake.addInode({ name: 'Alice', vdiId: vid, vdiSize: 1n << 30n, nrCopies: 2 });
    fake.handler = (q) => {
      if (q.h.opcode === Op.GET_VDI_INFO) return q.payload.subarray(256).some((x) => x) ? { result: Res.NO_TAG } : { vdiId: vid };
      if (q.h.opcode === Op.NEW_VDI) return { vdiId: vid + 1 };
      return undefined;
    };
    const r = await dog(['vdi', 'snapshot', '-v', '-s', 'snap1', 'Alice']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('new VID of original VDI: 15d168, VDI ID of newly created snapshot: 15d167\n');
    expect(ops()).toEqual([Op.GET_VDI_INFO, Op.GET_VDI_INFO, Op.READ_OBJ, Op.WRITE_OBJ, Op.NEW_VDI]);
    const w = fake.reqs[3];
    expect([w.h.flags, w.h.obj.offset, w.h.dataLength, w.h.obj.copies, w.payload.toString('latin1', 0, 6)]).toEqual([Flag.CMD_WRITE, 256, 256, 2, 'snap1\0']);
    const n = fake.reqs[4].h;
    expect([n.flags, n.dataLength, n.vdi.snapid, n.vdi.baseVdiId, n.vdi.vdiSize, n.vdi.copies]).toEqual([Flag.CMD_WRITE, 256, 1, vid, 1n << 30n, 2]);
  });
});
