// "zookeeper" driver: an Apache ZooKeeper ensemble is the membership engine
// for clusters that span machines (upstream's zk driver, redone).
//
//   -c zookeeper:HOST:PORT[,HOST:PORT...][/CLUSTER_ID][,timeout=MS]
//
// Layout under /sheepdog/<CLUSTER_ID>:
//   member/<node>-<inst>   EPHEMERAL, one per live member incarnation; its data
//                          is {node, p} where p is the highest queue entry this
//                          member has read (null while it is still joining)
//   queue/ev-NNNNNNNNNN    PERSISTENT_SEQUENTIAL: join, leave and message
//                          entries; the sequence number is the total order
//   snapshot               {seq, state}: the folded state after entry `seq`
//
// Every member folds the queue in sequence order: joins and leaves change the
// member list (kept in join order), messages are deduplicated by id. The fold
// is a pure function of the queue, so every member computes the same member
// list at every entry. A joiner starts from the snapshot and folds forward to
// its own join entry, from which on it delivers everything.
//
// Leave detection: every member watches member/; a member of the fold whose
// ephemeral znode is gone (clean leave, or its session expired after a crash)
// gets a leave entry from each survivor that notices — the fold ignores all
// but the first. The member list is read strictly after the queue entries it
// is compared with, and every joiner creates its znode before its join entry,
// so a live member is never mistaken for a dead one.
//
// Garbage collection: the first member of the fold periodically writes the
// snapshot at the point it has read and removes the queue entries that every
// live member has read and the snapshot covers. A joiner reads the snapshot,
// the queue listing, and the snapshot again; an unchanged snapshot version
// proves that the listing holds every entry after the snapshot.
//
// A member whose own session expires (or that finds itself removed from the
// fold) stops delivering and calls `onFatal`, which by default exits the
// process: the others have already seen it leave, and it must not go on
// with a stale view. One cut off from ZooKeeper for longer than the session
// timeout cannot know whether that happened: it holds every request
// (`onCutOff`) and keeps trying. A ZooKeeper restart keeps the sessions
// (they are in its log), so once the server is back the session is valid
// and the node goes on where it was; if it expired meanwhile, ZooKeeper
// says so and the node exits. After CUT_OFF_LIMIT_MS with no ZooKeeper it
// exits too.
import { randomBytes } from 'node:crypto';
import zookeeper from 'node-zookeeper-client';
import type { Client, Stat, Event as ZkEvent } from 'node-zookeeper-client';
import { SdNode, sameNode, nodeToString } from '@sheepdog/common';
import type { ClusterDriver, ClusterMessage, ClusterEvent, EventHandler } from './driver.js';
import { encodeMessage, decodeMessage } from './driver.js';
import { log } from '../log.js';

const { CreateMode, Exception } = zookeeper;

export const DEFAULT_CLUSTER_ID = 'sheepdog';
export const DEFAULT_SESSION_TIMEOUT_MS = 3000;
const USAGE = 'expected zookeeper:HOST:PORT[,HOST:PORT...][/CLUSTER_ID][,timeout=MS]';

export interface ZkSpec {
  servers: { host: string; port: number }[];
  /** node-zookeeper-client connection string (no chroot) */
  connect: string;
  clusterId: string;
  /** requested session timeout in ms (the server may clamp it) */
  timeout: number;
}

