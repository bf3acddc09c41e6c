// One sheep: its store, configuration, membership, epochs and VDI state.
//
// Every member processes the same ordered stream of cluster events (joins,
// leaves, messages) from the driver and runs the same deterministic state
// machine on it, so all members agree on the epoch, the member list of each
// epoch, the cluster configuration and the VDI tables. A joiner gets the
// state as of its join point from the oldest member.
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  SdNode, makeNode, sortNodes, VnodeRing, autoVnodes, ClusterFlag, ClusterStatus, Res, SheepdogError,
  decodeInodeHeader, isVdiObj, oidToVid, SD_DEFAULT_VNODES, emptyStat, SdStat, sameNode,
  nodeToString, LockState,
} from '@sheepdog/common';
import type { ObjectStore } from './store/store.js';
import { PlainStore } from './store/plain.js';
import { NodeConfigStore, ClusterConfig, emptyConfig } from './config.js';
import { VdiRegistry, VdiNotice, VdiStateEntry } from './vdi.js';
import { Gateway, PlacementView } from './gateway.js';
import { PeerPool } from './peer.js';
import { Recovery } from './recovery.js';
import type { ObjectCache } from './cache/cache.js';
import type { ClusterDriver, ClusterEvent, ClusterMessage } from './cluster/driver.js';
import { log } from './log.js';

export const STORE_DRIVERS = ['plain'];

export interface SheepOptions {
  dir: string;
  host: string; // address announced to the cluster (-y / -b)
  port: number;
  zone?: number;
  nosync: boolean;
  vnodes?: number; // fixed vnode count (-V); auto otherwise
  gateway: boolean; // -g: store nothing
}

export type NodeStatus = 'wait_format' | 'wait_join' | 'ok' | 'shutdown' | 'killed';

export interface EpochRecord {
  epoch: number;
  time: number;
  nodes: SdNode[];
}

/** What a node says about itself when it joins. */
interface JoinInfo extends ClusterMessage {
  t: 'join_info';
  config: ClusterConfig;
  epoch: number;
  record?: EpochRecord;
  vnodes?: number;
}

/** The state a joiner receives from the oldest member. */
interface StateMsg extends ClusterMessage {
  t: 'state';
  to: SdNode;
  config: ClusterConfig;
  status: NodeStatus;
  epoch: number;
  records: EpochRecord[];
  expected: SdNode[];
  inUse: number[];
  deleted: number[];
  vdiStates: VdiStateEntry[];
  lockQueue: { id: string; node: SdNode }[];
  recoveryDone: string[];
  throttle: { maxExecCount: number; queueWorkInterval: bigint; throttling: boolean };
}

export class Sheep implements PlacementView {
  readonly store: ObjectStore;
  readonly cfg: NodeConfigStore;
  config: ClusterConfig = emptyConfig();
  status: NodeStatus = 'wait_format';
  epochNr = 0;
  readonly epochs = new Map<number, EpochRecord>();
  /** Present members, in join order. */
  present: SdNode[] = [];
  /** Nodes the cluster waits for before it resumes (wait_join). */
  expected: SdNode[] = [];
  ring: VnodeRing = new VnodeRing([]);
  selfNode: SdNode;
  readonly vdis: VdiRegistry;
  readonly peers = new PeerPool();
  readonly gw: Gateway;
  readonly recovery: Recovery;
  /** The object cache (sheep -w), when enabled. */
  cache?: ObjectCache;
  readonly stats: SdStat = emptyStat();
  recoveryThrottle = { maxExecCount: 0, queueWorkInterval: 0n, throttling: false };
  onShutdown?: (why: 'shutdown' | 'killed') => void;

  private joining = false; // own join seen, waiting for the state message
  /** Our join is complete: we may take part in cluster operations. */
  ready = false;
  private joinInfo?: JoinInfo;
  private held: ClusterEvent[] = [];
  private lockQueue: { id: string; node: SdNode }[] = [];
  private lockWaiters = new Map<string, () => void>();
  private epochWaiters: (() => void)[] = [];
  /** nodeToString of members that finished recovery for the current epoch. */
  recoveryDone = new Set<string>();

  constructor(readonly opts: SheepOptions, readonly cluster: ClusterDriver) {
    this.store = new PlainStore(opts.dir, opts.nosync);
    this.cfg = new NodeConfigStore(opts.dir);
    this.selfNode = makeNode(opts.host, opts.port, {
      zone: opts.zone,
      nrVnodes: opts.gateway ? 0 : opts.vnodes ?? SD_DEFAULT_VNODES,
    });
    this.gw = new Gateway(this.store, this, this.peers);
    this.vdis = new VdiRegistry(this.gw, () => ({
      copies: this.config.copies, copyPolicy: this.config.copyPolicy,
      blockSizeShift: this.config.blockSizeShift, flags: this.config.flags,
    }));
    this.recovery = new Recovery(this);
  }

