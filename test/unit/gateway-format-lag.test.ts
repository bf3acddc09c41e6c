// A peer that has not applied a cluster format yet answers WAIT_FOR_FORMAT:
// collie's `cluster snapshot load` formats and then writes every object at
// once, and a CI run saw it fail on the first object ("Waiting for cluster to
// be formatted") when one node was a moment behind. The gateway asks again.
import { it, expect } from 'vitest';
import { Res, SheepdogError, SdNode, vidToDataOid } from '@sheepdog/common';
import { Gateway, type PlacementView } from '../../sheep/src/gateway.js';
import type { ObjectStore } from '../../sheep/src/store/store.js';
import type { PeerPool } from '../../sheep/src/peer.js';

const node = (port: number): SdNode => ({ addr: Buffer.alloc(16), port, nrVnodes: 128, zone: port, space: 0n });
const self = node(1);
const behind = node(2);

it('a create refused by a peer that has not applied the format yet is sent again', async () => {
  const view: PlacementView = {
    epoch: () => 1, self: () => self, targets: () => [behind], defaultCopies: () => 1, vdiCopies: () => 1,
    objectSize: () => 4 << 20, isSnapshot: () => false, ensureLocal: async () => undefined, recovering: () => false,
    waitEpoch: async () => false, allRecovered: () => true, mayBeAway: () => false, strict: () => false,
  };
  let tries = 0;
  const peers = {
    createPeer: async () => {
      if (++tries < 3) throw new SheepdogError(Res.WAIT_FOR_FORMAT);
    },
  } as unknown as PeerPool;
  const gw = new Gateway({} as ObjectStore, view, peers);
  await gw.create(vidToDataOid(0xed202b, 1), 0, Buffer.alloc(4 << 20, 1), 0n, 1);
  expect(tries).toBe(3);
});
