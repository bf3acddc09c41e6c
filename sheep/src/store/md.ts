// Multi-disk nodes (md; erasure-coding-and-md.md part B): `sheep BASE,D1,D2`
// keeps the node's metadata in BASE and spreads objects over D1, D2, ... by
// a second consistent-hash ring, one point per 16 MiB of a disk's size.
//
// Which disk an object is on is the ring's answer, except while a plug or
// unplug moves files between disks: an object found on another disk is
// "misplaced" (mapped to where it is) until the rebalancer has moved it.
// So every path the store builds goes through rootOf(), and nothing waits
// for a whole rebalance.
import { promises as fsp, statSync } from 'node:fs';
import * as path from 'node:path';
import { sdHashOid, SheepdogError, Res } from '@sheepdog/common';
import { versionIO } from './fileio.js';
import { log } from '../log.js';

/**
 * Bytes per virtual disk. Upstream master (after 611e8c48, and the
 * reference binary the doc was checked against) uses 16 MiB; tag v1.0 used
 * 1 GiB. The two place objects on different disks; we follow master.
 */
export const MD_VDISK_SIZE = 16 * 1024 * 1024;
export const MD_SIZE_XATTR = 'user.md.size';
/** sd_md_info holds at most this many disks (the wire format's array). */
export const MD_MAX_DISK = 64;

const M32 = 0x100000000;

// sd_hash_next on 32-bit halves in doubles (exact: every intermediate
// stays below 2^53), as common/hash.ts does for object ids: a disk has
// thousands of points (a million for a large one), BigInts would crawl.
let fh = 0;
let fl = 0;
function fnvWord(w: number): void {
  for (let i = 0; i < 4; i++) {
    fl = (fl ^ ((w >>> (8 * i)) & 0xff)) >>> 0;
    const tl = fl * 0x1b3;
    fh = (fh * 0x1b3 + Math.floor(tl / M32) + ((fl << 8) >>> 0)) >>> 0;
    fl = tl >>> 0;
  }
}

/** fnv1a-64 over the 8 LE bytes of (fh, fl), seeded with them: sd_hash_next, in place. */
function hashNextInPlace(): void {
  const h = fh;
  const l = fl;
  fnvWord(l);
  fnvWord(h);
}

/** sd_hash of a string (the disk's trimmed path), into (fh, fl). */
function hashPath(p: string): void {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(p, 'utf8')) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  fh = Number(h >> 32n);
  fl = Number(h & 0xffffffffn);
  hashNextInPlace();
}

/** Points as (hi, lo) halves: a disk of many TiB has a million of them, which BigInts would make slow to build and sort. */
interface Points {
  hi: Uint32Array;
  lo: Uint32Array;
}

function generate(p: string, nr: number): Points {
  const hi = new Uint32Array(nr);
  const lo = new Uint32Array(nr);
  hashPath(p);
  // hashNextInPlace, inlined on locals: this loop makes every point
  let h = fh;
  let l = fl;
  for (let i = 0; i < nr; i++) {
    const wl = l;
    const wh = h;
    for (let k = 0; k < 8; k++) {
      const byte = k < 4 ? (wl >>> (8 * k)) & 0xff : (wh >>> (8 * (k - 4))) & 0xff;
      l = (l ^ byte) >>> 0;
      const tl = l * 0x1b3;
      h = (h * 0x1b3 + Math.floor(tl / M32) + ((l << 8) >>> 0)) >>> 0;
      l = tl >>> 0;
    }
    hi[i] = h;
    lo[i] = l;
  }
  return { hi, lo };
}

/** A disk's ring points: h = sd_hash(path); then nr times h = sd_hash_next(h), each a point (the seed is not one). */
export function diskPoints(p: string, nr: number): bigint[] {
  const { hi, lo } = generate(p, nr);
  return Array.from(hi, (h, i) => (BigInt(h) << 32n) | BigInt(lo[i]));
}

/** A disk's points, sorted; kept per path and count, so a ring change only merges. */
const sortedCache = new Map<string, Points>();

