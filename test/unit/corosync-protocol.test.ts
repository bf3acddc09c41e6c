// The corosync driver's protocol (CpgProtocol) over a simulated CPG: one
// agreed order of configuration changes and messages delivered to every
// process in the group, with processes joining, sending and dying at random
// points (including while they are being welcomed, and the leader itself).
// Every member must see the same event stream from its own join on.
import { describe, it, expect } from 'vitest';
import { makeNode, SdNode } from '@sheepdog/common';
import { CpgProtocol, Delivery, Wire, cpgId, CpgAddr } from '../../sheep/src/cluster/corosync.js';
import { encodeMessage, decodeMessage, type ClusterEvent } from '../../sheep/src/cluster/driver.js';

type Simple = { type: 'join' | 'leave'; node: number; members: number[] } | { type: 'message'; from: number; msg: unknown };
const simple = (e: ClusterEvent): Simple =>
  e.type === 'message'
    ? { type: 'message', from: e.from.port, msg: e.msg }
    : { type: e.type, node: e.node.port, members: e.members.map((m: SdNode) => m.port) };

class Proc {
  readonly addr: CpgAddr;
  readonly id: string;
  readonly node: SdNode;
  readonly events: Simple[] = [];
  readonly outbox: Wire[] = [];
  readonly proto: CpgProtocol;
  inGroup = false;
  dead = false;
  constructor(nodeid: number, pid: number) {
    this.addr = { nodeid, pid };
    this.id = cpgId(this.addr);
    this.node = makeNode('127.0.0.1', pid);
    this.proto = new CpgProtocol(this.id, this.node, { t: 'hello', pid }, (m) => this.outbox.push(m), (d: Delivery) => this.events.push(simple(d.ev)));
  }
}

/** A tiny deterministic PRNG. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 2 ** 32;
  };
}

class SimCpg {
  group: Proc[] = [];
  all: Proc[] = [];
  private nextPid = 100;
  constructor(private readonly rand: () => number, private readonly nodes = 3) {}

  private confchg(joined: Proc[], left: Proc[], reason: number): void {
    for (const p of left) p.inGroup = false;
    this.group = this.group.filter((p) => !left.includes(p));
    for (const p of joined) p.inGroup = true;
    this.group.push(...joined);
    const c = {
      members: this.group.map((p) => ({ ...p.addr, reason: 0 })),
      left: left.map((p) => ({ ...p.addr, reason })),
      joined: joined.map((p) => ({ ...p.addr, reason: 1 })),
    };
    for (const p of [...this.group]) p.proto.onConfchg(c);
  }

  spawn(n = 1): Proc[] {
    const ps = [...Array(n)].map(() => new Proc(1 + Math.floor(this.rand() * this.nodes), this.nextPid++));
    this.all.push(...ps);
    this.confchg(ps, [], 1);
    return ps;
  }

  kill(p: Proc): void {
    // some of what it sent may have made it into the order before it died
    const k = Math.floor(this.rand() * (p.outbox.length + 1));
    for (let i = 0; i < k; i++) this.deliverFrom(p);
    p.outbox.length = 0;
    p.dead = true;
    this.confchg([], [p], this.rand() < 0.5 ? 5 : 3);
  }

  deliverFrom(p: Proc): void {
    const m = p.outbox.shift()!;
    // through a JSON round trip, as on the wire
    const wire = decodeMessage<Wire>(encodeMessage(m));
    for (const q of [...this.group]) q.proto.onMessage(p.id, wire);
  }

  /** deliver one queued message (of a random sender), false if none */
  step(): boolean {
    const senders = this.group.filter((p) => p.outbox.length);
    if (!senders.length) return false;
    this.deliverFrom(senders[Math.floor(this.rand() * senders.length)]);
    return true;
  }

  settle(): void {
    for (let i = 0; i < 100_000 && this.step(); i++);
  }
}

