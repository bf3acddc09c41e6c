// The path router and the FUSE operations. Paths resolve (asynchronously)
// to one of three kinds of node: a directory, a text file (generated text,
// optionally a control file accepting lines), or a volume (VDI bytes).
//
// Every handler answers exactly once: a request the cluster does not answer
// within the timeout gets EIO, and a late answer is dropped without touching
// the kernel's buffer.
import Fuse from 'fuse-native';
import {
  VdiIO, ClientVdiBackend, openVdi, Op, Flag, Res, SheepdogError, ConnectionError, resultMessage, decodeInodeHeader,
  vidToVdiOid, SD_INODE_HEADER_SIZE,
} from '@sheepdog/common';
import type { Cluster } from './sheep.js';
import * as text from './text.js';
import * as log from './log.js';

export interface FsOptions {
  pageCache: boolean;
  objectCache: boolean;
  /** ms before an unanswered request fails with EIO */
  timeoutMs: number;
  /** where vdi/NAME/libvirt.xml points: an NBD listener, else the sheep itself (sheepdog protocol) */
  nbd?: { host: string; port: number };
}

/** An error that already knows its errno (negative, as FUSE wants it). */
export class FsError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

type Dir = { kind: 'dir'; list: () => Promise<string[]> };
type Text = {
  kind: 'text';
  /** absent: write-only control file */
  gen?: () => Promise<string>;
  /** one line written to the file */
  write?: (line: string) => Promise<void>;
};
type Vol = { kind: 'vol'; label: string; size: number; ro: boolean; open: () => Promise<VdiIO>; io?: VdiIO };
type Node = Dir | Text | Vol;

interface Handle {
  path: string;
  node: Node;
  text?: Buffer;
  io?: VdiIO;
  wbuf: string;
}

interface Volume {
  name: string;
  io: VdiIO;
  checked?: { at: number; p: Promise<VdiIO> };
}

/** getattr and the open right after it share one text (so st_size matches); any later open regenerates it */
const TEXT_TTL = 250;
const RESERVED_VDI = new Set(['list', 'mount', 'unmount']);
const validName = (n: string) => n.length > 0 && !n.includes('/') && n !== '.' && n !== '..';

const ERRNAME = new Map<number, string>();
for (const k of Object.keys(Fuse)) {
  const v = (Fuse as unknown as Record<string, unknown>)[k];
  if (/^E[A-Z0-9]+$/.test(k) && typeof v === 'number' && !ERRNAME.has(v)) ERRNAME.set(v, k);
}
export const errnoName = (n: number): string => ERRNAME.get(n) ?? String(n);
const E = (name: string): number => ((Fuse as unknown as Record<string, number>)[name] ?? Fuse.EIO);

/** Sheepdog result → errno. */
export function resultErrno(r: number): number {
  switch (r) {
    case Res.NO_VDI: case Res.NO_TAG: case Res.NO_BASE_VDI: case Res.NOT_FOUND: return Fuse.ENOENT;
    case Res.READONLY: return Fuse.EROFS;
    case Res.NO_SPACE: case Res.FULL_VDI: return Fuse.ENOSPC;
    case Res.INVALID_PARMS: return Fuse.EINVAL;
    case Res.VDI_LOCKED: return Fuse.EBUSY;
    case Res.NO_MEM: return E('ENOMEM');
    case Res.WAIT_FOR_FORMAT: case Res.WAIT_FOR_JOIN: case Res.SHUTDOWN: case Res.HALT: case Res.KILLED: return E('EAGAIN');
    default: return Fuse.EIO;
  }
}

function toErrno(e: unknown): number {
  if (e instanceof FsError) return e.errno;
  if (e instanceof SheepdogError) return resultErrno(e.result);
  return Fuse.EIO;
}

