// The gateway: turns client object I/O into store operations on every
// replica the placement names (local store or peer sheep), reads from one
// replica with fallback, and does copy-on-write and index bookkeeping.
import {
  Res, SheepdogError, SD_INODE_HEADER_SIZE, SD_INODE_GREF_OFFSET, MAX_DATA_OBJS,
  isVdiObj, isDataObj, oidToVid, objectStoredSize, vidToDataOid, vidToVdiOid, dataOidToLedgerOid,
  SD_LEDGER_OBJ_SIZE, SdNode, sameNode, SpliceTarget, INODE_OFF,
} from '@sheepdog/common';
import type { ObjectStore } from './store/store.js';
import type { ObjectIO } from './vdi.js';
import type { PeerPool } from './peer.js';
import { log } from './log.js';
import { StripeIo, EcCode } from './ec/stripe-io.js';

export interface PlacementView {
  epoch(): number;
  self(): SdNode;
  targets(oid: bigint, copies: number): SdNode[];
  defaultCopies(): number;
  vdiCopies(vid: number): number | undefined;
  objectSize(vid: number): number;
  isSnapshot(vid: number): boolean;
  /** Wait until a pending recovery of this object (on this node) is done. */
  ensureLocal(oid: bigint): Promise<void>;
  /** Whether a recovery is under way (else ensureLocal has nothing to wait for). */
  recovering(): boolean;
  waitEpoch(pred: (e: number) => boolean, timeoutMs: number): Promise<boolean>;
  /** Every member has recovered the current epoch: a missing local object is missing everywhere. */
  allRecovered(): boolean;
  /** Whether the newest copy of an object none of its holders has could be on nodes that are away. */
  mayBeAway(oid: bigint): boolean;
  /** Strict mode: refuse writes that cannot have all their copies. */
  strict(): boolean;
  /** The members that hold data (for removals that must reach copies set aside anywhere). */
  holders?(): SdNode[];
  /** The cluster removed oid in epoch: keep its tombstone (see Tombstones). */
  removed?(oid: bigint, epoch: number): void;
  /** While this node cannot tell whether it is still a member: settles when it can (requests wait for it). */
  membershipHeld?(): Promise<void> | undefined;
  /** The erasure code of oid if it is striped (A.3): the request's copy_policy if non-zero, else its VDI's. */
  ecCode?(oid: bigint, requested?: number): EcCode | undefined;
  /** Erasure-coded writes may go on with fewer zones than D+P (ClusterFlag.EC_FEW_ZONES). */
  ecFewZones?(): boolean;
}

function landedLate(oid: bigint, ep: number): SheepdogError {
  return new SheepdogError(Res.OLD_NODE_VER, `a write to ${oid.toString(16)} of epoch ${ep} landed after the epoch ended; it is sent again`);
}

/**
 * Start n operations at once; settles when all have, rejecting with the
 * error of the first (by index) that failed: Promise.allSettled without an
 * array of results to build and search on every replicated write.
 */
function settleAll(n: number, start: (i: number) => Promise<unknown>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let left = n;
    let errAt = n;
    let err: unknown;
    const one = (i: number) => {
      const done = () => {
        if (--left > 0) return;
        if (errAt < n) reject(err);
        else resolve();
      };
      let p: Promise<unknown>;
      try {
        p = start(i);
      } catch (e) {
        p = Promise.reject(e);
      }
      p.then(done, (e) => {
        if (i < errAt) { errAt = i; err = e; }
        done();
      });
    };
    for (let i = 0; i < n; i++) one(i);
  });
}

/** Results that mean "the membership is changing; try again shortly". */
// WAIT_FOR_FORMAT: a peer that has not applied a format yet (collie's
// cluster snapshot load writes objects right after formatting)
export const RETRYABLE: number[] = [Res.OLD_NODE_VER, Res.NEW_NODE_VER, Res.NETWORK_ERROR, Res.WAIT_FOR_JOIN, Res.KILLED, Res.WAIT_FOR_FORMAT];
const RETRY_DEADLINE_MS = 60_000;

