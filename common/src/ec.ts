// Erasure coding as upstream sheepdog 1.0 does it, bit for bit (see
// erasure-coding-and-md.md, A.4 and A.6): a systematic Reed-Solomon code
// over GF(2^8) (polynomial 0x11D, generator 2) built zfec's way from a
// Vandermonde matrix; an object is cut into 512-byte stripes, stripe n's
// data strip j (512/D bytes) goes to strip file j, and parity file D+k holds
// at each position the parity of that position in the D data files.
//
// Everything works on whole strip files: the code is byte by byte, so the
// parity of a file is the parity of its bytes. Multiplication is by
// 256-entry tables, one per coefficient in use.

/** Data bytes per stripe (SD_EC_DATA_STRIPE_SIZE). */
export const EC_STRIPE = 512;
export const EC_DATA_WIDTHS = [2, 4, 8, 16] as const;
export const EC_MAX_PARITY = 15;

const EXP = new Uint8Array(510);
const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 510; i++) EXP[i] = EXP[i - 255];
}

export function gfMul(a: number, b: number): number {
  return a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]];
}

function gfInv(a: number): number {
  if (a === 0) throw new Error('GF(2^8): 0 has no inverse');
  return EXP[255 - LOG[a]];
}

/** The inverse of a square matrix over GF(2^8) (Gauss-Jordan); throws if singular. */
export function gfInvert(m: number[][]): number[][] {
  const n = m.length;
  const a = m.map((r, i) => [...r, ...Array.from({ length: n }, (_, j) => (i === j ? 1 : 0))]);
  for (let c = 0; c < n; c++) {
    let p = c;
    while (p < n && a[p][c] === 0) p++;
    if (p === n) throw new Error('singular matrix');
    [a[c], a[p]] = [a[p], a[c]];
    const inv = gfInv(a[c][c]);
    for (let j = 0; j < 2 * n; j++) a[c][j] = gfMul(a[c][j], inv);
    for (let r = 0; r < n; r++) {
      if (r === c || a[r][c] === 0) continue;
      const f = a[r][c];
      for (let j = 0; j < 2 * n; j++) a[r][j] ^= gfMul(f, a[c][j]);
    }
  }
  return a.map((r) => r.slice(n));
}

function matMul(a: number[][], b: number[][]): number[][] {
  return a.map((row) => b[0].map((_, c) => row.reduce((acc, v, k) => acc ^ gfMul(v, b[k][c]), 0)));
}

const matrices = new Map<number, number[][]>();

/**
 * The (D+EC_MAX_PARITY) x D encoding matrix E = V * T^-1: its top D rows
 * are the identity, row D+k is parity k (the same for every P).
 */
export function ecMatrix(d: number): number[][] {
  let e = matrices.get(d);
  if (e) return e;
  const rows = d + EC_MAX_PARITY;
  const v = Array.from({ length: rows }, (_, r) => Array.from({ length: d }, (_, c) => (r === 0 ? (c === 0 ? 1 : 0) : EXP[((r - 1) * c) % 255])));
  e = matMul(v, gfInvert(v.slice(0, d)));
  matrices.set(d, e);
  return e;
}

/** Multiply-by-c tables, made once per coefficient. */
const tables = new Map<number, Uint8Array>();
function mulTable(c: number): Uint8Array {
  let t = tables.get(c);
  if (!t) {
    t = new Uint8Array(256);
    for (let x = 0; x < 256; x++) t[x] = gfMul(c, x);
    tables.set(c, t);
  }
  return t;
}

/** out ^= c * src, byte by byte. */
function mulAdd(out: Uint8Array, src: Uint8Array, c: number): void {
  if (c === 0) return;
  if (c === 1) {
    for (let i = 0; i < out.length; i++) out[i] ^= src[i];
    return;
  }
  const t = mulTable(c);
  for (let i = 0; i < out.length; i++) out[i] ^= t[src[i]];
}

export function checkEcPolicy(d: number, p: number): void {
  if (!(EC_DATA_WIDTHS as readonly number[]).includes(d)) throw new Error(`erasure code data strips must be 2, 4, 8 or 16, not ${d}`);
  if (!Number.isInteger(p) || p < 1 || p > EC_MAX_PARITY) throw new Error(`erasure code parity strips must be 1 to ${EC_MAX_PARITY}, not ${p}`);
}

