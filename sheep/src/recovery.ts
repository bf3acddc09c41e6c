// Recovery: after every epoch change each node pulls the objects that the
// new placement gives it and that it does not hold, in the background and
// with bounded concurrency, while client I/O goes on (an object a request
// needs is recovered on demand first). Objects a node no longer owns are
// removed only after every member reported its recovery complete.
import {
  SdNode, VnodeRing, Op, Flag, Res, SheepdogError, sameNode, nodeToString, oidToHex,
} from '@sheepdog/common';
import type { Sheep } from './sheep.js';
import { log } from './log.js';
import { sleep } from './util.js';

export const RecoveryPhase = { PREPARING: 0, RECOVERING: 1, NOTIFYING: 2 } as const;

interface Run {
  epoch: number;
  prevRing: VnodeRing;
  ring: VnodeRing;
  nodes: SdNode[];
  cancelled: boolean;
  prepared: Promise<void>;
  /** oid -> live holders, other than us */
  holders: Map<bigint, SdNode[]>;
  staleHolders: Map<bigint, SdNode[]>;
  pending: Set<bigint>;
  inflight: Map<bigint, Promise<void>>;
  total: number;
  done: number;
  phase: number;
}

export class Recovery {
  private run?: Run;

  constructor(private readonly s: Sheep) {}

  get state(): { inRecovery: boolean; state: number; nrFinished: bigint; nrTotal: bigint } {
    const r = this.run;
    if (!r || r.cancelled) return { inRecovery: false, state: 0, nrFinished: 0n, nrTotal: 0n };
    return { inRecovery: true, state: r.phase, nrFinished: BigInt(r.done), nrTotal: BigInt(r.total) };
  }

  get active(): boolean {
    return !!this.run && !this.run.cancelled;
  }

  stop(): void {
    if (this.run) this.run.cancelled = true;
    this.run = undefined;
  }

  /** Put every local object aside as possibly stale (rejoining a running cluster). */
  async setAsideAll(): Promise<void> {
    const oids = await this.s.store.list();
    for (const oid of oids) await this.s.store.setAside(oid);
    if (oids.length) log.info(`set aside ${oids.length} local object(s) until recovery checks them`);
  }

  start(epoch: number, prevNodes: SdNode[], nodes: SdNode[]): void {
    this.stop();
    let resolvePrepared!: () => void;
    const run: Run = {
      epoch, prevRing: new VnodeRing(prevNodes), ring: new VnodeRing(nodes), nodes, cancelled: false,
      prepared: new Promise<void>((r) => (resolvePrepared = r)),
      holders: new Map(), staleHolders: new Map(), pending: new Set(), inflight: new Map(),
      total: 0, done: 0, phase: RecoveryPhase.PREPARING,
    };
    this.run = run;
    this.execute(run, resolvePrepared).catch((e) => {
      log.err(`recovery for epoch ${epoch} failed: ${(e as Error).stack ?? e}`);
    });
  }

  private isSelf(n: SdNode): boolean {
    return sameNode(n, this.s.selfNode);
  }

  private async listOf(n: SdNode, stale: boolean, epoch: number): Promise<bigint[]> {
    if (this.isSelf(n)) return stale ? this.s.store.staleList() : this.s.store.list();
    let size = 1 << 20;
    for (let tries = 0; tries < 8; tries++) {
      const r = await this.s.peers.call(n, {
        opcode: Op.GET_OBJ_LIST, epoch, flags: stale ? Flag.CMD_WILDCARD : 0, dataLength: size, obj: { tgtEpoch: epoch },
      }, undefined, [Res.BUFFER_SMALL]);
      if (r.rsp.result === Res.BUFFER_SMALL) { size *= 4; continue; }
      const out: bigint[] = [];
      for (let i = 0; i + 8 <= r.data.length; i += 8) out.push(r.data.readBigUInt64LE(i));
      return out;
    }
    throw new Error(`object list of ${nodeToString(n)} too large`);
  }

  private async execute(run: Run, prepared: () => void): Promise<void> {
    const s = this.s;
    try {
      if (s.selfNode.nrVnodes === 0) return; // gateways hold nothing
      // 0. a local copy is current only if we were one of its holders in
      // the previous epoch; anything else may have missed writes
      for (const oid of await s.store.list()) {
        if (run.cancelled) return;
        const prev = run.prevRing.placeOid(oid, s.copiesOf(oid));
        if (!prev.some((t) => this.isSelf(t))) await s.store.setAside(oid);
      }
      // 1. who holds what
      const lists = await Promise.all(run.nodes.map(async (n) => {
        const [live, stale] = await Promise.all([
          this.listOf(n, false, run.epoch).catch((e) => { log.warn(`no object list from ${nodeToString(n)}: ${e.message}`); return [] as bigint[]; }),
          this.listOf(n, true, run.epoch).catch(() => [] as bigint[]),
        ]);
        return { n, live, stale };
      }));
      if (run.cancelled) return;
      const mine = new Set<bigint>();
      for (const { n, live, stale } of lists) {
        for (const oid of live) {
          if (this.isSelf(n)) { mine.add(oid); continue; }
          const h = run.holders.get(oid);
          if (h) h.push(n); else run.holders.set(oid, [n]);
        }
        for (const oid of stale) {
          const h = run.staleHolders.get(oid);
          if (h) h.push(n); else run.staleHolders.set(oid, [n]);
        }
      }
      // 2. what placement gives us that we lack
      const all = new Set<bigint>([...run.holders.keys(), ...run.staleHolders.keys()]);
      // progress counts every object we must hold, like upstream: the ones
      // already here are done at once
      for (const oid of new Set([...all, ...mine])) {
        const targets = run.ring.placeOid(oid, s.copiesOf(oid));
        if (!targets.some((t) => this.isSelf(t))) continue;
        run.total++;
        if (mine.has(oid)) run.done++;
        else run.pending.add(oid);
      }
      run.phase = RecoveryPhase.RECOVERING;
      prepared();
      if (run.pending.size) log.info(`recovery for epoch ${run.epoch}: ${run.pending.size} of ${run.total} object(s) to fetch`);
      // 3. fetch, bounded
      const started = Date.now();
      const queue = [...run.pending];
      const worker = async () => {
        while (queue.length && !run.cancelled) {
          if (s.config.disableRecovery) { await sleep(200); continue; }
          const oid = queue.shift()!;
          if (!run.pending.has(oid)) continue;
          await this.recoverOne(run, oid).catch((e) => log.warn(`cannot recover ${oidToHex(oid)}: ${(e as Error).message}`));
          const t = s.recoveryThrottle;
          if (t.queueWorkInterval > 0n) await sleep(Number(t.queueWorkInterval));
        }
      };
      const width = Math.max(1, s.recoveryThrottle.maxExecCount || 8);
      await Promise.all(Array.from({ length: width }, worker));
      if (run.cancelled) return;
      await Promise.all([...run.inflight.values()]);
      if (run.cancelled) return;
      run.phase = RecoveryPhase.NOTIFYING;
      if (run.total) log.info(`recovery for epoch ${run.epoch} done: ${run.done}/${run.total} in ${Date.now() - started} ms`);
    } finally {
      prepared();
      if (!run.cancelled) {
        if (this.run === run) this.run = undefined;
        await s.cluster.notify({ t: 'recovery_done', epoch: run.epoch }).catch(() => undefined);
      }
    }
  }