function sortedPoints(p: string, nr: number): Points {
  const key = `${nr}:${p}`;
  let s = sortedCache.get(key);
  if (s) return s;
  const { hi, lo } = generate(p, nr);
  let idx: Uint32Array;
  if (nr <= 1 << 21) {
    // (hi, index) packed exactly in a double sorts natively, far faster than a comparator;
    // points whose high halves are equal are then put in order by their low halves
    const keys = new Float64Array(nr);
    for (let i = 0; i < nr; i++) keys[i] = hi[i] * (1 << 21) + i;
    keys.sort();
    idx = new Uint32Array(nr);
    for (let i = 0; i < nr; i++) idx[i] = keys[i] % (1 << 21);
    for (let i = 1; i < nr; i++) {
      for (let j = i; j > 0 && hi[idx[j]] === hi[idx[j - 1]] && lo[idx[j]] < lo[idx[j - 1]]; j--) {
        const t = idx[j];
        idx[j] = idx[j - 1];
        idx[j - 1] = t;
      }
    }
  } else {
    idx = Uint32Array.from({ length: nr }, (_, i) => i);
    idx.sort((a, b) => hi[a] - hi[b] || lo[a] - lo[b]);
  }
  s = { hi: idx.map((i) => hi[i]), lo: idx.map((i) => lo[i]) };
  if (sortedCache.size > 256) sortedCache.clear();
  sortedCache.set(key, s);
  return s;
}

/** Virtual disks of a disk of size bytes (at least one, so a full disk still takes part). */
export const vdiskCount = (size: number): number => Math.max(1, Math.ceil(size / MD_VDISK_SIZE));

export interface Disk {
  path: string;
  /** Bytes, as measured on first use and kept in user.md.size. */
  size: number;
}

/**
 * The object -> disk ring over a set of disks. Each disk's points stay in
 * their own sorted array and a lookup searches each: the successor on the
 * ring is the smallest of the disks' successors. So a ring change (a disk
 * plugged, unplugged or failed) costs nothing to build, and a lookup a few
 * binary searches (at most 64 disks).
 */
export class DiskRing {
  private readonly parts: Points[];
  /** Answers already computed on this ring; bounded. */
  private memo = new Map<bigint, Disk>();
  constructor(readonly disks: Disk[]) {
    this.parts = disks.map((d) => sortedPoints(d.path, vdiskCount(d.size)));
  }

  /** The disk of oid: the first point >= sd_hash_oid(oid), wrapping (equal points: the earlier disk); undefined with no disks. */
  diskOf(oid: bigint): Disk | undefined {
    const hit = this.memo.get(oid);
    if (hit) return hit;
    if (!this.parts.length) return undefined;
    // sd_hash_oid on halves (common/hash.ts's, without building the BigInt)
    fh = 0xcbf29ce4;
    fl = 0x84222325;
    fnvWord(Number(oid & 0xffffffffn));
    fnvWord(Number((oid >> 32n) & 0xffffffffn));
    hashNextInPlace();
    const kh = fh;
    const kl = fl;
    // best successor at or after the key, and the smallest point overall (for the wrap)
    let best = -1, bh = 0, bl = 0;
    let low = -1, lh = 0, ll = 0;
    for (let d = 0; d < this.parts.length; d++) {
      const { hi, lo } = this.parts[d];
      const n = hi.length;
      if (low < 0 || hi[0] < lh || (hi[0] === lh && lo[0] < ll)) { low = d; lh = hi[0]; ll = lo[0]; }
      let a = 0;
      let b = n;
      while (a < b) {
        const m = (a + b) >>> 1;
        if (hi[m] < kh || (hi[m] === kh && lo[m] < kl)) a = m + 1;
        else b = m;
      }
      if (a === n) continue;
      if (best < 0 || hi[a] < bh || (hi[a] === bh && lo[a] < bl)) { best = d; bh = hi[a]; bl = lo[a]; }
    }
    const disk = this.disks[best >= 0 ? best : low];
    if (this.memo.size >= 1 << 16) this.memo.clear();
    this.memo.set(oid, disk);
    return disk;
  }
}

