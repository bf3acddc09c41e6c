// collie cluster snapshot save|list|load|show|delete: cluster snapshots in a
// local repository in dog 1.0's exact format (common/src/farm.ts,
// farm-and-backup.md Part A), with dog's texts and exit codes. Unlike dog:
// load checks the whole repository (every file present, every hash right)
// before it formats anything; list and show on a damaged repository fail
// with a message (dog crashes); `delete` exists; save and load show progress.
import {
  Op, Flag, Res, resultMessage, decodeInodeHeader, InodeHeader, vidToVdiOid, vidToDataOid, vidToVmstateOid, oidToVid,
  isVdiObj, SD_INODE_SIZE, SD_INODE_HEADER_SIZE, SD_VDI_BITMAP_SIZE, SD_CLUSTER_INFO_SIZE, MAX_DATA_OBJS,
  decodeClusterInfo, liveVids, FarmRepo, FarmError, FarmTrunkEntry, FarmLogRecord, encodeFarmTrunk,
  decodeFarmSliceIndex, findFarmRecord, farmTagStartsWithNumber, FarmLogHeader, SdNode, ConnectionError,
  parseFarmLog, decodeFarmTrunk, sha1ToObjFields, FarmStat, farmStatText,
} from '@sheepdog/common';
import type { Opts } from '../cli.js';
import { Ctx, readObject, ObjectError, Window, nodeName } from '../conn.js';
import { CliError, EXIT_SUCCESS, EXIT_SYSFAIL, EXIT_USAGE } from '../exitcodes.js';
import { Progress } from '../progress.js';
import { formatCluster } from './cluster.js';
import { doVdiCreate } from './vdi.js';
import { scanVdis, isSnapshot } from '../scan.js';

const WINDOW = 8;

function sysfail(msg: string): never {
  throw new CliError(EXIT_SYSFAIL, msg);
}

/** Open (and create the skeleton of) PATH, as every dog subcommand does. */
async function openRepo(dir: string, then: string): Promise<FarmRepo> {
  const repo = new FarmRepo(dir);
  try {
    await repo.init();
  } catch (e) {
    if (e instanceof FarmError) sysfail(`${e.message}\nFail to init farm.\n${then}`);
    throw e;
  }
  return repo;
}

async function readLog(repo: FarmRepo, then: string) {
  try {
    return await repo.readLog();
  } catch (e) {
    if (e instanceof FarmError) sysfail(`${e.message}\n${then}`);
    throw e;
  }
}

const objSize = (shift: number) => 2 ** (shift || 22);

// ---- save --------------------------------------------------------------------

interface Planned {
  oid: bigint;
  copies: number;
  copyPolicy: number;
  blockSizeShift: number;
  size: number;
}

