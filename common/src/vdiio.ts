// Block I/O on one VDI, the way QEMU's sheepdog driver does it (spec §13.2):
// reads follow the inode index (zeros for unallocated objects), writes are
// split at object boundaries into create / COW-create / plain writes, and
// the index entries a request allocated are written back in ONE coalesced
// inode update before the request completes. Discard zeroes index entries
// of whole objects (§13.4).
//
// Many requests may be in flight. Requests that allocate an object are
// serialised per object index, so two creates of one object never race;
// plain writes and reads of allocated objects run fully in parallel.
//
// The object access itself is behind VdiBackend: one implementation talks
// to a sheep over the wire (ClientVdiBackend below), the daemon's NBD server
// uses one over its in-process gateway.
import { Op, Flag, Res, SD_INODE_HEADER_SIZE, SD_INODE_QEMU_SIZE, MAX_DATA_OBJS } from './constants.js';
import { vidToDataOid, vidToVdiOid } from './oid.js';
import { InodeHeader, decodeInodeHeader } from './inode.js';
import { SheepdogError } from './errors.js';
import { SheepClient } from './client.js';
import { encodeFixedString } from './wire.js';
import { HyperIndex } from './hyperindex.js';
import { BTREE_NODE_SIZE } from './btree.js';

/**
 * Where a write's payload can be moved without a copy through user memory
 * (see VdiIO.spliceTarget): put exactly the payload's bytes into the pipe,
 * then commit(), or abort() if they will not come.
 */
export interface SplicedWrite {
  /** Write end of a pipe that holds the whole payload. */
  readonly pipe: number;
  /** Write what the pipe holds; settles as write() would. */
  commit(): Promise<void>;
  /**
   * The first n bytes of the payload, back out of the pipe into into[0, n)
   * (at once: they are in memory), when the rest cannot come this way;
   * releases the target.
   */
  takeBack(into: Buffer, n: number): void;
  abort(): void;
}

/**
 * A backend's SplicedWrite for one object. The bytes arrive some time after
 * it was offered, so commit() checks again that the write may still go this
 * way (undefined if not: a snapshot, a membership change or a replaced file
 * came in between), and drain() then takes the bytes back into memory.
 */
export interface SpliceTarget {
  readonly pipe: number;
  commit(): Promise<void> | undefined;
  /** The payload, out of the pipe; releases the target. */
  drain(): Promise<Buffer>;
  /** As SplicedWrite.takeBack. */
  takeBack(into: Buffer, n: number): void;
  abort(): void;
}

export interface VdiBackend {
  /**
   * READ_OBJ: exactly len bytes at off of oid. A backend may read straight
   * into `into` (len bytes) and return it, or ignore it and return its own.
   */
  readObj(oid: bigint, off: number, len: number, copies: number, into?: Buffer): Promise<Buffer>;
  /**
   * Optional page-cache hit path of readObj: fill into[at, at+len)
   * synchronously if the bytes are at hand without waiting; false if not
   * (what into then holds is unspecified, and readObj must be used).
   */
  readCached?(oid: bigint, off: number, len: number, copies: number, into: Buffer, at: number): boolean;
  /**
   * Optional: a SpliceTarget for a plain write of len bytes at off of oid,
   * if the backend can take one now (else undefined, and writeObj must be
   * used).
   */
  spliceTarget?(oid: bigint, off: number, len: number, copies: number): SpliceTarget | undefined;
  /** WRITE_OBJ into an existing object. */
  writeObj(oid: bigint, off: number, data: Buffer, copies: number): Promise<void>;
  /** CREATE_AND_WRITE_OBJ; cowOid != 0n makes the rest of the object a copy of cowOid. */
  createObj(oid: bigint, cowOid: bigint, off: number, data: Buffer, copies: number): Promise<void>;
  /** WRITE_OBJ of data_vdi_id[first .. first+entries.length/4) into the inode of vid. */
  writeIndex(vid: number, first: number, entries: Buffer, copies: number): Promise<void>;
  /** FLUSH_VDI (optional; absent = every acknowledged write is already stable). */
  flush?(vid: number): Promise<void>;
}