/** `BASE[,DISK1,...]`: the metadata directory and the object disks (none: BASE/obj, as before md). Trailing slashes trimmed. */
export function parseDiskArg(arg: string): { base: string; disks: string[] } {
  const trim = (p: string) => (p.length > 1 ? p.replace(/\/+$/, '') : p);
  const parts = arg.split(',');
  if (parts.some((p) => p === '')) throw new Error(`empty path in '${arg}'`);
  const [base, ...disks] = parts.map((p) => trim(path.resolve(p)));
  return { base, disks };
}

/** A path's object-file names: live ones in the root (or tree subdirs), set-aside ones in .stale. */
const OBJ_NAME = /^[0-9a-f]{16}$/;

export type DiskChange = { kind: 'plug' | 'unplug' | 'failed'; disk: string };

/**
 * The node's object disks. Paths the store builds come from rootOf();
 * liveSubdirs lists the subdirectories of a root that hold live objects
 * (the tree layout's), set by the store.
 */
export class MdDisks {
  /** Plugged disks, in plug order (md info's Id). */
  private plugged: Disk[] = [];
  /** Unplugged disks whose files are still being moved off. */
  private draining: Disk[] = [];
  private ring = new DiskRing([]);
  /** Objects not (yet) on their ring disk: oid -> the root their files are in. */
  private misplaced = new Map<bigint, string>();
  private failedRoots = new Set<string>();
  /** Files put somewhere while a plug or unplug looks for what moves (see placed()). */
  private changing?: Map<bigint, string>;
  private rebalancing?: Promise<void>;
  private rebalanceAgain = false;
  private checker?: NodeJS.Timeout;
  /** Told of every change of the disk set (the store closes files; the node updates its space and recovers). */
  onChange?: (c: DiskChange) => void;
  /** Moves an object's files (live and set aside) from one root to another (the store, under its locks). */
  relocate?: (oid: bigint, from: string, to: string) => Promise<void>;
  /** Subdirectories of a root that hold live objects ('' for the root itself). */
  liveSubdirs: () => string[] = () => [''];

  /**
   * Disks that failed, kept across restarts: one that comes back holds
   * copies older than those recovered elsewhere meanwhile (and of the same
   * version within an epoch), so it is not used again until plugged anew
   * (which purges it).
   */
  readonly failedFile: string;

  constructor(readonly base: string, private readonly wanted: string[]) {
    this.failedFile = path.join(base, 'md-failed.json');
  }