/**
 * Run fn again after membership changes, within RETRY_DEADLINE_MS: a peer
 * ahead of us answers OLD_NODE_VER (wait for its epoch, then recompute
 * targets); a dead peer is a NETWORK_ERROR until the membership change
 * arrives. Replicated and erasure-coded I/O share it.
 */
export async function retryAcrossEpochs<T>(
  view: { epoch(): number; waitEpoch(pred: (e: number) => boolean, ms: number): Promise<boolean> },
  fn: () => Promise<T>,
  onRetry?: (e: SheepdogError, ep: number) => void,
): Promise<T> {
  const deadline = Date.now() + RETRY_DEADLINE_MS;
  for (;;) {
    const ep = view.epoch();
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof SheepdogError) || !RETRYABLE.includes(e.result) || Date.now() > deadline) throw e;
      const theirs = (e as SheepdogError & { epoch?: number }).epoch ?? 0;
      if (e.result === Res.OLD_NODE_VER && theirs > ep) await view.waitEpoch((x) => x >= theirs, 10_000);
      else if (!(await view.waitEpoch((x) => x > ep, 3000))) await new Promise((r) => setTimeout(r, 100));
      onRetry?.(e, ep);
    }
  }
}

const ZERO4 = Buffer.alloc(4);

/** Writes with fewer copies than wanted (too few zones), logged at most every 10 s with a count. */
class UnderReplication {
  private count = 0;
  private last = 0;
  private want = 0;
  private got = 0;

  note(want: number, got: number): void {
    this.count++;
    this.want = want;
    this.got = got;
    const now = Date.now();
    if (now - this.last < 10_000) return;
    log.warn(`under-replicated: ${this.count} write(s) stored with ${this.got} of ${this.want} copies: the cluster has too few zones for that many copies`);
    this.last = now;
    this.count = 0;
  }
}

export class Gateway implements ObjectIO {
  private readonly under = new UnderReplication();
  /** I/O on erasure-coded objects: every method below hands those to it first. */
  readonly stripes: StripeIo;

  constructor(
    private readonly store: ObjectStore,
    private readonly view: PlacementView,
    private readonly peers: PeerPool,
  ) {
    this.stripes = new StripeIo(store, { ...bindView(view), ecFewZones: () => view.ecFewZones?.() ?? false }, peers, (n) => this.isLocal(n));
  }

  private ec(oid: bigint, policy?: number): EcCode | undefined {
    return this.view.ecCode?.(oid, policy);
  }

  /**
   * Run a replica operation, retrying across epoch changes: a peer that is
   * ahead of us answers OLD_NODE_VER (we catch up and recompute targets), a
   * dead peer is a NETWORK_ERROR until the membership change arrives.
   * Clients never see these.
   */
  private retrying<T>(fn: () => Promise<T>): Promise<T> {
    return retryAcrossEpochs(this.view, fn, (e, ep) => log.debug(`retrying after ${e.message} (epoch ${ep} -> ${this.view.epoch()})`));
  }


  /** retrying() for a write into an existing object: NO_OBJ where the object may be away is HALT. */
  private retryingWrite(oid: bigint, fn: () => Promise<void>): Promise<void> {
    return this.retrying(async () => {
      const ep = this.view.epoch();
      try {
        await fn();
      } catch (e) {
        throw this.outdated(ep, e);
      }
    }).catch((e) => { throw this.missing(oid, e); });
  }

  /**
   * A NO_OBJ is an answer about the membership it was asked in: once the
   * epoch has moved on (nodes that were away came back, say), whether the
   * object may be elsewhere is a question for the new epoch, so it is asked again.
   */
  private outdated(ep: number, e: unknown): unknown {
    if (e instanceof SheepdogError && e.result === Res.NO_OBJ && this.view.epoch() !== ep) {
      return new SheepdogError(Res.OLD_NODE_VER, `the membership changed (epoch ${ep} -> ${this.view.epoch()}) while asking for an object`);
    }
    return e;
  }

