// Recovery after a node loss: 4 sheep, copies=3, 1 GiB written, one node
// killed with SIGKILL; reports the time until every survivor finished
// recovery and the rate of data re-replicated.
import { startSheep, cleanup, format, fillVdi, recoveryState } from './lib.mjs';

const GiB = 1 << 30;
const size = Number(process.env.BENCH_RECOVERY_BYTES ?? GiB);
const cluster = `local:bench-${process.pid}`;
try {
  const nodes = [];
  for (let i = 0; i < 4; i++) nodes.push(await startSheep({ cluster, zone: i, args: process.env.BENCH_SYNC ? [] : ['-n'] }));
  await new Promise((r) => setTimeout(r, 500));
  await format(nodes[0].port, 3);
  const t0 = Date.now();
  const { objects } = await fillVdi(nodes[0].port, 'bench', size);
  const writeSecs = (Date.now() - t0) / 1000;
  console.log(`wrote ${(size / 1048576).toFixed(0)} MiB (${objects} objects, x3 copies) in ${writeSecs.toFixed(1)} s: ${(size / 1048576 / writeSecs).toFixed(1)} MB/s`);
  const victim = nodes[3];
  const survivors = nodes.slice(0, 3);
  const t1 = Date.now();
  await victim.kill();
  let total = 0n;
  for (;;) {
    const st = await Promise.all(survivors.map((n) => recoveryState(n.port)));
    for (const s of st) if (s.nrTotal > total) total = s.nrTotal;
    if (st.every((s) => s.epoch === 2 && !s.inRecovery)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const secs = (Date.now() - t1) / 1000;
  // every object the victim held now has a new third holder
  const moved = Math.round(objects * 3 / 4);
  console.log(`recovery after losing 1 of 4 nodes: ${secs.toFixed(2)} s, about ${moved} objects (${(moved * 4).toFixed(0)} MiB) re-replicated: ${(moved * 4 / secs).toFixed(1)} MB/s`);
  console.log(`(largest per-node recovery list seen: ${total} objects; sync=${process.env.BENCH_SYNC ? 'on' : 'off (-n)'})`);
} finally {
  await cleanup();
}
