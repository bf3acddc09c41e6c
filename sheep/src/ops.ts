// The opcode table: opcode -> { name, kind, force, handler } (spec §6.2).
import {
  Op, Flag, Res, SheepdogError, RequestHeader, ResponseFields, ClusterFlag, SD_SHEEP_PROTO_VER,
  SD_VDI_BITMAP_SIZE, SD_NODE_SIZE, SD_EPOCH_LOG_HEADER_SIZE, SD_CLUSTER_INFO_SIZE, SD_ATTR_OBJ_SIZE,
  SD_VDI_STATE_SIZE, SD_MAX_COPIES, encodeNodes, encodeEpochLog, encodeClusterInfo, encodeRecoveryState,
  encodeThrottling, decodeThrottling, encodeStat, encodeVdiState, encodeMdInfo, decodeMdPaths, decodeFixedString,
  addrToString, isDataObj, oidToVid, LockState, timestamp64, encodeObjectCopies, COPIES_HEADER_SIZE,
  COPY_RECORD_SIZE, FETCH_HEADER_SIZE, encodeReclaimStatus, RECLAIM_HEADER_SIZE, encodeFetchHeader, decodeHeldQuery, encodeOids, CopyFlag, decodeFetched,
  sliceHashesSize, encodeSliceHashes, sliceHashesOf, oidToHex,
  RECOVERY_MAX_EXEC_COUNT_LIMIT, RECOVERY_INTERVAL_LIMIT_MS, decodeEcPolicy,
} from '@sheepdog/common';
import * as path from 'node:path';
import type { Sheep, MakeFsMsg } from './sheep.js';
import { STORE_DRIVERS } from './sheep.js';
import { getLogLevel, setLogLevel, LOG_LEVELS, log } from './log.js';
import { SheepClient, objFieldsToSha1 } from '@sheepdog/common';
import { flushVdiOp, deleteCacheOp, getCacheInfoOp, cachePurgeOp } from './cache/index.js';
import { check, ruleOf } from './validate.js';
import { farmSave, farmRead, farmDelete, farmStat } from './farm.js';
import { stripKey } from './ec/strip-key.js';
import { encodeStripRecords, sameNode, stripFileSize, STRIPS_HEADER_SIZE, STRIP_RECORD_SIZE } from '@sheepdog/common';

/** Who sent a request (the sheepdog port fills it in): restricted opcodes need allowed(). */
export interface RequestOrigin {
  address: string;
  allowed(): boolean;
  /** A restricted opcode was refused (for the log). */
  refused?(opcode: number): void;
  /** The connection closed: nobody will read the reply. */
  gone?(): boolean;
}

export type Kind = 'gateway' | 'local' | 'cluster' | 'peer';

export interface Reply extends Omit<ResponseFields, 'opcode' | 'result'> {
  result?: number;
  data?: Buffer;
}

export interface OpDef {
  name: string;
  kind: Kind;
  force?: boolean;
  handler: (s: Sheep, h: RequestHeader, data: Buffer, from?: RequestOrigin) => Promise<Reply>;
}

const ok = (r: Reply = {}): Reply => ({ result: Res.SUCCESS, ...r });
const fail = (code: number): never => {
  throw new SheepdogError(code);
};

function nameAndTag(data: Buffer, h: RequestHeader): { name: string; tag: string } {
  if (h.dataLength !== 256 && h.dataLength !== 512) fail(Res.INVALID_PARMS);
  return {
    name: decodeFixedString(data, 0, 256),
    tag: data.length >= 512 ? decodeFixedString(data, 256, 256) : '',
  };
}

// ---- gateway: client object I/O -------------------------------------------

// copy_policy (dog sends the inode's, QEMU 0) goes to the gateway, where
// the VDI's stands in for 0; the object cache knows only the VDI's.
async function createAndWrite(s: Sheep, h: RequestHeader, data: Buffer): Promise<Reply> {
  const o = h.obj;
  const cow = h.flags & Flag.CMD_COW ? o.cowOid : 0n;
  const io = s.cache?.io(h.flags);
  if (io) await io.create(o.oid, o.offset, data, cow, o.copies || undefined);
  else await s.gw.create(o.oid, o.offset, data, cow, o.copies || undefined, o.copyPolicy);
  s.stats.gwWrite++;
  return ok();
}

async function readObj(s: Sheep, h: RequestHeader): Promise<Reply> {
  const o = h.obj;
  const size = s.gw.sizeOf(o.oid);
  if (o.offset + h.dataLength > size) fail(Res.INVALID_PARMS);
  const io = s.cache?.io(h.flags);
  const data = io ? await io.read(o.oid, o.offset, h.dataLength, o.copies || undefined)
    : await s.gw.read(o.oid, o.offset, h.dataLength, o.copies || undefined, undefined, o.copyPolicy);
  s.stats.gwRead++;
  return ok({ data });
}

async function writeObj(s: Sheep, h: RequestHeader, data: Buffer): Promise<Reply> {
  const o = h.obj;
  const io = s.cache?.io(h.flags);
  if (io) await io.write(o.oid, o.offset, data, o.copies || undefined);
  else await s.gw.write(o.oid, o.offset, data, o.copies || undefined, o.copyPolicy);
  s.stats.gwWrite++;
  return ok();
}

async function removeObj(s: Sheep, h: RequestHeader): Promise<Reply> {
  await s.gw.remove(h.obj.oid, h.obj.copies || undefined, h.obj.copyPolicy);
  s.stats.gwRemove++;
  return ok();
}

async function discardObj(s: Sheep, h: RequestHeader): Promise<Reply> {
  if (!isDataObj(h.obj.oid)) fail(Res.INVALID_PARMS);
  await s.gw.discard(h.obj.oid).catch(() => undefined);
  return ok();
}

// ---- VDI operations (cluster) ---------------------------------------------

const publish = (s: Sheep) => (n: { t: string }) => s.cluster.notify(n as never);

