// The object index of a hyper volume in memory: the B-tree of btree.ts with
// upstream's insert and split rules (§C.2), and the writes that persist it.
// Only two levels exist: the root in the inode, and (at depth 2) child
// leaves in objects of their own, named (vid << 32) | bit 60 | n with n
// taken from btree_counter.
import { Res, SD_INODE_HEADER_SIZE } from './constants.js';
import { SheepdogError } from './errors.js';
import { INODE_OFF } from './inode.js';
import { vidToBtreeOid } from './oid.js';
import {
  BtreeError, BtreeLeaf, BTREE_MAX_INDIRECT_ENTRIES, BTREE_MAX_LEAF_ENTRIES, decodeBtreeNode,
  emptyLeaf, encodeBtreeNode, lowerBound,
} from './btree.js';

interface Child {
  oid: bigint;
  leaf: BtreeLeaf;
}

/** Object writes that persist the index (a VdiBackend provides them). */
export interface BtreeWriter {
  createObj(oid: bigint, cowOid: bigint, off: number, data: Buffer, copies: number): Promise<void>;
  writeObj(oid: bigint, off: number, data: Buffer, copies: number): Promise<void>;
}

export interface HyperIndexLimits {
  leaf: number;
  root: number;
}
const UPSTREAM_LIMITS: HyperIndexLimits = { leaf: BTREE_MAX_LEAF_ENTRIES, root: BTREE_MAX_INDIRECT_ENTRIES };

export class HyperIndex {
  /** Depth 1: the root itself is the leaf. */
  private rootLeaf?: BtreeLeaf;
  /** Depth 2: the children in order, with the largest index each holds. */
  private maxIdx: number[] = [];
  private children: Child[] = [];
  counter: number;
  private rootDirty = false;
  private created = new Set<Child>();
  private changed = new Set<Child>();
  private chain: Promise<void> = Promise.resolve();

  constructor(readonly vid: number, counter = 0, private readonly limits: HyperIndexLimits = UPSTREAM_LIMITS) {
    this.rootLeaf = emptyLeaf();
    this.counter = counter;
  }

  /**
   * The index of vid from its root area (inode bytes from 4664 on) and
   * btree_counter; child leaves of a depth-2 root are read with readNode.
   * Throws BtreeError on any inconsistency.
   */
  static async load(vid: number, counter: number, area: Buffer, readNode: (oid: bigint) => Promise<Buffer>): Promise<HyperIndex> {
    const hi = new HyperIndex(vid, counter);
    const root = decodeBtreeNode(area, 0, true);
    if (root.depth === 1) {
      hi.rootLeaf = root;
      return hi;
    }
    hi.rootLeaf = undefined;
    for (const oid of root.child) {
      if (oid !== vidToBtreeOid(vid, Number(oid & 0xffffffffn))) {
        throw new BtreeError(`child 0x${oid.toString(16)} is not a B-tree object of VDI ${vid.toString(16)}`);
      }
    }
    let prevMax = -1;
    // one child at a time: only its decoded entries stay, never many 4 MiB buffers at once
    for (let i = 0; i < root.child.length; i++) {
      const leaf = decodeBtreeNode(await readNode(root.child[i]), 0, false) as BtreeLeaf;
      const n = leaf.idx.length;
      // each child covers (previous max, its max]: anything else breaks the root's binary search
      if (n && (leaf.idx[0] <= prevMax || leaf.idx[n - 1] > root.maxIdx[i])) {
        throw new BtreeError(`child ${i} holds indexes outside (${prevMax}, ${root.maxIdx[i]}]`);
      }
      prevMax = root.maxIdx[i];
      hi.children.push({ oid: root.child[i], leaf });
      hi.maxIdx.push(root.maxIdx[i]);
    }
    return hi;
  }

  get depth(): 1 | 2 {
    return this.rootLeaf ? 1 : 2;
  }

  get(idx: number): number {
    const leaf = this.rootLeaf ?? this.children[lowerBound(this.maxIdx, idx)]?.leaf;
    if (!leaf) return 0;
    const p = lowerBound(leaf.idx, idx);
    return leaf.idx[p] === idx ? leaf.vid[p] : 0;
  }

  /** Allocated entries in ascending index order. */
  *entries(): Iterable<[number, number]> {
    const leaves = this.rootLeaf ? [this.rootLeaf] : this.children.map((c) => c.leaf);
    for (const l of leaves) for (let i = 0; i < l.idx.length; i++) if (l.vid[i]) yield [l.idx[i], l.vid[i]];
  }

  /** The oids of the child leaf objects. */
  childOids(): bigint[] {
    return this.children.map((c) => c.oid);
  }

