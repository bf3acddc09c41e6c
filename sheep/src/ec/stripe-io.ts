// The gateway's I/O on erasure-coded objects (erasure-coding-and-md.md
// A.8-A.10): an object is cut into 512-byte stripes, strip i of every
// stripe goes to the i-th node of the object's placement (ec_index i), and
// the gateway reads, encodes and decodes.
//
// Two departures from upstream, both on purpose:
//  - a write that covers part of a stripe reads that stripe first, at
//    either end and also when it starts aligned and ends inside the same
//    stripe (upstream zeroes the rest of such a stripe, A.8's bug);
//  - a read that cannot get one of the D data strips reads the parity
//    strips and decodes (upstream fails: A.9); it fails only when fewer
//    than D strips are readable.
import {
  Res, SheepdogError, SdNode, Op, Flag, EC_STRIPE, stripFileSize,
} from '@sheepdog/common';
import type { ObjectStore } from '../store/store.js';
import type { PeerPool } from '../peer.js';
import { stripKey } from './strip-key.js';
import { encodeSliced, decodeSliced, splitSliced, joinSliced } from './codec-async.js';
import { RangeLocks } from './range-lock.js';
import { log } from '../log.js';
import { retryAcrossEpochs, RETRYABLE } from '../gateway.js';

/** An object's erasure code: D data and P parity strips, and the copy_policy byte that says so. */
export interface EcCode {
  d: number;
  p: number;
  cp: number;
}

export interface StripeView {
  epoch(): number;
  targets(oid: bigint, copies: number): SdNode[];
  waitEpoch(pred: (e: number) => boolean, timeoutMs: number): Promise<boolean>;
  /** Before this node's strip of oid is used: waits for its recovery. */
  ensureLocal(oid: bigint): Promise<void>;
  strict(): boolean;
  /** The cluster was formatted to allow erasure-coded writes with fewer zones than D+P (ClusterFlag.EC_FEW_ZONES). */
  ecFewZones(): boolean;
  /** The members that hold data (removals reach strips left anywhere). */
  holders?(): SdNode[];
  removed?(oid: bigint, epoch: number): void;
}


const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from) }, (_, k) => from + k);

export class StripeIo {
  private readonly locks = new RangeLocks();
  private lastFewZones = 0;

  constructor(
    private readonly store: ObjectStore,
    private readonly view: StripeView,
    private readonly peers: PeerPool,
    private readonly isLocal: (n: SdNode) => boolean,
  ) {}

  /**
   * The strip holders of oid in index order (A.5). Fewer than D zones: no
   * I/O at all. Fewer than D+P: reads go on; writes only where the cluster
   * allows it, storing a strip per zone (data first, then parity).
   */
  private holdersOf(oid: bigint, ec: EcCode, write: boolean): SdNode[] {
    const want = ec.d + ec.p;
    const t = this.view.targets(oid, want);
    if (t.length < ec.d) {
      throw new SheepdogError(Res.HALT, `not enough zones for ${ec.d}:${ec.p} erasure coding: ${t.length} zone(s), reads and writes need at least ${ec.d}`);
    }
    if (write && t.length < want) {
      if (this.view.strict() || !this.view.ecFewZones()) {
        throw new SheepdogError(Res.HALT, `not enough zones for ${ec.d}:${ec.p} erasure coding: ${t.length} zone(s) for ${want} strips (writes need ${want} zones unless the cluster was formatted to allow fewer)`);
      }
      const now = Date.now();
      if (now - this.lastFewZones > 10_000) {
        this.lastFewZones = now;
        log.warn(`erasure-coded writes store ${t.length} of ${want} strips (${t.length - ec.d} parity of ${ec.p}): the cluster has ${t.length} zones`);
      }
    }
    return t;
  }

  /** Run fn again after membership changes (a dead holder, a peer ahead of us), as the replicated gateway does. */
  private retrying<T>(fn: () => Promise<T>): Promise<T> {
    return retryAcrossEpochs(this.view, fn);
  }


  private fields(oid: bigint, ec: EcCode, idx: number, off: number) {
    return { oid, offset: off, copies: ec.d + ec.p, copyPolicy: ec.cp, ecIndex: idx };
  }

  private async readStrip(n: SdNode, oid: bigint, ec: EcCode, idx: number, off: number, len: number, ep: number): Promise<Buffer> {
    if (this.isLocal(n)) {
      await this.view.ensureLocal(oid);
      if (this.view.epoch() !== ep) throw new SheepdogError(Res.OLD_NODE_VER);
      return this.store.read(stripKey(oid, idx), off, len);
    }
    const r = await this.peers.call(n, { opcode: Op.READ_PEER, epoch: ep, dataLength: len, obj: this.fields(oid, ec, idx, off) });
    if (r.data.length !== len) throw new SheepdogError(Res.EIO, `strip ${idx} of ${oid.toString(16)}: ${r.data.length} of ${len} bytes`);
    return r.data;
  }

  /** createSize: the strip file's size for a create (0: a write into an existing strip). */
  private async writeStrip(n: SdNode, oid: bigint, ec: EcCode, idx: number, off: number, data: Buffer, ep: number, createSize: number): Promise<void> {
    if (this.isLocal(n)) {
      await this.view.ensureLocal(oid);
      if (this.view.epoch() !== ep) throw new SheepdogError(Res.OLD_NODE_VER);
      const key = stripKey(oid, idx);
      if (createSize) await this.store.create(key, createSize, off, data);
      else await this.store.write(key, off, data);
      return;
    }
    await this.peers.call(n, {
      opcode: createSize ? Op.CREATE_AND_WRITE_PEER : Op.WRITE_PEER, epoch: ep, flags: Flag.CMD_WRITE, obj: this.fields(oid, ec, idx, off),
    }, data);
  }