async function newVdi(s: Sheep, h: RequestHeader, data: Buffer): Promise<Reply> {
  if (h.dataLength !== 256) fail(Res.INVALID_PARMS);
  const v = h.vdi;
  const name = decodeFixedString(data, 0, 256);
  if (!name) fail(Res.INVALID_PARMS);
  if (v.copies > SD_MAX_COPIES) fail(Res.INVALID_PARMS);
  await s.cache?.beforeNewVdi(name, v.baseVdiId, v.snapid !== 0); // dirty cached data belongs in the snapshot
  const r = await s.withClusterLock(() => s.vdis.newVdi({
    name, vdiSize: v.vdiSize, baseVdiId: v.baseVdiId, copies: v.copies, copyPolicy: v.copyPolicy,
    storePolicy: v.storePolicy, blockSizeShift: v.blockSizeShift, snapshot: v.snapid !== 0,
  }, publish(s)));
  log.info(`created VDI ${name} (${r.vid.toString(16)})`);
  return ok({ vdi: { vdiId: r.vid, copies: r.copies, blockSizeShift: r.blockSizeShift } });
}

async function vdiInfoReply(s: Sheep, vid: number): Promise<Reply> {
  const st = s.vdis.state(vid);
  return ok({ vdi: { vdiId: vid, copies: st?.nrCopies ?? 0, blockSizeShift: st?.blockSizeShift ?? 0 } });
}

async function getVdiInfo(s: Sheep, h: RequestHeader, data: Buffer): Promise<Reply> {
  const { name, tag } = nameAndTag(data, h);
  const vid = await s.withClusterLock(() => s.vdis.lookupOrThrow(name, h.vdi.snapid, tag));
  return vdiInfoReply(s, vid);
}

async function lockVdi(s: Sheep, h: RequestHeader, data: Buffer): Promise<Reply> {
  const { name, tag } = nameAndTag(data, h);
  return s.withClusterLock(async () => {
    const vid = await s.vdis.lookupOrThrow(name, h.vdi.snapid, tag);
    if (s.config.flags & ClusterFlag.USE_LOCK) {
      const st = s.vdis.state(vid);
      const shared = h.vdi.type === 1;
      if (st) {
        if (!shared && st.lockState !== LockState.UNLOCKED) fail(Res.VDI_LOCKED);
        if (shared && st.lockState === LockState.LOCKED) fail(Res.VDI_LOCKED);
        await s.cluster.notify({ t: 'lock', vid, state: shared ? LockState.SHARED : LockState.LOCKED });
      }
    }
    return vdiInfoReply(s, vid);
  });
}

async function releaseVdi(s: Sheep, h: RequestHeader): Promise<Reply> {
  const vid = h.vdi.baseVdiId;
  const st = s.vdis.state(vid);
  if (st && st.lockState !== LockState.UNLOCKED) {
    await s.cluster.notify({ t: 'lock', vid, state: LockState.UNLOCKED });
  } else {
    log.debug(`release of unlocked VDI ${vid.toString(16)}`);
  }
  return ok();
}

async function delVdi(s: Sheep, h: RequestHeader, data: Buffer): Promise<Reply> {
  const { name, tag } = nameAndTag(data, h);
  await s.cache?.beforeDelVdi(name, h.vdi.snapid, tag);
  const vid = await s.withClusterLock(() => s.vdis.delVdi(name, h.vdi.snapid, tag, publish(s)));
  s.cache?.forget(vid);
  log.info(`deleted VDI ${name} (${vid.toString(16)})`);
  return ok({ vdi: { vdiId: vid } });
}

async function readVdis(s: Sheep, h: RequestHeader, bitmap: Buffer): Promise<Reply> {
  if (h.dataLength !== SD_VDI_BITMAP_SIZE) fail(Res.INVALID_PARMS);
  return ok({ data: Buffer.from(bitmap) });
}

async function getVdiAttr(s: Sheep, h: RequestHeader, data: Buffer): Promise<Reply> {
  if (h.dataLength !== SD_ATTR_OBJ_SIZE) fail(Res.INVALID_PARMS);
  const r = await s.withClusterLock(() => s.vdis.getAttr(h.flags, h.vdi.snapid, data));
  return ok({ vdi: { vdiId: r.vid, attrId: r.slot, copies: r.copies } });
}

// ---- cluster administration -----------------------------------------------

async function makeFs(s: Sheep, h: RequestHeader, data: Buffer): Promise<Reply> {
  const c = h.cluster;
  const store = decodeFixedString(data, 0, data.length) || 'plain';
  if (!STORE_DRIVERS.includes(store)) fail(Res.NO_STORE);
  // an erasure-coded default: every VDI created without copies takes it, with nr_copies D+P (A.2)
  const ec = decodeEcPolicy(c.copyPolicy);
  if (c.copyPolicy !== 0 && !ec) fail(Res.INVALID_PARMS);
  const copies = ec ? ec.d + ec.p : c.copies || 3;
  if (copies > SD_MAX_COPIES) fail(Res.INVALID_PARMS);
  const shift = c.blockSizeShift || 22;
  if (shift < 20 || shift > 31) fail(Res.INVALID_PARMS);
  const msg: MakeFsMsg = {
    t: 'make_fs', ctime: c.ctime || timestamp64(), copies, copyPolicy: c.copyPolicy, flags: c.flags, blockSizeShift: shift, store,
  };
  await s.withClusterLock(() => s.cluster.notify(msg as never));
  return ok();
}

async function shutdown(s: Sheep): Promise<Reply> {
  // answer first, then go down
  setImmediate(() => { s.cluster.notify({ t: 'shutdown' }).catch(() => undefined); });
  return ok();
}

async function statSheep(s: Sheep): Promise<Reply> {
  if (s.opts.gateway) return ok({ node: { storeSize: 0n, storeFree: 0n } });
  const u = await s.store.usage();
  const size = u.used + u.free;
  return ok({ node: { storeSize: size, storeFree: u.free } });
}

async function statCluster(s: Sheep, h: RequestHeader): Promise<Reply> {
  const nodesNr = h.cluster.nodesNr;
  const stride = SD_EPOCH_LOG_HEADER_SIZE + nodesNr * SD_NODE_SIZE;
  const max = Math.floor(h.dataLength / stride);
  const n = Math.min(s.epochNr, max);
  const out = Buffer.alloc(n * stride);
  for (let i = 0; i < n; i++) {
    const e = s.epochNr - i;
    const rec = s.epochs.get(e) ?? { epoch: e, time: 0, nodes: [] };
    if (nodesNr > 0 && rec.nodes.length > nodesNr) fail(Res.BUFFER_SMALL);
    encodeEpochLog({
      ctime: s.config.ctime, time: BigInt(rec.time), epoch: e, disableRecovery: s.config.disableRecovery,
      nrCopies: s.config.copies, copyPolicy: s.config.copyPolicy, flags: s.clusterFlags, drvName: s.config.store,
      nodes: rec.nodes,
    }, nodesNr, out, i * stride, i === 0);
  }
  const status = s.status === 'ok' ? Res.SUCCESS : s.status === 'wait_format' ? Res.WAIT_FOR_FORMAT
    : s.status === 'wait_join' ? Res.WAIT_FOR_JOIN : Res.SHUTDOWN;
  return { result: status, data: out };
}