export async function snapshotSave(ctx: Ctx, args: string[]): Promise<number> {
  const [tag, dir, ...names] = args;
  if (farmTagStartsWithNumber(tag)) {
    ctx.err('Tag should not start with number.');
    return EXIT_USAGE;
  }
  if (!dir) {
    if (await farmCluster(ctx)) return saveInPlace(ctx, tag, names);
    ctx.err('Please specify the path to save snapshot.');
    return EXIT_USAGE;
  }
  const failLine = `Fail to save snapshot to path: ${dir}.`;
  const repo = await openRepo(dir, failLine);
  const log = await readLog(repo, failLine);
  const storedTag = Buffer.from(tag, 'utf8').subarray(0, 255).toString('utf8');
  if (log.records.some((r) => r.tag === storedTag)) {
    sysfail(`Snapshot tag has already been used for another snapshot, please, use another one.\n${failLine}`);
  }

  // what to save: every snapshot VDI (optionally only the named ones), its data and vmstate objects
  const bm = async (opcode: number) => {
    const r = await ctx.execOrFail({ opcode, dataLength: SD_VDI_BITMAP_SIZE });
    if (r.rsp.result !== Res.SUCCESS) sysfail(`Failed to read VDIs: ${resultMessage(r.rsp.result)}\n${failLine}`);
    return r.data;
  };
  const vids = liveVids(await bm(Op.READ_VDIS), await bm(Op.READ_DEL_VDIS));
  const plan = new Map<bigint, Planned>();
  let found = 0;
  for (const vid of vids) {
    let inode: Buffer;
    try {
      inode = await readObject(ctx, vidToVdiOid(vid), SD_INODE_SIZE, 0, true);
    } catch (e) {
      if (e instanceof ObjectError) sysfail(`Fail to read inode of VDI ${vid.toString(16)}: ${resultMessage(e.result)}\n${failLine}`);
      throw e;
    }
    const h = decodeInodeHeader(inode);
    if (h.snapCtime === 0n) continue;
    if (names.length && !names.includes(h.name)) continue;
    if (h.storePolicy !== 0) {
      sysfail(`${h.name} (VDI ${vid.toString(16)}) is a hyper volume: this collie does not save those (dog 1.0 saves them wrongly)\n${failLine}`);
    }
    if (h.name) found++;
    const e = { copies: h.nrCopies, copyPolicy: h.copyPolicy, blockSizeShift: h.blockSizeShift };
    const os = objSize(h.blockSizeShift);
    const add = (oid: bigint, size: number) => { if (!plan.has(oid)) plan.set(oid, { oid, ...e, size }); };
    add(vidToVdiOid(vid), SD_INODE_SIZE);
    const count = Number((h.vdiSize + BigInt(os) - 1n) / BigInt(os));
    for (let i = 0; i < Math.min(count, MAX_DATA_OBJS); i++) {
      const owner = inode.readUInt32LE(SD_INODE_HEADER_SIZE + 4 * i);
      if (owner) add(vidToDataOid(owner, i), os);
    }
    const nvm = Number((h.vmStateSize + BigInt(os) - 1n) / BigInt(os));
    for (let i = 0; i < nvm; i++) add(vidToVmstateOid(vid, i), os);
  }
  if (!found) {
    sysfail('Cannot execute. It may be caused by:\n' + (names.length
      ? '1. The specified VDIs are not found.\n2. The specified VDIs don\'t have snapshots.\n'
      : '1. The cluster is empty.\n2. All VDIs of the cluster don\'t have snapshots.\n') + failLine);
  }
  if (!log.header || !log.records.length) {
    const r = await ctx.execOrFail({ opcode: Op.CLUSTER_INFO, dataLength: SD_CLUSTER_INFO_SIZE });
    if (r.rsp.result !== Res.SUCCESS) sysfail(`${resultMessage(r.rsp.result)}\n${failLine}`);
    const ci = decodeClusterInfo(r.data);
    await repo.writeLogHeader({ copies: ci.nrCopies, copyPolicy: ci.copyPolicy, blockSizeShift: ci.blockSizeShift || 22 });
  }

  // ascending oid order, as dog without -m
  const order = [...plan.values()].sort((a, b) => (a.oid < b.oid ? -1 : a.oid > b.oid ? 1 : 0));
  const total = order.reduce((s, p) => s + BigInt(p.size), 0n);
  const progress = new Progress(total);
  let done = 0n;
  const entries = new Map<bigint, FarmTrunkEntry>();
  const w = new Window(WINDOW);
  for (const p of order) {
    await w.add(async () => {
      let data: Buffer;
      try {
        data = await readObject(ctx, p.oid, p.size, 0, true);
      } catch (e) {
        if (e instanceof ObjectError) sysfail(`Fail to save object, oid ${p.oid.toString(16)}: ${resultMessage(e.result)}\n${failLine}`);
        throw e;
      }
      const sha1 = await repo.putObject(data);
      entries.set(p.oid, { oid: p.oid, copies: p.copies, copyPolicy: p.copyPolicy, blockSizeShift: p.blockSizeShift, sha1 });
      done += BigInt(p.size);
      progress.update(done);
    });
    if (w.failed) break;
  }
  await w.drain();
  progress.finish();
  const trunk = await repo.put(encodeFarmTrunk(order.map((p) => entries.get(p.oid)!)));
  await repo.appendLog({ idx: log.records.length + 1, tag: storedTag, time: BigInt(Math.floor(Date.now() / 1000)), trunk });
  return EXIT_SUCCESS;
}

