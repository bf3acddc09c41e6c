// RECLAIM_STATUS reply (this implementation's local op; see constants): the
// deleted VDIs whose objects are not all reclaimed yet, as one node knows
// them, and the progress of the one that node reclaims now. Every node
// knows which VDIs wait (its VDI table says so); only the node reclaiming
// (the first member of the epoch) knows how far it got, so a client asks
// every node and takes the entry that says RUNNING (see mergeReclaims).
//
// Layout, little-endian: a 16-byte header (magic "SDRC", the number of
// records here, the number of VDIs waiting in all, 0), then 24-byte
// records (vid, flags, index entries walked, index entries in all, objects
// to drop in all, objects dropped).

export const ReclaimFlag = {
  /** This node is reclaiming the VDI now (the counts are its progress). */
  RUNNING: 1,
} as const;

export interface ReclaimEntry {
  vid: number;
  flags: number;
  /** Index entries walked, of entriesTotal. */
  entriesDone: number;
  entriesTotal: number;
  /** Objects (references) the reclaim found to drop when it started, and dropped so far. */
  objectsTotal: number;
  objectsDone: number;
}

export interface ReclaimStatus {
  entries: ReclaimEntry[];
  /** VDIs waiting in all (more than entries.length when the reply was cut to fit). */
  pending: number;
}

export const RECLAIM_HEADER_SIZE = 16;
export const RECLAIM_RECORD_SIZE = 24;
const RECLAIM_MAGIC = 0x53445243; // "SDRC"

/** At most maxBytes (whole records); the RUNNING entry goes first so that a cut never loses it. */
export function encodeReclaimStatus(s: ReclaimStatus, maxBytes = Infinity): Buffer {
  const fit = Math.max(0, Math.floor((maxBytes - RECLAIM_HEADER_SIZE) / RECLAIM_RECORD_SIZE));
  const list = [...s.entries].sort((a, b) => (b.flags & ReclaimFlag.RUNNING) - (a.flags & ReclaimFlag.RUNNING) || a.vid - b.vid).slice(0, fit);
  const b = Buffer.alloc(RECLAIM_HEADER_SIZE + list.length * RECLAIM_RECORD_SIZE);
  b.writeUInt32LE(RECLAIM_MAGIC, 0);
  b.writeUInt32LE(list.length, 4);
  b.writeUInt32LE(Math.max(s.pending, list.length), 8);
  let off = RECLAIM_HEADER_SIZE;
  for (const e of list) {
    b.writeUInt32LE(e.vid, off);
    b.writeUInt32LE(e.flags, off + 4);
    b.writeUInt32LE(e.entriesDone, off + 8);
    b.writeUInt32LE(e.entriesTotal, off + 12);
    b.writeUInt32LE(e.objectsTotal, off + 16);
    b.writeUInt32LE(e.objectsDone, off + 20);
    off += RECLAIM_RECORD_SIZE;
  }
  return b;
}

export function decodeReclaimStatus(b: Buffer): ReclaimStatus {
  if (b.length < RECLAIM_HEADER_SIZE || b.readUInt32LE(0) !== RECLAIM_MAGIC) throw new Error('not a reclaim status reply');
  const n = b.readUInt32LE(4);
  if (b.length < RECLAIM_HEADER_SIZE + n * RECLAIM_RECORD_SIZE) throw new Error('short reclaim status reply');
  const entries: ReclaimEntry[] = [];
  for (let i = 0, off = RECLAIM_HEADER_SIZE; i < n; i++, off += RECLAIM_RECORD_SIZE) {
    entries.push({
      vid: b.readUInt32LE(off), flags: b.readUInt32LE(off + 4), entriesDone: b.readUInt32LE(off + 8),
      entriesTotal: b.readUInt32LE(off + 12), objectsTotal: b.readUInt32LE(off + 16), objectsDone: b.readUInt32LE(off + 20),
    });
  }
  return { entries, pending: b.readUInt32LE(8) };
}

/**
 * Several nodes' replies as one: each VDI once, with the progress of the
 * node that reports it RUNNING (and that node's index in the list given),
 * in VDI id order. A VDI is gone once no node lists it.
 */
export function mergeReclaims(replies: (ReclaimStatus | undefined)[]): (ReclaimEntry & { node: number })[] {
  const by = new Map<number, ReclaimEntry & { node: number }>();
  replies.forEach((r, node) => {
    for (const e of r?.entries ?? []) {
      const have = by.get(e.vid);
      if (!have || ((e.flags & ReclaimFlag.RUNNING) && !(have.flags & ReclaimFlag.RUNNING))) by.set(e.vid, { ...e, node: (e.flags & ReclaimFlag.RUNNING) ? node : -1 });
    }
  });
  return [...by.values()].sort((a, b) => a.vid - b.vid);
}
