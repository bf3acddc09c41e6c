// Hyper volumes (collie vdi create -y, B-tree index) on a real sheep: made
// with collie, written at both ends of 20 TiB through sheep --nbd with
// qemu-io, read back after a restart; upstream's size messages; a corrupt
// B-tree on disk gives errors, and the sheep stays up.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import {
  Op, Flag, Res, vidToVdiOid, vidToDataOid, vidToBtreeOid, SD_INODE_HEADER_SIZE, decodeBtreeNode, encodeBtreeNode, INODE_OFF,
} from '@sheepdog/common';
import { stopAll, startSheep, runCollie, SheepProc, waitFor } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { startNbdSheep, tool, have } from '../helpers/nbd.js';

const MB = 1 << 20;
const TB = 2 ** 40;
const SIZE = 20 * TB;
const END = SIZE - MB; // the last MiB of the volume
const END_IDX = Math.floor(END / (4 * MB)); // 5,242,879

describe('hyper volumes', () => {
  let s: SheepProc;
  let nbdPort: number;
  let w: Wire;
  const uri = (e: string) => `nbd://127.0.0.1:${nbdPort}/${e}`;
  const collie = (...a: string[]) => runCollie(a, { port: s.port });
  const qemuIo = (e: string, ...cmds: string[]) => tool('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri(e)], { timeoutMs: 30_000 });
  const root = async (vid: number, len = 64) => {
    const r = await w.c.request({ opcode: Op.READ_OBJ, dataLength: SD_INODE_HEADER_SIZE + len, obj: { oid: vidToVdiOid(vid) } });
    return r.data;
  };

  beforeAll(async () => {
    if (!have('qemu-io')) throw new Error('missing qemu-io (install qemu-utils)');
    const n = await startNbdSheep(1);
    s = n.s;
    nbdPort = n.nbdPort;
    w = new Wire(s.port);
  });
  afterAll(async () => {
    w?.close();
    await stopAll();
  });

  it('collie keeps upstream\'s limits and messages', async () => {
    const big = await collie('vdi', 'create', 'big', '5T');
    expect(big.code).toBe(64);
    expect(big.stderr).toContain("VDI size is larger than 4.0 TB bytes, please use '-y' to create a hyper volume with size up to 16 PB bytes or use '-z' to create larger object size volume");
    const huge = await collie('vdi', 'create', '-y', 'huge', '17P');
    expect(huge.code).toBe(64);
    expect(huge.stderr).toContain('VDI size is too large');
    const both = await collie('vdi', 'create', '-y', '-z', '23', 'both', '1T');
    expect(both.code).toBe(1);
    expect(both.stderr).toContain("Don't specify both -y and -z options, please");
    const max = await collie('vdi', 'create', '-y', 'max', '16P');
    expect(max.code, max.stderr).toBe(0);
    expect((await w.inode(await w.vid('max'))).header.vdiSize).toBe(2n ** 54n);
  });

  let vid = 0;
  it('a 20 TiB hyper volume: created with an empty root, written at both ends through NBD', async () => {
    const c = await collie('vdi', 'create', '-y', 'hv', '20T');
    expect(c.code, c.stderr).toBe(0);
    expect(c.stderr).toContain("QEMU's sheepdog driver cannot use it");
    vid = await w.vid('hv');
    const before = await root(vid);
    expect(before[INODE_OFF.storePolicy]).toBe(1);
    expect(before[INODE_OFF.blockSizeShift]).toBe(22);
    expect(before.subarray(SD_INODE_HEADER_SIZE, SD_INODE_HEADER_SIZE + 8).toString('hex')).toBe('7462010000000000');

    const wr = await qemuIo('hv', `write -P 0xa5 0 ${MB}`, `write -P 0x5a ${END} ${MB}`);
    expect(wr.code, wr.stderr + wr.stdout).toBe(0);
    expect(wr.stdout).not.toMatch(/error|failed/i);
    const rd = await qemuIo('hv', `read -P 0xa5 0 ${MB}`, `read -P 0x5a ${END} ${MB}`, `read -P 0 ${10 * TB} ${MB}`);
    expect(rd.code).toBe(0);
    expect(rd.stdout).not.toMatch(/mismatch|error|failed/i);

    // the index is upstream's depth-1 root in the inode: (0, vid), (5242879, vid)
    const after = await root(vid);
    expect(decodeBtreeNode(after, SD_INODE_HEADER_SIZE, true)).toEqual({ depth: 1, idx: [0, END_IDX], vid: [vid, vid] });
    const obj = await w.c.request({ opcode: Op.READ_OBJ, dataLength: 8, obj: { oid: vidToDataOid(vid, END_IDX), offset: 3 * MB } });
    expect(obj.data.equals(Buffer.alloc(8, 0x5a))).toBe(true);

    const l = await collie('vdi', 'list', '-r', 'hv');
    expect(l.code, l.stderr).toBe(0);
    // = hv 0 vdi_size used shared ...: 2 objects of 4 MiB used
    expect(l.stdout).toMatch(new RegExp(`^= hv 0 ${SIZE} ${8 * MB} 0 `));
    const hl = await collie('vdi', 'list', 'hv');
    expect(hl.stdout).toMatch(/hv\s+0\s+20 TB\s+8\.0 MB/);
  });

  it('snapshots of hyper volumes are refused, by collie and by sheep', async () => {
    const r = await collie('vdi', 'snapshot', 'hv');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('creating a snapshot of hypervolume is not supported');
    const n = await w.newVdi('hv', BigInt(SIZE), { base: vid, snapshot: true });
    expect(n.rsp.result).toBe(Res.INVALID_PARMS);
  });

  it('the data is there after a sheep restart', async () => {
    const { dir, port } = s;
    await s.stop();
    w.close();
    s = await startSheep({ dir, port, args: ['--nbd', `127.0.0.1:${nbdPort}`] });
    w = new Wire(s.port);
    const rd = await qemuIo('hv', `read -P 0xa5 0 ${MB}`, `read -P 0x5a ${END} ${MB}`, `read -P 0 ${MB} ${MB}`);
    expect(rd.code, rd.stderr).toBe(0);
    expect(rd.stdout).not.toMatch(/mismatch|error|failed/i);
    // and a third object goes between the two
    const wr = await qemuIo('hv', `write -P 0x33 ${10 * TB} 4096`);
    expect(wr.code).toBe(0);
    expect(decodeBtreeNode(await root(vid), SD_INODE_HEADER_SIZE, true)).toMatchObject({ idx: [0, (10 * TB) / (4 * MB), END_IDX] });
  }, 60_000);

  it('a corrupt B-tree root is an error for NBD and collie, and sheep stays up', async () => {
    const c = await collie('vdi', 'create', '-y', 'bad', '1T');
    expect(c.code).toBe(0);
    const bad = await w.vid('bad');
    // old QEMU's way, data_vdi_id[idx] = vid, would corrupt the tree: refused
    const asQemu = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(bad), offset: SD_INODE_HEADER_SIZE + 4 } }, Buffer.alloc(4, 1));
    expect(asQemu.rsp.result).toBe(Res.INVALID_PARMS);
    // a root rewritten from btree_counter on, as hyper-volume clients do, with a hostile count
    const root0 = SD_INODE_HEADER_SIZE - INODE_OFF.btreeCounter;
    const hdr = Buffer.alloc(root0 + 8);
    hdr.writeUInt16LE(0x6274, root0);
    hdr.writeUInt16LE(1, root0 + 2);
    hdr.writeUInt32LE(0xffffffff, root0 + 4); // more entries than a node can hold
    const put = (b: Buffer) => w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(bad), offset: INODE_OFF.btreeCounter } }, b);
    expect((await put(hdr)).rsp.result).toBe(Res.SUCCESS);
    const rd = await qemuIo('bad', 'read 0 4096');
    expect(rd.code === 0 && !/error|fail/i.test(rd.stdout + rd.stderr)).toBe(false);
    const l = await collie('vdi', 'list');
    expect(l.stderr).toContain('Failed to read the index of VDI bad: corrupt B-tree index: 4294967295 entries in a depth-1 node');
    expect(l.stdout).toMatch(/hv\s+0\s+20 TB/);
    // depth 7 the same
    hdr.writeUInt16LE(7, root0 + 2);
    hdr.writeUInt32LE(1, root0 + 4);
    expect((await put(hdr)).rsp.result).toBe(Res.SUCCESS);
    const l2 = await collie('vdi', 'list', 'bad');
    expect(l2.stderr).toContain('depth 7');
    // still serving the good one
    const ok = await qemuIo('hv', `read -P 0x5a ${END} 4096`);
    expect(ok.code).toBe(0);
    expect(ok.stdout).not.toMatch(/mismatch|error|failed/i);
    expect(s.proc.exitCode).toBeNull();
  });

  /** A depth-2 tree put on disk over the wire as upstream lays it out: data objects, child leaves, then the root. */
  async function deepTree(name: string, leaves: [number[], number[]]): Promise<number> {
    const c = await collie('vdi', 'create', '-y', name, '1T');
    expect(c.code, c.stderr).toBe(0);
    const v = await w.vid(name);
    const ok = async (r: Promise<{ rsp: { result: number } }>) => expect((await r).rsp.result).toBe(Res.SUCCESS);
    for (const [idx, byte] of [[5, 0x61], [200, 0x62]]) {
      await ok(w.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(v, idx), offset: 0 } }, Buffer.alloc(4096, byte)));
    }
    for (let n = 0; n < 2; n++) {
      const leaf = encodeBtreeNode({ depth: 1, idx: leaves[n], vid: leaves[n].map(() => v) });
      await ok(w.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToBtreeOid(v, n), offset: 0 } }, leaf));
    }
    const rootNode = encodeBtreeNode({ depth: 2, maxIdx: [5, 200], child: [vidToBtreeOid(v, 0), vidToBtreeOid(v, 1)] });
    const b = Buffer.alloc(SD_INODE_HEADER_SIZE - INODE_OFF.btreeCounter + rootNode.length);
    b.writeUInt32LE(2, 0); // btree_counter: the next child is n = 2
    rootNode.copy(b, SD_INODE_HEADER_SIZE - INODE_OFF.btreeCounter);
    await ok(w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(v), offset: INODE_OFF.btreeCounter } }, b));
    return v;
  }

  it('a depth-2 tree is followed through its child objects, and grows as upstream\'s does', async () => {
    const v = await deepTree('deep', [[5], [200]]);
    const OBJ = 4 * MB;
    const rd = await qemuIo('deep', `read -P 0x61 ${5 * OBJ} 4096`, `read -P 0x62 ${200 * OBJ} 4096`, `read -P 0 ${100 * OBJ} 4096`);
    expect(rd.code, rd.stderr).toBe(0);
    expect(rd.stdout).not.toMatch(/mismatch|error|failed/i);
    // past the last child's max: appended to the last child, whose max in the root moves
    const wr = await qemuIo('deep', `write -P 0x63 ${300 * OBJ} 4096`, `read -P 0x63 ${300 * OBJ} 4096`);
    expect(wr.code).toBe(0);
    expect(wr.stdout).not.toMatch(/mismatch|error|failed/i);
    const child1 = await w.send({ opcode: Op.READ_OBJ, dataLength: 64, obj: { oid: vidToBtreeOid(v, 1) } });
    expect(decodeBtreeNode(child1.data, 0, false)).toEqual({ depth: 1, idx: [200, 300], vid: [v, v] });
    expect(decodeBtreeNode(await root(v), SD_INODE_HEADER_SIZE, true)).toMatchObject({ depth: 2, maxIdx: [5, 300] });
  });

  it('a child leaf holding indexes outside its range is an error, not a wrong mapping', async () => {
    await deepTree('deepbad', [[5], [3]]); // 3 belongs left of max 5
    const rd = await qemuIo('deepbad', `read 0 4096`);
    expect(rd.code === 0 && !/error|fail/i.test(rd.stdout + rd.stderr)).toBe(false);
    const l = await collie('vdi', 'list', 'deepbad');
    expect(l.stderr).toContain('child 1 holds indexes outside (5, 200]');
    expect(s.proc.exitCode).toBeNull();
  });

  it('deleting a hyper volume frees the objects its tree names', async () => {
    const d = await collie('vdi', 'delete', 'hv');
    expect(d.code, d.stderr).toBe(0);
    const gone = async (oid: bigint) => (await w.send({ opcode: Op.READ_OBJ, dataLength: 8, obj: { oid } })).rsp.result === Res.NO_OBJ;
    // the root is emptied last
    const emptied = async () => (decodeBtreeNode(await root(vid), SD_INODE_HEADER_SIZE, true) as { idx: number[] }).idx.length === 0;
    await waitFor(emptied, 20_000, 'the root of hv emptied');
    for (const idx of [0, (10 * TB) / (4 * MB), END_IDX]) expect(await gone(vidToDataOid(vid, idx))).toBe(true);
    expect(s.proc.exitCode).toBeNull();
  });

  it('through a sheep with an object cache (-w) too: the root reaches the cluster on flush', async () => {
    const n = await startNbdSheep(1, ['-w', 'size=64']);
    const cw = new Wire(n.s.port);
    try {
      const c = await runCollie(['vdi', 'create', '-y', 'cached', '20T'], { port: n.s.port });
      expect(c.code, c.stderr).toBe(0);
      const io = await tool('qemu-io', ['-f', 'raw', '-c', `write -P 0x17 0 ${MB}`, '-c', `write -P 0x71 ${END} ${MB}`, '-c', 'flush',
        '-c', `read -P 0x17 0 ${MB}`, '-c', `read -P 0x71 ${END} ${MB}`, n.uri('cached')], { timeoutMs: 30_000 });
      expect(io.code, io.stderr).toBe(0);
      expect(io.stdout).not.toMatch(/mismatch|error|failed/i);
      const v = await cw.vid('cached');
      const r = await cw.c.request({ opcode: Op.READ_OBJ, dataLength: SD_INODE_HEADER_SIZE + 64, obj: { oid: vidToVdiOid(v) } });
      expect(decodeBtreeNode(r.data, SD_INODE_HEADER_SIZE, true)).toEqual({ depth: 1, idx: [0, END_IDX], vid: [v, v] });
      const l = await runCollie(['vdi', 'list', '-r', 'cached'], { port: n.s.port });
      expect(l.stdout).toMatch(new RegExp(`^= cached 0 ${SIZE} ${8 * MB} 0 `));
    } finally {
      cw.close();
      await n.s.kill();
    }
  });
});
