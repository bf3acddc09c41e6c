// The 48-byte request and response headers (spec §2). Every variant of the
// union in bytes 16–47 has its own view here; nothing else computes offsets.
import { SD_PROTO_VER, SD_SHEEP_PROTO_VER, SD_REQ_HEADER_SIZE } from './constants.js';

export interface ObjReq {
  oid: bigint;
  cowOid: bigint;
  copies: number;
  copyPolicy: number;
  ecIndex: number;
  tgtEpoch: number;
  offset: number;
}

export interface VdiReq {
  vdiSize: bigint;
  baseVdiId: number;
  copies: number;
  copyPolicy: number;
  storePolicy: number;
  blockSizeShift: number;
  snapid: number;
  type: number;
}

export interface ClusterReq {
  oid: bigint;
  ctime: bigint;
  copies: number;
  copyPolicy: number;
  flags: number;
  tag: number;
  nodesNr: number;
  blockSizeShift: number;
}

export interface VdiStateReq {
  oldVid: number;
  newVid: number;
  copies: number;
  setBitmap: number;
  copyPolicy: number;
  blockSizeShift: number;
}

export interface ForwReq {
  oid: bigint;
  addr: Buffer; // 16 bytes, §11.1 encoding
  port: number;
}

export interface RefReq {
  oid: bigint;
  generation: number;
  count: number;
}

export interface RequestFields {
  protoVer?: number;
  opcode: number;
  flags?: number;
  epoch?: number;
  id?: number;
  dataLength?: number;
  obj?: Partial<ObjReq>;
  vdi?: Partial<VdiReq>;
  cluster?: Partial<ClusterReq>;
  vdiState?: Partial<VdiStateReq>;
  forw?: Partial<ForwReq>;
  ref?: Partial<RefReq>;
}

/** The natural proto_ver for an opcode as dog sends it (§3). */
export function protoVerFor(opcode: number): number {
  return opcode >= 0x80 ? SD_SHEEP_PROTO_VER : SD_PROTO_VER;
}

export function encodeRequest(f: RequestFields, out: Buffer = Buffer.alloc(SD_REQ_HEADER_SIZE)): Buffer {
  out.fill(0, 0, SD_REQ_HEADER_SIZE);
  out.writeUInt8(f.protoVer ?? protoVerFor(f.opcode), 0);
  out.writeUInt8(f.opcode, 1);
  out.writeUInt16LE(f.flags ?? 0, 2);
  out.writeUInt32LE((f.epoch ?? 0) >>> 0, 4);
  out.writeUInt32LE((f.id ?? 0) >>> 0, 8);
  out.writeUInt32LE((f.dataLength ?? 0) >>> 0, 12);
  if (f.obj) {
    const o = f.obj;
    out.writeBigUInt64LE(o.oid ?? 0n, 16);
    out.writeBigUInt64LE(o.cowOid ?? 0n, 24);
    out.writeUInt8(o.copies ?? 0, 32);
    out.writeUInt8(o.copyPolicy ?? 0, 33);
    out.writeUInt8(o.ecIndex ?? 0, 34);
    out.writeUInt32LE((o.tgtEpoch ?? 0) >>> 0, 36);
    out.writeUInt32LE((o.offset ?? 0) >>> 0, 40);
  } else if (f.vdi) {
    const v = f.vdi;
    out.writeBigUInt64LE(v.vdiSize ?? 0n, 16);
    out.writeUInt32LE((v.baseVdiId ?? 0) >>> 0, 24);
    out.writeUInt8(v.copies ?? 0, 28);
    out.writeUInt8(v.copyPolicy ?? 0, 29);
    out.writeUInt8(v.storePolicy ?? 0, 30);
    out.writeUInt8(v.blockSizeShift ?? 0, 31);
    out.writeUInt32LE((v.snapid ?? 0) >>> 0, 32);
    out.writeUInt32LE((v.type ?? 0) >>> 0, 36);
  } else if (f.cluster) {
    const c = f.cluster;
    out.writeBigUInt64LE(c.oid ?? 0n, 16);
    out.writeBigUInt64LE(c.ctime ?? 0n, 24);
    out.writeUInt8(c.copies ?? 0, 32);
    out.writeUInt8(c.copyPolicy ?? 0, 33);
    out.writeUInt16LE(c.flags ?? 0, 34);
    out.writeUInt32LE((c.tag ?? 0) >>> 0, 36);
    out.writeUInt32LE((c.nodesNr ?? 0) >>> 0, 40);
    out.writeUInt8(c.blockSizeShift ?? 0, 44);
  } else if (f.vdiState) {
    const s = f.vdiState;
    out.writeUInt32LE((s.oldVid ?? 0) >>> 0, 16);
    out.writeUInt32LE((s.newVid ?? 0) >>> 0, 20);
    out.writeUInt8(s.copies ?? 0, 24);
    out.writeUInt8(s.setBitmap ?? 0, 25);
    out.writeUInt8(s.copyPolicy ?? 0, 26);
    out.writeUInt8(s.blockSizeShift ?? 0, 27);
  } else if (f.forw) {
    out.writeBigUInt64LE(f.forw.oid ?? 0n, 16);
    if (f.forw.addr) f.forw.addr.copy(out, 24, 0, 16);
    out.writeUInt16LE(f.forw.port ?? 0, 40);
  } else if (f.ref) {
    out.writeBigUInt64LE(f.ref.oid ?? 0n, 16);
    out.writeUInt32LE((f.ref.generation ?? 0) >>> 0, 24);
    out.writeUInt32LE((f.ref.count ?? 0) >>> 0, 28);
  }
  return out;
}

