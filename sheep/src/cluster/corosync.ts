// "corosync" driver: sheep joins a CPG (closed process group) of the local
// corosync daemon, as upstream sheepdog's default driver did.
//
//   sheep -c corosync[:GROUP] ...     (GROUP defaults to "sheepdog")
//
// CPG delivers configuration changes (processes joining / leaving the group)
// and CPG_TYPE_AGREED messages to every group member in one agreed order
// (virtual synchrony). On top of that raw stream this driver builds the
// ClusterDriver stream — the same join / leave / message events, in the same
// order, on every member from its own join on — with a small deterministic
// protocol (CpgProtocol below, free of I/O so it can be tested alone):
//
// - Every CPG process is an entry in `cpg`, kept in CPG join order (the
//   order of the configuration changes; processes that join in the same
//   change are sorted by (nodeid, pid)). An entry is *synced* once it knows
//   the group state. The synced entries are always a prefix of `cpg`.
// - Right after its own join a process multicasts `hello` with its SdNode
//   and join info. A synced process that says hello becomes a member at once
//   (join event). The first processes of a brand-new group (a configuration
//   change in which everyone is new) are synced from the start: the state
//   is empty.
// - Anyone else needs the state. The *leader* (the first synced entry) welcomes
//   the first unsynced entry once its hello has been delivered: `welcome`
//   carries a snapshot of the state as of the leader's position. The
//   joiner buffers every raw event from its own join on; at the welcome it
//   takes the snapshot and replays the buffered events that came after the
//   snapshot's position. Everybody makes the welcomed process a member at
//   the welcome, which is therefore the joiner's first event.
// - If the leader dies, the next synced entry is leader and repeats any
//   welcome that was not delivered (CPG delivers a dead process's messages
//   either to all survivors, before its leave, or to none).
// - If every synced process is gone (say a two-node cluster loses its only
//   established member while the other is still being welcomed), the
//   first remaining process — it has no seniors left — welcomes itself
//   with the state it has seen since its own join, and carries on as leader
//   of a fresh group.
// - A leaving process (CPG_REASON_LEAVE, PROCDOWN when a sheep dies,
//   NODEDOWN when a whole machine's corosync goes away) that was a member
//   is a leave event.
//
// Partitions that heal (a configuration change with reason NODEUP merging two
// groups that went on separately) are not reconciled: the processes of the
// other side look like newcomers that are never welcomed; restart the sheep
// of the smaller side.
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SdNode, sameNode } from '@sheepdog/common';
import type { ClusterDriver, ClusterMessage, ClusterEvent, EventHandler } from './driver.js';
import { encodeMessage, decodeMessage } from './driver.js';
import { log } from '../log.js';

// ------------------------------------------------------------ the protocol

/** A CPG process, `nodeid:pid`. */
export type CpgId = string;
export interface CpgAddr { nodeid: number; pid: number; reason?: number }
export const cpgId = (a: CpgAddr): CpgId => `${a.nodeid}:${a.pid}`;

export type Confchg = { members: CpgAddr[]; left: CpgAddr[]; joined: CpgAddr[] };

/** Messages this driver multicasts. */
export type Wire =
  | { k: 'hello'; node: SdNode; info: ClusterMessage }
  | { k: 'welcome'; to: CpgId; snap: Fold }
  | { k: 'msg'; mid: string; msg: ClusterMessage };

type Raw = { kind: 'conf'; c: Confchg } | { kind: 'msg'; from: CpgId; m: Wire };

interface Entry {
  id: CpgId;
  /** position (Fold.seq) of the configuration change that brought it in */
  joinSeq: number;
  synced: boolean;
  /** from its hello; `info` is dropped once it is a member */
  node?: SdNode;
  info?: ClusterMessage;
}

/** The group state every synced process agrees on. */
export interface Fold {
  /** raw events folded so far */
  seq: number;
  cpg: Entry[];
  /** members in join order */
  members: { id: CpgId; node: SdNode }[];
}

