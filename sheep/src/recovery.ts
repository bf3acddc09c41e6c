// Recovery: after every epoch change each node brings the objects that the
// new placement gives it up to date, in the background and with bounded
// concurrency, while client I/O goes on (an object a request needs is
// recovered on demand first).
//
// Which copy is current is decided by versions, never by guesses: every
// copy carries the epoch of the write that last changed it (see ObjectCopy),
// a write in epoch t reaches every node the placement of epoch t names (or
// fails), and so the newest copy among the nodes present is current unless
// a newer one may sit on nodes that are away. That is ruled out epoch by
// epoch: for every epoch after the newest copy's version (and from the
// last epoch every member recovered fully, before which nothing is
// missing), some node the placement of that epoch named must be present
// and able to vouch for it (it held the object, at a version no newer, or
// it would hold a newer one). Where that fails the object is unavailable:
// requests for it get HALT, nothing is removed anywhere, and it is found
// again when its holders are back. Objects whose replicas may have
// diverged (writes in flight when a member failed or the whole cluster
// crashed: "suspects") are reconciled: every replica takes one chosen copy.
//
// Copies a node no longer owns are removed only once every node the new
// placement names confirms that it holds the object at that version or
// newer.
import {
  SdNode, VnodeRing, Op, Flag, Res, SheepdogError, sameNode, nodeToString, oidToHex, CopyFlag,
  decodeObjectCopies, decodeFetched, encodeHeldQuery, decodeOids, CopyRecord,
  decodeSliceHashes, sliceHashesOf, sliceHashesSize, sliceCount, FARM_SLICE_SIZE,
} from '@sheepdog/common';
import type { Sheep } from './sheep.js';
import { performance } from 'node:perf_hooks';
import type { FoundBy } from './store/store.js';
import { log } from './log.js';
import { sleep, PLAN_SLICE_MS } from './util.js';
import { metrics } from './metrics.js';

export const RecoveryPhase = { PREPARING: 0, RECOVERING: 1, NOTIFYING: 2 } as const;

interface Holder {
  node: SdNode;
  version: number;
  stale: boolean;
  suspect: boolean;
  /** Not a copy: the node's tombstone, the object removed in epoch `version`. */
  removed?: boolean;
}

interface Plan {
  /** Copies to take from, best first. */
  sources: Holder[];
  /** This node's own copy, if any. */
  mine?: Holder;
}

interface Run {
  epoch: number;
  /** Same-epoch run on a restart: the local live copies are current as they are. */
  resume: boolean;
  ring: VnodeRing;
  nodes: SdNode[];
  cancelled: boolean;
  prepared: Promise<void>;
  plans: Map<bigint, Plan>;
  inflight: Map<bigint, Promise<void>>;
  total: number;
  done: number;
  phase: number;
  /** Objects whose every source failed: they are planned again later. */
  failed: number;
}

const keyOf = (n: SdNode) => nodeToString(n);
/** Bytes of one OBJ_COPIES page: 65,535 records. */
const COPIES_PAGE = 1 << 20;

export class Recovery {
  private run?: Run;
  /** Objects of `unavailableEpoch` whose current copy is on nodes that are away. */
  private unavailable = new Set<bigint>();
  /** Bytes recovery fetched from peers, and (farm) bytes of fetched objects it found in its own copies instead. */
  bytesFetched = 0;
  bytesFoundLocally = 0;
  private unavailableEpoch = 0;

  constructor(private readonly s: Sheep) {}

  get state(): { inRecovery: boolean; state: number; nrFinished: bigint; nrTotal: bigint } {
    const r = this.run;
    if (!r || r.cancelled) return { inRecovery: false, state: 0, nrFinished: 0n, nrTotal: 0n };
    return { inRecovery: true, state: r.phase, nrFinished: BigInt(r.done), nrTotal: BigInt(r.total) };
  }

  get active(): boolean {
    return !!this.run && !this.run.cancelled;
  }

  /** Objects of the current epoch that wait for their holders to come back. */
  get waiting(): number {
    return this.unavailableEpoch === this.s.epochNr ? this.unavailable.size : 0;
  }

  /** Whether a pending recovery of oid still needs a fetch (read paths must not use the local copy). */
  pendingFor(oid: bigint): boolean {
    const r = this.run;
    return !!r && !r.cancelled && r.plans.has(oid);
  }

