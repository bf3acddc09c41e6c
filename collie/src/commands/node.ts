// dog node ... (spec §14.2)
import {
  Op, Flag, Res, resultMessage, decodeRecoveryState, encodeThrottling, decodeThrottling, decodeStat, decodeMdInfo, encodeMdPaths,
  SD_STAT_SIZE, SD_MD_INFO_SIZE, ConnectionError, SdStat, STAT_FIELDS, RECOVERY_MAX_EXEC_COUNT_LIMIT,
  RECOVERY_INTERVAL_LIMIT_MS, SD_CLUSTER_INFO_SIZE, decodeClusterInfo, farmStatText,
} from '@sheepdog/common';
import type { OptDef, SubCommand, Opts } from '../cli.js';
import type { Ctx, Target } from '../conn.js';
import { CliError, EXIT_SUCCESS, EXIT_FAILURE, EXIT_SYSFAIL, EXIT_USAGE } from '../exitcodes.js';
import {
  nodeListText, NODE_INFO_HEADER, nodeInfoLine, nodeInfoTotal, RECOVERY_HEADER, recoveryLine, statText,
  MD_INFO_HEADER, mdInfoText, RECLAIM_HEADER, reclaimLine,
} from '../format.js';
import { scanVdis, isSnapshot } from '../scan.js';
import { renderBar } from '../progress.js';
import { confirm, reclaiming } from './common.js';
import { nodeScrubStatus } from './scrub.js';
import { nodeFarmStat } from './farm.js';
import { printJson, printJsonLine, nodeJson, statJson, recoveryJson, reclaimJson, mdDiskJson, bytes, percent } from '../json.js';

export const nodeOptions: OptDef[] = [
  { ch: 'A', name: 'all', hasArg: false, desc: 'show md information of all the nodes' },
  { ch: 'P', name: 'progress', hasArg: false, desc: 'show progress of recovery in the node' },
  { ch: 'l', name: 'local', hasArg: false, desc: 'issue kill node request to local node' },
  { ch: 'f', name: 'force', hasArg: false, desc: 'ignore the warning of unplugging' },
  { ch: 'w', name: 'watch', hasArg: false, desc: 'watch the stat every second' },
];