  /** Stripes [start, end) of oid: (end - start) * 512 bytes, decoded from any D strips if need be. */
  async readStripes(oid: bigint, ec: EcCode, start: number, end: number): Promise<Buffer> {
    const s = EC_STRIPE / ec.d;
    const t = this.holdersOf(oid, ec, false);
    const ep = this.view.epoch();
    const got = new Map<number, Buffer>();
    const errs: unknown[] = [];
    const one = (i: number) => this.readStrip(t[i], oid, ec, i, start * s, (end - start) * s, ep).then((b) => { got.set(i, b); }, (e) => { errs.push(e); });
    await Promise.all(range(0, ec.d).map(one));
    // degraded: every other strip at once, and any D of all those read decode
    if (got.size < ec.d) await Promise.all(range(ec.d, t.length).map(one));
    if (got.size < ec.d) throw this.unreadable(oid, ec, got.size, errs);
    if (errs.length) log.debug(`degraded read of ${oid.toString(16)}: ${errs.length} strip(s) unreadable, decoded from ${got.size}`);
    return joinSliced(await decodeSliced(ec.d, got));
  }

  /** Why fewer than D strips came back: a retryable error first (the membership is changing), NO_OBJ if none exists. */
  private unreadable(oid: bigint, ec: EcCode, have: number, errs: unknown[]): unknown {
    const retry = errs.find((e) => e instanceof SheepdogError && RETRYABLE.includes(e.result));
    if (retry) return retry;
    if (have === 0 && errs.every((e) => e instanceof SheepdogError && e.result === Res.NO_OBJ)) return errs[0];
    const other = errs.find((e) => !(e instanceof SheepdogError && e.result === Res.NO_OBJ));
    if (other && have === 0) return other;
    return new SheepdogError(Res.HALT, `only ${have} of the ${ec.d} strips needed to read ${oid.toString(16)} (${ec.d}:${ec.p}) are readable`);
  }

  read(oid: bigint, off: number, len: number, ec: EcCode): Promise<Buffer> {
    const start = Math.floor(off / EC_STRIPE);
    const end = Math.ceil((off + len) / EC_STRIPE);
    if (len === 0) return Promise.resolve(Buffer.alloc(0));
    return this.retrying(async () => {
      const whole = await this.readStripes(oid, ec, start, end);
      const at = off - start * EC_STRIPE;
      return whole.subarray(at, at + len);
    });
  }

  /**
   * Write data at off. create: (re)create the object of size bytes, zeros
   * outside data (no stripe is read); else the object exists and every
   * byte outside data keeps its value.
   */
  async write(oid: bigint, off: number, data: Buffer, ec: EcCode, size: number, create: boolean): Promise<void> {
    const start = Math.floor(off / EC_STRIPE);
    const end = Math.ceil((off + data.length) / EC_STRIPE);
    const release = await this.locks.lock(oid, start, end);
    try {
      await this.retrying(async () => {
        // too few zones is the answer before any stripe is read
        this.holdersOf(oid, ec, true);
        const buf = Buffer.alloc((end - start) * EC_STRIPE);
        if (!create) {
          const head = off % EC_STRIPE !== 0;
          const tail = (off + data.length) % EC_STRIPE !== 0;
          // the tail stripe is read whenever the write ends inside one, also the head one (A.8's bug)
          await Promise.all([
            head ? this.readStripes(oid, ec, start, start + 1).then((b) => { b.copy(buf, 0); }) : undefined,
            tail && !(head && end - 1 === start) ? this.readStripes(oid, ec, end - 1, end).then((b) => { b.copy(buf, (end - 1 - start) * EC_STRIPE); }) : undefined,
          ]);
        }
        data.copy(buf, off - start * EC_STRIPE);
        const strips = await splitSliced(buf, ec.d);
        strips.push(...(await encodeSliced(strips, ec.p)));
        const t = this.holdersOf(oid, ec, true);
        const ep = this.view.epoch();
        const s = EC_STRIPE / ec.d;
        const rs = await Promise.allSettled(t.map((n, i) => this.writeStrip(n, oid, ec, i, start * s, strips[i], ep, create ? stripFileSize(size, ec.d) : 0)));
        const bad = rs.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
        if (bad) throw bad.reason;
      });
    } finally {
      release();
    }
  }

  /** Remove every strip: each holder's own, and (best effort) any left on other members. */
  async remove(oid: bigint, ec: EcCode): Promise<void> {
    const t = this.holdersOf(oid, ec, false);
    const removeAt = (n: SdNode, idx: number) => {
      if (this.isLocal(n)) return this.removeLocal(oid, ec);
      return this.peers.call(n, { opcode: Op.REMOVE_PEER, epoch: this.view.epoch(), obj: this.fields(oid, ec, idx, 0) }).then(() => undefined);
    };
    await this.retrying(async () => {
      const rs = await Promise.allSettled(t.map((n, i) => removeAt(n, i)));
      const bad = rs.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
      if (bad) throw bad.reason;
    });
    this.view.removed?.(oid, this.view.epoch());
    const others = (this.view.holders?.() ?? []).filter((n) => !t.includes(n) && !t.some((x) => x.addr.equals(n.addr) && x.port === n.port));
    await Promise.all(others.map((n) => removeAt(n, 0).catch(() => undefined)));
  }

  /** A peer's REMOVE_PEER of a striped object: every strip of it held here (a node may keep an old index until cleanup). */
  async removeLocal(oid: bigint, ec: EcCode): Promise<void> {
    for (let i = 0; i < ec.d + ec.p; i++) await this.store.remove(stripKey(oid, i));
  }
}
