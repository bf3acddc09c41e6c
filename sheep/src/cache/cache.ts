// The object cache (sheep -w): a per-node write-back cache of VDI objects,
// used by the sheep that clients talk to.
//
// * Data objects live in files under DIR/<vid>/, one file per object (the
//   whole object). Writes land there and are acknowledged; the object is
//   "dirty" over the byte range written since its last flush, and "created"
//   when the cluster does not have it yet (it is then flushed as a
//   CREATE_AND_WRITE of the written range over zeros).
// * Inode index updates (writes into data_vdi_id[]) of a cached VDI are
//   kept as pending entries per VDI and overlaid on cached reads of the
//   inode.
// * A flush of a VDI writes its dirty data objects first and only then the
//   index entries that point at them, so the cluster's index never refers to
//   an object that was not written. A crash of this node loses at most the
//   unflushed writes; the cache directory is discarded when sheep starts.
// * Bounded size with LRU eviction; dirty objects are flushed before they
//   are evicted.
// * Requests without SD_FLAG_CMD_CACHE (or with SD_FLAG_CMD_DIRECT) bypass
//   the cache after flushing (and, for writes, dropping) any cached state of
//   the object they touch.
//
// All file I/O goes through libuv's thread pool; nothing here blocks.
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import {
  Res, SheepdogError, Flag, isDataObj, isVdiObj, oidToVid, vidToDataOid, vidToVdiOid, SD_INODE_HEADER_SIZE, MAX_DATA_OBJS,
  CacheInfo, CacheInfoFlag,
} from '@sheepdog/common';
import { preadFull, pwriteFull } from '../store/fdcache.js';
import { log } from '../log.js';

export interface CacheOptions {
  /** Capacity in MiB. */
  sizeMB: number;
  dir: string;
  /** Write cache files with O_DSYNC (write-through to the cache disk). */
  directio: boolean;
}

/** Object I/O as the gateway offers it (and as the cache offers it on top). */
export interface ObjIO {
  read(oid: bigint, off: number, len: number, copies?: number): Promise<Buffer>;
  write(oid: bigint, off: number, data: Buffer, copies?: number): Promise<void>;
  create(oid: bigint, off: number, data: Buffer, cowOid: bigint, copies?: number): Promise<void>;
}

/** What the cache needs below it: the node's uncached gateway. */
export interface CacheLower extends ObjIO {
  sizeOf(oid: bigint): number;
  /** Write bytes into an existing object on every replica; no read-only or index checks. */
  rawWrite(oid: bigint, off: number, data: Buffer, copies?: number): Promise<void>;
  createRanges(oid: bigint, ranges: { off: number; data: Buffer }[], copies?: number): Promise<void>;
  remove(oid: bigint, copies?: number): Promise<void>;
}

export interface CacheHooks {
  isSnapshot(vid: number): boolean;
  /** The working VDI of a name (0 if none). */
  workingVid(name: string): Promise<number>;
  /** (name, snapid, tag) -> vid (0 if none). */
  resolve(name: string, snapid: number, tag: string): Promise<number>;
}

const INDEX_END = SD_INODE_HEADER_SIZE + 4 * MAX_DATA_OBJS;
const FLUSH_PARALLEL = 16;

/** Does [off, off+len) of an inode touch data_vdi_id[]? */
const touchesIndex = (off: number, len: number) => off < INDEX_END && off + len > SD_INODE_HEADER_SIZE;
/** Is it exactly an index update (whole, aligned entries)? */
const isIndexUpdate = (off: number, len: number) =>
  len > 0 && len % 4 === 0 && off >= SD_INODE_HEADER_SIZE && off + len <= INDEX_END && (off - SD_INODE_HEADER_SIZE) % 4 === 0;

class Entry {
  fd = -1;
  refs = 0;
  /** Dirty byte range [lo, hi). */
  lo = Infinity;
  hi = 0;
  /** The cluster does not have this content: flush as a (re)creation. */
  created = false;
  createGen = 0;
  flushing?: Promise<void>;
  ready!: Promise<void>;
  detached = false;
  constructor(readonly oid: bigint, readonly vid: number, readonly size: number, readonly file: string, public copies?: number) {}
  get dirty(): boolean {
    return this.lo < this.hi;
  }
  mark(lo: number, hi: number): void {
    if (lo < this.lo) this.lo = lo;
    if (hi > this.hi) this.hi = hi;
  }
}