  get objDir(): string {
    return path.join(this.opts.dir, 'obj');
  }

  get formatted(): boolean {
    return this.config.ctime !== 0n;
  }

  /** Members of the current epoch (sorted, vnodes adjusted). */
  get members(): SdNode[] {
    if (!this.ready) return []; // not part of a cluster yet
    if (this.status === 'ok') return this.epochs.get(this.epochNr)?.nodes ?? [];
    return this.withVnodes(this.present);
  }

  /** Cluster flags as reported before format: the node's vnode strategy. */
  get clusterFlags(): number {
    if (this.formatted) return this.config.flags;
    return this.opts.vnodes === undefined ? ClusterFlag.AUTO_VNODES : 0;
  }

  get clusterStatusCode(): number {
    switch (this.status) {
      case 'ok': return ClusterStatus.OK;
      case 'shutdown': return ClusterStatus.SHUTDOWN;
      case 'killed': return ClusterStatus.KILLED;
      default: return ClusterStatus.WAIT;
    }
  }

  // ---- PlacementView -------------------------------------------------
  epoch(): number { return this.epochNr; }
  self(): SdNode { return this.selfNode; }
  targets(oid: bigint, copies: number): SdNode[] { return this.ring.placeOid(oid, copies); }
  defaultCopies(): number { return this.config.copies; }
  vdiCopies(vid: number): number | undefined { return this.vdis.state(vid)?.nrCopies; }
  objectSize(vid: number): number { return this.vdis.objectSize(vid); }
  isSnapshot(vid: number): boolean { return this.vdis.isSnapshot(vid); }
  ensureLocal(oid: bigint): Promise<void> { return this.recovery.ensure(oid); }
  recovering(): boolean { return this.recovery.active; }
  waitEpochAbove(epoch: number, timeoutMs: number): Promise<boolean> { return this.waitEpoch((e) => e > epoch, timeoutMs); }

  /** Copies an object should have: its VDI's, else the cluster default. */
  copiesOf(oid: bigint): number {
    return this.vdis.state(oidToVid(oid))?.nrCopies || this.config.copies || 1;
  }

  /** Open the store and load persistent state; does not join yet. */
  async init(): Promise<void> {
    await this.store.init();
    await this.cfg.init();
    this.config = await this.cfg.load();
    if (!this.opts.gateway) {
      // capacity only: start-up must not stat every object
      this.selfNode.space = (await this.store.capacity()).size;
    }
    this.epochNr = await this.cfg.latestEpoch();
    for (let e = 1; e <= this.epochNr; e++) {
      const r = await this.cfg.loadEpoch(e);
      if (r) this.epochs.set(e, { epoch: e, ...r });
    }
    await this.loadVdis();
    this.status = this.formatted ? 'wait_join' : 'wait_format';
  }

  /** Join the cluster (after the listener is up, so peers can reach us). */
  async join(): Promise<void> {
    const info: JoinInfo = {
      t: 'join_info', config: this.config, epoch: this.epochNr, record: this.epochs.get(this.epochNr), vnodes: this.selfNode.nrVnodes,
    };
    this.joinInfo = info;
    await this.cluster.start(this.selfNode, info, (e) => this.onEvent(e));
  }

  /** Rebuild bitmaps and VDI state from the inodes in the local store. */
  async loadVdis(): Promise<void> {
    this.vdis.reset();
    if (!this.formatted) return;
    for (const oid of await this.store.list()) {
      if (!isVdiObj(oid)) continue;
      try {
        const h = decodeInodeHeader(await this.store.read(oid, 0, 572));
        if (h.vdiId === oidToVid(oid)) this.vdis.loadFromInode(h);
      } catch (e) {
        log.warn(`cannot read inode ${oid.toString(16)}: ${(e as Error).message}`);
      }
    }
  }

  withVnodes(nodes: SdNode[]): SdNode[] {
    const sorted = sortNodes(nodes);
    return this.clusterFlags & ClusterFlag.AUTO_VNODES ? autoVnodes(sorted) : sorted;
  }

  private isSelf(n: SdNode): boolean {
    return sameNode(n, this.selfNode);
  }

  // ---- the ordered event stream ----------------------------------------