export interface Delivery {
  ev: ClusterEvent;
  /** set on a join event: the joiner's id */
  who?: CpgId;
  /** set on a message event: the sender's id and the message id */
  from?: CpgId;
  mid?: string;
}

const byAddr = (a: CpgAddr, b: CpgAddr) => a.nodeid - b.nodeid || a.pid - b.pid;
export const REASON = { JOIN: 1, LEAVE: 2, NODEDOWN: 3, NODEUP: 4, PROCDOWN: 5 } as const;
const reasonName = (r?: number) => ['undefined', 'join', 'leave', 'node down', 'node up', 'process down'][r ?? 0] ?? String(r);

/** Fold one raw event into `f`; returns the driver events it makes. */
function fold(f: Fold, r: Raw): Delivery[] {
  f.seq++;
  const out: Delivery[] = [];
  if (r.kind === 'conf') {
    for (const a of r.c.left) {
      const id = cpgId(a);
      f.cpg = f.cpg.filter((e) => e.id !== id);
      const i = f.members.findIndex((m) => m.id === id);
      if (i >= 0) {
        const [gone] = f.members.splice(i, 1);
        out.push({ ev: { type: 'leave', node: gone.node, members: f.members.map((m) => m.node) } });
      }
    }
    const joinedIds = new Set(r.c.joined.map(cpgId));
    const fresh = r.c.members.every((a) => joinedIds.has(cpgId(a)));
    for (const a of [...r.c.joined].sort(byAddr)) {
      const id = cpgId(a);
      if (!f.cpg.some((e) => e.id === id)) f.cpg.push({ id, joinSeq: f.seq, synced: fresh });
    }
    return out;
  }
  const m = r.m;
  switch (m.k) {
    case 'hello': {
      const e = f.cpg.find((x) => x.id === r.from);
      if (!e || e.node) return out;
      e.node = m.node;
      e.info = m.info;
      if (e.synced) admit(f, e, out);
      break;
    }
    case 'welcome': {
      const e = f.cpg.find((x) => x.id === m.to);
      if (!e || e.synced) return out;
      e.synced = true;
      if (e.node) admit(f, e, out);
      break;
    }
    case 'msg': {
      const from = f.members.find((x) => x.id === r.from);
      if (from) out.push({ ev: { type: 'message', from: from.node, msg: m.msg }, from: r.from, mid: m.mid });
      break;
    }
  }
  return out;
}

function admit(f: Fold, e: Entry, out: Delivery[]): void {
  const node = e.node!;
  // the same sheep again (restarted before its old process was seen to go)
  const old = f.members.findIndex((m) => sameNode(m.node, node));
  if (old >= 0) {
    const [gone] = f.members.splice(old, 1);
    out.push({ ev: { type: 'leave', node: gone.node, members: f.members.map((m) => m.node) } });
  }
  f.members.push({ id: e.id, node });
  out.push({ ev: { type: 'join', node, info: e.info ?? { t: 'none' }, members: f.members.map((m) => m.node) }, who: e.id });
  e.info = undefined;
}

const emptyFold = (): Fold => ({ seq: 0, cpg: [], members: [] });
const cloneFold = (f: Fold): Fold => decodeMessage<Fold>(encodeMessage(f));

/**
 * The driver's protocol over a CPG-like stream, without I/O: feed it the
 * configuration changes and messages in delivery order; it calls `send` to
 * multicast and `deliver` with the driver events to hand to the member.
 */
export class CpgProtocol {
  private f?: Fold;
  /** raw events since our own join, kept until we are synced */
  private buf: Raw[] = [];
  private joinedCpg = false;
  private seniors = new Set<CpgId>();
  private selfWelcomed = false;
  /** joiners we sent a welcome to, as leader */
  private welcomed = new Set<CpgId>();
  /** our own join event has been delivered */
  member = false;

  constructor(
    readonly selfId: CpgId,
    private readonly self: SdNode,
    private readonly info: ClusterMessage,
    private readonly send: (m: Wire) => void,
    private readonly deliver: (d: Delivery) => void,
  ) {}