/**
 * On a farm cluster: every node saves the snapshot objects it holds into its
 * own repository (no object crosses the network), under one tag and time.
 */
async function saveInPlace(ctx: Ctx, tag: string, names: string[]): Promise<number> {
  const failLine = 'Fail to save snapshot in the cluster.';
  const storedTag = Buffer.from(tag, 'utf8').subarray(0, 255).toString('utf8');
  if (names.length) sysfail(`Saving only some VDIs is not supported in place: give a PATH\n${failLine}`);
  const { merged } = await clusterLogs(ctx, failLine);
  if (merged.some((r) => r.tag === storedTag)) {
    sysfail(`Snapshot tag has already been used for another snapshot, please, use another one.\n${failLine}`);
  }
  const snaps = (await scanVdis(ctx, true)).filter((v) => isSnapshot(v.header));
  if (!snaps.length) {
    sysfail(`Cannot execute. It may be caused by:\n1. The cluster is empty.\n2. All VDIs of the cluster don't have snapshots.\n${failLine}`);
  }
  if (snaps.some((v) => v.header.storePolicy !== 0)) sysfail(`hyper volumes cannot be saved by this collie\n${failLine}`);
  // what every node saves of what it holds: each snapshot's inode and objects,
  // and the objects of the VDIs (ancestors, deleted ones too) they refer to
  const vids = new Map<number, number>();
  for (const v of snaps) {
    vids.set(v.vid, 0x80000000 | v.vid);
    for (const [, owner] of v.index!.entries()) if (!vids.has(owner)) vids.set(owner, owner);
  }
  const payload = Buffer.alloc(264 + 4 * vids.size);
  payload.write(storedTag, 0, 'utf8');
  payload.writeBigUInt64LE(BigInt(Math.floor(Date.now() / 1000)), 256);
  let at = 264;
  for (const v of vids.values()) { payload.writeUInt32LE(v >>> 0, at); at += 4; }
  const results = await Promise.all(ctx.nodes.filter((n) => n.nrVnodes > 0).map(async (n) => {
    const r = await ctx.execOrFail({ opcode: Op.FARM_SAVE, flags: Flag.CMD_WRITE, dataLength: payload.length }, payload, ctx.nodeTarget(n));
    return r.rsp.result === Res.SUCCESS ? '' : `${nodeName(n)}: ${resultMessage(r.rsp.result)}`;
  }));
  const bad = results.filter(Boolean);
  if (bad.length) sysfail(`${bad.join('\n')}\n${failLine}`);
  let missing: string[];
  try {
    missing = await checkInPlace(ctx, storedTag, failLine);
  } catch (e) {
    if (!(e instanceof FarmError)) throw e;
    missing = [e.message];
  }
  if (missing.length) {
    // not a snapshot that could be loaded: take it back from every node
    await deleteInPlace(ctx, storedTag);
    sysfail(`${missing.slice(0, 10).join(' is on no node\n')} is on no node (${missing.length} object(s); is the cluster recovering?)\n` +
      `the snapshot was not kept\n${failLine}`);
  }
  return EXIT_SUCCESS;
}

/** The objects an inode refers to: itself, its data objects (maybe its ancestors'), its vmstate. */
function inodeRefs(oid: bigint, h: InodeHeader, data: Buffer): bigint[] {
  const os = objSize(h.blockSizeShift);
  const count = Math.min(MAX_DATA_OBJS, Number((h.vdiSize + BigInt(os) - 1n) / BigInt(os)),
    Math.floor((data.length - SD_INODE_HEADER_SIZE) / 4));
  const refs = [oid];
  for (let i = 0; i < count; i++) {
    const owner = data.readUInt32LE(SD_INODE_HEADER_SIZE + 4 * i);
    if (owner) refs.push(vidToDataOid(owner, i));
  }
  const nvm = Number((h.vmStateSize + BigInt(os) - 1n) / BigInt(os));
  for (let i = 0; i < nvm; i++) refs.push(vidToVmstateOid(oidToVid(oid), i));
  return refs;
}

