// dog cluster ... (spec §14.3)
import {
  Op, Flag, Res, resultMessage, decodeEpochLogs, EpochLog, ClusterFlag, timestamp64, decodeClusterInfo,
  SD_CLUSTER_INFO_SIZE, SD_VDI_BITMAP_SIZE, SD_NODE_SIZE, SD_EPOCH_LOG_HEADER_SIZE, SD_MAX_NODES, addrToString,
  decodeEcPolicy,
} from '@sheepdog/common';
import type { OptDef, SubCommand, Opts } from '../cli.js';
import type { Ctx, Target } from '../conn.js';
import { CliError, EXIT_SUCCESS, EXIT_FAILURE, EXIT_SYSFAIL, EXIT_USAGE } from '../exitcodes.js';
import { parseCopies, parseShift } from '../args.js';
import { clusterInfoText } from '../format.js';
import { scanVdis, isSnapshot } from '../scan.js';
import { confirm } from './common.js';
import { checkVdi } from './vdi.js';
import { clusterScrub } from './scrub.js';
import { snapshotSave, snapshotList, snapshotLoad, snapshotShow, snapshotDelete } from './farm.js';
import { BufferSink } from '../output.js';
import { printJson, clusterInfoJson, vdiJson } from '../json.js';

export const clusterOptions: OptDef[] = [
  { ch: 'b', name: 'store', hasArg: true, desc: 'specify backend store' },
  { ch: 'c', name: 'copies', hasArg: true, desc: 'specify the default data redundancy (number of copies)' },
  { ch: 'd', name: 'diff', hasArg: false, desc: 'show only the differences between epochs' },
  { ch: 'f', name: 'force', hasArg: false, desc: 'do not prompt for confirmation' },
  { ch: 't', name: 'strict', hasArg: false, desc: 'do not serve write request if number of nodes is not sufficient' },
  { ch: 'E', name: 'ec-few-zones', hasArg: false, desc: 'let erasure coded writes go on with fewer zones than D+P (fewer strips per object)' },
  { ch: 'z', name: 'block_size_shift', hasArg: true, desc: 'specify the shift num of default data object size' },
  { ch: 'V', name: 'fixedvnodes', hasArg: false, desc: 'disable automatic vnodes calculation' },
  { ch: 'R', name: 'recycle-vid', hasArg: false, desc: 'enable recycling of deleted VDI ids' },
  { ch: 'F', name: 'avoid-diskfull', hasArg: false, desc: 'avoid recovery that could fill up disks' },
  { ch: 'l', name: 'lock', hasArg: false, desc: 'Lock vdi to exclude multiple users' },
  { ch: 'i', name: 'vdi', hasArg: true, desc: 'scrub only the objects of this VDI' },
  { ch: 'e', name: 'rate', hasArg: true, desc: 'scrub at most this many MB/s on each node' },
  { ch: 'm', name: 'multithread', hasArg: false, desc: "use multi-thread for 'cluster snapshot save'" },
];

function fail(msg: string, code = EXIT_FAILURE): never {
  throw new CliError(code, msg);
}

/** STAT_CLUSTER with room for every epoch; doubles the node slots on BUFFER_SMALL. */
export async function statClusterLogs(ctx: Ctx): Promise<{ result: number; logs: EpochLog[] }> {
  let nodesNr = ctx.nodes.length;
  for (;;) {
    const stride = SD_EPOCH_LOG_HEADER_SIZE + nodesNr * SD_NODE_SIZE;
    const r = await ctx.execOrFail({ opcode: Op.STAT_CLUSTER, dataLength: ctx.epoch * stride, cluster: { nodesNr } });
    if (r.rsp.result === Res.BUFFER_SMALL && nodesNr < SD_MAX_NODES) {
      nodesNr = Math.min(SD_MAX_NODES, Math.max(1, nodesNr * 2));
      continue;
    }
    return { result: r.rsp.result, logs: decodeEpochLogs(r.data, nodesNr) };
  }
}

