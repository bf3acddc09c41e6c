// A test client that behaves like QEMU's sheepdog block driver (spec §13):
// the same requests, in the same order, with the same header fields.
// Metadata operations each use a fresh connection (id 0, one request);
// guest I/O uses one long-lived pipelined "I/O socket" with ids counting
// from 0. Guest I/O itself is common's VdiIO (the §13.2 logic) over a
// backend that speaks on the I/O socket exactly as QEMU does.
import {
  SheepClient, Op, Flag, Res, SheepdogError, VdiIO, VdiBackend, InodeHeader, encodeFixedString, decodeInodeHeader,
  encodeInodeHeader, decodeIndex, vidToVdiOid, vidToVmstateOid, hash24, Response, RequestFields,
  SD_INODE_HEADER_SIZE, SD_INODE_QEMU_SIZE, SD_VDI_BITMAP_SIZE, MAX_DATA_OBJS,
} from '@sheepdog/common';

export interface Target {
  host?: string;
  port: number;
}

/** One request on a new connection, then close (QEMU's metadata path). */
export async function oneShot(t: Target, f: RequestFields, payload?: Buffer): Promise<Response> {
  const c = new SheepClient({ host: t.host ?? '127.0.0.1', port: t.port, timeout: 30_000 });
  try {
    return await c.send({ id: 0, protoVer: 0, ...f }, payload);
  } finally {
    c.close();
  }
}

const nameTag = (name: string, tag = '') => Buffer.concat([encodeFixedString(name, 256), encodeFixedString(tag, 256)]);
const must = (r: Response): Response => {
  if (r.rsp.result !== Res.SUCCESS) throw new SheepdogError(r.rsp.result);
  return r;
};

/** Every request the driver sent, for assertions about the wire shape. */
export interface SentRecord {
  conn: 'io' | 'new';
  opcode: number;
  id: number;
  protoVer: number;
  flags: number;
  dataLength: number;
  oid?: bigint;
  offset?: number;
  result: number;
}

/** The I/O socket: pipelined, ids = a per-image u32 counter from 0. */
class IoSocket implements VdiBackend {
  private next = 0;
  constructor(readonly c: SheepClient, readonly drv: QemuDriver) {}
  private async send(f: RequestFields, payload?: Buffer): Promise<Buffer> {
    const id = this.next;
    this.next = (this.next + 1) >>> 0;
    const r = await this.c.send({ ...f, id, protoVer: 0 }, payload);
    this.drv.sent.push({ conn: 'io', opcode: f.opcode, id: r.rsp.id, protoVer: 0, flags: f.flags ?? 0, dataLength: f.dataLength ?? payload?.length ?? 0, oid: f.obj?.oid, offset: f.obj?.offset, result: r.rsp.result });
    if (r.rsp.id !== id) throw new Error(`response id ${r.rsp.id} for request ${id}`);
    if (r.rsp.result !== Res.SUCCESS) throw new SheepdogError(r.rsp.result);
    return r.data;
  }
  readObj(oid: bigint, off: number, len: number, copies: number) {
    return this.send({ opcode: Op.READ_OBJ, flags: this.drv.cacheFlags, dataLength: len, obj: { oid, offset: off, copies } });
  }
  async writeObj(oid: bigint, off: number, data: Buffer, copies: number) {
    await this.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE | this.drv.cacheFlags, obj: { oid, offset: off, copies } }, data);
  }
  async createObj(oid: bigint, cow: bigint, off: number, data: Buffer, copies: number) {
    await this.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE | (cow ? Flag.CMD_COW : 0) | this.drv.cacheFlags, obj: { oid, cowOid: cow, offset: off, copies } }, data);
  }
  writeIndex(vid: number, first: number, entries: Buffer, copies: number) {
    return this.writeObj(vidToVdiOid(vid), SD_INODE_HEADER_SIZE + 4 * first, entries, copies);
  }
  /** §13.3 */
  async flush(vid: number) {
    if (this.drv.cacheFlags !== Flag.CMD_CACHE) return;
    try {
      await this.send({ opcode: Op.FLUSH_VDI, flags: Flag.CMD_CACHE, obj: { oid: vidToVdiOid(vid), copies: this.drv.io.copies } });
    } catch (e) {
      if (e instanceof SheepdogError && e.result === Res.INVALID_PARMS) { this.drv.cacheFlags = Flag.CMD_DIRECT; return; }
      throw e;
    }
  }
}

