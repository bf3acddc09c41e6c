// "local" driver: any number of sheep on one machine, nothing else needed.
//
// One member acts as sequencer: it holds a Linux abstract unix socket
// (`\0sheepdog-local/<id>`), which the kernel releases the moment its
// process dies — so a crashed sequencer never leaves a stale lock. Every
// member (the sequencer included) connects to it; the sequencer numbers
// joins, leaves and messages and sends them to everyone in that order. A
// closed connection is a leave. When the sequencer dies the survivors race
// to bind the name; the winner collects what each survivor has seen,
// re-sends what some missed, announces the leaves, and carries on.
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';
import { SdNode, sameNode, nodeToString } from '@sheepdog/common';
import type { ClusterDriver, ClusterMessage, ClusterEvent, EventHandler } from './driver.js';
import { encodeMessage, decodeMessage } from './driver.js';
import { log } from '../log.js';
import { lineReader } from '../util.js';

interface WireEvent {
  seq: number;
  type: 'join' | 'leave' | 'message';
  node: SdNode; // joiner, leaver or sender
  members: SdNode[];
  info?: ClusterMessage;
  msg?: ClusterMessage;
  mid?: string;
}

type ToCoord =
  | { op: 'hello'; node: SdNode; info: ClusterMessage; member: boolean; lastSeq: number; members: SdNode[]; tail: WireEvent[]; pending: { mid: string; msg: ClusterMessage }[] }
  | { op: 'notify'; mid: string; msg: ClusterMessage }
  | { op: 'leave' };

type FromCoord = { op: 'event'; ev: WireEvent } | { op: 'coord'; node: SdNode };

const TAIL = 512;
const RESYNC_WAIT_MS = 1000;

const send = (sock: net.Socket, o: unknown) => { if (!sock.destroyed) sock.write(encodeMessage(o) + '\n'); };

/** The sequencer, living inside whichever sheep won the name. */
class Sequencer {
  private server?: net.Server;
  private members: { node: SdNode; sock: net.Socket }[] = [];
  private seq = 0;
  private log = new Map<number, WireEvent>();
  private seenMids = new Set<string>();
  private resyncing: boolean;
  private early: { sock: net.Socket; m: ToCoord }[] = [];
  private resyncHellos = new Map<string, { sock: net.Socket; m: Extract<ToCoord, { op: 'hello' }> }>();

  constructor(private readonly self: SdNode, private readonly expected: SdNode[], lastSeq: number, tail: WireEvent[]) {
    this.resyncing = expected.length > 0;
    this.seq = lastSeq;
    for (const e of tail) this.record(e);
  }