function checkAgreement(ps: Proc[]): void {
  const joinedOnes = ps.filter((p) => p.events.length);
  for (const p of joinedOnes) expect(p.events[0], `${p.id} first event`).toMatchObject({ type: 'join', node: p.node.port });
  // pairwise: the later joiner's stream is a slice of the earlier one's
  for (const a of joinedOnes) {
    for (const b of joinedOnes) {
      if (a === b) continue;
      const at = a.events.findIndex((e) => e.type === 'join' && e.node === b.node.port);
      if (at < 0) continue;
      const n = Math.min(b.events.length, a.events.length - at);
      expect(b.events.slice(0, n), `${b.id} vs ${a.id}`).toEqual(a.events.slice(at, at + n));
    }
  }
}

describe('corosync driver protocol (simulated CPG)', () => {
  it('a fresh group, sequential joins, messages, leaves', () => {
    const sim = new SimCpg(rng(1));
    const [a] = sim.spawn();
    sim.settle();
    expect(a.events).toEqual([{ type: 'join', node: a.node.port, members: [a.node.port] }]);
    const [b] = sim.spawn();
    sim.settle();
    const [c] = sim.spawn();
    sim.settle();
    const order = [a, b, c].map((p) => p.node.port);
    expect(c.events[0]).toEqual({ type: 'join', node: c.node.port, members: order });
    b.outbox.push({ k: 'msg', mid: 'm1', msg: { t: 'x' } });
    sim.settle();
    sim.kill(a);
    sim.settle();
    for (const p of [b, c]) expect(p.events.at(-1)).toEqual({ type: 'leave', node: a.node.port, members: [b.node.port, c.node.port] });
    checkAgreement(sim.all);
  });

  it('processes in one configuration change of a new group all start synced', () => {
    const sim = new SimCpg(rng(2));
    const ps = sim.spawn(4);
    sim.settle();
    for (const p of ps) expect(p.events.at(-1)?.type === 'join' && (p.events.at(-1) as { members: number[] }).members.length).toBe(4);
    checkAgreement(ps);
  });

  it('the only established member dies before welcoming two joiners', () => {
    const sim = new SimCpg(rng(3));
    const [a] = sim.spawn();
    sim.settle();
    const [b, c] = sim.spawn(2);
    // the hellos are ordered, but a dies before its welcome goes out
    sim.deliverFrom(b);
    sim.deliverFrom(c);
    a.outbox.length = 0;
    sim.kill(a);
    sim.settle();
    const first = [b, c].sort((x, y) => x.addr.nodeid - y.addr.nodeid || x.addr.pid - y.addr.pid)[0];
    expect(first.events[0]).toEqual({ type: 'join', node: first.node.port, members: [first.node.port] });
    for (const p of [b, c]) expect((p.events.at(-1) as { members: number[] }).members).toHaveLength(2);
    checkAgreement(sim.all);
  });

  it.each([...Array(300).keys()])('random schedule %i: all members agree, and everyone alive ends up a member', (seed) => {
    const rand = rng(seed * 7919 + 17);
    const sim = new SimCpg(rand);
    let mid = 0;
    for (let t = 0; t < 120; t++) {
      const r = rand();
      const alive = sim.group;
      if (r < 0.12 || alive.length === 0) sim.spawn(rand() < 0.2 ? 2 : 1);
      else if (r < 0.2 && alive.length > 1) sim.kill(alive[Math.floor(rand() * alive.length)]);
      else if (r < 0.45) {
        const members = alive.filter((p) => p.proto.member);
        if (members.length) members[Math.floor(rand() * members.length)].outbox.push({ k: 'msg', mid: `m${mid++}`, msg: { t: 'n', i: mid } });
      } else sim.step();
    }
    sim.settle();
    checkAgreement(sim.all);
    for (const p of sim.group) expect(p.proto.member, `${p.id} admitted`).toBe(true);
    // everyone alive holds the same final member list, in the same order
    const views = sim.group.map((p) => p.proto.members().map((n) => n.port));
    for (const v of views) expect(v).toEqual(views[0]);
    expect(new Set(views[0])).toEqual(new Set(sim.group.map((p) => p.node.port)));
  });
});