  private async localRead(oid: bigint, off: number, len: number, into?: Buffer): Promise<Buffer> {
    const ep = this.view.epoch();
    await this.view.ensureLocal(oid);
    // the copy was made current for that epoch: a new one may find it out of date (asked again there)
    if (this.view.epoch() !== ep) throw new SheepdogError(Res.OLD_NODE_VER, `the membership changed (epoch ${ep} -> ${this.view.epoch()}) while the object was recovered`);
    return this.store.read(oid, off, len, into);
  }

  private copiesFor(oid: bigint, requested?: number): number {
    if (requested) return requested;
    return this.view.vdiCopies(oidToVid(oid)) || this.view.defaultCopies() || 1;
  }

  sizeOf(oid: bigint): number {
    return objectStoredSize(oid, this.view.objectSize(oidToVid(oid)));
  }

  /** Whether each node (of the rings' placements, which are reused) is this one: asked for every request. */
  private local = new WeakMap<SdNode, boolean>();

  private isLocal(n: SdNode): boolean {
    let l = this.local.get(n);
    if (l === undefined) {
      const self = this.view.self();
      l = n === self || sameNode(n, self);
      this.local.set(n, l);
    }
    return l;
  }

  private replicas(oid: bigint, copies?: number, write = false): SdNode[] {
    const want = this.copiesFor(oid, copies);
    const t = this.view.targets(oid, want);
    if (t.length === 0) throw new SheepdogError(Res.HALT);
    if (write && t.length < want) this.underReplicated(want, t.length);
    return t;
  }

  /** A write that cannot have all its copies: refused in strict mode, else counted and logged. */
  private underReplicated(want: number, got: number): void {
    if (this.view.strict()) throw new SheepdogError(Res.HALT, `strict mode: ${got} of ${want} copies placeable`);
    this.under.note(want, got);
  }

  /** Data of a snapshot is immutable. */
  private isReadonly(oid: bigint): boolean {
    return isDataObj(oid) && this.view.isSnapshot(oidToVid(oid));
  }

  /** Run op on every replica; fail if any fails (first error wins). */
  private async forAll(targets: SdNode[], local: () => Promise<unknown>, remote: (n: SdNode) => Promise<unknown>): Promise<void> {
    const rs = await Promise.allSettled(targets.map((n) => (this.isLocal(n) ? local() : remote(n))));
    const bad = rs.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (bad) throw bad.reason;
  }

  /**
   * The only replica is this node, as wanted, nothing is being recovered,
   * and every member has recovered (so a missing object is missing
   * everywhere): the store can serve it directly.
   */
  private soleLocal(oid: bigint, copies?: number): boolean {
    const want = this.copiesFor(oid, copies);
    const t = this.view.targets(oid, want);
    return t.length === 1 && want === 1 && !this.view.recovering() && this.view.allRecovered() && this.isLocal(t[0]);
  }

  /**
   * The page-cache hit path of read (see ObjectStore.readCached): this node
   * holds a replica and no recovery is under way, so the local copy is
   * current, and the store had the bytes at hand.
   */
  readCached(oid: bigint, off: number, len: number, copies: number | undefined, into: Buffer, at: number): boolean {
    if (!this.store.readCached || this.view.recovering() || this.view.membershipHeld?.() || this.ec(oid)) return false;
    const t = this.view.targets(oid, this.copiesFor(oid, copies));
    for (let i = 0; i < t.length; i++) if (this.isLocal(t[i])) return this.store.readCached(oid, off, len, into, at);
    return false;
  }

  /**
   * A zero-copy target for a plain write into a data object (see
   * SpliceTarget), when it would go straight to the store (see soleLocal).
   */
  spliceTarget(oid: bigint, off: number, len: number, copies?: number): SpliceTarget | undefined {
    const direct = () => !this.isReadonly(oid) && this.soleLocal(oid, copies);
    if (this.view.membershipHeld?.()) return undefined;
    if (!this.store.spliceTarget || !isDataObj(oid) || off + len > this.sizeOf(oid) || this.ec(oid) || !direct()) return undefined;
    const t = this.store.spliceTarget(oid, off, len);
    if (!t) return undefined;
    const commit = () => {
      if (!direct()) return undefined;
      const ep = this.view.epoch();
      // landed after its epoch ended (see localWrite): the bytes, now in our copy, are written again the usual way
      return t.commit()?.then(() => (this.view.epoch() === ep ? undefined : this.store.read(oid, off, len).then((b) => this.rawWrite(oid, off, b, copies))));
    };
    return { pipe: t.pipe, commit, drain: () => t.drain(), takeBack: (into, n) => t.takeBack(into, n), abort: () => t.abort() };
  }

