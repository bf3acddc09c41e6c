// VDI metadata: id bitmaps, the per-VDI state table, name lookup (§9),
// create/clone/snapshot (§10.5), delete (§6.14) and attributes (§6.12).
import {
  Res, SheepdogError, hash24, SD_NR_VDIS, SD_INODE_SIZE, SD_INODE_HEADER_SIZE, SD_INODE_GREF_OFFSET,
  SD_ATTR_OBJ_SIZE, Inode, InodeHeader, emptyInodeHeader, encodeInodeHeader, decodeInodeHeader, timestamp64,
  vidToVdiOid, vidToAttrOid, attrHash, attrSameKey, MAX_DATA_OBJS, LockState, SdNode,
  Flag, ClusterFlag, INODE_OFF, encodeBtreeNode, emptyLeaf, decodeEcPolicy,
} from '@sheepdog/common';
import { VdiBitmap } from './bitmap.js';
import { log } from './log.js';

export interface VdiStateEntry {
  vid: number;
  nrCopies: number;
  copyPolicy: number;
  blockSizeShift: number;
  snapshot: boolean;
  deleted: boolean;
  parentVid: number;
  lockState: number;
  lockOwner?: SdNode;
  participants: SdNode[];
  /** Deleted, and its objects not all reclaimed yet (see Reclaimer). */
  reclaim?: boolean;
}

/** What VDI code needs from the data path (the gateway). */
export interface ObjectIO {
  read(oid: bigint, off: number, len: number): Promise<Buffer>;
  write(oid: bigint, off: number, data: Buffer, copies?: number): Promise<void>;
  /** Create an object of its full size: zeros plus the given ranges. */
  createRanges(oid: bigint, ranges: { off: number; data: Buffer }[], copies?: number): Promise<void>;
  /** Drop one reference to a data object (§10.8). */
  decref(vid: number, idx: number, generation: number, count: number): Promise<void>;
}

export interface LookupResult {
  vid: number; // found id, 0 if none
  result: number; // SUCCESS, NO_VDI, NO_TAG, FULL_VDI
  nextSnapid: number;
  freeVid: number;
  /** Newest snapshot of the name, when its working VDI is gone. */
  latestSnapshot: number;
}

export interface NewVdiRequest {
  name: string;
  vdiSize: bigint;
  baseVdiId: number;
  copies: number;
  copyPolicy: number;
  storePolicy: number;
  blockSizeShift: number;
  snapshot: boolean;
}

/** A state change that every node applies in the same order. */
export type VdiNotice =
  | { t: 'vdi_add'; newVid: number; oldVid: number; copies: number; copyPolicy: number; blockSizeShift: number; setBitmap: boolean; oldIsSnapshot: boolean }
  | { t: 'vdi_del'; vid: number }
  | { t: 'vdi_reclaimed'; vid: number }
  | { t: 'vdi_copies'; vid: number; copies: number; copyPolicy: number; blockSizeShift: number };

/**
 * A VDI's entry in the table every node keeps on disk (vdis.json): enough to
 * place its objects and find its inode without reading any object.
 * [vid, nrCopies, copyPolicy, blockSizeShift, flags (1 snapshot, 2 deleted, 4 objects not reclaimed yet), parentVid]
 */
export type VdiTableRow = [number, number, number, number, number, number];

export class VdiRegistry {
  readonly inUse = new VdiBitmap();
  readonly deleted = new VdiBitmap();
  readonly states = new Map<number, VdiStateEntry>();

  constructor(
    private readonly io: ObjectIO,
    private readonly defaults: () => { copies: number; copyPolicy: number; blockSizeShift: number; flags: number },
  ) {}

  reset(): void {
    this.inUse.clearAll();
    this.deleted.clearAll();
    this.states.clear();
  }

  state(vid: number): VdiStateEntry | undefined {
    return this.states.get(vid);
  }

  /** Object size of data objects owned by vid. */
  objectSize(vid: number): number {
    const s = this.states.get(vid);
    const shift = s?.blockSizeShift || this.defaults().blockSizeShift || 22;
    return shift < 31 ? 1 << shift : 2 ** shift; // `**` with a variable exponent calls pow() on every request
  }

