// Thin request helpers over the real wire for integration tests.
import {
  SheepClient, Op, Flag, encodeFixedString, vidToVdiOid, vidToDataOid, Inode, SD_INODE_SIZE, Response,
} from '@sheepdog/common';

export const nameTag = (name: string, tag = '') => Buffer.concat([encodeFixedString(name, 256), encodeFixedString(tag, 256)]);

export class Wire {
  readonly c: SheepClient;
  constructor(port: number, timeoutMs = 30_000) {
    this.c = new SheepClient({ port, timeout: timeoutMs });
  }
  send(...a: Parameters<SheepClient['send']>): Promise<Response> {
    return this.c.send(...a);
  }
  async newVdi(name: string, size: bigint, o: { base?: number; snapshot?: boolean; copies?: number; shift?: number } = {}): Promise<Response> {
    return this.c.send({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: size, baseVdiId: o.base ?? 0, snapid: o.snapshot ? 1 : 0, copies: o.copies ?? 0, blockSizeShift: o.shift ?? 0 } }, encodeFixedString(name, 256));
  }
  async info(name: string, snapid = 0, tag = ''): Promise<Response> {
    return this.c.send({ opcode: Op.GET_VDI_INFO, flags: Flag.CMD_WRITE, vdi: { snapid } }, nameTag(name, tag));
  }
  async vid(name: string, snapid = 0, tag = ''): Promise<number> {
    const r = await this.info(name, snapid, tag);
    if (r.rsp.result !== 0) throw new Error(`lookup ${name}: result ${r.rsp.result}`);
    return r.rsp.vdi.vdiId;
  }
  async inode(vid: number): Promise<Inode> {
    const r = await this.c.request({ opcode: Op.READ_OBJ, dataLength: SD_INODE_SIZE, obj: { oid: vidToVdiOid(vid) } });
    return Inode.decode(r.data);
  }
  /** Write like dog vdi write: COW / create / write, then set the index entry. */
  async writeVdi(vid: number, offset: number, data: Buffer): Promise<void> {
    const ino = await this.inode(vid);
    const os = ino.objectSize;
    let pos = 0;
    while (pos < data.length) {
      const off = offset + pos;
      const idx = Math.floor(off / os);
      const inOff = off % os;
      const len = Math.min(os - inOff, data.length - pos);
      const piece = data.subarray(pos, pos + len);
      const owner = ino.dataVdiId[idx];
      const oid = vidToDataOid(vid, idx);
      if (owner === vid) {
        await this.c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid, offset: inOff } }, piece);
      } else {
        const cow = owner ? vidToDataOid(owner, idx) : 0n;
        await this.c.request({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE | (cow ? Flag.CMD_COW : 0), obj: { oid, cowOid: cow, offset: inOff } }, piece);
        const e = Buffer.alloc(4);
        e.writeUInt32LE(vid);
        await this.c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: 4664 + 4 * idx } }, e);
        ino.dataVdiId[idx] = vid;
      }
      pos += len;
    }
  }
  async readVdi(vid: number, offset: number, len: number): Promise<Buffer> {
    const ino = await this.inode(vid);
    const os = ino.objectSize;
    const out = Buffer.alloc(len);
    let pos = 0;
    while (pos < len) {
      const off = offset + pos;
      const idx = Math.floor(off / os);
      const inOff = off % os;
      const l = Math.min(os - inOff, len - pos);
      const owner = ino.dataVdiId[idx];
      if (owner) {
        const r = await this.c.request({ opcode: Op.READ_OBJ, dataLength: l, obj: { oid: vidToDataOid(owner, idx), offset: inOff } });
        r.data.copy(out, pos);
      }
      pos += l;
    }
    return out;
  }
  close(): void {
    this.c.close();
  }
}