export interface VdiIOOptions {
  /** Refuse writes (snapshot exports). */
  readonly?: boolean;
  /**
   * Called when a write hits READONLY on an object of the current VDI (someone
   * snapshotted it): return the header of the name's current working VDI.
   * Without it READONLY fails the request.
   */
  reload?: () => Promise<InodeHeader>;
  /**
   * Trust the in-memory index before a copy-on-write create, without
   * reading the entry on disk first, and keep it when following a snapshot
   * (QEMU's driver does both; only a client that is the VDI's sole writer
   * for its whole life may).
   */
  trustIndex?: boolean;
}

interface Piece {
  idx: number;
  off: number; // in object
  len: number;
  pos: number; // in request buffer
}

/** One request's allocation state: indices it holds and its dirty range. */
class WriteCtx {
  owns?: number[];
  done?: Promise<void>;
  release?: () => void;
  min = -1;
  max = -1;
  /** Entries this request changed in memory, with what they were: [idx, before]. */
  readonly changed: [number, number][] = [];
  hold(busy: Map<number, Promise<void>>, idx: number): void {
    if (!this.owns) {
      this.owns = [];
      this.done = new Promise<void>((r) => (this.release = r));
    }
    if (!this.owns.includes(idx)) {
      this.owns.push(idx);
      busy.set(idx, this.done!);
    }
  }
  holds(idx: number): boolean {
    return this.owns !== undefined && this.owns.includes(idx);
  }
  dirty(idx: number, before: number): void {
    this.changed.push([idx, before]);
    if (this.min < 0 || idx < this.min) this.min = idx;
    if (idx > this.max) this.max = idx;
  }
  finish(busy: Map<number, Promise<void>>): void {
    if (!this.owns) return;
    for (const i of this.owns) if (busy.get(i) === this.done) busy.delete(i);
    this.release!();
  }
}

/**
 * A VDI's object index as this client knows it (updated as it allocates):
 * data_vdi_id[] of a plain inode, or a hyper volume's B-tree.
 */
export interface ObjectIndex {
  /** Object indexes are below this. */
  readonly limit: number;
  get(idx: number): number;
  set(idx: number, vid: number): void;
  /** Allocated entries below n. */
  countAllocated(n: number): number;
  /** Persist the entries set since the last commit; [min, max] holds those of this request. */
  commit(backend: VdiBackend, vid: number, min: number, max: number, copies: number): Promise<void>;
}

/** The plain inode's 2^20-entry data_vdi_id[]: a request's entries go back in one write of their span. */
export class FlatObjectIndex implements ObjectIndex {
  readonly limit = MAX_DATA_OBJS;
  constructor(readonly ids: Uint32Array) {}
  get(idx: number): number {
    return this.ids[idx];
  }
  set(idx: number, vid: number): void {
    this.ids[idx] = vid;
  }
  countAllocated(n: number): number {
    let k = 0;
    for (let i = 0; i < Math.min(n, this.ids.length); i++) if (this.ids[i]) k++;
    return k;
  }
  commit(backend: VdiBackend, vid: number, min: number, max: number, copies: number): Promise<void> {
    const n = max - min + 1;
    const b = Buffer.allocUnsafe(4 * n);
    for (let i = 0; i < n; i++) b.writeUInt32LE(this.ids[min + i], 4 * i);
    return backend.writeIndex(vid, min, b, copies);
  }
}

/** A hyper volume's B-tree (store_policy 1), indexed by u32 object index. */
export class BtreeObjectIndex implements ObjectIndex {
  readonly limit = 2 ** 32;
  constructor(readonly tree: HyperIndex) {}
  get(idx: number): number {
    return this.tree.get(idx);
  }
  set(idx: number, vid: number): void {
    this.tree.set(idx, vid);
  }
  countAllocated(n: number): number {
    // walks what is stored, never the (up to 2^32) index range
    let k = 0;
    for (const [i] of this.tree.entries()) if (i < n) k++;
    return k;
  }
  commit(backend: VdiBackend, vid: number, _min: number, _max: number, copies: number): Promise<void> {
    return this.tree.persist(backend, vidToVdiOid(vid), copies);
  }
}