  stop(): void {
    if (this.run) this.run.cancelled = true;
    this.run = undefined;
    this.s.ecRecovery.stop();
  }

  /** Put every local object aside as possibly stale (rejoining a running cluster). */
  async setAsideAll(): Promise<void> {
    const copies = (await this.s.store.copies()).filter((c) => !c.stale);
    for (const c of copies) await this.s.store.setAside(c.oid);
    if (copies.length) log.info(`set aside ${copies.length} local object(s) until recovery checks them`);
  }

  /**
   * Bring this node's objects of `epoch` up to date. resume: the cluster
   * restarted in the epoch it stopped in, so local live copies are current.
   */
  start(epoch: number, nodes: SdNode[], resume = false): void {
    this.stop();
    let resolvePrepared!: () => void;
    const run: Run = {
      epoch, resume, ring: new VnodeRing(nodes), nodes, cancelled: false,
      prepared: new Promise<void>((r) => (resolvePrepared = r)),
      plans: new Map(), inflight: new Map(), total: 0, done: 0, phase: RecoveryPhase.PREPARING, failed: 0,
    };
    if (this.retryEpoch !== epoch) {
      this.retryEpoch = epoch;
      this.retries = 0;
    }
    this.run = run;
    // strips (ec/recovery-ec.ts) at the same time: this run waits for them before it reports the epoch done
    if (this.s.selfNode.nrVnodes > 0) this.s.ecRecovery.start(epoch, nodes);
    if (this.unavailableEpoch !== epoch) {
      this.unavailable = new Set();
      this.unavailableEpoch = epoch;
    }
    this.execute(run, resolvePrepared).catch((e) => {
      log.err(`recovery for epoch ${epoch} failed: ${(e as Error).stack ?? e}`);
    });
  }

  /**
   * Run the current epoch's recovery again (md: a failed disk took objects
   * with it): whatever this node should hold and lacks is fetched. A run in
   * progress is restarted as it was (resume or not).
   */
  restart(epoch: number, nodes: SdNode[]): void {
    const r = this.run;
    this.start(epoch, nodes, r && !r.cancelled && r.epoch === epoch ? r.resume : true);
  }

  private isSelf(n: SdNode): boolean {
    return sameNode(n, this.s.selfNode);
  }

  /** A member's copies, retried until it answers or the epoch moves on. */
  private async listingOf(run: Run, n: SdNode): Promise<{ born: number; copies: Map<bigint, Holder> } | undefined> {
    for (let attempt = 0; !run.cancelled; attempt++) {
      try {
        const r = this.isSelf(n) ? { born: this.s.born, records: await this.s.copyRecords() } : await this.remoteCopies(run, n);
        const copies = new Map<bigint, Holder>();
        for (const c of r.records) {
          copies.set(c.oid, {
            node: n, version: c.version, stale: (c.flags & CopyFlag.STALE) !== 0, suspect: (c.flags & CopyFlag.SUSPECT) !== 0,
            removed: (c.flags & CopyFlag.REMOVED) !== 0,
          });
        }
        log.debug(`recovery ${run.epoch}: ${nodeToString(n)} lists ${r.records.length} copies, ${r.records.filter((c) => c.flags & CopyFlag.STALE).length} set aside`);
        return { born: r.born, copies };
      } catch (e) {
        if (attempt % 10 === 0) log.warn(`recovery for epoch ${run.epoch}: no object list from ${nodeToString(n)} yet: ${(e as Error).message}`);
        await sleep(Math.min(2000, 100 * (attempt + 1)));
      }
    }
    return undefined;
  }

  private async remoteCopies(run: Run, n: SdNode): Promise<{ born: number; records: CopyRecord[] }> {
    const records: CopyRecord[] = [];
    let born = 0;
    let cursor = 0n;
    for (;;) {
      const page = decodeObjectCopies((await this.s.peers.call(n, { opcode: Op.OBJ_COPIES, epoch: run.epoch, dataLength: COPIES_PAGE, obj: { cowOid: cursor } })).data);
      born = page.born;
      records.push(...page.records);
      if (!page.more || !page.records.length) return { born, records };
      cursor = page.records[page.records.length - 1].oid;
    }
  }

