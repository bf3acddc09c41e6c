// Reclaiming deleted VDIs' objects, in the background.
//
// Deleting a VDI only marks it (DEL_VDI holds the cluster-wide lock for
// milliseconds, whatever the VDI's size); its index still names its
// objects, and every node's VDI table says it waits to be reclaimed. The
// first member of the current epoch walks the indexes of such VDIs a batch
// of entries at a time, dropping their references and clearing them in
// the inode (see the order in reclaim()); a restart, or a new first
// member, goes on where the index says. Throttled: one
// batch at a time, a few references dropped at once, a pause between
// batches, so that other VDIs' requests do not wait behind it.
// Progress: RECLAIM_STATUS (collie node recovery, collie vdi list) and the
// sheep_reclaim_* metrics.
import {
  SD_INODE_HEADER_SIZE, SD_INODE_GREF_OFFSET, SD_INODE_DATA_INDEX_SIZE, sameNode, vidToVdiOid, ReclaimEntry, ReclaimFlag, ReclaimStatus,
  InodeHeader, HyperIndex, BtreeError, BTREE_NODE_SIZE, INODE_OFF, encodeBtreeNode, emptyLeaf,
} from '@sheepdog/common';
import type { Sheep } from './sheep.js';
import { log } from './log.js';
import { sleep } from './util.js';

/** A whole number from the environment (a tuning and testing knob), or the default. */
function knob(name: string, def: number, min: number, max: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    log.warn(`${name}=${v} is not a whole number from ${min} to ${max}: ${def} is used`);
    return def;
  }
  return n;
}

/** Index entries looked at per batch (SHEEP_RECLAIM_BATCH). */
const BATCH = knob('SHEEP_RECLAIM_BATCH', 256, 1, 1 << 20);
const AT_ONCE = 4;
/** Pause between batches (SHEEP_RECLAIM_PAUSE_MS). */
const PAUSE_MS = knob('SHEEP_RECLAIM_PAUSE_MS', 20, 0, 60_000);

export interface ReclaimProgress {
  vid: number;
  /** Index entries walked, of total. */
  done: number;
  total: number;
  /** Objects (references) to drop, found when this run started, and dropped so far. */
  objects: number;
  dropped: number;
}

export class Reclaimer {
  private running = false;
  /** What is being reclaimed now (for collie node recovery and the metrics). */
  progress?: ReclaimProgress;
  /** References dropped by this node's reclaims since it started (sheep_reclaimed_objects_total). */
  droppedTotal = 0;

  constructor(private readonly s: Sheep) {}

  /** Some VDI may wait: start reclaiming if this node leads and is not at it already. */
  kick(): void {
    if (this.running || !this.leading()) return;
    this.running = true;
    void this.loop().catch((e) => log.warn(`reclaiming deleted VDIs stopped: ${(e as Error).message}`)).finally(() => {
      this.running = false;
      this.progress = undefined;
      // a deletion noticed meanwhile, or a failure: look again a little later
      if (this.pending().length) setTimeout(() => this.kick(), 2000).unref();
    });
  }

  private leading(): boolean {
    const s = this.s;
    const first = s.members[0];
    return s.status === 'ok' && !!first && sameNode(first, s.selfNode);
  }

  /** The deleted VDIs not reclaimed yet (every node knows them), with this node's progress on the one it reclaims. */
  status(): ReclaimStatus {
    const p = this.progress;
    const entries: ReclaimEntry[] = this.pending().map((vid) => (p && p.vid === vid
      ? { vid, flags: ReclaimFlag.RUNNING, entriesDone: p.done, entriesTotal: p.total, objectsTotal: p.objects, objectsDone: p.dropped }
      : { vid, flags: 0, entriesDone: 0, entriesTotal: 0, objectsTotal: 0, objectsDone: 0 }));
    return { entries, pending: entries.length };
  }

  pending(): number[] {
    return [...this.s.vdis.states.values()].filter((v) => v.deleted && v.reclaim).map((v) => v.vid).sort((a, b) => a - b);
  }

  private async loop(): Promise<void> {
    for (;;) {
      const vid = this.pending()[0];
      if (vid === undefined || !this.leading()) return;
      await this.reclaim(vid);
    }
  }