export class VdiIO {
  header: InodeHeader;
  readonly objects: ObjectIndex;
  readonly objectSize: number;
  private readonly shift: number;
  readonly readonly: boolean;
  private busy = new Map<number, Promise<void>>();
  private reloading?: Promise<void>;
  /** One set per index re-read in flight: the entries this client changed while it ran. */
  private rereads = new Set<Set<number>>();

  constructor(readonly backend: VdiBackend, header: InodeHeader, index: Uint32Array | ObjectIndex, private readonly opts: VdiIOOptions = {}) {
    this.header = header;
    this.objects = index instanceof Uint32Array ? new FlatObjectIndex(index) : index;
    this.shift = header.blockSizeShift || 22;
    this.objectSize = 2 ** this.shift;
    this.readonly = !!opts.readonly;
  }

  /**
   * Read the 4,198,968-byte QEMU view of vid's inode and build a VdiIO. A
   * hyper volume's index is the B-tree rooted in the same bytes; a depth-2
   * root has its child leaves read as well.
   */
  static async open(backend: VdiBackend, vid: number, opts: VdiIOOptions = {}): Promise<VdiIO> {
    const b = await backend.readObj(vidToVdiOid(vid), 0, SD_INODE_QEMU_SIZE, 0);
    const h = decodeInodeHeader(b);
    if (h.storePolicy === 0) return new VdiIO(backend, h, decodeIndex(b), opts);
    if (h.storePolicy !== 1) throw new SheepdogError(Res.INVALID_PARMS, `VDI ${vid.toString(16)} has unknown store_policy ${h.storePolicy}`);
    const tree = await HyperIndex.load(vid, h.btreeCounter, b.subarray(SD_INODE_HEADER_SIZE),
      (oid) => backend.readObj(oid, 0, BTREE_NODE_SIZE, h.nrCopies));
    return new VdiIO(backend, h, new BtreeObjectIndex(tree), opts);
  }

  /** data_vdi_id[] of a plain VDI (a hyper volume has none: use objects). */
  get index(): Uint32Array {
    if (!(this.objects instanceof FlatObjectIndex)) throw new SheepdogError(Res.INVALID_PARMS, 'a hyper volume has no flat index');
    return this.objects.ids;
  }

  get vid(): number {
    return this.header.vdiId;
  }
  get size(): number {
    return Number(this.header.vdiSize);
  }
  get copies(): number {
    return this.header.nrCopies;
  }

  private split(offset: number, len: number): Piece[] {
    const out: Piece[] = [];
    const os = this.objectSize;
    let pos = 0;
    while (pos < len) {
      const o = offset + pos;
      const idx = Math.floor(o / os);
      const off = o - idx * os;
      const l = Math.min(os - off, len - pos);
      out.push({ idx, off, len: l, pos });
      pos += l;
    }
    return out;
  }

  private check(offset: number, len: number): void {
    if (offset < 0 || len < 0 || offset + len > this.size || !Number.isSafeInteger(offset + len)) {
      throw new SheepdogError(Res.INVALID_PARMS, `request [${offset}, +${len}) outside the VDI (${this.size} bytes)`);
    }
    if (Math.ceil((offset + len) / this.objectSize) > this.objects.limit) throw new SheepdogError(Res.INVALID_PARMS);
  }

