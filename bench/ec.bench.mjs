// Erasure code throughput (common/src/ec.ts, pure JS table multiply): encode
// of a 4 MiB object into D data + P parity strips, and a degraded decode
// from the last D strips (the first P lost), for the policies operators use.
import { ecSplit, ecJoin, ecEncode, ecDecode } from '@sheepdog/common';

const OBJ = 4 << 20;
const N = Number(process.env.BENCH_EC_ROUNDS ?? 20);
const obj = Buffer.alloc(OBJ);
for (let i = 0; i < OBJ; i++) obj[i] = (i * 7 + (i >> 12)) & 255;
const secs = (fn) => { const t = process.hrtime.bigint(); for (let i = 0; i < N; i++) fn(); return Number(process.hrtime.bigint() - t) / 1e9; };
for (const [d, p] of [[2, 1], [4, 2], [8, 3], [16, 4]]) {
  const data = ecSplit(obj, d);
  const all = [...data, ...ecEncode(data, p)];
  const have = new Map(all.map((b, i) => [i, b]).slice(p));
  const enc = secs(() => ecEncode(ecSplit(obj, d), p));
  const dec = secs(() => ecJoin(ecDecode(d, have)));
  console.log(`${d}:${p}: encode ${(N * OBJ / 1048576 / enc).toFixed(0)} MB/s, degraded decode ${(N * OBJ / 1048576 / dec).toFixed(0)} MB/s (one core, JS)`);
}