  /** Read from one replica; into (len bytes, optional) may be filled and returned. */
  read(oid: bigint, off: number, len: number, copies?: number, into?: Buffer, policy?: number): Promise<Buffer> {
    const held = this.view.membershipHeld?.();
    if (held) return held.then(() => this.read(oid, off, len, copies, into, policy));
    const ec = this.ec(oid, policy);
    if (ec) return this.stripes.read(oid, off, len, ec);
    if (this.soleLocal(oid, copies)) return this.store.read(oid, off, len, into);
    return this.retrying(() => this.readOnce(oid, off, len, copies, into));
  }

  private async readOnce(oid: bigint, off: number, len: number, copies?: number, into?: Buffer): Promise<Buffer> {
    const ep = this.view.epoch();
    const targets = this.replicas(oid, copies);
    const local = targets.find((n) => this.isLocal(n));
    const order = local ? [local, ...targets.filter((n) => n !== local)] : shuffle(targets);
    let lastErr: unknown;
    let unsure: unknown;
    for (const n of order) {
      try {
        if (this.isLocal(n)) return await this.localRead(oid, off, len, into);
        return await this.peers.readPeer(n, oid, off, len, this.view.epoch());
      } catch (e) {
        // A replica that cannot serve the object (its current copy is away,
        // or its recovery of it failed) may lack a write the others took,
        // one that failed for its client: served by them, a read would show
        // bytes a later reconciliation can take back (chaos seed 5101).
        if (e instanceof SheepdogError && e.result === Res.HALT) throw e;
        lastErr = e;
        if (!(e instanceof SheepdogError && e.result === Res.NO_OBJ)) unsure = e;
        if (e instanceof SheepdogError && e.result === Res.NO_OBJ && targets.length === 1) break;
      }
    }
    // one replica's NO_OBJ is a real answer only if none has it, none
    // failed to say, and no newer copy can be on nodes that are away
    if (unsure) throw unsure;
    if (this.view.epoch() !== ep) throw this.outdated(ep, lastErr);
    if (lastErr instanceof SheepdogError && lastErr.result === Res.NO_OBJ && this.view.mayBeAway(oid)) {
      throw new SheepdogError(Res.HALT, `no holder of ${oid.toString(16)} present has it, and its holders may be away`);
    }
    throw lastErr ?? new SheepdogError(Res.NO_OBJ);
  }

  // Not async: a write to a data object returns the store's (or the
  // replicas') promise itself, without wrapping it in one more.
  write(oid: bigint, off: number, data: Buffer, copies?: number, policy?: number): Promise<void> {
    const held = this.view.membershipHeld?.();
    if (held) return held.then(() => this.write(oid, off, data, copies, policy));
    if (this.isReadonly(oid)) return Promise.reject(new SheepdogError(Res.READONLY));
    if (off + data.length > this.sizeOf(oid)) return Promise.reject(new SheepdogError(Res.INVALID_PARMS));
    // nothing to write changes nothing (upstream dog's vdi delete sends these for an empty index)
    if (data.length === 0) return Promise.resolve();
    const idxUpdate = isVdiObj(oid) && off >= SD_INODE_HEADER_SIZE && off + data.length <= SD_INODE_HEADER_SIZE + 4 * MAX_DATA_OBJS &&
      (off - SD_INODE_HEADER_SIZE) % 4 === 0 && data.length % 4 === 0 && data.length > 0;
    if (!idxUpdate) return this.rawWrite(oid, off, data, copies, policy);
    return this.indexUpdate(oid, off, data, copies);
  }

