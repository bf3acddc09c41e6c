// collie cluster scrub / collie node scrub status: this implementation's
// scrub (not in upstream dog). Every node reads and checks the copies it
// holds, at a bounded rate, and brings replicas that differ to the first
// holder's copy (see sheep/src/scrub.ts).
import { Op, Res, resultMessage, addrToString, ScrubStatus } from '@sheepdog/common';
import type { Opts } from '../cli.js';
import type { Ctx } from '../conn.js';
import { findVdi } from '../conn.js';
import { CliError, EXIT_SUCCESS, EXIT_FAILURE, EXIT_USAGE } from '../exitcodes.js';
import { renderBar } from '../progress.js';
import { printJson } from '../json.js';


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function statusOf(ctx: Ctx, i: number): Promise<ScrubStatus> {
  const r = await ctx.execOrFail({ opcode: Op.SCRUB_STATUS, dataLength: 4096 }, undefined, ctx.nodeTarget(ctx.nodes[i]));
  if (r.rsp.result !== Res.SUCCESS) throw new CliError(EXIT_FAILURE, `Failed to get the scrub status: ${resultMessage(r.rsp.result)}`);
  return JSON.parse(r.data.toString('utf8')) as ScrubStatus;
}

/** collie cluster scrub [--vdi NAME] [--rate MB/s]: scrub on every node, with a progress bar, then what was found. */
export async function clusterScrub(ctx: Ctx, _args: string[], o: Opts): Promise<number> {
  const rate = typeof o.e === 'string' ? Number(o.e) : 0;
  if (typeof o.e === 'string' && !(Number.isInteger(rate) && rate >= 1 && rate <= 100_000)) {
    throw new CliError(EXIT_USAGE, `Invalid scrub rate '${o.e}': a whole number of MB/s from 1 to 100000`);
  }
  const vid = typeof o.i === 'string' ? await findVdi(ctx, o.i, 0, '') : 0;
  for (const n of ctx.nodes) {
    const r = await ctx.execOrFail({ opcode: Op.SCRUB, obj: { oid: BigInt(vid), offset: rate } }, undefined, ctx.nodeTarget(n));
    if (r.rsp.result !== Res.SUCCESS) throw new CliError(EXIT_FAILURE, `Failed to start a scrub on ${addrToString(n.addr)}:${n.port}: ${resultMessage(r.rsp.result)}`);
  }
  const t0 = Date.now();
  let all: ScrubStatus[];
  for (;;) {
    all = await Promise.all(ctx.nodes.map((_, i) => statusOf(ctx, i)));
    const checked = all.reduce((a, s) => a + s.checked, 0);
    const total = all.reduce((a, s) => a + s.total, 0);
    if (!ctx.raw && !ctx.json && process.stderr.isTTY) process.stderr.write('\r' + renderBar(BigInt(checked), BigInt(Math.max(total, 1))));
    // done when every node has finished a scrub that started after we asked
    if (all.every((s) => !s.running && s.finished >= t0 - 1000)) break;
    await sleep(500);
  }
  if (!ctx.raw && !ctx.json && process.stderr.isTTY) process.stderr.write('\n');
  const sum = (k: 'checked' | 'damaged' | 'divergent' | 'bytes') => all.reduce((a, s) => a + s[k], 0);
  if (ctx.json) {
    printJson(ctx, { objects: sum('checked'), bytes: sum('bytes'), damaged: sum('damaged'), divergent: sum('divergent') });
  } else {
    ctx.out(`Scrubbed ${sum('checked')} object cop${sum('checked') === 1 ? 'y' : 'ies'} (${(sum('bytes') / 1e6).toFixed(1)} MB): ` +
      `${sum('damaged')} damaged and repaired from another replica, ${sum('divergent')} replica(s) that differed brought back in line\n`);
  }
  return EXIT_SUCCESS;
}

/** collie node scrub status: each node's current or last scrub. */
export async function nodeScrubStatus(ctx: Ctx): Promise<number> {
  const all = await Promise.all(ctx.nodes.map((_, i) => statusOf(ctx, i)));
  const when = (ms: number) => (ms ? new Date(ms).toISOString() : '-');
  if (ctx.json) {
    printJson(ctx, {
      nodes: all.map((s, i) => ({
        id: i, host: addrToString(ctx.nodes[i].addr), port: ctx.nodes[i].port, running: s.running, checked: s.checked, total: s.total,
        bytes: s.bytes, damaged: s.damaged, divergent: s.divergent, started: s.started ? when(s.started) : null, finished: s.finished ? when(s.finished) : null,
      })),
    });
    return EXIT_SUCCESS;
  }
  if (!ctx.raw) ctx.out('  Id   Host:Port         Status     Checked/Total   Damaged  Differed  Finished\n');
  all.forEach((s, i) => {
    const n = ctx.nodes[i];
    const state = s.running ? 'running' : s.finished ? 'done' : 'never';
    const hp = `${addrToString(n.addr)}:${n.port}`;
    if (ctx.raw) ctx.out(`${i} ${hp} ${state} ${s.checked} ${s.total} ${s.damaged} ${s.divergent} ${s.finished ? Math.floor(s.finished / 1000) : 0}\n`);
    else ctx.out(`${String(i).padStart(4)}   ${hp.padEnd(18)}${state.padEnd(11)}${`${s.checked}/${s.total}`.padStart(13)}${String(s.damaged).padStart(10)}${String(s.divergent).padStart(10)}  ${when(s.finished)}\n`);
  });
  return EXIT_SUCCESS;
}