  /** Recover one object now if this node is still missing it. */
  async ensure(oid: bigint): Promise<void> {
    const run = this.run;
    if (!run || run.cancelled) return;
    await run.prepared;
    if (!run.pending.has(oid)) return;
    await this.recoverOne(run, oid);
  }

  private recoverOne(run: Run, oid: bigint): Promise<void> {
    let p = run.inflight.get(oid);
    if (p) return p;
    p = this.fetch(run, oid).finally(() => {
      run.inflight.delete(oid);
    });
    run.inflight.set(oid, p);
    return p;
  }

  private async fetch(run: Run, oid: bigint): Promise<void> {
    const s = this.s;
    if (!run.pending.has(oid)) return;
    const size = s.gw.sizeOf(oid);
    const live = run.holders.get(oid) ?? [];
    // trust first the nodes that held it in the previous epoch
    const prevTargets = run.prevRing.placeOid(oid, s.copiesOf(oid));
    const ordered = [
      ...live.filter((n) => prevTargets.some((t) => sameNode(t, n))),
      ...live.filter((n) => !prevTargets.some((t) => sameNode(t, n))),
    ];
    const haveStale = (run.staleHolders.get(oid) ?? []).some((n) => this.isSelf(n));
    for (const n of ordered) {
      if (run.cancelled) return;
      try {
        if (haveStale) {
          // our own old copy is fine if it is identical to a current one
          const r = await s.peers.call(n, { opcode: Op.GET_HASH, epoch: run.epoch, obj: { oid, tgtEpoch: run.epoch } });
          const mineHash = await s.store.staleSha1(oid);
          if (r.rsp.hash.equals(mineHash) && (await s.store.restoreStale(oid))) {
            this.finish(run, oid);
            return;
          }
        }
        const data = await s.peers.readPeer(n, oid, 0, size, run.epoch, Flag.CMD_RECOVERY, run.epoch);
        if (run.cancelled) return;
        await s.store.createFull(oid, size, data);
        this.finish(run, oid);
        return;
      } catch (e) {
        log.debug(`recovery of ${oidToHex(oid)} from ${nodeToString(n)} failed: ${(e as Error).message}`);
      }
    }
    // nobody has a current copy: the best we have is a set-aside one
    if (haveStale && (await s.store.restoreStale(oid))) {
      this.finish(run, oid);
      return;
    }
    for (const n of run.staleHolders.get(oid) ?? []) {
      if (this.isSelf(n)) continue;
      try {
        const data = await s.peers.readPeer(n, oid, 0, size, run.epoch, Flag.CMD_RECOVERY | Flag.CMD_WILDCARD, run.epoch);
        await s.store.createFull(oid, size, data);
        this.finish(run, oid);
        return;
      } catch { /* next */ }
    }
    // lost for good (or deleted meanwhile): stop asking
    run.pending.delete(oid);
    run.done++;
    throw new SheepdogError(Res.NO_OBJ, `no copy of ${oidToHex(oid)} found`);
  }

  private finish(run: Run, oid: bigint): void {
    if (run.pending.delete(oid)) run.done++;
  }

  /** Once every member has finished this epoch, drop what is not ours. */
  maybeCleanup(): void {
    const s = this.s;
    const epoch = s.epochNr;
    const members = s.epochs.get(epoch)?.nodes ?? [];
    if (!members.every((n) => s.recoveryDone.has(nodeToString(n)))) return;
    if (this.active) return;
    void (async () => {
      const ring = new VnodeRing(members);
      let removed = 0;
      for (const oid of await s.store.list()) {
        if (s.epochNr !== epoch) return;
        const t = ring.placeOid(oid, s.copiesOf(oid));
        if (!t.some((n) => this.isSelf(n))) {
          await s.store.remove(oid);
          removed++;
        }
      }
      if (s.epochNr !== epoch) return;
      await s.store.purgeStale();
      if (removed) log.info(`epoch ${epoch}: removed ${removed} object(s) this node no longer owns`);
    })().catch((e) => log.warn(`cleanup failed: ${(e as Error).message}`));
  }
}