  static tryBind(name: string): Promise<net.Server | undefined> {
    return new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' ? resolve(undefined) : reject(e)));
      srv.listen(name, () => resolve(srv));
    });
  }

  attach(srv: net.Server): void {
    this.server = srv;
    srv.on('connection', (sock) => {
      lineReader(sock, (line) => this.onLine(sock, decodeMessage<ToCoord>(line)));
      sock.on('close', () => this.onClose(sock));
      sock.on('error', () => undefined);
    });
    if (this.resyncing) setTimeout(() => this.finishResync(), RESYNC_WAIT_MS).unref();
  }

  private record(e: WireEvent): void {
    this.log.set(e.seq, e);
    if (e.mid) this.seenMids.add(e.mid);
    if (this.log.size > TAIL * 4) {
      const cut = e.seq - TAIL * 2;
      for (const k of this.log.keys()) if (k < cut) this.log.delete(k);
    }
  }

  private emit(e: Omit<WireEvent, 'seq' | 'members'>): void {
    const ev: WireEvent = { ...e, seq: ++this.seq, members: this.members.map((m) => m.node) };
    this.record(ev);
    for (const m of this.members) send(m.sock, { op: 'event', ev } satisfies FromCoord);
  }

  private onLine(sock: net.Socket, m: ToCoord): void {
    if (this.resyncing) {
      if (m.op === 'hello' && m.member) {
        this.resyncHellos.set(nodeToString(m.node), { sock, m });
        const all = this.expected.every((n) => this.resyncHellos.has(nodeToString(n)));
        if (all) this.finishResync();
      } else {
        this.early.push({ sock, m });
      }
      return;
    }
    switch (m.op) {
      case 'hello': {
        if (m.member) {
          // A member we did not expect (it lost its sequencer and found us
          // late): it rejoins as a new member from its point of view.
          log.warn(`local driver: late member ${nodeToString(m.node)} rejoins`);
        }
        this.members = this.members.filter((x) => !sameNode(x.node, m.node));
        this.members.push({ node: m.node, sock });
        send(sock, { op: 'coord', node: this.self } satisfies FromCoord);
        this.emit({ type: 'join', node: m.node, info: m.info });
        // What it sent that no sequencer ordered: as for the members that
        // came back in time (finishResync), or its senders wait for good.
        for (const p of m.member ? m.pending : []) {
          if (this.seenMids.has(p.mid)) continue;
          this.emit({ type: 'message', node: m.node, msg: p.msg, mid: p.mid });
        }
        break;
      }
      case 'notify': {
        const from = this.members.find((x) => x.sock === sock);
        if (!from || this.seenMids.has(m.mid)) return;
        this.emit({ type: 'message', node: from.node, msg: m.msg, mid: m.mid });
        break;
      }
      case 'leave': {
        const i = this.members.findIndex((x) => x.sock === sock);
        if (i < 0) return;
        const [gone] = this.members.splice(i, 1);
        this.emit({ type: 'leave', node: gone.node });
        sock.end();
        break;
      }
    }
  }

  private onClose(sock: net.Socket): void {
    if (this.resyncing) {
      for (const [k, v] of this.resyncHellos) if (v.sock === sock) this.resyncHellos.delete(k);
      return;
    }
    const i = this.members.findIndex((x) => x.sock === sock);
    if (i < 0) return;
    const [gone] = this.members.splice(i, 1);
    log.info(`local driver: ${nodeToString(gone.node)} left`);
    this.emit({ type: 'leave', node: gone.node });
  }

  /** Bring every survivor to the same point, then announce who is gone. */
  private finishResync(): void {
    if (!this.resyncing) return;
    this.resyncing = false;
    const hellos = [...this.resyncHellos.values()];
    for (const h of hellos) for (const e of h.m.tail) this.record(e);
    let maxSeq = this.seq;
    for (const h of hellos) maxSeq = Math.max(maxSeq, h.m.lastSeq);
    // the member list as of the newest event anyone saw
    let base = this.expected;
    const newest = this.log.get(maxSeq);
    if (newest) base = newest.members;
    this.seq = maxSeq;
    // members in their old order, survivors only
    this.members = [];
    for (const n of base) {
      const h = hellos.find((x) => sameNode(x.m.node, n));
      if (h) this.members.push({ node: n, sock: h.sock });
    }
    // a "member" no event ever reached is a joiner (its join got lost with the old sequencer)
    const joiners = hellos.filter((h) => !h.m.lastSeq && !this.members.some((x) => x.sock === h.sock));
    for (const h of hellos) {
      if (joiners.includes(h)) continue;
      if (!this.members.some((x) => x.sock === h.sock)) this.members.push({ node: h.m.node, sock: h.sock });
      send(h.sock, { op: 'coord', node: this.self } satisfies FromCoord);
      for (let s = h.m.lastSeq + 1; s <= maxSeq; s++) {
        const ev = this.log.get(s);
        if (ev) send(h.sock, { op: 'event', ev } satisfies FromCoord);
        else log.err(`local driver: event ${s} lost during sequencer change`);
      }
    }
    for (const n of base) {
      if (!this.members.some((x) => sameNode(x.node, n))) {
        log.info(`local driver: ${nodeToString(n)} did not come back`);
        this.emit({ type: 'leave', node: n });
      }
    }
    for (const h of hellos) {
      if (joiners.includes(h)) continue;
      for (const p of h.m.pending) {
        if (this.seenMids.has(p.mid)) continue;
        this.emit({ type: 'message', node: h.m.node, msg: p.msg, mid: p.mid });
      }
    }
    for (const h of joiners) this.onLine(h.sock, { ...h.m, member: false });
    for (const { sock, m } of this.early.splice(0)) this.onLine(sock, m);
  }

  close(): void {
    this.server?.close();
    for (const m of this.members) m.sock.destroy();
  }
}

export class LocalDriver implements ClusterDriver {
  readonly name = 'local';
  private readonly sockName: string;
  private self!: SdNode;
  private info!: ClusterMessage;
  private onEvent!: EventHandler;
  private sock?: net.Socket;
  private seq?: Sequencer;
  private lastSeq = 0;
  private joined = false;
  private leaving = false;
  private members: SdNode[] = [];
  private coord?: SdNode;
  private tail: WireEvent[] = [];
  private pending = new Map<string, { msg: ClusterMessage; resolve: () => void }>();
  private queue: WireEvent[] = [];
  private delivering = false;
  private joinedResolve?: () => void;

  constructor(args: string) {
    const id = args || 'default';
    if (!/^[\w.\-/]+$/.test(id)) throw new Error(`invalid local cluster id '${id}'`);
    this.sockName = `\0sheepdog-local/${id}`;
  }