/**
 * After an in-place save: every object the saved inodes refer to must be on
 * some node's farm (a node still recovering may not hold its copies yet).
 */
async function checkInPlace(ctx: Ctx, tag: string, then: string): Promise<string[]> {
  const src = await clusterSource(ctx, tag, then);
  const have = new Set(src.trunk.map((t) => t.oid));
  const missing: string[] = [];
  for (const e of src.trunk) {
    if (!isVdiObj(e.oid)) continue;
    const data = await getObj(src, e.sha1);
    const h = decodeInodeHeader(data);
    for (const r of inodeRefs(e.oid, h, data)) if (!have.has(r)) missing.push(`object ${r.toString(16).padStart(16, '0')} of ${h.name}`);
  }
  return missing;
}

// ---- list ----------------------------------------------------------------------

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const p2 = (n: number) => String(n).padStart(2, '0');

/** ctime(3) without its newline: `%a %b %e %H:%M:%S %Y` in local time. */
export function ctimeText(sec: bigint): string {
  const d = new Date(Number(sec) * 1000);
  return `${DAYS[d.getDay()]} ${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ` +
    `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())} ${d.getFullYear()}`;
}

export async function snapshotList(ctx: Ctx, args: string[]): Promise<number> {
  const dir = args[0];
  if (!dir) {
    if (await farmCluster(ctx)) {
      // in place: the snapshots of every node's farm, merged by tag
      const { merged } = await clusterLogs(ctx, 'Fail to list snapshot.');
      let s = 'Index\t\tTag\t\tSnapshot Time\n';
      for (const r of merged) s += `${r.idx}\t\t${r.tag}\t\t${ctimeText(r.time)}\n`;
      ctx.out(s);
      if (ctx.verbose) {
        // every node's farm, added up
        const sum: FarmStat = { snapshots: merged.length, logical: 0, files: 0, stored: 0 };
        for (const n of ctx.nodes.filter((x) => x.nrVnodes > 0)) {
          const st = await nodeFarmStat(ctx, n);
          if (!st) continue;
          sum.logical += st.logical;
          sum.files += st.files;
          sum.stored += st.stored;
        }
        ctx.out(`\n${farmStatText(sum)}\n`);
      }
      return EXIT_SUCCESS;
    }
    ctx.err('Please specify the path to list snapshot.');
    return EXIT_USAGE;
  }
  const repo = await openRepo(dir, 'Fail to list snapshot.');
  const log = await readLog(repo, 'Fail to list snapshot.');
  let s = 'Index\t\tTag\t\tSnapshot Time\n';
  for (const r of log.records) s += `${r.idx}\t\t${r.tag}\t\t${ctimeText(r.time)}\n`;
  ctx.out(s);
  if (ctx.verbose) await dedupReport(ctx, repo);
  return EXIT_SUCCESS;
}

/**
 * collie -v cluster snapshot list (not in dog): what the snapshots hold
 * against what the repository stores.
 */
async function dedupReport(ctx: Ctx, repo: FarmRepo): Promise<void> {
  try {
    ctx.out(`\n${farmStatText(await repo.stat())}\n`);
  } catch (e) {
    if (e instanceof FarmError) sysfail(`${e.message}\nFail to list snapshot.`);
    throw e;
  }
}

/** FARM_STAT of one node (undefined: it did not answer). */
export async function nodeFarmStat(ctx: Ctx, n: SdNode): Promise<FarmStat | undefined> {
  try {
    const r = await ctx.execOrFail({ opcode: Op.FARM_STAT, dataLength: 4096 }, undefined, ctx.nodeTarget(n));
    return r.rsp.result === Res.SUCCESS ? JSON.parse(r.data.toString()) as FarmStat : undefined;
  } catch (e) {
    if (e instanceof CliError || e instanceof ConnectionError) return undefined;
    throw e;
  }
}

// ---- sources: a repository directory, or the farms of the cluster's nodes ----------------

/** One snapshot to show or load: its trunk, and where its content files come from (checked). */
interface Source {
  header: FarmLogHeader;
  rec: FarmLogRecord;
  trunk: FarmTrunkEntry[];
  get(sha1: Buffer): Promise<Buffer>;
  /** in place: objects may be on no node (one lost with its farm): check what the inodes refer to */
  inPlace: boolean;
}

