// The connection to the cluster: one pipelined client to the sheep given
// with -a/-p (switchable at run time through config/sheep_info) plus one per
// other node for per-node stats, and the read-only queries the text files
// are made of. Everything goes through common's SheepClient, never collie.
import {
  SheepClient, Op, Flag, Res, SdNode, EpochLog, InodeHeader, SheepdogError, ConnectionError, RequestFields, Response,
  decodeNodes, sortNodes, decodeEpochLogs, decodeInodeHeader, decodeStat, decodeRecoveryState, nodeConnectAddress,
  vidToVdiOid, SD_MAX_NODES, SD_NODE_SIZE, SD_EPOCH_LOG_HEADER_SIZE, SD_VDI_BITMAP_SIZE, SD_INODE_HEADER_SIZE,
  SD_INODE_SIZE, SD_STAT_SIZE, SD_INODE_DATA_INDEX_SIZE, SdStat, RecoveryState,
  liveVids, decodeBtreeHeader, indexMetaSize, buildIndexWith, INODE_HEADER_PLUS_BTREE, VdiIndex,
} from '@sheepdog/common';
import * as log from './log.js';

/**
 * A SheepClient whose requests go to whichever sheep is current: VdiIO
 * backends hold one of these, so switching sheep moves every volume too.
 */
export class SwitchClient extends SheepClient {
  private cur: SheepClient;
  constructor(host: string, port: number) {
    super({ host, port });
    this.cur = new SheepClient({ host, port, connectTimeout: 5000 });
  }
  get target(): { host: string; port: number } {
    return { host: this.cur.host, port: this.cur.port };
  }
  override get address(): string {
    return this.cur.address;
  }
  override connect(): Promise<void> {
    return this.cur.connect();
  }
  override send(fields: RequestFields, payload?: Buffer): Promise<Response> {
    return this.cur.send(fields, payload);
  }
  override get inFlight(): number {
    return this.cur.inFlight;
  }
  /** Point at another sheep; the old connection closes once its requests are answered. */
  swap(next: SheepClient): void {
    const old = this.cur;
    this.cur = next;
    const drain = () => (old.inFlight === 0 ? old.close() : setTimeout(drain, 100).unref());
    drain();
  }
  override close(): void {
    this.cur.close();
  }
}

export interface ScannedVdi {
  vid: number;
  header: InodeHeader;
  index?: VdiIndex;
}

/** One cached value, recomputed after `ttl` ms; concurrent callers share one computation. */
class Cached<T> {
  private at = 0;
  private p?: Promise<T>;
  constructor(private readonly ttl: number, private readonly make: () => Promise<T>) {}
  get(): Promise<T> {
    const now = Date.now();
    if (!this.p || now - this.at > this.ttl) {
      this.at = now;
      const p = this.make();
      this.p = p;
      p.catch(() => { if (this.p === p) this.p = undefined; });
    }
    return this.p;
  }
  drop(): void {
    this.p = undefined;
  }
}

export class Cluster {
  readonly client: SwitchClient;
  private peers = new Map<string, SheepClient>();
  // short-lived: enough for the lookups of one `ls -l`, never stale to a person or a script
  private nodeCache = new Cached(250, () => this.loadNodes());
  private scanCache = new Cached(250, () => this.scan(false));
  private scanIdxCache = new Cached(250, () => this.scan(true));

  constructor(host: string, port: number) {
    this.client = new SwitchClient(host, port);
  }

  get address(): string {
    return this.client.address;
  }

  /** Switch every connection to another sheep (config/sheep_info). Checks it answers first. */
  async switchTo(host: string, port: number): Promise<void> {
    const c = new SheepClient({ host, port, connectTimeout: 5000 });
    try {
      const r = await c.send({ opcode: Op.GET_NODE_LIST, dataLength: SD_MAX_NODES * SD_NODE_SIZE });
      if (r.rsp.result !== Res.SUCCESS) throw new SheepdogError(r.rsp.result);
    } catch (e) {
      c.close();
      throw e;
    }
    this.client.swap(c);
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
    this.invalidate();
  }

  invalidate(): void {
    this.nodeCache.drop();
    this.scanCache.drop();
    this.scanIdxCache.drop();
  }

  close(): void {
    this.client.close();
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
  }

  /** Send and throw unless SUCCESS. */
  async req(fields: RequestFields, payload?: Buffer, client: SheepClient = this.client): Promise<Buffer> {
    const r = await client.send(fields, payload);
    if (r.rsp.result !== Res.SUCCESS) throw new SheepdogError(r.rsp.result);
    return r.data;
  }

  /** The client for a node of the list: ours if it is the node we talk to. */
  clientFor(n: SdNode): SheepClient {
    const t = nodeConnectAddress(n);
    const me = this.client.target;
    if (t.host === me.host && t.port === me.port) return this.client;
    const key = `${t.host}|${t.port}`;
    let c = this.peers.get(key);
    if (!c) {
      c = new SheepClient({ host: t.host, port: t.port, connectTimeout: 3000, timeout: 10000 });
      this.peers.set(key, c);
    }
    return c;
  }

  // ---- node list (collie's NL prologue) -----------------------------------

  nodes(): Promise<{ nodes: SdNode[]; epoch: number; flags: number }> {
    return this.nodeCache.get();
  }