/** An EC policy as the copy_policy byte carries it (A.2): D/2 in the high nibble, P in the low one. */
export function ecPolicyByte(d: number, p: number): number {
  checkEcPolicy(d, p);
  return ((d / 2) << 4) | p;
}

/** D and P of a copy_policy byte; undefined for 0 (replication) or a byte no valid policy makes. */
export function decodeEcPolicy(cp: number): { d: number; p: number } | undefined {
  if (!cp) return undefined;
  const d = 2 * (cp >> 4);
  const p = cp & 0x0f;
  if (!(EC_DATA_WIDTHS as readonly number[]).includes(d) || p < 1 || d + p > 31) return undefined;
  return { d, p };
}

/** Parse an upstream `-c` value: "N" (replication, copy_policy 0) or "D:P"; undefined when dog rejects it (A.1). */
export function parseRedundancy(v: string): { copies: number; copyPolicy: number } | undefined {
  const m = /^(\d+)(?::(\d+))?$/.exec(v);
  if (!m) return undefined;
  const a = Number(m[1]);
  if (m[2] === undefined) return a >= 1 && a <= 31 ? { copies: a, copyPolicy: 0 } : undefined;
  const p = Number(m[2]);
  if (!(EC_DATA_WIDTHS as readonly number[]).includes(a) || p < 1 || p > EC_MAX_PARITY) return undefined;
  return { copies: a + p, copyPolicy: ecPolicyByte(a, p) };
}

/** How dog shows a redundancy: "3" or "4:2". */
export function formatRedundancy(copies: number, copyPolicy: number): string {
  const ec = decodeEcPolicy(copyPolicy);
  return ec ? `${ec.d}:${ec.p}` : String(copies);
}

/** The D data strip files of an object (its length a multiple of 512): strip j of every stripe, in order. */
export function ecSplit(obj: Buffer, d: number): Buffer[] {
  if (obj.length % EC_STRIPE) throw new Error(`an erasure-coded object is a whole number of ${EC_STRIPE}-byte stripes`);
  const s = EC_STRIPE / d;
  const n = obj.length / EC_STRIPE;
  const out = Array.from({ length: d }, () => Buffer.allocUnsafe(n * s));
  for (let st = 0; st < n; st++) for (let j = 0; j < d; j++) obj.copy(out[j], st * s, st * EC_STRIPE + j * s, st * EC_STRIPE + (j + 1) * s);
  return out;
}

/** The object whose data strip files these are (ecSplit undone). */
export function ecJoin(strips: Buffer[]): Buffer {
  const d = strips.length;
  const s = EC_STRIPE / d;
  const n = strips[0].length / s;
  const obj = Buffer.allocUnsafe(n * EC_STRIPE);
  for (let st = 0; st < n; st++) for (let j = 0; j < d; j++) strips[j].copy(obj, st * EC_STRIPE + j * s, st * s, (st + 1) * s);
  return obj;
}

/** Parity files 0..p-1 of D data strip files (equal lengths). */
export function ecEncode(data: Buffer[], p: number): Buffer[] {
  const d = data.length;
  checkEcPolicy(d, p);
  const e = ecMatrix(d);
  return Array.from({ length: p }, (_, k) => {
    const out = Buffer.alloc(data[0].length);
    for (let j = 0; j < d; j++) mulAdd(out, data[j], e[d + k][j]);
    return out;
  });
}

/**
 * The D data strip files from any D strip files of the object, given as
 * index -> file (indices 0..D-1 data, D.. parity), as upstream decodes:
 * the first D given in ascending index order are used.
 */
export function ecDecode(d: number, have: Map<number, Buffer>): Buffer[] {
  const idx = [...have.keys()].sort((a, b) => a - b).slice(0, d);
  if (idx.length < d) throw new Error(`${idx.length} strips of an object that needs ${d} to be read`);
  if (idx.every((i, k) => i === k)) return idx.map((i) => have.get(i)!);
  const e = ecMatrix(d);
  const inv = gfInvert(idx.map((i) => e[i]));
  const inputs = idx.map((i) => have.get(i)!);
  return inv.map((row) => {
    const out = Buffer.alloc(inputs[0].length);
    row.forEach((c, m) => mulAdd(out, inputs[m], c));
    return out;
  });
}