async function clusterInfo(s: Sheep, h: RequestHeader): Promise<Reply> {
  const b = encodeClusterInfo({
    protoVer: SD_SHEEP_PROTO_VER, disableRecovery: s.config.disableRecovery, epoch: s.epochNr,
    ctime: s.config.ctime, flags: s.clusterFlags, nrCopies: s.config.copies, copyPolicy: s.config.copyPolicy,
    status: s.clusterStatusCode, blockSizeShift: s.config.blockSizeShift, defaultStore: s.config.store,
    nodes: s.epochs.get(s.epochNr)?.nodes ?? s.members,
  }, SD_CLUSTER_INFO_SIZE);
  return ok({ data: b.subarray(0, Math.min(h.dataLength, b.length)) });
}

async function getNodeList(s: Sheep, h: RequestHeader): Promise<Reply> {
  const nodes = s.members;
  const b = encodeNodes(nodes);
  const fit = Math.min(nodes.length, Math.floor(h.dataLength / SD_NODE_SIZE));
  return ok({ data: b.subarray(0, fit * SD_NODE_SIZE), node: { nrNodes: nodes.length } });
}

async function forceRecover(s: Sheep): Promise<Reply> {
  await s.forceRecover();
  return ok();
}

async function getStoreList(_s: Sheep, h: RequestHeader): Promise<Reply> {
  const b = Buffer.from(STORE_DRIVERS.map((x) => x + ' ').join(''));
  return ok({ data: b.subarray(0, Math.min(b.length, h.dataLength)) });
}

async function statRecovery(s: Sheep): Promise<Reply> {
  return ok({ data: encodeRecoveryState(s.recovery.state) });
}

async function killNode(s: Sheep): Promise<Reply> {
  s.status = 'killed';
  setImmediate(() => s.onShutdown?.('killed'));
  return ok();
}

async function setRecover(s: Sheep, enable: boolean): Promise<Reply> {
  await s.cluster.notify({ t: 'recover', enable });
  return ok();
}

async function getVdiCopies(s: Sheep, h: RequestHeader): Promise<Reply> {
  const states = [...s.vdis.states.values()].sort((a, b) => a.vid - b.vid);
  if (states.length * SD_VDI_STATE_SIZE > h.dataLength) fail(Res.BUFFER_SMALL);
  const out = Buffer.alloc(states.length * SD_VDI_STATE_SIZE);
  states.forEach((st, i) => encodeVdiState({ ...st }, out, i * SD_VDI_STATE_SIZE));
  return ok({ data: out });
}

async function notifyVdiAdd(s: Sheep, h: RequestHeader): Promise<Reply> {
  const v = h.vdiState;
  if (!v.newVid) fail(Res.INVALID_PARMS);
  await s.cluster.notify({
    t: 'vdi_add', newVid: v.newVid, oldVid: v.oldVid, copies: v.copies || s.config.copies, copyPolicy: v.copies ? v.copyPolicy : s.config.copyPolicy,
    blockSizeShift: v.blockSizeShift || s.config.blockSizeShift, setBitmap: v.setBitmap !== 0, oldIsSnapshot: v.oldVid !== 0,
  });
  return ok();
}

async function notifyVdiDel(s: Sheep, _h: RequestHeader, data: Buffer): Promise<Reply> {
  if (data.length < 4) fail(Res.INVALID_PARMS);
  await s.cluster.notify({ t: 'vdi_del', vid: data.readUInt32LE(0) });
  return ok();
}

async function mdInfo(s: Sheep): Promise<Reply> {
  if (s.opts.gateway) fail(Res.UNKNOWN);
  if (s.md) return ok({ data: encodeMdInfo(await s.md.info()) });
  const u = await s.store.usage();
  return ok({ data: encodeMdInfo([{ idx: 0, free: u.free, used: u.used, path: s.objDir }]) });
}

/**
 * MD_PLUG / MD_UNPLUG: UNKNOWN when the disk count does not change (the
 * log says why). A node started with one path keeps its layout: no md.
 */
async function mdPlug(s: Sheep, data: Buffer, plug: boolean): Promise<Reply> {
  if (!s.md) fail(Res.NO_SUPPORT);
  const paths = decodeMdPaths(data).map((p) => (p.length > 1 ? path.resolve(p).replace(/\/+$/, '') : p));
  if (!paths.length) fail(Res.INVALID_PARMS);
  if (!(plug ? await s.md!.plug(paths) : await s.md!.unplug(paths))) fail(Res.UNKNOWN);
  return ok();
}

async function getHash(s: Sheep, h: RequestHeader): Promise<Reply> {
  // WILDCARD: the best copy, which may be one set aside (recovery compares those too)
  const stale = (h.flags & Flag.CMD_WILDCARD) !== 0 && s.store.bestCopy(h.obj.oid) === 'stale';
  // who asks, for the count of damaged copies: scrub asks for the version too, recovery for the best copy
  const by = h.dataLength >= 8 ? 'scrub' : (h.flags & Flag.CMD_WILDCARD) !== 0 ? 'recovery' : 'read';
  const digest = stale ? await s.store.staleSha1(h.obj.oid) : await s.store.sha1(h.obj.oid, by);
  // asked for 8 bytes (scrub): the live copy's version too; dog asks for none
  let data: Buffer | undefined;
  if (h.dataLength >= 8 && !stale) {
    data = Buffer.alloc(8);
    data.writeUInt32LE((await s.store.versionOf(h.obj.oid)) ?? 0, 0);
  }
  return ok({ hash: digest, data });
}

async function scrub(s: Sheep, h: RequestHeader): Promise<Reply> {
  const vid = Number(h.obj.oid & 0xffffffn);
  s.scrubber.start(h.obj.offset, vid);
  return ok();
}

async function scrubStatus(s: Sheep): Promise<Reply> {
  return ok({ data: Buffer.from(JSON.stringify(s.scrubber.status)) });
}

