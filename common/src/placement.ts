// Vnode ring and replica placement (spec §11.2–§11.4).
import { fnv1a, mix, sdHashOid } from './hash.js';
import type { SdNode } from './node.js';

export interface Vnode {
  hash: bigint;
  node: SdNode;
}

/** h0 = sd_hash(addr ‖ port_le): the first 18 bytes of node_id. */
export function nodeHash(n: SdNode): bigint {
  const b = Buffer.alloc(18);
  n.addr.copy(b, 0, 0, 16);
  b.writeUInt16LE(n.port, 16);
  return mix(fnv1a(b));
}

export function nodeVnodeHashes(n: SdNode): bigint[] {
  const out: bigint[] = [];
  let h = nodeHash(n);
  for (let k = 0; k < n.nrVnodes; k++) {
    h = mix(h);
    out.push(h);
  }
  return out;
}

export class VnodeRing {
  readonly vnodes: Vnode[];
  readonly nrZones: number;
  constructor(readonly nodes: SdNode[]) {
    const v: Vnode[] = [];
    for (const n of nodes) for (const h of nodeVnodeHashes(n)) v.push({ hash: h, node: n });
    v.sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0));
    this.vnodes = v;
    this.nrZones = new Set(nodes.filter((n) => n.nrVnodes > 0).map((n) => n.zone)).size;
  }

  /** Placements already computed on this ring, per copies; bounded. */
  private placed = new Map<number, Map<bigint, SdNode[]>>();
  private nPlaced = 0;

  /**
   * Replica nodes for an object; copies is capped at the number of zones.
   * Computed once per object on a ring (every object request asks), so the
   * array is shared: callers must not modify it.
   */
  placeOid(oid: bigint, copies: number): SdNode[] {
    let m = this.placed.get(copies);
    let t = m?.get(oid);
    if (t) return t;
    if (this.nPlaced >= 1 << 16) {
      this.placed.clear();
      this.nPlaced = 0;
      m = undefined;
    }
    if (!m) this.placed.set(copies, (m = new Map()));
    t = this.place(sdHashOid(oid), copies);
    m.set(oid, t);
    this.nPlaced++;
    return t;
  }

  /** The ring positions chosen, for tests against spec vectors. */
  placeWithPositions(key: bigint, copies: number): Vnode[] {
    const n = Math.min(copies, this.nrZones);
    const v = this.vnodes;
    if (n <= 0 || v.length === 0) return [];
    let lo = 0, hi = v.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (v[mid].hash < key) lo = mid + 1; else hi = mid;
    }
    let idx = lo === v.length ? 0 : lo;
    const chosen: Vnode[] = [v[idx]];
    const zones = new Set([v[idx].node.zone]);
    for (let steps = 1; chosen.length < n && steps < v.length; steps++) {
      idx = (idx + 1) % v.length;
      if (zones.has(v[idx].node.zone)) continue;
      zones.add(v[idx].node.zone);
      chosen.push(v[idx]);
    }
    return chosen;
  }

  place(key: bigint, copies: number): SdNode[] {
    return this.placeWithPositions(key, copies).map((x) => x.node);
  }
}

/** C rintf: round half to even, in single precision. */
function rintf(x: number): number {
  const r = Math.round(x);
  if (Math.abs(x - Math.trunc(x)) === 0.5) return 2 * Math.round(x / 2);
  return r;
}

/** Recompute nr_vnodes from capacity for AUTO_VNODES clusters (§11.3). */
export function autoVnodes(nodes: SdNode[]): SdNode[] {
  const storage = nodes.filter((n) => n.space > 0n);
  if (storage.length === 0) return nodes;
  const total = storage.reduce((s, n) => s + n.space, 0n);
  const avg = total / BigInt(storage.length);
  const favg = Math.fround(Number(avg));
  return nodes.map((n) => {
    const f = Math.fround(Math.fround(Number(n.space)) / favg);
    // upstream's formula, except that a storage node never gets 0: with none it
    // would hold nothing, and copies would silently go missing
    const v = rintf(Math.fround(128 * f));
    return { ...n, nrVnodes: n.space > 0n ? Math.max(1, v) : v };
  });
}
