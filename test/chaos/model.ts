// What must be true of the data, whatever the cluster went through: a
// model of every VDI's sectors. A sector holds the bytes of exactly one
// write (or zeros): the acknowledged one, or one of the writes whose fate is
// unknown (failed or cut off); the first read that sees one of those decides
// it, and from then on every read must agree.
export const SECTOR = 512;

/** The bytes write `wid` puts into sector `sector` (0: zeros): self-describing, so a read names what it saw. */
export function sectorBytes(wid: number, sector: number, into?: Buffer, at = 0): Buffer {
  const b = into ?? Buffer.alloc(SECTOR);
  if (wid === 0) {
    b.fill(0, at, at + SECTOR);
    return b;
  }
  b.writeUInt32LE(wid, at);
  b.writeUInt32LE(sector >>> 0, at + 4);
  let x = (wid * 2654435761 + sector * 40503 + 1) >>> 0;
  for (let i = 8; i < SECTOR; i += 4) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    b.writeUInt32LE(x, at + i);
  }
  return b;
}

/** The write a sector's bytes come from: 0 for zeros, -1 when they are nobody's (torn or foreign bytes). */
export function whoWrote(b: Buffer, at: number, sector: number): number {
  const wid = b.readUInt32LE(at);
  if (wid === 0) {
    for (let i = at; i < at + SECTOR; i++) if (b[i] !== 0) return -1;
    return 0;
  }
  const want = sectorBytes(wid, sector);
  return want.equals(b.subarray(at, at + SECTOR)) ? wid : -1;
}

interface Sector {
  acked: number;
  maybe: number[];
}

export interface Mismatch {
  sector: number;
  saw: number;
  expected: number[];
}

export class DiskModel {
  private sectors = new Map<number, Sector>();
  constructor(public size: number) {}

  clone(): DiskModel {
    const m = new DiskModel(this.size);
    for (const [k, v] of this.sectors) m.sectors.set(k, { acked: v.acked, maybe: [...v.maybe] });
    return m;
  }

  private get(s: number): Sector {
    let x = this.sectors.get(s);
    if (!x) this.sectors.set(s, (x = { acked: 0, maybe: [] }));
    return x;
  }

  /** A write whose outcome is not known yet: it may land. */
  begin(off: number, len: number, wid: number): void {
    for (let s = off / SECTOR; s < (off + len) / SECTOR; s++) this.get(s).maybe.push(wid);
  }

  /** Acknowledged: it is what the sectors hold (writers never overlap their own writes in flight). */
  ack(off: number, len: number, wid: number): void {
    for (let s = off / SECTOR; s < (off + len) / SECTOR; s++) {
      const x = this.get(s);
      x.acked = wid;
      x.maybe = [];
    }
  }

  /** Compare what a read returned with the model; the first sight of an uncertain write decides it. */
  check(off: number, data: Buffer): Mismatch | undefined {
    for (let i = 0; i < data.length / SECTOR; i++) {
      const s = off / SECTOR + i;
      const saw = whoWrote(data, i * SECTOR, s);
      const x = this.sectors.get(s) ?? { acked: 0, maybe: [] };
      if (saw === x.acked) {
        if (x.maybe.length) this.sectors.set(s, { acked: saw, maybe: [] });
        continue;
      }
      if (saw > 0 && x.maybe.includes(saw)) {
        this.sectors.set(s, { acked: saw, maybe: [] });
        continue;
      }
      return { sector: s, saw, expected: [x.acked, ...x.maybe] };
    }
    return undefined;
  }

  /** Sectors written (for reads that want to look where data is). */
  writtenSectors(): number[] {
    return [...this.sectors.keys()];
  }
}