  get synced(): boolean {
    return this.f !== undefined;
  }

  /** Members as this process currently knows them (synced processes only). */
  members(): SdNode[] {
    return this.f?.members.map((m) => m.node) ?? [];
  }

  onConfchg(c: Confchg): void {
    this.onRaw({ kind: 'conf', c });
  }

  onMessage(from: CpgAddr | CpgId, m: Wire): void {
    this.onRaw({ kind: 'msg', from: typeof from === 'string' ? from : cpgId(from), m });
  }

  private onRaw(r: Raw): void {
    if (!this.joinedCpg) {
      // nothing before our own join concerns us
      if (r.kind !== 'conf' || !r.c.joined.some((a) => cpgId(a) === this.selfId)) return;
      this.joinedCpg = true;
      const joinedIds = new Set(r.c.joined.map(cpgId));
      const fresh = r.c.members.every((a) => joinedIds.has(cpgId(a)));
      for (const a of r.c.members) if (!joinedIds.has(cpgId(a))) this.seniors.add(cpgId(a));
      for (const a of [...r.c.joined].sort(byAddr)) {
        if (cpgId(a) === this.selfId) break;
        this.seniors.add(cpgId(a));
      }
      if (fresh) {
        this.f = emptyFold();
        this.apply(r);
      } else {
        this.buf.push(r);
      }
      this.send({ k: 'hello', node: this.self, info: this.info });
      return;
    }
    if (this.f) {
      this.apply(r);
      this.lead();
      return;
    }
    // not synced yet: keep everything until the welcome
    this.buf.push(r);
    if (r.kind === 'msg' && r.m.k === 'welcome' && r.m.to === this.selfId) {
      this.sync(r.m.snap);
      return;
    }
    if (r.kind === 'conf') {
      for (const a of r.c.left) this.seniors.delete(cpgId(a));
      if (this.seniors.size === 0 && !this.selfWelcomed) {
        // Nobody who knows the group state is left: start afresh, as the
        // first process of a new group, from what we saw since our join.
        this.selfWelcomed = true;
        const f = emptyFold();
        for (const x of this.buf) fold(f, x);
        log.warn(`corosync driver: no established member left to welcome this node; starting a new group`);
        this.send({ k: 'welcome', to: this.selfId, snap: f });
      }
    }
  }

  /** Take the welcome's snapshot and replay what we buffered after its position. */
  private sync(snap: Fold): void {
    const f = cloneFold(snap);
    const me = f.cpg.find((e) => e.id === this.selfId);
    if (!me) throw new Error(`corosync driver: welcome snapshot does not list this process (${this.selfId})`);
    // buf[i] is raw event number me.joinSeq + i in the snapshot's numbering
    const from = snap.seq - me.joinSeq + 1;
    if (from < 0) throw new Error(`corosync driver: welcome snapshot predates this process's join`);
    this.f = f;
    const rest = this.buf.slice(from);
    this.buf = [];
    for (const r of rest) this.apply(r);
    if (!this.member) throw new Error('corosync driver: welcomed but not admitted');
    this.lead();
  }

  private apply(r: Raw): void {
    for (const d of fold(this.f!, r)) {
      if (!this.member) {
        // events before our own join are not ours
        if (d.who !== this.selfId) continue;
        this.member = true;
      }
      this.deliver(d);
    }
  }

  /** As leader, welcome the first process that is still waiting. */
  private lead(): void {
    const f = this.f!;
    const leader = f.cpg.find((e) => e.synced);
    if (!leader || leader.id !== this.selfId) return;
    for (const id of this.welcomed) if (!f.cpg.some((e) => e.id === id && !e.synced)) this.welcomed.delete(id);
    const head = f.cpg.find((e) => !e.synced);
    if (!head || !head.node || this.welcomed.has(head.id)) return;
    this.welcomed.add(head.id);
    this.send({ k: 'welcome', to: head.id, snap: cloneFold(f) });
  }
}

// ------------------------------------------------------------ the native side