async function clusterInfo(ctx: Ctx, _args: string[], o: Opts): Promise<number> {
  const { result, logs } = await statClusterLogs(ctx);
  if (ctx.json) {
    const zones = new Set(ctx.nodes.filter((n) => n.nrVnodes > 0).map((n) => n.zone)).size;
    printJson(ctx, { ...clusterInfoJson(result, resultMessage(result), logs), zones });
    return EXIT_SUCCESS;
  }
  ctx.out(clusterInfoText({
    result, resultText: resultMessage(result), logs, verbose: ctx.verbose, raw: ctx.raw, diff: o.d === true,
  }));
  // not in upstream's output (scripts parse stdout): on stderr, a cluster that cannot keep its copies apart
  const copies = result === Res.SUCCESS ? logs[0]?.nrCopies ?? 0 : 0;
  const zones = new Set(ctx.nodes.filter((n) => n.nrVnodes > 0).map((n) => n.zone)).size;
  const strict = ((logs[0]?.flags ?? 0) & ClusterFlag.STRICT) !== 0;
  const ec = result === Res.SUCCESS ? decodeEcPolicy(logs[0]?.copyPolicy ?? 0) : undefined;
  if (ec && zones < copies) {
    // Fewer zones than D: no stripe can be read or written (A.14). Between D
    // and D+P, upstream writes the data strips alone, and a sheep may refuse
    // instead: only what holds either way is said.
    ctx.err(`Warning: the cluster cannot place the ${copies} strips of its ${ec.d}:${ec.p} erasure code: only ${zones} zone(s) hold data, ` +
      (zones < ec.d ? 'so objects can be neither written nor read\n'
        : strict ? 'so writes are refused (strict mode)\n'
          : (logs[0]?.flags ?? 0) & ClusterFlag.EC_FEW_ZONES ? `so objects get only ${zones} of their strips (--ec-few-zones)\n`
            : 'so objects cannot get all their parity strips (this sheep refuses such writes unless formatted with --ec-few-zones)\n'));
  } else if (copies > 1 && zones < copies) {
    ctx.err(`Warning: the cluster cannot place ${copies} copies: only ${zones} zone(s) hold data, ` +
      (strict ? 'so writes are refused (strict mode)\n' : `so objects are stored with ${zones} cop${zones === 1 ? 'y' : 'ies'}\n`));
  }
  return EXIT_SUCCESS;
}

/** GET_OBJ_LIST's largest answer here: 8 bytes an object. */
const OBJ_LIST_MAX = 64 << 20;

/** How many objects a node holds (live and set aside): a count, at least a count, or why it cannot say. */
async function objectsHeld(ctx: Ctx, t: Target): Promise<{ count: number; atLeast: boolean } | { why: string }> {
  let count = 0;
  let atLeast = false;
  for (const flags of [0, Flag.CMD_WILDCARD]) {
    const r = await ctx.execOrFail({ opcode: Op.GET_OBJ_LIST, flags, dataLength: OBJ_LIST_MAX }, undefined, t);
    if (r.rsp.result === Res.BUFFER_SMALL) {
      count += OBJ_LIST_MAX / 8;
      atLeast = true;
    } else if (r.rsp.result === Res.SUCCESS) {
      count += Math.floor(r.data.length / 8);
    } else {
      return { why: resultMessage(r.rsp.result) };
    }
  }
  return { count, atLeast };
}

/** Fail, naming them, if nodes hold objects (or cannot say whether they do). */
async function refuseIfHeld(ctx: Ctx): Promise<void> {
  const lines: string[] = [];
  for (const n of ctx.nodes) {
    const t = ctx.nodeTarget(n);
    const h = await objectsHeld(ctx, t);
    const who = `${addrToString(n.addr)}:${n.port}`;
    if ('why' in h) lines.push(`  ${who}: cannot tell what it holds (${h.why})`);
    else if (h.count > 0) lines.push(`  ${who} holds ${h.atLeast ? 'more than ' : ''}${h.count} object${h.count === 1 ? '' : 's'}`);
  }
  if (!lines.length) return;
  fail(`Refusing to format: formatting destroys every object the nodes hold, and\n${lines.join('\n')}\n` +
    'Use -f (--force) to format anyway.');
}