  /** Write into an existing object on every replica (no read-only or index bookkeeping; the object cache flushes with it). */
  rawWrite(oid: bigint, off: number, data: Buffer, copies?: number, policy?: number): Promise<void> {
    const held = this.view.membershipHeld?.();
    if (held) return held.then(() => this.rawWrite(oid, off, data, copies, policy));
    const ec = this.ec(oid, policy);
    if (ec) return data.length ? this.stripes.write(oid, off, data, ec, this.sizeOf(oid), false) : Promise.resolve();
    if (this.soleLocal(oid, copies)) {
      const ep = this.view.epoch();
      return this.store.write(oid, off, data).then(() => (this.view.epoch() === ep ? undefined : this.rawWrite(oid, off, data, copies, policy)));
    }
    if (!this.view.recovering()) {
      // Every guest write of a replicated VDI comes here: one attempt
      // without the retry loop's promises (nothing to wait for locally
      // when nothing is recovered), and the loop only if the membership
      // changed under it.
      let targets: SdNode[];
      try {
        targets = this.replicas(oid, copies, true);
      } catch (e) {
        return Promise.reject(e);
      }
      const ep = this.view.epoch();
      return settleAll(targets.length, (i) => (this.isLocal(targets[i]) ? this.localWrite(oid, off, data, ep) : this.peers.writePeer(targets[i], oid, off, data, ep)))
        .catch((e) => {
          e = this.outdated(ep, e);
          if (!(e instanceof SheepdogError) || !RETRYABLE.includes(e.result)) throw this.missing(oid, e);
          return this.rawWriteRetrying(oid, off, data, copies);
        });
    }
    return this.rawWriteRetrying(oid, off, data, copies);
  }

  /**
   * A local write that lands after the epoch it was sent in ended may have
   * missed the new epoch's recovery of the object: a copy fetched from a
   * replica before the write reached it, and installed over ours, drops it
   * (the churn simulator lost acknowledged writes that way). It fails
   * OLD_NODE_VER, and the retry in the new epoch waits for that recovery.
   */
  private localWrite(oid: bigint, off: number, data: Buffer, ep: number): Promise<void> {
    return this.store.write(oid, off, data).then(() => {
      if (this.view.epoch() !== ep) throw landedLate(oid, ep);
    });
  }

  /** NO_OBJ from a replica is HALT when the object may live on nodes that are away. */
  private missing(oid: bigint, e: unknown): unknown {
    if (e instanceof SheepdogError && e.result === Res.NO_OBJ && this.view.mayBeAway(oid)) {
      return new SheepdogError(Res.HALT, `${oid.toString(16)} is not on the nodes present, and its holders may be away`);
    }
    return e;
  }

  private rawWriteRetrying(oid: bigint, off: number, data: Buffer, copies?: number): Promise<void> {
    return this.retryingWrite(oid, () => {
      const ep = this.view.epoch();
      return this.forAll(this.replicas(oid, copies, true),
        async () => {
          await this.view.ensureLocal(oid);
          // targets of an epoch that ended meanwhile are not ours to write to
          if (this.view.epoch() !== ep) throw new SheepdogError(Res.OLD_NODE_VER);
          await this.localWrite(oid, off, data, ep);
        },
        (n) => this.peers.writePeer(n, oid, off, data, ep));
    });
  }