  isSnapshot(vid: number): boolean {
    return this.states.get(vid)?.snapshot ?? false;
  }

  /** Rebuild from inode headers found in the store (start-up). */
  loadFromInode(h: InodeHeader): void {
    const vid = h.vdiId;
    if (!vid || vid >= SD_NR_VDIS) return;
    this.inUse.set(vid);
    const deleted = h.name === '';
    if (deleted) this.deleted.set(vid);
    this.states.set(vid, {
      vid, nrCopies: h.nrCopies, copyPolicy: h.copyPolicy, blockSizeShift: h.blockSizeShift,
      snapshot: h.snapCtime !== 0n, deleted, parentVid: h.parentVdiId, lockState: LockState.UNLOCKED, participants: [],
    });
  }

  /** The table as kept on disk and exchanged on joins. */
  table(): VdiTableRow[] {
    const rows: VdiTableRow[] = [];
    for (const v of this.inUse.setBits()) {
      const st = this.states.get(v);
      const flags = (st?.snapshot ? 1 : 0) | (st?.deleted || this.deleted.test(v) ? 2 : 0) | (st?.reclaim ? 4 : 0);
      rows.push([v, st?.nrCopies ?? 0, st?.copyPolicy ?? 0, st?.blockSizeShift ?? 0, flags, st?.parentVid ?? 0]);
    }
    return rows;
  }

  /**
   * Add what another node's table knows: VDIs we have no entry for, and the
   * snapshot and deleted marks (which are never taken back). Returns whether
   * anything changed.
   */
  merge(rows: VdiTableRow[]): boolean {
    let changed = false;
    for (const [vid, copies, policy, shift, flags, parent] of rows) {
      if (!vid || vid >= SD_NR_VDIS) continue;
      const snapshot = (flags & 1) !== 0;
      const deleted = (flags & 2) !== 0;
      // a reclaim another node still waits for is run again (reclaiming an emptied index does nothing)
      const reclaim = (flags & 4) !== 0;
      if (!this.inUse.test(vid)) { this.inUse.set(vid); changed = true; }
      if (deleted && !this.deleted.test(vid)) { this.deleted.set(vid); changed = true; }
      const st = this.states.get(vid);
      if (!st) {
        this.states.set(vid, {
          vid, nrCopies: copies, copyPolicy: policy, blockSizeShift: shift, snapshot, deleted, parentVid: parent,
          lockState: LockState.UNLOCKED, participants: [], reclaim,
        });
        changed = true;
        continue;
      }
      if (snapshot && !st.snapshot) { st.snapshot = true; changed = true; }
      if (deleted && !st.deleted) { st.deleted = true; changed = true; }
      if (reclaim && !st.reclaim) { st.reclaim = true; changed = true; }
      if (!st.nrCopies && copies) { st.nrCopies = copies; st.copyPolicy = policy; changed = true; }
      if (!st.blockSizeShift && shift) { st.blockSizeShift = shift; changed = true; }
    }
    return changed;
  }

  apply(n: VdiNotice): void {
    switch (n.t) {
      case 'vdi_add': {
        if (n.setBitmap) this.inUse.set(n.newVid);
        this.states.set(n.newVid, {
          vid: n.newVid, nrCopies: n.copies, copyPolicy: n.copyPolicy, blockSizeShift: n.blockSizeShift,
          snapshot: false, deleted: false, parentVid: n.oldVid, lockState: LockState.UNLOCKED, participants: [],
        });
        if (n.oldVid && n.oldIsSnapshot) {
          const o = this.states.get(n.oldVid);
          if (o) o.snapshot = true;
          else this.states.set(n.oldVid, {
            vid: n.oldVid, nrCopies: n.copies, copyPolicy: n.copyPolicy, blockSizeShift: n.blockSizeShift,
            snapshot: true, deleted: false, parentVid: 0, lockState: LockState.UNLOCKED, participants: [],
          });
        }
        break;
      }
      case 'vdi_del': {
        this.deleted.set(n.vid);
        const s = this.states.get(n.vid);
        if (s) { s.deleted = true; s.reclaim = true; }
        break;
      }
      case 'vdi_reclaimed': {
        const s = this.states.get(n.vid);
        if (s) s.reclaim = false;
        break;
      }
      case 'vdi_copies': {
        const s = this.states.get(n.vid);
        if (s) { s.nrCopies = n.copies; s.copyPolicy = n.copyPolicy; if (n.blockSizeShift) s.blockSizeShift = n.blockSizeShift; }
        break;
      }
    }
  }