export class SheepFs {
  readonly volumes = new Map<string, Volume>();
  private snaps = new Map<number, Promise<VdiIO>>();
  private handles = new Map<number, Handle>();
  private nextFh = 1;
  private textCache = new Map<string, { at: number; p: Promise<Buffer> }>();
  private readonly mountTime = new Date();
  private readonly uid = process.getuid ? process.getuid() : 0;
  private readonly gid = process.getgid ? process.getgid() : 0;
  objectCache: boolean;
  readonly pageCache: boolean;
  private inflight = 0;

  constructor(readonly cluster: Cluster, readonly opts: FsOptions) {
    this.objectCache = opts.objectCache;
    this.pageCache = opts.pageCache;
  }

  private get cacheFlags(): number {
    return this.objectCache ? Flag.CMD_CACHE : 0;
  }

  // ---- volumes -------------------------------------------------------------

  /** vdi/mount: open the working VDI NAME as volume/NAME. */
  async mountVdi(name: string): Promise<void> {
    if (!validName(name)) throw new FsError(Fuse.EINVAL, `'${name}' cannot be a file name`);
    if (this.volumes.has(name)) {
      log.info(`vdi/mount: ${name} is already mounted`);
      return;
    }
    let io: VdiIO;
    try {
      io = await openVdi(this.cluster.client, name, { cacheFlags: this.cacheFlags });
    } catch (e) {
      if (e instanceof SheepdogError && (e.result === Res.NO_VDI || e.result === Res.NO_TAG)) {
        throw new FsError(Fuse.ENOENT, `no VDI named '${name}' (see vdi/list)`);
      }
      throw e;
    }
    if (this.volumes.has(name)) return;
    this.volumes.set(name, { name, io });
    log.info(`mounted VDI ${name} (id ${io.vid.toString(16)}, ${io.size} bytes) as volume/${name}`);
  }

  /** vdi/unmount: flush, then remove volume/NAME (open files keep working until closed). */
  async unmountVdi(name: string): Promise<void> {
    const v = this.volumes.get(name);
    if (!v) throw new FsError(Fuse.ENOENT, `'${name}' is not mounted (see ls volume/)`);
    await v.io.flush();
    this.volumes.delete(name);
    log.info(`unmounted volume/${name}`);
  }

  /** On stat and open: pick up a resize done by someone else (collie vdi resize); at most every 250 ms. */
  private refresh(v: Volume): Promise<VdiIO> {
    const now = Date.now();
    if (!v.checked || now - v.checked.at > TEXT_TTL) v.checked = { at: now, p: this.reread(v) };
    return v.checked.p;
  }

  /**
   * Close-to-open consistency, as NFS gives: each open re-reads the index, so
   * objects that writers through other gateways allocated since (a VM that
   * moved host, collie vdi write) are read from where they now live, not
   * from the parent or as zeros. Handles already open keep what they had.
   */
  private async openVolume(v: Volume): Promise<VdiIO> {
    const io = await this.refresh(v);
    try {
      await io.refreshIndex();
    } catch (e) {
      log.warn(`volume/${v.name}: cannot re-read the index on open, serving the one in memory: ${(e as Error).message}`);
    }
    return io;
  }

  private async reread(v: Volume): Promise<VdiIO> {
    const io = v.io;
    const vid = io.vid;
    try {
      const b = await this.cluster.req({ opcode: Op.READ_OBJ, flags: Flag.CMD_DIRECT, dataLength: SD_INODE_HEADER_SIZE, obj: { oid: vidToVdiOid(vid) } });
      const h = decodeInodeHeader(b);
      if (io.vid === vid && h.vdiId === vid && h.vdiSize !== io.header.vdiSize) {
        log.info(`volume/${v.name}: size changed from ${io.header.vdiSize} to ${h.vdiSize} bytes`);
        io.header = { ...io.header, vdiSize: h.vdiSize };
      }
    } catch (e) {
      log.debug(`volume/${v.name}: cannot re-read the inode header: ${(e as Error).message}`);
    }
    return io;
  }

  async flushAll(): Promise<void> {
    await Promise.all([...this.volumes.values()].map((v) => v.io.flush().catch((e) => log.warn(`flush of ${v.name} failed: ${(e as Error).message}`))));
  }

