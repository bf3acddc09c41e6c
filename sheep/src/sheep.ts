// One sheep: its store, configuration, membership, epochs and VDI state.
import * as path from 'node:path';
import {
  SdNode, makeNode, sortNodes, VnodeRing, autoVnodes, ClusterFlag, ClusterStatus, Res, SheepdogError,
  decodeInodeHeader, isVdiObj, oidToVid, SD_DEFAULT_VNODES, emptyStat, SdStat, timestamp64,
} from '@sheepdog/common';
import type { ObjectStore } from './store/store.js';
import { PlainStore } from './store/plain.js';
import { NodeConfigStore, ClusterConfig, emptyConfig } from './config.js';
import { VdiRegistry, VdiNotice } from './vdi.js';
import { Gateway, PlacementView } from './gateway.js';
import { PeerPool } from './peer.js';
import type { ClusterDriver, ClusterMessage } from './cluster/driver.js';
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

export class Sheep implements PlacementView {
  readonly store: ObjectStore;
  readonly cfg: NodeConfigStore;
  config: ClusterConfig = emptyConfig();
  status: NodeStatus = 'wait_format';
  epochNr = 0;
  readonly epochs = new Map<number, EpochRecord>();
  members: SdNode[] = [];
  ring: VnodeRing = new VnodeRing([]);
  selfNode: SdNode;
  readonly vdis: VdiRegistry;
  readonly peers = new PeerPool();
  readonly gw: Gateway;
  readonly stats: SdStat = emptyStat();
  recoveryThrottle = { maxExecCount: 0, queueWorkInterval: 0n, throttling: false };
  onShutdown?: (why: 'shutdown' | 'killed') => void;

  constructor(readonly opts: SheepOptions, readonly cluster: ClusterDriver) {
    this.store = new PlainStore(opts.dir, opts.nosync);
    this.cfg = new NodeConfigStore(opts.dir);
    this.selfNode = makeNode(opts.host, opts.port, {
      zone: opts.zone,
      nrVnodes: opts.gateway ? 0 : opts.vnodes ?? SD_DEFAULT_VNODES,
    });
    this.vdis = new VdiRegistry(this, () => ({
      copies: this.config.copies, copyPolicy: this.config.copyPolicy,
      blockSizeShift: this.config.blockSizeShift, flags: this.config.flags,
    }));
    this.gw = new Gateway(this.store, this, this.peers);
  }

  get objDir(): string {
    return path.join(this.opts.dir, 'obj');
  }

  get formatted(): boolean {
    return this.config.ctime !== 0n;
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

  // ---- ObjectIO used by VDI code ---------------------------------------
  read(oid: bigint, off: number, len: number) { return this.gw.read(oid, off, len); }
  write(oid: bigint, off: number, data: Buffer, copies?: number) { return this.gw.write(oid, off, data, copies); }
  createRanges(oid: bigint, r: { off: number; data: Buffer }[], copies?: number) { return this.gw.createRanges(oid, r, copies); }
  decref(vid: number, idx: number, g: number, c: number) { return this.gw.decref(vid, idx, g, c); }

  async start(): Promise<void> {
    await this.store.init();
    await this.cfg.init();
    this.config = await this.cfg.load();
    if (!this.opts.gateway) {
      const u = await this.store.usage();
      this.selfNode.space = u.size;
    }
    this.epochNr = await this.cfg.latestEpoch();
    for (let e = 1; e <= this.epochNr; e++) {
      const r = await this.cfg.loadEpoch(e);
      if (r) this.epochs.set(e, { epoch: e, ...r });
    }
    await this.loadVdis();
    await this.cluster.start(this.selfNode, {
      onMembers: (nodes) => this.onMembers(nodes),
      onMessage: (m, from) => this.onMessage(m, from),
    });
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

  private withVnodes(nodes: SdNode[]): SdNode[] {
    const sorted = sortNodes(nodes);
    return this.clusterFlags & ClusterFlag.AUTO_VNODES ? autoVnodes(sorted) : sorted;
  }

  async onMembers(nodes: SdNode[]): Promise<void> {
    this.members = this.withVnodes(nodes);
    const me = this.members.find((n) => n.port === this.selfNode.port && n.addr.equals(this.selfNode.addr));
    if (me) this.selfNode.nrVnodes = me.nrVnodes;
    if (!this.formatted) {
      this.status = 'wait_format';
      this.ring = new VnodeRing(this.members);
      return;
    }
    // A formatted single-member cluster resumes at its last epoch when the
    // members match it, and otherwise starts a new epoch with who is here.
    const last = this.epochs.get(this.epochNr);
    const same = last && last.nodes.length === this.members.length &&
      last.nodes.every((n, i) => n.port === this.members[i].port && n.addr.equals(this.members[i].addr));
    if (!same) await this.bumpEpoch(this.members);
    else this.ring = new VnodeRing(last!.nodes);
    this.status = 'ok';
  }

  async bumpEpoch(nodes: SdNode[]): Promise<void> {
    const e = this.epochNr + 1;
    const time = Math.floor(Date.now() / 1000);
    await this.cfg.saveEpoch(e, nodes, time);
    this.epochs.set(e, { epoch: e, time, nodes });
    this.epochNr = e;
    this.ring = new VnodeRing(nodes);
    log.info(`epoch ${e}: ${nodes.length} node(s)`);
  }

  /** Apply an ordered cluster notification (every member does this). */
  async onMessage(m: ClusterMessage, _from: SdNode): Promise<void> {
    switch (m.t) {
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
        s.lockOwner = m.ownerAddr ? makeNode(m.ownerAddr as string, m.owner as number) : undefined;
        return;
      }
      default:
        log.warn(`unknown cluster message ${m.t}`);
    }
  }

  private async applyMakeFs(m: MakeFsMsg): Promise<void> {
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
    this.members = this.withVnodes(this.members);
    await this.bumpEpoch(this.members);
    this.status = 'ok';
    log.notice(`cluster formatted: copies ${m.copies}, object size ${2 ** m.blockSizeShift}, store ${m.store}`);
  }

  /** The gate of §6.1 step 2. */
  gate(force: boolean): void {
    if (this.status === 'killed') throw new SheepdogError(Res.KILLED);
    if (this.status === 'shutdown') throw new SheepdogError(Res.SHUTDOWN);
    if (!force && this.status === 'wait_format') throw new SheepdogError(Res.WAIT_FOR_FORMAT);
    if (!force && this.status === 'wait_join') throw new SheepdogError(Res.WAIT_FOR_JOIN);
  }

  async close(): Promise<void> {
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

export { timestamp64 };