  /**
   * undefined only when the inode does not exist; when it cannot be read
   * (its holders are away, say) the lookup fails with that error rather
   * than answering "no such VDI" for one that exists.
   */
  private async readHeader(vid: number): Promise<InodeHeader | undefined> {
    try {
      return decodeInodeHeader(await this.io.read(vidToVdiOid(vid), 0, 572));
    } catch (e) {
      if (e instanceof SheepdogError && e.result === Res.NO_OBJ) return undefined;
      throw e;
    }
  }

  /** §9.2 + §9.3: resolve (name, snapid, tag). */
  async lookup(name: string, snapid: number, tag: string): Promise<LookupResult> {
    const recycle = (this.defaults().flags & ClusterFlag.RECYCLE_VID) !== 0;
    const res: LookupResult = { vid: 0, result: Res.NO_VDI, nextSnapid: 1, freeVid: 0, latestSnapshot: 0 };
    const ranges: [number, number][] = []; // scanned high to low, in this order
    if (recycle) {
      const free = this.inUse.findNextZero(1);
      if (free < 0) { res.result = Res.FULL_VDI; return res; }
      res.freeVid = free;
      ranges.push([1, SD_NR_VDIS]);
    } else {
      let left = hash24(name);
      if (left === 0) left = 1;
      let right = this.inUse.findNextZero(left);
      if (right === left) { res.freeVid = left; return res; }
      if (right < 0) {
        right = this.inUse.findNextZero(1);
        if (right < 0) { res.result = Res.FULL_VDI; return res; }
        ranges.push([1, right], [left, SD_NR_VDIS]);
      } else {
        ranges.push([left, right]);
      }
      res.freeVid = right;
    }
    const hasTag = tag !== '' || snapid !== 0;
    let workingSeen = false;
    for (const [lo, hi] of ranges) {
      for (let v = hi - 1; v >= lo; v--) {
        if (!this.inUse.test(v) && !this.deleted.test(v)) continue;
        const h = await this.readHeader(v);
        if (!h || h.name !== name || name === '') continue;
        if (!hasTag) {
          res.nextSnapid = h.snapId + 1;
          if (h.snapCtime === 0n) { res.vid = v; res.result = Res.SUCCESS; return res; }
          res.latestSnapshot = v;
          res.result = Res.NO_VDI;
          return res;
        }
        if (h.snapCtime === 0n) { workingSeen = true; continue; }
        if ((h.tag !== '' && h.tag === tag) || (snapid !== 0 && h.snapId === snapid)) {
          res.vid = v; res.result = Res.SUCCESS; return res;
        }
      }
    }
    res.result = hasTag && workingSeen ? Res.NO_TAG : Res.NO_VDI;
    return res;
  }

  async lookupOrThrow(name: string, snapid: number, tag: string): Promise<number> {
    const r = await this.lookup(name, snapid, tag);
    if (r.result !== Res.SUCCESS) throw new SheepdogError(r.result);
    return r.vid;
  }

  private async readFullInode(vid: number, errCode: number): Promise<Inode> {
    try {
      return Inode.decode(await this.io.read(vidToVdiOid(vid), 0, SD_INODE_SIZE));
    } catch {
      throw new SheepdogError(errCode);
    }
  }

  /** Ranges that hold an inode's header, live index entries and grefs. */
  private inodeRanges(ino: Inode, n: number): { off: number; data: Buffer }[] {
    const full = ino.encode(SD_INODE_SIZE);
    const ranges = [{ off: 0, data: full.subarray(0, SD_INODE_HEADER_SIZE + 4 * n) }];
    if (n > 0) ranges.push({ off: SD_INODE_GREF_OFFSET, data: full.subarray(SD_INODE_GREF_OFFSET, SD_INODE_GREF_OFFSET + 8 * n) });
    return ranges;
  }