  set(idx: number, vid: number): void {
    if (!Number.isInteger(idx) || idx < 0 || idx > 0xffffffff) throw new SheepdogError(Res.INVALID_PARMS, `object index ${idx} is out of range`);
    if (this.rootLeaf) {
      const leaf = this.rootLeaf;
      const p = lowerBound(leaf.idx, idx);
      if (leaf.idx[p] === idx) {
        if (leaf.vid[p] !== vid) { leaf.vid[p] = vid; this.rootDirty = true; }
        return;
      }
      if (!vid) return;
      if (leaf.idx.length < this.limits.leaf) {
        leaf.idx.splice(p, 0, idx);
        leaf.vid.splice(p, 0, vid);
        this.rootDirty = true;
        return;
      }
      this.splitRoot();
      this.set(idx, vid);
      return;
    }
    const c = lowerBound(this.maxIdx, idx);
    if (c === this.children.length) {
      if (!vid) return;
      const last = this.children[c - 1];
      if (last && last.leaf.idx.length < this.limits.leaf) {
        last.leaf.idx.push(idx);
        last.leaf.vid.push(vid);
        this.maxIdx[c - 1] = idx;
        this.touch(last);
        this.rootDirty = true;
        return;
      }
      this.addChild(c, { depth: 1, idx: [idx], vid: [vid] });
      return;
    }
    const child = this.children[c];
    const leaf = child.leaf;
    const p = lowerBound(leaf.idx, idx);
    if (leaf.idx[p] === idx) {
      if (leaf.vid[p] !== vid) { leaf.vid[p] = vid; this.touch(child); }
      return;
    }
    if (!vid) return;
    if (leaf.idx.length < this.limits.leaf) {
      leaf.idx.splice(p, 0, idx);
      leaf.vid.splice(p, 0, vid);
      this.touch(child);
      return;
    }
    // a full child splits in half: the upper half moves to a new child right after it
    this.checkRoom();
    const half = leaf.idx.length >> 1;
    const right: BtreeLeaf = { depth: 1, idx: leaf.idx.splice(half), vid: leaf.vid.splice(half) };
    const oldMax = this.maxIdx[c];
    this.maxIdx[c] = leaf.idx[leaf.idx.length - 1];
    this.touch(child);
    this.addChild(c + 1, right, oldMax);
    this.set(idx, vid);
  }

  private touch(c: Child): void {
    if (!this.created.has(c)) this.changed.add(c);
  }

  /** Before a change that adds a child: upstream panics on a full root; a request error is enough. */
  private checkRoom(): void {
    if (this.children.length >= this.limits.root) throw new SheepdogError(Res.NO_SPACE, 'the B-tree index of this hyper volume is full');
  }

  private addChild(at: number, leaf: BtreeLeaf, maxIdx = leaf.idx[leaf.idx.length - 1]): void {
    this.checkRoom();
    const child: Child = { oid: vidToBtreeOid(this.vid, this.counter), leaf };
    this.counter = (this.counter + 1) >>> 0;
    this.children.splice(at, 0, child);
    this.maxIdx.splice(at, 0, maxIdx);
    this.created.add(child);
    this.rootDirty = true;
  }

  /** A full in-inode leaf becomes two child leaves (left = first half) under a depth-2 root. */
  private splitRoot(): void {
    const leaf = this.rootLeaf!;
    const half = leaf.idx.length >> 1;
    const right: BtreeLeaf = { depth: 1, idx: leaf.idx.splice(half), vid: leaf.vid.splice(half) };
    this.rootLeaf = undefined;
    this.addChild(0, leaf);
    this.addChild(1, right);
  }

  /** The root node's encoding (its used part). */
  encodeRoot(): Buffer {
    if (this.rootLeaf) return encodeBtreeNode(this.rootLeaf);
    return encodeBtreeNode({ depth: 2, maxIdx: this.maxIdx, child: this.children.map((c) => c.oid) });
  }

  get dirty(): boolean {
    return this.rootDirty || this.created.size > 0 || this.changed.size > 0;
  }

  /**
   * Write what changed since the last persist: new children (created),
   * changed children, then one write of the inode from btree_counter (568)
   * through the used part of the root, so counter and root land together
   * and never point at a child that is not written yet. Calls are
   * serialised: each writes the state current when it runs, so a slower
   * earlier write can never overwrite a later one.
   */
  persist(w: BtreeWriter, inodeOid: bigint, copies: number): Promise<void> {
    const run = this.chain.then(() => this.writeDirty(w, inodeOid, copies));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async writeDirty(w: BtreeWriter, inodeOid: bigint, copies: number): Promise<void> {
    if (!this.dirty) return;
    const created = [...this.created];
    const changed = [...this.changed];
    this.created.clear();
    this.changed.clear();
    this.rootDirty = false;
    try {
      // child leaves are replicated with nr_copies even for EC VDIs (§C.2)
      await Promise.all([
        ...created.map((c) => w.createObj(c.oid, 0n, 0, encodeBtreeNode(c.leaf), copies)),
        ...changed.map((c) => w.writeObj(c.oid, 0, encodeBtreeNode(c.leaf), copies)),
      ]);
      const root = this.encodeRoot();
      const b = Buffer.alloc(SD_INODE_HEADER_SIZE - INODE_OFF.btreeCounter + root.length);
      b.writeUInt32LE(this.counter, 0);
      root.copy(b, SD_INODE_HEADER_SIZE - INODE_OFF.btreeCounter);
      await w.writeObj(inodeOid, INODE_OFF.btreeCounter, b, copies);
    } catch (e) {
      for (const c of created) this.created.add(c);
      for (const c of changed) if (!this.created.has(c)) this.changed.add(c);
      this.rootDirty = true;
      throw e;
    }
  }
}
