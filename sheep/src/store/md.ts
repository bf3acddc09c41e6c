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
import { SheepdogError, Res } from '@sheepdog/common';
import { versionIO } from './fileio.js';
import { DiskRing, vdiskCount, type Disk } from './md-ring.js';
import { log } from '../log.js';

export const MD_SIZE_XATTR = 'user.md.size';
/** sd_md_info holds at most this many disks (the wire format's array). */
export const MD_MAX_DISK = 64;

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