  private setObjectCache(on: boolean): void {
    this.objectCache = on;
    for (const v of this.volumes.values()) (v.io.backend as ClientVdiBackend).cacheFlags = this.cacheFlags;
  }

  private snapshot(vid: number, name: string, snapid: number): Promise<VdiIO> {
    let p = this.snaps.get(vid);
    if (!p) {
      p = openVdi(this.cluster.client, name, { snapid, cacheFlags: 0 });
      this.snaps.set(vid, p);
      p.catch(() => this.snaps.delete(vid));
      if (this.snaps.size > 64) this.snaps.delete(this.snaps.keys().next().value!);
    }
    return p;
  }

  // ---- the tree ------------------------------------------------------------

  private textFile(gen: () => Promise<string>, write?: (line: string) => Promise<void>): Text {
    return { kind: 'text', gen, write };
  }

  async resolve(path: string): Promise<Node | undefined> {
    const p = path.split('/').filter(Boolean);
    const c = this.cluster;
    const dir = (names: string[] | (() => Promise<string[]>)): Dir =>
      ({ kind: 'dir', list: typeof names === 'function' ? names : async () => names });
    switch (p[0]) {
      case undefined:
        return dir(['cluster', 'vdi', 'volume', 'node', 'config']);
      case 'cluster':
        if (p.length === 1) return dir(['info']);
        if (p.length === 2 && p[1] === 'info') return this.textFile(() => text.clusterInfo(c));
        return undefined;
      case 'vdi':
        return this.resolveVdi(p);
      case 'volume': {
        if (p.length === 1) return dir(async () => [...this.volumes.keys()]);
        const v = p.length === 2 ? this.volumes.get(p[1]) : undefined;
        if (!v) return undefined;
        await this.refresh(v);
        return { kind: 'vol', label: `volume/${v.name}`, size: v.io.size, ro: false, open: () => this.openVolume(v), io: v.io };
      }
      case 'node':
        return this.resolveNode(p);
      case 'config': {
        if (p.length === 1) return dir(['page_cache', 'object_cache', 'sheep_info']);
        if (p.length !== 2) return undefined;
        switch (p[1]) {
          case 'page_cache':
            return this.textFile(async () => (this.pageCache ? '1\n' : '0\n'), async (l) => {
              const on = parseBool(l);
              if (on !== this.pageCache) {
                throw new FsError(Fuse.EPERM, `the page cache mode is chosen at mount time (-k); unmount and mount ${on ? 'with' : 'without'} -k to change it`);
              }
            });
          case 'object_cache':
            return this.textFile(async () => (this.objectCache ? '1\n' : '0\n'), async (l) => {
              const on = parseBool(l);
              if (!on && this.objectCache) await this.flushAll();
              this.setObjectCache(on);
              log.info(`object cache ${on ? 'enabled' : 'disabled'}`);
            });
          case 'sheep_info':
            return this.textFile(async () => `${c.address}\n`, async (l) => {
              const t = parseHostPort(l);
              await this.flushAll();
              try {
                await c.switchTo(t.host, t.port);
              } catch (e) {
                throw new FsError(e instanceof SheepdogError ? resultErrno(e.result) : E('ECONNREFUSED'),
                  `cannot use ${t.host}:${t.port}: ${(e as Error).message}`);
              }
              this.textCache.clear();
              log.info(`now talking to sheep ${c.address}`);
            });
        }
        return undefined;
      }
    }
    return undefined;
  }