interface NativeEvent {
  type: 'deliver' | 'confchg';
  nodeid: number;
  pid: number;
  data: Buffer;
  members: CpgAddr[];
  left: CpgAddr[];
  joined: CpgAddr[];
}

interface NativeCpg {
  initialize(): number;
  join(group: string): number;
  leave(group: string): number;
  mcast(b: Buffer): number;
  localNodeId(): [number, number | null];
  membership(group: string): [number, CpgAddr[] | null];
  finalize(): number;
}

interface CpgModule {
  Cpg: new (cb: (events: NativeEvent[], err: number | null) => void) => NativeCpg;
  codes: Record<string, number>;
}

const CS = { OK: 1, ERR_LIBRARY: 2, ERR_TRY_AGAIN: 6, ERR_BAD_HANDLE: 9, ERR_ACCESS: 11, ERR_NOT_EXIST: 12, ERR_EXIST: 14, ERR_SECURITY: 100 };
const CS_NAMES: Record<number, string> = {
  1: 'CS_OK', 2: 'CS_ERR_LIBRARY', 3: 'CS_ERR_VERSION', 4: 'CS_ERR_INIT', 5: 'CS_ERR_TIMEOUT', 6: 'CS_ERR_TRY_AGAIN',
  7: 'CS_ERR_INVALID_PARAM', 8: 'CS_ERR_NO_MEMORY', 9: 'CS_ERR_BAD_HANDLE', 10: 'CS_ERR_BUSY', 11: 'CS_ERR_ACCESS',
  12: 'CS_ERR_NOT_EXIST', 13: 'CS_ERR_NAME_TOO_LONG', 14: 'CS_ERR_EXIST', 15: 'CS_ERR_NO_SPACE', 18: 'CS_ERR_NO_RESOURCES',
  23: 'CS_ERR_QUEUE_FULL', 26: 'CS_ERR_TOO_BIG', 100: 'CS_ERR_SECURITY',
};
const csName = (c: number) => CS_NAMES[c] ?? `cs_error ${c}`;

/** Where the addon is built (sheep/native/cpg/build/Release/cpg.node). */
export const ADDON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../native/cpg/build/Release/cpg.node');

let cpgModule: CpgModule | undefined;