  /** Read len bytes at offset; into (len bytes, optional) is filled and returned. */
  async read(offset: number, len: number, into?: Buffer): Promise<Buffer> {
    this.check(offset, len);
    if (len === 0) return Buffer.alloc(0);
    const os = this.objectSize;
    const idx = Math.floor(offset / os);
    const off = offset - idx * os;
    if (off + len <= os) {
      const b = await this.readPiece(idx, off, len, into);
      if (into && b !== into) b.copy(into);
      return into ?? b;
    }
    const out = into ?? Buffer.allocUnsafe(len);
    await Promise.all(this.split(offset, len).map(async (p) => {
      const dst = out.subarray(p.pos, p.pos + p.len);
      const b = await this.readPiece(p.idx, p.off, p.len, dst);
      if (b !== dst) b.copy(out, p.pos);
    }));
    return out;
  }

  /**
   * read() without waiting, when it can be done so: a range within one
   * object that is unallocated (zeros) or that the backend has at hand
   * (readCached). Fills into[at, at+len) and returns true, or returns false
   * and read() must be used. Checks as read() does.
   */
  readCached(offset: number, len: number, into: Buffer, at: number): boolean {
    this.check(offset, len);
    const os = this.objectSize;
    const idx = Math.floor(offset / os);
    const off = offset - idx * os;
    if (off + len > os) return false;
    const owner = this.objects.get(idx);
    if (!owner) {
      into.fill(0, at, at + len);
      return true;
    }
    return this.backend.readCached !== undefined && this.backend.readCached(vidToDataOid(owner, idx), off, len, this.copies, into, at);
  }

  private async readPiece(idx: number, off: number, len: number, into?: Buffer): Promise<Buffer> {
    for (;;) {
      const owner = this.objects.get(idx);
      if (!owner) return into ? into.fill(0) : Buffer.alloc(len);
      try {
        return await this.backend.readObj(vidToDataOid(owner, idx), off, len, this.copies, into);
      } catch (e) {
        // discarded (or reallocated) meanwhile: follow the index again
        if (e instanceof SheepdogError && e.result === Res.NO_OBJ && this.objects.get(idx) !== owner) continue;
        throw e;
      }
    }
  }

  /**
   * Write data at offset. The common case, a write within one object this
   * VDI already owns and no request is allocating, is a single object write
   * with no bookkeeping: it is handed to the backend without an async step
   * of its own (this is every guest write's path). Anything else goes
   * through writeAll, and so does a plain write that meets a snapshot or a
   * discard of its object meanwhile.
   */
  write(offset: number, data: Buffer): Promise<void> {
    const len = data.length;
    const idx = Math.floor(offset / this.objectSize);
    const off = offset - idx * this.objectSize;
    const v = this.vid;
    if (this.readonly || len === 0 || offset < 0 || offset + len > this.size || off + len > this.objectSize ||
        this.objects.get(idx) !== v || this.busy.has(idx)) return this.writeAll(offset, data);
    return this.backend.writeObj(vidToDataOid(v, idx), off, data, this.copies).catch((e) => this.rewrite(e, v, idx, offset, data));
  }

  /**
   * A target that takes len bytes for offset without a copy (see
   * SpliceTarget), when that write is the common case of write() (one
   * object this VDI owns, no allocation under way) and the backend offers
   * one; else undefined, and write() must be used.
   */
  spliceTarget(offset: number, len: number): SplicedWrite | undefined {
    const idx = Math.floor(offset / this.objectSize);
    const off = offset - idx * this.objectSize;
    const v = this.vid;
    const plain = () => this.vid === v && this.objects.get(idx) === v && !this.busy.has(idx);
    if (!this.backend.spliceTarget || this.readonly || len === 0 || offset < 0 || offset + len > this.size ||
        off + len > this.objectSize || !plain()) return undefined;
    const t = this.backend.spliceTarget(vidToDataOid(v, idx), off, len, this.copies);
    if (!t) return undefined;
    return {
      pipe: t.pipe,
      // still the common case (no snapshot, discard or allocation since): as offered; else the full way
      commit: () => (plain() ? t.commit() : undefined) ?? t.drain().then((data) => this.write(offset, data)),
      takeBack: (into, n) => t.takeBack(into, n),
      abort: () => t.abort(),
    };
  }

