// A client shared by successive connections (an NBD export, a sheepfs
// volume) re-reads its VDI's index when one attaches. A write of its own
// that allocates an object while that read is on the wire is newer than
// the bytes read: the re-read must not point the entry back at the parent,
// or reads return the parent's bytes until the next re-read.
import { describe, it, expect } from 'vitest';
import { VdiIO, emptyInodeHeader, vidToVdiOid, SD_INODE_HEADER_SIZE, type VdiBackend } from '@sheepdog/common';

const PARENT = 0x10;
const CHILD = 0x11;
const OBJ = 1 << 22;

/** Objects in memory; the index read of the child's inode can be held at the moment it was asked for. */
class MemoryBackend implements VdiBackend {
  objects = new Map<bigint, Buffer>();
  indexes = new Map<number, Uint32Array>();
  holdIndexRead = false;
  held: (() => void)[] = [];

  async readObj(oid: bigint, off: number, len: number): Promise<Buffer> {
    if (oid === vidToVdiOid(CHILD)) {
      // the bytes as they are when the request reaches the store
      const idx = this.indexes.get(CHILD)!;
      const b = Buffer.alloc(SD_INODE_HEADER_SIZE + 4 * idx.length);
      for (let i = 0; i < idx.length; i++) b.writeUInt32LE(idx[i], SD_INODE_HEADER_SIZE + 4 * i);
      const out = Buffer.from(b.subarray(off, off + len));
      if (this.holdIndexRead) await new Promise<void>((r) => this.held.push(r));
      return out;
    }
    const o = this.objects.get(oid);
    return o ? Buffer.from(o.subarray(off, off + len)) : Buffer.alloc(len);
  }
  async writeObj(oid: bigint, off: number, data: Buffer): Promise<void> {
    data.copy(this.objects.get(oid)!, off);
  }
  async createObj(oid: bigint, cowOid: bigint, off: number, data: Buffer): Promise<void> {
    const o = cowOid ? Buffer.from(this.objects.get(cowOid) ?? Buffer.alloc(OBJ)) : Buffer.alloc(OBJ);
    data.copy(o, off);
    this.objects.set(oid, o);
  }
  async writeIndex(vid: number, first: number, entries: Buffer): Promise<void> {
    const idx = this.indexes.get(vid)!;
    for (let i = 0; i < entries.length / 4; i++) idx[first + i] = entries.readUInt32LE(4 * i);
  }
}

describe('VdiIO.refreshIndex', () => {
  it('keeps an entry its own write set while the index was being read', async () => {
    const be = new MemoryBackend();
    const parentObj = Buffer.alloc(OBJ, 0x61); // 'a'
    be.objects.set((BigInt(PARENT) << 32n) | 0n, parentObj);
    be.indexes.set(CHILD, new Uint32Array(4).fill(0));
    be.indexes.get(CHILD)![0] = PARENT;
    const h = { ...emptyInodeHeader(), vdiId: CHILD, parentVdiId: PARENT, vdiSize: BigInt(4 * OBJ), nrCopies: 1, blockSizeShift: 22 };
    const io = new VdiIO(be, h, Uint32Array.from(be.indexes.get(CHILD)!));

    be.holdIndexRead = true;
    const refreshing = io.refreshIndex();
    await new Promise((r) => setImmediate(r));
    expect(be.held.length).toBe(1); // the index bytes (child → parent) are taken

    // the copy-on-write write lands while the read's answer is on its way
    be.holdIndexRead = false;
    await io.write(0, Buffer.alloc(512, 0x62)); // 'b'
    expect(be.indexes.get(CHILD)![0]).toBe(CHILD);

    be.held[0]();
    await refreshing;
    expect(io.objects.get(0)).toBe(CHILD);
    const got = await io.read(0, 512);
    expect(got.equals(Buffer.alloc(512, 0x62))).toBe(true);
  });

  it('takes entries other clients set', async () => {
    const be = new MemoryBackend();
    be.objects.set((BigInt(PARENT) << 32n) | 1n, Buffer.alloc(OBJ, 0x61));
    be.indexes.set(CHILD, new Uint32Array(4).fill(0));
    be.indexes.get(CHILD)![1] = PARENT;
    const h = { ...emptyInodeHeader(), vdiId: CHILD, parentVdiId: PARENT, vdiSize: BigInt(4 * OBJ), nrCopies: 1, blockSizeShift: 22 };
    const io = new VdiIO(be, h, Uint32Array.from(be.indexes.get(CHILD)!));

    // another gateway's client allocated object 1 in the child
    be.objects.set((BigInt(CHILD) << 32n) | 1n, Buffer.alloc(OBJ, 0x63));
    be.indexes.get(CHILD)![1] = CHILD;
    expect((await io.read(OBJ, 4)).toString()).toBe('aaaa');
    await io.refreshIndex();
    expect((await io.read(OBJ, 4)).toString()).toBe('cccc');
  });
});
