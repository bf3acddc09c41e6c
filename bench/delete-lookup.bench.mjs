// Lookups while a big VDI is deleted (issue 17: deleting a VDI held the
// cluster-wide lock while it visited every object, and an unrelated lookup
// waited for all of it; required now: lookup latency during the delete of
// a 100 GiB VDI stays under 50 ms).
//
// A cluster of BENCH_DELETE_NODES nodes (default 3, copies = nodes, -n)
// holds a preallocated VDI of BENCH_DELETE_GB GiB (default 100: 25,600
// objects of 4 MiB on every node) and a small one. The big one is
// preallocated as `collie vdi create -P` does it: every object exists,
// created empty (a sparse file of the object's size plus its block sums,
// about 8 KiB of disk each), so the delete has every object of a 100 GiB
// VDI to reclaim without 100 GiB (times the copies) of disk, which this
// machine does not have; the work per object (drop the reference, remove
// the file on every replica) is the same as for a written one.
// Then DEL_VDI, as QEMU sends it (collie vdi delete, like dog, first
// empties the index itself, entry run by entry run, and leaves sheep
// nothing to reclaim), and GET_VDI_INFO of the small VDI back to back
// (BENCH_LOOKUP_GAP_MS apart, default 5) until the reclaim is done:
// p50 / p99 / max, and the same measured before the delete for comparison.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { SheepClient, Op, Flag, Res, encodeFixedString, decodeReclaimStatus, mergeReclaims } from '@sheepdog/common';
import { startSheep, cleanup, format, ROOT } from './lib.mjs';

const NODES = Number(process.env.BENCH_DELETE_NODES ?? 3);
const GB = Number(process.env.BENCH_DELETE_GB ?? 100);
const GAP = Number(process.env.BENCH_LOOKUP_GAP_MS ?? 5);
const LIMIT_MS = 50;
const COLLIE = path.join(ROOT, 'collie/bin/collie.js');

/** A name and an empty tag, as QEMU sends them. */
const nameTag = (name) => Buffer.concat([encodeFixedString(name, 256), encodeFixedString('', 256)]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, q) => {
  const a = [...xs].sort((x, y) => x - y);
  return a[Math.min(a.length - 1, Math.max(0, Math.ceil(q * a.length) - 1))];
};
const stats = (xs) => `n=${xs.length} p50 ${pct(xs, 0.5).toFixed(2)} ms, p99 ${pct(xs, 0.99).toFixed(2)} ms, max ${Math.max(...xs).toFixed(2)} ms`;

/** When (performance.now()) each lookup of LIMIT_MS or more started, and how long it took. */
const slowAt = [];

async function lookupsUntil(c, done) {
  const lat = [];
  while (!(await done())) {
    const t0 = performance.now();
    const r = await c.send({ opcode: Op.GET_VDI_INFO, flags: Flag.CMD_WRITE, vdi: { snapid: 0 } }, nameTag('other'));
    if (r.rsp.result !== Res.SUCCESS) throw new Error(`lookup failed: ${r.rsp.result}`);
    lat.push(performance.now() - t0);
    if (lat[lat.length - 1] >= LIMIT_MS) slowAt.push([t0, lat[lat.length - 1]]);
    if (GAP) await sleep(GAP);
  }
  return lat;
}

try {
  const copies = Math.min(NODES, 3);
  console.log(`delete-lookup bench: ${NODES} node(s), copies ${copies}, -n; a ${GB} GiB VDI preallocated (${GB * 256} objects), lookups ${GAP} ms apart`);
  const hs = [];
  for (let i = 0; i < NODES; i++) hs.push(await startSheep({ cluster: `local:dlbench-${process.pid}`, zone: i, args: ['-n'] }));
  await sleep(500);
  await format(hs[0].port, copies);
  const port = hs[0].port;
  const collie = (args) => {
    const r = spawnSync(process.execPath, [COLLIE, ...args, '-p', String(port)], { encoding: 'utf8', timeout: 3_600_000 });
    if (r.status !== 0) throw new Error(`collie ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  collie(['vdi', 'create', 'other', '1G']);
  let t = performance.now();
  collie(['vdi', 'create', '-P', 'big', `${GB}G`]);
  console.log(`preallocating ${GB} GiB: ${((performance.now() - t) / 1000).toFixed(1)} s`);
  spawnSync('sync');

  const c = new SheepClient({ port, timeout: 120_000 });
  // every node knows whether the VDI waits; only the one reclaiming (the epoch's first member) knows how far it got
  const status = hs.map((h) => new SheepClient({ port: h.port, timeout: 120_000 }));
  const pending = async () => {
    const all = await Promise.all(status.map(async (sc) => decodeReclaimStatus((await sc.request({ opcode: Op.RECLAIM_STATUS, dataLength: 65536 })).data)));
    return { pending: Math.max(...all.map((x) => x.pending)), entries: mergeReclaims(all) };
  };

  // before: the same lookups for 3 s
  const until = (ms) => { const end = performance.now() + ms; return async () => performance.now() > end; };
  const before = await lookupsUntil(c, until(3000));
  console.log(`lookups before the delete: ${stats(before)}`);

  t = performance.now();
  const d = await c.send({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE, vdi: { snapid: 0 } }, nameTag('big'));
  if (d.rsp.result !== Res.SUCCESS) throw new Error(`DEL_VDI failed: ${d.rsp.result}`);
  const delMs = performance.now() - t;
  console.log(`DEL_VDI answered in ${delMs.toFixed(1)} ms`);

  // during: until no node says the VDI waits (asked at most every 500 ms), progress every 10 s
  const t0 = performance.now();
  let lastAsk = 0;
  let lastPrint = t0;
  let finished = false;
  const done = async () => {
    if (finished) return true;
    const now = performance.now();
    if (now - lastAsk < 500) return false;
    lastAsk = now;
    const st = await pending();
    if (now - lastPrint > 10_000) {
      lastPrint = now;
      const e = st.entries[0];
      if (e) console.log(`  ${((now - t0) / 1000).toFixed(0)} s: ${e.node >= 0 ? e.objectsTotal - e.objectsDone : '?'} objects left`);
    }
    finished = st.pending === 0;
    return finished;
  };
  const during = await lookupsUntil(c, done);
  const secs = (performance.now() - t0) / 1000;
  if (process.env.BENCH_DELETE_SLOW) console.log(`slow lookups (s after DEL_VDI answered: ms): ${slowAt.filter(([at]) => at >= t0).map(([at, ms]) => `${((at - t0) / 1000).toFixed(2)}: ${ms.toFixed(0)}`).join(', ')}`);
  console.log(`reclaimed ${GB * 256} objects in ${secs.toFixed(1)} s (${((GB * 256) / secs).toFixed(0)} objects/s)`);
  console.log(`lookups during the reclaim: ${stats(during)}`);
  // the control: as long again with nothing being deleted (on a shared machine, scheduling alone makes a tail)
  const after = await lookupsUntil(c, until(secs * 1000));
  console.log(`lookups after it, as long again (control): ${stats(after)}`);
  const slow = (xs) => xs.filter((x) => x >= LIMIT_MS).length;
  console.log(`lookups at or over ${LIMIT_MS} ms: ${slow(during)} of ${during.length} during the reclaim, ${slow(after)} of ${after.length} after it`);
  console.log(`lookup latency during the delete: max ${Math.max(...during).toFixed(1)} ms (limit ${LIMIT_MS} ms: ${Math.max(...during) < LIMIT_MS ? 'met' : 'NOT met'})`);
  c.close();
  for (const sc of status) sc.close();
} finally {
  await cleanup();
}