export interface SnapshotInfo {
  id: number; // snap_id
  name: string; // tag
  vid: number;
  vmStateSize: bigint;
  vmClockNsec: bigint;
  dateSec: number;
}

export interface CreateOptions {
  redundancy?: number;
  objectSize?: number;
  preallocation?: 'off' | 'full';
  backingFile?: { name: string; snapid?: number; tag?: string };
}

export class QemuDriver {
  cacheFlags: number;
  io!: VdiIO;
  isSnapshot = false;
  readonly sent: SentRecord[] = [];
  private ioc: SheepClient;
  private sock: IoSocket;

  private constructor(readonly t: Target, readonly name: string, cache: 'writeback' | 'none') {
    this.cacheFlags = cache === 'none' ? Flag.CMD_DIRECT : Flag.CMD_CACHE;
    this.ioc = new SheepClient({ host: t.host ?? '127.0.0.1', port: t.port, timeout: 30_000 });
    this.sock = new IoSocket(this.ioc, this);
  }

  private async meta(f: RequestFields, payload?: Buffer): Promise<Response> {
    const r = await oneShot(this.t, f, payload);
    this.sent.push({ conn: 'new', opcode: f.opcode, id: 0, protoVer: f.protoVer ?? 0, flags: f.flags ?? 0, dataLength: f.dataLength ?? payload?.length ?? 0, oid: f.obj?.oid, offset: f.obj?.offset, result: r.rsp.result });
    return r;
  }

  get header(): InodeHeader {
    return this.io.header;
  }

  /** §13.1 */
  static async open(t: Target, name: string, o: { snapid?: number; tag?: string; cache?: 'writeback' | 'none' } = {}): Promise<QemuDriver> {
    const d = new QemuDriver(t, name, o.cache ?? 'writeback');
    await d.ioc.connect(); // 1. the I/O socket
    const lk = await d.meta({ opcode: Op.LOCK_VDI, protoVer: 1, flags: Flag.CMD_WRITE, dataLength: 512, vdi: { snapid: o.snapid ?? 0, type: 0 } }, nameTag(name, o.tag ?? ''));
    if (lk.rsp.result !== Res.SUCCESS) { d.ioc.close(); throw new SheepdogError(lk.rsp.result); }
    const vid = lk.rsp.vdi.vdiId;
    const ino = await d.meta({ opcode: Op.READ_OBJ, flags: d.cacheFlags, dataLength: SD_INODE_QEMU_SIZE, obj: { oid: vidToVdiOid(vid), offset: 0, copies: 0 } });
    if (ino.rsp.result !== Res.SUCCESS) { d.ioc.close(); throw new SheepdogError(ino.rsp.result); }
    d.io = new VdiIO(d.sock, decodeInodeHeader(ino.data), decodeIndex(ino.data), { reload: () => d.reloadHeader(0, ''), trustIndex: true });
    d.isSnapshot = !!(o.snapid || o.tag);
    return d;
  }

  /** §13.2 READONLY handling / §13.9 step 1: GET_VDI_INFO (proto 1) + 4664-byte header read. */
  private async reloadHeader(snapid: number, tag: string): Promise<InodeHeader> {
    const r = must(await this.meta({ opcode: Op.GET_VDI_INFO, protoVer: 1, flags: Flag.CMD_WRITE, dataLength: 512, vdi: { snapid } }, nameTag(this.name, tag)));
    const vid = r.rsp.vdi.vdiId;
    const h = must(await this.meta({ opcode: Op.READ_OBJ, flags: this.cacheFlags, dataLength: SD_INODE_HEADER_SIZE, obj: { oid: vidToVdiOid(vid), copies: this.io.copies } }));
    return decodeInodeHeader(h.data);
  }

