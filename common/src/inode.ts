// The inode (VDI object) codec (spec §10.1, §10.2).
import {
  SD_INODE_HEADER_SIZE, MAX_DATA_OBJS, SD_INODE_GREF_OFFSET, SD_INODE_SIZE, SD_INODE_QEMU_SIZE,
} from './constants.js';
import { decodeFixedString, encodeFixedString } from './wire.js';

export const INODE_OFF = {
  name: 0,
  tag: 256,
  createTime: 512,
  snapCtime: 520,
  vmClockNsec: 528,
  vdiSize: 536,
  vmStateSize: 544,
  copyPolicy: 552,
  storePolicy: 553,
  nrCopies: 554,
  blockSizeShift: 555,
  snapId: 556,
  vdiId: 560,
  parentVdiId: 564,
  btreeCounter: 568,
  dataVdiId: SD_INODE_HEADER_SIZE,
  gref: SD_INODE_GREF_OFFSET,
} as const;

export interface InodeHeader {
  name: string;
  tag: string;
  createTime: bigint;
  snapCtime: bigint;
  vmClockNsec: bigint;
  vdiSize: bigint;
  vmStateSize: bigint;
  copyPolicy: number;
  storePolicy: number;
  nrCopies: number;
  blockSizeShift: number;
  snapId: number;
  vdiId: number;
  parentVdiId: number;
  btreeCounter: number;
}

export function emptyInodeHeader(): InodeHeader {
  return {
    name: '', tag: '', createTime: 0n, snapCtime: 0n, vmClockNsec: 0n, vdiSize: 0n, vmStateSize: 0n,
    copyPolicy: 0, storePolicy: 0, nrCopies: 0, blockSizeShift: 0, snapId: 0, vdiId: 0, parentVdiId: 0,
    btreeCounter: 0,
  };
}

/** Decode the header from the first bytes of an inode (needs ≥ 572 bytes). */
export function decodeInodeHeader(b: Buffer): InodeHeader {
  const O = INODE_OFF;
  return {
    name: decodeFixedString(b, O.name, 256),
    tag: decodeFixedString(b, O.tag, 256),
    createTime: b.readBigUInt64LE(O.createTime),
    snapCtime: b.readBigUInt64LE(O.snapCtime),
    vmClockNsec: b.readBigUInt64LE(O.vmClockNsec),
    vdiSize: b.readBigUInt64LE(O.vdiSize),
    vmStateSize: b.readBigUInt64LE(O.vmStateSize),
    copyPolicy: b[O.copyPolicy],
    storePolicy: b[O.storePolicy],
    nrCopies: b[O.nrCopies],
    blockSizeShift: b[O.blockSizeShift],
    snapId: b.readUInt32LE(O.snapId),
    vdiId: b.readUInt32LE(O.vdiId),
    parentVdiId: b.readUInt32LE(O.parentVdiId),
    btreeCounter: b.readUInt32LE(O.btreeCounter),
  };
}

