// Recovery of erasure-code strips (erasure-coding-and-md.md A.11), beside
// the replicated recovery (recovery.ts), which never sees strip files.
//
// After an epoch change each node asks every member which strips it holds
// (EC_STRIPS: oid, index, version; and the objects it knows were removed).
// For every striped object the new placement gives it, at position i, the
// node needs strip i at the object's newest version (every write stamps
// all the strips it touches with its epoch, so the current strips are
// those at the highest version). It has it, or copies strip i from any
// node holding it at that version (its previous holder, typically), or
// else reads any D strips at that version and decodes strip i.
//
// Nothing is moved aside at the epoch change: strips are named by their
// index, so an old holder keeps serving its strip to recovery and to
// degraded reads until every member has finished the epoch; then each
// node drops the strips it holds under an index that is not its own any
// more, once the node now holding that index has it (cleanup()).
import {
  SdNode, VnodeRing, Op, Flag, Res, SheepdogError, sameNode, nodeToString, oidToHex, ecEncode,
  decodeStripRecords, StripRecord, stripFileSize,
} from '@sheepdog/common';
import type { Sheep } from '../sheep.js';
import type { EcCode } from './stripe-io.js';
import { stripKey, keyOid, keyStrip } from './strip-key.js';
import { decodeSliced } from './codec-async.js';
import { log } from '../log.js';
import { sleep } from '../util.js';

/** The index a tombstone record carries in an EC_STRIPS reply (strips are 0..30). */
export const TOMBSTONE_IDX = 255;
/** Reply room asked of a member per page: 65,535 records (1 MiB). */
const LIST_BYTES = 1 << 20;

interface Holding {
  node: SdNode;
  idx: number;
  version: number;
}

interface ObjectStrips {
  holdings: Holding[];
  removedAt: number;
}

interface Plan {
  ec: EcCode;
  idx: number;
  version: number;
  holdings: Holding[];
}

interface Run {
  epoch: number;
  ring: VnodeRing;
  nodes: SdNode[];
  cancelled: boolean;
  prepared: Promise<void>;
  finished: Promise<boolean>;
  plans: Map<bigint, Plan>;
  inflight: Map<bigint, Promise<void>>;
}

export class EcRecovery {
  private run?: Run;
  /** Strips rebuilt by decoding, and copied whole (for tests and the log). */
  rebuilt = 0;
  copied = 0;

  constructor(private readonly s: Sheep) {}

  get active(): boolean {
    return !!this.run && !this.run.cancelled;
  }

  private isSelf(n: SdNode): boolean {
    return sameNode(n, this.s.selfNode);
  }

  stop(): void {
    if (this.run) this.run.cancelled = true;
    this.run = undefined;
  }

  start(epoch: number, nodes: SdNode[]): void {
    this.stop();
    let prepared!: () => void;
    let finished!: (ok: boolean) => void;
    const run: Run = {
      epoch, ring: new VnodeRing(nodes), nodes, cancelled: false,
      prepared: new Promise<void>((r) => (prepared = r)),
      finished: new Promise<boolean>((r) => (finished = r)),
      plans: new Map(), inflight: new Map(),
    };
    this.run = run;
    this.execute(run, prepared).then((ok) => finished(ok), (e) => {
      log.err(`erasure-code recovery for epoch ${epoch} failed: ${(e as Error).stack ?? e}`);
      finished(false);
    }).finally(() => {
      prepared();
      if (this.run === run) this.run = undefined;
    });
  }

  /** Whether this epoch's strip recovery ended with every strip in place (true when none ran). */
  async wait(epoch: number): Promise<boolean> {
    const run = this.run;
    if (!run || run.epoch !== epoch) return true;
    return run.finished;
  }

  /** Before this node's strip of oid is used: rebuild it now if that is pending. */
  async ensure(oid: bigint): Promise<void> {
    const run = this.run;
    if (!run || run.cancelled) return;
    await run.prepared;
    // a failure is the request's to meet: it finds the strip missing, and a reader decodes without it
    if (run.plans.has(oid)) await this.recoverOne(run, oid).catch((e) => log.warn(`cannot rebuild strip ${run.plans.get(oid)?.idx} of ${oidToHex(oid)} now: ${(e as Error).message}`));
  }

  /** Every member's strips (and its tombstones of striped objects), by oid. */
  private async listAll(run: Run): Promise<Map<bigint, ObjectStrips> | undefined> {
    const out = new Map<bigint, ObjectStrips>();
    for (const n of run.nodes.filter((x) => x.nrVnodes > 0)) {
      const recs = await this.listingOf(run, n);
      if (!recs) return undefined;
      for (const r of recs) {
        let o = out.get(r.oid);
        if (!o) out.set(r.oid, (o = { holdings: [], removedAt: 0 }));
        if (r.idx === TOMBSTONE_IDX) o.removedAt = Math.max(o.removedAt, r.version);
        else o.holdings.push({ node: n, idx: r.idx, version: r.version });
      }
    }
    return out;
  }