  private async execute(run: Run, prepared: () => void): Promise<void> {
    const s = this.s;
    let complete = true;
    try {
      if (s.selfNode.nrVnodes === 0) return; // gateways hold nothing
      await s.ensureHistory();
      if (run.cancelled) return;
      const copiesOf = (oid: bigint) => s.copiesOf(oid);
      // 0. a local live copy is current only if this node held it in the
      // previous epoch as one of its placed holders; anything else may
      // have missed writes
      if (!run.resume) {
        const prev = s.epochs.get(run.epoch - 1);
        const prevRing = prev && prev.nodes.some((n) => this.isSelf(n)) ? s.ringOf(run.epoch - 1) : undefined;
        for (const c of await s.store.copies()) {
          if (run.cancelled) return;
          if (c.stale) continue;
          if (!prevRing || !prevRing.placeOid(c.oid, copiesOf(c.oid)).some((t) => this.isSelf(t))) await s.store.setAside(c.oid);
        }
      }
      // 1. who holds what, at which version
      const listed = await Promise.all(run.nodes.filter((n) => n.nrVnodes > 0).map(async (n) => ({ n, l: await this.listingOf(run, n) })));
      if (run.cancelled) return;
      const present = new Map<string, number>(); // node -> born
      const holders = new Map<bigint, Holder[]>();
      for (const { n, l } of listed) {
        if (!l) return;
        present.set(keyOf(n), l.born);
        for (const [oid, h] of l.copies) {
          const a = holders.get(oid);
          if (a) a.push(h); else holders.set(oid, [h]);
        }
      }
      // 2. what placement gives us, and what to do about each
      let unavailable = 0;
      const garbage: { oid: bigint; removedAt: number; stale: boolean }[] = [];
      await s.warmRings(() => run.cancelled);
      if (run.cancelled) return;
      let step = 0;
      let slice = performance.now();
      for (const [oid, listed] of holders) {
        // thousands of objects: requests (and the cluster driver's pings)
        // get the event loop between slices of the plan
        if (++step % 16 === 0 && performance.now() - slice > PLAN_SLICE_MS) {
          await new Promise((r) => setImmediate(r));
          if (run.cancelled) return;
          slice = performance.now();
        }
        // a copy older than the object's removal outlived it on a node that was away: garbage, wherever it is
        const removedAt = listed.reduce((m, h) => (h.removed && h.version > m ? h.version : m), 0);
        const hs = removedAt ? listed.filter((h) => !h.removed) : listed;
        if (!hs.length) continue;
        if (removedAt > Math.max(...hs.map((h) => h.version))) {
          const mine = hs.find((h) => this.isSelf(h.node));
          if (mine) garbage.push({ oid, removedAt, stale: mine.stale });
          continue;
        }
        const targets = run.ring.placeOid(oid, copiesOf(oid));
        if (!targets.some((t) => this.isSelf(t))) continue;
        run.total++;
        const mine = hs.find((h) => this.isSelf(h.node));
        const suspect = hs.some((h) => h.suspect);
        const vmax = Math.max(...hs.map((h) => h.version));
        if (!s.newestIsPresent(oid, vmax, present)) {
          this.unavailable.add(oid);
          unavailable++;
          continue;
        }
        this.unavailable.delete(oid);
        const best = hs.filter((h) => h.version === vmax).sort((a, b) => rank(a, targets) - rank(b, targets) || keyOf(a.node).localeCompare(keyOf(b.node)));
        if (mine && !mine.stale && mine.version === vmax && (!suspect || this.isSelf(best[0].node))) {
          run.done++;
          metrics?.recovered(false);
          continue;
        }
        run.plans.set(oid, { sources: suspect ? [best[0]] : best, mine });
        log.debug(`recovery ${run.epoch}: ${oidToHex(oid)} ${hs.map((h) => `${nodeToString(h.node)}:v${h.version}${h.stale ? 's' : ''}${h.suspect ? '?' : ''}`).join(' ')} -> ${nodeToString(best[0].node)}`);
      }
      for (const g of garbage) {
        if (run.cancelled) return;
        s.tombstones.add(g.oid, g.removedAt);
        if (g.stale) await s.store.dropStale(g.oid);
        else await s.store.remove(g.oid);
      }
      if (garbage.length) log.info(`recovery for epoch ${run.epoch}: removed ${garbage.length} copy(ies) of objects the cluster removed while this node was away`);
      run.phase = RecoveryPhase.RECOVERING;
      prepared();
      if (unavailable) {
        complete = false;
        log.warn(`recovery for epoch ${run.epoch}: ${unavailable} object(s) wait for nodes that are away (their newest copies may be there); requests for them get HALT until they are back`);
      }
      if (run.plans.size) log.info(`recovery for epoch ${run.epoch}: ${run.plans.size} of ${run.total} object(s) to bring up to date`);
      // 3. fetch, bounded
      const started = Date.now();
      const [fetched0, kept0] = [this.bytesFetched, this.bytesFoundLocally];
      const queue = [...run.plans.keys()];
      const worker = async () => {
        while (queue.length && !run.cancelled) {
          if (s.config.disableRecovery) { await sleep(200); continue; }
          const oid = queue.shift()!;
          if (!run.plans.has(oid)) continue;
          await this.recoverOne(run, oid).catch((e) => log.warn(`cannot recover ${oidToHex(oid)}: ${(e as Error).message}`));
          const t = s.recoveryThrottle;
          if (t.queueWorkInterval > 0n) await sleep(Number(t.queueWorkInterval));
        }
      };
      const width = Math.max(1, s.recoveryThrottle.maxExecCount || 8);
      await Promise.all(Array.from({ length: width }, worker));
      if (run.cancelled) return;
      await Promise.all([...run.inflight.values()].map((p) => p.catch(() => undefined)));
      if (run.cancelled) return;
      if (!(await s.ecRecovery.wait(run.epoch))) complete = false;
      if (run.cancelled) return;
      // objects whose holders are away, or whose every source failed, keep the epoch from being complete
      if (run.plans.size || this.waiting) complete = false;
      run.phase = RecoveryPhase.NOTIFYING;
      const moved = this.bytesFetched - fetched0;
      const kept = this.bytesFoundLocally - kept0;
      const traffic = moved || kept ? `, ${mib(moved)} MiB fetched${kept ? `, ${mib(kept)} MiB of it found in local copies` : ''}` : '';
      if (run.total) log.info(`recovery for epoch ${run.epoch} done: ${run.done}/${run.total} in ${Date.now() - started} ms${traffic}${this.waiting ? `, ${this.waiting} waiting for their holders` : ''}`);
    } finally {
      prepared();
      if (!run.cancelled) {
        if (this.run === run) this.run = undefined;
        await s.cluster.notify({ t: 'recovery_done', epoch: run.epoch, complete }).catch(() => undefined);
        if (run.failed) this.replanLater(run);
      }
    }
  }