  // ---- guest I/O (§13.2–13.4) ---------------------------------------

  read(offset: number, len: number): Promise<Buffer> {
    return this.io.read(offset, len);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    if (offset + data.length > this.io.size) await this.resize(offset + data.length);
    if (this.isSnapshot) await this.branch();
    return this.io.write(offset, data);
  }

  flush(): Promise<void> {
    return this.io.flush();
  }

  /** §13.4: one 4-byte zero entry per whole, allocated object, on the I/O socket. */
  async discard(offset: number, len: number): Promise<void> {
    const os = this.io.objectSize;
    const first = Math.ceil(offset / os);
    const end = Math.floor((offset + len) / os);
    await Promise.all(Array.from({ length: Math.max(0, end - first) }, async (_, k) => {
      const i = first + k;
      if (!this.io.index[i]) return;
      this.io.index[i] = 0;
      try {
        await this.sock.writeIndex(this.io.vid, i, Buffer.alloc(4), this.io.copies);
      } catch (e) {
        if (!(e instanceof SheepdogError && e.result === Res.INVALID_PARMS)) throw e;
      }
    }));
  }

  // ---- resize (§13.7) ------------------------------------------------

  async resize(newSize: number): Promise<void> {
    if (newSize < this.io.size) throw new Error('shrinking is not supported');
    if (newSize > this.io.objectSize * MAX_DATA_OBJS) throw new Error('too big');
    this.io.header = { ...this.io.header, vdiSize: BigInt(newSize) };
    must(await this.meta({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE | this.cacheFlags, obj: { oid: vidToVdiOid(this.io.vid), offset: 0, copies: this.io.copies } }, encodeInodeHeader(this.io.header)));
  }

  // ---- snapshots (§13.8–13.11) ---------------------------------------

  /** §13.8 savevm / qemu-img snapshot -c */
  async snapshotCreate(tag: string, vm: { stateSize?: bigint; clockNsec?: bigint } = {}): Promise<number> {
    if (this.isSnapshot) throw new Error('cannot snapshot an opened snapshot');
    const v = this.io.vid;
    this.io.header = { ...this.io.header, vmStateSize: vm.stateSize ?? 0n, vmClockNsec: vm.clockNsec ?? 0n, tag };
    const c = new SheepClient({ host: this.t.host ?? '127.0.0.1', port: this.t.port, timeout: 30_000 });
    try {
      // step 2 on its own connection, step 4 reuses it
      const wr = await c.send({ id: 0, protoVer: 0, opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE | this.cacheFlags, obj: { oid: vidToVdiOid(v), offset: 0, copies: this.io.copies } }, encodeInodeHeader(this.io.header));
      this.sent.push({ conn: 'new', opcode: Op.WRITE_OBJ, id: 0, protoVer: 0, flags: Flag.CMD_WRITE | this.cacheFlags, dataLength: SD_INODE_HEADER_SIZE, oid: vidToVdiOid(v), offset: 0, result: wr.rsp.result });
      must(wr);
      const h = this.io.header;
      const nv = must(await this.meta({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, dataLength: 256, vdi: { vdiSize: h.vdiSize, baseVdiId: v, copies: h.nrCopies, copyPolicy: h.copyPolicy, storePolicy: 0, blockSizeShift: h.blockSizeShift, snapid: 1 } }, encodeFixedString(this.name, 256)));
      const w = nv.rsp.vdi.vdiId;
      const rd = must(await c.send({ id: 0, protoVer: 0, opcode: Op.READ_OBJ, flags: this.cacheFlags, dataLength: SD_INODE_HEADER_SIZE, obj: { oid: vidToVdiOid(w), copies: this.io.copies } }));
      this.io.header = decodeInodeHeader(rd.data);
      return h.snapId; // QEMU's id for the new snapshot
    } finally {
      c.close();
    }
  }

  /** §13.9 loadvm / qemu-img snapshot -a */
  async snapshotGoto(id: number | string): Promise<void> {
    const snapid = typeof id === 'number' ? id : 0;
    const tag = typeof id === 'string' ? id : '';
    const h = await this.reloadHeader(snapid, tag);
    if (h.vdiId !== this.io.vid) this.io.header = h;
    await this.branch();
  }