/** RECLAIM_STATUS: the deleted VDIs waiting to be reclaimed, and this node's progress (as much as data_length takes). */
async function reclaimStatus(s: Sheep, h: RequestHeader): Promise<Reply> {
  if (h.dataLength < RECLAIM_HEADER_SIZE) fail(Res.BUFFER_SMALL);
  return ok({ data: encodeReclaimStatus(s.reclaimer.status(), h.dataLength) });
}

async function farmSaveOp(s: Sheep, _h: RequestHeader, data: Buffer): Promise<Reply> {
  await farmSave(s, data);
  return ok();
}

async function farmReadOp(s: Sheep, h: RequestHeader): Promise<Reply> {
  const b = await farmRead(s, objFieldsToSha1(h.obj));
  if (b.length > h.dataLength) fail(Res.BUFFER_SMALL);
  return ok({ data: b });
}

async function farmStatOp(s: Sheep): Promise<Reply> {
  return ok({ data: await farmStat(s) });
}

async function farmDeleteOp(s: Sheep, _h: RequestHeader, data: Buffer): Promise<Reply> {
  await farmDelete(s, data);
  return ok();
}

async function stat(s: Sheep): Promise<Reply> {
  return ok({ data: encodeStat(s.stats) });
}

async function getLoglevel(): Promise<Reply> {
  const b = Buffer.alloc(4);
  b.writeInt32LE(LOG_LEVELS.indexOf(getLogLevel()));
  return ok({ data: b });
}

async function setLoglevel(_s: Sheep, _h: RequestHeader, data: Buffer): Promise<Reply> {
  if (data.length < 4) fail(Res.INVALID_PARMS);
  const l = data.readInt32LE(0);
  if (l < 0 || l > 7) fail(Res.INVALID_PARMS);
  setLogLevel(LOG_LEVELS[l]);
  return ok();
}

async function exist(s: Sheep, h: RequestHeader): Promise<Reply> {
  if (s.opts.gateway) fail(Res.NO_OBJ);
  // a striped object: this node's own strip, the one its place in the ring gives it (A.13)
  const ec = s.ecCode(h.obj.oid, h.obj.copyPolicy);
  let key = h.obj.oid;
  if (ec) {
    const idx = s.targets(h.obj.oid, ec.d + ec.p).findIndex((n) => sameNode(n, s.selfNode));
    if (idx < 0) return { result: Res.NO_OBJ };
    key = stripKey(h.obj.oid, idx);
  }
  return (await s.store.exists(key)) ? ok() : { result: Res.NO_OBJ };
}

async function alterClusterCopy(s: Sheep, h: RequestHeader): Promise<Reply> {
  const c = h.cluster;
  if (c.copyPolicy !== 0 || !c.copies || c.copies > SD_MAX_COPIES) fail(Res.INVALID_PARMS);
  // an erasure-coded default cannot become a copy count: its VDIs' objects are striped (A.1)
  if (s.config.copyPolicy !== 0) throw new SheepdogError(Res.INVALID_PARMS, 'the cluster\'s copy policy is erasure code; changing it is not supported');
  await s.cluster.notify({ t: 'alter_cluster_copy', copies: c.copies });
  return ok();
}

async function alterVdiCopy(s: Sheep, h: RequestHeader): Promise<Reply> {
  const v = h.vdiState;
  if (v.copyPolicy !== 0 || !v.copies || v.copies > SD_MAX_COPIES) fail(Res.INVALID_PARMS);
  if (!s.vdis.state(v.newVid)) fail(Res.NO_VDI);
  if (s.vdis.state(v.newVid)!.copyPolicy !== 0) throw new SheepdogError(Res.INVALID_PARMS, 'the VDI\'s copy policy is erasure code; changing it is not supported');
  await s.cluster.notify({ t: 'vdi_copies', vid: v.newVid, copies: v.copies, copyPolicy: 0, blockSizeShift: v.blockSizeShift });
  return ok();
}

async function repairReplica(s: Sheep, h: RequestHeader): Promise<Reply> {
  const f = h.forw;
  const host = addrToString(f.addr);
  const size = s.gw.sizeOf(f.oid);
  const c = new SheepClient({ host, port: f.port, timeout: 30_000 });
  try {
    // the copy with its version: a repaired replica must not look newer or older than its source
    const r = await c.request({ opcode: Op.FETCH_OBJ, epoch: s.epochNr, flags: Flag.CMD_RECOVERY, dataLength: size + FETCH_HEADER_SIZE, obj: { oid: f.oid } });
    const got = decodeFetched(r.data);
    await s.store.createFull(f.oid, size, got.data, got.version);
  } finally {
    c.close();
  }
  return ok();
}

async function oidsExist(s: Sheep, _h: RequestHeader, data: Buffer): Promise<Reply> {
  const missing: bigint[] = [];
  for (let i = 0; i + 8 <= data.length; i += 8) {
    const oid = data.readBigUInt64LE(i);
    if (s.opts.gateway || !(await s.store.exists(oid))) missing.push(oid);
  }
  if (!missing.length) return ok();
  const out = Buffer.alloc(missing.length * 8);
  missing.forEach((o, i) => out.writeBigUInt64LE(o, i * 8));
  return { result: Res.NO_OBJ, data: out };
}

async function getRecovery(s: Sheep): Promise<Reply> {
  return ok({ data: encodeThrottling(s.recoveryThrottle) });
}

async function setRecovery(s: Sheep, _h: RequestHeader, data: Buffer): Promise<Reply> {
  if (data.length < 24) fail(Res.INVALID_PARMS);
  // applied cluster-wide (and handed to joiners), so that a node that
  // joins later recovers at the pace the operator chose
  const t = decodeThrottling(data);
  // out of range: refused, the throttle stays as it was
  if (t.maxExecCount > RECOVERY_MAX_EXEC_COUNT_LIMIT || t.queueWorkInterval > BigInt(RECOVERY_INTERVAL_LIMIT_MS)) fail(Res.INVALID_PARMS);
  if (!s.ready || s.status === 'wait_format' || s.status === 'wait_join') s.recoveryThrottle = t;
  else await s.cluster.notify({ t: 'throttle', maxExecCount: t.maxExecCount, queueWorkInterval: t.queueWorkInterval, throttling: t.throttling });
  return ok();
}