async function getObj(src: Source, sha1: Buffer): Promise<Buffer> {
  const slices = decodeFarmSliceIndex(await src.get(sha1));
  return Buffer.concat(await Promise.all(slices.map((sl) => src.get(sl))));
}

async function localSource(dir: string, arg: string, then: string): Promise<Source> {
  const repo = await openRepo(dir, then);
  const log = await readLog(repo, then);
  const rec = findFarmRecord(log.records, arg);
  if (!rec) sysfail(`Snapshot index or tag does not exist.\n${then}`);
  if (!log.header) sysfail(then);
  let trunk: FarmTrunkEntry[];
  try {
    trunk = await repo.getTrunk(rec.trunk);
  } catch (e) {
    if (e instanceof FarmError) sysfail(`${e.message}\nfailed to read trunk\n${then}.\n${then}`);
    throw e;
  }
  return { header: log.header, rec, trunk, get: (h) => repo.get(h), inPlace: false };
}

/** Is the cluster formatted with the farm store? (loads the node list if needed) */
async function farmCluster(ctx: Ctx): Promise<boolean> {
  if (!ctx.nodes.length) await ctx.loadNodeList();
  const r = await ctx.execOrFail({ opcode: Op.CLUSTER_INFO, dataLength: SD_CLUSTER_INFO_SIZE });
  return r.rsp.result === Res.SUCCESS && decodeClusterInfo(r.data).defaultStore === 'farm';
}

const ZERO_SHA1 = Buffer.alloc(20);
const FARM_READ_MAX = 256 * 1024 * 1024;

/** FARM_READ from one node: the file, or undefined when that node cannot give it (why in `why`). */
async function farmRead(ctx: Ctx, n: SdNode, sha1: Buffer, why?: string[]): Promise<Buffer | undefined> {
  try {
    const r = await ctx.execOrFail({ opcode: Op.FARM_READ, dataLength: FARM_READ_MAX, obj: sha1ToObjFields(sha1) }, undefined, ctx.nodeTarget(n));
    if (r.rsp.result === Res.SUCCESS) return r.data;
    why?.push(`${nodeName(n)}: ${resultMessage(r.rsp.result)}`);
  } catch (e) {
    if (e instanceof CliError || e instanceof ConnectionError) {
      why?.push(`${nodeName(n)}: cannot connect`);
      return undefined;
    }
    throw e;
  }
  return undefined;
}

interface NodeLog { node: SdNode; header?: FarmLogHeader; records: FarmLogRecord[] }

/** Every reachable node's log; the snapshots merged by tag, oldest first, numbered by position. */
async function clusterLogs(ctx: Ctx, then: string): Promise<{ logs: NodeLog[]; merged: FarmLogRecord[] }> {
  const logs: NodeLog[] = [];
  for (const n of ctx.nodes) {
    if (n.nrVnodes === 0) continue; // gateways hold no objects
    const b = await farmRead(ctx, n, ZERO_SHA1);
    if (!b) continue;
    try {
      logs.push({ node: n, ...parseFarmLog(b) });
    } catch (e) {
      if (e instanceof FarmError) sysfail(`${nodeName(n)}: ${e.message}\n${then}`);
      throw e;
    }
  }
  const byTag = new Map<string, FarmLogRecord>();
  for (const l of logs) for (const r of l.records) if (!byTag.has(r.tag) || byTag.get(r.tag)!.time > r.time) byTag.set(r.tag, r);
  const merged = [...byTag.values()].sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : a.tag < b.tag ? -1 : 1))
    .map((r, i) => ({ ...r, idx: i + 1 }));
  return { logs, merged };
}