/** Parse the part of `-c zookeeper:...` after the colon. Throws on anything malformed. */
export function parseZkSpec(args: string): ZkSpec {
  const bad = (why: string) => new Error(`invalid zookeeper driver spec 'zookeeper:${args}': ${why} (${USAGE})`);
  if (!args) throw bad('no server given');
  let rest = args;
  let timeout = DEFAULT_SESSION_TIMEOUT_MS;
  const tm = /,timeout=([^,/]*)$/.exec(rest);
  if (tm) {
    if (!/^\d+$/.test(tm[1])) throw bad(`timeout '${tm[1]}' is not a number of milliseconds`);
    timeout = Number(tm[1]);
    if (timeout < 100 || timeout > 600_000) throw bad(`timeout ${timeout} ms is out of range 100..600000`);
    rest = rest.slice(0, tm.index);
  }
  let clusterId = DEFAULT_CLUSTER_ID;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    clusterId = rest.slice(slash + 1);
    rest = rest.slice(0, slash);
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(clusterId) || clusterId.length > 128) {
      throw bad(`cluster id '${clusterId}' must be letters, digits, '_', '.', '-' (not starting with '.' or '-')`);
    }
  }
  if (!rest) throw bad('no server given');
  const servers = rest.split(',').map((hp) => {
    const m = /^([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$/.exec(hp);
    if (!m) {
      if (/^timeout=/.test(hp)) throw bad('timeout=MS must come last');
      throw bad(`'${hp}' is not HOST:PORT`);
    }
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw bad(`port ${port} is out of range`);
    return { host: m[1], port };
  });
  return { servers, connect: servers.map((s) => `${s.host}:${s.port}`).join(','), clusterId, timeout };
}

// ---------------------------------------------------------------- the fold

/** One queue entry. `inst` names a member incarnation (one sheep run). */
export type QueueEntry =
  | { t: 'join'; inst: string; node: SdNode; info: ClusterMessage }
  | { t: 'leave'; inst: string; node: SdNode }
  | { t: 'msg'; inst: string; node: SdNode; mid: string; msg: ClusterMessage };

export interface FoldState {
  members: { inst: string; node: SdNode }[];
  /** ids of the most recent messages, for deduplicating retried creates */
  mids: string[];
}

const MIDS_KEEP = 1024;

export const emptyFold = (): FoldState => ({ members: [], mids: [] });
const cloneFold = (s: FoldState): FoldState => ({ members: [...s.members], mids: [...s.mids] });

/**
 * Apply one queue entry to the fold (in place) and return the events it
 * produces, in order. Deterministic: every member computes the same thing.
 */
export function applyEntry(s: FoldState, e: QueueEntry): ClusterEvent[] {
  const nodes = () => s.members.map((m) => m.node);
  switch (e.t) {
    case 'join': {
      if (s.members.some((m) => m.inst === e.inst)) return [];
      const out: ClusterEvent[] = [];
      // the same address joining again means its old incarnation is gone
      const old = s.members.findIndex((m) => sameNode(m.node, e.node));
      if (old >= 0) {
        const [gone] = s.members.splice(old, 1);
        out.push({ type: 'leave', node: gone.node, members: nodes() });
      }
      s.members.push({ inst: e.inst, node: e.node });
      out.push({ type: 'join', node: e.node, info: e.info, members: nodes() });
      return out;
    }
    case 'leave': {
      const i = s.members.findIndex((m) => m.inst === e.inst);
      if (i < 0) return [];
      const [gone] = s.members.splice(i, 1);
      return [{ type: 'leave', node: gone.node, members: nodes() }];
    }
    case 'msg': {
      if (s.mids.includes(e.mid)) return [];
      s.mids.push(e.mid);
      if (s.mids.length > MIDS_KEEP) s.mids.splice(0, s.mids.length - MIDS_KEEP);
      const from = s.members.find((m) => m.inst === e.inst);
      if (!from) return []; // sent by someone already gone
      return [{ type: 'message', from: from.node, msg: e.msg }];
    }
  }
}

// ---------------------------------------------------------------- zk helpers

const errCode = (e: unknown): number | undefined =>
  e && typeof e === 'object' && typeof (e as { getCode?: unknown }).getCode === 'function'
    ? (e as { getCode(): number }).getCode()
    : undefined;
const isCode = (e: unknown, c: number) => errCode(e) === c;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seqOf = (name: string): number => Number(name.slice(-10));

class FatalError extends Error {}

const PROGRESS_EVERY_MS = 200;
const COMPACT_EVERY_MS = 1000;
const POLL_EVERY_MS = 1000;
const CONNECT_TIMEOUT_MS = 15_000;
/**
 * Two holes in node-zookeeper-client (1.1.3)'s reconnect loop, each of
 * which leaves a node cut off for good while ZooKeeper is back up:
 * - it keeps the unparsed tail of a frame across reconnects: cut off
 *   mid-reply (ZooKeeper killed while a large listing was on the wire), the
 *   next connection's ConnectResponse is read after those stale bytes, its
 *   length is garbage, and the client waits forever for "the rest";
 * - its connect timeout ends when TCP connects: a server that accepts the
 *   connection while it starts up and never answers the handshake holds
 *   the client on that socket forever.
 * So every attempt starts from an empty buffer, and an attempt whose
 * handshake has not completed within handshakeMs is dropped (the library
 * then tries again).
 */
export function hardenReconnect(client: Client, handshakeMs: number): void {
  type Cm = { connect: () => void; pendingBuffer: Buffer | null; state: number; socket?: { destroy(): void } };
  const cm = (client as unknown as { connectionManager?: Cm }).connectionManager;
  if (!cm || typeof cm.connect !== 'function' || !('pendingBuffer' in cm)) throw new Error('node-zookeeper-client internals changed: recheck hardenReconnect');
  const CONNECTING = 1;
  const connect = cm.connect;
  let attempt = 0;
  cm.connect = function (this: Cm) {
    this.pendingBuffer = null;
    const mine = ++attempt;
    setTimeout(() => {
      if (attempt === mine && this.state === CONNECTING) this.socket?.destroy();
    }, handshakeMs).unref();
    return connect.call(this);
  };
}

/** How long one connection attempt may take to become a session (ZooKeeper answers a handshake in milliseconds; this allows for a loaded machine). */
const HANDSHAKE_MS = 5000;

/** How long a member cut off from ZooKeeper holds requests before it gives up and exits: at least this, or 20 session timeouts. */
const CUT_OFF_LIMIT_MS = 60_000;

export class ZooKeeperDriver implements ClusterDriver {
  readonly name = 'zookeeper';
  readonly spec: ZkSpec;
  /**
   * Called once if this member loses its membership (session expired, cut
   * off from ZooKeeper longer than the session timeout, or removed from the
   * group). Default: log and exit the process.
   */
  onFatal: (err: Error) => void = (err) => {
    log.err(`zookeeper driver: ${err.message}; exiting`);
    process.stderr.write(`sheep: zookeeper driver: ${err.message}; exiting\n`);
    setTimeout(() => process.exit(1), 100);
  };

  private readonly root: string;
  private readonly memberDir: string;
  private readonly queueDir: string;
  private readonly snapPath: string;
  private readonly inst = randomBytes(8).toString('hex');
  private client?: Client;
  private self!: SdNode;
  private onEvent!: EventHandler;
  private memberPath = '';

  private state: FoldState = emptyFold();
  /** highest queue entry folded; undefined until the first catch-up */
  private lastSeq: number | undefined;
  private joined = false;
  private leaving = false;
  private dead = false;
  private reading = false;
  private queueDirty = true;
  private membersDirty = true;
  private readerIdle: (() => void)[] = [];
  private leavesSent = new Set<string>();

  private deliverQ: ClusterEvent[] = [];
  private deliverMids: (string | undefined)[] = [];
  private delivering = false;
  private joinedResolve?: () => void;
  private joinedReject?: (e: Error) => void;
  private pending = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();

  private reportedSeq: number | undefined;
  private progressTimer?: NodeJS.Timeout;
  private timers: NodeJS.Timeout[] = [];
  private disconnectTimer?: NodeJS.Timeout;
  private giveUpTimer?: NodeJS.Timeout;
  private cutOff = false;
  onCutOff?: (cut: boolean) => void;
  private compacting = false;
  private compactedAt = -1;

  constructor(args: string) {
    this.spec = parseZkSpec(args);
    this.root = `/sheepdog/${this.spec.clusterId}`;
    this.memberDir = `${this.root}/member`;
    this.queueDir = `${this.root}/queue`;
    this.snapPath = `${this.root}/snapshot`;
  }

  // ------------------------------------------------------------ promisified client

  private zk(): Client {
    if (!this.client) throw new FatalError('not connected');
    return this.client;
  }

  private call<T>(f: (cb: (err: unknown, ...r: unknown[]) => void) => void, pick: (r: unknown[]) => T): Promise<T> {
    return new Promise((resolve, reject) => f((err, ...r) => (err ? reject(err) : resolve(pick(r)))));
  }

  /** Retry an idempotent operation across connection losses (session expiry ends it). */
  private async retry<T>(what: string, op: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.dead) throw new FatalError('driver stopped');
      try {
        return await op();
      } catch (e) {
        const c = errCode(e);
        if ((c === Exception.CONNECTION_LOSS || c === Exception.OPERATION_TIMEOUT) && attempt < 1000) {
          if (attempt === 0) log.warn(`zookeeper driver: ${what}: ${String(e)}; retrying`);
          await sleep(50);
          continue;
        }
        throw e;
      }
    }
  }

  private getChildren(path: string, watch?: (e: ZkEvent) => void): Promise<string[]> {
    return this.retry(`list ${path}`, () =>
      this.call<string[]>(
        (cb) => (watch ? this.zk().getChildren(path, watch, cb) : this.zk().getChildren(path, cb)),
        (r) => r[0] as string[],
      ),
    );
  }

  private getData(path: string): Promise<{ data: Buffer | undefined; stat: Stat }> {
    return this.retry(`read ${path}`, () =>
      this.call((cb) => this.zk().getData(path, cb), (r) => ({ data: r[0] as Buffer | undefined, stat: r[1] as Stat })),
    );
  }

  private setData(path: string, data: Buffer, version = -1): Promise<void> {
    return this.retry(`write ${path}`, () => this.call((cb) => this.zk().setData(path, data, version, cb), () => undefined));
  }

  private remove(path: string): Promise<void> {
    return this.retry(`remove ${path}`, () => this.call((cb) => this.zk().remove(path, cb), () => undefined)).catch(
      (e) => {
        if (!isCode(e, Exception.NO_NODE)) throw e;
      },
    );
  }

  /**
   * Create a znode. Retried on connection loss: a sequential create may then
   * land twice, which the fold ignores (joins/leaves by inst, messages by id).
   */
  private create(path: string, data: Buffer, mode: number): Promise<string> {
    return this.retry(`create ${path}`, () =>
      this.call<string>((cb) => this.zk().create(path, data, mode, cb), (r) => r[0] as string),
    );
  }

  private async mkdirp(path: string): Promise<void> {
    await this.retry(`mkdir ${path}`, () => this.call((cb) => this.zk().mkdirp(path, cb), () => undefined));
  }

  private enqueue(e: QueueEntry): Promise<string> {
    return this.create(`${this.queueDir}/ev-`, Buffer.from(encodeMessage(e)), CreateMode.PERSISTENT_SEQUENTIAL);
  }

  // ------------------------------------------------------------ lifecycle

  private connect(): Promise<void> {
    const client = zookeeper.createClient(this.spec.connect, {
      sessionTimeout: this.spec.timeout,
      spinDelay: 100,
      retries: 0,
    });
    this.client = client;
    hardenReconnect(client, HANDSHAKE_MS);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        client.close();
        reject(new Error(`zookeeper driver: cannot reach ZooKeeper at ${this.spec.connect} within ${CONNECT_TIMEOUT_MS / 1000} s`));
      }, CONNECT_TIMEOUT_MS);
      client.once('connected', () => {
        clearTimeout(t);
        log.info(
          `zookeeper driver: connected to ${this.spec.connect}, session timeout ${client.getSessionTimeout()} ms` +
            ` (asked for ${this.spec.timeout})`,
        );
        resolve();
      });
      client.on('state', (st) => this.onState(st.name));
      client.connect();
    });
  }

  private onState(name: string): void {
    if (this.dead || this.leaving) return;
    switch (name) {
      case 'EXPIRED':
        this.fatal(new FatalError('ZooKeeper session expired, this node is no longer a member'));
        break;
      case 'AUTH_FAILED':
        this.fatal(new FatalError('ZooKeeper authentication failed'));
        break;
      case 'DISCONNECTED': {
        if (this.disconnectTimer) break; // still trying; the clock runs from the first loss
        log.warn('zookeeper driver: disconnected from ZooKeeper, reconnecting');
        const limit = this.client?.getSessionTimeout() || this.spec.timeout;
        const giveUp = Math.max(CUT_OFF_LIMIT_MS, 20 * limit);
        this.disconnectTimer = setTimeout(() => {
          // the others may have dropped us by now: serve nothing until ZooKeeper says whether we are still a member
          this.cutOff = true;
          log.warn(`zookeeper driver: cut off from ZooKeeper for longer than the session timeout (${limit} ms): requests wait until it is back (or this node exits in ${giveUp / 1000} s)`);
          this.onCutOff?.(true);
          this.giveUpTimer = setTimeout(
            () => this.fatal(new FatalError(`cut off from ZooKeeper for ${giveUp / 1000} s`)),
            giveUp - limit,
          );
        }, limit);
        break;
      }
      case 'SYNC_CONNECTED':
      case 'CONNECTED_READ_ONLY':
        if (this.disconnectTimer) {
          clearTimeout(this.disconnectTimer);
          clearTimeout(this.giveUpTimer);
          this.disconnectTimer = this.giveUpTimer = undefined;
          log.info('zookeeper driver: reconnected to ZooKeeper');
          if (this.cutOff) {
            // the session held: nobody saw us leave, and what happened meanwhile is in the queue
            this.cutOff = false;
            log.notice('zookeeper driver: the session is still valid: this node is still a member, requests go on');
            this.onCutOff?.(false);
          }
          this.queueDirty = this.membersDirty = true;
          this.kick();
        }
        break;
    }
  }

  async start(self: SdNode, info: ClusterMessage, onEvent: EventHandler): Promise<void> {
    this.self = self;
    this.onEvent = onEvent;
    const joined = new Promise<void>((resolve, reject) => {
      this.joinedResolve = resolve;
      this.joinedReject = reject;
    });
    joined.catch(() => undefined); // fatal() may reject it before we await it
    await this.connect();
    try {
      await this.mkdirp(this.memberDir);
      await this.mkdirp(this.queueDir);
      await this.create(this.snapPath, Buffer.from(encodeMessage({ seq: -1, state: emptyFold() })), CreateMode.PERSISTENT).catch(
        (e) => {
          if (!isCode(e, Exception.NODE_EXISTS)) throw e;
        },
      );
      // our znode first, so nobody who reads our join entry can miss it
      this.memberPath = `${this.memberDir}/${nodeToString(self)}-${this.inst}`;
      await this.create(this.memberPath, Buffer.from(encodeMessage({ node: self, p: null })), CreateMode.EPHEMERAL);
      // catch up and clear out members that died while nobody watched, so
      // our join does not list ghosts
      await this.readNow();
      await this.enqueue({ t: 'join', inst: this.inst, node: self, info });
    } catch (e) {
      this.dead = true;
      this.client?.close();
      throw e instanceof Error ? e : new Error(String(e));
    }
    this.kick();
    this.timers.push(setInterval(() => {
      this.queueDirty = this.membersDirty = true;
      this.kick();
    }, POLL_EVERY_MS));
    this.timers.push(setInterval(() => void this.compact(), COMPACT_EVERY_MS));
    for (const t of this.timers) t.unref();
    await joined;
  }

  private fatal(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.progressTimer);
    clearTimeout(this.disconnectTimer);
    clearTimeout(this.giveUpTimer);
    this.deliverQ = [];
    this.client?.close();
    this.joinedReject?.(err);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.onFatal(err);
  }

  // ------------------------------------------------------------ the reader

  private kick(): void {
    if (this.reading || this.dead) return;
    this.reading = true;
    void (async () => {
      try {
        while ((this.queueDirty || this.membersDirty) && !this.dead) {
          if (this.queueDirty) {
            this.queueDirty = false;
            await this.readQueue();
          }
          if (this.membersDirty) {
            this.membersDirty = false;
            if (this.lastSeq !== undefined) await this.checkMembers();
          }
        }
      } catch (e) {
        if (!this.dead && !this.leaving) this.fatal(e instanceof FatalError ? e : new FatalError(`zookeeper driver: ${String(e)}`));
      } finally {
        this.reading = false;
        for (const r of this.readerIdle.splice(0)) r();
      }
    })();
  }

  /** One full read of the queue and the member list (used while joining). */
  private async readNow(): Promise<void> {
    while (this.reading) await new Promise<void>((r) => this.readerIdle.push(r));
    this.reading = true;
    try {
      this.queueDirty = false;
      await this.readQueue();
      this.membersDirty = false;
      await this.checkMembers();
    } finally {
      this.reading = false;
      for (const r of this.readerIdle.splice(0)) r();
      if (this.queueDirty || this.membersDirty) this.kick();
    }
  }

  private readonly queueWatcher = (): void => {
    this.queueDirty = true;
    this.kick();
  };

  private readonly memberWatcher = (): void => {
    this.membersDirty = true;
    this.kick();
  };

  /** Fold everything new in the queue; deliver from our own join on. */
  private async readQueue(): Promise<void> {
    for (;;) {
      let names: string[];
      if (this.lastSeq === undefined) {
        // catch up from the snapshot: snapshot, listing, snapshot again
        const a = await this.getData(this.snapPath);
        names = await this.getChildren(this.queueDir, this.queueWatcher);
        const b = await this.getData(this.snapPath);
        if (a.stat.version !== b.stat.version) continue;
        const snap = decodeMessage<{ seq: number; state: FoldState }>(a.data!.toString());
        this.state = cloneFold(snap.state);
        this.lastSeq = snap.seq;
      } else {
        names = await this.getChildren(this.queueDir, this.queueWatcher);
      }
      const from = this.lastSeq;
      const fresh = names
        .filter((n) => n.startsWith('ev-'))
        .map((n) => ({ n, seq: seqOf(n) }))
        .filter((x) => x.seq > from)
        .sort((x, y) => x.seq - y.seq);
      const datas = await Promise.all(
        fresh.map((x) => this.getData(`${this.queueDir}/${x.n}`).then((r) => r.data, (e) => (isCode(e, Exception.NO_NODE) ? null : Promise.reject(e)))),
      );
      for (let i = 0; i < fresh.length; i++) {
        const data = datas[i];
        if (data === null) {
          if (!this.joined) {
            // collected under us while we were catching up: start over
            this.lastSeq = undefined;
            break;
          }
          throw new FatalError(`queue entry ${fresh[i].n} vanished before this member read it`);
        }
        let e: QueueEntry;
        try {
          e = decodeMessage<QueueEntry>(data!.toString());
        } catch {
          log.err(`zookeeper driver: skipping unreadable queue entry ${fresh[i].n}`);
          this.lastSeq = fresh[i].seq;
          continue;
        }
        this.fold(e);
        this.lastSeq = fresh[i].seq;
        if (this.dead || this.leaving) return;
      }
      if (this.lastSeq === undefined) continue;
      this.scheduleProgress();
      return;
    }
  }

  private fold(e: QueueEntry): void {
    const evs = applyEntry(this.state, e);
    for (const k of [...this.leavesSent]) if (!this.state.members.some((m) => m.inst === k)) this.leavesSent.delete(k);
    if (!this.joined) {
      if (e.t === 'join' && e.inst === this.inst && evs.length) {
        this.joined = true;
        this.push(evs[evs.length - 1], undefined);
      }
      return;
    }
    if (!this.leaving && !this.state.members.some((m) => m.inst === this.inst)) {
      this.fatal(new FatalError('the cluster saw this node leave (lost its ZooKeeper session?)'));
      return;
    }
    for (const ev of evs) this.push(ev, e.t === 'msg' && e.inst === this.inst ? e.mid : undefined);
    // a retried notify whose first copy was delivered already
    if (!evs.length && e.t === 'msg' && e.inst === this.inst) this.push(undefined, e.mid);
  }

  /** Compare the fold with the live member znodes; enqueue leaves for the dead. */
  private async checkMembers(): Promise<void> {
    const names = await this.getChildren(this.memberDir, this.memberWatcher);
    const live = new Set(names.map((n) => n.slice(n.lastIndexOf('-') + 1)));
    if (!live.has(this.inst) && !this.leaving) {
      throw new FatalError('our member znode is gone (ZooKeeper session expired?)');
    }
    for (const m of this.state.members) {
      if (live.has(m.inst) || this.leavesSent.has(m.inst)) continue;
      this.leavesSent.add(m.inst);
      log.info(`zookeeper driver: ${nodeToString(m.node)} is gone, announcing its leave`);
      await this.enqueue({ t: 'leave', inst: m.inst, node: m.node });
    }
  }

  private scheduleProgress(): void {
    if (this.progressTimer || this.lastSeq === this.reportedSeq) return;
    this.progressTimer = setTimeout(() => {
      this.progressTimer = undefined;
      if (this.dead || this.leaving || this.lastSeq === undefined) return;
      const p = this.lastSeq;
      this.setData(this.memberPath, Buffer.from(encodeMessage({ node: this.self, p })))
        .then(() => {
          this.reportedSeq = p;
          if (this.lastSeq !== p) this.scheduleProgress();
        })
        .catch((e) => {
          if (!this.dead && !this.leaving) log.warn(`zookeeper driver: progress report failed: ${String(e)}`);
        });
    }, PROGRESS_EVERY_MS);
    this.progressTimer.unref();
  }

  // ------------------------------------------------------------ delivery

  private push(ev: ClusterEvent | undefined, mid: string | undefined): void {
    this.deliverQ.push(ev as ClusterEvent);
    this.deliverMids.push(mid);
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.delivering) return;
    this.delivering = true;
    try {
      while (this.deliverQ.length && !this.dead) {
        const ev = this.deliverQ.shift();
        const mid = this.deliverMids.shift();
        if (ev) {
          try {
            await this.onEvent(ev);
          } catch (e) {
            log.err(`cluster event handler failed: ${(e as Error).stack ?? e}`);
          }
          if (ev.type === 'join' && sameNode(ev.node, this.self) && this.joinedResolve) {
            this.joinedResolve();
            this.joinedResolve = undefined;
          }
        }
        if (mid !== undefined) {
          const p = this.pending.get(mid);
          this.pending.delete(mid);
          p?.resolve();
        }
      }
    } finally {
      this.delivering = false;
    }
  }

  // ------------------------------------------------------------ garbage collection

  /** The first member snapshots the fold and removes entries everyone has read. */
  private async compact(): Promise<void> {
    if (this.compacting || !this.joined || this.dead || this.leaving || this.lastSeq === undefined) return;
    if (this.state.members[0]?.inst !== this.inst || this.lastSeq === this.compactedAt) return;
    this.compacting = true;
    try {
      const upto = this.lastSeq;
      const state = cloneFold(this.state);
      const snap = await this.getData(this.snapPath);
      const cur = decodeMessage<{ seq: number }>(snap.data!.toString());
      let covered = cur.seq;
      if (upto > cur.seq) {
        try {
          await this.setData(this.snapPath, Buffer.from(encodeMessage({ seq: upto, state })), snap.stat.version);
          covered = upto;
        } catch (e) {
          if (isCode(e, Exception.BAD_VERSION)) return; // someone else moved it; next round
          throw e;
        }
      }
      // entries every live member (joining ones included) has read
      let min = covered;
      for (const n of await this.getChildren(this.memberDir)) {
        let d;
        try {
          d = await this.getData(`${this.memberDir}/${n}`);
        } catch (e) {
          if (isCode(e, Exception.NO_NODE)) continue;
          throw e;
        }
        const p = d.data ? decodeMessage<{ p: number | null }>(d.data.toString()).p : null;
        if (p === null || p === undefined) return;
        min = Math.min(min, p);
      }
      const names = await this.getChildren(this.queueDir);
      const doomed = names.filter((n) => n.startsWith('ev-') && seqOf(n) <= min);
      await Promise.all(doomed.map((n) => this.remove(`${this.queueDir}/${n}`)));
      // done until there is more to read, unless someone lagged behind
      this.compactedAt = min;
    } catch (e) {
      if (!this.dead && !this.leaving) log.warn(`zookeeper driver: queue compaction failed: ${String(e)}`);
    } finally {
      this.compacting = false;
    }
  }

  // ------------------------------------------------------------ the API

  notify(msg: ClusterMessage): Promise<void> {
    if (this.dead || !this.joined) return Promise.reject(new Error('zookeeper driver: not a cluster member'));
    const mid = `${this.inst}.${randomBytes(6).toString('hex')}`;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(mid, { resolve, reject });
      this.enqueue({ t: 'msg', inst: this.inst, node: this.self, mid, msg }).catch((e) => {
        if (this.dead) return; // fatal() rejected it already
        this.pending.delete(mid);
        reject(e instanceof Error ? e : new Error(String(e)));
      });
    });
  }

  async leave(): Promise<void> {
    if (this.leaving || this.dead) return;
    this.leaving = true;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.progressTimer);
    clearTimeout(this.disconnectTimer);
    clearTimeout(this.giveUpTimer);
    try {
      await this.enqueue({ t: 'leave', inst: this.inst, node: this.self });
      await this.remove(this.memberPath);
    } catch (e) {
      log.warn(`zookeeper driver: clean leave failed (${String(e)}); the session timeout will do it`);
    } finally {
      this.dead = true;
      this.deliverQ = [];
      this.client?.close();
    }
  }
}