  /** §13.9 step 2: delete the working VDI and clone (or rebase onto) the snapshot. */
  private async branch(): Promise<void> {
    const s = this.io.header;
    const del = await this.meta({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE, dataLength: 256, vdi: { baseVdiId: s.vdiId } }, encodeFixedString(this.name, 256));
    const deleted = del.rsp.result === Res.SUCCESS || del.rsp.result === Res.NO_VDI;
    const nv = must(await this.meta({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, dataLength: 256, vdi: { vdiSize: s.vdiSize, baseVdiId: s.vdiId, copies: s.nrCopies, copyPolicy: s.copyPolicy, storePolicy: 0, blockSizeShift: s.blockSizeShift, snapid: deleted ? 0 : 1 } }, encodeFixedString(this.name, 256)));
    const ino = must(await this.meta({ opcode: Op.READ_OBJ, flags: this.cacheFlags, dataLength: SD_INODE_QEMU_SIZE, obj: { oid: vidToVdiOid(nv.rsp.vdi.vdiId), copies: s.nrCopies } }));
    this.io = new VdiIO(this.sock, decodeInodeHeader(ino.data), decodeIndex(ino.data), { reload: () => this.reloadHeader(0, ''), trustIndex: true });
    this.isSnapshot = false;
    this.lastBranchDeleted = deleted;
  }
  lastBranchDeleted?: boolean;

  /** §13.10 qemu-img snapshot -d (including the index wipe of the opened VDI). */
  async snapshotDelete(arg: string): Promise<void> {
    const v = this.io.vid;
    const n = Math.ceil(this.io.size / this.io.objectSize);
    let i = 0;
    for (;;) {
      while (i < n && !this.io.index[i]) i++;
      if (i >= n) break;
      const start = i;
      let count = 0;
      let end = i;
      while (end < n && count < 128) {
        if (this.io.index[end]) { count++; this.io.index[end] = 0; }
        end++;
      }
      const buf = Buffer.alloc(4 * (end - start));
      must(await this.meta({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE | this.cacheFlags, obj: { oid: vidToVdiOid(v), offset: SD_INODE_HEADER_SIZE + 4 * start, copies: this.io.copies } }, buf));
      i = end;
    }
    if (!/^\d+$/.test(arg)) throw new Error(`invalid snapshot id '${arg}'`);
    const num = Number(arg);
    const snapid = num;
    const tag = num === 0 ? arg : '';
    must(await this.meta({ opcode: Op.LOCK_VDI, protoVer: 1, flags: Flag.CMD_WRITE, dataLength: 512, vdi: { snapid } }, nameTag(this.name, tag)));
    const r = await this.meta({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE, dataLength: 512, vdi: { snapid } }, nameTag(this.name, tag));
    if (r.rsp.result === Res.NO_VDI) throw new Error('ENOENT');
    must(r);
  }

  /** §13.11 */
  async snapshotList(): Promise<SnapshotInfo[]> {
    const bm = must(await this.meta({ opcode: Op.READ_VDIS, flags: 0, dataLength: SD_VDI_BITMAP_SIZE })).data;
    const out: SnapshotInfo[] = [];
    const c = new SheepClient({ host: this.t.host ?? '127.0.0.1', port: this.t.port, timeout: 30_000 });
    try {
      const start = hash24(this.name);
      for (let k = 0, vid = start; k < 1024; k++, vid = (vid + 1) & 0xffffff) {
        if (!(bm[vid >> 3] & (1 << (vid & 7)))) break;
        const r = await c.send({ id: 0, protoVer: 0, opcode: Op.READ_OBJ, flags: this.cacheFlags, dataLength: SD_INODE_HEADER_SIZE, obj: { oid: vidToVdiOid(vid), copies: 0 } });
        if (r.rsp.result !== Res.SUCCESS) continue;
        const h = decodeInodeHeader(r.data);
        if (h.name === this.name && h.snapCtime !== 0n) {
          out.push({ id: h.snapId, name: h.tag, vid, vmStateSize: h.vmStateSize, vmClockNsec: h.vmClockNsec, dateSec: Number(h.snapCtime >> 32n) });
        }
      }
    } finally {
      c.close();
    }
    return out;
  }