async function clusterFormat(ctx: Ctx, _args: string[], o: Opts): Promise<number> {
  const cp = o.c ? parseCopies(o.c as string) : { copies: 0, policy: 0 };
  const shift = o.z ? parseShift(o.z as string) : 0;
  let flags = 0;
  if (o.t) flags |= ClusterFlag.STRICT;
  if (o.l) flags |= ClusterFlag.USE_LOCK;
  if (o.R) flags |= ClusterFlag.RECYCLE_VID;
  if (o.F) flags |= ClusterFlag.AVOID_DISKFULL;
  if (o.E) flags |= ClusterFlag.EC_FEW_ZONES;
  // dog keeps the first 15 bytes of the name (pstrcpy into char[16])
  const store = typeof o.b === 'string' && o.b ? Buffer.from(o.b).subarray(0, 15).toString('latin1') : 'plain';
  return formatCluster(ctx, { copies: cp.copies, copyPolicy: cp.policy, shift, flags, fixedVnodes: o.V === true, force: o.f === true, store, refuseHeld: o.f !== true });
}

export interface FormatRequest {
  copies: number;
  copyPolicy: number;
  shift: number;
  /** cluster flags other than AUTO_VNODES */
  flags: number;
  fixedVnodes: boolean;
  force: boolean;
  store: string;
  /** Refuse when nodes hold objects (cluster format without -f; a snapshot load replaces the cluster by intent). */
  refuseHeld?: boolean;
}

/** dog's cluster format (also the first step of cluster snapshot load): checks, prompts, MAKE_FS. */
export async function formatCluster(ctx: Ctx, f: FormatRequest): Promise<number> {
  const fixed = f.fixedVnodes;
  for (const n of ctx.nodes) {
    const r = await ctx.execOrFail({ opcode: Op.CLUSTER_INFO, dataLength: SD_CLUSTER_INFO_SIZE }, undefined, ctx.nodeTarget(n));
    if (r.rsp.result !== Res.SUCCESS) fail(resultMessage(r.rsp.result));
    const ci = decodeClusterInfo(r.data);
    if (n.nrVnodes !== 0) {
      const auto = (ci.flags & ClusterFlag.AUTO_VNODES) !== 0;
      if (auto && fixed) fail("Can not apply the option of '-V', because there are vnode strategy of sheep is auto");
      if (!auto && !fixed) fail("Need to specify the option of '-V' to avoid the cluster vnode strategy being auto");
    }
  }
  // Formatting wipes every node's objects: not without -f when there are some
  // (dog 1.0 asks only when the VDI bitmap is not empty, and formats
  // whatever the nodes hold when it is).
  if (f.refuseHeld) await refuseIfHeld(ctx);
  const zones = ctx.ring?.nrZones ?? ctx.nodes.length;
  if (!f.force && f.copies > zones) {
    await confirm(ctx,
      `Number of copies (${f.copies}) is larger than number of zones (${zones}).\nAre you sure you want to continue? [yes/no]: `);
  }
  const vr = await ctx.execOrFail({ opcode: Op.READ_VDIS, dataLength: SD_VDI_BITMAP_SIZE });
  if (!f.force && vr.data.some((b) => b !== 0)) {
    await confirm(ctx,
      "    __\n   ()'`;\n   /\\|`  Caution! The cluster is not empty. Formatting it will\n" +
      '  /  |   destroy all the data in the cluster.\n(/_)_|_  Are you sure you want to continue? [yes/no]: ');
  }
  let flags = f.flags;
  if (!fixed) flags |= ClusterFlag.AUTO_VNODES;
  const store = f.store;
  const payload = Buffer.from(store + '\0', 'latin1');
  ctx.out(`using backend ${store} store\n`);
  const r = await ctx.execOrFail({
    opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, dataLength: payload.length,
    cluster: { copies: f.copies, copyPolicy: f.copyPolicy, ctime: timestamp64(), flags, blockSizeShift: f.shift },
  }, payload);
  if (r.rsp.result !== Res.SUCCESS) {
    ctx.err(`Format failed: ${resultMessage(r.rsp.result)}`);
    if (r.rsp.result !== Res.NO_STORE) return EXIT_SYSFAIL;
    const l = await ctx.execOrFail({ opcode: Op.GET_STORE_LIST, dataLength: 512 });
    if (l.rsp.result !== Res.SUCCESS) fail(`Restore failed: ${resultMessage(l.rsp.result)}`);
    ctx.out(`Available stores:\n---------------------------------------\n${l.data.toString('latin1').replace(/\0.*$/s, '')}\n`);
    return EXIT_SYSFAIL; // 1.0 exits 2 here too
  }
  return EXIT_SUCCESS;
}

