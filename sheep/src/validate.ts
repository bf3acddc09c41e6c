// What each opcode accepts, checked before a handler allocates or touches
// disk. Two stages:
//   - frame(): at the header, before any buffer exists: how many payload
//     bytes may follow (or none at all: the connection closes), how much
//     reply memory the request may cost, and whether it is peer traffic;
//   - check(): with the payload, before the handler runs: field by field
//     against what upstream sheep and its clients send (object ranges,
//     copies, policies, shifts, names, payload sizes), and who may ask.
// Every length, offset, count and name is hostile until checked here.
import {
  Op, Flag, Res, RequestHeader, SD_MAX_COPIES, SD_NR_VDIS, SD_VDI_BITMAP_SIZE, SD_ATTR_OBJ_SIZE, SD_MAX_NODES,
  SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN, MAX_DATA_OBJS, SD_MAX_VDI_SIZE_HYPER, MAX_PAYLOAD, SD_LEDGER_OBJ_SIZE, isDataObj,
  decodeEcPolicy,
} from '@sheepdog/common';
import type { Sheep } from './sheep.js';

/** Who may send an opcode: anyone, or only cluster members and the operator's --admin-allow addresses. */
export type Access = 'public' | 'restricted';

export interface Rule {
  access: Access;
  /** Largest payload (flag WRITE) this opcode takes; 0: none. Object writes are bounded by the object instead. */
  payload: number;
  /** Largest reply this opcode builds; a larger data_length is read as this much (the handlers fill what fits). */
  reply: number;
  /** Object I/O: data_length and offset lie within the object. */
  objectIo?: 'read' | 'write';
  /** Field checks on the header and payload; returns a result code to refuse with. */
  check?: (s: Sheep, h: RequestHeader, data: Buffer) => number | undefined;
}

const KiB = 1024;
const MiB = 1024 * 1024;

/** A NUL-terminated string field: UTF-8, its NUL inside the field (upstream's strings are C strings). */
function stringOk(b: Buffer, off: number, size: number, nonEmpty: boolean): boolean {
  const end = Math.min(b.length, off + size);
  if (end <= off) return !nonEmpty;
  const nul = b.indexOf(0, off);
  if (nul < 0 || nul >= end) return false;
  if (nonEmpty && nul === off) return false;
  return isUtf8(b.subarray(off, nul));
}

const decoder = new TextDecoder('utf-8', { fatal: true });
function isUtf8(b: Buffer): boolean {
  try {
    decoder.decode(b);
    return true;
  } catch {
    return false;
  }
}

const shiftOk = (shift: number) => shift === 0 || (shift >= 20 && shift <= 31);
const copiesOk = (copies: number) => copies <= SD_MAX_COPIES;
const vidOk = (vid: number) => vid < SD_NR_VDIS;
/**
 * A copy_policy byte: 0 (replication) or one dog's -c D:P makes. Upstream
 * sheep takes any byte and panics on P = 0 or stripes wrongly on D = 6
 * (erasure-coding-and-md.md A.2), so only the valid ones get in.
 */
const policyOk = (cp: number) => cp === 0 || decodeEcPolicy(cp) !== undefined;

/** Name [+ tag] requests (GET_VDI_INFO, LOCK_VDI, DEL_VDI): 256 or 512 bytes, NUL-terminated UTF-8. */
function nameTag(_s: Sheep, h: RequestHeader, data: Buffer): number | undefined {
  if (h.dataLength !== 256 && h.dataLength !== 512) return Res.INVALID_PARMS;
  if (!stringOk(data, 0, SD_MAX_VDI_LEN, true)) return Res.INVALID_PARMS;
  if (data.length >= 512 && !stringOk(data, 256, SD_MAX_VDI_TAG_LEN, false)) return Res.INVALID_PARMS;
  return undefined;
}