  // ---- VM state (§13.12) ----------------------------------------------

  private async vmstate(load: boolean, data: Buffer, pos: number): Promise<void> {
    const os = this.io.objectSize;
    const x = load ? this.io.header.parentVdiId : this.io.vid;
    const c = new SheepClient({ host: this.t.host ?? '127.0.0.1', port: this.t.port, timeout: 30_000 });
    try {
      let done = 0;
      while (done < data.length) {
        const p = pos + done;
        const idx = Math.floor(p / os);
        const off = p % os;
        const len = Math.min(os - off, data.length - done);
        const oid = vidToVmstateOid(x, idx);
        if (load) {
          const r = must(await c.send({ id: 0, protoVer: 0, opcode: Op.READ_OBJ, flags: this.cacheFlags, dataLength: len, obj: { oid, offset: off, copies: this.io.copies } }));
          r.data.copy(data, done);
        } else {
          const opcode = off === 0 ? Op.CREATE_AND_WRITE_OBJ : Op.WRITE_OBJ;
          must(await c.send({ id: 0, protoVer: 0, opcode, flags: Flag.CMD_WRITE | this.cacheFlags, obj: { oid, offset: off, copies: this.io.copies } }, data.subarray(done, done + len)));
        }
        done += len;
      }
    } finally {
      c.close();
    }
  }
  saveVmstate(data: Buffer, pos: number): Promise<void> {
    return this.vmstate(false, data, pos);
  }
  async loadVmstate(len: number, pos: number): Promise<Buffer> {
    const b = Buffer.alloc(len);
    await this.vmstate(true, b, pos);
    return b;
  }

  /** §13.13 */
  async close(): Promise<void> {
    const nb = Buffer.from(this.name + '\0');
    await this.meta({ opcode: Op.RELEASE_VDI, flags: Flag.CMD_WRITE, dataLength: nb.length, vdi: { baseVdiId: this.io.vid, type: 0 } }, nb);
    this.ioc.close();
  }

  // ---- create (§13.5, §13.6) ------------------------------------------

  static async create(t: Target, name: string, size: number, o: CreateOptions = {}): Promise<number> {
    size = Math.ceil(size / 512) * 512;
    let base = 0;
    if (o.backingFile) {
      const b = await QemuDriver.open(t, o.backingFile.name, { snapid: o.backingFile.snapid, tag: o.backingFile.tag });
      const isSnap = b.header.snapCtime !== 0n;
      base = b.header.vdiId;
      await b.close();
      if (!isSnap) throw new Error('cannot clone from a non snapshot vdi');
    }
    let shift: number;
    if (o.objectSize) {
      shift = Math.log2(o.objectSize);
      if (!Number.isInteger(shift) || shift < 20 || shift > 31) throw new Error('invalid object_size');
    } else {
      const cd = await oneShot(t, { opcode: Op.GET_CLUSTER_DEFAULT, protoVer: 1, dataLength: 0 });
      shift = cd.rsp.result === Res.SUCCESS ? cd.rsp.clusterDefault.blockSizeShift : 22;
    }
    if (size > 2 ** shift * MAX_DATA_OBJS) throw new Error('too big');
    const nv = await oneShot(t, { opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, dataLength: 256, vdi: { vdiSize: BigInt(size), baseVdiId: base, copies: o.redundancy ?? 0, copyPolicy: 0, storePolicy: 0, blockSizeShift: shift, snapid: 0 } }, encodeFixedString(name, 256));
    must(nv);
    if (o.preallocation === 'full') {
      const d = await QemuDriver.open(t, name);
      const chunk = Math.min(d.io.objectSize, 4 << 20);
      for (let p = 0; p < d.io.size; p += chunk) {
        const l = Math.min(chunk, d.io.size - p);
        await d.write(p, await d.read(p, l));
      }
      await d.close();
    }
    return nv.rsp.vdi.vdiId;
  }
}