  async start(self: SdNode, info: ClusterMessage, onEvent: EventHandler): Promise<void> {
    this.self = self;
    this.info = info;
    this.onEvent = onEvent;
    const joined = new Promise<void>((r) => (this.joinedResolve = r));
    await this.connect(false);
    await joined;
  }

  /** Bind the name (becoming sequencer) or connect to whoever holds it. */
  private async connect(member: boolean): Promise<void> {
    const expected = member ? this.members.filter((n) => !this.coord || !sameNode(n, this.coord)) : [];
    for (let attempt = 0; ; attempt++) {
      const srv = await Sequencer.tryBind(this.sockName);
      if (srv) {
        this.seq = new Sequencer(this.self, expected, member ? this.lastSeq : 0, this.tail);
        this.seq.attach(srv);
        log.info(`local driver: this node sequences the cluster`);
      }
      try {
        const s = await new Promise<net.Socket>((resolve, reject) => {
          const c = net.connect(this.sockName);
          c.once('connect', () => resolve(c));
          c.once('error', reject);
        });
        this.attachSocket(s, member);
        return;
      } catch (e) {
        if (attempt > 500) throw new Error(`local driver: cannot reach the cluster: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 10 + Math.random() * 20));
      }
    }
  }

  private attachSocket(s: net.Socket, member: boolean): void {
    this.sock = s;
    lineReader(s, (line) => this.onLine(decodeMessage<FromCoord>(line)));
    s.on('error', () => undefined);
    s.on('close', () => {
      if (this.sock !== s || this.leaving) return;
      this.sock = undefined;
      log.warn('local driver: lost the sequencer, electing a new one');
      this.seq = undefined;
      // A node whose join no sequencer announced is not a member: it asks
      // to join again. As a "member" it would be counted in by the new
      // sequencer without a join event, and wait for its own join for good
      // while the others waited for it (chaos seed 5101: every recovery
      // waited for its object list, and every request behind them, 150 s).
      this.connect(this.joined).catch((e) => log.err(String(e)));
    });
    const hello: ToCoord = {
      op: 'hello', node: this.self, info: this.info, member, lastSeq: this.lastSeq, members: this.members,
      tail: this.tail, pending: [...this.pending].map(([mid, p]) => ({ mid, msg: p.msg })),
    };
    send(s, hello);
  }

  private onLine(m: FromCoord): void {
    if (m.op === 'coord') {
      this.coord = m.node;
      return;
    }
    const ev = m.ev;
    if (ev.seq <= this.lastSeq) return;
    if (!this.joined) {
      // nothing before our own join concerns us
      if (!(ev.type === 'join' && sameNode(ev.node, this.self))) return;
      this.joined = true;
    }
    this.lastSeq = ev.seq;
    this.members = ev.members;
    this.tail.push(ev);
    if (this.tail.length > TAIL) this.tail.splice(0, this.tail.length - TAIL);
    this.queue.push(ev);
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.delivering) return;
    this.delivering = true;
    try {
      while (this.queue.length) {
        const ev = this.queue.shift()!;
        let ce: ClusterEvent;
        if (ev.type === 'join') ce = { type: 'join', node: ev.node, info: ev.info ?? { t: 'none' }, members: ev.members };
        else if (ev.type === 'leave') ce = { type: 'leave', node: ev.node, members: ev.members };
        else ce = { type: 'message', from: ev.node, msg: ev.msg! };
        try {
          await this.onEvent(ce);
        } catch (e) {
          log.err(`cluster event handler failed: ${(e as Error).stack ?? e}`);
        }
        if (ev.type === 'join' && sameNode(ev.node, this.self)) this.joinedResolve?.();
        if (ev.mid && this.pending.has(ev.mid)) {
          const p = this.pending.get(ev.mid)!;
          this.pending.delete(ev.mid);
          p.resolve();
        }
      }
    } finally {
      this.delivering = false;
    }
  }

  notify(msg: ClusterMessage): Promise<void> {
    if (!this.joined || this.leaving) return Promise.reject(new Error('local driver: not a cluster member'));
    const mid = randomBytes(8).toString('hex');
    return new Promise((resolve) => {
      this.pending.set(mid, { msg, resolve });
      if (this.sock) send(this.sock, { op: 'notify', mid, msg } satisfies ToCoord);
      // otherwise the hello after reconnection carries it
    });
  }

  async leave(): Promise<void> {
    if (this.leaving) return;
    this.leaving = true;
    if (this.sock) {
      send(this.sock, { op: 'leave' } satisfies ToCoord);
      await new Promise((r) => setTimeout(r, 50));
      this.sock.destroy();
    }
    // if we were sequencing, the survivors elect a new sequencer
    this.seq?.close();
  }
}
