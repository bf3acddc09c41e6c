// FNV-1a 64 and the hashes built on it (spec §8), the vnode ring and
// replica placement (§11).
export const FNV1A_64_INIT = 0xcbf29ce484222325n;
const FNV_64_PRIME = 0x100000001b3n;
const M64 = 0xffffffffffffffffn;

export function fnv1a(buf: Uint8Array, h0: bigint = FNV1A_64_INIT): bigint {
  let h = h0;
  for (let i = 0; i < buf.length; i++) {
    h ^= BigInt(buf[i]);
    h = (h * FNV_64_PRIME) & M64;
  }
  return h;
}

const u64buf = Buffer.alloc(8);
export function fold64(x: bigint, h: bigint): bigint {
  u64buf.writeBigUInt64LE(x & M64, 0);
  return fnv1a(u64buf, h);
}

export const mix = (h: bigint): bigint => fold64(h, h);

// The placement hash runs on every object request, and the BigInt version
// allocates ~50 BigInts per call. The same arithmetic on 32-bit halves in
// doubles (every intermediate stays below 2^53, so it is exact):
// h * (2^40 + 0x1b3) mod 2^64, with h = hi * 2^32 + lo.
let fh = 0;
let fl = 0;
function fnvWord(w: number): void {
  for (let i = 0; i < 4; i++) {
    fl = (fl ^ ((w >>> (8 * i)) & 0xff)) >>> 0;
    const tl = fl * 0x1b3;
    fh = (fh * 0x1b3 + Math.floor(tl / 0x100000000) + ((fl << 8) >>> 0)) >>> 0;
    fl = tl >>> 0;
  }
}

/**
 * sdHashOid as 32-bit halves: out[0] the high, out[1] the low (hot paths
 * that compare hashes as halves build no BigInt).
 */
export function sdHashOidHalves(oid: bigint, out: Uint32Array): void {
  const lo = Number(oid & 0xffffffffn);
  const hi = Number((oid >> 32n) & 0xffffffffn);
  fh = 0xcbf29ce4;
  fl = 0x84222325;
  fnvWord(lo);
  fnvWord(hi);
  // mix: fold the 8 bytes of h into h
  const h1 = fh;
  const l1 = fl;
  fnvWord(l1);
  fnvWord(h1);
  out[0] = fh;
  out[1] = fl;
}

const halves = new Uint32Array(2);

/** Object placement hash (§8.1): mix(fold64(oid, FNV1A_64_INIT)). */
export function sdHashOid(oid: bigint): bigint {
  sdHashOidHalves(oid, halves);
  return (BigInt(halves[0]) << 32n) | BigInt(halves[1]);
}

/** Generic buffer hash (§8.3). */
export const sdHash = (buf: Uint8Array): bigint => mix(fnv1a(buf));

/** 24-bit VDI name hash (§8.2); the first VDI id of a name. */
export function hash24(name: string | Buffer): number {
  const b = typeof name === 'string' ? Buffer.from(name, 'utf8') : name;
  return Number(fnv1a(b) & 0xffffffn);
}

/** Attribute slot hash over name[256] ‖ tag[256] ‖ snap_id ‖ key[256] (§8.4). */
export function attrHash(record: Buffer): number {
  let h = fnv1a(record.subarray(0, 512));
  h = fnv1a(record.subarray(520, 524), h);
  h = fnv1a(record.subarray(528, 784), h);
  return Number(h & 0xffffffffn);
}