  private async onEvent(e: ClusterEvent): Promise<void> {
    log.debug(`cluster event ${e.type} ${e.type === 'message' ? `${e.msg.t} from ${nodeToString(e.from)}` : nodeToString(e.node)}${this.joining ? ' (held: joining)' : ''}`);
    if (this.joining) {
      if (e.type === 'message' && e.msg.t === 'state' && this.isSelf((e.msg as StateMsg).to)) {
        await this.applyState(e.msg as StateMsg);
        this.joining = false;
        this.ready = true;
        for (const h of this.held.splice(0)) await this.onEvent(h);
      } else {
        this.held.push(e);
      }
      return;
    }
    switch (e.type) {
      case 'join': return this.onJoin(e.node, e.info as JoinInfo, e.members);
      case 'leave': return this.onLeave(e.node, e.members);
      case 'message': return this.onMessage(e.msg, e.from);
    }
  }

  private async onJoin(node: SdNode, info: JoinInfo, members: SdNode[]): Promise<void> {
    if (this.isSelf(node)) {
      if (members.length > 1) {
        // wait for the oldest member to tell us how things stand
        this.joining = true;
        this.present = members;
        this.status = 'wait_join';
        return;
      }
      // first member: our own disk is the cluster's state
      this.present = [node];
      this.ready = true;
      if (!this.formatted) {
        this.status = 'wait_format';
        this.ring = new VnodeRing(this.withVnodes(this.present));
      } else {
        this.expected = this.epochs.get(this.epochNr)?.nodes ?? [];
        this.status = 'wait_join';
        await this.checkResume();
      }
      return;
    }
    // Somebody else joined. The oldest member sends the state as of now.
    if (this.isSelf(members[0])) {
      const st = this.captureState(node);
      this.cluster.notify(st).catch((err) => log.err(`cannot send state to joiner: ${err}`));
    }
    await this.applyJoin(node, info, members);
  }

  /** Everyone, joiner included, runs this for a join. */
  private async applyJoin(node: SdNode, info: JoinInfo, members: SdNode[]): Promise<void> {
    this.present = members;
    if (info.vnodes !== undefined && !(this.clusterFlags & ClusterFlag.AUTO_VNODES)) {
      const m = members.find((x) => sameNode(x, node));
      if (m) m.nrVnodes = info.vnodes;
    }
    if (this.status === 'wait_format') {
      if (info.config.ctime !== 0n) {
        // a formatted node joins an empty group: the cluster is restarting
        await this.adopt(info);
        await this.checkResume();
      } else {
        this.ring = new VnodeRing(this.withVnodes(this.present));
      }
      return;
    }
    if (this.status === 'wait_join') {
      if (info.config.ctime === this.config.ctime && info.epoch > this.epochNr) await this.adopt(info);
      await this.checkResume();
      return;
    }
    if (this.status === 'ok') {
      if (info.config.ctime !== 0n && info.config.ctime !== this.config.ctime) {
        log.warn(`${nodeToString(node)} has data of another cluster; it joins with its store set aside`);
      }
      await this.bumpEpoch(this.withVnodes(this.present));
    }
  }

  /** Take a (newer) cluster identity and epoch from a joiner's info. */
  private async adopt(info: JoinInfo): Promise<void> {
    this.config = { ...info.config };
    await this.cfg.save(this.config);
    if (info.record) {
      this.epochs.set(info.record.epoch, info.record);
      await this.cfg.saveEpoch(info.record.epoch, info.record.nodes, info.record.time);
      this.expected = info.record.nodes;
    }
    this.epochNr = info.epoch;
    this.status = 'wait_join';
  }

  /** In wait_join: resume once every node of the last epoch is back. */
  private async checkResume(): Promise<void> {
    if (this.status !== 'wait_join') return;
    const all = this.expected.every((n) => this.present.some((p) => sameNode(p, n)));
    if (!all) {
      log.info(`waiting for ${this.expected.filter((n) => !this.present.some((p) => sameNode(p, n))).map(nodeToString).join(', ')}`);
      return;
    }
    const cur = this.withVnodes(this.present);
    const same = cur.length === this.expected.length;
    this.status = 'ok';
    if (same && this.epochs.get(this.epochNr)) {
      this.ring = new VnodeRing(this.epochs.get(this.epochNr)!.nodes);
      this.notifyEpochWaiters();
      log.notice(`cluster resumed at epoch ${this.epochNr}`);
    } else {
      await this.bumpEpoch(cur);
    }
  }

  private async onLeave(node: SdNode, members: SdNode[]): Promise<void> {
    this.present = members;
    this.peers.drop(node);
    this.lockQueue = this.lockQueue.filter((l) => !sameNode(l.node, node));
    this.checkLockHead();
    if (this.status === 'ok') {
      log.notice(`${nodeToString(node)} left`);
      if (this.present.length) await this.bumpEpoch(this.withVnodes(this.present));
    } else if (this.status === 'wait_format') {
      this.ring = new VnodeRing(this.withVnodes(this.present));
    }
  }