// Object I/O is the hot path: its fields are read straight from the raw
// header (copies @32, copy_policy @33, cow_oid @24, oid @16, offset @40)
// rather than through RequestHeader.obj, which decodes the whole variant.
function objFields(_s: Sheep, h: RequestHeader): number | undefined {
  const b = h.raw;
  if (!copiesOk(b[32]) || b[33] !== 0) return Res.INVALID_PARMS;
  if (h.flags & Flag.CMD_COW && !isDataObj(b.readBigUInt64LE(24))) return Res.INVALID_PARMS;
  return undefined;
}

/** A reference count change: a generation within the ledger, a count no VDI tree reaches (there are 2^24 VDIs). */
function decrefFields(_s: Sheep, h: RequestHeader): number | undefined {
  const r = h.ref;
  return r.generation + 1 < SD_LEDGER_OBJ_SIZE / 4 && r.count <= SD_NR_VDIS ? undefined : Res.INVALID_PARMS;
}

const pub = (payload: number, reply: number, check?: Rule['check']): Rule => ({ access: 'public', payload, reply, check });
const adm = (payload: number, reply: number, check?: Rule['check']): Rule => ({ access: 'restricted', payload, reply, check });

/** Any request may carry this much payload: read past, not refused, where the opcode takes less. */
const SMALL_PAYLOAD = 64 * KiB;

/** Replies built from the node's state (lists, records) are bounded by it; this caps what one request may ask for. */
const STATE_REPLY = 64 * MiB;

