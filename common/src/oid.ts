// Object id layout (spec §7): bits 0–31 index, 32–55 vid, 59–63 type bits.
import {
  SD_INODE_SIZE, SD_ATTR_OBJ_SIZE, SD_BTREE_OBJ_SIZE, SD_LEDGER_OBJ_SIZE, SD_INODE_HEADER_SIZE,
} from './constants.js';

export const VDI_BIT = 1n << 63n;
export const VMSTATE_BIT = 1n << 62n;
export const VDI_ATTR_BIT = 1n << 61n;
export const VDI_BTREE_BIT = 1n << 60n;
export const LEDGER_BIT = 1n << 59n;
const TYPE_MASK = VDI_BIT | VMSTATE_BIT | VDI_ATTR_BIT | VDI_BTREE_BIT | LEDGER_BIT;

export const vidToVdiOid = (vid: number): bigint => VDI_BIT | (BigInt(vid) << 32n);
export const vidToDataOid = (vid: number, idx: number): bigint => (BigInt(vid) << 32n) | BigInt(idx >>> 0);
export const vidToVmstateOid = (vid: number, idx: number): bigint => VMSTATE_BIT | (BigInt(vid) << 32n) | BigInt(idx >>> 0);
export const vidToAttrOid = (vid: number, slot: number): bigint => VDI_ATTR_BIT | (BigInt(vid) << 32n) | BigInt(slot >>> 0);
export const vidToBtreeOid = (vid: number, n: number): bigint => VDI_BTREE_BIT | (BigInt(vid) << 32n) | BigInt(n >>> 0);
export const dataOidToLedgerOid = (oid: bigint): bigint => oid | LEDGER_BIT;
export const ledgerOidToDataOid = (oid: bigint): bigint => oid & ~LEDGER_BIT;
export const oidToVid = (oid: bigint): number => Number((oid >> 32n) & 0xffffffn);
export const dataOidToIdx = (oid: bigint): number => Number(oid & 0xffffffffn);
export const dataVidOffset = (idx: number): number => SD_INODE_HEADER_SIZE + 4 * idx;

export const isVdiObj = (oid: bigint): boolean => (oid & VDI_BIT) !== 0n;
export const isVmstateObj = (oid: bigint): boolean => (oid & VMSTATE_BIT) !== 0n;
export const isVdiAttrObj = (oid: bigint): boolean => (oid & VDI_ATTR_BIT) !== 0n;
export const isVdiBtreeObj = (oid: bigint): boolean => (oid & VDI_BTREE_BIT) !== 0n;
export const isLedgerObj = (oid: bigint): boolean => (oid & LEDGER_BIT) !== 0n;
export const isDataObj = (oid: bigint): boolean => (oid & TYPE_MASK) === 0n;

/** Stored size of an object (§7.4); data/vmstate objects take the VDI's object size. */
export function objectStoredSize(oid: bigint, objectSize: number): number {
  if (isVdiObj(oid)) return SD_INODE_SIZE;
  if (isVdiAttrObj(oid)) return SD_ATTR_OBJ_SIZE;
  if (isVdiBtreeObj(oid)) return SD_BTREE_OBJ_SIZE;
  if (isLedgerObj(oid)) return SD_LEDGER_OBJ_SIZE;
  return objectSize;
}

/** 16 lowercase hex digits, as upstream prints and names object files. */
export const oidToHex = (oid: bigint): string => oid.toString(16).padStart(16, '0');
export function parseOid(s: string): bigint {
  const t = s.startsWith('0x') || s.startsWith('0X') ? s.slice(2) : s;
  if (!/^[0-9a-fA-F]{1,16}$/.test(t)) throw new Error(`invalid object id '${s}'`);
  return BigInt('0x' + t);
}
