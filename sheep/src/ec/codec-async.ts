// The erasure code (common/src/ec.ts) run in slices that let other work in
// between. Measured on the build machine, the pure-JS table multiply does
// 60-75 MB/s for 2:1 and 4:2 (bench/ec.bench.mjs), so a whole 4 MiB object
// would hold the event loop for 50-70 ms; a slice of SLICE bytes per strip
// holds it about 1 ms. The code works byte by byte, so the parity of a
// slice is the slice of the parity.
import { ecEncode, ecDecode } from '@sheepdog/common';

/** Bytes of each strip coded per turn of the event loop. */
const SLICE = 32 * 1024;

const turn = () => new Promise<void>((r) => setImmediate(r));

/** Parity strips 0..p-1 of the D data strips (equal lengths). */
export async function encodeSliced(data: Buffer[], p: number): Promise<Buffer[]> {
  const len = data[0].length;
  if (len <= SLICE) return ecEncode(data, p);
  const out = Array.from({ length: p }, () => Buffer.allocUnsafe(len));
  for (let at = 0; at < len; at += SLICE) {
    const end = Math.min(len, at + SLICE);
    const part = ecEncode(data.map((b) => b.subarray(at, end)), p);
    for (let k = 0; k < p; k++) part[k].copy(out[k], at);
    if (end < len) await turn();
  }
  return out;
}

/** The D data strips from any D of them (index -> strip, equal lengths), as ecDecode. */
export async function decodeSliced(d: number, have: Map<number, Buffer>): Promise<Buffer[]> {
  const idx = [...have.keys()].sort((a, b) => a - b).slice(0, d);
  if (idx.every((i, k) => i === k)) return idx.map((i) => have.get(i)!);
  const len = have.get(idx[0])!.length;
  if (len <= SLICE) return ecDecode(d, have);
  const out = Array.from({ length: d }, () => Buffer.allocUnsafe(len));
  for (let at = 0; at < len; at += SLICE) {
    const end = Math.min(len, at + SLICE);
    const part = ecDecode(d, new Map(idx.map((i) => [i, have.get(i)!.subarray(at, end)])));
    for (let j = 0; j < d; j++) part[j].copy(out[j], at);
    if (end < len) await turn();
  }
  return out;
}