  /** After a plain write of object idx (of vid v) failed with e: write again the full way if e says the index moved on. */
  private async rewrite(e: unknown, v: number, idx: number, offset: number, data: Buffer): Promise<void> {
    if (!(e instanceof SheepdogError)) throw e;
    if (e.result === Res.READONLY) await this.afterReadonly(v, e);
    else if (!(e.result === Res.NO_OBJ && this.objects.get(idx) !== v)) throw e;
    return this.writeAll(offset, data);
  }

  private async writeAll(offset: number, data: Buffer): Promise<void> {
    if (this.readonly) throw new SheepdogError(Res.READONLY);
    this.check(offset, data.length);
    if (data.length === 0) return;
    const ctx = new WriteCtx();
    try {
      const os = this.objectSize;
      const idx = Math.floor(offset / os);
      const off = offset - idx * os;
      if (off + data.length <= os) await this.writePiece(ctx, idx, off, data);
      else await Promise.all(this.split(offset, data.length).map((p) => this.writePiece(ctx, p.idx, p.off, data.subarray(p.pos, p.pos + p.len))));
      await this.commitIndex(ctx);
    } finally {
      ctx.finish(this.busy);
    }
  }

  private async writePiece(ctx: WriteCtx, idx: number, off: number, data: Buffer): Promise<void> {
    for (;;) {
      const b = this.busy.get(idx);
      if (b && !ctx.holds(idx)) { await b; continue; }
      const v = this.vid;
      const owner = this.objects.get(idx);
      if (owner === v) {
        try {
          await this.backend.writeObj(vidToDataOid(v, idx), off, data, this.copies);
          return;
        } catch (e) {
          if (!(e instanceof SheepdogError)) throw e;
          if (e.result === Res.READONLY) { await this.afterReadonly(v, e); continue; }
          if (e.result === Res.NO_OBJ && this.objects.get(idx) !== v) continue;
          throw e;
        }
      }
      ctx.hold(this.busy, idx);
      // Another client of this VDI (through another gateway, say after a VM
      // moved) may have allocated the object since this index was read: a
      // copy-on-write create would replace that object, and the writes
      // acknowledged in it, with the parent's bytes (chaos seed 4802, an NBD
      // export's index outliving its client). The entry on disk decides.
      const onDisk = await this.entryOnDisk(v, idx);
      if (onDisk !== undefined && onDisk !== owner && this.vid === v) {
        this.setEntry(idx, onDisk);
        continue;
      }
      try {
        await this.backend.createObj(vidToDataOid(v, idx), owner ? vidToDataOid(owner, idx) : 0n, off, data, this.copies);
      } catch (e) {
        if (e instanceof SheepdogError && e.result === Res.READONLY) { await this.afterReadonly(v, e); continue; }
        throw e;
      }
      this.setEntry(idx, v);
      ctx.dirty(idx, owner);
      return;
    }
  }

  /**
   * Take the index entries on disk for every object of the VDI that no
   * request of this client is allocating: another client (through another
   * gateway) may have allocated objects since this index was read, and
   * reads would otherwise return the parent's bytes for them. A client
   * shared by successive connections (an NBD export, a sheepfs volume)
   * calls it when one attaches. A working VDI snapshotted meanwhile is left
   * for the new working VDI first. Hyper volumes: nothing (their tree is
   * not re-read).
   */
  async refreshIndex(): Promise<void> {
    await this.followWorkingVdi();
    await this.rereadIndex();
  }

