// The md disk ring (erasure-coding-and-md.md B.2): which of a node's disks
// an object is on. Each disk has one point per virtual disk of its size,
// generated like the node ring's vnodes; an object goes to the disk of the
// first point at or after sd_hash_oid(oid), the _idx of a strip playing no
// part.
import { sdHash, sdHashOidHalves } from '@sheepdog/common';

/**
 * Bytes per virtual disk. Upstream master (after 611e8c48, and the
 * reference binary the doc was checked against) uses 16 MiB; tag v1.0 used
 * 1 GiB. The two place objects on different disks; we follow master.
 */
export const MD_VDISK_SIZE = 16 * 1024 * 1024;

const M32 = 0x100000000;

/** sd_hash of a string (the disk's trimmed path), as halves. */
function hashPath(p: string): [number, number] {
  const h = sdHash(Buffer.from(p, 'utf8'));
  return [Number(h >> 32n), Number(h & 0xffffffffn)];
}

const KEY = new Uint32Array(2);

/** Points as (hi, lo) halves: a disk of many TiB has a million of them, which BigInts would make slow to build and sort. */
interface Points {
  hi: Uint32Array;
  lo: Uint32Array;
}

function generate(p: string, nr: number): Points {
  const hi = new Uint32Array(nr);
  const lo = new Uint32Array(nr);
  // sd_hash_next on 32-bit halves in doubles (exact: every intermediate stays
  // below 2^53), inlined on locals: this loop makes every point of a disk (a
  // million for a large one), which BigInts would make crawl
  let [h, l] = hashPath(p);
  for (let i = 0; i < nr; i++) {
    const wl = l;
    const wh = h;
    for (let k = 0; k < 8; k++) {
      const byte = k < 4 ? (wl >>> (8 * k)) & 0xff : (wh >>> (8 * (k - 4))) & 0xff;
      l = (l ^ byte) >>> 0;
      const tl = l * 0x1b3;
      h = (h * 0x1b3 + Math.floor(tl / M32) + ((l << 8) >>> 0)) >>> 0;
      l = tl >>> 0;
    }
    hi[i] = h;
    lo[i] = l;
  }
  return { hi, lo };
}

/** A disk's ring points: h = sd_hash(path); then nr times h = sd_hash_next(h), each a point (the seed is not one). */
export function diskPoints(p: string, nr: number): bigint[] {
  const { hi, lo } = generate(p, nr);
  return Array.from(hi, (h, i) => (BigInt(h) << 32n) | BigInt(lo[i]));
}

/** A disk's points, sorted; kept per path and count, so a ring change builds nothing. */
const sortedCache = new Map<string, Points>();

function sortedPoints(p: string, nr: number): Points {
  const key = `${nr}:${p}`;
  let s = sortedCache.get(key);
  if (s) return s;
  const { hi, lo } = generate(p, nr);
  let idx: Uint32Array;
  if (nr <= 1 << 21) {
    // (hi, index) packed exactly in a double sorts natively, far faster than a comparator;
    // points whose high halves are equal are then put in order by their low halves
    const keys = new Float64Array(nr);
    for (let i = 0; i < nr; i++) keys[i] = hi[i] * (1 << 21) + i;
    keys.sort();
    idx = new Uint32Array(nr);
    for (let i = 0; i < nr; i++) idx[i] = keys[i] % (1 << 21);
    for (let i = 1; i < nr; i++) {
      for (let j = i; j > 0 && hi[idx[j]] === hi[idx[j - 1]] && lo[idx[j]] < lo[idx[j - 1]]; j--) {
        const t = idx[j];
        idx[j] = idx[j - 1];
        idx[j - 1] = t;
      }
    }
  } else {
    idx = Uint32Array.from({ length: nr }, (_, i) => i);
    idx.sort((a, b) => hi[a] - hi[b] || lo[a] - lo[b]);
  }
  s = { hi: idx.map((i) => hi[i]), lo: idx.map((i) => lo[i]) };
  if (sortedCache.size > 256) sortedCache.clear();
  sortedCache.set(key, s);
  return s;
}

/** Virtual disks of a disk of size bytes (at least one, so a full disk still takes part). */
export const vdiskCount = (size: number): number => Math.max(1, Math.ceil(size / MD_VDISK_SIZE));

export interface Disk {
  path: string;
  /** Bytes, as measured on first use and kept in user.md.size. */
  size: number;
}

/**
 * The object -> disk ring over a set of disks. Each disk's points stay in
 * their own sorted array and a lookup searches each: the successor on the
 * ring is the smallest of the disks' successors. So a ring change (a disk
 * plugged, unplugged or failed) costs nothing to build, and a lookup a few
 * binary searches (at most 64 disks).
 */
export class DiskRing {
  private readonly parts: Points[];
  /** Answers already computed on this ring; bounded. */
  private memo = new Map<bigint, Disk>();
  constructor(readonly disks: Disk[]) {
    this.parts = disks.map((d) => sortedPoints(d.path, vdiskCount(d.size)));
  }

  /** The disk of oid: the first point >= sd_hash_oid(oid), wrapping (equal points: the earlier disk); undefined with no disks. */
  diskOf(oid: bigint): Disk | undefined {
    const hit = this.memo.get(oid);
    if (hit) return hit;
    if (!this.parts.length) return undefined;
    sdHashOidHalves(oid, KEY);
    const kh = KEY[0];
    const kl = KEY[1];
    // best successor at or after the key, and the smallest point overall (for the wrap)
    let best = -1, bh = 0, bl = 0;
    let low = -1, lh = 0, ll = 0;
    for (let d = 0; d < this.parts.length; d++) {
      const { hi, lo } = this.parts[d];
      const n = hi.length;
      if (low < 0 || hi[0] < lh || (hi[0] === lh && lo[0] < ll)) { low = d; lh = hi[0]; ll = lo[0]; }
      let a = 0;
      let b = n;
      while (a < b) {
        const m = (a + b) >>> 1;
        if (hi[m] < kh || (hi[m] === kh && lo[m] < kl)) a = m + 1;
        else b = m;
      }
      if (a === n) continue;
      if (best < 0 || hi[a] < bh || (hi[a] === bh && lo[a] < bl)) { best = d; bh = hi[a]; bl = lo[a]; }
    }
    const disk = this.disks[best >= 0 ? best : low];
    if (this.memo.size >= 1 << 16) this.memo.clear();
    this.memo.set(oid, disk);
    return disk;
  }
}

