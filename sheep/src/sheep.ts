// One sheep: its store, configuration, membership, epochs and VDI state.
//
// Every member processes the same ordered stream of cluster events (joins,
// leaves, messages) from the driver and runs the same deterministic state
// machine on it, so all members agree on the epoch, the member list of each
// epoch, the cluster configuration and the VDI tables. A joiner gets the
// state as of its join point from the oldest member.
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import {
  SdNode, makeNode, sortNodes, VnodeRing, autoVnodes, ClusterFlag, ClusterStatus, Res, SheepdogError,
  decodeInodeHeader, isVdiObj, oidToVid, SD_DEFAULT_VNODES, emptyStat, SdStat, sameNode,
  nodeToString, LockState, Op, decodeNodes, SD_NODE_SIZE, CopyRecord, CopyFlag,
  decodeEcPolicy, isEcStriped, StripRecord,
} from '@sheepdog/common';
import type { ObjectStore, FoundBy } from './store/store.js';
import { PlainStore } from './store/plain.js';
import { MdDisks, type DiskChange } from './store/md.js';
import { DEFAULT_JOURNAL_MB, type JournalOption } from './store/journal.js';
import { Tombstones } from './store/tombstones.js';
import { PLAN_SLICE_MS } from './util.js';
import { NodeConfigStore, ClusterConfig, emptyConfig, DamagedState, STORE_DRIVERS } from './config.js';
import { VdiRegistry, VdiNotice, VdiStateEntry, VdiTableRow } from './vdi.js';
import { Gateway, PlacementView } from './gateway.js';
import { PeerPool } from './peer.js';
import { Recovery } from './recovery.js';
import { EcRecovery, TOMBSTONE_IDX } from './ec/recovery-ec.js';
import type { EcCode } from './ec/stripe-io.js';
import { Reclaimer } from './reclaim.js';
import { Scrubber } from './scrub.js';
import type { ObjectCache } from './cache/cache.js';
import type { ClusterDriver, ClusterEvent, ClusterMessage } from './cluster/driver.js';
import { log } from './log.js';

export { STORE_DRIVERS };

export interface SheepOptions {
  dir: string;
  host: string; // address announced to the cluster (-y / -b)
  port: number;
  zone?: number;
  nosync: boolean;
  vnodes?: number; // fixed vnode count (-V); auto otherwise
  gateway: boolean; // -g: store nothing
  /** -j: where the write-ahead journal lives and how big it is (default: PATH/journal, 256 MiB); off: none (each write syncs its object file). */
  journal?: JournalOption;
  /** md: object disks (`sheep BASE,D1,D2`); none: objects in BASE/obj. */
  disks?: string[];
}

export type NodeStatus = 'wait_format' | 'wait_join' | 'ok' | 'shutdown' | 'killed' | 'refused';

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
  /** The epoch this node's store joined the cluster in (0: a fresh store). */
  born?: number;
  /** The VDIs this node knows of (see VdiTableRow). */
  vdis?: VdiTableRow[];
  /** The newest epoch this node knows to be fully recovered. */
  recovered?: number;
}

/** Thrown by join() when the cluster cannot take this node. */
export class JoinRefused extends Error {}

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
  recoveryComplete?: string[];
  throttle: { maxExecCount: number; queueWorkInterval: bigint; throttling: boolean };
  born?: [string, number][];
  recovered?: number;
  /** Events after the joiner's own join that this state already reflects (a sender that took over sends it late). */
  skip?: number;
  /** The members as of the state, the joiner included (the joiner's own list may still name ghosts or a sender that died). */
  present?: SdNode[];
  /** Ghost instances still listed (see Sheep.ghosts). */
  ghosts?: [string, number][];
  s3Writers?: [number, string][];
  unconfirmedTimes?: number[];
  timesUnknown?: boolean;
}