/** Encode the 4664-byte header (bytes 572–4663 stay zero). */
export function encodeInodeHeader(h: InodeHeader, out: Buffer = Buffer.alloc(SD_INODE_HEADER_SIZE)): Buffer {
  const O = INODE_OFF;
  out.fill(0, 0, SD_INODE_HEADER_SIZE);
  encodeFixedString(h.name, 256, out, O.name);
  encodeFixedString(h.tag, 256, out, O.tag);
  out.writeBigUInt64LE(h.createTime, O.createTime);
  out.writeBigUInt64LE(h.snapCtime, O.snapCtime);
  out.writeBigUInt64LE(h.vmClockNsec, O.vmClockNsec);
  out.writeBigUInt64LE(h.vdiSize, O.vdiSize);
  out.writeBigUInt64LE(h.vmStateSize, O.vmStateSize);
  out[O.copyPolicy] = h.copyPolicy;
  out[O.storePolicy] = h.storePolicy;
  out[O.nrCopies] = h.nrCopies;
  out[O.blockSizeShift] = h.blockSizeShift;
  out.writeUInt32LE(h.snapId >>> 0, O.snapId);
  out.writeUInt32LE(h.vdiId >>> 0, O.vdiId);
  out.writeUInt32LE(h.parentVdiId >>> 0, O.parentVdiId);
  out.writeUInt32LE(h.btreeCounter >>> 0, O.btreeCounter);
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** count little-endian int32s of b from off, as an Int32Array (a view when aligned, else a copy). */
function int32View(b: Buffer, off: number, count: number): Int32Array {
  if (count === 0) return new Int32Array(0);
  if (((b.byteOffset + off) & 3) === 0) return new Int32Array(b.buffer, b.byteOffset + off, count);
  const out = new Int32Array(count);
  new Uint8Array(out.buffer).set(b.subarray(off, off + 4 * count));
  return out;
}

/** A whole inode in memory: header, flat index and generation references. */
export class Inode {
  header: InodeHeader;
  dataVdiId: Uint32Array; // MAX_DATA_OBJS entries
  grefGeneration: Int32Array;
  grefCount: Int32Array;

  constructor(header: InodeHeader = emptyInodeHeader()) {
    this.header = header;
    this.dataVdiId = new Uint32Array(MAX_DATA_OBJS);
    this.grefGeneration = new Int32Array(MAX_DATA_OBJS);
    this.grefCount = new Int32Array(MAX_DATA_OBJS);
  }

  get objectSize(): number {
    return 2 ** (this.header.blockSizeShift || 22);
  }

  /** Number of index entries that cover vdi_size. */
  get nrObjects(): number {
    return Math.min(MAX_DATA_OBJS, Number((this.header.vdiSize + BigInt(this.objectSize) - 1n) / BigInt(this.objectSize)));
  }

  get isSnapshot(): boolean {
    return this.header.snapCtime !== 0n;
  }

  /** Decode from a buffer holding a prefix of the inode (header, QEMU view or full). */
  static decode(b: Buffer): Inode {
    const ino = new Inode(decodeInodeHeader(b));
    const n = Math.max(0, Math.min(b.length, SD_INODE_QEMU_SIZE) - SD_INODE_HEADER_SIZE) >> 2;
    const g = Math.max(0, Math.min(b.length, SD_INODE_SIZE) - SD_INODE_GREF_OFFSET) >> 3;
    if (LITTLE_ENDIAN) {
      // the wire's little-endian words are the typed arrays' own: byte copies,
      // not a million readUInt32LE calls (12 MB took 100-240 ms of the event loop)
      new Uint8Array(ino.dataVdiId.buffer, ino.dataVdiId.byteOffset, 4 * n).set(b.subarray(SD_INODE_HEADER_SIZE, SD_INODE_HEADER_SIZE + 4 * n));
      const pairs = int32View(b, SD_INODE_GREF_OFFSET, 2 * g);
      const gen = ino.grefGeneration;
      const cnt = ino.grefCount;
      for (let i = 0; i < g; i++) {
        gen[i] = pairs[2 * i];
        cnt[i] = pairs[2 * i + 1];
      }
      return ino;
    }
    for (let i = 0; i < n; i++) ino.dataVdiId[i] = b.readUInt32LE(SD_INODE_HEADER_SIZE + 4 * i);
    for (let i = 0; i < g; i++) {
      ino.grefGeneration[i] = b.readInt32LE(SD_INODE_GREF_OFFSET + 8 * i);
      ino.grefCount[i] = b.readInt32LE(SD_INODE_GREF_OFFSET + 8 * i + 4);
    }
    return ino;
  }

  /** Set index entries first.. from b, which holds their 4-byte records (read from SD_INODE_HEADER_SIZE + 4 * first). */
  decodeIndex(b: Buffer, first: number): void {
    const n = Math.min(b.length >> 2, MAX_DATA_OBJS - first);
    if (LITTLE_ENDIAN) {
      new Uint8Array(this.dataVdiId.buffer, this.dataVdiId.byteOffset + 4 * first, 4 * n).set(b.subarray(0, 4 * n));
      return;
    }
    for (let i = 0; i < n; i++) this.dataVdiId[first + i] = b.readUInt32LE(4 * i);
  }

  /** Set the generation references of entries first.. from b, which holds their 8-byte records (read from SD_INODE_GREF_OFFSET + 8 * first). */
  decodeGrefs(b: Buffer, first: number): void {
    const g = Math.min(b.length >> 3, MAX_DATA_OBJS - first);
    const pairs = LITTLE_ENDIAN ? int32View(b, 0, 2 * g) : undefined;
    for (let i = 0; i < g; i++) {
      this.grefGeneration[first + i] = pairs ? pairs[2 * i] : b.readInt32LE(8 * i);
      this.grefCount[first + i] = pairs ? pairs[2 * i + 1] : b.readInt32LE(8 * i + 4);
    }
  }

  /** Full 12,587,576-byte encoding (or a shorter prefix). */
  encode(size: number = SD_INODE_SIZE): Buffer {
    const out = Buffer.alloc(size);
    const hdr = encodeInodeHeader(this.header);
    hdr.copy(out, 0, 0, Math.min(size, SD_INODE_HEADER_SIZE));
    const n = Math.max(0, Math.min(size, SD_INODE_QEMU_SIZE) - SD_INODE_HEADER_SIZE) >> 2;
    if (LITTLE_ENDIAN && (out.byteOffset & 3) === 0) {
      out.set(new Uint8Array(this.dataVdiId.buffer, this.dataVdiId.byteOffset, 4 * n), SD_INODE_HEADER_SIZE);
      const g = Math.max(0, Math.min(size, SD_INODE_SIZE) - SD_INODE_GREF_OFFSET) >> 3;
      if (g) {
        const pairs = new Int32Array(out.buffer, out.byteOffset + SD_INODE_GREF_OFFSET, 2 * g);
        const gen = this.grefGeneration;
        const cnt = this.grefCount;
        for (let i = 0; i < g; i++) {
          pairs[2 * i] = gen[i];
          pairs[2 * i + 1] = cnt[i];
        }
      }
      return out;
    }
    for (let i = 0; i < n; i++) if (this.dataVdiId[i]) out.writeUInt32LE(this.dataVdiId[i], SD_INODE_HEADER_SIZE + 4 * i);
    const g = Math.max(0, Math.min(size, SD_INODE_SIZE) - SD_INODE_GREF_OFFSET) >> 3;
    for (let i = 0; i < g; i++) {
      if (this.grefGeneration[i]) out.writeInt32LE(this.grefGeneration[i], SD_INODE_GREF_OFFSET + 8 * i);
      if (this.grefCount[i]) out.writeInt32LE(this.grefCount[i], SD_INODE_GREF_OFFSET + 8 * i + 4);
    }
    return out;
  }

  encodeGref(): Buffer {
    const out = Buffer.alloc(8 * MAX_DATA_OBJS);
    for (let i = 0; i < MAX_DATA_OBJS; i++) {
      if (this.grefGeneration[i]) out.writeInt32LE(this.grefGeneration[i], 8 * i);
      if (this.grefCount[i]) out.writeInt32LE(this.grefCount[i], 8 * i + 4);
    }
    return out;
  }
}

/** Timestamp64: seconds in the high 32 bits, nanoseconds in the low 32. */
export function timestamp64(ms: number = Date.now()): bigint {
  const sec = Math.floor(ms / 1000);
  const nsec = Math.floor(ms % 1000) * 1_000_000;
  return (BigInt(sec) << 32n) | BigInt(nsec);
}
export const timestampSeconds = (t: bigint): number => Number(t >> 32n);