  private async resolveVdi(p: string[]): Promise<Node | undefined> {
    const c = this.cluster;
    if (p.length === 1) {
      return {
        kind: 'dir', list: async () => {
          const names = new Set<string>();
          for (const v of await c.vdis(false)) if (validName(v.header.name) && !RESERVED_VDI.has(v.header.name)) names.add(v.header.name);
          return ['list', 'mount', 'unmount', ...[...names].sort()];
        },
      };
    }
    if (p.length === 2) {
      if (p[1] === 'list') return this.textFile(() => text.vdiList(c));
      if (p[1] === 'mount') return { kind: 'text', write: (l) => this.mountVdi(l) };
      if (p[1] === 'unmount') return { kind: 'text', write: (l) => this.unmountVdi(l) };
    }
    const name = p[1];
    if (RESERVED_VDI.has(name)) return undefined;
    const all = await c.vdis(false);
    if (!all.some((v) => v.header.name === name)) return undefined;
    if (p.length === 2) return { kind: 'dir', list: async () => ['info', 'libvirt.xml', 'snapshots'] };
    if (p.length === 3 && p[2] === 'info') return this.textFile(async () => text.vdiInfo(name, await c.vdis(true)));
    if (p.length === 3 && p[2] === 'libvirt.xml') {
      return this.textFile(async () => text.libvirtXml(name, await c.vdis(false), this.opts.nbd ?? c.client.target, this.opts.nbd ? 'nbd' : 'sheepdog'));
    }
    if (p[2] !== 'snapshots') return undefined;
    const snaps = text.snapshotsOf(name, all);
    if (p.length === 3) return { kind: 'dir', list: async () => snapshotNames(text.snapshotsOf(name, await c.vdis(false))) };
    if (p.length !== 4) return undefined;
    const key = p[3];
    let sv = /^[0-9]+$/.test(key) ? snaps.find((s) => String(s.header.snapId) === key) : undefined;
    if (!sv) {
      const tagged = snaps.filter((s) => s.header.tag === key);
      if (tagged.length === 1) sv = tagged[0];
    }
    if (!sv) return undefined;
    const s = sv;
    return {
      kind: 'vol', label: `vdi/${name}/snapshots/${key}`, size: Number(s.header.vdiSize), ro: true,
      open: () => this.snapshot(s.vid, name, s.header.snapId),
    };
  }

  private async resolveNode(p: string[]): Promise<Node | undefined> {
    const c = this.cluster;
    if (p.length === 1) return { kind: 'dir', list: async () => ['list', 'info', ...(await c.nodes()).nodes.map((_, i) => String(i))] };
    if (p.length === 2 && p[1] === 'list') return this.textFile(() => text.nodeList(c));
    if (p.length === 2 && p[1] === 'info') return this.textFile(() => text.nodeInfo(c));
    if (!/^(0|[1-9][0-9]*)$/.test(p[1])) return undefined;
    const i = Number(p[1]);
    const { nodes } = await c.nodes();
    const n = nodes[i];
    if (!n) return undefined;
    if (p.length === 2) return { kind: 'dir', list: async () => ['info', 'stat', 'recovery'] };
    if (p.length !== 3) return undefined;
    switch (p[2]) {
      case 'info': return this.textFile(() => text.nodeDetail(c, i, n));
      case 'stat': return this.textFile(() => text.nodeStat(c, n));
      case 'recovery': return this.textFile(() => text.nodeRecovery(c, n));
    }
    return undefined;
  }

  /** Text of a file, shared by getattr and open for a second so sizes and contents agree. */
  private content(path: string, node: Text, fresh = false): Promise<Buffer> {
    const now = Date.now();
    const hit = this.textCache.get(path);
    if (hit && !fresh && now - hit.at < TEXT_TTL) return hit.p;
    const p = node.gen!().then((s) => Buffer.from(s));
    this.textCache.set(path, { at: now, p });
    p.catch(() => this.textCache.delete(path));
    if (this.textCache.size > 256) {
      for (const [k, v] of this.textCache) if (now - v.at >= TEXT_TTL) this.textCache.delete(k);
    }
    return p;
  }

  private async need(path: string): Promise<Node> {
    const n = await this.resolve(path);
    if (!n) throw new FsError(Fuse.ENOENT, 'no such file or directory');
    return n;
  }

  // ---- FUSE glue -----------------------------------------------------------