  /** Open the disks named on the command line (B.1's checks and messages). */
  async init(): Promise<void> {
    await fsp.mkdir(path.join(this.base, 'obj'), { recursive: true });
    try {
      for (const p of JSON.parse(await fsp.readFile(this.failedFile, 'utf8')) as string[]) this.failedRoots.add(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log.err(`${this.failedFile}: ${(e as Error).message}`);
    }
    const seen = new Set<string>();
    for (const p of this.wanted) {
      if (seen.has(p)) {
        log.err(`duplicate path ${p}`);
        continue;
      }
      seen.add(p);
      const clash = this.overlap(p, this.plugged.map((d) => d.path));
      if (clash) {
        log.err(`invalid path ${p}: it overlaps ${clash}`);
        continue;
      }
      if (this.failedRoots.has(p)) {
        log.err(`${p} failed in an earlier run (${this.failedFile}): not used; plug it back with collie node md plug (which empties it)`);
        continue;
      }
      const d = await this.open(p, false);
      if (d) this.plugged.push(d);
    }
    if (!this.plugged.length) throw new Error("There isn't any available disk!");
    this.ring = new DiskRing(this.plugged);
    for (const d of this.plugged) log.info(`md: ${d.path}, ${d.size} bytes, vdisk nr ${vdiskCount(d.size)}`);
    this.checker = setInterval(() => void this.check(false), 5000);
    this.checker.unref();
  }

  /** A disk made ready for use (created, size measured or read back), or undefined (logged) if it cannot be one. */
  private async open(p: string, purge: boolean): Promise<Disk | undefined> {
    try {
      if (p === this.base || (await exists(path.join(p, 'config.json')) && await exists(path.join(p, 'epoch')))) {
        throw new SheepdogError(Res.UNKNOWN, `${p} is meta-store, abort`);
      }
      await fsp.mkdir(p, { recursive: true });
      if (!(await fsp.stat(p)).isDirectory()) throw new Error(`${p} is not a directory`);
      if (purge) for (const f of await fsp.readdir(p)) await fsp.rm(path.join(p, f), { recursive: true, force: true });
      let size = versionIO!.getU64Attr(p, MD_SIZE_XATTR);
      if (size < 0) {
        if (size !== -61 /* ENODATA */) {
          log.err(`multi-disk support need xattr feature for path: ${p}`);
          return undefined;
        }
        const sf = await fsp.statfs(p);
        size = sf.bavail * sf.bsize;
        if (versionIO!.setU64Attr(p, MD_SIZE_XATTR, size) < 0) {
          log.err(`multi-disk support need xattr feature for path: ${p}`);
          return undefined;
        }
      }
      for (const sub of ['.stale', '.tmp', ...this.liveSubdirs()]) await fsp.mkdir(path.join(p, sub), { recursive: true });
      return { path: p, size };
    } catch (e) {
      if (e instanceof SheepdogError) throw e;
      log.err(`invalid path ${p}: ${(e as Error).message}`);
      return undefined;
    }
  }

  /** The first of paths (and, with meta, BASE) that p is, contains or is inside of. */
  private overlap(p: string, paths: string[], meta = false): string | undefined {
    const inside = (a: string, b: string) => a === b || a.startsWith(b.endsWith('/') ? b : b + '/');
    return [...(meta ? [this.base] : []), ...paths].find((q) => inside(p, q) || inside(q, p));
  }

  close(): void {
    if (this.checker) clearInterval(this.checker);
    this.checker = undefined;
  }

  /** Disks in md info order. */
  get disks(): readonly Disk[] {
    return this.plugged;
  }

  /** Every root that may hold object files now (plugged, and unplugged ones being emptied). */
  roots(): string[] {
    return [...this.plugged, ...this.draining].map((d) => d.path);
  }

  /** The root an object's files are in (the ring's disk, unless it is misplaced). */
  rootOf(oid: bigint): string {
    const m = this.misplaced.get(oid);
    if (m !== undefined) return m;
    const d = this.ring.diskOf(oid);
    if (!d) throw new SheepdogError(Res.EIO, 'no disks plugged');
    return d.path;
  }

  /** The ring's disk of an object (where it belongs). */
  homeOf(oid: bigint): string | undefined {
    return this.ring.diskOf(oid)?.path;
  }

  /** A file of oid was just put in root (a create started before the ring changed): keep finding it there until it is moved. */
  placed(oid: bigint, root: string): void {
    this.changing?.set(oid, root);
    if (this.failedRoots.has(root) || root === this.homeOf(oid)) return;
    this.misplaced.set(oid, root);
    this.kickRebalance();
  }

  /** Whether root failed (a write that went there must be retried elsewhere). */
  isFailed(root: string): boolean {
    return this.failedRoots.has(root);
  }

  /** The plugged or draining disk holding file (undefined: none). */
  rootOfFile(file: string): string | undefined {
    return this.roots().find((r) => file === r || file.startsWith(r + '/'));
  }

  /** Sum of the disks' sizes: the node's advertised space. */
  get space(): bigint {
    return this.plugged.reduce((s, d) => s + BigInt(d.size), 0n);
  }

  /** Per disk: free space (statvfs) and bytes used by object files. */
  async info(): Promise<{ idx: number; free: bigint; used: bigint; path: string }[]> {
    const out = [];
    for (let i = 0; i < this.plugged.length; i++) {
      const d = this.plugged[i];
      let free = 0n;
      let used = 0n;
      try {
        const sf = await fsp.statfs(d.path);
        free = BigInt(sf.bavail) * BigInt(sf.bsize);
        for (const dir of this.liveSubdirs().map((s) => path.join(d.path, s))) {
          for (const f of await fsp.readdir(dir).catch(() => [] as string[])) {
            if (!OBJ_NAME.test(f)) continue;
            const st = await fsp.stat(path.join(dir, f)).catch(() => undefined);
            if (st) used += BigInt(st.blocks) * 512n;
          }
        }
      } catch { /* a disk failing now: its row shows zeros until the check unplugs it */ }
      out.push({ idx: i, free, used, path: d.path });
    }
    return out;
  }

  /** Oids with files (live or set aside) in root. Throws if the root cannot be read. */
  private async oidsIn(root: string): Promise<Set<bigint>> {
    const out = new Set<bigint>();
    for (const dir of [...this.liveSubdirs().map((s) => path.join(root, s)), path.join(root, '.stale')]) {
      let names: string[];
      try {
        names = await fsp.readdir(dir);
      } catch (e) {
        // tree subdirectories are made on format; the root and .stale always exist
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' && dir !== root && !dir.endsWith('/.stale')) continue;
        throw e;
      }
      for (const f of names) if (OBJ_NAME.test(f)) out.add(BigInt('0x' + f));
    }
    return out;
  }

  /**
   * Files not on their ring disk (a move interrupted by a crash) are found
   * and moved: at start-up, once the store knows its layout.
   */
  async rescan(): Promise<void> {
    await this.findMisplaced();
    this.kickRebalance();
  }

  /** Every file not on its ring disk becomes misplaced. */
  private async findMisplaced(only?: string[]): Promise<void> {
    for (const root of only ?? this.roots()) {
      let oids: Set<bigint>;
      try {
        oids = await this.oidsIn(root);
      } catch (e) {
        this.fail(root, `${root}: ${(e as Error).message}`);
        continue;
      }
      for (const oid of oids) {
        if (this.homeOf(oid) !== root && !this.misplaced.has(oid)) this.misplaced.set(oid, root);
      }
    }
  }

  /**
   * Plug disks: purged (as upstream warns), added to the ring, and the
   * objects the ring now gives them moved over. false: nothing changed.
   */
  async plug(paths: string[]): Promise<boolean> {
    const added: Disk[] = [];
    for (const p of paths) {
      if (this.plugged.some((d) => d.path === p) || this.draining.some((d) => d.path === p) || added.some((d) => d.path === p)) {
        log.err(`duplicate path ${p}`);
        continue;
      }
      // plugging purges: never a directory that holds, or is inside, the node's other data
      const clash = this.overlap(p, [...this.roots(), ...added.map((d) => d.path)], true);
      if (clash) {
        log.err(`invalid path ${p}: it overlaps ${clash}`);
        continue;
      }
      if (this.plugged.length + added.length >= MD_MAX_DISK) {
        log.err(`invalid path ${p}: ${MD_MAX_DISK} disks are plugged already`);
        continue;
      }
      const d = await this.open(p, true).catch((e) => { log.err((e as Error).message); return undefined; });
      if (d) added.push(d);
    }
    if (!added.length) return false;
    if (added.some((d) => this.failedRoots.delete(d.path))) await this.saveFailed();
    // files that move to the new disks are found where they are, before the ring changes
    const before = this.plugged.map((d) => d.path);
    const ring = new DiskRing([...this.plugged, ...added]);
    const moving: [bigint, string][] = [];
    this.changing = new Map();
    try {
      for (const root of before) {
        for (const oid of await this.oidsIn(root).catch(() => new Set<bigint>())) moving.push([oid, root]);
      }
    } finally {
      // creates that landed while we looked are where the old ring put them
      for (const [oid, root] of this.changing) moving.push([oid, root]);
      this.changing = undefined;
    }
    for (const [oid, root] of moving) {
      if (!this.misplaced.has(oid) && !this.failedRoots.has(root) && ring.diskOf(oid)!.path !== root) this.misplaced.set(oid, root);
    }
    this.plugged.push(...added);
    this.ring = ring;
    for (const d of added) {
      log.notice(`md: plugged ${d.path} (${d.size} bytes, vdisk nr ${vdiskCount(d.size)}): ${moving.filter(([oid]) => this.homeOf(oid) === d.path).length} object(s) move to it`);
      this.onChange?.({ kind: 'plug', disk: d.path });
    }
    this.kickRebalance();
    return true;
  }

  /**
   * Unplug disks: out of the ring at once; their files are moved to the
   * remaining disks (a disk that cannot be read is handled as failed: its
   * objects are recovered from peers). false: nothing changed.
   */
  async unplug(paths: string[]): Promise<boolean> {
    const gone: Disk[] = [];
    for (const p of paths) {
      const d = this.plugged.find((x) => x.path === p);
      if (!d) {
        log.err(`invalid path ${p}`);
        continue;
      }
      if (!gone.includes(d)) gone.push(d);
    }
    if (!gone.length) return false;
    const found = new Map<string, Set<bigint> | Error>();
    this.changing = new Map();
    try {
      for (const d of gone) found.set(d.path, await this.oidsIn(d.path).catch((e: Error) => e));
    } finally {
      for (const [oid, root] of this.changing) {
        const f = found.get(root);
        if (f && !(f instanceof Error)) f.add(oid);
      }
      this.changing = undefined;
    }
    for (const d of gone) {
      const oids = found.get(d.path)!;
      if (oids instanceof Error) {
        this.fail(d.path, `${d.path}: ${oids.message}`);
        continue;
      }
      this.plugged = this.plugged.filter((x) => x !== d);
      this.draining.push(d);
      for (const oid of oids) if (!this.misplaced.has(oid)) this.misplaced.set(oid, d.path);
    }
    this.ring = new DiskRing(this.plugged);
    for (const d of gone) {
      if (!this.draining.includes(d)) continue;
      log.notice(`md: unplugged ${d.path}: ${(found.get(d.path) as Set<bigint>).size} object(s) move to the other disks`);
      this.onChange?.({ kind: 'unplug', disk: d.path });
    }
    this.kickRebalance();
    return true;
  }

  /**
   * A disk failed (an I/O error on it, or its directory gone): out of the
   * ring and forgotten at once; its objects are recovered from peers by the
   * node (onChange). Synchronous, so a request that saw the error is retried
   * against the new ring.
   */
  fail(root: string, why: string): void {
    const d = this.plugged.find((x) => x.path === root) ?? this.draining.find((x) => x.path === root);
    if (!d) return;
    this.failedRoots.add(root);
    this.plugged = this.plugged.filter((x) => x !== d);
    this.draining = this.draining.filter((x) => x !== d);
    for (const [oid, r] of this.misplaced) if (r === root) this.misplaced.delete(oid);
    this.ring = new DiskRing(this.plugged);
    log.err(`${why}`);
    log.err(`md_remove_disk ${root} from multi-disk array: I/O error; its objects are recovered from the other replicas (${this.plugged.length} disk(s) left)`);
    void this.saveFailed();
    this.onChange?.({ kind: 'failed', disk: root });
  }

  private async saveFailed(): Promise<void> {
    const tmp = `${this.failedFile}.tmp`;
    try {
      await fsp.writeFile(tmp, JSON.stringify([...this.failedRoots]) + '\n');
      await fsp.rename(tmp, this.failedFile);
    } catch (e) {
      log.err(`cannot record the failed disks in ${this.failedFile}: ${(e as Error).message}`);
    }
  }

  /**
   * Check that every disk still works: its directory is one, and (probe)
   * a small file can be written and synced in it. A failing disk is
   * unplugged (fail()).
   */
  async check(probe: boolean): Promise<void> {
    // a disk that hangs must not pile up checks behind it
    if (this.checking && !probe) return;
    this.checking = true;
    try {
      await this.checkDisks(probe);
    } finally {
      this.checking = false;
    }
  }

  private checking = false;

  private async checkDisks(probe: boolean): Promise<void> {
    for (const d of [...this.plugged, ...this.draining]) {
      try {
        if (!(await fsp.stat(d.path)).isDirectory()) throw new Error('not a directory');
        await fsp.access(path.join(d.path, '.stale'));
        if (probe) {
          const f = path.join(d.path, '.tmp', '.probe');
          const fh = await fsp.open(f, 'w');
          try {
            await fh.write(Buffer.from('md'), 0, 2, 0);
            await fh.datasync();
          } finally {
            await fh.close();
          }
        }
      } catch (e) {
        this.fail(d.path, `${d.path} corrupted: ${(e as Error).message}`);
      }
    }
  }

  /**
   * How a file-system error on an object file is answered (B.5): ENOENT
   * with the directory present is NO_OBJ; one whose directory is gone, and
   * any other error, fails the disk (the request is retried: NETWORK_ERROR).
   * undefined: not md's to answer.
   */
  classify(e: NodeJS.ErrnoException, at?: string): SheepdogError | undefined {
    const code = e.code;
    if (code === 'ENOSPC' || code === 'EDQUOT') return undefined;
    if (code === 'EMFILE' || code === 'ENFILE' || code === 'EINTR' || code === 'EAGAIN' || code === 'EEXIST') {
      return new SheepdogError(Res.NETWORK_ERROR, `${code}: try again`);
    }
    const root = e.path ? this.rootOfFile(e.path) : at;
    if (code === 'ENOENT') {
      if (!e.path || !root) return undefined;
      const dir = path.dirname(e.path);
      // an error path only: one stat of a directory the kernel has cached
      try {
        if (statSync(dir).isDirectory()) return undefined;
      } catch { /* gone */ }
      this.fail(root, `${dir} corrupted`);
      return new SheepdogError(Res.NETWORK_ERROR, `${dir} corrupted; the disk is unplugged, try again`);
    }
    if (root) {
      this.fail(root, `${e.path}: ${e.message}`);
      return new SheepdogError(Res.NETWORK_ERROR, `${root} failed; the disk is unplugged, try again`);
    }
    // an error on a descriptor: which disk is not known here; the check finds out, and so may the caller (diskUnknown)
    void this.check(true);
    return Object.assign(new SheepdogError(Res.NETWORK_ERROR, `I/O error: ${e.message}; the disks are being checked, try again`), { diskUnknown: e });
  }

  /** An error classify() could not pin on a disk, met by a request on root's object: root failed. */
  failedAt(err: unknown, root: string): void {
    const e = (err as { diskUnknown?: NodeJS.ErrnoException }).diskUnknown;
    if (e) this.fail(root, `${root}: ${e.message}`);
  }

  /** Move misplaced objects to their ring disks, one at a time, in the background. */
  private kickRebalance(): void {
    if (this.rebalancing) {
      this.rebalanceAgain = true;
      return;
    }
    this.rebalancing = (async () => {
      do {
        this.rebalanceAgain = false;
        await this.rebalance();
      } while (this.rebalanceAgain);
    })().catch((e) => { log.err(`md: moving objects between disks stopped: ${(e as Error).message}`); }).finally(() => { this.rebalancing = undefined; });
  }

  /** Resolves when no files wait to be moved (tests, and unplug's caller). */
  async settled(): Promise<void> {
    while (this.rebalancing) await this.rebalancing;
  }

  private async rebalance(): Promise<void> {
    let moved = 0;
    for (const [oid, from] of [...this.misplaced]) {
      if (this.misplaced.get(oid) !== from) continue;
      const to = this.homeOf(oid);
      if (!to || to === from) {
        this.misplaced.delete(oid);
        continue;
      }
      try {
        await this.relocate!(oid, from, to);
        moved++;
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        // the source failing is that disk's failure; the target's is the target's
        const bad = err.path ? this.rootOfFile(err.path) : undefined;
        if (bad) this.fail(bad, `${err.path}: ${err.message}`);
        else log.warn(`md: cannot move ${oid.toString(16).padStart(16, '0')} from ${from} to ${to}: ${err.message}`);
        if (!bad) this.misplaced.delete(oid);
      }
    }
    // emptied unplugged disks are done with (their leftover files are not deleted, as upstream)
    const busy = new Set(this.misplaced.values());
    const done = this.draining.filter((d) => !busy.has(d.path));
    this.draining = this.draining.filter((d) => busy.has(d.path));
    for (const d of done) log.notice(`md: ${d.path} is empty of objects now`);
    if (moved) log.info(`md: moved ${moved} object(s) to their disks`);
  }

  /** Called by relocate once oid's files are in their new root. */
  movedHome(oid: bigint, from: string): void {
    if (this.misplaced.get(oid) === from) this.misplaced.delete(oid);
  }
}

async function exists(p: string): Promise<boolean> {
  return fsp.access(p).then(() => true, () => false);
}