  private captureState(to: SdNode): StateMsg {
    const vdiStates = [...this.vdis.states.values()].map((s) => ({ ...s }));
    return {
      t: 'state', to, config: { ...this.config }, status: this.status, epoch: this.epochNr,
      records: [...this.epochs.values()], expected: this.expected, inUse: [...this.vdis.inUse.setBits()],
      deleted: [...this.vdis.deleted.setBits()], vdiStates, lockQueue: [...this.lockQueue],
      recoveryDone: [...this.recoveryDone], throttle: { ...this.recoveryThrottle },
    };
  }

  private async applyState(st: StateMsg): Promise<void> {
    const mine = this.config;
    if (st.config.ctime !== 0n && mine.ctime !== 0n && mine.ctime !== st.config.ctime) {
      log.warn('this node holds data of another cluster; setting it aside');
      await this.recovery.setAsideAll();
    }
    const wasRunningElsewhere = st.status === 'ok';
    this.config = { ...st.config };
    await this.cfg.save(this.config);
    for (const r of st.records) {
      const have = this.epochs.get(r.epoch);
      if (!have || have.nodes.length !== r.nodes.length || have.time !== r.time) {
        this.epochs.set(r.epoch, r);
        await this.cfg.saveEpoch(r.epoch, r.nodes, r.time);
      }
    }
    this.epochNr = st.epoch;
    this.expected = st.expected;
    this.status = st.status === 'ok' || st.status === 'wait_format' || st.status === 'wait_join' ? st.status : 'wait_join';
    this.vdis.reset();
    for (const v of st.inUse) this.vdis.inUse.set(v);
    for (const v of st.deleted) this.vdis.deleted.set(v);
    for (const s of st.vdiStates) this.vdis.states.set(s.vid, { ...s, participants: s.participants ?? [] });
    this.lockQueue = st.lockQueue;
    this.recoveryDone = new Set(st.recoveryDone);
    if (st.throttle) this.recoveryThrottle = { ...st.throttle };
    if (this.status === 'ok') this.ring = new VnodeRing(this.epochs.get(this.epochNr)?.nodes ?? []);
    else this.ring = new VnodeRing(this.withVnodes(this.present));
    // our local objects may be older than the cluster's: never serve them
    // as current; recovery decides what to keep
    if (wasRunningElsewhere && this.formatted) await this.recovery.setAsideAll();
    const me = this.present[this.present.length - 1];
    await this.applyJoin(me ?? this.selfNode, this.joinInfo!, this.present);
  }

  async bumpEpoch(nodes: SdNode[]): Promise<void> {
    const prev = this.epochs.get(this.epochNr);
    const e = this.epochNr + 1;
    const time = Math.floor(Date.now() / 1000);
    await this.cfg.saveEpoch(e, nodes, time);
    this.epochs.set(e, { epoch: e, time, nodes });
    this.epochNr = e;
    this.ring = new VnodeRing(nodes);
    const me = nodes.find((n) => this.isSelf(n));
    if (me) this.selfNode.nrVnodes = me.nrVnodes;
    this.recoveryDone.clear();
    log.info(`epoch ${e}: ${nodes.map((n) => `${nodeToString(n)}:${n.nrVnodes}`).join(', ')}`);
    this.notifyEpochWaiters();
    if (this.status === 'ok') this.recovery.start(e, prev?.nodes ?? [], nodes);
  }

  private notifyEpochWaiters(): void {
    for (const w of this.epochWaiters.splice(0)) w();
  }