  private lastUsedIndex(ino: Inode): number {
    for (let i = MAX_DATA_OBJS - 1; i >= 0; i--) if (ino.dataVdiId[i]) return i + 1;
    return 0;
  }

  private async bumpBaseRefs(base: Inode, baseVid: number, wholeInode: boolean): Promise<void> {
    const n = this.lastUsedIndex(base);
    for (let i = 0; i < n; i++) if (base.dataVdiId[i]) base.grefCount[i]++;
    if (wholeInode) return;
    if (n === 0) return;
    const g = base.encodeGref().subarray(0, 8 * n);
    try {
      await this.io.write(vidToVdiOid(baseVid), SD_INODE_GREF_OFFSET, g, base.header.nrCopies);
    } catch {
      throw new SheepdogError(Res.BASE_VDI_WRITE);
    }
  }

  /**
   * NEW_VDI work phase: computes and writes inodes; returns the new id and
   * the notice every node must apply. `publish` is called before the new
   * inode is written so that all nodes know its object size.
   */
  async newVdi(req: NewVdiRequest, publish: (n: VdiNotice) => Promise<void>): Promise<{ vid: number; copies: number; blockSizeShift: number }> {
    const d = this.defaults();
    let copies = req.copies;
    let copyPolicy = req.copyPolicy;
    if (!copies) { copies = d.copies; copyPolicy = d.copyPolicy; }
    if (copyPolicy !== 0) {
      // as upstream: an erasure-coded VDI's nr_copies is D+P whatever the request said
      const ec = decodeEcPolicy(copyPolicy);
      if (!ec) throw new SheepdogError(Res.INVALID_PARMS, `invalid copy policy 0x${copyPolicy.toString(16)}`);
      copies = ec.d + ec.p;
    }
    if (req.storePolicy > 1) throw new SheepdogError(Res.INVALID_PARMS);
    const shift = req.blockSizeShift || d.blockSizeShift || 22;
    if (shift < 20 || shift > 31) throw new SheepdogError(Res.INVALID_PARMS);
    const lk = await this.lookup(req.name, 0, '');
    if (lk.result === Res.FULL_VDI) throw new SheepdogError(Res.FULL_VDI);
    const now = timestamp64();
    const newVid = lk.freeVid;
    const hdr: InodeHeader = {
      ...emptyInodeHeader(),
      name: req.name, vdiId: newVid, createTime: now, vdiSize: req.vdiSize, copyPolicy, storePolicy: req.storePolicy,
      nrCopies: copies, blockSizeShift: shift, parentVdiId: req.baseVdiId,
    };
    let ino = new Inode(hdr);
    let oldVid = 0;
    let oldIsSnapshot = false;
    const copyIndexFrom = (base: Inode) => {
      const n = this.lastUsedIndex(base);
      for (let i = 0; i < n; i++) {
        if (base.dataVdiId[i]) {
          ino.dataVdiId[i] = base.dataVdiId[i];
          ino.grefGeneration[i] = base.grefGeneration[i] + 1;
        }
      }
    };

    if (!req.snapshot) {
      if (lk.result === Res.SUCCESS) throw new SheepdogError(Res.VDI_EXIST);
      if (lk.result !== Res.NO_VDI) throw new SheepdogError(lk.result);
      hdr.snapId = lk.nextSnapid;
      if (req.baseVdiId) {
        const base = await this.readFullInode(req.baseVdiId, Res.BASE_VDI_READ);
        if (base.header.storePolicy !== 0) throw new SheepdogError(Res.INVALID_PARMS, 'a hyper volume cannot be a base VDI');
        await this.bumpBaseRefs(base, req.baseVdiId, false);
        copyIndexFrom(base);
        oldVid = req.baseVdiId;
        oldIsSnapshot = true;
      } else if (lk.latestSnapshot) {
        oldVid = lk.latestSnapshot;
        oldIsSnapshot = true;
      }
    } else {
      if (lk.result !== Res.SUCCESS) throw new SheepdogError(lk.result);
      const curVid = lk.vid;
      const cur = await this.readFullInode(curVid, Res.VDI_READ);
      // their index is a B-tree, which a snapshot's copied data_vdi_id[] would misread (upstream refuses too)
      if (cur.header.storePolicy !== 0) throw new SheepdogError(Res.INVALID_PARMS, 'creating a snapshot of hypervolume is not supported');
      hdr.snapId = cur.header.snapId + 1;
      if (!req.baseVdiId || req.baseVdiId === curVid) {
        cur.header.snapCtime = now;
        await this.bumpBaseRefs(cur, curVid, true);
        const n = this.lastUsedIndex(cur);
        try {
          await this.io.createRanges(vidToVdiOid(curVid), this.inodeRanges(cur, n), cur.header.nrCopies);
        } catch {
          throw new SheepdogError(Res.BASE_VDI_WRITE);
        }
        copyIndexFrom(cur);
        hdr.parentVdiId = curVid;
        oldVid = curVid;
      } else {
        const t = Buffer.alloc(8);
        t.writeBigUInt64LE(now);
        try {
          await this.io.write(vidToVdiOid(curVid), INODE_OFF.snapCtime, t, cur.header.nrCopies);
        } catch {
          throw new SheepdogError(Res.VDI_WRITE);
        }
        const base = await this.readFullInode(req.baseVdiId, Res.BASE_VDI_READ);
        if (base.header.storePolicy !== 0) throw new SheepdogError(Res.INVALID_PARMS, 'a hyper volume cannot be a base VDI');
        await this.bumpBaseRefs(base, req.baseVdiId, false);
        copyIndexFrom(base);
        hdr.parentVdiId = req.baseVdiId;
        oldVid = curVid;
      }
      oldIsSnapshot = true;
    }
    ino.header = hdr;
    // upstream initialises a hyper volume's root as an empty leaf (magic, depth 1, 0 entries):
    // the root's bytes sit where data_vdi_id[0..1] of a plain inode are
    if (hdr.storePolicy === 1) ino.decodeIndex(encodeBtreeNode(emptyLeaf()), 0);
    await publish({ t: 'vdi_add', newVid, oldVid, copies, copyPolicy, blockSizeShift: shift, setBitmap: true, oldIsSnapshot });
    try {
      await this.io.createRanges(vidToVdiOid(newVid), this.inodeRanges(ino, this.lastUsedIndex(ino)), copies);
    } catch (e) {
      log.warn(`writing the inode of new VDI ${newVid.toString(16)} failed: ${(e as Error).message}`);
      throw new SheepdogError(Res.VDI_WRITE);
    }
    return { vid: newVid, copies, blockSizeShift: shift };
  }