function fail(msg: string, code = EXIT_FAILURE): never {
  throw new CliError(code, msg);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function nodeList(ctx: Ctx): Promise<number> {
  if (ctx.json) {
    printJson(ctx, { nodes: ctx.nodes.map((n, i) => nodeJson(n, i)) });
    return EXIT_SUCCESS;
  }
  ctx.out(nodeListText(ctx.nodes, ctx.raw));
  return EXIT_SUCCESS;
}

async function nodeInfo(ctx: Ctx): Promise<number> {
  if (!ctx.raw && !ctx.json) ctx.out(NODE_INFO_HEADER);
  let totalSize = 0n, totalFree = 0n, success = 0;
  const space = (size: bigint, free: bigint) => ({ size: bytes(size), used: bytes(size - free), avail: bytes(free), use_percent: percent(size - free, size) });
  const list = [];
  for (let i = 0; i < ctx.nodes.length; i++) {
    let r;
    try {
      r = await ctx.exec({ opcode: Op.STAT_SHEEP }, undefined, ctx.nodeTarget(ctx.nodes[i]));
    } catch (e) {
      if (e instanceof ConnectionError) continue;
      throw e;
    }
    if (r.rsp.result !== Res.SUCCESS) {
      ctx.err(`Response's result: ${resultMessage(r.rsp.result)}`);
      continue;
    }
    const { storeSize, storeFree } = r.rsp.node;
    if (ctx.json) list.push({ ...nodeJson(ctx.nodes[i], i), ...space(storeSize, storeFree) });
    else ctx.out(nodeInfoLine(i, { size: storeSize, free: storeFree }, ctx.raw));
    success++;
    totalSize += storeSize;
    totalFree += storeFree;
  }
  if (success === 0) fail('Cannot get information from any nodes', EXIT_SYSFAIL);
  let totalVdi = 0n;
  for (const v of await scanVdis(ctx, false)) if (!isSnapshot(v.header)) totalVdi += v.header.vdiSize;
  // not in dog 1.0: the store the cluster was formatted with (-v, and in JSON)
  let store: string | undefined;
  if (ctx.json || ctx.verbose) {
    const ci = await ctx.execOrFail({ opcode: Op.CLUSTER_INFO, dataLength: SD_CLUSTER_INFO_SIZE });
    if (ci.rsp.result === Res.SUCCESS) store = decodeClusterInfo(ci.data).defaultStore || undefined;
  }
  if (ctx.json) {
    printJson(ctx, { nodes: list, total: space(totalSize, totalFree), total_virtual_image_size: bytes(totalVdi), store: store ?? null });
    return EXIT_SUCCESS;
  }
  ctx.out(nodeInfoTotal(totalSize, totalFree, totalVdi, ctx.raw));
  if (ctx.verbose && store) ctx.out(ctx.raw ? `store ${store}\n` : `Store: ${store}\n`);
  if (ctx.verbose && store === 'farm') {
    // each node's repository of in-place snapshots
    for (let i = 0; i < ctx.nodes.length; i++) {
      if (ctx.nodes[i].nrVnodes === 0) continue;
      const st = await nodeFarmStat(ctx, ctx.nodes[i]);
      if (st) ctx.out(`Farm of node ${i}: ${farmStatText(st)}\n`);
    }
  }
  return EXIT_SUCCESS;
}

async function nodeKill(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  let id: number;
  if (o.l) {
    id = ctx.localIndex();
    if (id < 0) fail('Cannot find the local node in the node list');
  } else {
    const p = args[0];
    if (p === undefined) throw new CliError(EXIT_USAGE);
    // dog exit()s here: the message, without the usage block
    if (!/^[0-9]+$/.test(p)) throw new CliError(EXIT_USAGE, `Invalid node id '${p}', please specify a numeric value`, false);
    id = Number(p);
    if (id >= ctx.nodes.length) throw new CliError(EXIT_USAGE, `Invalid node id '${id}'`, false);
  }
  if (!(await ctx.lightReq({ opcode: Op.KILL_NODE }, ctx.nodeTarget(ctx.nodes[id])))) fail('Failed to execute request');
  return EXIT_SUCCESS;
}

async function recoveryState(ctx: Ctx, t: Target) {
  const r = await ctx.execOrFail({ opcode: Op.STAT_RECOVERY, dataLength: 24 }, undefined, t);
  if (r.rsp.result !== Res.SUCCESS) fail(resultMessage(r.rsp.result));
  const b = Buffer.alloc(24);
  r.data.copy(b);
  return decodeRecoveryState(b);
}

async function nodeRecovery(ctx: Ctx, _args: string[], o: Opts): Promise<number> {
  if (o.P && !ctx.json) {
    let st = await recoveryState(ctx, ctx.local);
    if (!st.inRecovery) return EXIT_SUCCESS;
    while (st.inRecovery) {
      ctx.out('\r' + renderBar(st.nrFinished, st.nrTotal));
      await sleep(1000);
      st = await recoveryState(ctx, ctx.local);
    }
    ctx.out('\r' + renderBar(1n, 1n) + '\n');
    return EXIT_SUCCESS;
  }
  if (!ctx.raw && !ctx.json) ctx.out(RECOVERY_HEADER);
  const list = [];
  for (let i = 0; i < ctx.nodes.length; i++) {
    const n = ctx.nodes[i];
    const st = await recoveryState(ctx, ctx.nodeTarget(n));
    if (!st.inRecovery) continue;
    if (ctx.json) list.push(recoveryJson(n, i, st));
    else ctx.out(recoveryLine(i, n, st, ctx.raw));
  }
  // deleted VDIs still being reclaimed: a section of their own, only while
  // there are some (dog's table above stays as it is; -r prints dog's lines only)
  const reclaims = ctx.raw ? [] : await reclaiming(ctx);
  if (ctx.json) {
    printJson(ctx, { nodes: list, reclaiming: reclaims.map(reclaimJson) });
    return EXIT_SUCCESS;
  }
  if (reclaims.length) {
    ctx.out(RECLAIM_HEADER);
    for (const e of reclaims) ctx.out(reclaimLine(e, e.by));
  }
  return EXIT_SUCCESS;
}

async function setThrottle(ctx: Ctx, args: string[]): Promise<number> {
  const [a, b] = args;
  if (a === undefined || b === undefined) throw new CliError(EXIT_USAGE);
  // Checked here and again by sheep: a value out of range changes nothing.
  const max = /^[0-9]+$/.test(a) ? Number(a) : NaN;
  if (!(max <= RECOVERY_MAX_EXEC_COUNT_LIMIT)) {
    fail(`Invalid max exec count '${a}': it must be an integer from 0 to ${RECOVERY_MAX_EXEC_COUNT_LIMIT}`, EXIT_USAGE);
  }
  const interval = /^[0-9]+$/.test(b) ? Number(b) : NaN;
  if (!(interval <= RECOVERY_INTERVAL_LIMIT_MS)) {
    fail(`Invalid queue work interval '${b}': it must be an integer from 0 to ${RECOVERY_INTERVAL_LIMIT_MS} (milliseconds)`, EXIT_USAGE);
  }
  const payload = encodeThrottling({ maxExecCount: max, queueWorkInterval: BigInt(interval), throttling: max > 0 && interval > 0 });
  const r = await ctx.execOrFail({ opcode: Op.SET_RECOVERY, flags: Flag.CMD_WRITE, dataLength: payload.length }, payload);
  if (r.rsp.result !== Res.SUCCESS) fail(`Failed to set recovery throttling: ${resultMessage(r.rsp.result)}`);
  return EXIT_SUCCESS;
}

async function getThrottle(ctx: Ctx): Promise<number> {
  const r = await ctx.execOrFail({ opcode: Op.GET_RECOVERY, dataLength: 24 });
  if (r.rsp.result !== Res.SUCCESS) fail(`Failed to get recovery throttling: ${resultMessage(r.rsp.result)}`);
  const b = Buffer.alloc(24);
  r.data.copy(b);
  const t = decodeThrottling(b);
  ctx.out(`max (${t.maxExecCount}), interval (${t.queueWorkInterval})\n`);
  return EXIT_SUCCESS;
}

async function getStat(ctx: Ctx): Promise<SdStat> {
  const r = await ctx.execOrFail({ opcode: Op.STAT, dataLength: SD_STAT_SIZE });
  if (r.rsp.result !== Res.SUCCESS) fail(`failed to get stat information: ${resultMessage(r.rsp.result)}`);
  const b = Buffer.alloc(SD_STAT_SIZE);
  r.data.copy(b);
  return decodeStat(b);
}

async function nodeStat(ctx: Ctx, _args: string[], o: Opts): Promise<number> {
  let cur = await getStat(ctx);
  if (ctx.json) {
    // -w: one line of totals, then one line of per-second deltas each second (JSON Lines)
    const stamp = () => new Date().toISOString();
    if (!o.w) {
      printJson(ctx, { time: stamp(), ...statJson(cur) });
      return EXIT_SUCCESS;
    }
    printJsonLine(ctx, { time: stamp(), interval: null, ...statJson(cur) });
    for (;;) {
      await sleep(1000);
      const next = await getStat(ctx);
      const d = Object.fromEntries(STAT_FIELDS.map((k) => [k, k.endsWith('Active') ? next[k] : next[k] - cur[k]])) as SdStat;
      printJsonLine(ctx, { time: stamp(), interval: 1, ...statJson(d) });
      cur = next;
    }
  }
  if (!o.w) {
    ctx.out(statText(cur, ctx.raw));
    return EXIT_SUCCESS;
  }
  // -w: totals first, then per-second deltas of the counters (active = gauge).
  ctx.out(statText(cur, ctx.raw));
  for (;;) {
    await sleep(1000);
    const next = await getStat(ctx);
    const d = Object.fromEntries(STAT_FIELDS.map((k) => [k, k.endsWith('Active') ? next[k] : next[k] - cur[k]])) as SdStat;
    ctx.out(statText(d, ctx.raw, false));
    cur = next;
  }
}

const LOG_LEVELS = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'];

async function logLevelGet(ctx: Ctx): Promise<number> {
  const r = await ctx.execOrFail({ opcode: Op.GET_LOGLEVEL, dataLength: 4 });
  if (r.rsp.result !== Res.SUCCESS) fail(`failed to get loglevel: ${resultMessage(r.rsp.result)}`);
  const lv = r.data.length >= 4 ? r.data.readInt32LE(0) : -1;
  ctx.out(`${LOG_LEVELS[lv] ?? 'unknown'} (${lv})\n`);
  return EXIT_SUCCESS;
}

async function logLevelSet(ctx: Ctx, args: string[]): Promise<number> {
  const s = args[0];
  if (s === undefined) throw new CliError(EXIT_USAGE);
  const lv = /^[0-7]$/.test(s) ? Number(s) : LOG_LEVELS.indexOf(s);
  if (lv < 0) fail(`Invalid log level: ${s}`, EXIT_USAGE);
  const b = Buffer.alloc(4);
  b.writeInt32LE(lv, 0);
  const r = await ctx.execOrFail({ opcode: Op.SET_LOGLEVEL, flags: Flag.CMD_WRITE, dataLength: 4 }, b);
  if (r.rsp.result !== Res.SUCCESS) fail(`failed to set loglevel: ${resultMessage(r.rsp.result)}`);
  return EXIT_SUCCESS;
}

async function logLevelList(ctx: Ctx): Promise<number> {
  LOG_LEVELS.forEach((l, i) => ctx.out(`${l}(${i})\n`));
  return EXIT_SUCCESS;
}

async function vnodesSet(ctx: Ctx, args: string[]): Promise<number> {
  const s = args[0];
  if (s === undefined) throw new CliError(EXIT_USAGE);
  if (!/^[0-9]+$/.test(s) || Number(s) < 1 || Number(s) > 65535) fail(`Invalid number of vnodes: ${s}`, EXIT_USAGE);
  const b = Buffer.alloc(8); // dog passes sizeof(pointer): an i32 and 4 junk bytes
  b.writeInt32LE(Number(s), 0);
  const r = await ctx.execOrFail({ opcode: Op.SET_VNODES, flags: Flag.CMD_WRITE, dataLength: 8 }, b);
  if (r.rsp.result !== Res.SUCCESS) fail(`Failed to set vnodes: ${resultMessage(r.rsp.result)}`);
  return EXIT_SUCCESS;
}

async function mdDisks(ctx: Ctx, t: Target) {
  const r = await ctx.execOrFail({ opcode: Op.MD_INFO, dataLength: SD_MD_INFO_SIZE }, undefined, t);
  if (r.rsp.result !== Res.SUCCESS) fail(`failed to get multi-disk infomation: ${resultMessage(r.rsp.result)}`);
  const b = Buffer.alloc(SD_MD_INFO_SIZE);
  r.data.copy(b);
  return decodeMdInfo(b);
}

async function mdInfoOne(ctx: Ctx, t: Target): Promise<void> {
  ctx.out(mdInfoText(await mdDisks(ctx, t), ctx.raw, `${t.host}:${t.port}`));
}

async function mdInfo(ctx: Ctx, _args: string[], o: Opts): Promise<number> {
  if (ctx.json) {
    // one entry per node asked: the -a/-p node, or every node with -A
    const targets = o.A ? ctx.nodes.map((n, i) => ({ id: i as number | null, t: ctx.nodeTarget(n) })) : [{ id: null, t: ctx.local }];
    const nodes = [];
    for (const { id, t } of targets) nodes.push({ id, address: t.host, port: t.port, disks: (await mdDisks(ctx, t)).map(mdDiskJson) });
    printJson(ctx, { nodes });
    return EXIT_SUCCESS;
  }
  if (!ctx.raw) ctx.out(MD_INFO_HEADER);
  if (!o.A) {
    await mdInfoOne(ctx, ctx.local);
    return EXIT_SUCCESS;
  }
  for (let i = 0; i < ctx.nodes.length; i++) {
    if (!ctx.raw) ctx.out(`Node ${i}:\n`); // raw rows name their node
    await mdInfoOne(ctx, ctx.nodeTarget(ctx.nodes[i]));
  }
  return EXIT_SUCCESS;
}

const MD_WARN = {
  plug: 'Caution! The directories to be plugged will be purged.',
  unplug: 'Caution! Recovery will be triggered after unplugging.',
};

async function mdPlug(ctx: Ctx, args: string[], o: Opts, plug: boolean): Promise<number> {
  const disks = args[0];
  if (disks === undefined) throw new CliError(EXIT_USAGE);
  if (!disks) fail("Empty path isn't allowed");
  if (!o.f) {
    await confirm(ctx,
      `    __\n   ()'\`;\n   /\\|\`  ${plug ? MD_WARN.plug : MD_WARN.unplug}\n  /  |\n(/_)_|_  Are you sure you want to continue? [yes/no]: `);
  }
  const payload = encodeMdPaths(disks);
  const r = await ctx.execOrFail(
    { opcode: plug ? Op.MD_PLUG : Op.MD_UNPLUG, flags: Flag.CMD_WRITE, dataLength: payload.length }, payload);
  if (r.rsp.result !== Res.SUCCESS) fail('Failed to execute request, look for sheep.log for more information');
  return EXIT_SUCCESS;
}

export const nodeCommands: SubCommand[] = [
  { name: 'kill', arg: '<node id>', opts: 'aprhl', desc: 'kill node', needNodeList: true, run: nodeKill },
  { name: 'list', opts: 'aprh', desc: 'list nodes', needNodeList: true, run: (c) => nodeList(c), json: true },
  { name: 'info', opts: 'aprhv', desc: 'show information about each node', needNodeList: true, run: (c) => nodeInfo(c), json: true },
  {
    name: 'recovery', opts: 'aphPr', desc: 'show recovery information of nodes (finished/all)', needNodeList: true, run: nodeRecovery, json: true,
    sub: [
      { name: 'set-throttle', arg: '<max> <interval>', desc: 'set new throttling', needArg: true, run: (c, a) => setThrottle(c, a) },
      { name: 'get-throttle', desc: 'get current throttling', run: (c) => getThrottle(c) },
    ],
  },
  {
    name: 'md', arg: '[disks]', opts: 'aprAfh', desc: "See 'dog node md' for more information", needArg: true,
    sub: [
      { name: 'info', desc: 'show multi-disk information', needNodeList: true, run: mdInfo, json: true },
      { name: 'plug', desc: 'plug more disk(s) into node', needArg: true, run: (c, a, o) => mdPlug(c, a, o, true) },
      { name: 'unplug', desc: 'unplug disk(s) from node', needArg: true, run: (c, a, o) => mdPlug(c, a, o, false) },
    ],
  },
  { name: 'stat', opts: 'aprwh', desc: 'show stat information about the node', run: nodeStat, json: true },
  {
    name: 'scrub', opts: 'aprh', desc: 'show the scrub status of each node', needArg: true,
    sub: [{ name: 'status', desc: 'show the current or last scrub of each node', needNodeList: true, run: (c) => nodeScrubStatus(c), json: true }],
  },
  {
    name: 'log', opts: 'aph', desc: 'show or set log level of the node', needArg: true,
    sub: [
      {
        name: 'level', desc: 'log level', needArg: true,
        sub: [
          { name: 'set', desc: 'set new loglevel', needArg: true, run: (c, a) => logLevelSet(c, a) },
          { name: 'get', desc: 'get current loglevel', run: (c) => logLevelGet(c) },
          { name: 'list', desc: 'list available loglevels', run: (c) => logLevelList(c) },
        ],
      },
    ],
  },
  {
    name: 'vnodes', opts: 'aph', desc: 'set vnodes of the node', needArg: true,
    sub: [{ name: 'set', desc: 'set new vnodes', needArg: true, run: (c, a) => vnodesSet(c, a) }],
  },
];
for (const c of nodeCommands) c.options = nodeOptions;