export const RULES = new Map<number, Rule>([
  [Op.CREATE_AND_WRITE_OBJ, { access: 'public', payload: MAX_PAYLOAD, reply: 0, objectIo: 'write', check: objFields }],
  [Op.READ_OBJ, { access: 'public', payload: 0, reply: MAX_PAYLOAD, objectIo: 'read', check: objFields }],
  [Op.WRITE_OBJ, { access: 'public', payload: MAX_PAYLOAD, reply: 0, objectIo: 'write', check: objFields }],
  // only sheep send these two (object reclaim), never a client
  [Op.REMOVE_OBJ, adm(0, 0, objFields)],
  // the object's index entry is cleared: a data object of an index that exists (2^20 entries)
  [Op.DISCARD_OBJ, pub(0, 0, (_s, h) => {
    const oid = h.raw.readBigUInt64LE(16);
    return isDataObj(oid) && Number(oid & 0xffffffffn) < MAX_DATA_OBJS ? undefined : Res.INVALID_PARMS;
  })],
  [Op.NEW_VDI, pub(SD_MAX_VDI_LEN, 0, (_s, h, data) => {
    const v = h.vdi;
    if (h.dataLength !== SD_MAX_VDI_LEN || !stringOk(data, 0, SD_MAX_VDI_LEN, true)) return Res.INVALID_PARMS;
    if (!copiesOk(v.copies) || !policyOk(v.copyPolicy) || v.storePolicy > 1 || !shiftOk(v.blockSizeShift) || !vidOk(v.baseVdiId)) return Res.INVALID_PARMS;
    // the index has 2^20 entries of one object each; a hyper volume (store_policy 1) indexes by B-tree
    const shift = v.blockSizeShift || 22;
    const max = v.storePolicy === 1 ? BigInt(SD_MAX_VDI_SIZE_HYPER) : BigInt(MAX_DATA_OBJS) * (1n << BigInt(shift));
    if (v.vdiSize > max) return Res.INVALID_PARMS;
    return undefined;
  })],
  [Op.LOCK_VDI, pub(512, 0, (s, h, data) => (h.vdi.type > 1 ? Res.INVALID_PARMS : nameTag(s, h, data)))],
  // dog `vdi lock unlock` sends the name (strlen + 1 bytes); the VDI is in base_vdi_id
  [Op.RELEASE_VDI, pub(SD_MAX_VDI_LEN, 0, (_s, h) => (vidOk(h.vdi.baseVdiId) ? undefined : Res.INVALID_PARMS))],
  [Op.GET_VDI_INFO, pub(512, 0, nameTag)],
  [Op.READ_VDIS, pub(0, SD_VDI_BITMAP_SIZE)],
  [Op.FLUSH_VDI, pub(0, 0)],
  [Op.DEL_VDI, pub(512, 0, nameTag)],
  [Op.GET_CLUSTER_DEFAULT, pub(0, 0)],

  [Op.GET_NODE_LIST, pub(0, 491_520)],
  [Op.MAKE_FS, adm(256, 0, (_s, h, data) => {
    const c = h.cluster;
    if (!copiesOk(c.copies) || !policyOk(c.copyPolicy) || !shiftOk(c.blockSizeShift)) return Res.INVALID_PARMS;
    if (data.length && (data.indexOf(0) < 0 ? !isUtf8(data) : !isUtf8(data.subarray(0, data.indexOf(0))))) return Res.INVALID_PARMS;
    return undefined;
  })],
  [Op.SHUTDOWN, adm(0, 0)],
  [Op.STAT_SHEEP, pub(0, 0)],
  [Op.STAT_CLUSTER, pub(0, STATE_REPLY, (_s, h) => (h.cluster.nodesNr > SD_MAX_NODES ? Res.INVALID_PARMS : undefined))],
  [Op.GET_VDI_ATTR, pub(SD_ATTR_OBJ_SIZE, 0, (_s, h, data) => {
    if (h.dataLength !== SD_ATTR_OBJ_SIZE) return Res.INVALID_PARMS;
    if (!stringOk(data, 0, SD_MAX_VDI_LEN, true) || !stringOk(data, 256, SD_MAX_VDI_TAG_LEN, false)) return Res.INVALID_PARMS;
    if (!stringOk(data, 528, 256, true) || data.readUInt32LE(524) > 65536) return Res.INVALID_PARMS;
    return undefined;
  })],
  [Op.FORCE_RECOVER, adm(0, 491_520)],
  [Op.GET_STORE_LIST, pub(0, 512)],
  [Op.CLEANUP, adm(0, 0)],
  [Op.TRACE_STATUS, pub(0, 0)],
  [Op.TRACE_READ_BUF, pub(0, 0)],
  [Op.TRACE_ENABLE, adm(256, 0)],
  [Op.TRACE_DISABLE, adm(256, 0)],
  [Op.STAT_RECOVERY, pub(0, 24)],
  [Op.FLUSH_DEL_CACHE, pub(0, 0)],
  [Op.NOTIFY_VDI_DEL, adm(8, 0, (_s, _h, data) => (data.length < 4 || !vidOk(data.readUInt32LE(0)) ? Res.INVALID_PARMS : undefined))],
  [Op.KILL_NODE, adm(0, 0)],
  [Op.GET_OBJ_LIST, adm(0, STATE_REPLY)],
  [Op.GET_EPOCH, adm(0, SD_MAX_NODES * 80 + 8)],
  [Op.CREATE_AND_WRITE_PEER, { access: 'restricted', payload: MAX_PAYLOAD, reply: 0, objectIo: 'write' }],
  [Op.READ_PEER, { access: 'restricted', payload: 0, reply: MAX_PAYLOAD, objectIo: 'read' }],
  [Op.WRITE_PEER, { access: 'restricted', payload: MAX_PAYLOAD, reply: 0, objectIo: 'write' }],
  [Op.REMOVE_PEER, adm(0, 0)],
  [Op.ENABLE_RECOVER, adm(0, 0)],
  [Op.DISABLE_RECOVER, adm(0, 0)],
  [Op.GET_VDI_COPIES, pub(0, STATE_REPLY)],
  [Op.COMPLETE_RECOVERY, adm(64, 0)],
  [Op.NOTIFY_VDI_ADD, adm(0, 0, (_s, h) => {
    const v = h.vdiState;
    if (!v.newVid || !vidOk(v.newVid) || !vidOk(v.oldVid)) return Res.INVALID_PARMS;
    if (!copiesOk(v.copies) || v.copyPolicy !== 0 || !shiftOk(v.blockSizeShift)) return Res.INVALID_PARMS;
    return undefined;
  })],
  [Op.DELETE_CACHE, adm(0, 0)],
  [Op.GET_CACHE_INFO, pub(0, 64 * KiB)],
  [Op.CACHE_PURGE, adm(0, 0)],
  [Op.MD_INFO, pub(0, 263_688)],
  // disk lists (paths joined by commas); not supported here, but framed
  [Op.MD_PLUG, adm(64 * KiB, 0)],
  [Op.MD_UNPLUG, adm(64 * KiB, 0)],
  [Op.GET_HASH, adm(0, 8)],
  [Op.REWEIGHT, adm(0, 0)],
  [Op.STAT, pub(0, 120)],
  [Op.GET_LOGLEVEL, pub(0, 4)],
  [Op.SET_LOGLEVEL, adm(8, 0)],
  [Op.NFS_CREATE, adm(SD_MAX_VDI_LEN, 0)],
  [Op.NFS_DELETE, adm(SD_MAX_VDI_LEN, 0)],
  [Op.EXIST, pub(0, 0)],
  [Op.CLUSTER_INFO, pub(0, 491_568)],
  [Op.ALTER_CLUSTER_COPY, adm(0, 0, (_s, h) => (copiesOk(h.cluster.copies) && h.cluster.copyPolicy === 0 ? undefined : Res.INVALID_PARMS))],
  [Op.ALTER_VDI_COPY, adm(0, 0, (_s, h) => {
    const v = h.vdiState;
    return copiesOk(v.copies) && v.copyPolicy === 0 && shiftOk(v.blockSizeShift) && vidOk(v.newVid) ? undefined : Res.INVALID_PARMS;
  })],
  [Op.DECREF_OBJ, adm(0, 0, decrefFields)],
  [Op.DECREF_PEER, adm(0, 0, decrefFields)],
  // makes this node connect to the address in the request: never for strangers
  [Op.REPAIR_REPLICA, adm(0, 0, (s, h) => {
    // and only to a member: otherwise anyone allowed could point sheep at any address
    const f = h.forw;
    return s.members.some((n) => n.addr.equals(f.addr) && n.port === f.port) ? undefined : Res.INVALID_PARMS;
  })],
  // dog sends the oids of a VDI: at most one per index entry
  [Op.OIDS_EXIST, pub(8 * MAX_DATA_OBJS, 8 * MAX_DATA_OBJS, (_s, h) => (h.dataLength % 8 ? Res.INVALID_PARMS : undefined))],
  [Op.READ_DEL_VDIS, pub(0, SD_VDI_BITMAP_SIZE)],
  [Op.GET_RECOVERY, pub(0, 24)],
  [Op.SET_RECOVERY, adm(64, 0)],
  [Op.SET_VNODES, adm(8, 0)],
  [Op.GET_VNODES, pub(0, 4)],
  // this implementation's recovery (see recovery.ts): pages of copy records, whole copies, held-version queries
  [Op.OBJ_COPIES, adm(0, STATE_REPLY)],
  [Op.FETCH_OBJ, adm(0, MAX_PAYLOAD)],
  [Op.SLICE_HASHES, adm(0, MiB)],
  [Op.CHECK_HELD, adm(4 * MiB, 4 * MiB)],
  [Op.SCRUB, adm(0, 0)],
  [Op.SCRUB_STATUS, adm(0, 4096)],
  // status, as STAT_RECOVERY: anyone may ask
  [Op.RECLAIM_STATUS, pub(0, 64 * KiB)],
  [Op.FARM_SAVE, adm(264 + 4 * SD_NR_VDIS, 0, (_s, h, d) =>
    (h.dataLength < 264 || (h.dataLength - 264) % 4 || !stringOk(d, 0, 256, true) ? Res.INVALID_PARMS : undefined))],
  [Op.FARM_READ, adm(0, 256 * MiB)],
  [Op.FARM_STAT, adm(0, 4096)],
  [Op.FARM_DELETE, adm(256, 0, (_s, h, d) => (h.dataLength !== 256 || !stringOk(d, 0, 256, true) ? Res.INVALID_PARMS : undefined))],
]);

