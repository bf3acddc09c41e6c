// Recovery asks, for every object, whether its newest copy can be on the
// nodes present: a walk over every epoch since the last full recovery. After
// hundreds of epochs of churn (chaos seed 4501: 300 epochs), the walk rebuilt
// a vnode ring at every step because the ring cache was keyed by epoch and
// smaller than the walk; planning one recovery held the event loop for 57 s.
// Rings are now cached by membership, and a membership that passed at one
// epoch is not checked again at a later one. The answers must not change.
import { describe, it, expect } from 'vitest';
import { SdNode, VnodeRing, nodeToString, vidToDataOid } from '@sheepdog/common';
import { Sheep } from '../../sheep/src/sheep.js';

const node = (port: number, zone = port): SdNode => {
  const addr = Buffer.alloc(16);
  addr.writeUInt32BE(0xffff, 8);
  addr.writeUInt32BE(0x7f000001, 12);
  return { addr, port, nrVnodes: 128, zone, space: 0n };
};

/** The walk as it was: a ring per epoch (each built once here), every epoch checked. */
const refRings = new Map<number, VnodeRing>();
function reference(epochs: Map<number, { nodes: SdNode[] }>, from: number, to: number, oid: bigint, copies: number, present: Map<string, number>): boolean {
  for (let t = from; t < to; t++) {
    const e = epochs.get(t);
    if (!e) return false;
    let ring = refRings.get(t);
    if (!ring) refRings.set(t, (ring = new VnodeRing(e.nodes)));
    const placed = ring.placeOid(oid, copies);
    if (!placed.some((n) => {
      const b = present.get(nodeToString(n));
      return b !== undefined && b > 0 && b <= t;
    })) return false;
  }
  return true;
}

describe('epoch walk of recovery (newestIsPresent)', () => {
  it('gives the reference answers over 400 epochs of churn while building one ring per membership', () => {
    const all = [7000, 7001, 7002, 7003, 7004].map((p) => node(p));
    const memberships = [[0, 1, 2, 3, 4], [0, 1, 2, 3], [1, 2, 3, 4], [0, 2, 4]].map((ix) => ix.map((i) => all[i]));
    const epochs = new Map<number, { epoch: number; time: bigint; nodes: SdNode[] }>();
    let seed = 4501;
    const rand = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) % n;
    for (let e = 1; e <= 400; e++) epochs.set(e, { epoch: e, time: 0n, nodes: memberships[rand(memberships.length)] });
    const fake = Object.create(Sheep.prototype) as Sheep & Record<string, unknown>;
    Object.assign(fake, {
      epochs, epochNr: 401, recoveredEpoch: 0, rings: new Map(), memberKeys: new WeakMap(),
      copiesOf: () => 2,
    });
    // nodes 0-3 present since epoch 1; node 4 only since epoch 250 (born later)
    const present = new Map<string, number>(all.slice(0, 4).map((n) => [nodeToString(n), 1]));
    present.set(nodeToString(all[4]), 250);
    const presentNoTwo = new Map(present);
    presentNoTwo.delete(nodeToString(all[2]));
    const presentFew = new Map(all.slice(0, 2).map((n) => [nodeToString(n), 1]));
    let yes = 0, no = 0;
    for (let i = 0; i < 100; i++) {
      const oid = vidToDataOid(0x709128 + (i % 7), i);
      for (const p of [present, presentNoTwo, presentFew]) {
        for (const vmax of [0, 100, 260, 399]) {
          const want = reference(epochs, Math.max(vmax + 1, 1), 401, oid, 2, p);
          expect(fake.newestIsPresent(oid, vmax, p)).toBe(want);
          if (want) yes++; else no++;
        }
      }
    }
    // both answers occur, so the comparison means something
    expect(yes).toBeGreaterThan(50);
    expect(no).toBeGreaterThan(50);
    expect((fake.rings as Map<string, VnodeRing>).size).toBe(memberships.length);
    expect(fake.ringOf(3)).toBe(fake.ringOf([...epochs.keys()].find((e) => e !== 3 && epochs.get(e)!.nodes === epochs.get(3)!.nodes)!));
  });

  it('builds the rings of a long history a few at a time, giving the event loop back (chaos seed 4202)', async () => {
    // 120 distinct memberships of 12 nodes, as a node that has just started has to build them all
    const all = Array.from({ length: 12 }, (_, i) => node(7100 + i));
    const epochs = new Map<number, { epoch: number; time: bigint; nodes: SdNode[] }>();
    for (let e = 1; e <= 240; e++) {
      const m = (e % 120) + 1;
      epochs.set(e, { epoch: e, time: 0n, nodes: all.filter((_, i) => i === 0 || ((m >> (i % 7)) & 1) === 1 || i === (m % 12)) });
    }
    const keys = new Set([...epochs.values()].map((e) => e.nodes.map((n) => n.port).join(',')));
    const fake = Object.create(Sheep.prototype) as Sheep & Record<string, unknown>;
    Object.assign(fake, { epochs, epochNr: 241, recoveredEpoch: 0, rings: new Map(), memberKeys: new WeakMap() });
    let last = performance.now();
    let longest = 0;
    const beat = setInterval(() => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
    }, 1);
    const t0 = performance.now();
    await fake.warmRings();
    const took = performance.now() - t0;
    clearInterval(beat);
    expect((fake.rings as Map<string, unknown>).size).toBe(keys.size);
    // the whole build takes far longer than any one stretch of it
    expect(took).toBeGreaterThan(longest);
    expect(longest).toBeLessThan(150);
  });
});