async function clusterShutdown(ctx: Ctx): Promise<number> {
  if (!(await ctx.lightReq({ opcode: Op.SHUTDOWN }))) fail('failed to shutdown the cluster');
  return EXIT_SUCCESS;
}

async function recoverForce(ctx: Ctx, _args: string[], o: Opts): Promise<number> {
  if (!o.f) {
    await confirm(ctx,
      'Caution! Please try starting all the cluster nodes normally before\nrunning this command.\n\n' +
      'The cluster may need to be force recovered if:\n' +
      '  - the master node fails to start because of epoch mismatch; or\n' +
      '  - some nodes fail to start after a cluster shutdown.\n\n' +
      'Are you sure you want to continue? [yes/no]: ');
  }
  const r = await ctx.execOrFail({ opcode: Op.FORCE_RECOVER, dataLength: SD_MAX_NODES * SD_NODE_SIZE });
  if (r.rsp.result !== Res.SUCCESS) fail(`failed to execute request, ${resultMessage(r.rsp.result)}`);
  return EXIT_SUCCESS;
}

async function recoverSet(ctx: Ctx, enable: boolean): Promise<number> {
  if (!(await ctx.lightReq({ opcode: enable ? Op.ENABLE_RECOVER : Op.DISABLE_RECOVER }))) return EXIT_FAILURE;
  ctx.out(`Cluster recovery: ${enable ? 'enable' : 'disable'}\n`);
  return EXIT_SUCCESS;
}

async function clusterReweight(ctx: Ctx): Promise<number> {
  return (await ctx.lightReq({ opcode: Op.REWEIGHT })) ? EXIT_SUCCESS : EXIT_FAILURE;
}

async function clusterAlterCopy(ctx: Ctx, _args: string[], o: Opts): Promise<number> {
  if (!o.c) fail('Please specify the redundancy level with -c', EXIT_USAGE);
  const cp = parseCopies(o.c as string);
  if (cp.policy) fail('Changing redundancy level of erasure coded vdi is not supported yet.', EXIT_USAGE);
  if (cp.copies > ctx.nodes.length) {
    fail(`There are not enough nodes(${ctx.nodes.length}) to hold the copies(${cp.copies})`);
  }
  const s = await ctx.execOrFail({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: { nodesNr: 0 } });
  if (s.rsp.result !== Res.SUCCESS) fail(resultMessage(s.rsp.result));
  if (s.data.length >= 27 && s.data[26] !== 0) fail("The cluster's copy policy is erasure code, changing it is not supported yet.");
  const old = s.data.length >= 26 ? s.data[25] : 0;
  if (old === cp.copies) {
    ctx.out(`The cluster's redundancy level is already set to ${cp.copies}.\n`);
    return EXIT_SUCCESS;
  }
  if (!o.f) {
    await confirm(ctx,
      "    __\n   ()'`;\n   /\\|`  Caution! Changing the cluster's redundancy level will\n" +
      '  /  |   affect only the VDIs created afterwards.\n(/_)_|_  Are you sure you want to continue? [yes/no]: ');
  }
  if (!(await ctx.lightReq({ opcode: Op.ALTER_CLUSTER_COPY, cluster: { copies: cp.copies, copyPolicy: 0 } }))) {
    fail("Failed to change the cluster's redundancy level");
  }
  return EXIT_SUCCESS;
}

/**
 * cluster check --json: the same checks, each VDI's messages (what the text
 * prints on stdout and stderr) collected into its record.
 */