async function clusterSource(ctx: Ctx, arg: string, then: string): Promise<Source> {
  const { logs, merged } = await clusterLogs(ctx, then);
  const rec = findFarmRecord(merged, arg);
  if (!rec) sysfail(`Snapshot index or tag does not exist.\n${then}`);
  const holders = logs.filter((l) => l.header && l.records.some((r) => r.tag === rec.tag));
  const trunk = new Map<bigint, FarmTrunkEntry>();
  for (const l of holders) {
    const why: string[] = [];
    const b = await farmRead(ctx, l.node, l.records.find((r) => r.tag === rec.tag)!.trunk, why);
    if (!b) sysfail(`${why.join('\n')}\nfailed to read trunk\n${then}.\n${then}`);
    for (const e of decodeFarmTrunk(b)) if (!trunk.has(e.oid)) trunk.set(e.oid, e);
  }
  const order = [...trunk.values()].sort((a, b) => (a.oid < b.oid ? -1 : a.oid > b.oid ? 1 : 0));
  const cache = new Map<string, Buffer>();
  return {
    header: holders[0].header!, rec, trunk: order, inPlace: true,
    async get(sha1: Buffer): Promise<Buffer> {
      // the same slices come back again and again (the zero slice of every inode): keep a few
      const key = sha1.toString('hex');
      const hit = cache.get(key);
      if (hit) return hit;
      const why: string[] = [];
      for (const l of holders) {
        const b = await farmRead(ctx, l.node, sha1, why);
        if (!b) continue;
        if (b.length <= 128 * 1024) {
          if (cache.size >= 64) cache.delete(cache.keys().next().value!);
          cache.set(key, b);
        }
        return b;
      }
      throw new FarmError(`${key} is on no node's farm (${why.join('; ')})`);
    },
  };
}

// ---- show ----------------------------------------------------------------------

export async function snapshotShow(ctx: Ctx, args: string[]): Promise<number> {
  const [arg, dir, ...names] = args;
  const then = 'Fail to show snapshot';
  let src: Source;
  if (dir) src = await localSource(dir, arg, then);
  else if (await farmCluster(ctx)) src = await clusterSource(ctx, arg, then);
  else {
    ctx.err('Please specify the path to show snapshot.');
    return EXIT_USAGE;
  }
  let n = 0;
  try {
    for (const e of src.trunk) {
      if (!isVdiObj(e.oid)) continue;
      const h = decodeInodeHeader(await getObj(src, e.sha1));
      if (names.length && (!h.name || !names.includes(h.name))) continue;
      ctx.err(`${++n}. VDI id: ${oidToVid(e.oid).toString(16)}, name: ${h.name}, tag: ${h.tag}`);
    }
  } catch (e) {
    if (e instanceof FarmError) sysfail(`${e.message}\n${then}`);
    throw e;
  }
  return EXIT_SUCCESS;
}

// ---- load ----------------------------------------------------------------------