  /** refreshIndex's second half: the entries on disk of the VDI we are at now. */
  private async rereadIndex(): Promise<void> {
    if (!(this.objects instanceof FlatObjectIndex)) return;
    const vid = this.vid;
    const n = Math.min(MAX_DATA_OBJS, Math.ceil(this.size / this.objectSize));
    if (n <= 0) return;
    // An entry a write of ours set after the read began is newer than the
    // bytes read: taking them would point reads back at the parent's object.
    const changed = new Set<number>();
    this.rereads.add(changed);
    let b: Buffer;
    try {
      b = await this.indexOnDisk(vid, 0, n);
    } finally {
      this.rereads.delete(changed);
    }
    if (this.vid !== vid) return;
    for (let i = 0; i < n; i++) {
      const d = b.readUInt32LE(4 * i);
      if (d !== this.objects.get(i) && !this.busy.has(i) && !changed.has(i)) this.objects.set(i, d);
    }
  }

  private setEntry(idx: number, vid: number): void {
    this.objects.set(idx, vid);
    for (const s of this.rereads) s.add(idx);
  }

  /**
   * A working VDI opened by name that was snapshotted since (through another
   * gateway) is a snapshot now. Writes find out (READONLY), reads do not:
   * they would go on reading the snapshot's objects and miss what writers
   * through other gateways put in the new working VDI (chaos seed 4105,
   * replayed: an NBD export read the bytes of two snapshots ago).
   */
  private async followWorkingVdi(): Promise<void> {
    if (!this.opts.reload || this.readonly) return;
    const vid = this.vid;
    const h = await this.opts.reload();
    if (this.vid === vid && h.vdiId !== vid) this.header = h;
  }

  /** data_vdi_id[first .. first+n) of vid as the inode on disk has it (a flat index's). */
  private indexOnDisk(vid: number, first: number, n: number): Promise<Buffer> {
    return this.backend.readObj(vidToVdiOid(vid), SD_INODE_HEADER_SIZE + 4 * first, 4 * n, this.copies);
  }

  /** data_vdi_id[idx] of vid as the inode on disk has it (undefined: a hyper volume, or unreadable now). */
  private async entryOnDisk(vid: number, idx: number): Promise<number | undefined> {
    if (!(this.objects instanceof FlatObjectIndex) || this.opts.trustIndex) return undefined;
    try {
      return (await this.indexOnDisk(vid, idx, 1)).readUInt32LE(0);
    } catch {
      return undefined;
    }
  }

  /** One WRITE_OBJ of the inode covering every index entry the request set. */
  private async commitIndex(ctx: WriteCtx): Promise<void> {
    if (ctx.min < 0) return;
    const vid = this.vid;
    try {
      await this.objects.commit(this.backend, vid, ctx.min, ctx.max, this.copies);
    } catch (e) {
      await this.reconcileIndex(ctx, vid);
      throw e;
    }
  }

  /**
   * After a failed index update, memory must say what the index on disk
   * says. Kept as set, a later index update of a neighbouring entry (or a
   * plain write into the object, acknowledged while a fresh open of the VDI
   * reads the parent's bytes) would disagree with what readers saw: chaos
   * seed 4101 lost acknowledged writes into a clone that way, and saw a
   * failed write appear long after reads had not found it. So the entries
   * take the values on disk when they can be read, else their old ones; a
   * write into one of them allocates again (a new copy of the parent's
   * object replaces the one the failed request made).
   */
  private async reconcileIndex(ctx: WriteCtx, vid: number): Promise<void> {
    let disk: Buffer | undefined;
    if (this.objects instanceof FlatObjectIndex) {
      disk = await this.indexOnDisk(vid, ctx.min, ctx.max - ctx.min + 1).catch(() => undefined);
    }
    if (this.vid !== vid) return;
    for (let k = ctx.changed.length - 1; k >= 0; k--) {
      const [idx, before] = ctx.changed[k];
      this.setEntry(idx, disk ? disk.readUInt32LE(4 * (idx - ctx.min)) : before);
    }
  }