/** At most this many epoch times in one announcement (a message stays small however long the history). */
const ANNOUNCE_ALL = 256;
/** A cluster lock request not delivered within this long is sent again. */
const LOCK_RETRY_MS = 10_000;

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
  /** Strips of erasure-coded objects, which the replicated recovery never sees. */
  readonly ecRecovery: EcRecovery;
  readonly reclaimer: Reclaimer;
  readonly scrubber: Scrubber;
  /** The object cache (sheep -w), when enabled. */
  cache?: ObjectCache;
  readonly stats: SdStat = emptyStat();
  /**
   * Damaged copies found here (short files, failed checksums), by what
   * found them, once per copy while its repair is under way; and copies
   * repaired from another replica (sheep_damaged_copies_total,
   * sheep_repaired_copies_total).
   */
  readonly integrity = { damaged: { read: 0, recovery: 0, scrub: 0 } as Record<FoundBy, number>, repaired: 0 };
  recoveryThrottle = { maxExecCount: 0, queueWorkInterval: 0n, throttling: false };
  onShutdown?: (why: 'shutdown' | 'killed') => void;
  /** This node cannot go on (a cluster event it could not apply): stop, unsuccessfully. */
  onFatal?: (why: string) => void;

  private joining = false; // own join seen, waiting for the state message
  /** Our join is complete: we may take part in cluster operations. */
  ready = false;
  private joinInfo?: JoinInfo;
  private held: ClusterEvent[] = [];
  private lockQueue: { id: string; node: SdNode }[] = [];
  /** Our lock requests: granted (true) at the queue's head, or lost (false) with our membership. */
  private lockWaiters = new Map<string, { settle: (granted: boolean) => void; queued: boolean }>();
  /** Our lock requests at the queue's head that nobody waits for any more, being released. */
  private lockOrphans = new Set<string>();
  /** Our lock requests granted and not yet released: their operation is running. */
  private lockHeld = new Set<string>();
  /** A lock request not delivered within this long is sent again (a setting for tests). */
  lockRetryMs = LOCK_RETRY_MS;
  private epochWaiters: (() => void)[] = [];
  /** nodeToString of members that finished recovery for the current epoch. */
  recoveryDone = new Set<string>();
  /** ... and of those, the ones that got every object they should hold. */
  recoveryComplete = new Set<string>();
  /** The epoch this node's store joined the cluster in (0: not yet). */
  born = 0;
  /** Members' born epochs (nodeToString -> epoch). */
  readonly bornOf = new Map<string, number>();
  /** The newest epoch in which every member recovered with nothing missing. */
  recoveredEpoch = 0;
  /** Objects whose replicas may differ (written here when a member failed); reconciled by recovery. */
  readonly suspects = new Set<bigint>();
  /** After a crash: copies at this version or newer, changed after suspectSince (ms), are suspects too. */
  private uncleanFrom?: number;
  private suspectSince = 0;
  /** Vnode rings by membership (see ringOf): churn repeats the same few memberships over hundreds of epochs. */
  private rings = new Map<string, VnodeRing>();
  /** An epoch record's membership key, by record (a record replaced gets a new key). */
  private memberKeys = new WeakMap<object, string>();
  /** S3 buckets' writers (bucket VDI id -> node): one gateway writes a bucket at a time (claimS3Writer). */
  readonly s3Writers = new Map<number, string>();
  /** Objects the cluster removed, by epoch (see Tombstones). */
  readonly tombstones: Tombstones;
  /** Cut off from the membership engine: whether we are still a member is unknown, requests wait (ClusterDriver.onCutOff). */
  private cutOff?: { until: Promise<void>; resolve: () => void };
  /** Foreign nodes (another cluster's data) that joined the group: never members. */
  private outsiders = new Set<string>();
  /**
   * Ghosts: dead instances of an earlier run that the driver still listed
   * when this node joined (a ZooKeeper session lingers for its timeout),
   * by address, with how many instances of it are listed. They are older
   * than every live member, so in each member list the first entries of
   * their addresses are theirs; a new instance of the same address (the
   * node restarted meanwhile) comes later in the list and is a member like
   * any other. Their leaves change nothing.
   */
  private ghosts = new Map<string, number>();
  private joinSettled?: { resolve: () => void; reject: (e: Error) => void };
  /** Events processed as a member, counted alike by every member from its own join on. */
  private eventCount = 0;
  /** Joiners waiting for the state: joiner -> the member that is to send it (nodeToString both). */
  private stateOwed = new Map<string, string>();
  /** eventCount at each joiner's join. */
  private joinedAt = new Map<string, number>();
  private aliveTimer?: NodeJS.Timeout;
  private historyFetch?: Promise<void>;
  /**
   * Epochs whose time no member has announced yet (see bumpEpoch). After a
   * start-up every record's time is unsure until the first member of the
   * next epoch announces them all.
   */
  private unconfirmedTimes = new Set<number>();
  private timesUnknown = true;

  constructor(readonly opts: SheepOptions, readonly cluster: ClusterDriver) {
    const j = opts.journal;
    if (opts.disks?.length && !opts.gateway) this.md = new MdDisks(opts.dir, opts.disks);
    const store = new PlainStore(opts.dir, opts.nosync, j?.off ? undefined : {
      file: path.join(j?.dir ?? opts.dir, 'journal'),
      sizeBytes: (j?.sizeMB ?? DEFAULT_JOURNAL_MB) * 1024 * 1024,
    }, this.md);
    store.onDiskChange = (c) => this.disksChanged(c);
    this.store = store;
    this.cfg = new NodeConfigStore(opts.dir);
    this.tombstones = new Tombstones(opts.dir);
    cluster.onCutOff = (cut) => {
      if (cut && !this.cutOff) {
        let resolve!: () => void;
        this.cutOff = { until: new Promise<void>((r) => (resolve = r)), resolve };
      } else if (!cut && this.cutOff) {
        this.cutOff.resolve();
        this.cutOff = undefined;
      }
    };
    this.selfNode = makeNode(opts.host, opts.port, {
      zone: opts.zone,
      nrVnodes: opts.gateway ? 0 : opts.vnodes ?? SD_DEFAULT_VNODES,
    });
    this.store.epochNow = () => this.epochNr;
    this.gw = new Gateway(this.store, this, this.peers);
    this.vdis = new VdiRegistry(this.gw, () => ({
      copies: this.config.copies, copyPolicy: this.config.copyPolicy,
      blockSizeShift: this.config.blockSizeShift, flags: this.config.flags,
    }));
    this.recovery = new Recovery(this);
    this.ecRecovery = new EcRecovery(this);
    this.reclaimer = new Reclaimer(this);
    this.scrubber = new Scrubber(this);
    // a strip (its key is past 64 bits) is rebuilt from the other strips, not fetched as a replica
    this.store.onDamage = (oid, why, by) => (oid >> 64n ? this.ecRecovery.repairDamaged(oid, why) : this.recovery.repairDamaged(oid, why, by));
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
  holders(): SdNode[] { return (this.epochs.get(this.epochNr)?.nodes ?? []).filter((n) => n.nrVnodes > 0); }
  removed(oid: bigint, epoch: number): void { this.tombstones.add(oid, epoch); }
  membershipHeld(): Promise<void> | undefined { return this.cutOff?.until; }
  defaultCopies(): number { return this.config.copies; }
  vdiCopies(vid: number): number | undefined { return this.vdis.state(vid)?.nrCopies; }
  objectSize(vid: number): number { return this.vdis.objectSize(vid); }
  isSnapshot(vid: number): boolean { return this.vdis.isSnapshot(vid); }
  ensureLocal(oid: bigint): Promise<void> {
    const p = this.recovery.ensure(oid);
    return this.ecRecovery.active && this.ecCode(oid) ? p.then(() => this.ecRecovery.ensure(oid)) : p;
  }
  recovering(): boolean { return this.recovery.active; }
  waitEpochAbove(epoch: number, timeoutMs: number): Promise<boolean> { return this.waitEpoch((e) => e > epoch, timeoutMs); }
  allRecovered(): boolean { return this.recoveredEpoch >= this.epochNr; }
  mayBeAway(oid: bigint): boolean { return !this.allRecovered() && !this.newestIsPresent(oid, 0, this.presentNow()); }
  strict(): boolean { return (this.config.flags & ClusterFlag.STRICT) !== 0; }
  ecFewZones(): boolean { return (this.config.flags & ClusterFlag.EC_FEW_ZONES) !== 0; }

  /** The erasure code of oid if it is striped (A.3): the request's copy_policy if non-zero, else its VDI's. */
  ecCode(oid: bigint, requested = 0): EcCode | undefined {
    if (!isEcStriped(oid)) return undefined;
    // requests with a byte no code makes are refused at the door (validate.ts); peers' fall back to the VDI's
    const req = requested ? decodeEcPolicy(requested) : undefined;
    if (req) return { ...req, cp: requested };
    const cp = this.vdis.state(oidToVid(oid))?.copyPolicy || 0;
    const ec = cp ? decodeEcPolicy(cp) : undefined;
    return ec && { ...ec, cp };
  }

  /** This node's strips and its tombstones of striped objects (EC_STRIPS, see ec/recovery-ec.ts). */
  async stripRecords(): Promise<StripRecord[]> {
    const out: StripRecord[] = (await this.store.strips?.()) ?? [];
    for (const [oid, epoch] of this.tombstones.entries()) if (this.ecCode(oid)) out.push({ oid, idx: TOMBSTONE_IDX, version: epoch });
    return out;
  }

  /** Copies an object should have: its VDI's, else the cluster default. */
  copiesOf(oid: bigint): number {
    return this.vdis.state(oidToVid(oid))?.nrCopies || this.config.copies || 1;
  }

  /** md's object disks, when the node has several (see store/md.ts). */
  readonly md?: MdDisks;

  /**
   * md's disk set changed: the node's space follows (weights the next
   * epoch's vnodes); a failed disk's objects are fetched again from their
   * other replicas by a recovery of the current epoch (B.5: the epoch does
   * not change).
   */
  private disksChanged(c: DiskChange): void {
    const md = this.md!;
    this.selfNode.space = md.space;
    if (!md.disks.length) {
      const why = c.kind === 'failed' ? 'no disks available, going down' : 'no disks plugged, going down';
      log.err(why);
      this.onFatal?.(why);
      return;
    }
    if (c.kind !== 'failed' || this.status !== 'ok' || !this.formatted) return;
    const rec = this.epochs.get(this.epochNr);
    if (rec) this.recovery.restart(this.epochNr, rec.nodes);
  }

  /** Open the store and load persistent state; does not join yet. */
  async init(): Promise<void> {
    await this.md?.init();
    await this.store.init();
    await this.cfg.init((file) => log.err(`the disk of ${this.opts.dir} is full: used the space kept for metadata to write ${file}; free space (delete VDIs or add disk)`));
    let config = await this.cfg.load();
    await this.tombstones.load();
    await this.store.setDriver(config?.store ?? 'plain');
    if (!this.opts.gateway) {
      // before anything reads an object: a crash may have left acknowledged writes only in the journal
      const j = await this.store.startJournal?.((msg) => log.err(msg));
      if (j) log.notice(j);
    }
    if (!this.opts.gateway) {
      // capacity only: start-up must not stat every object
      this.selfNode.space = (await this.store.capacity()).size;
    }
    const epochs = await this.cfg.epochNumbers();
    if (config && !epochs.length && !(await this.store.count())) {
      // a format interrupted between its config and its first epoch: nothing here yet, so start afresh
      log.notice(`${this.cfg.configFile} has no epoch record and the store is empty (a format was interrupted): starting as a new node`);
      await this.cfg.forget();
      config = undefined;
    }
    this.config = config ?? emptyConfig();
    if (!config) {
      // never formatted, so nothing else may be here: a lost config must not make a store look empty
      const objects = await this.store.count();
      if (objects || epochs.length) {
        throw new DamagedState(`${this.cfg.configFile} is missing, but ${this.opts.dir} holds ${objects} object(s) and ${epochs.length} epoch record(s): ` +
          'copy config.json from another node of the cluster (every node holds the same), or move the directory away to start a new, empty node');
      }
    } else if (!epochs.length) {
      throw new DamagedState(`${this.cfg.epochDir} holds no epoch record, yet ${this.cfg.configFile} says the cluster was formatted: copy the epoch directory from another node of the cluster`);
    }
    for (const e of epochs) this.epochs.set(e, { epoch: e, ...(await this.cfg.loadEpoch(e)) });
    this.epochNr = epochs.at(-1) ?? 0;
    const st = await this.cfg.loadState();
    // a store from before node.json was kept: it has been in the cluster since its first epoch
    this.born = st?.born ?? (this.formatted ? 1 : 0);
    this.recoveredEpoch = st?.recovered ?? 0;
    await this.loadVdis();
    const crashedAt = await this.cfg.lastAlive();
    if (crashedAt !== undefined && this.formatted) {
      // writes in flight when we died may have reached some replicas only
      this.uncleanFrom = this.recoveredEpoch;
      this.suspectSince = crashedAt - 300_000;
      const fixed = await this.store.rebuildSums(this.suspectSince);
      if (fixed) log.notice(`${fixed} object(s) written when the last run died had checksums that did not cover their bytes yet: recomputed`);
      log.notice(`the last run did not stop cleanly: objects changed in its last minutes are compared with their other replicas`);
    } else if (this.formatted) {
      // A cluster shutdown stops every member at once: a write in flight
      // may have reached this replica and been refused by one that was
      // already stopping (the churn simulator read such a failed write
      // from one replica after another had said it was not there).
      const shutdownAt = await this.cfg.lastShutdown();
      if (shutdownAt !== undefined) {
        this.uncleanFrom = this.recoveredEpoch;
        this.suspectSince = shutdownAt - 300_000;
        log.notice(`the cluster was shut down with writes possibly in flight: objects changed in its last minutes are compared with their other replicas`);
      }
    }
    this.status = this.formatted ? 'wait_join' : 'wait_format';
  }

  /** Once in the cluster (a refused node writes nothing): say we run, and keep what start-up rebuilt. */
  private async joined(): Promise<void> {
    await this.cfg.markRunning();
    this.aliveTimer = setInterval(() => void this.cfg.touchRunning(), 10_000);
    this.aliveTimer.unref();
    if (this.formatted) await this.saveVdis();
  }

  /**
   * Join the cluster (after the listener is up, so peers can reach us).
   * Resolves once this node is part of it; JoinRefused when the cluster is
   * another one than the one this node's data belongs to.
   */
  async join(): Promise<void> {
    const info: JoinInfo = {
      t: 'join_info', config: this.config, epoch: this.epochNr, record: this.epochs.get(this.epochNr), vnodes: this.selfNode.nrVnodes,
      born: this.formatted ? this.born : 0, vdis: this.vdis.table(), recovered: this.recoveredEpoch,
    };
    this.joinInfo = info;
    const settled = new Promise<void>((resolve, reject) => (this.joinSettled = { resolve, reject }));
    await this.cluster.start(this.selfNode, info, (e) => this.onEvent(e));
    await settled;
    await this.joined();
  }

  private settleJoin(err?: Error): void {
    const j = this.joinSettled;
    this.joinSettled = undefined;
    if (!j) return;
    if (err) j.reject(err);
    else j.resolve();
  }

  /** The VDI table from disk; a store from before vdis.json rebuilds it from its inodes. */
  async loadVdis(): Promise<void> {
    this.vdis.reset();
    if (!this.formatted) return;
    // derived state: when it is damaged, the inodes here and the other nodes' tables rebuild it
    const t = await this.cfg.loadVdiTable<{ vdis: VdiTableRow[] }>().catch((e) => {
      log.warn(`${(e as Error).message}: rebuilding the VDI table`);
      return undefined;
    });
    if (t && Array.isArray(t.vdis)) {
      this.vdis.merge(t.vdis);
      return;
    }
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

  /**
   * vdis.json is a copy of what the cluster knows (rebuilt from the inodes
   * and the other members' tables if lost): failing to write it is logged
   * and retried with the next change, not a reason to stop.
   */
  async saveVdis(): Promise<void> {
    try {
      await this.cfg.saveVdiTable({ vdis: this.vdis.table() });
      if (this.vdisUnsaved) log.notice('the VDI table (vdis.json) is saved again');
      this.vdisUnsaved = false;
    } catch (e) {
      if (!this.vdisUnsaved) log.warn(`cannot save the VDI table (vdis.json): ${(e as Error).message}; it is kept in memory and saved with the next change`);
      this.vdisUnsaved = true;
    }
  }

  private vdisUnsaved = false;

  private saveState(): Promise<void> {
    return this.cfg.saveState({ born: this.born, recovered: this.recoveredEpoch });
  }

  /** What an epoch's placement depends on: its members, their vnodes and zones. */
  private membersKey(epoch: number): string {
    const rec = this.epochs.get(epoch);
    if (!rec) return '';
    let k = this.memberKeys.get(rec);
    if (k === undefined) {
      k = rec.nodes.map((n) => `${nodeToString(n)}/${n.nrVnodes}/${n.zone}`).join(',');
      this.memberKeys.set(rec, k);
    }
    return k;
  }

  /**
   * The vnode ring of an epoch of the history, cached by membership. Keyed
   * by epoch, a walk over more epochs than the cache held rebuilt a ring at
   * every step: planning one recovery after 300 epochs of churn took the
   * event loop for 57 s (chaos seed 4501), and every request with it.
   */
  ringOf(epoch: number): VnodeRing {
    const key = this.membersKey(epoch);
    let r = this.rings.get(key);
    if (!r) {
      r = new VnodeRing(this.epochs.get(epoch)?.nodes ?? []);
      if (this.rings.size >= 256) this.rings.delete(this.rings.keys().next().value as string);
      this.rings.set(key, r);
    }
    return r;
  }

  /**
   * Build the rings newestIsPresent will walk (the epochs since the last
   * full recovery) a few at a time, giving the event loop back between
   * them. A node that has just started has none cached: built in one go
   * before a plan, 85 memberships held the loop for seconds at load, past
   * a 2 s ZooKeeper session, and the node was expired again at every start
   * (chaos seed 4202, replayed).
   */
  async warmRings(shouldStop: () => boolean = () => false): Promise<void> {
    let slice = performance.now();
    for (let t = Math.max(this.recoveredEpoch, 1); t < this.epochNr; t++) {
      if (!this.epochs.has(t) || this.rings.has(this.membersKey(t))) continue;
      this.ringOf(t);
      if (performance.now() - slice > PLAN_SLICE_MS) {
        await new Promise((r) => setImmediate(r));
        if (shouldStop()) return;
        slice = performance.now();
      }
    }
  }

  /**
   * Whether a copy at version vmax is the newest there is, given the nodes
   * present (nodeToString -> born): for every epoch after vmax (from the
   * last fully recovered one on), some node the placement of that epoch
   * named is present and was in the cluster then. A write in that epoch
   * went to all of them, so one present would hold a newer copy.
   */
  newestIsPresent(oid: bigint, vmax: number, present: Map<string, number>): boolean {
    const copies = this.copiesOf(oid);
    // a membership that passed at an epoch passes at every later one (born <= t only gets easier)
    let passed: Set<string> | undefined;
    for (let t = Math.max(vmax + 1, this.recoveredEpoch, 1); t < this.epochNr; t++) {
      if (!this.epochs.has(t)) return false;
      const key = this.membersKey(t);
      if (passed?.has(key)) continue;
      const placed = this.ringOf(t).placeOid(oid, copies);
      if (!placed.some((n) => {
        const b = present.get(nodeToString(n));
        return b !== undefined && b > 0 && b <= t;
      })) return false;
      (passed ??= new Set()).add(key);
    }
    return true;
  }

  /** Members present now, with their born epochs, for newestIsPresent. */
  presentNow(): Map<string, number> {
    const m = new Map<string, number>();
    for (const n of this.members) {
      const k = nodeToString(n);
      m.set(k, this.isSelf(n) ? this.born : this.bornOf.get(k) ?? 0);
    }
    return m;
  }

  /** This node's copies as recovery lists them (OBJ_COPIES). */
  async copyRecords(): Promise<CopyRecord[]> {
    const out: CopyRecord[] = [];
    for (const c of await this.store.copies()) {
      let flags = c.stale ? CopyFlag.STALE : 0;
      if (this.suspects.has(c.oid) || (this.uncleanFrom !== undefined && c.version >= this.uncleanFrom && (await this.store.changedSince(c.oid, c.stale, this.suspectSince)))) {
        flags |= CopyFlag.SUSPECT;
      }
      out.push({ oid: c.oid, version: c.version, flags });
    }
    // what was removed (and is not here again): copies older than that, anywhere, are garbage
    if (this.tombstones.size) {
      const held = new Set(out.map((r) => r.oid));
      for (const [oid, epoch] of this.tombstones.entries()) if (!held.has(oid)) out.push({ oid, version: epoch, flags: CopyFlag.REMOVED });
    }
    return out;
  }

  /** Of these (oid, version) pairs, the objects held here as current copies at that version or newer. */
  async heldOf(recs: { oid: bigint; version: number }[]): Promise<bigint[]> {
    const out: bigint[] = [];
    for (const r of recs) {
      if (this.recovery.pendingFor(r.oid)) continue;
      const v = await this.store.versionOf(r.oid);
      if (v !== undefined && v >= r.version) out.push(r.oid);
    }
    return out;
  }

  /**
   * Fill in the epoch records this node missed while it was away, from
   * the members (every node shows the same, whole history).
   */
  ensureHistory(): Promise<void> {
    this.historyFetch ??= this.fetchHistory().finally(() => { this.historyFetch = undefined; });
    return this.historyFetch;
  }

  private async fetchHistory(): Promise<void> {
    // The members of the current epoch, even while this node is still
    // taking the state it joined with (its recovery starts then, before
    // `members` counts it in: a history fetched from nobody left a hole
    // that made its recovery wait for holders "away" for good; churn
    // simulator, seed 1709).
    const ask = this.members.length ? this.members : (this.epochs.get(this.epochNr)?.nodes ?? this.present);
    for (let e = 1; e < this.epochNr; e++) {
      if (this.epochs.has(e)) continue;
      for (const n of ask) {
        if (this.isSelf(n)) continue;
        try {
          const r = await this.peers.call(n, { opcode: Op.GET_EPOCH, epoch: this.epochNr, dataLength: 1 << 20, obj: { tgtEpoch: e } });
          const count = Math.floor((r.data.length - 8) / SD_NODE_SIZE);
          const rec = { epoch: e, nodes: decodeNodes(r.data, count), time: Number(r.data.readBigInt64LE(count * SD_NODE_SIZE)) };
          if (this.epochs.has(e)) break;
          this.epochs.set(e, rec);
          await this.cfg.saveEpoch(e, rec.nodes, rec.time);
          break;
        } catch (err) {
          log.debug(`epoch ${e} from ${nodeToString(n)}: ${(err as Error).message}`);
        }
      }
    }
    if (this.historyRetry === undefined) this.historyRetry = 0;
    const holes = [...Array(Math.max(0, this.epochNr - 1)).keys()].map((i) => i + 1).filter((e) => !this.epochs.has(e));
    if (holes.length && this.historyRetry < 60) {
      // asked again a little later; what is filled then is what recovery
      // judged "away" by, so it runs again
      if (this.historyRetry === 0) log.warn(`epoch record(s) ${holes.slice(0, 8).join(', ')}${holes.length > 8 ? ', ...' : ''} not found on any member yet; asking again`);
      this.historyRetry++;
      setTimeout(() => {
        if (this.closing) return;
        void this.ensureHistory().then(() => {
          if (!this.closing && this.status === 'ok' && !holes.some((e) => !this.epochs.has(e))) {
            log.info(`epoch history complete again: recovery of epoch ${this.epochNr} runs again`);
            this.recovery.start(this.epochNr, this.epochs.get(this.epochNr)!.nodes);
          }
        });
      }, 2000).unref();
    } else if (!holes.length) {
      this.historyRetry = 0;
    }
  }

  private historyRetry?: number;
  closing = false;

  withVnodes(nodes: SdNode[]): SdNode[] {
    const sorted = sortNodes(nodes);
    return this.clusterFlags & ClusterFlag.AUTO_VNODES ? autoVnodes(sorted) : sorted;
  }

  private isSelf(n: SdNode): boolean {
    return sameNode(n, this.selfNode);
  }

  // ---- the ordered event stream ----------------------------------------

  /**
   * Every member applies every event, in order, to keep one view of the
   * cluster. One this node failed to apply (a write of its state failed,
   * say) leaves its view different from the others': it leaves rather than
   * serve by that view, and starts afresh from the cluster's state when
   * restarted.
   */
  private async onEvent(e: ClusterEvent): Promise<void> {
    try {
      await this.applyEvent(e);
    } catch (err) {
      const what = `${e.type}${e.type === 'message' ? ` ${e.msg.t}` : ''}`;
      log.err(`cannot apply the cluster event ${what}: ${(err as Error).stack ?? err}; this node leaves the cluster`);
      if (!this.onFatal) throw err;
      this.onFatal(`cannot apply the cluster event ${what}: ${(err as Error).message}`);
    }
  }

  private async applyEvent(e: ClusterEvent): Promise<void> {
    log.debug(`cluster event ${e.type} ${e.type === 'message' ? `${e.msg.t} from ${nodeToString(e.from)}` : nodeToString(e.node)}${this.joining ? ' (held: joining)' : ''}`);
    if (this.status === 'refused') return;
    if (this.joining) {
      if (e.type === 'message' && e.msg.t === 'state' && this.isSelf((e.msg as StateMsg).to)) {
        const st = e.msg as StateMsg;
        const why = this.foreign(st.config);
        if (why) {
          // not ours: change nothing, and go
          this.status = 'refused';
          this.joining = false;
          log.err(`refusing to join: ${why}`);
          this.settleJoin(new JoinRefused(why));
          return;
        }
        await this.applyState(st);
        this.joining = false;
        this.ready = true;
        this.settleJoin();
        // what the state already reflects is not applied again
        this.held.splice(0, st.skip ?? 0);
        for (const h of this.held.splice(0)) await this.onEvent(h);
      } else if (e.type === 'leave' && e.members.length && this.isSelf(e.members[0])) {
        // every member older than us left before telling us how things stand
        // (dead instances a restarted cluster's driver still listed): we are
        // the oldest now, and our own disk is the cluster's state
        log.notice('the members older than this node left before it got the cluster state: it starts the cluster from its own state');
        // They were ghosts: the events held meanwhile still list them, and
        // counting one as present would resume the cluster without the node
        // that may hold the newest data (churn simulator, seed 1712).
        const self = this.present.findIndex((m) => this.isSelf(m));
        for (const g of this.present.slice(0, Math.max(self, 0))) {
          const k = nodeToString(g);
          this.ghosts.set(k, (this.ghosts.get(k) ?? 0) + 1);
        }
        this.held.push(e);
        this.joining = false;
        await this.startAsFirst();
        for (const h of this.held.splice(0)) await this.onEvent(h);
      } else {
        this.held.push(e);
      }
      return;
    }
    this.eventCount++;
    switch (e.type) {
      case 'join': return this.onJoin(e.node, e.info as JoinInfo, this.admitted(e.members));
      case 'leave': {
        const k = nodeToString(e.node);
        const g = this.ghosts.get(k);
        if (g) {
          // a ghost's leave: the instance was never one of ours
          if (g > 1) this.ghosts.set(k, g - 1); else this.ghosts.delete(k);
          return;
        }
        if (this.outsiders.delete(k)) return; // it was never one of us
        return this.onLeave(e.node, this.admitted(e.members));
      }
      case 'message': {
        if (this.outsiders.has(nodeToString(e.from))) return;
        return this.onMessage(e.msg, e.from);
      }
    }
  }

  /** The group's members minus the foreign nodes and the ghosts it lists (each ghost's first entries). */
  private admitted(members: SdNode[]): SdNode[] {
    if (!this.outsiders.size && !this.ghosts.size) return members;
    const skip = new Map(this.ghosts);
    return members.filter((m) => {
      const k = nodeToString(m);
      const n = skip.get(k);
      if (n) {
        skip.set(k, n - 1);
        return false;
      }
      return !this.outsiders.has(k);
    });
  }

  /**
   * Why a node whose cluster config is c cannot be one with us (undefined:
   * it can). A node holding another cluster's data must not join: it would
   * serve that data as ours, or have it set aside and lost.
   */
  private foreign(c: ClusterConfig): string | undefined {
    if (c.ctime === 0n || this.config.ctime === 0n || c.ctime === this.config.ctime) return undefined;
    return `this node's data belongs to another cluster (created ${fmtCtime(c.ctime)}) than the one it is joining (created ${fmtCtime(this.config.ctime)}); ` +
      `start it with its own cluster, or move its directory away to join this one as a new node`;
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
      await this.startAsFirst();
      return;
    }
    // Somebody else joined. The oldest member sends the state as of now;
    // everyone remembers who owes it, in case that one dies first.
    const jk = nodeToString(node);
    const oldest = members.find((m) => !sameNode(m, node));
    this.joinedAt.set(jk, this.eventCount);
    if (oldest) this.stateOwed.set(jk, nodeToString(oldest));
    if (oldest && this.isSelf(oldest)) this.sendState(node);
    const why = this.foreign(info.config);
    if (why) {
      this.outsiders.add(nodeToString(node));
      log.err(`${nodeToString(node)} is refused: ${why}`);
      return;
    }
    await this.applyJoin(node, info, members);
  }

  /** The first member (or the oldest left): our own disk is the cluster's state. */
  private async startAsFirst(): Promise<void> {
    this.present = [this.selfNode];
    this.ready = true;
    this.settleJoin();
    if (!this.formatted) {
      this.status = 'wait_format';
      this.ring = new VnodeRing(this.withVnodes(this.present));
    } else {
      this.expected = this.epochs.get(this.epochNr)?.nodes ?? [];
      this.status = 'wait_join';
      await this.checkResume();
    }
  }

  private sendState(to: SdNode): void {
    const st = this.captureState(to);
    this.cluster.notify(st).catch((err) => log.err(`cannot send state to joiner: ${err}`));
  }

  /** Everyone, joiner included, runs this for a join. */
  private async applyJoin(node: SdNode, info: JoinInfo, members: SdNode[]): Promise<void> {
    this.present = members;
    if (info.vnodes !== undefined && !(this.clusterFlags & ClusterFlag.AUTO_VNODES)) {
      const m = members.find((x) => sameNode(x, node));
      if (m) m.nrVnodes = info.vnodes;
    }
    if (info.born) this.bornOf.set(nodeToString(node), info.born);
    // what the joiner knows of VDIs and recovery is knowledge the cluster may have lost (a whole-cluster restart)
    if (info.vdis && info.config.ctime !== 0n && (this.config.ctime === 0n || info.config.ctime === this.config.ctime) && this.vdis.merge(info.vdis)) await this.saveVdis();
    if ((info.recovered ?? 0) > this.recoveredEpoch && info.config.ctime === this.config.ctime && this.config.ctime !== 0n) {
      this.recoveredEpoch = info.recovered!;
      await this.saveState();
    }
    if (this.status === 'wait_format') {
      if (info.config.ctime !== 0n) {
        // a formatted node joins an empty group: the cluster is restarting
        await this.adopt(info);
        if (info.vdis && this.vdis.merge(info.vdis)) await this.saveVdis();
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
      await this.bumpEpoch(this.withVnodes(this.present));
      if (!info.born) this.bornOf.set(nodeToString(node), this.epochNr);
      if (this.isSelf(node) && !this.born) {
        this.born = this.epochNr;
        await this.saveState();
      }
    }
  }

  /** Take a (newer) cluster identity and epoch from a joiner's info. */
  private async adopt(info: JoinInfo): Promise<void> {
    this.config = { ...info.config };
    await this.cfg.save(this.config);
    if (this.config.store !== this.store.name) await this.store.setDriver(this.config.store);
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
      this.recoveryDone.clear();
      this.recoveryComplete.clear();
      this.notifyEpochWaiters();
      log.notice(`cluster resumed at epoch ${this.epochNr}`);
      // objects missed before the stop are fetched, replicas a crash split are reconciled
      this.recovery.start(this.epochNr, this.epochs.get(this.epochNr)!.nodes, true);
      this.reclaimer.kick();
    } else {
      await this.bumpEpoch(cur);
    }
    if (!this.born) {
      this.born = this.epochNr;
      await this.saveState();
    }
  }

  private async onLeave(node: SdNode, members: SdNode[]): Promise<void> {
    this.present = members;
    // a joiner that left is owed nothing; one whose state was owed by the
    // member that left gets it from the oldest member that is no joiner
    const gone = nodeToString(node);
    this.stateOwed.delete(gone);
    this.joinedAt.delete(gone);
    for (const [jk, owner] of this.stateOwed) {
      if (owner !== gone) continue;
      const next = members.find((m) => nodeToString(m) !== jk && !this.stateOwed.has(nodeToString(m)));
      if (!next) continue; // the joiner will find itself the oldest
      this.stateOwed.set(jk, nodeToString(next));
      const joiner = members.find((m) => nodeToString(m) === jk);
      if (this.isSelf(next) && joiner) {
        log.info(`${gone} left before sending the cluster state to ${jk}: sending it`);
        this.sendState(joiner);
      }
    }
    this.peers.drop(node);
    for (const [vid, w] of this.s3Writers) if (w === gone) this.s3Writers.delete(vid);
    this.lockQueue = this.lockQueue.filter((l) => !sameNode(l.node, node));
    this.checkLockHead();
    if (this.status === 'ok') {
      log.notice(`${nodeToString(node)} left`);
      // writes it was making may have reached some replicas and not others
      // (strips, keyed past 64 bits, are not replicas: a write that reached some of them is the stripe's writer to repeat)
      for (const oid of this.store.recent.snapshot()) if (oid >> 64n === 0n) this.suspects.add(oid);
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
      recoveryDone: [...this.recoveryDone], recoveryComplete: [...this.recoveryComplete], throttle: { ...this.recoveryThrottle },
      born: [...this.bornOf, [nodeToString(this.selfNode), this.born]], recovered: this.recoveredEpoch,
      skip: this.eventCount - (this.joinedAt.get(nodeToString(to)) ?? this.eventCount),
      unconfirmedTimes: [...this.unconfirmedTimes], timesUnknown: this.timesUnknown,
      // sent from onJoin before the join is applied here: the joiner is not yet in present
      present: this.present.some((p) => sameNode(p, to)) ? [...this.present] : [...this.present, to],
      ghosts: [...this.ghosts],
      s3Writers: [...this.s3Writers],
    };
  }

  private async applyState(st: StateMsg): Promise<void> {
    for (const [k, n] of st.ghosts ?? []) this.ghosts.set(k, n);
    this.s3Writers.clear();
    for (const [vid, w] of st.s3Writers ?? []) this.s3Writers.set(vid, w);
    this.present = st.present ? st.present.map((n) => ({ ...n })) : this.admitted(this.present);
    const wasRunningElsewhere = st.status === 'ok';
    for (const [k, b] of st.born ?? []) this.bornOf.set(k, b);
    if ((st.recovered ?? 0) > this.recoveredEpoch) {
      this.recoveredEpoch = st.recovered!;
      if (this.formatted) await this.saveState();
    }
    this.config = { ...st.config };
    await this.cfg.save(this.config);
    if (this.config.store !== this.store.name) await this.store.setDriver(this.config.store);
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
    // the cluster's table, plus what only we knew (merged by everyone as our join is applied)
    const own = this.vdis.table();
    this.vdis.reset();
    for (const v of st.inUse) this.vdis.inUse.set(v);
    for (const v of st.deleted) this.vdis.deleted.set(v);
    for (const s of st.vdiStates) this.vdis.states.set(s.vid, { ...s, participants: s.participants ?? [] });
    if (this.config.ctime === this.joinInfo?.config.ctime) this.vdis.merge(own);
    await this.saveVdis();
    this.lockQueue = st.lockQueue;
    this.lockRequestsLost();
    this.recoveryDone = new Set(st.recoveryDone);
    this.recoveryComplete = new Set(st.recoveryComplete ?? []);
    this.unconfirmedTimes = new Set(st.unconfirmedTimes ?? []);
    this.timesUnknown = st.timesUnknown ?? false;
    if (st.throttle) this.recoveryThrottle = { ...st.throttle };
    if (this.status === 'ok') this.ring = new VnodeRing(this.epochs.get(this.epochNr)?.nodes ?? []);
    else this.ring = new VnodeRing(this.withVnodes(this.present));
    // our local objects may be older than the cluster's: never serve them
    // as current; recovery decides what to keep
    // A cluster waiting for its members to come back (wait_join) counts on
    // theirs; a node that was not a member of its last epoch missed writes
    // like one joining a running cluster (chaos seed 5301: a node killed in
    // epoch 270 rejoined a cluster that had lost its sequencer, and served
    // its copy of epoch 269)
    const missedEpochs = st.status === 'wait_join' && !this.epochs.get(st.epoch)?.nodes.some((n) => this.isSelf(n));
    if ((wasRunningElsewhere || missedEpochs) && this.formatted) await this.recovery.setAsideAll();
    // A state sent late (the member that owed it left first) comes from a
    // member that has applied our join: the cluster has us in the state's
    // epoch already, born there. Taking the next epoch as our birth made
    // objects placed on us in that epoch wait for us for good (chaos seed
    // 4802, replayed: reads got HALT after the heal).
    if (!this.born && this.epochs.get(st.epoch)?.nodes.some((n) => this.isSelf(n))) {
      const b = this.bornOf.get(nodeToString(this.selfNode));
      this.born = b !== undefined && b > 0 && b <= st.epoch ? b : st.epoch;
      await this.saveState();
    }
    const me = this.present.find((p) => this.isSelf(p));
    await this.applyJoin(me ?? this.selfNode, this.joinInfo!, this.present);
  }

  async bumpEpoch(nodes: SdNode[]): Promise<void> {
    const e = this.epochNr + 1;
    const time = Math.floor(Date.now() / 1000);
    await this.cfg.saveEpoch(e, nodes, time);
    this.epochs.set(e, { epoch: e, time, nodes });
    this.epochNr = e;
    this.ring = new VnodeRing(nodes);
    const me = nodes.find((n) => this.isSelf(n));
    if (me) this.selfNode.nrVnodes = me.nrVnodes;
    // Each member stamped the epoch by its own clock; the first member's
    // stamp is the one all keep. It announces too the times of earlier
    // epochs nobody announced (their first member died first: found by the
    // churn simulator, seed 703, as epoch times a second apart between
    // nodes), or, after a start-up, of the last ANNOUNCE_ALL epochs.
    this.unconfirmedTimes.add(e);
    if (nodes.length && this.isSelf(nodes[0])) {
      const all = this.timesUnknown;
      const which = all ? [...this.epochs.keys()].sort((a, b) => a - b).slice(-ANNOUNCE_ALL) : [...this.unconfirmedTimes].sort((a, b) => a - b).slice(-ANNOUNCE_ALL);
      const times = which.filter((x) => this.epochs.has(x)).map((x) => [x, this.epochs.get(x)!.time]);
      this.cluster.notify({ t: 'epoch_time', epoch: e, time, times, all }).catch(() => undefined);
    }
    this.recoveryDone.clear();
    this.recoveryComplete.clear();
    log.info(`epoch ${e}: ${nodes.map((n) => `${nodeToString(n)}:${n.nrVnodes}`).join(', ')}`);
    const zones = new Set(nodes.filter((n) => n.nrVnodes > 0).map((n) => n.zone)).size;
    if (this.status === 'ok' && this.config.copies > zones) {
      log.warn(`the cluster cannot place ${this.config.copies} copies: only ${zones} zone(s) hold data` +
        (this.strict() ? '; writes are refused (strict mode)' : `; objects are stored under-replicated with ${zones}`));
    }
    this.notifyEpochWaiters();
    if (this.status === 'ok') {
      this.recovery.start(e, nodes);
      this.reclaimer.kick(); // the first member may have changed
    }
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
        this.stateOwed.delete(nodeToString((m as StateMsg).to));
        this.joinedAt.delete(nodeToString((m as StateMsg).to));
        return; // for a joiner; handled before it is running
      case 'vdi_add':
      case 'vdi_del':
      case 'vdi_reclaimed':
      case 'vdi_copies':
        this.vdis.apply(m as unknown as VdiNotice);
        await this.saveVdis();
        if (m.t === 'vdi_del') this.reclaimer.kick();
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
      case 's3_writer':
        // the first claim in the cluster's order wins; the writer's leave frees the bucket
        if (!this.s3Writers.has(m.vid as number)) this.s3Writers.set(m.vid as number, nodeToString(from));
        return;
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
      case 'epoch_time': {
        const times = (m.times as [number, number][] | undefined) ?? [[m.epoch as number, m.time as number]];
        for (const [e, t] of times) {
          this.unconfirmedTimes.delete(e);
          const rec = this.epochs.get(e);
          if (rec && rec.time !== t) {
            rec.time = t;
            await this.cfg.saveEpoch(rec.epoch, rec.nodes, rec.time);
          }
        }
        if (m.all) this.timesUnknown = false;
        return;
      }
      case 'recovery_done':
        if ((m.epoch as number) === this.epochNr) {
          this.recoveryDone.add(nodeToString(from));
          if (m.complete !== false) this.recoveryComplete.add(nodeToString(from));
          await this.noteRecoveryProgress();
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

  /**
   * Every member recovered this epoch with nothing missing: it is the new
   * base of newestIsPresent, and suspects are settled. Recovery knows only
   * the objects present nodes hold, so this is so only if no object can be
   * held by absent nodes alone: in every epoch since the last such one,
   * fewer members are away now than any object has copies.
   */
  /** Every member reconciled what a crash or a shutdown may have split. */
  private async settleUnclean(): Promise<void> {
    this.suspects.clear();
    this.uncleanFrom = undefined;
    await this.cfg.clearShutdown();
  }

  private async noteRecoveryProgress(): Promise<void> {
    const members = this.epochs.get(this.epochNr)?.nodes ?? [];
    if (!members.length || !members.every((n) => this.recoveryComplete.has(nodeToString(n)))) return;
    if (this.recoveredEpoch >= this.epochNr) {
      // a restart in the epoch it stopped in: its reconciliation is done
      if (this.uncleanFrom !== undefined) await this.settleUnclean();
      return;
    }
    const here = new Set(members.map(nodeToString));
    const minCopies = Math.min(this.config.copies || 1, ...[...this.vdis.states.values()].filter((v) => !v.deleted && v.nrCopies).map((v) => v.nrCopies));
    for (let t = Math.max(1, this.recoveredEpoch); t < this.epochNr; t++) {
      const rec = this.epochs.get(t);
      if (!rec) return;
      const holders = rec.nodes.filter((n) => n.nrVnodes > 0);
      const zones = new Set(holders.map((n) => n.zone)).size;
      const away = holders.filter((n) => !here.has(nodeToString(n))).length;
      if (away >= Math.min(minCopies, zones)) {
        log.info(`epoch ${this.epochNr}: recovered, but objects of epoch ${t} may be on nodes that are away`);
        return;
      }
    }
    this.recoveredEpoch = this.epochNr;
    await this.saveState();
    await this.settleUnclean();
    log.info(`epoch ${this.epochNr}: every member recovered`);
  }

  private checkLockHead(): void {
    const head = this.lockQueue[0];
    if (!head) return;
    const w = this.lockWaiters.get(head.id);
    if (w) {
      this.lockWaiters.delete(head.id);
      this.lockHeld.add(head.id);
      w.settle(true);
    } else if (this.isSelf(head.node) && !this.lockHeld.has(head.id) && !this.lockOrphans.has(head.id)) {
      // Ours, but its request gave up (or an earlier run of this node made
      // it): everyone else would wait behind it for good.
      this.lockOrphans.add(head.id);
      this.cluster.notify({ t: 'lock_rel', id: head.id }).catch(() => undefined).finally(() => this.lockOrphans.delete(head.id));
    }
  }

  /**
   * Our lock requests that the cluster's queue no longer holds, though it
   * took them in: lost when this node was dropped and joined again (the
   * members removed them with our leave, and the state we were sent has
   * none of them). They are asked for again.
   */
  private lockRequestsLost(): void {
    const queued = new Set(this.lockQueue.map((l) => l.id));
    for (const [id, w] of this.lockWaiters) {
      if (w.queued && !queued.has(id)) {
        this.lockWaiters.delete(id);
        w.settle(false);
      }
    }
  }

  /** Run a cluster operation's work phase while holding the cluster-wide lock. */
  async withClusterLock<T>(fn: () => Promise<T>): Promise<T> {
    for (;;) {
      const id = randomBytes(8).toString('hex');
      const w = { settle: (_: boolean) => undefined as void, queued: false };
      const granted = new Promise<boolean>((r) => (w.settle = r));
      this.lockWaiters.set(id, w);
      // A request the cluster never delivers (its sender was away) must not
      // hold the operation for good: past the deadline it is asked for
      // again, and the first one, if it still comes, is released when it
      // reaches the head (checkLockHead). One that is queued waits its turn.
      const deadline = setTimeout(() => {
        if (this.lockWaiters.get(id) === w && !w.queued) {
          this.lockWaiters.delete(id);
          w.settle(false);
        }
      }, this.lockRetryMs);
      deadline.unref();
      let failed: unknown;
      this.cluster.notify({ t: 'lock_req', id }).then(() => {
        w.queued = true;
        this.checkLockHead();
      }, (e) => {
        failed = e;
        if (this.lockWaiters.get(id) === w) {
          this.lockWaiters.delete(id);
          w.settle(false);
        }
      });
      const ok = await granted;
      if (failed !== undefined) {
        clearTimeout(deadline);
        throw failed;
      }
      clearTimeout(deadline);
      if (!ok) {
        log.info(`cluster lock request ${id} was lost (this node rejoined, or the request was not delivered within ${this.lockRetryMs / 1000} s): asking again`);
        continue;
      }
      try {
        return await fn();
      } finally {
        this.lockHeld.delete(id);
        this.lockOrphans.add(id); // released here, not again as an orphan
        this.cluster.notify({ t: 'lock_rel', id }).catch(() => undefined).finally(() => this.lockOrphans.delete(id));
      }
    }
  }

  private async applyMakeFs(m: MakeFsMsg): Promise<void> {
    this.recovery.stop();
    // Epochs start again at 1: until this node's store is wiped, a peer
    // already formatted must not take its old copies for the new epoch 1's
    // (its recovery listed them, found them gone when it fetched them, and
    // answered HALT for those objects: cluster-snapshot test, load after a
    // format). Peer requests of epoch 1 now wait for our own epoch 1.
    this.epochNr = 0;
    this.status = 'wait_format';
    await this.store.wipe();
    await this.tombstones.clear();
    await this.store.setDriver(m.store);
    await this.cfg.clearEpochs();
    this.epochs.clear();
    this.epochNr = 0;
    this.config = {
      ctime: m.ctime, copies: m.copies, copyPolicy: m.copyPolicy, flags: m.flags,
      blockSizeShift: m.blockSizeShift, store: m.store, disableRecovery: false,
    };
    await this.cfg.save(this.config);
    this.vdis.reset();
    await this.saveVdis();
    this.suspects.clear();
    this.uncleanFrom = undefined;
    this.bornOf.clear();
    this.status = 'ok';
    await this.bumpEpoch(this.withVnodes(this.present));
    this.born = this.epochNr;
    this.recoveredEpoch = 0;
    for (const n of this.present) this.bornOf.set(nodeToString(n), this.epochNr);
    await this.saveState();
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

  /**
   * Become the S3 gateway that writes the bucket VDI vid, unless another
   * member is: two gateways appending to one bucket's log would write over
   * each other. fresh: claimed just now (what an earlier writer committed
   * must be read first).
   */
  async claimS3Writer(vid: number): Promise<{ self: boolean; fresh: boolean; writer?: string }> {
    const me = nodeToString(this.selfNode);
    if (this.s3Writers.get(vid) === me) return { self: true, fresh: false, writer: me };
    if (!this.s3Writers.has(vid)) await this.cluster.notify({ t: 's3_writer', vid });
    const w = this.s3Writers.get(vid);
    return { self: w === me, fresh: w === me, writer: w };
  }

  /** Force the cluster out of wait_join with the members present. */
  async forceRecover(): Promise<void> {
    if (this.status !== 'wait_join' || !this.formatted) throw new SheepdogError(Res.FORCE_RECOVER);
    await this.cluster.notify({ t: 'force_recover' });
  }

  async close(): Promise<void> {
    this.closing = true;
    this.md?.close();
    this.recovery.stop();
    this.scrubber.stop();
    this.peers.closeAll();
    if (this.aliveTimer) clearInterval(this.aliveTimer);
    if (this.status === 'refused') {
      await this.store.close();
      return;
    }
    await this.cluster.leave().catch(() => undefined);
    await this.store.close();
    await this.cfg.markStopped(this.status === 'shutdown');
  }
}

function fmtCtime(ctime: bigint): string {
  return new Date(Number(ctime >> 32n) * 1000).toISOString();
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