async function setVnodes(s: Sheep, _h: RequestHeader, data: Buffer): Promise<Reply> {
  if (s.opts.gateway) fail(Res.GATEWAY_MODE);
  if (s.clusterFlags & ClusterFlag.AUTO_VNODES) fail(Res.INVALID_VNODES_STRATEGY);
  if (data.length < 4) fail(Res.INVALID_PARMS);
  const n = data.readInt32LE(0);
  if (n < 1 || n > 65535) fail(Res.INVALID_PARMS);
  await s.cluster.notify({ t: 'set_vnodes', vnodes: n });
  return ok();
}

async function getVnodes(s: Sheep): Promise<Reply> {
  const b = Buffer.alloc(4);
  b.writeInt32LE(s.selfNode.nrVnodes);
  return ok({ data: b });
}

async function getObjList(s: Sheep, h: RequestHeader): Promise<Reply> {
  const oids = h.flags & Flag.CMD_WILDCARD ? await s.store.staleList() : await s.store.list();
  if (oids.length * 8 > h.dataLength) fail(Res.BUFFER_SMALL);
  const out = Buffer.alloc(oids.length * 8);
  oids.forEach((o, i) => out.writeBigUInt64LE(o, i * 8));
  return ok({ data: out });
}

async function getEpoch(s: Sheep, h: RequestHeader): Promise<Reply> {
  const rec = s.epochs.get(h.obj.tgtEpoch);
  if (!rec) fail(Res.NO_TAG);
  const nodes = encodeNodes(rec!.nodes);
  const out = Buffer.alloc(nodes.length + 8);
  nodes.copy(out);
  out.writeBigInt64LE(BigInt(rec!.time), nodes.length);
  if (out.length > h.dataLength) fail(Res.BUFFER_SMALL);
  return ok({ data: out });
}

// ---- peer ops: store level, epoch checked ---------------------------------

/**
 * Older epoch: the sender must catch up (OLD_NODE_VER). Newer epoch: we
 * are behind; wait for the membership change to reach us, then serve.
 * Unless it is recovery's own traffic, an object this node is still
 * recovering is fetched first.
 */
async function checkPeerEpoch(s: Sheep, h: RequestHeader, object = true): Promise<void> {
  if (h.epoch > s.epochNr && !(await s.waitEpoch((e) => e >= h.epoch, 10_000))) fail(Res.NEW_NODE_VER);
  if (h.epoch < s.epochNr) fail(Res.OLD_NODE_VER);
  if (object && !(h.flags & Flag.CMD_RECOVERY)) {
    await s.ensureLocal(h.obj.oid);
    // the membership may have changed while the object was recovered: a
    // request of the old epoch must not land now (the sender retries)
    if (h.epoch !== s.epochNr) fail(Res.OLD_NODE_VER);
  }
}

/**
 * A peer write can wait long here (for the recovery of its object, for an
 * epoch): a sender that gave up on it meanwhile has told its client the
 * write failed, or sent it again, and the client may have written the same
 * bytes since. Landing now would put older bytes over newer ones.
 */
function senderWaits(from?: RequestOrigin): void {
  if (from?.gone?.()) fail(Res.NETWORK_ERROR);
}

/**
 * A write that landed after its epoch ended may have missed the new
 * epoch's recovery of the object here (a copy fetched from another replica
 * before the write reached that one, installed over ours, drops it): the
 * sender must send it again in the new epoch, where it waits for that
 * recovery.
 */
function landedInEpoch(s: Sheep, h: RequestHeader): void {
  if (!(h.flags & Flag.CMD_RECOVERY) && h.epoch !== s.epochNr) fail(Res.OLD_NODE_VER);
}

/**
 * The store key a peer request addresses: the object, or for a striped
 * object its strip ec_index (A.10), which must be one of its D+P.
 */
function peerKey(s: Sheep, h: RequestHeader): bigint {
  const o = h.obj;
  const ec = s.ecCode(o.oid, o.copyPolicy);
  if (!ec) return o.oid;
  if (o.ecIndex >= ec.d + ec.p) throw new SheepdogError(Res.INVALID_PARMS, `strip index ${o.ecIndex} of a ${ec.d}:${ec.p} object`);
  // framing bounded the range by the object; a strip file is 1/D of it, and its block sums follow its bytes
  const strip = stripFileSize(s.gw.sizeOf(o.oid), ec.d);
  if (o.offset + h.dataLength > strip) throw new SheepdogError(Res.INVALID_PARMS, `bytes ${o.offset}-${o.offset + h.dataLength - 1} are beyond a strip of ${strip}`);
  return stripKey(o.oid, o.ecIndex);
}

async function readPeer(s: Sheep, h: RequestHeader): Promise<Reply> {
  const key = peerKey(s, h);
  await checkPeerEpoch(s, h);
  s.stats.peerRead++;
  const o = h.obj;
  if (h.flags & Flag.CMD_WILDCARD && !(await s.store.exists(key))) return ok({ data: await s.store.staleRead(key, o.offset, h.dataLength) });
  return ok({ data: await s.store.read(key, o.offset, h.dataLength) });
}
/**
 * A snapshot's data is read-only on the replicas too: a gateway that has
 * not heard of a snapshot yet (its notice is on its way) must not write
 * into it; every replica must agree to a write, so one that knows suffices.
 */
function checkWritable(s: Sheep, oid: bigint): void {
  if (isDataObj(oid) && s.vdis.isSnapshot(oidToVid(oid))) fail(Res.READONLY);
}

async function writePeer(s: Sheep, h: RequestHeader, data: Buffer, from?: RequestOrigin): Promise<Reply> {
  const key = peerKey(s, h);
  await checkPeerEpoch(s, h);
  senderWaits(from);
  checkWritable(s, h.obj.oid);
  await s.store.write(key, h.obj.offset, data); // NO_OBJ if it is not here
  landedInEpoch(s, h);
  s.stats.peerWrite++;
  return ok();
}
async function createPeer(s: Sheep, h: RequestHeader, data: Buffer, from?: RequestOrigin): Promise<Reply> {
  const key = peerKey(s, h);
  await checkPeerEpoch(s, h);
  senderWaits(from);
  checkWritable(s, h.obj.oid);
  // a strip file holds 1/D of the object (A.4)
  const ec = s.ecCode(h.obj.oid, h.obj.copyPolicy);
  const size = ec ? stripFileSize(s.gw.sizeOf(h.obj.oid), ec.d) : s.gw.sizeOf(h.obj.oid);
  if (h.obj.offset + data.length > size) fail(Res.INVALID_PARMS);
  await s.store.create(key, size, h.obj.offset, data);
  landedInEpoch(s, h);
  s.stats.peerWrite++;
  return ok();
}
async function removePeer(s: Sheep, h: RequestHeader): Promise<Reply> {
  const ec = s.ecCode(h.obj.oid, h.obj.copyPolicy);
  await checkPeerEpoch(s, h);
  if (ec) await s.gw.stripes.removeLocal(h.obj.oid, ec);
  else await s.store.remove(h.obj.oid);
  s.tombstones.add(h.obj.oid, h.epoch || s.epochNr);
  s.stats.peerRemove++;
  return ok();
}