  /** Our working VDI became a snapshot: switch to the name's new working VDI. */
  private async afterReadonly(failedVid: number, e: SheepdogError): Promise<void> {
    if (this.vid !== failedVid) return;
    if (!this.opts.reload) throw e;
    if (!this.reloading) {
      this.reloading = this.opts.reload().then(async (h) => {
        if (h.vdiId === failedVid) throw e;
        this.header = h;
        // The new VDI's index is the one on disk when the snapshot was
        // taken, which is newer than ours if other gateways' clients
        // allocated objects since we read it.
        if (!this.opts.trustIndex) await this.rereadIndex().catch(() => undefined); // the header is the reload's, just read
      }).finally(() => { this.reloading = undefined; });
    }
    await this.reloading;
  }

  /** Zero the index entries of every whole object in the range (partial objects are left alone). */
  async discard(offset: number, len: number): Promise<void> {
    if (this.readonly) throw new SheepdogError(Res.READONLY);
    this.check(offset, len);
    const os = this.objectSize;
    const first = Math.ceil(offset / os);
    const end = Math.floor((offset + len) / os); // exclusive
    const lastObj = Math.ceil(this.size / os);
    // the tail object counts as whole when the range reaches the end of the VDI
    const stop = offset + len >= this.size ? lastObj : end;
    await this.dropIndices(first, stop);
  }

  private async dropIndices(first: number, stop: number): Promise<void> {
    if (stop <= first) return;
    const ctx = new WriteCtx();
    try {
      for (let i = first; i < stop; i++) {
        if (!this.objects.get(i)) continue;
        for (;;) {
          const b = this.busy.get(i);
          if (!b || ctx.holds(i)) break;
          await b;
        }
        if (!this.objects.get(i)) continue;
        ctx.hold(this.busy, i);
        ctx.dirty(i, this.objects.get(i));
        this.setEntry(i, 0);
      }
      // coalesce into runs no longer than 4096 entries of mostly-zero span
      if (ctx.min < 0) return;
      await this.commitIndex(ctx);
    } finally {
      ctx.finish(this.busy);
    }
  }

  /**
   * Make [offset, offset+len) read as zeros. Whole objects are unmapped
   * unless noHole; unallocated pieces need nothing; the rest is written.
   */
  async writeZeroes(offset: number, len: number, noHole = false): Promise<void> {
    if (this.readonly) throw new SheepdogError(Res.READONLY);
    this.check(offset, len);
    const pieces = this.split(offset, len);
    const whole: number[] = [];
    const partial: Piece[] = [];
    for (const p of pieces) {
      if (!noHole && (p.len === this.objectSize || (p.off === 0 && offset + len >= this.size && p.pos + p.len === len))) whole.push(p.idx);
      else partial.push(p);
    }
    const jobs: Promise<void>[] = [];
    if (whole.length) {
      // contiguous by construction
      jobs.push(this.dropIndices(whole[0], whole[whole.length - 1] + 1));
    }
    for (const p of partial) {
      if (!this.objects.get(p.idx) && !this.busy.has(p.idx)) continue; // already reads as zeros
      jobs.push(this.write(offset + p.pos, zeroBuf(p.len)));
    }
    await Promise.all(jobs);
  }

  flush(): Promise<void> {
    return this.backend.flush ? this.backend.flush(this.vid) : Promise.resolve();
  }

  /** Allocation status of the object backing byte offset o. */
  allocated(o: number): boolean {
    return this.objects.get(Math.floor(o / this.objectSize)) !== 0;
  }
}

let zeros = Buffer.alloc(0);
function zeroBuf(n: number): Buffer {
  if (zeros.length < n) zeros = Buffer.alloc(Math.max(n, 1 << 20));
  return zeros.subarray(0, n);
}

/** data_vdi_id[] out of a buffer holding at least the QEMU view of an inode. */
export function decodeIndex(b: Buffer): Uint32Array {
  const out = new Uint32Array(MAX_DATA_OBJS);
  const n = Math.max(0, Math.min(b.length, SD_INODE_QEMU_SIZE) - SD_INODE_HEADER_SIZE) >> 2;
  for (let i = 0; i < n; i++) {
    const o = SD_INODE_HEADER_SIZE + 4 * i;
    out[i] = b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24);
  }
  return out;
}