  private async reclaim(vid: number): Promise<void> {
    const s = this.s;
    // A format meanwhile ends it: the same vid may soon name a new VDI,
    // whose objects and inode this walk of the old index must not touch.
    const ctime = s.config.ctime;
    const current = () => this.leading() && s.config.ctime === ctime;
    const ino = await s.vdis.readInode(vid);
    if (ino.header.storePolicy !== 0) {
      await this.reclaimHyper(vid, ino.header, current);
      return;
    }
    const n = s.vdis.lastIndex(ino);
    const copies = ino.header.nrCopies || undefined;
    const started = Date.now();
    let dropped = 0;
    let objects = 0;
    for (let i = 0; i < n; i++) if (ino.dataVdiId[i]) objects++;
    const progress: ReclaimProgress = { vid, done: 0, total: n, objects, dropped: 0 };
    this.progress = progress;
    for (let first = 0; first < n; first += BATCH) {
      if (!current()) return;
      const count = Math.min(BATCH, n - first);
      const refs: [number, number, number, number][] = [];
      for (let i = first; i < first + count; i++) {
        if (ino.dataVdiId[i]) refs.push([ino.dataVdiId[i], i, ino.grefGeneration[i], ino.grefCount[i]]);
      }
      if (refs.length) {
        const drop = async (list: [number, number, number, number][]) => {
          for (let i = 0; i < list.length; i += AT_ONCE) {
            if (!current()) return;
            await Promise.all(list.slice(i, i + AT_ONCE).map(([owner, idx, gen, cnt]) => s.gw.decref(owner, idx, gen, cnt).catch((e) => {
              log.warn(`reclaiming VDI ${vid.toString(16)}: object ${idx} of ${owner.toString(16)} stays: ${(e as Error).message}`);
            }).finally(() => {
              progress.dropped++;
              this.droppedTotal++;
            })));
          }
        };
        // An object nobody shares (generation and count 0) goes before its
        // entry is cleared: removing it again after a crash is harmless. A
        // shared one's reference is dropped after: a crash then leaks it,
        // it can never drop a reference twice.
        const unshared = refs.filter(([, , gen, cnt]) => gen === 0 && cnt === 0);
        const shared = refs.filter(([, , gen, cnt]) => gen !== 0 || cnt !== 0);
        await drop(unshared);
        if (!current()) return;
        // Only the span that holds something is rewritten: zeros over a hole
        // would take space, and a delete must work on a full disk.
        const inode = vidToVdiOid(vid);
        const lo = refs[0][1];
        const hi = refs[refs.length - 1][1] + 1;
        await s.gw.rawWrite(inode, SD_INODE_HEADER_SIZE + 4 * lo, Buffer.alloc(4 * (hi - lo)), copies);
        let glo = -1;
        let ghi = -1;
        for (let i = lo; i < hi; i++) {
          if (ino.grefGeneration[i] || ino.grefCount[i]) {
            if (glo < 0) glo = i;
            ghi = i + 1;
          }
        }
        if (!current()) return;
        if (glo >= 0) await s.gw.rawWrite(inode, SD_INODE_GREF_OFFSET + 8 * glo, Buffer.alloc(8 * (ghi - glo)), copies);
        await drop(shared);
        dropped += refs.length;
      }
      progress.done = first + count;
      await sleep(PAUSE_MS);
    }
    if (!current()) return;
    await s.cluster.notify({ t: 'vdi_reclaimed', vid });
    log.info(`deleted VDI ${vid.toString(16)}: ${dropped} reference(s) dropped in ${Date.now() - started} ms`);
  }

  /**
   * A deleted hyper volume: its index is a B-tree, and nothing shares its
   * objects (hyper volumes have no snapshots or clones), so every object
   * the tree names goes, then the child leaves, then the root is emptied.
   * A corrupt tree cannot say which objects are its own: they stay (and
   * are said to), rather than guessing at other VDIs' objects.
   */
  private async reclaimHyper(vid: number, h: InodeHeader, current: () => boolean): Promise<void> {
    const s = this.s;
    const copies = h.nrCopies || undefined;
    const inode = vidToVdiOid(vid);
    const started = Date.now();
    let tree: HyperIndex | undefined;
    try {
      const area = await s.gw.read(inode, SD_INODE_HEADER_SIZE, SD_INODE_DATA_INDEX_SIZE, copies);
      tree = await HyperIndex.load(vid, h.btreeCounter, area, (oid) => s.gw.read(oid, 0, BTREE_NODE_SIZE, copies));
    } catch (e) {
      if (!(e instanceof BtreeError)) throw e;
      log.warn(`deleted hyper volume ${vid.toString(16)}: ${e.message}; its data objects stay`);
    }
    let dropped = 0;
    if (tree) {
      // a tree naming another VDI's objects is corrupt: those are not this volume's to free
      const refs = [...tree.entries()].filter(([idx, owner]) => {
        if (owner !== vid) log.warn(`deleted hyper volume ${vid.toString(16)}: entry ${idx} names VDI ${owner.toString(16)}, left alone`);
        return owner === vid;
      });
      const progress: ReclaimProgress = { vid, done: 0, total: refs.length, objects: refs.length, dropped: 0 };
      this.progress = progress;
      for (let first = 0; first < refs.length; first += BATCH) {
        const batch = refs.slice(first, first + BATCH);
        for (let i = 0; i < batch.length; i += AT_ONCE) {
          if (!current()) return;
          await Promise.all(batch.slice(i, i + AT_ONCE).map(([idx, owner]) => s.gw.decref(owner, idx, 0, 0).finally(() => {
            progress.dropped++;
            this.droppedTotal++;
          })));
        }
        dropped += batch.length;
        progress.done = first + batch.length;
        await sleep(PAUSE_MS);
      }
      for (const oid of tree.childOids()) {
        if (!current()) return;
        await s.gw.remove(oid, copies).catch((e) => log.warn(`deleted hyper volume ${vid.toString(16)}: B-tree node ${oid.toString(16)} stays: ${(e as Error).message}`));
      }
    }
    if (!current()) return;
    // an empty root (from btree_counter on, as clients write it): a restart finds nothing more to drop
    const root = encodeBtreeNode(emptyLeaf());
    const b = Buffer.alloc(SD_INODE_HEADER_SIZE - INODE_OFF.btreeCounter + root.length);
    b.writeUInt32LE(h.btreeCounter, 0);
    root.copy(b, SD_INODE_HEADER_SIZE - INODE_OFF.btreeCounter);
    await s.gw.rawWrite(inode, INODE_OFF.btreeCounter, b, copies);
    await s.cluster.notify({ t: 'vdi_reclaimed', vid });
    log.info(`deleted hyper volume ${vid.toString(16)}: ${dropped} object(s) dropped in ${Date.now() - started} ms`);
  }
}
