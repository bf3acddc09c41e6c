// Helpers shared by the command modules.
import { Op, Res, ReclaimFlag, decodeReclaimStatus, mergeReclaims } from '@sheepdog/common';
import type { ReclaimEntry, ReclaimStatus } from '@sheepdog/common';
import type { Ctx, Target } from '../conn.js';
import { CliError, EXIT_SUCCESS } from '../exitcodes.js';
import { stdin } from '../io.js';

/** dog's confirm(): print the question, anything but "yes" exits 0. */
export async function confirm(ctx: Ctx, message: string): Promise<void> {
  ctx.out(message);
  const line = await stdin().readLine(8);
  if (line === null || !/^yes/i.test(line)) throw new CliError(EXIT_SUCCESS);
}

/** One node's RECLAIM_STATUS; undefined if it cannot say (a sheep without the opcode, or unreachable). */
async function reclaimOf(ctx: Ctx, t: Target): Promise<ReclaimStatus | undefined> {
  try {
    const r = await ctx.exec({ opcode: Op.RECLAIM_STATUS, dataLength: 64 * 1024 }, undefined, t);
    return r.rsp.result === Res.SUCCESS ? decodeReclaimStatus(r.data) : undefined;
  } catch {
    return undefined;
  }
}

export interface Reclaiming extends ReclaimEntry {
  /** host:port of the node reclaiming it now (undefined: waiting its turn). */
  by?: string;
}

/**
 * The deleted VDIs whose objects are still being reclaimed, with the
 * progress of the node at it (the first member of the epoch). Asks the
 * -a/-p node first, and the others only when something is pending and
 * that node is not the one reclaiming (the node list is loaded if need be).
 */
export async function reclaiming(ctx: Ctx): Promise<Reclaiming[]> {
  const local = await reclaimOf(ctx, ctx.local);
  if (!local?.entries.length) return [];
  const hp = (t: Target) => `${t.host}:${t.port}`;
  if (local.entries.some((e) => e.flags & ReclaimFlag.RUNNING)) {
    return mergeReclaims([local]).map((e) => ({ ...e, by: e.node === 0 ? hp(ctx.local) : undefined }));
  }
  if (!ctx.nodes.length) await ctx.loadNodeList();
  const targets = ctx.nodes.map((n) => ctx.nodeTarget(n));
  const replies = await Promise.all(targets.map((t) => reclaimOf(ctx, t)));
  replies.push(local);
  return mergeReclaims(replies).map((e) => ({ ...e, by: e.node >= 0 && e.node < targets.length ? hp(targets[e.node]) : undefined }));
}