  private async loadNodes(): Promise<{ nodes: SdNode[]; epoch: number; flags: number }> {
    const b = await this.req({ opcode: Op.GET_NODE_LIST, dataLength: SD_MAX_NODES * SD_NODE_SIZE });
    const nodes = sortNodes(decodeNodes(b, Math.floor(b.length / SD_NODE_SIZE)));
    const s = await this.client.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: { nodesNr: 0 } });
    return { nodes, epoch: s.rsp.epoch, flags: s.data.length >= 32 ? s.data.readUInt16LE(30) : 0 };
  }

  /** STAT_CLUSTER with room for every epoch (as `collie cluster info`). */
  async clusterLogs(): Promise<{ result: number; logs: EpochLog[] }> {
    const { nodes, epoch } = await this.nodes();
    let nodesNr = nodes.length;
    for (;;) {
      const stride = SD_EPOCH_LOG_HEADER_SIZE + nodesNr * SD_NODE_SIZE;
      const r = await this.client.send({ opcode: Op.STAT_CLUSTER, dataLength: epoch * stride, cluster: { nodesNr } });
      if (r.rsp.result === Res.BUFFER_SMALL && nodesNr < SD_MAX_NODES) {
        nodesNr = Math.min(SD_MAX_NODES, Math.max(1, nodesNr * 2));
        continue;
      }
      return { result: r.rsp.result, logs: decodeEpochLogs(r.data, nodesNr) };
    }
  }

  async statSheep(n: SdNode): Promise<{ size: bigint; free: bigint }> {
    const r = await this.clientFor(n).send({ opcode: Op.STAT_SHEEP });
    if (r.rsp.result !== Res.SUCCESS) throw new SheepdogError(r.rsp.result);
    return { size: r.rsp.node.storeSize, free: r.rsp.node.storeFree };
  }

  async stat(n: SdNode): Promise<SdStat> {
    const d = await this.req({ opcode: Op.STAT, dataLength: SD_STAT_SIZE }, undefined, this.clientFor(n));
    const b = Buffer.alloc(SD_STAT_SIZE);
    d.copy(b);
    return decodeStat(b);
  }

  async recovery(n: SdNode): Promise<RecoveryState> {
    const d = await this.req({ opcode: Op.STAT_RECOVERY, dataLength: 24 }, undefined, this.clientFor(n));
    const b = Buffer.alloc(24);
    d.copy(b);
    return decodeRecoveryState(b);
  }

  // ---- VDIs ----------------------------------------------------------------

  /** Every live VDI (cached for a quarter second); with its index if asked. */
  vdis(withIndex = false): Promise<ScannedVdi[]> {
    return withIndex ? this.scanIdxCache.get() : this.scanCache.get();
  }

  /** collie's parse_vdi over our client: bitmaps, then each inode header (and index). */
  private async scan(withIndex: boolean): Promise<ScannedVdi[]> {
    const [inuse, deleted] = await Promise.all([
      this.req({ opcode: Op.READ_VDIS, dataLength: SD_VDI_BITMAP_SIZE }),
      this.req({ opcode: Op.READ_DEL_VDIS, dataLength: SD_VDI_BITMAP_SIZE }),
    ]);
    const vids = liveVids(inuse, deleted);
    const out: (ScannedVdi | undefined)[] = new Array(vids.length);
    // depth-2 B-tree leaves of hyper volumes
    const readNode = (oid: bigint) => this.req({ opcode: Op.READ_OBJ, flags: Flag.CMD_DIRECT, dataLength: SD_INODE_DATA_INDEX_SIZE, obj: { oid } });
    const one = async (i: number) => {
      const vid = vids[i];
      const oid = vidToVdiOid(vid);
      const r = await this.client.send({ opcode: Op.READ_OBJ, flags: Flag.CMD_DIRECT, dataLength: INODE_HEADER_PLUS_BTREE, obj: { oid } });
      if (r.rsp.result !== Res.SUCCESS || r.data.length < 572) {
        log.warn(`failed to read the inode of VDI ${vid.toString(16)}: ${new SheepdogError(r.rsp.result).message}`);
        return;
      }
      const header = decodeInodeHeader(r.data);
      if (!header.name) return;
      const sv: ScannedVdi = { vid, header };
      if (withIndex) {
        const len = indexMetaSize(header, decodeBtreeHeader(r.data, SD_INODE_HEADER_SIZE));
        let area: Buffer = Buffer.alloc(0);
        if (len > 0) {
          area = await this.req({
            opcode: Op.READ_OBJ, flags: Flag.CMD_DIRECT, dataLength: Math.min(len, SD_INODE_SIZE - SD_INODE_HEADER_SIZE),
            obj: { oid, offset: SD_INODE_HEADER_SIZE },
          });
        }
        sv.index = await buildIndexWith(readNode, header, area);
      }
      out[i] = sv;
    };
    let next = 0;
    const workers: Promise<void>[] = [];
    for (let w = 0; w < Math.min(16, vids.length); w++) {
      workers.push((async () => {
        while (next < vids.length) await one(next++);
      })());
    }
    await Promise.all(workers);
    return out.filter((x): x is ScannedVdi => x !== undefined);
  }
}

export { ConnectionError };
