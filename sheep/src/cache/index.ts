// The object cache's entry points for the rest of the daemon: option
// parsing, construction, the NBD backend and the cache opcodes.
import * as path from 'node:path';
import {
  Res, RequestHeader, oidToVid, encodeCacheInfo,
  CACHE_INFO_HEADER_SIZE, CacheInfoFlag,
} from '@sheepdog/common';
import type { Sheep } from '../sheep.js';
import type { Reply } from '../ops.js';
import { ObjectCache, CacheOptions, ObjIO } from './cache.js';
import { GatewayBackend } from '../nbd/backend.js';

export { ObjectCache, CacheOptions, ObjIO };

/** -w size=MB,dir=PATH[,directio] (dir defaults to DATADIR/cache). */
export function parseCacheOpt(v: string): { sizeMB: number; dir?: string; directio: boolean } {
  let sizeMB: number | undefined;
  let dir: string | undefined;
  let directio = false;
  for (const kv of v.split(',')) {
    const i = kv.indexOf('=');
    const k = i < 0 ? kv : kv.slice(0, i);
    const val = i < 0 ? '' : kv.slice(i + 1);
    if (k === 'size' && /^\d+$/.test(val) && Number(val) > 0) sizeMB = Number(val);
    else if (k === 'dir' && val) dir = path.resolve(val);
    else if (k === 'directio' && i < 0) directio = true;
    else throw new Error(`Invalid object cache option '${kv}' (expected size=MB,dir=PATH[,directio])`);
  }
  if (sizeMB === undefined) throw new Error(`Invalid object cache option '${v}': size=MB is required`);
  return { sizeMB, dir, directio };
}

/** Give a sheep its object cache (call after sheep.init(), before serving). */
export async function attachCache(s: Sheep, o: { sizeMB: number; dir?: string; directio: boolean }): Promise<ObjectCache> {
  const opts: CacheOptions = { sizeMB: o.sizeMB, dir: o.dir ?? path.join(s.opts.dir, 'cache'), directio: o.directio };
  const c = new ObjectCache(opts, s.gw, {
    isSnapshot: (vid) => s.isSnapshot(vid),
    workingVid: async (name) => (await s.vdis.lookup(name, 0, '')).vid,
    resolve: async (name, snapid, tag) => {
      const r = await s.vdis.lookup(name, snapid, tag);
      return r.result === Res.SUCCESS ? r.vid : 0;
    },
  });
  await c.init();
  s.cache = c;
  return c;
}

/** VdiBackend for NBD exports through the cache (QEMU's cache=writeback path). */
export class CacheBackend extends GatewayBackend {
  constructor(private readonly cache: ObjectCache) {
    super(cache.cached);
  }
  flush(vid: number): Promise<void> {
    return this.cache.flushVdi(vid);
  }
}

// ---- opcodes -----------------------------------------------------------------

/** FLUSH_VDI (0x16): SUCCESS once the VDI's dirty objects are in the cluster; INVALID_PARMS without a cache (§6.9). */
export async function flushVdiOp(s: Sheep, h: RequestHeader): Promise<Reply> {
  if (!s.cache) return { result: Res.INVALID_PARMS };
  await s.cache.flushVdi(oidToVid(h.obj.oid));
  return { result: Res.SUCCESS };
}

/** DELETE_CACHE (0xB0): flush the VDI, then drop its cached objects. */
export async function deleteCacheOp(s: Sheep, h: RequestHeader): Promise<Reply> {
  await s.cache?.dropVdi(oidToVid(h.obj.oid));
  return { result: Res.SUCCESS };
}

/** CACHE_PURGE (0xB7): like DELETE_CACHE, for one VDI (oid set) or every VDI. */
export async function cachePurgeOp(s: Sheep, h: RequestHeader): Promise<Reply> {
  await s.cache?.purge(h.obj.oid ? oidToVid(h.obj.oid) : undefined);
  return { result: Res.SUCCESS };
}

/** GET_CACHE_INFO (0xB6): capacity, usage and per-VDI object counts. */
export async function getCacheInfoOp(s: Sheep, h: RequestHeader): Promise<Reply> {
  if (h.dataLength < CACHE_INFO_HEADER_SIZE) return { result: Res.BUFFER_SMALL };
  const info = s.cache?.info() ?? { size: 0n, used: 0n, hits: 0n, misses: 0n, flags: 0, vdis: [] };
  if (!s.cache) info.flags &= ~CacheInfoFlag.ENABLED;
  return { result: Res.SUCCESS, data: encodeCacheInfo(info, h.dataLength) };
}