/** A decoded request header: common fields eagerly, variants on demand. */
export class RequestHeader {
  readonly protoVer: number;
  readonly opcode: number;
  readonly flags: number;
  readonly epoch: number;
  readonly id: number;
  readonly dataLength: number;
  constructor(readonly raw: Buffer) {
    if (raw.length < SD_REQ_HEADER_SIZE) throw new RangeError('request header needs 48 bytes');
    this.protoVer = raw[0];
    this.opcode = raw[1];
    this.flags = raw.readUInt16LE(2);
    this.epoch = raw.readUInt32LE(4);
    this.id = raw.readUInt32LE(8);
    this.dataLength = raw.readUInt32LE(12);
  }
  get obj(): ObjReq {
    const b = this.raw;
    return {
      oid: b.readBigUInt64LE(16),
      cowOid: b.readBigUInt64LE(24),
      copies: b[32],
      copyPolicy: b[33],
      ecIndex: b[34],
      tgtEpoch: b.readUInt32LE(36),
      offset: b.readUInt32LE(40),
    };
  }
  get vdi(): VdiReq {
    const b = this.raw;
    return {
      vdiSize: b.readBigUInt64LE(16),
      baseVdiId: b.readUInt32LE(24),
      copies: b[28],
      copyPolicy: b[29],
      storePolicy: b[30],
      blockSizeShift: b[31],
      snapid: b.readUInt32LE(32),
      type: b.readUInt32LE(36),
    };
  }
  get cluster(): ClusterReq {
    const b = this.raw;
    return {
      oid: b.readBigUInt64LE(16),
      ctime: b.readBigUInt64LE(24),
      copies: b[32],
      copyPolicy: b[33],
      flags: b.readUInt16LE(34),
      tag: b.readUInt32LE(36),
      nodesNr: b.readUInt32LE(40),
      blockSizeShift: b[44],
    };
  }
  get vdiState(): VdiStateReq {
    const b = this.raw;
    return {
      oldVid: b.readUInt32LE(16),
      newVid: b.readUInt32LE(20),
      copies: b[24],
      setBitmap: b[25],
      copyPolicy: b[26],
      blockSizeShift: b[27],
    };
  }
  get forw(): ForwReq {
    const b = this.raw;
    return { oid: b.readBigUInt64LE(16), addr: Buffer.from(b.subarray(24, 40)), port: b.readUInt16LE(40) };
  }
  get ref(): RefReq {
    const b = this.raw;
    return { oid: b.readBigUInt64LE(16), generation: b.readUInt32LE(24), count: b.readUInt32LE(28) };
  }
}

export function decodeRequest(buf: Buffer): RequestHeader {
  return new RequestHeader(buf);
}

export interface VdiRsp {
  vdiId: number;
  attrId: number;
  copies: number;
  blockSizeShift: number;
}
export interface NodeRsp {
  nrNodes: number;
  storeSize: bigint;
  storeFree: bigint;
}
export interface ClusterDefaultRsp {
  nrCopies: number;
  copyPolicy: number;
  blockSizeShift: number;
}