  private retryEpoch = 0;
  private retries = 0;

  /**
   * Objects whose every source failed (a source that had just listed its
   * copy answered NO_OBJ, say) would otherwise wait until the membership
   * changes, which in a quiet cluster may be never: the epoch's recovery
   * runs again from fresh listings, after 2 s, 4 s, ... up to a minute.
   */
  private replanLater(run: Run): void {
    const delay = Math.min(60_000, 2000 * 2 ** Math.min(5, this.retries++));
    log.info(`recovery for epoch ${run.epoch}: ${run.failed} object(s) had no source that answered; planning again in ${delay / 1000} s`);
    setTimeout(() => {
      if (this.s.epochNr !== run.epoch || this.run || this.s.closing) return;
      this.start(run.epoch, run.nodes, true);
    }, delay).unref();
  }

  /**
   * Before a request uses this node's copy of oid: recover it now if that
   * is still pending; HALT if its current copy is on nodes that are away.
   */
  async ensure(oid: bigint): Promise<void> {
    // a run cancelled while we waited on it has not brought the copy up to
    // date: the next run decides (chaos seed 5301: a read went on to a stale
    // copy when its fetch ended with the epoch)
    for (;;) {
      const run = this.run;
      if (!run || run.cancelled) break;
      await run.prepared;
      if (run.cancelled) continue;
      if (!run.plans.has(oid)) break;
      await this.recoverOne(run, oid);
      if (!run.cancelled) break;
    }
    if (this.unavailableEpoch === this.s.epochNr && this.unavailable.has(oid)) {
      throw new SheepdogError(Res.HALT, `the current copy of ${oidToHex(oid)} is on nodes that are away`);
    }
  }