  /**
   * DEL_VDI work phase, while the cluster-wide lock is held: only the mark
   * (the inode's name emptied, in place, so it takes no new space on a
   * full disk). The objects the index refers to are reclaimed afterwards,
   * in the background (Reclaimer). Unlike v1.0 a non-empty index is
   * emptied by us (dropping every reference), so QEMU's loadvm and
   * snapshot delete work (§13.9, first option).
   */
  async delVdi(name: string, snapid: number, tag: string, publish: (n: VdiNotice) => Promise<void>): Promise<number> {
    const vid = await this.lookupOrThrow(name, snapid, tag);
    const h = await this.readHeader(vid);
    if (!h) throw new SheepdogError(Res.VDI_READ);
    if (h.name !== '') {
      const hb = encodeInodeHeader({ ...h, name: '', vdiSize: 0n });
      hb.fill(0, 572);
      try {
        await this.io.write(vidToVdiOid(vid), 0, hb, h.nrCopies);
      } catch {
        throw new SheepdogError(Res.VDI_WRITE);
      }
    }
    await publish({ t: 'vdi_del', vid });
    return vid;
  }

  /**
   * The inode of a VDI for the reclaimer: its header, its index, and the
   * generation references of the entries up to the last one in use (read
   * apart, only as far as needed: the whole inode is 12 MB, and decoding it
   * all held the event loop for 100 ms and more on a loaded machine).
   */
  async readInode(vid: number): Promise<Inode> {
    const oid = vidToVdiOid(vid);
    // in pieces, so that no one read (and the check of its block sums) holds the event loop long
    const PIECE = 32768;
    try {
      const ino = Inode.decode(await this.io.read(oid, 0, SD_INODE_HEADER_SIZE));
      for (let first = 0; first < MAX_DATA_OBJS; first += PIECE) {
        ino.decodeIndex(await this.io.read(oid, SD_INODE_HEADER_SIZE + 4 * first, 4 * Math.min(PIECE, MAX_DATA_OBJS - first)), first);
      }
      const n = this.lastUsedIndex(ino);
      for (let first = 0; first < n; first += PIECE) {
        ino.decodeGrefs(await this.io.read(oid, SD_INODE_GREF_OFFSET + 8 * first, 8 * Math.min(PIECE, n - first)), first);
      }
      return ino;
    } catch {
      throw new SheepdogError(Res.VDI_READ);
    }
  }

