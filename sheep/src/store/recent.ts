// Objects written lately. When a member leaves, writes it was making may
// have reached some replicas and not others; the objects this node wrote
// in the last minute or two are the ones recovery reconciles across their
// replicas. Buckets instead of a time per object: a Set insert per write,
// and old objects leave a whole bucket at a time.
const BUCKET_MS = 30_000;
const BUCKETS = 4;

export class RecentWrites {
  private buckets: Set<bigint>[] = [new Set()];
  private started = Date.now();

  add(oid: bigint): void {
    this.rotate();
    this.buckets[0].add(oid);
  }

  private rotate(): void {
    const now = Date.now();
    if (now - this.started < BUCKET_MS) return;
    const n = Math.min(BUCKETS, Math.floor((now - this.started) / BUCKET_MS));
    for (let i = 0; i < n; i++) this.buckets.unshift(new Set());
    this.buckets.length = Math.min(this.buckets.length, BUCKETS);
    this.started = now;
  }

  /** Objects written in the last BUCKETS-1 to BUCKETS bucket lengths (90-120 s). */
  snapshot(): Set<bigint> {
    this.rotate();
    const out = new Set<bigint>();
    for (const b of this.buckets) for (const o of b) out.add(o);
    return out;
  }
}