/**
 * EC_STRIPS: this node's strips with versions, and its tombstones of
 * striped objects (ec/recovery-ec.ts), in oid order after obj.cow_oid (a
 * cursor, as OBJ_COPIES's), as many whole objects' records as fit.
 */
let stripsCache: { epoch: number; at: number; records: Awaited<ReturnType<Sheep['stripRecords']>> } | undefined;
async function ecStrips(s: Sheep, h: RequestHeader): Promise<Reply> {
  await checkPeerEpoch(s, h, false);
  const after = h.obj.cowOid;
  if (after === 0n || !stripsCache || stripsCache.epoch !== s.epochNr || Date.now() - stripsCache.at > 30_000) {
    const records = await s.stripRecords();
    records.sort((a, b) => (a.oid < b.oid ? -1 : a.oid > b.oid ? 1 : a.idx - b.idx));
    stripsCache = { epoch: s.epochNr, at: Date.now(), records };
  }
  const all = stripsCache.records;
  let lo = 0, hi = all.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (all[mid].oid <= after) lo = mid + 1; else hi = mid; }
  // an object has at most 31 strips and a tombstone here: a page holds at least that, and never half an object
  const room = Math.floor((h.dataLength - STRIPS_HEADER_SIZE) / STRIP_RECORD_SIZE);
  if (room < 32) fail(Res.BUFFER_SMALL);
  let end = Math.min(all.length, lo + room);
  if (end < all.length) while (end > lo && all[end].oid === all[end - 1].oid) end--;
  return ok({ data: encodeStripRecords(all.slice(lo, end), end < all.length) });
}

/**
 * OBJ_COPIES: this node's copies with versions, in oid order after
 * obj.cow_oid (a cursor: 0 from the start), as many as fit data_length; the
 * header says whether more follow. One listing serves a requester's pages.
 */
let copiesCache: { epoch: number; at: number; records: Awaited<ReturnType<Sheep['copyRecords']>> } | undefined;
async function objCopies(s: Sheep, h: RequestHeader): Promise<Reply> {
  await checkPeerEpoch(s, h, false);
  const after = h.obj.cowOid;
  if (after === 0n || !copiesCache || copiesCache.epoch !== s.epochNr || Date.now() - copiesCache.at > 30_000) {
    const records = await s.copyRecords();
    records.sort((a, b) => (a.oid < b.oid ? -1 : a.oid > b.oid ? 1 : 0));
    copiesCache = { epoch: s.epochNr, at: Date.now(), records };
  }
  const all = copiesCache.records;
  let i = 0;
  if (after !== 0n) {
    let lo = 0, hi = all.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (all[mid].oid <= after) lo = mid + 1; else hi = mid; }
    i = lo;
  }
  const room = Math.max(1, Math.floor((h.dataLength - COPIES_HEADER_SIZE) / COPY_RECORD_SIZE));
  const page = all.slice(i, i + room);
  return ok({ data: encodeObjectCopies({ born: s.born, records: page, more: i + room < all.length }) });
}

/**
 * FETCH_OBJ: a copy with its version (WILDCARD: the one set aside when there
 * is no live one): the whole of it, or data_length - 8 bytes from obj.offset
 * (the slices a farm node's recovery lacks).
 */
async function fetchObj(s: Sheep, h: RequestHeader): Promise<Reply> {
  await checkPeerEpoch(s, h);
  const size = s.gw.sizeOf(h.obj.oid);
  const off = h.obj.offset;
  if (h.dataLength <= FETCH_HEADER_SIZE) fail(Res.BUFFER_SMALL);
  if (off >= size) fail(Res.INVALID_PARMS);
  const len = Math.min(size - off, h.dataLength - FETCH_HEADER_SIZE);
  const c = await s.store.readCopy(h.obj.oid, size, (h.flags & Flag.CMD_WILDCARD) !== 0).catch((e) => {
    // a recovery asks for copies this node listed: why one was not here is worth a line
    if (e instanceof SheepdogError && e.result === Res.NO_OBJ) log.debug(`FETCH_OBJ ${oidToHex(h.obj.oid)} (epoch ${h.epoch}, ours ${s.epochNr}): no copy here (${s.store.bestCopy(h.obj.oid) ?? 'neither live nor set aside'})`);
    throw e;
  });
  const data = Buffer.allocUnsafe(FETCH_HEADER_SIZE + len);
  encodeFetchHeader(c.version, c.stale ? CopyFlag.STALE : 0, data);
  c.data.copy(data, FETCH_HEADER_SIZE, off, off + len);
  return ok({ data });
}

/** SLICE_HASHES: the SHA-1 of each 128 KiB slice of a copy, with its version (WILDCARD as FETCH_OBJ). */
async function sliceHashes(s: Sheep, h: RequestHeader): Promise<Reply> {
  await checkPeerEpoch(s, h);
  const size = s.gw.sizeOf(h.obj.oid);
  if (h.dataLength < sliceHashesSize(size)) fail(Res.BUFFER_SMALL);
  const c = await s.store.readCopy(h.obj.oid, size, (h.flags & Flag.CMD_WILDCARD) !== 0);
  return ok({ data: encodeSliceHashes(c.version, c.stale ? CopyFlag.STALE : 0, (await sliceHashesOf(c.data)) as Buffer[]) });
}

/** CHECK_HELD: which of the (oid, version) records this node holds as current copies at that version or newer. */
async function checkHeld(s: Sheep, h: RequestHeader, data: Buffer): Promise<Reply> {
  await checkPeerEpoch(s, h, false);
  const held = await s.heldOf(decodeHeldQuery(data));
  return ok({ data: encodeOids(held) });
}

