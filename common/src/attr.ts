// VDI attribute record codec (spec §10.10), 66,320 bytes.
import { SD_ATTR_OBJ_SIZE } from './constants.js';
import { decodeFixedString, encodeFixedString } from './wire.js';

export interface VdiAttr {
  name: string;
  tag: string;
  ctime: bigint;
  snapId: number;
  key: string;
  value: Buffer;
}

export const ATTR_VALUE_OFFSET = 784;

export function encodeAttr(a: VdiAttr, out: Buffer = Buffer.alloc(SD_ATTR_OBJ_SIZE)): Buffer {
  out.fill(0);
  encodeFixedString(a.name, 256, out, 0);
  encodeFixedString(a.tag, 256, out, 256);
  out.writeBigUInt64LE(a.ctime, 512);
  out.writeUInt32LE(a.snapId >>> 0, 520);
  out.writeUInt32LE(a.value.length, 524);
  encodeFixedString(a.key, 256, out, 528);
  a.value.copy(out, ATTR_VALUE_OFFSET, 0, Math.min(a.value.length, 65536));
  return out;
}

export function decodeAttr(b: Buffer): VdiAttr {
  const len = Math.min(b.readUInt32LE(524), 65536, Math.max(0, b.length - ATTR_VALUE_OFFSET));
  return {
    name: decodeFixedString(b, 0, 256),
    tag: decodeFixedString(b, 256, 256),
    ctime: b.readBigUInt64LE(512),
    snapId: b.readUInt32LE(520),
    key: decodeFixedString(b, 528, 256),
    value: Buffer.from(b.subarray(ATTR_VALUE_OFFSET, ATTR_VALUE_OFFSET + len)),
  };
}

/** True when name, tag, snap_id and key (the fixed fields, byte-wise) match. */
export function attrSameKey(a: Buffer, b: Buffer): boolean {
  return a.subarray(0, 512).equals(b.subarray(0, 512)) &&
    a.readUInt32LE(520) === b.readUInt32LE(520) &&
    a.subarray(528, 784).equals(b.subarray(528, 784));
}