  lastIndex(ino: Inode): number {
    return this.lastUsedIndex(ino);
  }

  /** GET_VDI_ATTR (§6.12). */
  async getAttr(flags: number, snapid: number, record: Buffer): Promise<{ vid: number; slot: number; copies: number }> {
    const name = record.toString('utf8', 0, Math.max(0, record.indexOf(0) < 0 ? 256 : Math.min(256, record.indexOf(0))));
    const tagEnd = record.indexOf(0, 256);
    const tag = record.toString('utf8', 256, tagEnd < 0 || tagEnd > 512 ? 512 : tagEnd);
    const vid = await this.lookupOrThrow(name, snapid, tag);
    const h = await this.readHeader(vid);
    const attrVid = hash24(name);
    const rec = Buffer.from(record.subarray(0, SD_ATTR_OBJ_SIZE));
    rec.writeBigUInt64LE(h?.createTime ?? 0n, 512);
    const creat = (flags & Flag.CMD_CREAT) !== 0;
    const excl = (flags & Flag.CMD_EXCL) !== 0;
    const del = (flags & Flag.CMD_DEL) !== 0;
    const copies = this.states.get(attrVid)?.nrCopies || this.defaults().copies;
    const start = attrHash(rec);
    let slot = start;
    for (let probes = 0; probes < 0x100000000; probes++, slot = (slot + 1) >>> 0) {
      if (probes > 0 && slot === start) break;
      const oid = vidToAttrOid(attrVid, slot);
      if (creat && !excl && probes === 0 && !del) {
        await this.io.createRanges(oid, [{ off: 0, data: rec }], copies);
        return { vid: attrVid, slot, copies };
      }
      let cur: Buffer;
      try {
        cur = await this.io.read(oid, 0, SD_ATTR_OBJ_SIZE);
      } catch (e) {
        if (e instanceof SheepdogError && e.result === Res.NO_OBJ) {
          if (creat && !del) {
            await this.io.createRanges(oid, [{ off: 0, data: rec }], copies);
            return { vid: attrVid, slot, copies };
          }
          throw new SheepdogError(Res.NO_OBJ);
        }
        throw e;
      }
      if (cur[0] !== 0 && attrSameKey(cur, rec)) {
        if (excl) throw new SheepdogError(Res.VDI_EXIST);
        if (del) {
          await this.io.write(oid, 0, Buffer.alloc(1), copies);
          return { vid: attrVid, slot, copies };
        }
        if (creat) {
          await this.io.createRanges(oid, [{ off: 0, data: rec }], copies);
          return { vid: attrVid, slot, copies };
        }
        return { vid: attrVid, slot, copies };
      }
      if (cur[0] === 0 && creat && !del) {
        // a deleted slot is free again
        await this.io.createRanges(oid, [{ off: 0, data: rec }], copies);
        return { vid: attrVid, slot, copies };
      }
    }
    throw new SheepdogError(Res.FULL_VDI);
  }
}