export interface ResponseFields {
  protoVer?: number;
  opcode: number;
  flags?: number;
  epoch?: number;
  id?: number;
  dataLength?: number;
  result: number;
  vdi?: Partial<VdiRsp>;
  node?: Partial<NodeRsp>;
  hash?: Buffer; // 20-byte SHA-1
  clusterDefault?: Partial<ClusterDefaultRsp>;
}

export function encodeResponse(f: ResponseFields, out: Buffer = Buffer.alloc(48)): Buffer {
  out.fill(0, 0, 48);
  out.writeUInt8(f.protoVer ?? 0, 0);
  out.writeUInt8(f.opcode, 1);
  out.writeUInt16LE(f.flags ?? 0, 2);
  out.writeUInt32LE((f.epoch ?? 0) >>> 0, 4);
  out.writeUInt32LE((f.id ?? 0) >>> 0, 8);
  out.writeUInt32LE((f.dataLength ?? 0) >>> 0, 12);
  out.writeUInt32LE(f.result >>> 0, 16);
  if (f.vdi) {
    out.writeUInt32LE((f.vdi.vdiId ?? 0) >>> 0, 24);
    out.writeUInt32LE((f.vdi.attrId ?? 0) >>> 0, 28);
    out.writeUInt8(f.vdi.copies ?? 0, 32);
    out.writeUInt8(f.vdi.blockSizeShift ?? 0, 33);
  } else if (f.node) {
    out.writeUInt32LE((f.node.nrNodes ?? 0) >>> 0, 20);
    out.writeBigUInt64LE(f.node.storeSize ?? 0n, 32);
    out.writeBigUInt64LE(f.node.storeFree ?? 0n, 40);
  } else if (f.hash) {
    f.hash.copy(out, 24, 0, 20);
  } else if (f.clusterDefault) {
    out.writeUInt8(f.clusterDefault.nrCopies ?? 0, 20);
    out.writeUInt8(f.clusterDefault.copyPolicy ?? 0, 21);
    out.writeUInt8(f.clusterDefault.blockSizeShift ?? 0, 22);
  }
  return out;
}

export class ResponseHeader {
  readonly protoVer: number;
  readonly opcode: number;
  readonly flags: number;
  readonly epoch: number;
  readonly id: number;
  readonly dataLength: number;
  readonly result: number;
  constructor(readonly raw: Buffer) {
    if (raw.length < 48) throw new RangeError('response header needs 48 bytes');
    this.protoVer = raw[0];
    this.opcode = raw[1];
    this.flags = raw.readUInt16LE(2);
    this.epoch = raw.readUInt32LE(4);
    this.id = raw.readUInt32LE(8);
    this.dataLength = raw.readUInt32LE(12);
    this.result = raw.readUInt32LE(16);
  }
  get vdi(): VdiRsp {
    const b = this.raw;
    return { vdiId: b.readUInt32LE(24), attrId: b.readUInt32LE(28), copies: b[32], blockSizeShift: b[33] };
  }
  get node(): NodeRsp {
    const b = this.raw;
    return { nrNodes: b.readUInt32LE(20), storeSize: b.readBigUInt64LE(32), storeFree: b.readBigUInt64LE(40) };
  }
  get hash(): Buffer {
    return Buffer.from(this.raw.subarray(24, 44));
  }
  get clusterDefault(): ClusterDefaultRsp {
    const b = this.raw;
    return { nrCopies: b[20], copyPolicy: b[21], blockSizeShift: b[22] };
  }
}

export function decodeResponse(buf: Buffer): ResponseHeader {
  return new ResponseHeader(buf);
}

/** Fixed-size NUL-padded string field (String[N] in the spec). */
export function encodeFixedString(s: string | Buffer, size: number, out?: Buffer, offset = 0): Buffer {
  const b = out ?? Buffer.alloc(size);
  const src = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  b.fill(0, offset, offset + size);
  src.copy(b, offset, 0, Math.min(src.length, size));
  return b;
}

export function decodeFixedString(b: Buffer, offset: number, size: number): string {
  const end = Math.min(b.length, offset + size);
  let n = offset;
  while (n < end && b[n] !== 0) n++;
  return b.toString('utf8', offset, n);
}
