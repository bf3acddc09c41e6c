// Stripe ranges of an object being rewritten by this gateway. A write that
// does not cover whole stripes reads the rest of them first and writes
// them back with its own bytes: two such writes into one stripe at once
// would each put back the other's old bytes, so writes whose stripe ranges
// overlap go one after the other. (Gateways do not see each other's
// writes; QEMU's sector-aligned I/O of one VDI goes through one gateway.)
interface Held {
  start: number;
  end: number;
  done: Promise<void>;
}

export class RangeLocks {
  private held = new Map<bigint, Held[]>();

  /** Wait for overlapping writes to oid's stripes [start, end), then hold them; call the result to let go. */
  async lock(oid: bigint, start: number, end: number): Promise<() => void> {
    for (;;) {
      const list = this.held.get(oid);
      const busy = list?.find((h) => h.start < end && start < h.end);
      if (!busy) break;
      await busy.done;
    }
    let release!: () => void;
    const h: Held = { start, end, done: new Promise<void>((r) => (release = r)) };
    const list = this.held.get(oid);
    if (list) list.push(h); else this.held.set(oid, [h]);
    return () => {
      const l = this.held.get(oid)!;
      l.splice(l.indexOf(h), 1);
      if (!l.length) this.held.delete(oid);
      release();
    };
  }
}
