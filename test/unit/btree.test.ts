// The hyper-volume B-tree index against the layout in
// erasure-coding-and-md.md §C.2 (bytes observed on upstream 1.0), its split
// rules, and hostile nodes.
import { describe, it, expect } from 'vitest';
import {
  decodeBtreeNode, encodeBtreeNode, emptyLeaf, BtreeError, HyperIndex, BTREE_MAX_LEAF_ENTRIES, BTREE_MAX_INDIRECT_ENTRIES,
  SD_INODE_HEADER_SIZE, INODE_OFF, vidToBtreeOid, vidToVdiOid, BtreeWriter,
} from '@sheepdog/common';

const hex = (s: string) => Buffer.from(s.replace(/[^0-9a-f]/gi, ''), 'hex');
// inode bytes from 4664 after writes at object indexes 0, 3 and 1,179,648 (doc §C.2)
const OBSERVED = hex('74 62 01 00 03 00 00 00 | 00 00 00 00 93 92 5e 00 | 03 00 00 00 93 92 5e 00 | 00 00 12 00 93 92 5e 00');
const VID = 0x5e9293;

/** Objects as byte arrays: what persist() wrote, for reading back with load(). */
class ObjectBytes implements BtreeWriter {
  objs = new Map<bigint, Buffer>();
  log: string[] = [];
  private obj(oid: bigint): Buffer {
    let b = this.objs.get(oid);
    if (!b) this.objs.set(oid, (b = Buffer.alloc(oid === vidToVdiOid(VID) ? SD_INODE_HEADER_SIZE + (4 << 20) : 4 << 20)));
    return b;
  }
  async createObj(oid: bigint, _cow: bigint, off: number, data: Buffer): Promise<void> {
    if (this.objs.has(oid)) throw new Error(`create of existing ${oid.toString(16)}`);
    this.log.push(`create ${oid.toString(16)}`);
    data.copy(this.obj(oid), off);
  }
  async writeObj(oid: bigint, off: number, data: Buffer): Promise<void> {
    this.log.push(`write ${oid.toString(16)}@${off}`);
    data.copy(this.obj(oid), off);
  }
  async load(): Promise<HyperIndex> {
    const ino = this.obj(vidToVdiOid(VID));
    return HyperIndex.load(VID, ino.readUInt32LE(INODE_OFF.btreeCounter), ino.subarray(SD_INODE_HEADER_SIZE), async (oid) => {
      const b = this.objs.get(oid);
      if (!b) throw new Error('no such object');
      return b;
    });
  }
}