/**
 * Opcodes with no rule of their own (new internal ones): restricted, with
 * a payload and a reply that any internal message fits in.
 */
const DEFAULT_RULE: Rule = { access: 'restricted', payload: 4 * MiB, reply: 4 * MiB };
/** Opcodes we do not know: a small payload is read past so that the connection stays framed. */
const UNKNOWN_RULE: Rule = { access: 'public', payload: 64 * KiB, reply: 0 };

export function ruleOf(opcode: number, known: boolean): Rule {
  return RULES.get(opcode) ?? (known ? DEFAULT_RULE : UNKNOWN_RULE);
}

/** What the receive path needs to know about a header before it allocates. */
export interface Framing {
  /** Payload bytes that follow, or -1: more than this opcode ever takes (answer INVALID_PARMS and close). */
  payload: number;
  /** Reply memory to charge up front (the handler builds at most this much). */
  reply: number;
  /** Answer this without running the handler (the payload, if any, is still read past). */
  result?: number;
  /** The header to execute, if data_length was read as less than sent (state replies). */
  header?: RequestHeader;
}

/** A copy of h that asks for n reply bytes. */
function withDataLength(h: RequestHeader, n: number): RequestHeader {
  const raw = Buffer.from(h.raw);
  raw.writeUInt32LE(n, 12);
  return new RequestHeader(raw);
}

