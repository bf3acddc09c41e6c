// The B-tree index of a hyper volume (store_policy 1), laid out as upstream
// 1.0 does (doc "erasure-coding-and-md" §C.2). One node format serves the
// root (the 4 MiB area at inode offset 4664) and the child objects:
//   u16 magic 0x6274, u16 depth, u32 entries, then
//   depth 1: entries x {u32 idx, u32 vdi_id}
//   depth 2: entries x {u32 max_idx, u32 pad, u64 child_oid} (root only).
// Nodes come from disk and from the wire, so every count is checked against
// the bytes that actually arrived before anything is sized by it.
import { Res, SD_BTREE_OBJ_SIZE } from './constants.js';
import { SheepdogError } from './errors.js';

export const BTREE_NODE_MAGIC = 0x6274;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
export const BTREE_HEADER_SIZE = 8;
export const BTREE_LEAF_ENTRY_SIZE = 8;
export const BTREE_INDIRECT_ENTRY_SIZE = 16;
/** A node is as large as the root area and a child object: 4 MiB. */
export const BTREE_NODE_SIZE = SD_BTREE_OBJ_SIZE;
export const BTREE_MAX_LEAF_ENTRIES = (BTREE_NODE_SIZE - BTREE_HEADER_SIZE) / BTREE_LEAF_ENTRY_SIZE; // 524,287
export const BTREE_MAX_INDIRECT_ENTRIES = Math.floor((BTREE_NODE_SIZE - BTREE_HEADER_SIZE) / BTREE_INDIRECT_ENTRY_SIZE); // 262,143

/** A malformed node: the index cannot be trusted, so the request fails instead of guessing. */
export class BtreeError extends SheepdogError {
  constructor(message: string) {
    super(Res.EIO, `corrupt B-tree index: ${message}`);
    this.name = 'BtreeError';
  }
}

/** Depth 1: sorted object indexes and the vid owning each (0 = unallocated). */
export interface BtreeLeaf {
  depth: 1;
  idx: number[];
  vid: number[];
}

/** Depth 2 (root only): for each child leaf, the largest index it holds and its oid. */
export interface BtreeIndirect {
  depth: 2;
  maxIdx: number[];
  child: bigint[];
}

export type BtreeNode = BtreeLeaf | BtreeIndirect;

export const emptyLeaf = (): BtreeLeaf => ({ depth: 1, idx: [], vid: [] });

/**
 * Decode the node at b[off..]. `root` allows depth 2 and the all-zero
 * "never initialised" root that upstream readers accept as an empty tree.
 */
export function decodeBtreeNode(b: Buffer, off: number, root: boolean): BtreeNode {
  const avail = b.length - off;
  if (avail < BTREE_HEADER_SIZE) throw new BtreeError(`node of ${Math.max(0, avail)} bytes is shorter than its header`);
  if (root && b.readUInt32LE(off) === 0) return emptyLeaf();
  const magic = b.readUInt16LE(off);
  const depth = b.readUInt16LE(off + 2);
  const entries = b.readUInt32LE(off + 4);
  if (magic !== BTREE_NODE_MAGIC) throw new BtreeError(`bad magic 0x${magic.toString(16)}`);
  if (depth !== 1 && !(depth === 2 && root)) throw new BtreeError(`depth ${depth} where ${root ? '1 or 2' : '1'} is allowed`);
  const size = depth === 1 ? BTREE_LEAF_ENTRY_SIZE : BTREE_INDIRECT_ENTRY_SIZE;
  const max = depth === 1 ? BTREE_MAX_LEAF_ENTRIES : BTREE_MAX_INDIRECT_ENTRIES;
  if (entries > max) throw new BtreeError(`${entries} entries in a depth-${depth} node (at most ${max})`);
  if (BTREE_HEADER_SIZE + entries * size > avail) throw new BtreeError(`${entries} entries need ${BTREE_HEADER_SIZE + entries * size} bytes, ${avail} given`);
  // lookups binary-search: an unsorted node would silently map indexes to the wrong objects
  let prev = -1;
  if (depth === 1) {
    // entries was checked against the bytes present, so these arrays are sized by data that arrived
    const words = leafWords(b, off + BTREE_HEADER_SIZE, entries);
    const idx = new Array<number>(entries);
    const vid = new Array<number>(entries);
    for (let i = 0; i < entries; i++) {
      const k = words[2 * i];
      if (k <= prev) throw new BtreeError(`leaf entry ${i} (index ${k}) is not above the one before (${prev})`);
      prev = k;
      idx[i] = k;
      vid[i] = words[2 * i + 1];
    }
    return { depth: 1, idx, vid };
  }
  const node: BtreeIndirect = { depth: 2, maxIdx: [], child: [] };
  for (let i = 0, p = off + BTREE_HEADER_SIZE; i < entries; i++, p += size) {
    const k = b.readUInt32LE(p);
    if (k <= prev) throw new BtreeError(`root entry ${i} (max index ${k}) is not above the one before (${prev})`);
    prev = k;
    node.maxIdx.push(k);
    node.child.push(b.readBigUInt64LE(p + 8));
  }
  return node;
}