  /**
   * A write into data_vdi_id[]: remember the old entries and generation
   * references, write, clear the written grefs, then drop one reference to
   * every object whose entry changed (§10.8).
   */
  private async indexUpdate(oid: bigint, off: number, data: Buffer, copies?: number): Promise<void> {
    const first = (off - SD_INODE_HEADER_SIZE) / 4;
    const n = data.length / 4;
    const [oldIdx, oldGref, policy] = await Promise.all([
      this.read(oid, off, data.length, copies),
      this.read(oid, SD_INODE_GREF_OFFSET + 8 * first, 8 * n, copies),
      this.read(oid, INODE_OFF.storePolicy, 1, copies),
    ]);
    // A hyper volume's B-tree root lives here: writing it as data_vdi_id[] (QEMU's old driver
    // does) would corrupt it, and dropping "old entries" would free other VDIs' objects.
    // Its own clients rewrite the root from the header on (upstream) or from btree_counter (ours).
    if (policy[0] !== 0) throw new SheepdogError(Res.INVALID_PARMS, 'a hyper volume has no data_vdi_id[] to write');
    await this.rawWrite(oid, off, data, copies);
    const drops: [number, number, number, number][] = [];
    for (let i = 0; i < n; i++) {
      const was = oldIdx.readUInt32LE(4 * i);
      const now = data.readUInt32LE(4 * i);
      if (was && was !== now) drops.push([was, first + i, oldGref.readInt32LE(8 * i), oldGref.readInt32LE(8 * i + 4)]);
    }
    if (oldGref.some((b) => b !== 0)) await this.rawWrite(oid, SD_INODE_GREF_OFFSET + 8 * first, Buffer.alloc(8 * n), copies);
    for (const [vid, idx, gen, count] of drops) {
      this.decref(vid, idx, gen, count).catch((e) => log.warn(`failed to reclaim ${vidToDataOid(vid, idx).toString(16)}: ${(e as Error).message}`));
    }
  }

  async create(oid: bigint, off: number, data: Buffer, cowOid: bigint, copies?: number, policy?: number): Promise<void> {
    const held = this.view.membershipHeld?.();
    if (held) await held;
    if (this.isReadonly(oid)) throw new SheepdogError(Res.READONLY);
    const size = this.sizeOf(oid);
    if (off + data.length > size) throw new SheepdogError(Res.INVALID_PARMS);
    if (data.length === 0 && cowOid) {
      // an empty create changes an object that exists in no way
      const exists = await this.read(oid, 0, 1, copies, undefined, policy).then(() => true, (e) => {
        if (e instanceof SheepdogError && e.result === Res.NO_OBJ) return false;
        throw e;
      });
      if (exists) return;
    }
    if (cowOid && data.length !== size) {
      const base = await this.read(cowOid, 0, size);
      data.copy(base, off);
      return this.createRanges(oid, [{ off: 0, data: base }], copies, policy);
    }
    return this.createRanges(oid, [{ off, data }], copies, policy);
  }

  async createRanges(oid: bigint, ranges: { off: number; data: Buffer }[], copies?: number, policy?: number): Promise<void> {
    const held = this.view.membershipHeld?.();
    if (held) await held;
    const size = this.sizeOf(oid);
    const ec = this.ec(oid, policy);
    if (ec) {
      if (ranges.length === 1) return this.stripes.write(oid, ranges[0].off, ranges[0].data, ec, size, true);
      // several ranges: one stripe range from the first byte to the last, zeros between them
      const from = Math.min(...ranges.map((r) => r.off));
      const to = Math.max(...ranges.map((r) => r.off + r.data.length));
      const span = Buffer.alloc(to - from);
      for (const r of ranges) r.data.copy(span, r.off - from);
      return this.stripes.write(oid, from, span, ec, size, true);
    }
    await this.retrying(() => {
      const ep = this.view.epoch();
      return this.forAll(this.replicas(oid, copies, true),
      async () => {
        await this.view.ensureLocal(oid);
        if (this.view.epoch() !== ep) throw new SheepdogError(Res.OLD_NODE_VER);
        await this.store.create(oid, size, ranges[0].off, ranges[0].data);
        for (const r of ranges.slice(1)) await this.store.write(oid, r.off, r.data);
        if (this.view.epoch() !== ep) throw landedLate(oid, ep);
      },
      async (n) => {
        await this.peers.createPeer(n, oid, ranges[0].off, ranges[0].data, ep);
        for (const r of ranges.slice(1)) await this.peers.writePeer(n, oid, r.off, r.data, ep);
      });
    });
  }