  /**
   * The fetch of each object under way, whatever its run: a cancelled run's
   * fetch may still move this node's copy (restore it, install another),
   * and the next run's fetch of that object waits for it, then looks at the
   * copy as it is (chaos seed 5101: epoch 461's restore took the set-aside
   * copy epoch 462 had planned to compare, and 462 gave the object up).
   */
  private landing = new Map<bigint, Promise<void>>();

  private recoverOne(run: Run, oid: bigint): Promise<void> {
    const going = run.inflight.get(oid);
    if (going) return going;
    const before = this.landing.get(oid);
    const p: Promise<void> = (before ? before.catch(() => undefined).then(() => this.fetch(run, oid)) : this.fetch(run, oid)).finally(() => {
      run.inflight.delete(oid);
      if (this.landing.get(oid) === p) this.landing.delete(oid);
    });
    run.inflight.set(oid, p);
    this.landing.set(oid, p);
    return p;
  }

  private async fetch(run: Run, oid: bigint): Promise<void> {
    const s = this.s;
    const plan = run.plans.get(oid);
    if (!plan) return;
    const size = s.gw.sizeOf(oid);
    const mine = plan.mine;
    for (let attempt = 0; attempt < 5 && !run.cancelled; attempt++) {
      for (const src of plan.sources) {
        if (run.cancelled) return;
        try {
          // our copy as it is now, not as listed: an earlier run's fetch may have moved it since
          if (this.isSelf(src.node)) {
            // our own copy is the one to keep
            if (run.cancelled) return;
            if (s.store.bestCopy(oid) === 'stale') await s.store.restoreStale(oid);
            if (s.store.bestCopy(oid) !== 'live') throw new Error('our copy vanished');
            return this.finish(run, oid);
          }
          if (mine && mine.version === src.version) {
            // the same version is the same bytes unless a failure split the replicas: compare
            // WILDCARD even for a copy listed live: the holder may have set it
            // aside since it was listed (its own recovery of this epoch), and the
            // bytes are the same; the version check below refuses anything older
            const r = await s.peers.call(src.node, { opcode: Op.GET_HASH, epoch: run.epoch, flags: Flag.CMD_WILDCARD, obj: { oid, tgtEpoch: run.epoch } });
            const which = s.store.bestCopy(oid);
            // a copy of ours that cannot be read is no fault of the source: fetched whole below
            const have = which === 'stale' ? await s.store.staleSha1(oid).catch(() => undefined)
              : which === 'live' ? await s.store.sha1(oid, 'recovery').catch(() => undefined) : undefined;
            if (run.cancelled) return;
            if (have && r.rsp.hash.equals(have) && (which === 'live' || (await s.store.restoreStale(oid)))) return this.finish(run, oid);
          }
          const got = (mine && s.config.store === 'farm' && (await this.fetchChanged(run, oid, src, mine, size))) || (await this.fetchWhole(run, oid, src, size));
          if (got.version < src.version) throw new Error(`copy at version ${got.version}, listed at ${src.version}`);
          if (run.cancelled) return;
          // writes may have reached our copy after the listing: never replace it with an older one
          const now = await s.store.versionOf(oid);
          if (run.cancelled) return;
          if (now !== undefined && now > got.version) {
            log.debug(`recovery of ${oidToHex(oid)}: ours (version ${now}) is newer than ${nodeToString(src.node)}'s (${got.version}); kept`);
            return this.finish(run, oid);
          }
          await s.store.createFull(oid, size, got.data, got.version);
          return this.finish(run, oid);
        } catch (e) {
          log.debug(`recovery of ${oidToHex(oid)} from ${nodeToString(src.node)} failed: ${(e as Error).message}${(e as Error).cause ? ` (${(e as Error).cause})` : ''}`);
        }
      }
      await sleep(200 * (attempt + 1));
    }
    if (run.cancelled) return;
    // every source failed: the object waits like one whose holders are away,
    // and is planned again from fresh listings a little later (see replanLater)
    run.plans.delete(oid);
    this.unavailable.add(oid);
    run.failed++;
    throw new SheepdogError(Res.HALT, `no source of ${oidToHex(oid)} answered`);
  }