describe('B-tree node codec (doc §C.2)', () => {
  it('decodes the observed root and encodes it back byte for byte', () => {
    const n = decodeBtreeNode(OBSERVED, 0, true);
    expect(n).toEqual({ depth: 1, idx: [0, 3, 0x120000], vid: [VID, VID, VID] });
    expect(encodeBtreeNode(n).equals(OBSERVED)).toBe(true);
  });

  it('an unwritten volume\'s root is 74 62 01 00 00 00 00 00; an all-zero root reads as empty', () => {
    expect(encodeBtreeNode(emptyLeaf()).equals(hex('7462010000000000'))).toBe(true);
    expect(decodeBtreeNode(Buffer.alloc(64), 0, true)).toEqual(emptyLeaf());
    // only the root may be zero: a child object that is all zeros is not a leaf
    expect(() => decodeBtreeNode(Buffer.alloc(64), 0, false)).toThrow(BtreeError);
  });

  it('depth-2 entries are {u32 max_idx, u32 pad, u64 child_oid}', () => {
    const b = encodeBtreeNode({ depth: 2, maxIdx: [10, 0x120000], child: [vidToBtreeOid(VID, 0), vidToBtreeOid(VID, 1)] });
    expect(b.equals(hex('74 62 02 00 02 00 00 00 | 0a 00 00 00 00 00 00 00 00 00 00 00 93 92 5e 10 | 00 00 12 00 00 00 00 00 01 00 00 00 93 92 5e 10'))).toBe(true);
  });

  it('upstream limits: 524,287 leaf entries, 262,143 root entries', () => {
    expect(BTREE_MAX_LEAF_ENTRIES).toBe(524287);
    expect(BTREE_MAX_INDIRECT_ENTRIES).toBe(262143);
  });

  describe('hostile nodes give a BtreeError, never a huge allocation', () => {
    const node = (magic: number, depth: number, entries: number, len = 64) => {
      const b = Buffer.alloc(len);
      b.writeUInt16LE(magic, 0); b.writeUInt16LE(depth, 2); b.writeUInt32LE(entries, 4);
      return b;
    };
    const cases: [string, Buffer, boolean, RegExp][] = [
      ['bad magic', node(0x1234, 1, 0), true, /bad magic/],
      ['depth 0', node(0x6274, 0, 0), true, /depth 0/],
      ['depth 3', node(0x6274, 3, 0), true, /depth 3/],
      ['depth 2 in a child', node(0x6274, 2, 0), false, /depth 2/],
      ['0xffffffff entries', node(0x6274, 1, 0xffffffff), true, /at most 524287/],
      ['more root entries than fit', node(0x6274, 2, 262144), true, /at most 262143/],
      ['entries beyond the bytes given', node(0x6274, 1, 8), true, /need 72 bytes, 64 given/],
      ['a header cut short', Buffer.from([0x74, 0x62, 1]), true, /shorter than its header/],
    ];
    for (const [what, b, root, msg] of cases) {
      it(what, () => expect(() => decodeBtreeNode(b, 0, root)).toThrow(msg));
    }
    it('unsorted or repeated indexes', () => {
      const b = encodeBtreeNode({ depth: 1, idx: [5, 5], vid: [1, 1] });
      expect(() => decodeBtreeNode(b, 0, true)).toThrow(/not above/);
      const c = encodeBtreeNode({ depth: 2, maxIdx: [9, 3], child: [vidToBtreeOid(VID, 0), vidToBtreeOid(VID, 1)] });
      expect(() => decodeBtreeNode(c, 0, true)).toThrow(/not above/);
    });
  });
});

