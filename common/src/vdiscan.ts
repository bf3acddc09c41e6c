// VDI index views and the pure parts of a VDI scan (spec §14.1): the live
// ids of the VDI bitmaps, flat and hyper (B-tree) indexes, object counts.
// Shared by collie and sheepfs.
import type { InodeHeader } from './inode.js';
import { SD_INODE_HEADER_SIZE, SD_INODE_DATA_INDEX_SIZE, MAX_DATA_OBJS, Res } from './constants.js';
import { SheepdogError } from './errors.js';
import { HyperIndex } from './hyperindex.js';
import { BTREE_NODE_MAGIC } from './btree.js';

export const BTREE_MAGIC = BTREE_NODE_MAGIC;
export const INODE_HEADER_PLUS_BTREE = SD_INODE_HEADER_SIZE + 8; // 4672

/** Allocated entries of a VDI's index: data_vdi_id[idx] = owner vid. */
export interface VdiIndex {
  get(idx: number): number;
  /** Non-zero entries in ascending index order. */
  entries(): Iterable<[number, number]>;
}

export class FlatIndex implements VdiIndex {
  constructor(readonly ids: Uint32Array) {}
  static fromBuffer(b: Buffer, count: number, off = 0): FlatIndex {
    const n = Math.min(count, Math.floor((b.length - off) / 4));
    const ids = new Uint32Array(count);
    for (let i = 0; i < n; i++) ids[i] = b.readUInt32LE(off + 4 * i);
    return new FlatIndex(ids);
  }
  get(idx: number): number {
    return idx < this.ids.length ? this.ids[idx] : 0;
  }
  set(idx: number, vid: number): void {
    this.ids[idx] = vid;
  }
  *entries(): Iterable<[number, number]> {
    for (let i = 0; i < this.ids.length; i++) if (this.ids[i]) yield [i, this.ids[i]];
  }
}

export class SparseIndex implements VdiIndex {
  readonly map = new Map<number, number>();
  get(idx: number): number {
    return this.map.get(idx) ?? 0;
  }
  *entries(): Iterable<[number, number]> {
    const keys = [...this.map.keys()].sort((a, b) => a - b);
    for (const k of keys) {
      const v = this.map.get(k)!;
      if (v) yield [k, v];
    }
  }
}

/** The root's header fields as stored, unchecked: only to size the read of the root (btree.ts decodes and checks it). */
export interface BtreeHeader {
  magic: number;
  depth: number;
  entries: number;
}
export function decodeBtreeHeader(b: Buffer, off: number): BtreeHeader {
  if (b.length < off + 8) return { magic: 0, depth: 0, entries: 0 };
  return { magic: b.readUInt16LE(off), depth: b.readUInt16LE(off + 2), entries: b.readUInt32LE(off + 4) };
}

/** Bytes of index metadata after the header (sd_inode_get_meta_size). */
export function indexMetaSize(h: InodeHeader, bt: BtreeHeader): number {
  if (h.storePolicy === 0) return 4 * nrDataObjs(h);
  if (bt.magic !== BTREE_MAGIC) return 0;
  // a corrupt count must not ask for more than the root area holds (the decoder then reports it)
  return Math.min(SD_INODE_DATA_INDEX_SIZE, 8 + bt.entries * (bt.depth === 1 ? 8 : 16));
}

export function objectSize(h: InodeHeader): number {
  return 2 ** (h.blockSizeShift || 22);
}

/** ceil(vdi_size / object_size), capped for flat VDIs. */
export function nrDataObjs(h: InodeHeader): number {
  const os = BigInt(objectSize(h));
  const n = Number((h.vdiSize + os - 1n) / os);
  return h.storePolicy === 0 ? Math.min(n, MAX_DATA_OBJS) : n;
}

export const isSnapshot = (h: InodeHeader): boolean => h.snapCtime !== 0n;

/**
 * Build the index of a VDI from its data_vdi_id area (`area` starts at
 * offset 4664 of the inode). A hyper volume's is its B-tree, checked as it
 * is decoded (BtreeError when corrupt); a depth-2 root has its leaf objects
 * read with readNode (SD_INODE_DATA_INDEX_SIZE bytes, direct).
 */
export async function buildIndexWith(readNode: (oid: bigint) => Promise<Buffer>, h: InodeHeader, area: Buffer): Promise<VdiIndex> {
  if (h.storePolicy === 0) return FlatIndex.fromBuffer(area, nrDataObjs(h));
  if (h.storePolicy !== 1) throw new SheepdogError(Res.INVALID_PARMS, `unknown store_policy ${h.storePolicy}`);
  return HyperIndex.load(h.vdiId, h.btreeCounter, area, readNode);
}

/** ids set in `inuse` and clear in `deleted`, ascending. */
export function liveVids(inuse: Buffer, deleted: Buffer): number[] {
  const out: number[] = [];
  for (let byte = 0; byte < inuse.length; byte++) {
    const v = inuse[byte] & ~(byte < deleted.length ? deleted[byte] : 0);
    if (!v) continue;
    for (let bit = 0; bit < 8; bit++) if (v & (1 << bit)) out.push(byte * 8 + bit);
  }
  return out;
}

/** Objects owned by the VDI itself and objects shared from others. */
export function statDataObjs(vid: number, index: VdiIndex): { mine: number; cow: number } {
  let mine = 0, cow = 0;
  for (const [, owner] of index.entries()) {
    if (owner === vid) mine++;
    else cow++;
  }
  return { mine, cow };
}