  private async listingOf(run: Run, n: SdNode): Promise<StripRecord[] | undefined> {
    for (let attempt = 0; !run.cancelled; attempt++) {
      try {
        if (this.isSelf(n)) return await this.s.stripRecords();
        const out: StripRecord[] = [];
        for (let cursor = 0n; ;) {
          const page = decodeStripRecords((await this.s.peers.call(n, { opcode: Op.EC_STRIPS, epoch: run.epoch, dataLength: LIST_BYTES, obj: { cowOid: cursor } })).data);
          out.push(...page.records);
          if (!page.more || !page.records.length) return out;
          cursor = page.records[page.records.length - 1].oid;
        }
      } catch (e) {
        if (e instanceof SheepdogError && e.result === Res.OLD_NODE_VER) return undefined;
        if (attempt % 10 === 0) log.warn(`erasure-code recovery for epoch ${run.epoch}: no strip list from ${nodeToString(n)} yet: ${(e as Error).message}`);
        await sleep(Math.min(2000, 100 * (attempt + 1)));
      }
    }
    return undefined;
  }

  private async execute(run: Run, prepared: () => void): Promise<boolean> {
    const s = this.s;
    if (s.selfNode.nrVnodes === 0) return true;
    const all = await this.listAll(run);
    if (!all || run.cancelled) return false;
    let n = 0;
    for (const [oid, o] of all) {
      // a placement per object: let requests in between on a large store
      if (++n % 1024 === 0) await new Promise((r) => setImmediate(r));
      if (run.cancelled) return false;
      const ec = s.ecCode(oid);
      if (!ec || !o.holdings.length) continue;
      const version = Math.max(...o.holdings.map((h) => h.version));
      if (o.removedAt > version) continue; // leftovers of a removed object: cleanup's
      const idx = run.ring.placeOid(oid, ec.d + ec.p).findIndex((t) => this.isSelf(t));
      if (idx < 0) continue;
      if (o.holdings.some((h) => this.isSelf(h.node) && h.idx === idx && h.version === version)) continue;
      run.plans.set(oid, { ec, idx, version, holdings: o.holdings.filter((h) => h.version === version) });
    }
    prepared();
    if (!run.plans.size) return true;
    log.info(`erasure-code recovery for epoch ${run.epoch}: ${run.plans.size} strip(s) to rebuild here`);
    const started = Date.now();
    const queue = [...run.plans.keys()];
    let failed = 0;
    const worker = async () => {
      while (queue.length && !run.cancelled) {
        if (s.config.disableRecovery) { await sleep(200); continue; }
        const oid = queue.shift()!;
        if (!run.plans.has(oid)) continue;
        await this.recoverOne(run, oid).catch((e) => {
          failed++;
          log.warn(`cannot rebuild strip ${run.plans.get(oid)?.idx} of ${oidToHex(oid)}: ${(e as Error).message}`);
        });
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(4, s.recoveryThrottle.maxExecCount || 4)) }, worker));
    await Promise.all([...run.inflight.values()].map((p) => p.catch(() => undefined)));
    if (run.cancelled) return false;
    log.info(`erasure-code recovery for epoch ${run.epoch} done in ${Date.now() - started} ms: ${this.copied} copied, ${this.rebuilt} decoded so far${failed ? `, ${failed} failed` : ''}`);
    return failed === 0;
  }

  private recoverOne(run: Run, oid: bigint): Promise<void> {
    let p = run.inflight.get(oid);
    if (p) return p;
    p = this.rebuild(run, oid).then(() => { run.plans.delete(oid); }).finally(() => run.inflight.delete(oid));
    run.inflight.set(oid, p);
    return p;
  }

  /** A whole strip file of a holder, read as recovery (the holder does not wait for its own recovery). */
  private async fetchStrip(run: { epoch: number }, h: Holding, oid: bigint, ec: EcCode, len: number): Promise<Buffer> {
    if (this.isSelf(h.node)) return this.s.store.read(stripKey(oid, h.idx), 0, len, undefined, 'recovery');
    const r = await this.s.peers.call(h.node, {
      opcode: Op.READ_PEER, epoch: run.epoch, flags: Flag.CMD_RECOVERY, dataLength: len,
      obj: { oid, offset: 0, copies: ec.d + ec.p, copyPolicy: ec.cp, ecIndex: h.idx, tgtEpoch: run.epoch },
    });
    if (r.data.length !== len) throw new Error(`${r.data.length} of ${len} bytes`);
    return r.data;
  }

  private async rebuild(run: Run, oid: bigint): Promise<void> {
    const plan = run.plans.get(oid);
    if (!plan || run.cancelled) return;
    const { ec, idx, version } = plan;
    const len = stripFileSize(this.s.gw.sizeOf(oid), ec.d);
    // the same index from whoever has it: one strip's worth of traffic
    for (const h of plan.holdings.filter((x) => x.idx === idx && !this.isSelf(x.node))) {
      try {
        const data = await this.fetchStrip(run, h, oid, ec, len);
        if (run.cancelled) return;
        await this.s.store.createFull(stripKey(oid, idx), len, data, version);
        this.copied++;
        return;
      } catch (e) {
        log.debug(`strip ${idx} of ${oidToHex(oid)} from ${nodeToString(h.node)}: ${(e as Error).message}`);
      }
    }
    // else any D other strips, decoded (A.6); several holders of one index are alternatives
    const have = new Map<number, Buffer>();
    const byIdx = new Map<number, Holding[]>();
    for (const h of plan.holdings) if (h.idx !== idx) (byIdx.get(h.idx) ?? byIdx.set(h.idx, []).get(h.idx)!).push(h);
    for (const [j, hs] of [...byIdx].sort((a, b) => a[0] - b[0])) {
      if (have.size >= ec.d || run.cancelled) break;
      for (const h of hs) {
        try {
          have.set(j, await this.fetchStrip(run, h, oid, ec, len));
          break;
        } catch (e) {
          log.debug(`strip ${j} of ${oidToHex(oid)} from ${nodeToString(h.node)}: ${(e as Error).message}`);
        }
      }
    }
    if (run.cancelled) return;
    if (have.size < ec.d) throw new SheepdogError(Res.HALT, `only ${have.size} of the ${ec.d} strips needed are readable`);
    const data = await decodeSliced(ec.d, have);
    const mine = idx < ec.d ? data[idx] : ecEncode(data, idx - ec.d + 1)[idx - ec.d];
    await this.s.store.createFull(stripKey(oid, idx), len, mine, version);
    this.rebuilt++;
  }

  private repairing = new Set<bigint>();

  /**
   * A strip found damaged here (short, or failing its checksums): rebuilt
   * in the background from D other strips of the current placement, at its
   * version; writes to it wait meanwhile. Readers decode without it.
   */
  repairDamaged(key: bigint, why: string): void {
    const s = this.s;
    log.err(why);
    if (this.repairing.has(key) || !s.formatted) return;
    this.repairing.add(key);
    const oid = keyOid(key);
    const idx = keyStrip(key);
    void (async () => {
      const release = s.store.hold(key);
      try {
        const ec = s.ecCode(oid);
        if (!ec) return;
        const version = (await s.store.versionOf(key)) ?? 0;
        const len = stripFileSize(s.gw.sizeOf(oid), ec.d);
        const t = s.ring.placeOid(oid, ec.d + ec.p);
        const have = new Map<number, Buffer>();
        for (let j = 0; j < t.length && have.size < ec.d; j++) {
          if (j === idx) continue;
          try {
            have.set(j, await this.fetchStrip({ epoch: s.epochNr }, { node: t[j], idx: j, version }, oid, ec, len));
          } catch (e) {
            log.debug(`repair of strip ${idx} of ${oidToHex(oid)}: strip ${j}: ${(e as Error).message}`);
          }
        }
        if (have.size < ec.d) throw new Error(`only ${have.size} of the ${ec.d} strips needed are readable`);
        const data = await decodeSliced(ec.d, have);
        await s.store.createFull(key, len, idx < ec.d ? data[idx] : ecEncode(data, idx - ec.d + 1)[idx - ec.d], version);
        log.notice(`repaired strip ${idx} of ${oidToHex(oid)} from ${have.size} other strips`);
        s.integrity.repaired++;
      } catch (e) {
        log.err(`cannot repair strip ${idx} of ${oidToHex(oid)}: ${(e as Error).message}; readers decode without it`);
      } finally {
        release();
        this.repairing.delete(key);
      }
    })();
  }

  /**
   * Once every member has finished the epoch: drop the strips held here
   * under an index that is no longer this node's, where the node that
   * holds that index now has it at that version or newer, and leftovers
   * of removed objects.
   */
  async cleanup(epoch: number): Promise<void> {
    const s = this.s;
    if (this.active || s.selfNode.nrVnodes === 0 || !s.store.strips) return;
    const mine = await s.store.strips();
    if (!mine.length) return;
    const nodes = s.epochs.get(epoch)?.nodes ?? [];
    const run: Run = {
      epoch, ring: new VnodeRing(nodes), nodes, cancelled: false, prepared: Promise.resolve(), finished: Promise.resolve(true),
      plans: new Map(), inflight: new Map(),
    };
    const all = await this.listAll(run);
    if (!all || s.epochNr !== epoch) return;
    let dropped = 0;
    let n = 0;
    for (const st of mine) {
      if (++n % 1024 === 0) await new Promise((r) => setImmediate(r));
      if (s.epochNr !== epoch) return;
      const o = all.get(st.oid);
      const ec = s.ecCode(st.oid);
      if (!o || !ec) continue;
      const gone = o.removedAt > st.version;
      const t = run.ring.placeOid(st.oid, ec.d + ec.p);
      if (!gone) {
        if (st.idx < t.length && this.isSelf(t[st.idx])) continue;
        const holder = t[st.idx];
        // an index past the placement (fewer zones than D+P) has no holder to give it to: kept
        if (!holder || !o.holdings.some((h) => sameNode(h.node, holder) && h.idx === st.idx && h.version >= st.version)) continue;
      }
      await s.store.remove(stripKey(st.oid, st.idx)).catch(() => undefined);
      dropped++;
    }
    if (dropped) log.info(`epoch ${epoch}: dropped ${dropped} strip(s) this node no longer holds`);
  }
}