export async function snapshotLoad(ctx: Ctx, args: string[], _o: Opts): Promise<number> {
  const [arg, dir, ...names] = args;
  const then = 'Fail to load snapshot';
  let src: Source;
  if (dir) src = await localSource(dir, arg, then);
  else if (await farmCluster(ctx)) src = await clusterSource(ctx, arg, then);
  else {
    ctx.err('Please specify the path to save snapshot.');
    return EXIT_USAGE;
  }
  const header = src.header;

  // 1. the whole snapshot, checked before anything changes: the trunk, every
  // slice index, every slice (each distinct file once), every inode
  const trunk = src.trunk;
  const slicesOf = new Map<string, Buffer[]>();
  const inodes = new Map<bigint, InodeHeader>();
  let wanted: Set<bigint> | undefined;
  /** in place: only what the saved inodes refer to (a node's farm may hold more) */
  let reach: Set<bigint> | undefined;
  let total = 0n;
  try {
    const seen = new Set<string>();
    const checking = new Progress(BigInt(trunk.length) * 4n * 1024n * 1024n);
    let k = 0;
    const w = new Window(WINDOW);
    for (const e of trunk) {
      const key = e.sha1.toString('hex');
      if (!slicesOf.has(key)) {
        const slices = decodeFarmSliceIndex(await src.get(e.sha1));
        slicesOf.set(key, slices);
        for (const s of slices) {
          const h = s.toString('hex');
          if (seen.has(h)) continue;
          seen.add(h);
          await w.add(async () => { await src.get(s); });
          if (w.failed) break;
        }
      }
      if (w.failed) break;
      checking.update(BigInt(++k) * 4n * 1024n * 1024n);
    }
    await w.drain();
    checking.finish();
    for (const e of trunk) {
      if (!isVdiObj(e.oid)) continue;
      const data = await getObj(src, e.sha1);
      if (data.length < SD_INODE_HEADER_SIZE) throw new FarmError(`the inode of oid ${e.oid.toString(16).padStart(16, '0')} is ${data.length} bytes`);
      const h = decodeInodeHeader(data);
      inodes.set(e.oid, h);
      if (src.inPlace) {
        // every object the snapshot's inodes refer to must be on some node's farm
        const refs = inodeRefs(e.oid, h, data);
        const have = new Set(trunk.map((t) => t.oid));
        for (const r of refs) if (!have.has(r)) throw new FarmError(`object ${r.toString(16).padStart(16, '0')} of ${h.name} is on no node's farm`);
        if (!names.length || names.includes(h.name)) {
          reach ??= new Set();
          for (const r of refs) reach.add(r);
        }
      }
      if (names.length && (names.includes(h.name) || !h.name)) {
        wanted ??= new Set();
        wanted.add(e.oid);
        const n = Math.min(MAX_DATA_OBJS, Math.floor((data.length - SD_INODE_HEADER_SIZE) / 4));
        for (let i = 0; i < n; i++) {
          const owner = data.readUInt32LE(SD_INODE_HEADER_SIZE + 4 * i);
          if (owner) wanted.add(vidToDataOid(owner, i));
        }
      }
    }
  } catch (e) {
    if (e instanceof FarmError) sysfail(`${e.message}\nthe repository is damaged: nothing was changed\n${then}`);
    throw e;
  }
  if (names.length && !wanted) sysfail(`Objects of specified VDIs are not found in local cluster snapshot storage.\n${then}`);
  if (src.inPlace) wanted = reach ?? new Set();
  const todo = trunk.filter((e) => !wanted || wanted.has(e.oid));
  for (const e of todo) total += BigInt(slicesOf.get(e.sha1.toString('hex'))!.length) * 128n * 1024n;

  // 2. format, with the repository's copies, policy and object size
  const ci = await ctx.execOrFail({ opcode: Op.CLUSTER_INFO, dataLength: SD_CLUSTER_INFO_SIZE });
  const current = ci.rsp.result === Res.SUCCESS ? decodeClusterInfo(ci.data).defaultStore : '';
  const fr = await formatCluster(ctx, {
    copies: header.copies || 3, copyPolicy: header.copyPolicy, shift: header.blockSizeShift || 22,
    // dog's -m also sets strict here (a fall-through in its option parser): not copied
    flags: 0, fixedVnodes: false, force: false,
    store: current || 'plain',
  });
  if (fr !== EXIT_SUCCESS) return fr;

  // 3. mark every vid in use, then write every object as saved
  const vidInfo = new Map<number, FarmTrunkEntry>();
  for (const e of todo) if (!vidInfo.has(oidToVid(e.oid))) vidInfo.set(oidToVid(e.oid), e);
  // Unlike dog, a vid whose inode is not loaded (the base of a clone saved by
  // name) is registered but not marked in use: an in-use vid without an inode
  // would make every VDI listing fail to read it.
  const withInode = new Set(todo.filter((e) => isVdiObj(e.oid)).map((e) => oidToVid(e.oid)));
  for (const [vid, e] of vidInfo) {
    const r = await ctx.execOrFail({
      opcode: Op.NOTIFY_VDI_ADD, flags: Flag.CMD_WRITE,
      vdiState: {
        newVid: vid, oldVid: 0, copies: e.copies || header.copies || 3, copyPolicy: e.copyPolicy,
        blockSizeShift: e.blockSizeShift || 22, setBitmap: withInode.has(vid) ? 1 : 0,
      },
    });
    if (r.rsp.result !== Res.SUCCESS) sysfail(`Fail to notify vdi add event(${vid.toString(16)}): ${resultMessage(r.rsp.result)}\n${then}`);
  }
  const progress = new Progress(total);
  let done = 0n;
  const w = new Window(WINDOW);
  for (const e of todo) {
    await w.add(async () => {
      const data = await getObj(src, e.sha1);
      const r = await ctx.execOrFail({
        opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE | Flag.CMD_DIRECT, dataLength: data.length,
        obj: { oid: e.oid, copies: e.copies || header.copies || 3, copyPolicy: e.copyPolicy, offset: 0 },
      }, data);
      if (r.rsp.result !== Res.SUCCESS) {
        sysfail(`Fail to load object, oid ${e.oid.toString(16).padStart(16, '0')}: ${resultMessage(r.rsp.result)}\n${then}`);
      }
      done += BigInt(slicesOf.get(e.sha1.toString('hex'))!.length) * 128n * 1024n;
      progress.update(done);
    });
    if (w.failed) break;
  }
  await w.drain();
  progress.finish();

  // 4. a working VDI per name, cloned from its newest snapshot
  const newest = new Map<string, { vid: number; h: InodeHeader }>();
  for (const e of todo) {
    const h = inodes.get(e.oid);
    if (!h || !h.name) continue;
    const had = newest.get(h.name);
    if (!had || h.snapId > had.h.snapId) newest.set(h.name, { vid: oidToVid(e.oid), h });
  }
  const byName = [...newest.keys()].sort((a, b) => (Buffer.compare(Buffer.from(a), Buffer.from(b))));
  for (const name of byName) {
    const { vid, h } = newest.get(name)!;
    await doVdiCreate(ctx, name, h.vdiSize, vid, false, h.nrCopies, h.copyPolicy, h.storePolicy, h.blockSizeShift);
  }
  return EXIT_SUCCESS;
}

