// A replica that answers HALT for an object (its current copy is away, or
// its recovery of the object failed) may lack a write the other replicas
// took and whose client was told it failed. Served by another replica, a
// read would show those bytes, and a later reconciliation can take them
// back (chaos seed 5101): the read fails with HALT instead.
import { it, expect } from 'vitest';
import { Res, SheepdogError, SdNode, vidToDataOid } from '@sheepdog/common';
import { Gateway, type PlacementView } from '../../sheep/src/gateway.js';
import type { ObjectStore } from '../../sheep/src/store/store.js';
import type { PeerPool } from '../../sheep/src/peer.js';

const node = (port: number): SdNode => ({ addr: Buffer.alloc(16), port, nrVnodes: 128, zone: port, space: 0n });
const self = node(1);
const halting = node(2);
const serving = node(3);
const OID = vidToDataOid(0x709133, 11);

it('a HALT from one replica fails the read; it does not fall through to another replica', async () => {
  const view: PlacementView = {
    epoch: () => 462, self: () => self, targets: () => [halting, serving], defaultCopies: () => 2, vdiCopies: () => 2,
    objectSize: () => 4 << 20, isSnapshot: () => false, ensureLocal: async () => undefined, recovering: () => false,
    waitEpoch: async () => false, allRecovered: () => true, mayBeAway: () => false, strict: () => false,
  };
  let askedHalting = 0;
  const peers = {
    readPeer: async (n: SdNode) => {
      if (n === halting) {
        askedHalting++;
        throw new SheepdogError(Res.HALT, 'the current copy is on nodes that are away');
      }
      return Buffer.from('half-written bytes');
    },
  } as unknown as PeerPool;
  const gw = new Gateway({} as ObjectStore, view, peers);
  let halted = 0;
  for (let i = 0; i < 40; i++) {
    const before = askedHalting;
    const r = await gw.read(OID, 0, 18, 2).then((b) => b.toString(), (e: SheepdogError) => e.result);
    if (askedHalting > before) {
      expect(r).toBe(Res.HALT);
      halted++;
    } else {
      expect(r).toBe('half-written bytes');
    }
  }
  // the order of replicas is random: both orders came up
  expect(halted).toBeGreaterThan(0);
  expect(halted).toBeLessThan(40);
});