  async remove(oid: bigint, copies?: number, policy?: number): Promise<void> {
    const held = this.view.membershipHeld?.();
    if (held) await held;
    const ec = this.ec(oid, policy);
    if (ec) return this.stripes.remove(oid, ec);
    const targets = this.replicas(oid, copies);
    await this.retrying(() => this.forAll(targets,
      async () => { await this.store.remove(oid); },
      (n) => this.peers.removePeer(n, oid, this.view.epoch())));
    this.view.removed?.(oid, this.view.epoch());
    // A copy set aside on a node the placement no longer names would be
    // brought back by a later recovery as the only copy of an object that
    // no longer exists (churn simulator, seed 1702): every other member
    // drops its copies too. Best effort: a member that is away keeps its own.
    const others = (this.view.holders?.() ?? []).filter((n) => !targets.some((t) => sameNode(t, n)));
    await Promise.all(others.map((n) => (this.isLocal(n) ? this.store.remove(oid) : this.peers.removePeer(n, oid, this.view.epoch())).catch(() => undefined)));
  }

  /**
   * Generational reference counting (§10.8): (0,0) means nobody else ever
   * shared the object; otherwise the ledger tracks outstanding references
   * per generation and the object goes when every counter is zero.
   */
  async decref(vid: number, idx: number, generation: number, count: number): Promise<void> {
    const dataOid = vidToDataOid(vid, idx);
    if (generation === 0 && count === 0) {
      await this.remove(dataOid).catch(() => undefined);
      return;
    }
    const ledgerOid = dataOidToLedgerOid(dataOid);
    if (generation < 0 || generation + 1 >= SD_LEDGER_OBJ_SIZE / 4) return;
    let ledger: Buffer;
    let exists = true;
    try {
      ledger = await this.read(ledgerOid, 0, SD_LEDGER_OBJ_SIZE);
    } catch {
      exists = false;
      ledger = Buffer.alloc(SD_LEDGER_OBJ_SIZE);
      ledger.writeInt32LE(1, 0);
    }
    const here = ledger.readInt32LE(4 * generation) - 1;
    const next = ledger.readInt32LE(4 * (generation + 1)) + count;
    // counts are int32 on disk: one that would leave that range is a corrupt or hostile request
    if (here < -0x80000000 || next > 0x7fffffff) throw new SheepdogError(Res.INVALID_PARMS);
    ledger.writeInt32LE(here, 4 * generation);
    ledger.writeInt32LE(next, 4 * (generation + 1));
    let last = -1;
    for (let i = 0; i < SD_LEDGER_OBJ_SIZE / 4; i++) if (ledger.readInt32LE(4 * i) !== 0) last = i;
    if (last < 0) {
      await this.remove(dataOid).catch(() => undefined);
      if (exists) await this.remove(ledgerOid).catch(() => undefined);
      return;
    }
    const used = ledger.subarray(0, 4 * (last + 1));
    if (exists) await this.rawWrite(ledgerOid, 0, used);
    else await this.createRanges(ledgerOid, [{ off: 0, data: used }]);
  }

  /** Old-QEMU DISCARD_OBJ: clear the index entry, which frees the object. */
  async discard(oid: bigint): Promise<void> {
    const vid = oidToVid(oid);
    const idx = Number(oid & 0xffffffffn);
    const inode = vidToVdiOid(vid);
    const cur = await this.read(inode, SD_INODE_HEADER_SIZE + 4 * idx, 4);
    if (cur.readUInt32LE(0) !== 0) await this.write(inode, SD_INODE_HEADER_SIZE + 4 * idx, ZERO4);
  }
}

function shuffle<T>(a: T[]): T[] {
  const b = [...a];
  for (let i = b.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [b[i], b[j]] = [b[j], b[i]];
  }
  return b;
}


/** The view's methods StripeIo calls, bound (the view is the node object). */
function bindView(v: PlacementView) {
  return {
    epoch: () => v.epoch(),
    targets: (oid: bigint, copies: number) => v.targets(oid, copies),
    waitEpoch: (pred: (e: number) => boolean, ms: number) => v.waitEpoch(pred, ms),
    ensureLocal: (oid: bigint) => v.ensureLocal(oid),
    strict: () => v.strict(),
    holders: () => v.holders?.() ?? [],
    removed: (oid: bigint, epoch: number) => v.removed?.(oid, epoch),
  };
}