/** Load the native addon, or throw one sentence saying why it cannot be. */
export function loadCpg(): CpgModule {
  if (cpgModule) return cpgModule;
  if (!existsSync(ADDON_PATH)) {
    const why = existsSync('/usr/include/corosync/cpg.h')
      ? 'run `npm run build` (or `npm run build:native -w @sheepdog/sheep`) to build it'
      : "install corosync's development files (Debian: apt-get install libcpg-dev) and run `npm run build`";
    throw new Error(`the corosync driver is not available: its native addon ${ADDON_PATH} was not built (${why})`);
  }
  try {
    cpgModule = createRequire(import.meta.url)(ADDON_PATH) as CpgModule;
  } catch (e) {
    throw new Error(`the corosync driver is not available: cannot load ${ADDON_PATH} (is libcpg installed? Debian: apt-get install libcpg4): ${(e as Error).message}`);
  }
  return cpgModule;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Validate `-c corosync[:GROUP]`'s GROUP. */
export function parseCorosyncArgs(args: string): { group: string } {
  const group = args || 'sheepdog';
  if (!/^[\w.\-]{1,100}$/.test(group)) throw new Error(`invalid corosync group name '${group}' (usage: -c corosync[:GROUP], GROUP of letters, digits, '.', '_' or '-')`);
  return { group };
}

const TRY_AGAIN_LIMIT_MS = 30_000;

export class CorosyncDriver implements ClusterDriver {
  readonly name = 'corosync';
  readonly group: string;
  /**
   * Called once if this member is cut off from the group (the local corosync
   * went away). Default: log and exit the process, as upstream sheep did.
   */
  onFatal: (err: Error) => void = (err) => {
    log.err(`corosync driver: ${err.message}; exiting`);
    process.stderr.write(`sheep: corosync driver: ${err.message}; exiting\n`);
    setTimeout(() => process.exit(1), 100);
  };

  private cpg?: NativeCpg;
  private proto?: CpgProtocol;
  private onEvent!: EventHandler;
  private nodeid = 0;
  private queue: Delivery[] = [];
  private delivering = false;
  private pending = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
  private sendQ: Buffer[] = [];
  private sending = false;
  private joinedResolve?: () => void;
  private joinedReject?: (e: Error) => void;
  private leftResolve?: () => void;
  private leaving = false;
  private dead = false;

  constructor(args: string) {
    this.group = parseCorosyncArgs(args).group;
    loadCpg(); // fail now, with the reason, if the addon is missing
  }

  /** Retry a CPG call while corosync says CS_ERR_TRY_AGAIN (with a backoff). */
  private async retry(what: string, call: () => number): Promise<number> {
    const end = Date.now() + TRY_AGAIN_LIMIT_MS;
    for (let delay = 2; ; delay = Math.min(delay * 2, 200)) {
      const rc = call();
      if (rc !== CS.ERR_TRY_AGAIN) return rc;
      if (Date.now() > end) throw new Error(`${what}: corosync kept answering CS_ERR_TRY_AGAIN for ${TRY_AGAIN_LIMIT_MS / 1000} s`);
      await sleep(delay);
    }
  }

  async start(self: SdNode, info: ClusterMessage, onEvent: EventHandler): Promise<void> {
    this.onEvent = onEvent;
    const mod = loadCpg();
    const cpg = new mod.Cpg((evs, err) => this.onNative(evs, err));
    let rc = await this.retry('cpg_initialize', () => cpg.initialize());
    if (rc === CS.ERR_ACCESS || rc === CS.ERR_SECURITY) {
      const uid = process.getuid?.() ?? -1;
      throw new Error(
        `corosync refused this process (uid ${uid}, ${csName(rc)}): corosync lets only root use CPG unless corosync.conf has a ` +
          `'uidgid { uid: USER }' (or gid) entry for the user sheep runs as`,
      );
    }
    if (rc !== CS.OK) {
      throw new Error(`cannot connect to corosync (${csName(rc)}): is corosync running on this machine? (sheep -c corosync needs a local corosync daemon)`);
    }
    this.cpg = cpg;
    const [lrc, nodeid] = cpg.localNodeId();
    if (lrc !== CS.OK || nodeid === null) {
      this.close();
      throw new Error(`cpg_local_get failed: ${csName(lrc)}`);
    }
    this.nodeid = nodeid;
    const selfId = cpgId({ nodeid, pid: process.pid });
    this.proto = new CpgProtocol(selfId, self, info, (m) => this.mcast(m), (d) => this.enqueue(d));
    const joined = new Promise<void>((resolve, reject) => {
      this.joinedResolve = resolve;
      this.joinedReject = reject;
    });
    joined.catch(() => undefined);
    rc = await this.retry('cpg_join', () => cpg.join(this.group));
    if (rc !== CS.OK) {
      this.close();
      throw new Error(`cannot join corosync process group '${this.group}': ${csName(rc)}`);
    }
    log.info(`corosync driver: joined CPG group '${this.group}' as ${selfId} (corosync node ${nodeid})`);
    await joined;
  }

  private onNative(evs: NativeEvent[], err: number | null): void {
    try {
      for (const e of evs) {
        if (this.dead) return;
        if (e.type === 'confchg') {
          const self = e.left.find((a) => a.nodeid === this.nodeid && a.pid === process.pid);
          if (self) {
            // our own leave
            this.leftResolve?.();
            if (!this.leaving) this.fatal(new Error(`corosync removed this process from the group (${reasonName(self.reason)})`));
            return;
          }
          for (const a of e.left) log.info(`corosync driver: ${cpgId(a)} left the group (${reasonName(a.reason)})`);
          if (e.joined.some((a) => a.reason === REASON.NODEUP)) log.warn('corosync driver: corosync merged a partition back (NODEUP); those processes are not readmitted');
          this.proto!.onConfchg({ members: e.members, left: e.left, joined: e.joined });
        } else {
          let m: Wire;
          try {
            m = decodeMessage<Wire>(e.data.toString('utf8'));
          } catch {
            log.warn(`corosync driver: undecodable message from ${e.nodeid}:${e.pid}`);
            continue;
          }
          this.proto!.onMessage({ nodeid: e.nodeid, pid: e.pid }, m);
        }
      }
      if (err !== null) this.fatal(new Error(`lost the connection to corosync (${csName(err)})`));
    } catch (e) {
      this.fatal(e as Error);
    }
  }

  private mcast(m: Wire): void {
    this.sendQ.push(Buffer.from(encodeMessage(m), 'utf8'));
    void this.pumpSend();
  }

  /** Multicast in order, retrying CS_ERR_TRY_AGAIN (corosync's flow control). */
  private async pumpSend(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      while (this.sendQ.length && !this.dead && this.cpg) {
        const b = this.sendQ[0];
        const rc = await this.retry('cpg_mcast_joined', () => (this.cpg ? this.cpg.mcast(b) : CS.ERR_BAD_HANDLE));
        if (rc !== CS.OK) {
          if (this.leaving) return;
          throw new Error(`cpg_mcast_joined failed: ${csName(rc)}`);
        }
        this.sendQ.shift();
      }
    } catch (e) {
      this.fatal(e as Error);
    } finally {
      this.sending = false;
    }
  }

  private enqueue(d: Delivery): void {
    if (this.leaving) return;
    this.queue.push(d);
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.delivering) return;
    this.delivering = true;
    try {
      while (this.queue.length && !this.dead) {
        const d = this.queue.shift()!;
        try {
          await this.onEvent(d.ev);
        } catch (e) {
          log.err(`cluster event handler failed: ${(e as Error).stack ?? e}`);
        }
        if (d.who !== undefined && d.who === this.proto?.selfId) {
          // our own join (the first event we deliver)
          this.joinedResolve?.();
          this.joinedResolve = undefined;
        }
        if (d.mid && d.from === this.proto?.selfId) {
          const p = this.pending.get(d.mid);
          if (p) {
            this.pending.delete(d.mid);
            p.resolve();
          }
        }
      }
    } finally {
      this.delivering = false;
    }
  }

  notify(msg: ClusterMessage): Promise<void> {
    if (this.dead) return Promise.reject(new Error('corosync driver: not connected'));
    const mid = randomBytes(8).toString('hex');
    return new Promise((resolve, reject) => {
      this.pending.set(mid, { resolve, reject });
      this.mcast({ k: 'msg', mid, msg });
    });
  }

  async leave(): Promise<void> {
    if (this.leaving || !this.cpg) return;
    this.leaving = true;
    this.queue = [];
    const left = new Promise<void>((r) => (this.leftResolve = r));
    // let queued multicasts go out first
    for (let i = 0; i < 100 && this.sendQ.length && !this.dead; i++) await sleep(10);
    try {
      const rc = await this.retry('cpg_leave', () => (this.cpg ? this.cpg.leave(this.group) : CS.ERR_BAD_HANDLE));
      if (rc === CS.OK) await Promise.race([left, sleep(2000)]);
    } finally {
      this.close();
    }
  }

  private close(): void {
    const c = this.cpg;
    this.cpg = undefined;
    c?.finalize();
  }

  private fatal(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    this.queue = [];
    this.close();
    this.joinedReject?.(err);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    if (!this.leaving) this.onFatal(err);
  }

  /** For diagnostics: this process's CPG id and the group as corosync sees it. */
  membership(): { self: CpgId; cpg: CpgId[] } | undefined {
    if (!this.cpg || !this.proto) return undefined;
    const [rc, list] = this.cpg.membership(this.group);
    return rc === CS.OK && list ? { self: this.proto.selfId, cpg: list.map(cpgId) } : undefined;
  }
}