async function decrefObj(s: Sheep, h: RequestHeader): Promise<Reply> {
  const r = h.ref;
  await s.gw.decref(oidToVid(r.oid), Number(r.oid & 0xffffffffn), r.generation, r.count);
  return ok();
}

async function getClusterDefault(s: Sheep): Promise<Reply> {
  return ok({ clusterDefault: { nrCopies: s.config.copies, copyPolicy: s.config.copyPolicy, blockSizeShift: s.formatted ? s.config.blockSizeShift : 0 } });
}

const noop = async (): Promise<Reply> => ok();
const unsupported = async (): Promise<Reply> => ({ result: Res.NO_SUPPORT });

export const OPS = new Map<number, OpDef>([
  [Op.CREATE_AND_WRITE_OBJ, { name: 'CREATE_AND_WRITE_OBJ', kind: 'gateway', handler: createAndWrite }],
  [Op.READ_OBJ, { name: 'READ_OBJ', kind: 'gateway', handler: readObj }],
  [Op.WRITE_OBJ, { name: 'WRITE_OBJ', kind: 'gateway', handler: writeObj }],
  [Op.REMOVE_OBJ, { name: 'REMOVE_OBJ', kind: 'gateway', handler: removeObj }],
  [Op.DISCARD_OBJ, { name: 'DISCARD_OBJ', kind: 'local', handler: discardObj }],
  [Op.NEW_VDI, { name: 'NEW_VDI', kind: 'cluster', handler: newVdi }],
  [Op.LOCK_VDI, { name: 'LOCK_VDI', kind: 'cluster', handler: lockVdi }],
  [Op.RELEASE_VDI, { name: 'RELEASE_VDI', kind: 'cluster', handler: releaseVdi }],
  [Op.GET_VDI_INFO, { name: 'GET_VDI_INFO', kind: 'cluster', handler: getVdiInfo }],
  [Op.READ_VDIS, { name: 'READ_VDIS', kind: 'local', force: true, handler: (s, h) => readVdis(s, h, s.vdis.inUse.bytes) }],
  [Op.FLUSH_VDI, { name: 'FLUSH_VDI', kind: 'local', handler: flushVdiOp }],
  [Op.DEL_VDI, { name: 'DEL_VDI', kind: 'cluster', handler: delVdi }],
  [Op.GET_CLUSTER_DEFAULT, { name: 'GET_CLUSTER_DEFAULT', kind: 'local', force: true, handler: getClusterDefault }],
  [Op.GET_NODE_LIST, { name: 'GET_NODE_LIST', kind: 'local', force: true, handler: getNodeList }],
  [Op.MAKE_FS, { name: 'MAKE_FS', kind: 'cluster', force: true, handler: makeFs }],
  [Op.SHUTDOWN, { name: 'SHUTDOWN', kind: 'cluster', force: true, handler: shutdown }],
  [Op.STAT_SHEEP, { name: 'STAT_SHEEP', kind: 'local', handler: statSheep }],
  [Op.STAT_CLUSTER, { name: 'STAT_CLUSTER', kind: 'local', force: true, handler: statCluster }],
  [Op.GET_VDI_ATTR, { name: 'GET_VDI_ATTR', kind: 'cluster', handler: getVdiAttr }],
  [Op.FORCE_RECOVER, { name: 'FORCE_RECOVER', kind: 'cluster', force: true, handler: forceRecover }],
  [Op.GET_STORE_LIST, { name: 'GET_STORE_LIST', kind: 'local', force: true, handler: getStoreList }],
  [Op.CLEANUP, { name: 'CLEANUP', kind: 'cluster', force: true, handler: noop }],
  [Op.TRACE_STATUS, { name: 'TRACE_STATUS', kind: 'local', force: true, handler: unsupported }],
  [Op.TRACE_READ_BUF, { name: 'TRACE_READ_BUF', kind: 'local', force: true, handler: unsupported }],
  [Op.TRACE_ENABLE, { name: 'TRACE_ENABLE', kind: 'local', force: true, handler: unsupported }],
  [Op.TRACE_DISABLE, { name: 'TRACE_DISABLE', kind: 'local', force: true, handler: unsupported }],
  [Op.STAT_RECOVERY, { name: 'STAT_RECOVERY', kind: 'local', handler: statRecovery }],
  [Op.FLUSH_DEL_CACHE, { name: 'FLUSH_DEL_CACHE', kind: 'local', handler: noop }],
  [Op.NOTIFY_VDI_DEL, { name: 'NOTIFY_VDI_DEL', kind: 'cluster', force: true, handler: notifyVdiDel }],
  [Op.KILL_NODE, { name: 'KILL_NODE', kind: 'local', force: true, handler: killNode }],
  // in any state: collie cluster format asks every node what it holds before wiping it
  [Op.GET_OBJ_LIST, { name: 'GET_OBJ_LIST', kind: 'local', force: true, handler: getObjList }],
  [Op.GET_EPOCH, { name: 'GET_EPOCH', kind: 'local', handler: getEpoch }],
  [Op.CREATE_AND_WRITE_PEER, { name: 'CREATE_AND_WRITE_PEER', kind: 'peer', handler: createPeer }],
  [Op.READ_PEER, { name: 'READ_PEER', kind: 'peer', handler: readPeer }],
  [Op.WRITE_PEER, { name: 'WRITE_PEER', kind: 'peer', handler: writePeer }],
  [Op.REMOVE_PEER, { name: 'REMOVE_PEER', kind: 'peer', handler: removePeer }],
  [Op.ENABLE_RECOVER, { name: 'ENABLE_RECOVER', kind: 'cluster', handler: (s) => setRecover(s, true) }],
  [Op.DISABLE_RECOVER, { name: 'DISABLE_RECOVER', kind: 'cluster', handler: (s) => setRecover(s, false) }],
  [Op.GET_VDI_COPIES, { name: 'GET_VDI_COPIES', kind: 'local', force: true, handler: getVdiCopies }],
  [Op.COMPLETE_RECOVERY, { name: 'COMPLETE_RECOVERY', kind: 'cluster', force: true, handler: noop }],
  [Op.NOTIFY_VDI_ADD, { name: 'NOTIFY_VDI_ADD', kind: 'cluster', force: true, handler: notifyVdiAdd }],
  [Op.DELETE_CACHE, { name: 'DELETE_CACHE', kind: 'cluster', handler: deleteCacheOp }],
  [Op.GET_CACHE_INFO, { name: 'GET_CACHE_INFO', kind: 'local', handler: getCacheInfoOp }],
  [Op.CACHE_PURGE, { name: 'CACHE_PURGE', kind: 'local', handler: cachePurgeOp }],
  [Op.MD_INFO, { name: 'MD_INFO', kind: 'local', handler: mdInfo }],
  [Op.MD_PLUG, { name: 'MD_PLUG', kind: 'local', handler: (s, _h, d) => mdPlug(s, d, true) }],
  [Op.MD_UNPLUG, { name: 'MD_UNPLUG', kind: 'local', handler: (s, _h, d) => mdPlug(s, d, false) }],
  [Op.GET_HASH, { name: 'GET_HASH', kind: 'local', handler: getHash }],
  [Op.REWEIGHT, { name: 'REWEIGHT', kind: 'cluster', handler: noop }],
  [Op.STAT, { name: 'STAT', kind: 'local', handler: stat }],
  [Op.GET_LOGLEVEL, { name: 'GET_LOGLEVEL', kind: 'local', force: true, handler: getLoglevel }],
  [Op.SET_LOGLEVEL, { name: 'SET_LOGLEVEL', kind: 'local', force: true, handler: setLoglevel }],
  [Op.NFS_CREATE, { name: 'NFS_CREATE', kind: 'local', handler: unsupported }],
  [Op.NFS_DELETE, { name: 'NFS_DELETE', kind: 'local', handler: unsupported }],
  [Op.EXIST, { name: 'EXIST', kind: 'local', force: true, handler: exist }],
  [Op.CLUSTER_INFO, { name: 'CLUSTER_INFO', kind: 'local', force: true, handler: clusterInfo }],
  [Op.ALTER_CLUSTER_COPY, { name: 'ALTER_CLUSTER_COPY', kind: 'cluster', handler: alterClusterCopy }],
  [Op.ALTER_VDI_COPY, { name: 'ALTER_VDI_COPY', kind: 'cluster', handler: alterVdiCopy }],
  [Op.DECREF_OBJ, { name: 'DECREF_OBJ', kind: 'gateway', handler: decrefObj }],
  [Op.DECREF_PEER, { name: 'DECREF_PEER', kind: 'peer', handler: decrefObj }],
  [Op.REPAIR_REPLICA, { name: 'REPAIR_REPLICA', kind: 'local', handler: repairReplica }],
  [Op.OIDS_EXIST, { name: 'OIDS_EXIST', kind: 'local', force: true, handler: oidsExist }],
  [Op.READ_DEL_VDIS, { name: 'READ_DEL_VDIS', kind: 'local', force: true, handler: (s, h) => readVdis(s, h, s.vdis.deleted.bytes) }],
  [Op.GET_RECOVERY, { name: 'GET_RECOVERY', kind: 'local', force: true, handler: getRecovery }],
  [Op.SET_RECOVERY, { name: 'SET_RECOVERY', kind: 'local', force: true, handler: setRecovery }],
  [Op.SET_VNODES, { name: 'SET_VNODES', kind: 'local', handler: setVnodes }],
  [Op.GET_VNODES, { name: 'GET_VNODES', kind: 'local', handler: getVnodes }],
  [Op.OBJ_COPIES, { name: 'OBJ_COPIES', kind: 'peer', handler: objCopies }],
  [Op.EC_STRIPS, { name: 'EC_STRIPS', kind: 'peer', handler: ecStrips }],
  [Op.FETCH_OBJ, { name: 'FETCH_OBJ', kind: 'peer', handler: fetchObj }],
  [Op.SLICE_HASHES, { name: 'SLICE_HASHES', kind: 'peer', handler: sliceHashes }],
  [Op.CHECK_HELD, { name: 'CHECK_HELD', kind: 'peer', handler: checkHeld }],
  [Op.SCRUB, { name: 'SCRUB', kind: 'local', handler: scrub }],
  [Op.SCRUB_STATUS, { name: 'SCRUB_STATUS', kind: 'local', force: true, handler: scrubStatus }],
  [Op.RECLAIM_STATUS, { name: 'RECLAIM_STATUS', kind: 'local', force: true, handler: reclaimStatus }],
  [Op.FARM_SAVE, { name: 'FARM_SAVE', kind: 'local', handler: farmSaveOp }],
  [Op.FARM_READ, { name: 'FARM_READ', kind: 'local', force: true, handler: farmReadOp }],
  [Op.FARM_DELETE, { name: 'FARM_DELETE', kind: 'local', force: true, handler: farmDeleteOp }],
  [Op.FARM_STAT, { name: 'FARM_STAT', kind: 'local', force: true, handler: farmStatOp }],
]);