  /**
   * Run an async operation and answer FUSE exactly once. `done(v)` maps a
   * result to the callback's arguments; errors become -errno with a log line.
   */
  private run<T>(op: string, path: string, fn: () => Promise<T>, done: (v: T) => void, fail: (errno: number) => void, quietEnoent = true): void {
    let answered = false;
    if (log.isDebug()) log.debug(`${op} ${path}`);
    this.inflight++;
    const timer = setTimeout(() => {
      if (answered) return;
      answered = true;
      this.inflight--;
      log.error(`${op} ${path}: no answer from sheep ${this.cluster.address} within ${this.opts.timeoutMs / 1000}s -> EIO`);
      fail(Fuse.EIO);
    }, this.opts.timeoutMs);
    fn().then((v) => {
      if (answered) return;
      answered = true;
      this.inflight--;
      clearTimeout(timer);
      done(v);
    }, (e: unknown) => {
      if (answered) return;
      answered = true;
      this.inflight--;
      clearTimeout(timer);
      const errno = toErrno(e);
      const msg = e instanceof ConnectionError ? `sheep ${this.cluster.address} unreachable: ${e.message}` : (e as Error)?.message ?? String(e);
      if (errno === Fuse.ENOENT && quietEnoent) log.debug(`${op} ${path}: ${msg} -> ENOENT`);
      else log.warn(`${op} ${path}: ${msg} -> ${errnoName(errno)}`);
      fail(errno);
    });
  }

  private stat(node: Node, size: number) {
    const t = this.mountTime;
    const base = { mtime: t, atime: t, ctime: t, uid: this.uid, gid: this.gid, blksize: 4096 };
    if (node.kind === 'dir') return { ...base, mode: 0o40755, size: 4096, nlink: 2 };
    let mode: number;
    if (node.kind === 'vol') mode = node.ro ? 0o444 : 0o644;
    else mode = (node.gen ? 0o444 : 0) | (node.write ? 0o200 : 0);
    // a mounted volume reports what is allocated, as a sparse file would
    const used = node.kind === 'vol' && node.io ? allocatedBytes(node.io) : size;
    return { ...base, mode: 0o100000 | mode, size, nlink: 1, blocks: Math.ceil(used / 512) };
  }