async function clusterCheckJson(ctx: Ctx): Promise<number> {
  const vdis = await scanVdis(ctx, true);
  let rc = EXIT_SUCCESS;
  const out = [];
  const sink = ctx.sink;
  for (const v of vdis) {
    const h = v.header;
    const messages = new BufferSink();
    ctx.sink = messages;
    let code: number;
    try {
      code = await checkVdi(ctx, h.name, isSnapshot(h) ? h.snapId : 0, '', false);
    } catch (e) {
      if (!(e instanceof CliError) || e.code === EXIT_SYSFAIL) throw e;
      if (e.message) ctx.err(e.message);
      code = e.code;
    } finally {
      ctx.sink = sink;
    }
    if (code !== EXIT_SUCCESS) rc = code;
    const lines = (messages.stdout + messages.stderr).split('\n').filter(Boolean);
    out.push({
      ...vdiJson(v.vid, h), exit_status: code, ok: code === EXIT_SUCCESS,
      fixed: lines.filter((l) => /^fixed /.test(l)).length, messages: lines,
    });
  }
  printJson(ctx, { vdis: out, ok: rc === EXIT_SUCCESS });
  return rc;
}

async function clusterCheck(ctx: Ctx): Promise<number> {
  if (ctx.json) return clusterCheckJson(ctx);
  const vdis = await scanVdis(ctx, true);
  let rc = EXIT_SUCCESS;
  for (const v of vdis) {
    const h = v.header;
    if (isSnapshot(h)) ctx.out(`fix snapshot ${h.name} (id: ${h.snapId}, tag: "${h.tag}")\n`);
    else ctx.out(`fix vdi ${h.name}\n`);
    try {
      const r = await checkVdi(ctx, h.name, isSnapshot(h) ? h.snapId : 0, '', false);
      if (r !== EXIT_SUCCESS) rc = r;
    } catch (e) {
      if (e instanceof CliError && e.code !== EXIT_SYSFAIL) {
        if (e.message) ctx.err(e.message);
        rc = e.code;
        continue;
      }
      throw e;
    }
  }
  return rc;
}

export const clusterCommands: SubCommand[] = [
  { name: 'info', opts: 'aprhvd', desc: 'show cluster information', needNodeList: true, run: clusterInfo, json: true },
  { name: 'format', opts: 'bcfaphtzVRFlE', desc: 'create a Sheepdog store', needNodeList: true, run: clusterFormat },
  { name: 'shutdown', opts: 'aph', desc: 'stop Sheepdog', run: (c) => clusterShutdown(c) },
  {
    name: 'snapshot', opts: 'aphTmv', arg: '<tag|idx> <path> [vdi1] [vdi2] ...', needArg: true,
    desc: 'snapshot/restore the cluster',
    sub: [
      { name: 'save', desc: 'save a snapshot of the cluster into a repository', needNodeList: true, run: snapshotSave },
      { name: 'list', desc: 'list the snapshots of a repository', run: snapshotList },
      { name: 'load', desc: 're-format the cluster and load a snapshot from a repository', needNodeList: true, run: snapshotLoad },
      { name: 'show', desc: 'show the VDIs of a snapshot in a repository', run: snapshotShow },
      { name: 'delete', desc: 'delete a snapshot from a repository', run: snapshotDelete },
    ],
  },
  {
    name: 'recover', opts: 'afph', desc: "See 'dog cluster recover' for more information", needArg: true,
    sub: [
      { name: 'force', desc: 'force recover cluster immediately', run: recoverForce },
      { name: 'enable', desc: 'enable automatic recovery and run once recover if necessary', run: (c) => recoverSet(c, true) },
      { name: 'disable', desc: 'disable automatic recovery caused by JOIN events (excluding LEAVE events now)', run: (c) => recoverSet(c, false) },
    ],
  },
  { name: 'reweight', opts: 'aph', desc: 'reweight the cluster', run: (c) => clusterReweight(c) },
  { name: 'check', opts: 'aph', desc: 'check and repair cluster', needNodeList: true, run: (c) => clusterCheck(c), json: true },
  { name: 'alter-copy', opts: 'aphcf', desc: "set the cluster's redundancy level", needNodeList: true, run: clusterAlterCopy },
  { name: 'scrub', opts: 'aphrie', desc: 'read and check every copy, repair damaged ones and replicas that differ', needNodeList: true, run: clusterScrub, json: true },
];
for (const c of clusterCommands) c.options = clusterOptions;

/** cluster_parser(): -c and -z are checked as they are parsed. */
export function clusterParser(o: Opts): void {
  if (typeof o.c === 'string') parseCopies(o.c);
  if (typeof o.z === 'string') parseShift(o.z);
}