  private async fetchWhole(run: Run, oid: bigint, src: Holder, size: number): Promise<{ version: number; data: Buffer }> {
    const r = await this.s.peers.call(src.node, {
      opcode: Op.FETCH_OBJ, epoch: run.epoch, flags: Flag.CMD_RECOVERY | Flag.CMD_WILDCARD, dataLength: size + 8, obj: { oid, tgtEpoch: run.epoch },
    });
    this.bytesFetched += size;
    return decodeFetched(r.data);
  }

  /**
   * Farm: the source's copy made from ours and the slices of it that differ
   * (a node briefly away re-fetches what changed meanwhile). undefined:
   * fetch it whole (the source changed it between the two requests, or
   * does not answer SLICE_HASHES).
   */
  private async fetchChanged(run: Run, oid: bigint, src: Holder, mine: Holder, size: number): Promise<{ version: number; data: Buffer } | undefined> {
    const s = this.s;
    try {
      const r = await s.peers.call(src.node, {
        opcode: Op.SLICE_HASHES, epoch: run.epoch, flags: Flag.CMD_RECOVERY | Flag.CMD_WILDCARD, dataLength: sliceHashesSize(size), obj: { oid, tgtEpoch: run.epoch },
      });
      const theirs = decodeSliceHashes(r.data);
      if (theirs.hashes.length !== sliceCount(size)) return undefined;
      const data = mine.stale ? await s.store.staleRead(oid, 0, size) : (await s.store.readCopy(oid, size, false, 'recovery')).data;
      const ours = await sliceHashesOf(data);
      const differ = (i: number) => !ours[i]!.equals(theirs.hashes[i]);
      let fetched = 0;
      for (let i = 0; i < theirs.hashes.length; i++) {
        if (!differ(i)) continue;
        let j = i + 1;
        while (j < theirs.hashes.length && differ(j)) j++;
        const off = i * FARM_SLICE_SIZE;
        const len = Math.min(j * FARM_SLICE_SIZE, size) - off;
        const f = decodeFetched((await s.peers.call(src.node, {
          opcode: Op.FETCH_OBJ, epoch: run.epoch, flags: Flag.CMD_RECOVERY | Flag.CMD_WILDCARD, dataLength: len + 8, obj: { oid, offset: off, tgtEpoch: run.epoch },
        })).data);
        if (f.data.length !== len) return undefined;
        f.data.copy(data, off);
        fetched += len;
        i = j - 1;
      }
      // what came must be what the hashes named: else the copy changed between the requests
      const check = await sliceHashesOf(data, differ);
      if (check.some((h, i) => h && !h.equals(theirs.hashes[i]))) return undefined;
      this.bytesFetched += fetched;
      this.bytesFoundLocally += size - fetched;
      return { version: theirs.version, data };
    } catch (e) {
      log.debug(`recovery of ${oidToHex(oid)}: slices from ${nodeToString(src.node)}: ${(e as Error).message}; fetching it whole`);
      return undefined;
    }
  }

  private finish(run: Run, oid: bigint): void {
    if (run.plans.delete(oid)) {
      run.done++;
      metrics?.recovered(true);
    }
  }

  private repairing = new Set<bigint>();

  /**
   * This node's copy of oid is damaged: replace it with the copy of another
   * node the placement names (at the same version or newer), holding local
   * writes to it meanwhile.
   */
  repairDamaged(oid: bigint, why: string, by: FoundBy): void {
    const s = this.s;
    log.err(why);
    // reads of a copy under repair find it again: counted once
    if (this.repairing.has(oid)) return;
    s.integrity.damaged[by]++;
    if (!s.formatted) return;
    this.repairing.add(oid);
    void (async () => {
      const release = s.store.hold(oid);
      try {
        // a write already on its way into the damaged copy would land in the file the repair replaces
        await s.store.idle(oid);
        const size = s.gw.sizeOf(oid);
        const mine = (await s.store.versionOf(oid)) ?? 0;
        const others = s.ring.placeOid(oid, s.copiesOf(oid)).filter((n) => !this.isSelf(n));
        for (const n of others) {
          try {
            const r = await s.peers.call(n, { opcode: Op.FETCH_OBJ, epoch: s.epochNr, flags: Flag.CMD_RECOVERY, dataLength: size + 8, obj: { oid } });
            const got = decodeFetched(r.data);
            if (got.version < mine) continue;
            await s.store.createFull(oid, size, got.data, got.version);
            log.notice(`repaired ${oidToHex(oid)} with the copy of ${nodeToString(n)} (version ${got.version})`);
            s.integrity.repaired++;
            return;
          } catch (e) {
            log.debug(`repair of ${oidToHex(oid)} from ${nodeToString(n)}: ${(e as Error).message}`);
          }
        }
        log.err(`cannot repair ${oidToHex(oid)}: no other replica could give a good copy; it stays unreadable here`);
      } finally {
        release();
        this.repairing.delete(oid);
      }
    })();
  }

