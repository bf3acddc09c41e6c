// What the NBD server exports: VDIs of this sheep's cluster, resolved by
// name ("NAME" = working VDI, read-write; "NAME:SNAPID" / "NAME:TAG" = a
// snapshot, read-only). Data goes through the daemon's in-process gateway
// (copy-on-write, index updates, replication) via a VdiBackend.
import {
  Op, Flag, Res, SheepdogError, RequestHeader, encodeRequest, encodeFixedString, VdiIO, VdiBackend,
  vidToVdiOid, decodeInodeHeader, SD_INODE_HEADER_SIZE,
} from '@sheepdog/common';
import type { Sheep } from '../sheep.js';
import { execute } from '../ops.js';

export { GatewayBackend, GatewayIO } from './backend.js';
import { GatewayBackend } from './backend.js';

export interface ExportRef {
  /** Connections to the same key share one VdiIO (index, allocation locks, cache). */
  key: string;
  name: string;
  readonly: boolean;
  open(): Promise<VdiIO>;
}

export interface ExportSource {
  resolve(name: string): Promise<ExportRef>;
  list(): Promise<string[]>;
}

/** The export side of a Sheep: lookups go through the op table like a client's. */
export class SheepExports implements ExportSource {
  constructor(private readonly sheep: Sheep, private readonly backendFor: () => VdiBackend = () => new GatewayBackend(sheep.gw)) {}

  private async lookup(name: string, snapid: number, tag: string): Promise<number> {
    const payload = Buffer.concat([encodeFixedString(name, 256), encodeFixedString(tag, 256)]);
    const h = new RequestHeader(encodeRequest({ opcode: Op.GET_VDI_INFO, protoVer: 1, flags: Flag.CMD_WRITE, dataLength: 512, vdi: { snapid } }));
    const r = await execute(this.sheep, h, payload);
    if ((r.result ?? Res.SUCCESS) !== Res.SUCCESS) throw new SheepdogError(r.result!);
    return r.vdi!.vdiId!;
  }

  async resolve(exportName: string): Promise<ExportRef> {
    let name = exportName;
    let snapid = 0;
    let tag = '';
    let vid: number;
    try {
      vid = await this.lookup(name, 0, '');
    } catch (e) {
      const c = exportName.lastIndexOf(':');
      if (c <= 0 || c === exportName.length - 1) throw e;
      name = exportName.slice(0, c);
      const suffix = exportName.slice(c + 1);
      if (/^\d+$/.test(suffix)) snapid = Number(suffix);
      else tag = suffix;
      if (snapid === 0 && !tag) throw e;
      vid = await this.lookup(name, snapid, tag);
    }
    const snap = snapid !== 0 || tag !== '';
    const backend = this.backendFor();
    return {
      key: snap ? `snap:${vid}` : `vdi:${name}`,
      name: exportName,
      readonly: snap,
      open: async () => {
        const io = await VdiIO.open(backend, vid, {
          readonly: snap,
          reload: snap ? undefined : async () => {
            const v = await this.lookup(name, 0, '');
            return decodeInodeHeader(await backend.readObj(vidToVdiOid(v), 0, SD_INODE_HEADER_SIZE, 0));
          },
        });
        if (io.header.snapCtime !== 0n && !snap) throw new SheepdogError(Res.NO_VDI);
        return io;
      },
    };
  }

  async list(): Promise<string[]> {
    const out: string[] = [];
    for (const st of this.sheep.vdis.states.values()) {
      if (st.deleted || st.snapshot) continue;
      try {
        const h = decodeInodeHeader(await this.sheep.gw.read(vidToVdiOid(st.vid), 0, 572));
        if (h.name && h.snapCtime === 0n) out.push(h.name);
      } catch { /* gone meanwhile */ }
    }
    return out.sort();
  }
}