/** VdiBackend over the wire (a pipelined SheepClient), with QEMU's request shapes. */
export class ClientVdiBackend implements VdiBackend {
  /** CMD_CACHE (QEMU's default) or CMD_DIRECT; switches to DIRECT when a flush says INVALID_PARMS. */
  cacheFlags: number;
  constructor(readonly client: SheepClient, cacheFlags: number = Flag.CMD_CACHE) {
    this.cacheFlags = cacheFlags;
  }

  private async req(f: Parameters<SheepClient['send']>[0], payload?: Buffer): Promise<Buffer> {
    const r = await this.client.send(f, payload);
    if (r.rsp.result !== Res.SUCCESS) throw new SheepdogError(r.rsp.result);
    return r.data;
  }

  readObj(oid: bigint, off: number, len: number, copies: number): Promise<Buffer> {
    return this.req({ opcode: Op.READ_OBJ, protoVer: 0, flags: this.cacheFlags, dataLength: len, obj: { oid, offset: off, copies } });
  }

  async writeObj(oid: bigint, off: number, data: Buffer, copies: number): Promise<void> {
    await this.req({ opcode: Op.WRITE_OBJ, protoVer: 0, flags: Flag.CMD_WRITE | this.cacheFlags, obj: { oid, offset: off, copies } }, data);
  }

  async createObj(oid: bigint, cowOid: bigint, off: number, data: Buffer, copies: number): Promise<void> {
    await this.req({
      opcode: Op.CREATE_AND_WRITE_OBJ, protoVer: 0, flags: Flag.CMD_WRITE | (cowOid ? Flag.CMD_COW : 0) | this.cacheFlags,
      obj: { oid, cowOid, offset: off, copies },
    }, data);
  }

  writeIndex(vid: number, first: number, entries: Buffer, copies: number): Promise<void> {
    return this.writeObj(vidToVdiOid(vid), SD_INODE_HEADER_SIZE + 4 * first, entries, copies);
  }

  async flush(vid: number): Promise<void> {
    if (!(this.cacheFlags & Flag.CMD_CACHE)) return;
    const r = await this.client.send({ opcode: Op.FLUSH_VDI, protoVer: 0, flags: Flag.CMD_CACHE, obj: { oid: vidToVdiOid(vid) } });
    if (r.rsp.result === Res.INVALID_PARMS) { this.cacheFlags = Flag.CMD_DIRECT; return; }
    if (r.rsp.result !== Res.SUCCESS) throw new SheepdogError(r.rsp.result);
  }
}

/** Resolve NAME [+ snapid | tag] with GET_VDI_INFO (proto_ver 1, as QEMU). */
export async function lookupVdi(client: SheepClient, name: string, snapid = 0, tag = ''): Promise<number> {
  const payload = Buffer.concat([encodeFixedString(name, 256), encodeFixedString(tag, 256)]);
  const r = await client.send({ opcode: Op.GET_VDI_INFO, protoVer: 1, flags: Flag.CMD_WRITE, vdi: { snapid } }, payload);
  if (r.rsp.result !== Res.SUCCESS) throw new SheepdogError(r.rsp.result);
  return r.rsp.vdi.vdiId;
}

/** Open a VDI by name over a client; the working VDI reloads itself after an external snapshot. */
export async function openVdi(client: SheepClient, name: string, o: { snapid?: number; tag?: string; cacheFlags?: number } = {}): Promise<VdiIO> {
  const snap = !!(o.snapid || o.tag);
  const vid = await lookupVdi(client, name, o.snapid ?? 0, o.tag ?? '');
  const backend = new ClientVdiBackend(client, o.cacheFlags);
  return VdiIO.open(backend, vid, {
    readonly: snap,
    reload: snap ? undefined : async () => {
      const v = await lookupVdi(client, name);
      return decodeInodeHeader(await backend.readObj(vidToVdiOid(v), 0, SD_INODE_HEADER_SIZE, 0));
    },
  });
}
