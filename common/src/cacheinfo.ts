// GET_CACHE_INFO (0xB6) reply: the object cache of one sheep (sheep -w).
// Layout (little endian): a 48-byte header, then one 16-byte record per VDI.
//   @0  u64 size      cache capacity in bytes (0 = no cache on this node)
//   @8  u64 used      bytes held by cached objects
//   @16 u64 hits      reads served from the cache
//   @24 u64 misses    reads that fetched the object from the cluster
//   @32 u32 count     number of VDI records that follow
//   @36 u32 flags     bit 0: directio, bit 1: cache enabled
//   @40 u64 reserved
// record: u32 vid, u32 objects cached, u32 objects dirty, u32 index entries pending
export const CACHE_INFO_HEADER_SIZE = 48;
export const CACHE_INFO_RECORD_SIZE = 16;
export const CacheInfoFlag = { DIRECTIO: 1, ENABLED: 2 } as const;

export interface CacheVdiInfo {
  vid: number;
  objects: number;
  dirty: number;
  pendingIndex: number;
}

export interface CacheInfo {
  size: bigint;
  used: bigint;
  hits: bigint;
  misses: bigint;
  flags: number;
  vdis: CacheVdiInfo[];
}

export function encodeCacheInfo(c: CacheInfo, maxLen = Infinity): Buffer {
  const fit = Math.max(0, Math.floor((maxLen - CACHE_INFO_HEADER_SIZE) / CACHE_INFO_RECORD_SIZE));
  const vdis = c.vdis.slice(0, Number.isFinite(fit) ? fit : c.vdis.length);
  const b = Buffer.alloc(CACHE_INFO_HEADER_SIZE + vdis.length * CACHE_INFO_RECORD_SIZE);
  b.writeBigUInt64LE(c.size, 0);
  b.writeBigUInt64LE(c.used, 8);
  b.writeBigUInt64LE(c.hits, 16);
  b.writeBigUInt64LE(c.misses, 24);
  b.writeUInt32LE(vdis.length, 32);
  b.writeUInt32LE(c.flags, 36);
  vdis.forEach((v, i) => {
    const o = CACHE_INFO_HEADER_SIZE + i * CACHE_INFO_RECORD_SIZE;
    b.writeUInt32LE(v.vid, o);
    b.writeUInt32LE(v.objects, o + 4);
    b.writeUInt32LE(v.dirty, o + 8);
    b.writeUInt32LE(v.pendingIndex, o + 12);
  });
  return b;
}

export function decodeCacheInfo(b: Buffer): CacheInfo {
  if (b.length < CACHE_INFO_HEADER_SIZE) return { size: 0n, used: 0n, hits: 0n, misses: 0n, flags: 0, vdis: [] };
  const n = Math.min(b.readUInt32LE(32), Math.floor((b.length - CACHE_INFO_HEADER_SIZE) / CACHE_INFO_RECORD_SIZE));
  const vdis: CacheVdiInfo[] = [];
  for (let i = 0; i < n; i++) {
    const o = CACHE_INFO_HEADER_SIZE + i * CACHE_INFO_RECORD_SIZE;
    vdis.push({ vid: b.readUInt32LE(o), objects: b.readUInt32LE(o + 4), dirty: b.readUInt32LE(o + 8), pendingIndex: b.readUInt32LE(o + 12) });
  }
  return {
    size: b.readBigUInt64LE(0), used: b.readBigUInt64LE(8), hits: b.readBigUInt64LE(16), misses: b.readBigUInt64LE(24),
    flags: b.readUInt32LE(36), vdis,
  };
}
