// --json: one JSON document per command (JSON Lines for `node stat -w`),
// with stable snake_case field names, sizes in bytes and times in ISO 8601
// UTC. The schemas are documented in man/collie.8 ("JSON OUTPUT"); a field
// may be added, none is renamed or removed. These builders take the same
// decoded structures the text formatters take, so both say the same thing.
import { addrToString, decodeEcPolicy } from '@sheepdog/common';
import { redundancy } from '@sheepdog/common/text';
import type { InodeHeader, SdNode, SdStat, RecoveryState, MdDisk, EpochLog } from '@sheepdog/common';
import type { Ctx } from './conn.js';

/** A size or counter: a JSON number (exact up to 2^53; larger ones as decimal strings). */
export function bytes(v: bigint | number): number | string {
  const b = BigInt(v);
  return b <= BigInt(Number.MAX_SAFE_INTEGER) && b >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b.toString();
}

/** UNIX seconds as ISO 8601 UTC; null for 0 (never). */
export function isoTime(sec: bigint | number): string | null {
  const s = Number(sec);
  return s ? new Date(s * 1000).toISOString() : null;
}

/** Print one document: indented, one trailing newline. */
export function printJson(ctx: Ctx, doc: unknown): void {
  ctx.out(JSON.stringify(doc, null, 2) + '\n');
}

/** One compact line (JSON Lines), for streams. */
export function printJsonLine(ctx: Ctx, doc: unknown): void {
  ctx.out(JSON.stringify(doc) + '\n');
}

export const percent = (used: bigint, size: bigint): number => (size === 0n ? 0 : Math.trunc((Number(used) / Number(size)) * 100));

export function nodeJson(n: SdNode, id: number) {
  return { id, address: addrToString(n.addr), port: n.port, vnodes: n.nrVnodes, zone: n.zone >>> 0 };
}

/** D and P of an erasure-coded policy byte, null for replication: scripts should not have to split "4:2". */
export function erasureCodeJson(copyPolicy: number): { data_strips: number; parity_strips: number } | null {
  const ec = decodeEcPolicy(copyPolicy);
  return ec ? { data_strips: ec.d, parity_strips: ec.p } : null;
}

export type VdiKind = 'vdi' | 'snapshot' | 'clone';
export function vdiKind(h: InodeHeader): VdiKind {
  if (h.snapCtime !== 0n) return 'snapshot';
  return h.snapId === 1 && h.parentVdiId !== 0 ? 'clone' : 'vdi';
}

/** The fields every VDI record shares (vdi list, tree, lock list). */
export function vdiJson(vid: number, h: InodeHeader) {
  const kind = vdiKind(h);
  return {
    name: h.name,
    vdi_id: vid,
    kind,
    snapshot_id: kind === 'snapshot' ? h.snapId : 0,
    tag: h.tag,
    size: bytes(h.vdiSize),
    created: isoTime(h.createTime >> 32n),
    snapshot_time: kind === 'snapshot' ? isoTime(h.snapCtime >> 32n) : null,
    parent_vdi_id: h.parentVdiId,
    copies: h.nrCopies,
    redundancy: redundancy(h.nrCopies, h.copyPolicy),
    erasure_code: erasureCodeJson(h.copyPolicy),
    block_size_shift: h.blockSizeShift,
  };
}

export function statJson(s: SdStat) {
  const side = (p: 'gw' | 'peer') => ({
    active: bytes(s[`${p}Active`]), total: bytes(s[`${p}Total`]), write: bytes(s[`${p}Write`]),
    read: bytes(s[`${p}Read`]), remove: bytes(s[`${p}Remove`]), flush: bytes(p === 'gw' ? s.gwFlush : 0n),
    bytes_written: bytes(s[`${p}BytesIn`]), bytes_read: bytes(s[`${p}BytesOut`]),
  });
  return { client: side('gw'), peer: side('peer') };
}

export function recoveryJson(n: SdNode, id: number, st: RecoveryState) {
  return {
    ...nodeJson(n, id), finished: bytes(st.nrFinished), total: bytes(st.nrTotal),
    progress_percent: st.nrTotal === 0n ? 0 : Math.round((1000 * Number(st.nrFinished)) / Number(st.nrTotal)) / 10,
  };
}

/** A deleted VDI whose objects are being reclaimed (node: host:port of the node at it; null while it waits). */
export function reclaimJson(e: { vid: number; objectsDone: number; objectsTotal: number; by?: string }) {
  return {
    vdi_id: e.vid, node: e.by ?? null, objects_total: e.objectsTotal,
    objects_left: Math.max(0, e.objectsTotal - e.objectsDone),
    progress_percent: e.by === undefined ? 0 : e.objectsTotal === 0 ? 100 : Math.round((1000 * e.objectsDone) / e.objectsTotal) / 10,
  };
}

export function mdDiskJson(d: MdDisk) {
  const size = d.free + d.used;
  return { id: d.idx, path: d.path, size: bytes(size), used: bytes(d.used), avail: bytes(d.free), use_percent: percent(d.used, size) };
}

export function clusterInfoJson(result: number, resultText: string, logs: EpochLog[]) {
  const first = logs[0];
  const running = result === 0;
  return {
    status: running ? 'running' : resultText,
    running,
    auto_recovery: running && first ? !first.disableRecovery : null,
    store: running && first ? first.drvName : null,
    copies: running && first ? first.nrCopies : null,
    redundancy: running && first ? redundancy(first.nrCopies, first.copyPolicy) : null,
    erasure_code: running && first ? erasureCodeJson(first.copyPolicy) : null,
    vnodes_strategy: first && first.flags & 0x4 ? 'auto' : 'fixed',
    vnode_mode: first && first.flags & 0x2 ? 'disk' : 'node',
    created: first ? isoTime(first.ctime >> 32n) : null,
    epochs: logs.map((l) => ({
      epoch: l.epoch,
      time: isoTime(l.time),
      nodes: l.nodes.map((n) => ({ address: addrToString(n.addr), port: n.port, vnodes: n.nrVnodes, zone: n.zone >>> 0 })),
    })),
  };
}

type TreeEntry = ReturnType<typeof vdiJson> & { children: TreeEntry[] };

/**
 * vdi tree: every VDI under its parent (parent_vdi_id), roots first in VDI id
 * order. Unlike the text tree, clones sit under the snapshot they came from.
 */
export function vdiTreeJson(vdis: { vid: number; header: InodeHeader }[]): TreeEntry[] {
  const byVid = new Map<number, TreeEntry>();
  for (const v of vdis) byVid.set(v.vid, { ...vdiJson(v.vid, v.header), children: [] });
  const roots: TreeEntry[] = [];
  for (const v of vdis) {
    const e = byVid.get(v.vid)!;
    const parent = v.header.parentVdiId ? byVid.get(v.header.parentVdiId) : undefined;
    (parent && parent !== e ? parent.children : roots).push(e);
  }
  return roots;
}
