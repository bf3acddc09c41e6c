// A write that lands on a copy after the epoch it was sent in has ended
// may have missed that epoch's recovery of the object: recovery here
// fetched another replica's copy before the write reached that one and
// installed it over ours (or the write went through a file descriptor of
// the copy that install then replaced). The churn simulator's fixed-seed
// run lost an acknowledged write so, once the replicas' copies diverged
// and the one without it was kept. Such a write must be sent again in the
// new epoch (where it waits for the recovery of its object), both when
// this node writes its own copy and when a peer's write lands here.
import { describe, it, expect } from 'vitest';
import { Op, Flag, Res, SheepdogError, SdNode, vidToDataOid, decodeRequest, encodeRequest } from '@sheepdog/common';
import { Gateway, type PlacementView } from '../../sheep/src/gateway.js';
import { OPS } from '../../sheep/src/ops.js';
import type { ObjectStore } from '../../sheep/src/store/store.js';
import type { PeerPool } from '../../sheep/src/peer.js';
import type { Sheep } from '../../sheep/src/sheep.js';

const node = (port: number): SdNode => ({ addr: Buffer.alloc(16), port, nrVnodes: 128, zone: port, space: 0n });
const self = node(1);
const other = node(2);
const newcomer = node(3);
const OID = vidToDataOid(0x709642, 5);

/** The first local write lands just after the membership changed (epoch 2 -> 3). */
function world(targets: (epoch: number) => SdNode[], copies: number) {
  let epoch = 2;
  const local: number[] = []; // epoch at which each local write landed
  const remote: string[] = []; // node@epoch of each peer write
  const view: PlacementView = {
    epoch: () => epoch,
    self: () => self,
    targets: () => targets(epoch),
    defaultCopies: () => copies,
    vdiCopies: () => copies,
    objectSize: () => 4 << 20,
    isSnapshot: () => false,
    ensureLocal: async () => undefined,
    recovering: () => false,
    waitEpoch: async (pred) => pred(epoch),
    allRecovered: () => true,
    mayBeAway: () => false,
    strict: () => false,
  };
  const store = {
    write: async () => {
      await new Promise((r) => setTimeout(r, 5));
      if (!local.length) epoch = 3; // a node joined while the bytes were on their way to disk
      local.push(epoch);
    },
  } as unknown as ObjectStore;
  const peers = {
    writePeer: async (n: SdNode, _oid: bigint, _off: number, _data: Buffer, ep: number) => {
      remote.push(`${n.port}@${ep}`);
      if (ep !== epoch) throw new SheepdogError(Res.OLD_NODE_VER);
    },
  } as unknown as PeerPool;
  return { gw: new Gateway(store, view, peers), local, remote };
}

describe('a write that lands after its epoch ended is sent again in the new one', () => {
  it('a replicated write: the local copy is written again in the new epoch', async () => {
    // the peer's write was taken in epoch 2 before the change reached it
    const { gw, local, remote } = world(() => [self, other], 2);
    await gw.write(OID, 0, Buffer.from('bytes'), 2);
    expect(local).toEqual([3, 3]);
    expect(remote).toEqual(['2@2', '2@3']);
  });

  it('the only copy, here: it reaches the node the new epoch places the object on', async () => {
    const { gw, local, remote } = world((e) => (e === 2 ? [self] : [newcomer]), 1);
    await gw.write(OID, 0, Buffer.from('bytes'), 1);
    expect(local).toEqual([3]);
    expect(remote).toEqual(['3@3']);
  });

  it('a peer write that lands late is answered OLD_NODE_VER (the sender sends it again)', async () => {
    const s = {
      epochNr: 7,
      ensureLocal: async () => undefined,
      waitEpoch: async () => true,
      ecCode: () => undefined,
      vdis: { isSnapshot: () => false },
      stats: { peerWrite: 0 },
      gw: { sizeOf: () => 4 << 20 },
      store: {
        write: async () => {
          await new Promise((r) => setTimeout(r, 5));
          s.epochNr = 8;
        },
        create: async () => undefined,
      },
    };
    const h = decodeRequest(encodeRequest({ opcode: Op.WRITE_PEER, epoch: 7, flags: Flag.CMD_WRITE, dataLength: 5, obj: { oid: OID, offset: 0 } }));
    const run = OPS.get(Op.WRITE_PEER)!.handler(s as unknown as Sheep, h, Buffer.from('bytes'));
    await expect(run).rejects.toMatchObject({ result: Res.OLD_NODE_VER });
    // within one epoch it is taken
    const h8 = decodeRequest(encodeRequest({ opcode: Op.WRITE_PEER, epoch: 8, flags: Flag.CMD_WRITE, dataLength: 5, obj: { oid: OID, offset: 0 } }));
    s.store.write = async () => undefined;
    await expect(OPS.get(Op.WRITE_PEER)!.handler(s as unknown as Sheep, h8, Buffer.from('bytes'))).resolves.toMatchObject({ result: Res.SUCCESS });
  });

  it('a peer write whose sender hung up while it waited for its object is not applied', async () => {
    let gone = false;
    let release!: () => void;
    let wrote = 0;
    const s = {
      epochNr: 7,
      // the object is being recovered here: the write waits for it
      ensureLocal: () => new Promise<void>((r) => (release = r)),
      waitEpoch: async () => true,
      ecCode: () => undefined,
      vdis: { isSnapshot: () => false },
      stats: { peerWrite: 0 },
      gw: { sizeOf: () => 4 << 20 },
      store: { write: async () => { wrote++; }, create: async () => { wrote++; } },
    };
    const from = { address: '127.0.0.1', allowed: () => true, gone: () => gone };
    for (const op of [Op.WRITE_PEER, Op.CREATE_AND_WRITE_PEER]) {
      gone = false;
      const h = decodeRequest(encodeRequest({ opcode: op, epoch: 7, flags: Flag.CMD_WRITE, dataLength: 5, obj: { oid: OID, offset: 0 } }));
      const run = OPS.get(op)!.handler(s as unknown as Sheep, h, Buffer.from('bytes'), from);
      await new Promise((r) => setTimeout(r, 5));
      gone = true; // the sender timed out, told its client, and its client wrote again
      release();
      await expect(run).rejects.toMatchObject({ result: Res.NETWORK_ERROR });
    }
    expect(wrote).toBe(0);
  });
});
