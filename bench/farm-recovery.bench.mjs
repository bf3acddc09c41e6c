// Recovery of a node that was away for a while (BENCH_AWAY_SECONDS, default
// 60) while the cluster took 4 KiB random writes (BENCH_AWAY_IOPS, default
// 50, a quiet VM's rate), plain store vs farm store: 3 sheep, copies=3, -n,
// BENCH_AWAY_BYTES (default 1 GiB) written first.
// The farm node fetches only the 128 KiB slices that changed; the plain one
// fetches every changed object whole. Reports the time from its restart to
// the end of recovery everywhere, and what it fetched (its log says).
import { readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { SheepClient, Op, Flag, timestamp64, vidToDataOid } from '@sheepdog/common';
import { startSheep, cleanup, fillVdi, recoveryState } from './lib.mjs';

const bytes = Number(process.env.BENCH_AWAY_BYTES ?? 1 << 30);
const iops = Number(process.env.BENCH_AWAY_IOPS ?? 50);
const awaySecs = Number(process.env.BENCH_AWAY_SECONDS ?? 60);
const OBJ = 4 << 20;

async function settle(nodes, minEpoch) {
  for (;;) {
    const st = await Promise.all(nodes.map((n) => recoveryState(n.port).catch(() => undefined)));
    if (st.every((s) => s && s.epoch >= minEpoch && !s.inRecovery) && new Set(st.map((s) => s.epoch)).size === 1) return st[0].epoch;
    await new Promise((r) => setTimeout(r, 50));
  }
}

try {
  for (const store of ['plain', 'farm']) {
    const cluster = `local:bench-away-${store}-${process.pid}`;
    const nodes = [];
    for (let z = 0; z < 3; z++) nodes.push(await startSheep({ cluster, zone: z, args: ['-n'] }));
    await new Promise((r) => setTimeout(r, 500));
    const c0 = new SheepClient({ port: nodes[0].port, timeout: 60_000 });
    await c0.request({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 3, ctime: timestamp64(), flags: 4 } }, Buffer.from(`${store}\0`));
    const { vid, objects } = await fillVdi(nodes[0].port, 'away', bytes);
    const e0 = await settle(nodes, 1);
    const away = nodes[2];
    await away.kill();
    await settle(nodes.slice(0, 2), e0 + 1);
    // the cluster goes on without it: 4 KiB random writes at iops
    const start = Date.now();
    const end = start + awaySecs * 1000;
    let writes = 0;
    const touched = new Set();
    const slices = new Set();
    const worker = async () => {
      while (Date.now() < end) {
        const due = start + (writes * 1000) / iops;
        if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
        const i = Math.floor(Math.random() * objects);
        const off = Math.floor(Math.random() * (OBJ / 4096)) * 4096;
        await c0.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, i), offset: off } }, randomBytes(4096));
        touched.add(i);
        slices.add(`${i}:${off >> 17}`);
        writes++;
      }
    };
    await worker();
    c0.close();
    const logFile = path.join(away.dir, 'sheep.log');
    const from = statSync(logFile).size;
    const t = Date.now();
    nodes[2] = await startSheep({ cluster, zone: 2, args: ['-n'], dir: away.dir, port: away.port });
    await settle(nodes, e0 + 2);
    const secs = (Date.now() - t) / 1000;
    const log = readFileSync(logFile).subarray(from).toString();
    let fetched = 0;
    for (const m of log.matchAll(/done: .*?, ([\d.]+) MiB fetched/g)) fetched += Number(m[1]);
    console.log(`${store}: away ${awaySecs} s while ${writes} 4 KiB writes changed ${slices.size} of ${objects * 32} slices in ${touched.size} of ${objects} objects; back: recovered in ${secs.toFixed(2)} s, ${fetched.toFixed(1)} MiB fetched`);
    for (const n of nodes) await n.kill();
  }
} finally {
  await cleanup();
}