/** FARM_DELETE of a tag on every node that holds objects; the nodes that failed. */
async function deleteInPlace(ctx: Ctx, tag: string): Promise<string[]> {
  const payload = Buffer.alloc(256);
  payload.write(tag, 0, 'utf8');
  const bad: string[] = [];
  for (const n of ctx.nodes.filter((x) => x.nrVnodes > 0)) {
    const r = await ctx.execOrFail({ opcode: Op.FARM_DELETE, flags: Flag.CMD_WRITE, dataLength: 256 }, payload, ctx.nodeTarget(n));
    if (r.rsp.result !== Res.SUCCESS) bad.push(`${nodeName(n)}: ${resultMessage(r.rsp.result)}`);
  }
  return bad;
}

// ---- delete (not in dog) ----------------------------------------------------------

/**
 * Remove one snapshot's record (the others are renumbered: dog takes idx as
 * the position), then the content files no remaining snapshot refers to.
 */
export async function snapshotDelete(ctx: Ctx, args: string[]): Promise<number> {
  const [arg, dir] = args;
  if (!dir) {
    if (await farmCluster(ctx)) {
      const then = 'Fail to delete snapshot';
      const { merged } = await clusterLogs(ctx, then);
      const rec = findFarmRecord(merged, arg);
      if (!rec) sysfail(`Snapshot index or tag does not exist.\n${then}`);
      const bad = await deleteInPlace(ctx, rec.tag);
      if (bad.length) sysfail(`${bad.join('\n')}\n${then}`);
      return EXIT_SUCCESS;
    }
    ctx.err('Please specify the path to delete snapshot.');
    return EXIT_USAGE;
  }
  const then = 'Fail to delete snapshot';
  const repo = await openRepo(dir, then);
  const log = await readLog(repo, then);
  const rec = findFarmRecord(log.records, arg);
  if (!rec || !log.header) sysfail(`Snapshot index or tag does not exist.\n${then}`);
  const { files, bytes, problems } = await repo.deleteSnapshot(log.header, log.records, rec);
  if (problems.length) {
    for (const p of problems) ctx.err(p);
    ctx.err('the repository is damaged: the snapshot was removed from the log, but no content file was removed');
    return EXIT_SYSFAIL;
  }
  if (ctx.verbose) ctx.out(`removed ${files} content files (${bytes} bytes)\n`);
  return EXIT_SUCCESS;
}