class VdiCache {
  readonly entries = new Map<bigint, Entry>();
  /** data_vdi_id[idx] values written by clients, not yet in the cluster. */
  readonly pending = new Map<number, number>();
  /** Indices whose data object we created in the cluster while the entry was still pending. */
  readonly unindexed = new Set<number>();
  chain: Promise<void> = Promise.resolve();
  dirReady?: Promise<unknown>;
  copies?: number;
  constructor(readonly vid: number) {}
}

const openFd = (file: string, flags: number) => new Promise<number>((res, rej) => fs.open(file, flags, 0o600, (e, fd) => (e ? rej(e) : res(fd))));
const ftruncate = (fd: number, len: number) => new Promise<void>((res, rej) => fs.ftruncate(fd, len, (e) => (e ? rej(e) : res())));
const closeFd = (fd: number) => fs.close(fd, () => undefined);

async function parallel<T>(items: T[], n: number, fn: (t: T) => Promise<void>): Promise<void> {
  let i = 0;
  let err: unknown;
  const worker = async () => {
    while (i < items.length) {
      const t = items[i++];
      try {
        await fn(t);
      } catch (e) {
        err ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (err) throw err;
}

export class ObjectCache {
  readonly limit: number;
  used = 0;
  hits = 0n;
  misses = 0n;
  /** Every cached object in LRU order (oldest first). */
  private readonly lru = new Map<bigint, Entry>();
  private readonly vdis = new Map<number, VdiCache>();
  private seq = 0;
  private reclaiming?: Promise<void>;
  private readonly openFlags: number;
  /** The request paths: with the cache, and around it. */
  readonly cached: ObjIO;
  readonly direct: ObjIO;

  constructor(readonly opts: CacheOptions, private readonly gw: CacheLower, private readonly hooks: CacheHooks) {
    this.limit = opts.sizeMB * 1024 * 1024;
    this.openFlags = fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC | (opts.directio ? fs.constants.O_DSYNC : 0);
    this.cached = {
      read: (o, off, len, c) => this.cachedRead(o, off, len, c),
      write: (o, off, d, c) => this.cachedWrite(o, off, d, c),
      create: (o, off, d, cow, c) => this.cachedCreate(o, off, d, cow, c),
    };
    this.direct = {
      read: (o, off, len, c) => this.directRead(o, off, len, c),
      write: (o, off, d, c) => this.directWrite(o, off, d, c),
      create: (o, off, d, cow, c) => this.directCreate(o, off, d, cow, c),
    };
  }

  /** The path a client request with these header flags takes. */
  io(flags: number): ObjIO {
    return flags & Flag.CMD_CACHE && !(flags & Flag.CMD_DIRECT) ? this.cached : this.direct;
  }

  /** Start empty: whatever a previous run left behind is discarded. */
  async init(): Promise<void> {
    await fsp.mkdir(this.opts.dir, { recursive: true });
    for (const f of await fsp.readdir(this.opts.dir)) {
      if (/^[0-9a-f]{8}$/.test(f)) await fsp.rm(path.join(this.opts.dir, f), { recursive: true, force: true });
    }
    log.info(`object cache: ${this.opts.sizeMB} MB in ${this.opts.dir}${this.opts.directio ? ' (directio)' : ''}`);
  }

  // ---- bookkeeping ----------------------------------------------------------

  private vdi(vid: number): VdiCache {
    let v = this.vdis.get(vid);
    if (!v) {
      v = new VdiCache(vid);
      this.vdis.set(vid, v);
    }
    return v;
  }

  private async pin(e: Entry): Promise<Entry> {
    e.refs++;
    try {
      await e.ready;
    } catch (err) {
      this.unpin(e);
      throw err;
    }
    return e;
  }

  private unpin(e: Entry): void {
    if (--e.refs === 0 && e.detached && e.fd >= 0) {
      closeFd(e.fd);
      e.fd = -1;
    }
  }

  private touch(e: Entry): void {
    if (e.detached) return;
    this.lru.delete(e.oid);
    this.lru.set(e.oid, e);
  }

  /** Forget an object (its data is gone from the cache); the file goes now, the fd when unused. */
  private detach(e: Entry): void {
    if (e.detached) return;
    e.detached = true;
    if (this.lru.get(e.oid) === e) this.lru.delete(e.oid);
    const v = this.vdis.get(e.vid);
    if (v?.entries.get(e.oid) === e) v.entries.delete(e.oid);
    this.used -= e.size;
    fs.unlink(e.file, () => undefined);
    if (e.refs === 0 && e.fd >= 0) {
      closeFd(e.fd);
      e.fd = -1;
    }
  }

  /**
   * Add an object (pinned once for the caller) whose content fill() writes
   * into the freshly opened, object-sized file. fill may return the content.
   */
  private insert(oid: bigint, copies: number | undefined, fill: (e: Entry) => Promise<Buffer | void>): { e: Entry; content: Promise<Buffer | void> } {
    const vid = oidToVid(oid);
    const v = this.vdi(vid);
    const size = this.gw.sizeOf(oid);
    const dir = path.join(this.opts.dir, vid.toString(16).padStart(8, '0'));
    const e = new Entry(oid, vid, size, path.join(dir, `${oid.toString(16).padStart(16, '0')}-${(this.seq++).toString(36)}`), copies);
    e.refs = 1;
    v.entries.set(oid, e);
    this.lru.set(oid, e);
    this.used += size;
    v.dirReady ??= fsp.mkdir(dir, { recursive: true });
    const content = (async () => {
      if (this.used > this.limit) await this.reclaim();
      await v.dirReady;
      e.fd = await openFd(e.file, this.openFlags);
      if (e.detached) {
        // dropped meanwhile (its unlink may have run before our open)
        fs.unlink(e.file, () => undefined);
        throw new SheepdogError(Res.NO_OBJ);
      }
      await ftruncate(e.fd, size);
      return fill(e);
    })();
    e.ready = content.then(() => undefined);
    e.ready.catch(() => this.detach(e));
    return { e, content };
  }

  /** A pinned cache entry for oid, fetched from the cluster on a miss. */
  private async load(oid: bigint, copies: number | undefined, reading: boolean): Promise<{ e: Entry; content?: Buffer }> {
    const have = this.lru.get(oid);
    if (have) {
      if (reading) this.hits++;
      this.touch(have);
      return { e: await this.pin(have) };
    }
    if (reading) this.misses++;
    const { e, content } = this.insert(oid, copies, async (ne) => {
      const b = await this.gw.read(oid, 0, ne.size, copies);
      await pwriteFull(ne.fd, b, 0);
      return b;
    });
    try {
      return { e, content: (await content) as Buffer };
    } catch (err) {
      this.unpin(e);
      throw err;
    }
  }

  /** Evict least recently used, unpinned objects until the cache fits. */
  reclaim(): Promise<void> {
    if (!this.reclaiming) {
      this.reclaiming = this.doReclaim().finally(() => { this.reclaiming = undefined; });
    }
    return this.reclaiming;
  }

  private async doReclaim(): Promise<void> {
    const tried = new Set<Entry>();
    while (this.used > this.limit) {
      let victim: Entry | undefined;
      for (const e of this.lru.values()) {
        if (e.refs === 0 && !tried.has(e)) { victim = e; break; }
      }
      if (!victim) return; // everything is in use: stay over the limit for now
      tried.add(victim);
      if (victim.dirty || victim.flushing) {
        try {
          await this.flushEntry(victim);
        } catch (err) {
          log.warn(`object cache: cannot flush ${victim.oid.toString(16)} for eviction: ${(err as Error).message}`);
          continue;
        }
      }
      if (victim.refs === 0 && !victim.dirty && !victim.flushing && !victim.detached) this.detach(victim);
    }
  }

  // ---- flushing -------------------------------------------------------------

  private async flushEntry(e: Entry): Promise<void> {
    while (e.flushing) await e.flushing.catch(() => undefined);
    if (!e.dirty) return;
    const p = this.writeBack(e);
    e.flushing = p;
    try {
      await p;
    } finally {
      if (e.flushing === p) e.flushing = undefined;
    }
  }

  private async writeBack(e: Entry): Promise<void> {
    const lo = e.lo;
    const hi = e.hi;
    const created = e.created;
    const gen = e.createGen;
    e.lo = Infinity;
    e.hi = 0;
    e.refs++;
    try {
      const buf = Buffer.allocUnsafe(hi - lo);
      await preadFull(e.fd, buf, 0, hi - lo, lo);
      if (created) await this.gw.createRanges(e.oid, [{ off: lo, data: buf }], e.copies);
      else await this.gw.rawWrite(e.oid, lo, buf, e.copies);
      if (created && e.createGen === gen) {
        e.created = false;
        const idx = Number(e.oid & 0xffffffffn);
        const v = this.vdis.get(e.vid);
        if (v && v.pending.get(idx) === e.vid) v.unindexed.add(idx);
      }
    } catch (err) {
      e.mark(lo, hi);
      if (created && e.createGen === gen) e.created = true;
      throw err;
    } finally {
      this.unpin(e);
    }
  }

  /**
   * Flush a VDI: every dirty data object (and any flush already under way),
   * then the pending index entries. Flushes of one VDI run one after another.
   */
  flushVdi(vid: number): Promise<void> {
    const v = this.vdis.get(vid);
    if (!v) return Promise.resolve();
    const run = v.chain.then(() => this.doFlushVdi(v));
    v.chain = run.catch(() => undefined);
    return run;
  }

  private async doFlushVdi(v: VdiCache): Promise<void> {
    const pend = new Map(v.pending);
    const todo = new Set([...v.entries.values()].filter((e) => e.dirty || e.flushing));
    for (const [idx, val] of pend) {
      if (!val || val === v.vid) continue;
      const e = this.lru.get(vidToDataOid(val, idx));
      if (e && (e.dirty || e.flushing)) todo.add(e);
    }
    await parallel([...todo], FLUSH_PARALLEL, (e) => this.flushEntry(e));
    if (!pend.size) return;
    // data is in the cluster: now the index entries that point at it
    const idxs = [...pend.keys()].sort((a, b) => a - b);
    const runs: { first: number; vals: number[] }[] = [];
    for (const i of idxs) {
      const r = runs[runs.length - 1];
      if (r && r.first + r.vals.length === i && r.vals.length < 65536) r.vals.push(pend.get(i)!);
      else runs.push({ first: i, vals: [pend.get(i)!] });
    }
    const inode = vidToVdiOid(v.vid);
    await parallel(runs, 4, async (r) => {
      const b = Buffer.allocUnsafe(4 * r.vals.length);
      r.vals.forEach((x, k) => b.writeUInt32LE(x, 4 * k));
      await this.gw.write(inode, SD_INODE_HEADER_SIZE + 4 * r.first, b, v.copies);
      r.vals.forEach((x, k) => {
        const i = r.first + k;
        if (v.pending.get(i) === x) v.pending.delete(i);
        v.unindexed.delete(i);
      });
    });
  }

  /** Flush every cached VDI. */
  async flushAll(): Promise<void> {
    await parallel([...this.vdis.keys()], 4, (vid) => this.flushVdi(vid));
  }

  /** Flush a VDI, then drop everything cached for it. */
  async dropVdi(vid: number): Promise<void> {
    const v = this.vdis.get(vid);
    if (!v) return;
    for (let i = 0; i < 5; i++) {
      await this.flushVdi(vid);
      if (!v.pending.size && ![...v.entries.values()].some((e) => e.dirty || e.flushing)) break;
    }
    for (const e of [...v.entries.values()]) if (!e.dirty && !e.flushing) this.detach(e);
    if (!v.entries.size && !v.pending.size) this.vdis.delete(vid);
  }

  /** The VDI is gone: drop its cache without writing anything back. */
  forget(vid: number): void {
    const v = this.vdis.get(vid);
    if (!v) return;
    for (const e of [...v.entries.values()]) this.detach(e);
    v.pending.clear();
    this.vdis.delete(vid);
  }

  async purge(vid?: number): Promise<void> {
    if (vid) return this.dropVdi(vid);
    await parallel([...this.vdis.keys()], 4, (x) => this.dropVdi(x));
  }

  /** Before NEW_VDI: a snapshot (or clone) must see every acknowledged write of its base. */
  async beforeNewVdi(name: string, baseVid: number, snapshot: boolean): Promise<void> {
    const vids = new Set<number>();
    if (baseVid) vids.add(baseVid);
    if (snapshot) {
      const cur = await this.hooks.workingVid(name).catch(() => 0);
      if (cur) vids.add(cur);
    }
    for (const vid of vids) await this.flushVdi(vid);
  }

  /** Before DEL_VDI: write back what the VDI has (the delete then frees it). */
  async beforeDelVdi(name: string, snapid: number, tag: string): Promise<number> {
    const vid = await this.hooks.resolve(name, snapid, tag).catch(() => 0);
    if (vid) await this.flushVdi(vid);
    return vid;
  }

  /** Bytes written by clients and not yet flushed to the cluster. */
  dirtyBytes(): number {
    let n = 0;
    for (const v of this.vdis.values()) for (const e of v.entries.values()) if (e.dirty) n += e.hi - e.lo;
    return n;
  }

  info(): CacheInfo {
    const vdis = [...this.vdis.values()].sort((a, b) => a.vid - b.vid).map((v) => {
      let dirty = 0;
      for (const e of v.entries.values()) if (e.dirty || e.flushing) dirty++;
      return { vid: v.vid, objects: v.entries.size, dirty, pendingIndex: v.pending.size };
    });
    return {
      size: BigInt(this.limit), used: BigInt(this.used), hits: this.hits, misses: this.misses,
      flags: CacheInfoFlag.ENABLED | (this.opts.directio ? CacheInfoFlag.DIRECTIO : 0), vdis,
    };
  }

  /** Graceful stop: write everything back, close the files. */
  async close(): Promise<void> {
    await this.flushAll().catch((e) => log.err(`object cache: flush on shutdown failed: ${(e as Error).message}`));
    for (const e of [...this.lru.values()]) this.detach(e);
  }

  // ---- the cached path ------------------------------------------------------

  private async cachedRead(oid: bigint, off: number, len: number, copies?: number): Promise<Buffer> {
    if (isDataObj(oid)) {
      const { e, content } = await this.load(oid, copies, true);
      try {
        if (content) return Buffer.from(content.subarray(off, off + len));
        const b = Buffer.allocUnsafe(len);
        await preadFull(e.fd, b, 0, len, off);
        return b;
      } finally {
        this.unpin(e);
      }
    }
    const b = await this.gw.read(oid, off, len, copies);
    const v = isVdiObj(oid) ? this.vdis.get(oidToVid(oid)) : undefined;
    if (v?.pending.size && touchesIndex(off, len)) {
      for (const [idx, val] of v.pending) {
        const at = SD_INODE_HEADER_SIZE + 4 * idx - off;
        if (at >= 0 && at + 4 <= len) b.writeUInt32LE(val, at);
      }
    }
    return b;
  }

  private checkWritable(oid: bigint, off: number, len: number): void {
    if (this.hooks.isSnapshot(oidToVid(oid))) throw new SheepdogError(Res.READONLY);
    if (off < 0 || off + len > this.gw.sizeOf(oid)) throw new SheepdogError(Res.INVALID_PARMS);
  }

  private async cachedWrite(oid: bigint, off: number, data: Buffer, copies?: number): Promise<void> {
    if (isDataObj(oid)) {
      this.checkWritable(oid, off, data.length);
      const { e } = await this.load(oid, copies, false);
      try {
        if (copies) e.copies = copies;
        await pwriteFull(e.fd, data, off);
        e.mark(off, off + data.length);
      } finally {
        this.unpin(e);
      }
      return;
    }
    if (isVdiObj(oid)) {
      if (isIndexUpdate(off, data.length)) return this.pendIndex(oid, off, data, copies);
      if (touchesIndex(off, data.length)) await this.flushVdi(oidToVid(oid));
    }
    return this.gw.write(oid, off, data, copies);
  }

  /** Record index entries; objects of ours they stop referencing are dropped. */
  private pendIndex(oid: bigint, off: number, data: Buffer, copies?: number): void {
    if (off + data.length > this.gw.sizeOf(oid)) throw new SheepdogError(Res.INVALID_PARMS);
    const vid = oidToVid(oid);
    const v = this.vdi(vid);
    if (copies) v.copies = copies;
    const first = (off - SD_INODE_HEADER_SIZE) / 4;
    for (let k = 0; k < data.length / 4; k++) {
      const idx = first + k;
      const val = data.readUInt32LE(4 * k);
      v.pending.set(idx, val);
      if (val === vid) continue;
      // e.g. a discard: an object of ours the cluster never indexed is garbage now
      const mine = vidToDataOid(vid, idx);
      const e = v.entries.get(mine);
      if (e && e.created && e.refs === 0 && !e.flushing) this.detach(e);
      else if (v.unindexed.has(idx) && !e?.dirty) {
        v.unindexed.delete(idx);
        if (e) this.detach(e);
        this.gw.remove(mine).catch(() => undefined);
      }
    }
  }

  private async cachedCreate(oid: bigint, off: number, data: Buffer, cowOid: bigint, copies?: number): Promise<void> {
    if (!isDataObj(oid)) {
      if (isVdiObj(oid)) await this.flushVdi(oidToVid(oid));
      return this.gw.create(oid, off, data, cowOid, copies);
    }
    this.checkWritable(oid, off, data.length);
    const size = this.gw.sizeOf(oid);
    let full: Buffer | undefined;
    if (cowOid && data.length !== size) {
      full = await this.cachedRead(cowOid, 0, size);
      data.copy(full, off);
    }
    const put = async (e: Entry) => {
      if (full) {
        await pwriteFull(e.fd, full, 0);
      } else {
        await ftruncate(e.fd, 0);
        await ftruncate(e.fd, size);
        await pwriteFull(e.fd, data, off);
      }
      e.createGen++;
      e.created = true;
      e.lo = full ? 0 : off;
      e.hi = full ? size : off + data.length;
    };
    const have = this.lru.get(oid);
    if (have) {
      const e = await this.pin(have);
      try {
        if (copies) e.copies = copies;
        await put(e);
        this.touch(e);
      } finally {
        this.unpin(e);
      }
      return;
    }
    const { e, content } = this.insert(oid, copies, put);
    try {
      await content;
    } finally {
      this.unpin(e);
    }
  }

  // ---- around the cache ------------------------------------------------------

  /** Write back (and optionally drop) whatever is cached for oid. */
  private async settle(oid: bigint, drop: boolean): Promise<void> {
    if (isDataObj(oid)) {
      const e = this.lru.get(oid);
      if (!e) return;
      if (e.dirty || e.flushing) await this.flushEntry(e);
      if (drop && !e.dirty && e.refs === 0) this.detach(e);
    }
  }

  private async directRead(oid: bigint, off: number, len: number, copies?: number): Promise<Buffer> {
    if (isDataObj(oid)) await this.settle(oid, false);
    else if (isVdiObj(oid) && touchesIndex(off, len) && this.vdis.get(oidToVid(oid))?.pending.size) await this.flushVdi(oidToVid(oid));
    return this.gw.read(oid, off, len, copies);
  }

  private async directWrite(oid: bigint, off: number, data: Buffer, copies?: number): Promise<void> {
    if (isDataObj(oid)) await this.settle(oid, true);
    else if (isVdiObj(oid) && touchesIndex(off, data.length) && this.vdis.has(oidToVid(oid))) await this.flushVdi(oidToVid(oid));
    await this.gw.write(oid, off, data, copies);
    if (isDataObj(oid)) await this.settle(oid, true);
  }

  private async directCreate(oid: bigint, off: number, data: Buffer, cowOid: bigint, copies?: number): Promise<void> {
    if (isDataObj(oid)) await this.settle(oid, true);
    else if (isVdiObj(oid) && this.vdis.has(oidToVid(oid))) await this.flushVdi(oidToVid(oid));
    if (cowOid) await this.settle(cowOid, false);
    await this.gw.create(oid, off, data, cowOid, copies);
    if (isDataObj(oid)) await this.settle(oid, true);
  }
}