/**
 * Sizes a request from its header alone. limit: the most one connection
 * may hold; a request that needs more is refused.
 */
export function frame(s: Sheep, h: RequestHeader, known: boolean, limit: number): Framing {
  const rule = ruleOf(h.opcode, known);
  const writes = (h.flags & Flag.CMD_WRITE) !== 0;
  const len = h.dataLength;
  if (rule.objectIo) {
    const size = s.gw.sizeOf(h.raw.readBigUInt64LE(16));
    const off = h.raw.readUInt32LE(40);
    if (rule.objectIo === 'write') {
      if (!writes) return { payload: 0, reply: 0, result: Res.INVALID_PARMS };
      if (len > size || len > limit) return { payload: -1, reply: 0 };
      return { payload: len, reply: 0, result: off + len > size ? Res.INVALID_PARMS : undefined };
    }
    if (writes) return len > rule.payload || len > limit ? { payload: -1, reply: 0 } : { payload: len, reply: 0, result: Res.INVALID_PARMS };
    if (off + len > size || len > limit) return { payload: 0, reply: 0, result: Res.INVALID_PARMS };
    return { payload: 0, reply: len };
  }
  if (writes) {
    // a payload the opcode does not take, if small, is read past (the handler ignores it): the connection stays framed
    const max = Math.min(Math.max(rule.payload, SMALL_PAYLOAD), limit);
    if (len > max) return { payload: -1, reply: 0 };
    // only OIDS_EXIST answers a write with data (PIGGYBACK), never more than it was sent
    return { payload: len, reply: h.flags & Flag.CMD_PIGGYBACK ? Math.min(len, rule.reply) : 0 };
  }
  const reply = Math.min(len, rule.reply, limit);
  return { payload: 0, reply, header: reply < len && rule.reply > 0 ? withDataLength(h, reply) : undefined };
}

/** Field checks with the payload at hand: a result to refuse with, or undefined. */
export function check(s: Sheep, h: RequestHeader, data: Buffer, known: boolean): number | undefined {
  const rule = ruleOf(h.opcode, known);
  return rule.check?.(s, h, data);
}