  /** Wait until pred(epoch) holds or the timeout passes. */
  async waitEpoch(pred: (e: number) => boolean, timeoutMs: number): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (!pred(this.epochNr)) {
      const left = end - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.epochWaiters.push(() => { clearTimeout(t); r(); });
      });
    }
    return true;
  }

  /** Apply an ordered cluster notification (every member does this). */
  private async onMessage(m: ClusterMessage, from: SdNode): Promise<void> {
    switch (m.t) {
      case 'state':
        return; // for a joiner; handled before it is running
      case 'vdi_add':
      case 'vdi_del':
      case 'vdi_copies':
        this.vdis.apply(m as unknown as VdiNotice);
        return;
      case 'make_fs':
        await this.applyMakeFs(m as unknown as MakeFsMsg);
        return;
      case 'shutdown':
        this.status = 'shutdown';
        this.onShutdown?.('shutdown');
        return;
      case 'recover':
        this.config.disableRecovery = !(m.enable as boolean);
        await this.cfg.save(this.config);
        return;
      case 'alter_cluster_copy':
        this.config.copies = m.copies as number;
        await this.cfg.save(this.config);
        return;
      case 'lock': {
        const s = this.vdis.state(m.vid as number);
        if (!s) return;
        s.lockState = m.state as number;
        s.lockOwner = s.lockState === LockState.UNLOCKED ? undefined : from;
        return;
      }
      case 'lock_req':
        this.lockQueue.push({ id: m.id as string, node: from });
        this.checkLockHead();
        return;
      case 'lock_rel':
        this.lockQueue = this.lockQueue.filter((l) => l.id !== m.id);
        this.checkLockHead();
        return;
      case 'throttle':
        this.recoveryThrottle = { maxExecCount: m.maxExecCount as number, queueWorkInterval: m.queueWorkInterval as bigint, throttling: m.throttling as boolean };
        return;
      case 'force_recover':
        if (this.status === 'wait_join' && this.formatted) {
          this.status = 'ok';
          await this.bumpEpoch(this.withVnodes(this.present));
        }
        return;
      case 'recovery_done':
        if ((m.epoch as number) === this.epochNr) {
          this.recoveryDone.add(nodeToString(from));
          this.recovery.maybeCleanup();
        }
        return;
      case 'set_vnodes': {
        const n = m.vnodes as number;
        this.present = this.present.map((p) => (sameNode(p, from) ? { ...p, nrVnodes: n } : p));
        if (this.isSelf(from)) this.selfNode.nrVnodes = n;
        if (this.status === 'ok') await this.bumpEpoch(this.withVnodes(this.present));
        return;
      }
      default:
        log.warn(`unknown cluster message ${m.t}`);
    }
  }

  private checkLockHead(): void {
    const head = this.lockQueue[0];
    if (head && this.lockWaiters.has(head.id)) {
      const w = this.lockWaiters.get(head.id)!;
      this.lockWaiters.delete(head.id);
      w();
    }
  }

  /** Run a cluster operation's work phase while holding the cluster-wide lock. */
  async withClusterLock<T>(fn: () => Promise<T>): Promise<T> {
    const id = randomBytes(8).toString('hex');
    const granted = new Promise<void>((r) => this.lockWaiters.set(id, r));
    await this.cluster.notify({ t: 'lock_req', id });
    this.checkLockHead();
    await granted;
    try {
      return await fn();
    } finally {
      this.cluster.notify({ t: 'lock_rel', id }).catch(() => undefined);
    }
  }

  private async applyMakeFs(m: MakeFsMsg): Promise<void> {
    this.recovery.stop();
    await this.store.wipe();
    await this.cfg.clearEpochs();
    this.epochs.clear();
    this.epochNr = 0;
    this.config = {
      ctime: m.ctime, copies: m.copies, copyPolicy: m.copyPolicy, flags: m.flags,
      blockSizeShift: m.blockSizeShift, store: m.store, disableRecovery: false,
    };
    await this.cfg.save(this.config);
    this.vdis.reset();
    this.status = 'ok';
    await this.bumpEpoch(this.withVnodes(this.present));
    log.notice(`cluster formatted: copies ${m.copies}, object size ${2 ** m.blockSizeShift}, store ${m.store}`);
  }

  /** The gate of §6.1 step 2. */
  gate(force: boolean, clusterOp = false): void {
    // before our own join is complete we cannot order anything cluster-wide
    if (clusterOp && !this.ready) throw new SheepdogError(Res.WAIT_FOR_JOIN);
    if (this.status === 'killed') throw new SheepdogError(Res.KILLED);
    if (this.status === 'shutdown') throw new SheepdogError(Res.SHUTDOWN);
    if (!force && this.status === 'wait_format') throw new SheepdogError(Res.WAIT_FOR_FORMAT);
    if (!force && this.status === 'wait_join') throw new SheepdogError(Res.WAIT_FOR_JOIN);
  }

  /** Force the cluster out of wait_join with the members present. */
  async forceRecover(): Promise<void> {
    if (this.status !== 'wait_join' || !this.formatted) throw new SheepdogError(Res.FORCE_RECOVER);
    await this.cluster.notify({ t: 'force_recover' });
  }

  async close(): Promise<void> {
    this.recovery.stop();
    this.peers.closeAll();
    await this.cluster.leave().catch(() => undefined);
    await this.store.close();
  }
}

export interface MakeFsMsg {
  t: 'make_fs';
  ctime: bigint;
  copies: number;
  copyPolicy: number;
  flags: number;
  blockSizeShift: number;
  store: string;
}

