// The gateway's answer "no such object" must belong to one membership.
// Found by the churn simulator (seed 602, zookeeper): a read asked in a
// short epoch where the object's only holder was away got NO_OBJ from the
// node that stood in; the reply came back after the holder had rejoined,
// the gateway then judged "could it be on nodes that are away?" by the new
// membership (no: everyone is back) and told the client the object (and so
// the VDI) did not exist. The gateway is driven here with a scripted
// placement view and peer pool so the interleaving happens every time.
import { describe, it, expect } from 'vitest';
import { Res, SheepdogError, SdNode, vidToDataOid } from '@sheepdog/common';
import { Gateway, type PlacementView } from '../../sheep/src/gateway.js';
import type { ObjectStore } from '../../sheep/src/store/store.js';
import type { PeerPool } from '../../sheep/src/peer.js';

const node = (port: number): SdNode => ({ addr: Buffer.alloc(16), port, nrVnodes: 128, zone: port, space: 0n });
const self = node(1);
const standIn = node(2); // holds nothing; the placement of the short epoch
const holder = node(3); // the only copy; away in epoch 2, back in epoch 3
const OID = vidToDataOid(0x709128, 1);
const BYTES = Buffer.from('the only copy');

/** Epoch 2: the holder is away (the object may be there). Epoch 3: it is back. */
function world() {
  let epoch = 2;
  const waiters: (() => void)[] = [];
  const setEpoch = (e: number) => {
    epoch = e;
    for (const w of waiters.splice(0)) w();
  };
  const view: PlacementView = {
    epoch: () => epoch,
    self: () => self,
    targets: () => (epoch === 2 ? [standIn] : [holder]),
    defaultCopies: () => 1,
    vdiCopies: () => 1,
    objectSize: () => 4 << 20,
    isSnapshot: () => false,
    ensureLocal: async () => undefined,
    recovering: () => false,
    waitEpoch: async (pred, ms) => {
      const end = Date.now() + ms;
      while (!pred(epoch) && Date.now() < end) await new Promise<void>((r) => { waiters.push(r); setTimeout(r, 50); });
      return pred(epoch);
    },
    allRecovered: () => false,
    mayBeAway: () => epoch === 2,
    strict: () => false,
  };
  const asked: string[] = [];
  const answer = async (n: SdNode, ep: number): Promise<Buffer> => {
    asked.push(`${n.port}@${ep}`);
    if (n === holder) return Buffer.from(BYTES);
    // the stand-in answers, and the holder rejoins before the answer is read
    setEpoch(3);
    throw new SheepdogError(Res.NO_OBJ);
  };
  const peers = {
    readPeer: (n: SdNode, _oid: bigint, _off: number, _len: number, ep: number) => answer(n, ep),
    writePeer: async (n: SdNode, _oid: bigint, _off: number, _data: Buffer, ep: number) => { await answer(n, ep); },
  } as unknown as PeerPool;
  const store = {} as ObjectStore;
  return { gw: new Gateway(store, view, peers), asked };
}

describe('a NO_OBJ from an epoch that has ended is asked again in the new one', () => {
  it('reads: the client gets the bytes from the holder that came back, not NO_OBJ', async () => {
    const { gw, asked } = world();
    const got = await gw.read(OID, 0, BYTES.length, 1);
    expect(got.toString()).toBe(BYTES.toString());
    expect(asked).toEqual(['2@2', '3@3']);
  });

  it('writes into an existing object: they reach the holder, not NO_OBJ', async () => {
    const { gw, asked } = world();
    await gw.write(OID, 0, Buffer.from('new bytes'), 1);
    expect(asked).toEqual(['2@2', '3@3']);
  });

  it('a NO_OBJ within one epoch where the object may be away is HALT, as before', async () => {
    const { gw } = world();
    const g = gw as unknown as { view: PlacementView };
    // the stand-in answers without the membership changing
    (g.view as { targets: PlacementView['targets'] }).targets = () => [standIn];
    const peers = (gw as unknown as { peers: { readPeer: unknown } }).peers;
    peers.readPeer = async () => { throw new SheepdogError(Res.NO_OBJ); };
    await expect(gw.read(OID, 0, 4, 1)).rejects.toMatchObject({ result: Res.HALT });
  });
});