/** Fills in header-level checks and runs the handler; never throws. */
export async function execute(s: Sheep, h: RequestHeader, data: Buffer, from?: RequestOrigin): Promise<Reply> {
  if (h.opcode >= 0x80 ? h.protoVer !== SD_SHEEP_PROTO_VER : h.protoVer > 0x02) return { result: Res.VER_MISMATCH };
  const def = OPS.get(h.opcode);
  if (!def) return { result: Res.INVALID_PARMS };
  if (from && ruleOf(h.opcode, true).access === 'restricted' && !from.allowed()) {
    from.refused?.(h.opcode);
    return { result: Res.NOT_PERMITTED };
  }
  try {
    const bad = check(s, h, data, true);
    if (bad !== undefined) return { result: bad };
    s.gate(!!def.force, def.kind === 'cluster');
    // cut off from the membership engine: nothing is served until we know we are still a member
    const held = def.force ? undefined : s.membershipHeld();
    if (held) await held;
    if (def.kind === 'gateway') s.stats.gwTotal++;
    if (def.kind === 'peer') s.stats.peerTotal++;
    return await def.handler(s, h, data, from);
  } catch (e) {
    if (e instanceof SheepdogError) {
      if (e.result === Res.HALT || (e.result === Res.NO_OBJ && def.kind === 'gateway')) log.debug(`${def.name} ${h.obj.oid.toString(16)}: ${e.message}`);
      return { result: e.result };
    }
    log.err(`${def.name} failed: ${(e as Error).stack ?? e}`);
    return { result: Res.SYSTEM_ERROR };
  }
}