describe('HyperIndex', () => {
  it('writes at indexes 0x120000, 0 and 3 give the observed root, in one write from btree_counter', async () => {
    const t = new HyperIndex(VID);
    t.set(0x120000, VID); t.set(0, VID); t.set(3, VID);
    expect([t.get(0), t.get(1), t.get(3), t.get(0x120000), t.get(0xffffffff)]).toEqual([VID, 0, VID, VID, 0]);
    expect(t.encodeRoot().equals(OBSERVED)).toBe(true);
    const o = new ObjectBytes();
    await t.persist(o, vidToVdiOid(VID), 3);
    expect(o.log).toEqual([`write ${vidToVdiOid(VID).toString(16)}@${INODE_OFF.btreeCounter}`]);
    const ino = o.objs.get(vidToVdiOid(VID))!;
    expect(ino.subarray(SD_INODE_HEADER_SIZE, SD_INODE_HEADER_SIZE + 32).equals(OBSERVED)).toBe(true);
    expect(ino.readUInt32LE(INODE_OFF.btreeCounter)).toBe(0);
    expect([...(await o.load()).entries()]).toEqual([[0, VID], [3, VID], [0x120000, VID]]);
  });

  it('a full in-inode leaf splits into two children (left = first half) under a depth-2 root', async () => {
    const t = new HyperIndex(VID);
    for (let i = 0; i < BTREE_MAX_LEAF_ENTRIES; i++) t.set(2 * i, VID);
    expect(t.depth).toBe(1);
    t.set(1, VID); // the 524,288th entry
    expect(t.depth).toBe(2);
    expect(t.counter).toBe(2);
    expect(t.childOids()).toEqual([vidToBtreeOid(VID, 0), vidToBtreeOid(VID, 1)]);
    const root = decodeBtreeNode(t.encodeRoot(), 0, true);
    const half = BTREE_MAX_LEAF_ENTRIES >> 1; // 262,143 in the left child
    expect(root).toEqual({ depth: 2, maxIdx: [2 * (half - 1), 2 * (BTREE_MAX_LEAF_ENTRIES - 1)], child: t.childOids() });
    expect(t.get(1)).toBe(VID);
    expect(t.get(2 * (BTREE_MAX_LEAF_ENTRIES - 1))).toBe(VID);
    expect(t.get(3)).toBe(0);

    const o = new ObjectBytes();
    await t.persist(o, vidToVdiOid(VID), 3);
    // children first, then the inode: the root never names an object that is not there
    expect(o.log.slice(0, 2).sort()).toEqual([`create ${vidToBtreeOid(VID, 0).toString(16)}`, `create ${vidToBtreeOid(VID, 1).toString(16)}`]);
    expect(o.log[2]).toBe(`write ${vidToVdiOid(VID).toString(16)}@${INODE_OFF.btreeCounter}`);
    const back = await o.load();
    expect(back.counter).toBe(2);
    expect(back.get(1)).toBe(VID);
    // past the last child's max: appended to the last child, whose max moves
    back.set(0x7fffffff, 7);
    expect(decodeBtreeNode(back.encodeRoot(), 0, true)).toMatchObject({ maxIdx: [2 * (half - 1), 0x7fffffff] });
    await back.persist(o, vidToVdiOid(VID), 3);
    expect(o.log.at(-2)).toBe(`write ${vidToBtreeOid(VID, 1).toString(16)}@0`);
    expect((await o.load()).get(0x7fffffff)).toBe(7);
  }, 20_000);

  it('a full child splits in half into a new child', () => {
    const t = new HyperIndex(VID, 0, { leaf: 4, root: 3 });
    for (const i of [10, 20, 30, 40, 50]) t.set(i, VID); // root leaf of 4 splits into [10,20] [30,40], then 50 appends
    expect(decodeBtreeNode(t.encodeRoot(), 0, true)).toMatchObject({ depth: 2, maxIdx: [20, 50] });
    t.set(45, VID); t.set(35, VID); // [30,40,50] + 45 -> 4 entries; 35 makes it split
    expect(decodeBtreeNode(t.encodeRoot(), 0, true)).toMatchObject({ maxIdx: [20, 40, 50] });
    expect([...t.entries()].map(([i]) => i)).toEqual([10, 20, 30, 35, 40, 45, 50]);
    expect(t.counter).toBe(3);
    // a full root is an error for the request (upstream panics)
    for (const i of [11, 12]) t.set(i, VID);
    expect(() => t.set(13, VID)).toThrow(/index of this hyper volume is full/);
    // and leaves the tree as it was
    expect([...t.entries()].map(([i]) => i)).toEqual([10, 11, 12, 20, 30, 35, 40, 45, 50]);
    expect(t.get(13)).toBe(0);
  });

  it('rejects children that are not this VDI\'s B-tree objects or hold indexes outside their range', async () => {
    const o = new ObjectBytes();
    const t = new HyperIndex(VID, 0, { leaf: 2, root: 10 });
    for (const i of [1, 2, 3]) t.set(i, VID);
    await t.persist(o, vidToVdiOid(VID), 1);
    const ino = o.objs.get(vidToVdiOid(VID))!;
    const child0 = vidToBtreeOid(VID, 0);
    o.objs.get(child0)!.writeUInt32LE(99, 8); // child 0 (max 1) now claims index 99
    await expect(o.load()).rejects.toThrow(/outside/);
    o.objs.get(child0)!.writeUInt32LE(1, 8);
    ino.writeBigUInt64LE(vidToBtreeOid(VID + 1, 0), SD_INODE_HEADER_SIZE + 16); // another VDI's object
    await expect(o.load()).rejects.toThrow(/not a B-tree object of VDI/);
  });
});