/** The 2 x entries little-endian words at b[at..] (a view when aligned, else a copy). */
function leafWords(b: Buffer, at: number, entries: number): Uint32Array {
  if (LITTLE_ENDIAN && ((b.byteOffset + at) & 3) === 0) return new Uint32Array(b.buffer, b.byteOffset + at, 2 * entries);
  const w = new Uint32Array(2 * entries);
  for (let i = 0; i < 2 * entries; i++) w[i] = b.readUInt32LE(at + 4 * i);
  return w;
}

/** Bytes a node's encoding uses (header plus its entries); the rest of its 4 MiB stays as it is. */
export function btreeNodeUsed(n: BtreeNode): number {
  return n.depth === 1 ? BTREE_HEADER_SIZE + BTREE_LEAF_ENTRY_SIZE * n.idx.length : BTREE_HEADER_SIZE + BTREE_INDIRECT_ENTRY_SIZE * n.maxIdx.length;
}

/** The used part of a node, as upstream writes it (the pad of depth-2 entries is zero). */
export function encodeBtreeNode(n: BtreeNode): Buffer {
  const out = Buffer.alloc(btreeNodeUsed(n));
  out.writeUInt16LE(BTREE_NODE_MAGIC, 0);
  out.writeUInt16LE(n.depth, 2);
  if (n.depth === 1) {
    out.writeUInt32LE(n.idx.length, 4);
    if (LITTLE_ENDIAN && (out.byteOffset & 3) === 0) {
      // a full leaf is half a million entries, re-encoded on every allocating write:
      // word stores, not a million writeUInt32LE calls
      const words = new Uint32Array(out.buffer, out.byteOffset + BTREE_HEADER_SIZE, 2 * n.idx.length);
      for (let i = 0; i < n.idx.length; i++) {
        words[2 * i] = n.idx[i];
        words[2 * i + 1] = n.vid[i];
      }
      return out;
    }
    for (let i = 0, p = BTREE_HEADER_SIZE; i < n.idx.length; i++, p += BTREE_LEAF_ENTRY_SIZE) {
      out.writeUInt32LE(n.idx[i] >>> 0, p);
      out.writeUInt32LE(n.vid[i] >>> 0, p + 4);
    }
  } else {
    out.writeUInt32LE(n.maxIdx.length, 4);
    for (let i = 0, p = BTREE_HEADER_SIZE; i < n.maxIdx.length; i++, p += BTREE_INDIRECT_ENTRY_SIZE) {
      out.writeUInt32LE(n.maxIdx[i] >>> 0, p);
      out.writeBigUInt64LE(n.child[i], p + 8);
    }
  }
  return out;
}

/** First position in the sorted keys whose key is >= k. */
export function lowerBound(keys: readonly number[], k: number): number {
  let lo = 0, hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid] < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