  /**
   * Once every member has finished this epoch, drop what is not ours: a
   * copy goes only when every node that placement names holds the object
   * at that version or newer.
   */
  maybeCleanup(): void {
    const s = this.s;
    const epoch = s.epochNr;
    const members = s.epochs.get(epoch)?.nodes ?? [];
    if (!members.every((n) => s.recoveryDone.has(nodeToString(n)))) return;
    if (this.active || s.selfNode.nrVnodes === 0) return;
    s.ecRecovery.cleanup(epoch).catch((e) => log.warn(`strip cleanup failed: ${(e as Error).message}`));
    void (async () => {
      const ring = s.ringOf(epoch);
      const byTarget = new Map<string, { node: SdNode; recs: { oid: bigint; version: number }[] }>();
      const candidates: { oid: bigint; version: number; stale: boolean; targets: SdNode[] }[] = [];
      for (const c of await s.store.copies()) {
        const targets = ring.placeOid(c.oid, s.copiesOf(c.oid));
        const ours = targets.some((n) => this.isSelf(n));
        if (ours && !c.stale) continue;
        candidates.push({ ...c, targets });
        for (const t of targets) {
          let b = byTarget.get(keyOf(t));
          if (!b) byTarget.set(keyOf(t), (b = { node: t, recs: [] }));
          b.recs.push({ oid: c.oid, version: c.version });
        }
      }
      if (!candidates.length) return;
      const held = new Map<string, Set<bigint>>();
      for (const [k, b] of byTarget) {
        if (s.epochNr !== epoch) return;
        const got = new Set<bigint>();
        for (let i = 0; i < b.recs.length; i += 4096) {
          const chunk = b.recs.slice(i, i + 4096);
          try {
            const oids = this.isSelf(b.node)
              ? await s.heldOf(chunk)
              : decodeOids((await s.peers.call(b.node, { opcode: Op.CHECK_HELD, epoch, flags: Flag.CMD_WRITE | Flag.CMD_PIGGYBACK }, encodeHeldQuery(chunk))).data);
            for (const o of oids) got.add(o);
          } catch (e) {
            log.debug(`cleanup: ${nodeToString(b.node)} did not answer: ${(e as Error).message}`);
          }
        }
        held.set(k, got);
        log.debug(`cleanup ${epoch}: ${nodeToString(b.node)} holds ${got.size} of ${b.recs.length}`);
      }
      let removed = 0;
      for (const c of candidates) {
        if (s.epochNr !== epoch) return;
        if (!c.targets.every((t) => held.get(keyOf(t))?.has(c.oid))) continue;
        if (c.stale) await s.store.dropStale(c.oid);
        else await s.store.remove(c.oid);
        removed++;
      }
      if (removed) log.info(`epoch ${epoch}: removed ${removed} copy(ies) this node no longer needs`);
      if (removed < candidates.length) log.info(`epoch ${epoch}: kept ${candidates.length - removed} copy(ies) that their owners do not hold yet`);
    })().catch((e) => log.warn(`cleanup failed: ${(e as Error).message}`));
  }
}

const mib = (b: number) => (b / (1 << 20)).toFixed(1);

/** Live copies first, then holders the placement names, in its order. */
function rank(h: Holder, targets: SdNode[]): number {
  const i = targets.findIndex((t) => sameNode(t, h.node));
  return (h.stale ? 1000 : 0) + (i < 0 ? 100 : i);
}