  ops(): Fuse.Ops {
    return {
      getattr: (path, cb) => this.run('getattr', path, async () => {
        const n = await this.need(path);
        let size = 0;
        if (n.kind === 'vol') size = n.size;
        else if (n.kind === 'text' && n.gen) size = (await this.content(path, n)).length;
        return this.stat(n, size);
      }, (st) => cb(0, st), (e) => cb(e)),

      readdir: (path, cb) => this.run('readdir', path, async () => {
        const n = await this.need(path);
        if (n.kind !== 'dir') throw new FsError(Fuse.ENOTDIR, 'not a directory');
        return n.list();
      }, (names) => cb(0, names), (e) => cb(e)),

      open: (path, flags, cb) => this.run('open', path, async () => {
        const n = await this.need(path);
        const acc = flags & 3;
        const wr = acc !== 0;
        const rd = acc !== 1;
        const h: Handle = { path, node: n, wbuf: '' };
        if (n.kind === 'dir') throw new FsError(Fuse.EISDIR, 'is a directory');
        if (n.kind === 'vol') {
          if (wr && n.ro) throw new FsError(Fuse.EROFS, 'snapshots are read-only');
          h.io = await n.open();
        } else {
          if (wr && !n.write) throw new FsError(Fuse.EACCES, 'read-only file');
          if (rd && !n.gen) throw new FsError(Fuse.EACCES, 'write-only control file');
          if (rd) h.text = await this.content(path, n);
        }
        const fh = this.nextFh;
        this.nextFh = this.nextFh >= 0x7fffffff ? 1 : this.nextFh + 1;
        this.handles.set(fh, h);
        return fh;
      }, (fh) => cb(0, fh), (e) => cb(e)),

      create: (path, _mode, cb) => {
        const ro = /^\/vdi\/[^/]+\/snapshots\//.test(path);
        const errno = ro ? Fuse.EROFS : Fuse.EACCES;
        log.warn(`create ${path}: files cannot be created here${path.startsWith('/volume/') ? ' (write NAME to vdi/mount to attach a VDI)' : ''} -> ${errnoName(errno)}`);
        cb(errno);
      },

      release: (path, fd, cb) => {
        const h = this.handles.get(fd);
        this.handles.delete(fd);
        if (!h || !h.wbuf.trim()) return cb(0);
        // an unterminated last line: apply it (its error was already reported by flush)
        const line = h.wbuf;
        h.wbuf = '';
        this.run('release', path, () => this.applyLines(h, line, true), () => cb(0), () => cb(0), false);
      },

      flush: (path, fd, cb) => {
        const h = this.handles.get(fd);
        if (!h || !h.wbuf.trim()) return cb(0);
        const line = h.wbuf;
        h.wbuf = '';
        this.run('flush', path, () => this.applyLines(h, line, true), () => cb(0), (e) => cb(e), false);
      },

      read: (path, fd, buf, len, pos, cb) => {
        const h = this.handles.get(fd);
        if (!h) return cb(E('EBADF'));
        if (h.text) {
          const n = Math.max(0, Math.min(len, h.text.length - pos));
          if (n > 0) h.text.copy(buf, 0, pos, pos + n);
          return cb(n);
        }
        const io = h.io;
        if (!io) return cb(Fuse.EACCES);
        const n = Math.max(0, Math.min(len, io.size - pos));
        if (n === 0) return cb(0);
        this.run(`read [${pos}, +${n})`, path, () => io.read(pos, n), (data) => {
          data.copy(buf, 0, 0, n);
          cb(n);
        }, (e) => cb(e));
      },

      write: (path, fd, buf, len, pos, cb) => {
        const h = this.handles.get(fd);
        if (!h) return cb(E('EBADF'));
        if (h.node.kind === 'text') {
          const s = buf.toString('utf8', 0, len);
          this.run('write', path, () => this.applyLines(h, s, false), () => cb(len), (e) => cb(e), false);
          return;
        }
        const io = h.io;
        if (!io) return cb(Fuse.EACCES);
        if (h.node.kind === 'vol' && h.node.ro) return cb(Fuse.EROFS);
        const n = Math.max(0, Math.min(len, io.size - pos));
        if (n === 0) {
          log.warn(`write ${path}: offset ${pos} is past the end of the volume (${io.size} bytes) -> ENOSPC`);
          return cb(Fuse.ENOSPC);
        }
        // copy: the kernel's buffer is only ours until we answer
        const data = Buffer.from(buf.subarray(0, n));
        this.run(`write [${pos}, +${n})`, path, () => io.write(pos, data), () => cb(n), (e) => cb(e));
      },

      fsync: (path, _datasync, fd, cb) => {
        const h = this.handles.get(fd);
        const io = h?.io ?? this.volumes.get(path.replace(/^\/volume\//, ''))?.io;
        if (!io) return cb(0);
        this.run('fsync', path, () => io.flush(), () => cb(0), (e) => cb(e));
      },

      truncate: (path, size, cb) => this.run('truncate', path, () => this.truncate(path, size), () => cb(0), (e) => cb(e)),
      ftruncate: (path, _fd, size, cb) => this.run('ftruncate', path, () => this.truncate(path, size), () => cb(0), (e) => cb(e)),

      utimens: (path, _a, _m, cb) => this.run('utimens', path, () => this.need(path), () => cb(0), (e) => cb(e)),
      chmod: (path, _m, cb) => this.deny('chmod', path, cb),
      chown: (path, _u, _g, cb) => this.deny('chown', path, cb),
      unlink: (path, cb) => this.deny('unlink', path, cb, path.startsWith('/volume/') ? ' (write NAME to vdi/unmount to detach a VDI)' : ''),
      mkdir: (path, _m, cb) => {
        log.warn(`mkdir ${path}: directories cannot be created here -> EPERM`);
        cb(Fuse.EPERM);
      },
      rmdir: (path, cb) => this.deny('rmdir', path, cb),
      rename: (src, _d, cb) => this.deny('rename', src, cb),

      statfs: (path, cb) => this.run('statfs', path, async () => {
        const { nodes } = await this.cluster.nodes();
        let size = 0n, free = 0n;
        for (const sp of await Promise.all(nodes.map((n) => this.cluster.statSheep(n).catch(() => undefined)))) {
          if (!sp) continue;
          size += sp.size;
          free += sp.free;
        }
        const bs = 4096n;
        return {
          bsize: 4096, frsize: 4096, blocks: Number(size / bs), bfree: Number(free / bs), bavail: Number(free / bs),
          files: 1 << 24, ffree: 1 << 24, favail: 1 << 24, fsid: 0x5368, flag: 0, namemax: 255,
        };
      }, (st) => cb(0, st), (e) => cb(e)),
    };
  }

  private deny(op: string, path: string, cb: (e: number) => void, hint = ''): void {
    this.run(op, path, async () => {
      const n = await this.need(path);
      const ro = n.kind === 'vol' && n.ro;
      throw new FsError(ro ? Fuse.EROFS : Fuse.EPERM, `${op} is not supported here${hint}`);
    }, () => cb(0), (e) => cb(e));
  }

  private async truncate(path: string, size: number): Promise<void> {
    const n = await this.need(path);
    if (n.kind === 'dir') throw new FsError(Fuse.EISDIR, 'is a directory');
    if (n.kind === 'vol') {
      if (n.ro) throw new FsError(Fuse.EROFS, 'snapshots are read-only');
      // like a block device: the size is the VDI's; O_TRUNC and ftruncate change nothing
      if (size !== n.size) log.debug(`truncate ${path} to ${size}: ignored, a volume keeps the VDI size (${n.size})`);
      return;
    }
    if (!n.write) throw new FsError(Fuse.EACCES, 'read-only file');
  }

  /** Lines written to a control file: each complete line is applied in order. */
  private async applyLines(h: Handle, s: string, final: boolean): Promise<void> {
    const node = h.node as Text;
    if (!node.write) throw new FsError(Fuse.EACCES, 'read-only file');
    let buf = h.wbuf + s;
    h.wbuf = '';
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    if (final && buf.trim()) lines.push(buf);
    else h.wbuf = buf;
    for (const raw of lines) {
      const line = raw.trim();
      if (!line) continue;
      await node.write(line);
    }
    this.textCache.clear();
  }

  get busy(): number {
    return this.inflight;
  }
}

function allocatedBytes(io: VdiIO): number {
  const n = Math.ceil(io.size / io.objectSize);
  return Math.min(io.size, io.objects.countAllocated(n) * io.objectSize);
}

function parseBool(l: string): boolean {
  if (l === '1' || l === 'true' || l === 'on') return true;
  if (l === '0' || l === 'false' || l === 'off') return false;
  throw new FsError(Fuse.EINVAL, `expected 0 or 1, got '${l}'`);
}

export function parseHostPort(l: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+))(?::(\d+))?$/.exec(l);
  const port = m?.[3] ? Number(m[3]) : 7000;
  if (!m || port < 1 || port > 65535) throw new FsError(Fuse.EINVAL, `expected HOST:PORT, got '${l}'`);
  return { host: m[1] ?? m[2], port };
}

/** snapshots/ entries: every id, plus each tag that names exactly one snapshot and is not a number. */
function snapshotNames(snaps: { header: { snapId: number; tag: string } }[]): string[] {
  const out = snaps.map((s) => String(s.header.snapId));
  const count = new Map<string, number>();
  for (const s of snaps) if (s.header.tag) count.set(s.header.tag, (count.get(s.header.tag) ?? 0) + 1);
  for (const [tag, n] of count) if (n === 1 && validName(tag) && !/^[0-9]+$/.test(tag)) out.push(tag);
  return out;
}

export { resultMessage };
