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

/** Stripes (512 bytes each) cut or joined per turn of the event loop. */
const STRIPES_PER_TURN = 256;

/**
 * Copy strip j of stripes [from, to) between an object image and strip
 * files. Buffer.copy per strip costs a native call each (8192 stripes x D
 * per 4 MiB: 15-65 ms measured); a word loop over aligned memory is a
 * fraction of that.
 */
function moveStrips(obj: Buffer, strips: Buffer[], from: number, to: number, toStrips: boolean): void {
  const d = strips.length;
  const s = 512 / d;
  const aligned = obj.byteOffset % 4 === 0 && strips.every((b) => b.byteOffset % 4 === 0);
  if (aligned) {
    const o32 = new Uint32Array(obj.buffer, obj.byteOffset, obj.length >> 2);
    const w = s >> 2;
    for (let j = 0; j < d; j++) {
      const t32 = new Uint32Array(strips[j].buffer, strips[j].byteOffset, strips[j].length >> 2);
      for (let st = from; st < to; st++) {
        let oi = (st * 512 + j * s) >> 2;
        let ti = st * w;
        if (toStrips) for (let k = 0; k < w; k++) t32[ti++] = o32[oi++];
        else for (let k = 0; k < w; k++) o32[oi++] = t32[ti++];
      }
    }
    return;
  }
  for (let j = 0; j < d; j++) {
    const t = strips[j];
    for (let st = from; st < to; st++) {
      let oi = st * 512 + j * s;
      let ti = st * s;
      if (toStrips) for (let k = 0; k < s; k++) t[ti++] = obj[oi++];
      else for (let k = 0; k < s; k++) obj[oi++] = t[ti++];
    }
  }
}

/** ecSplit in slices: the D data strip files of an object image (a whole number of stripes). */
export async function splitSliced(obj: Buffer, d: number): Promise<Buffer[]> {
  const n = obj.length / 512;
  // Buffer.alloc, not the shared pool: word views need the strips 4-byte aligned
  const strips = Array.from({ length: d }, () => Buffer.alloc((n * 512) / d));
  for (let st = 0; st < n; st += STRIPES_PER_TURN) {
    moveStrips(obj, strips, st, Math.min(n, st + STRIPES_PER_TURN), true);
    if (st + STRIPES_PER_TURN < n) await turn();
  }
  return strips;
}

/** ecJoin in slices: the object image of its D data strip files. */
export async function joinSliced(strips: Buffer[]): Promise<Buffer> {
  const d = strips.length;
  const n = (strips[0].length * d) / 512;
  const obj = Buffer.alloc(n * 512);
  for (let st = 0; st < n; st += STRIPES_PER_TURN) {
    moveStrips(obj, strips, st, Math.min(n, st + STRIPES_PER_TURN), false);
    if (st + STRIPES_PER_TURN < n) await turn();
  }
  return obj;
}
