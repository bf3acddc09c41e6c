// A request that waits for its object's recovery (ensure) used to go on as
// soon as that recovery's fetch ended, even when it ended because a new
// epoch cancelled the run: the request then used this node's copy, still
// out of date (chaos seed 5301: an NBD read of a clone returned a sector's
// older bytes from a node that had been away). It now waits for the run in
// charge, which brings the copy up to date first.
import { it, expect } from 'vitest';
import {
  Op, Res, SheepdogError, SdNode, vidToDataOid, encodeObjectCopies, encodeFetchHeader, FETCH_HEADER_SIZE,
  type RequestHeader,
} from '@sheepdog/common';
import { Recovery } from '../../sheep/src/recovery.js';
import type { Sheep } from '../../sheep/src/sheep.js';

const node = (port: number): SdNode => ({ addr: Buffer.alloc(16), port, nrVnodes: 128, zone: port, space: 0n });
const self = node(1);
const holder = node(2);
const OID = vidToDataOid(0x653165, 2);
const SIZE = 4096;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('a request waiting on a fetch that a new epoch cut short waits for the new epoch\'s recovery of the object', async () => {
  let installed: Buffer | undefined;
  let releaseFirstFetch = false;
  let releaseEpoch8Listing = false;
  let fetches = 0;
  const s = {
    selfNode: self, born: 0, epochNr: 7, closing: false, formatted: true,
    config: { disableRecovery: false, store: 'plain' },
    recoveryThrottle: { queueWorkInterval: 0n, maxExecCount: 8 },
    ensureHistory: async () => undefined,
    copiesOf: () => 2,
    warmRings: async () => undefined,
    newestIsPresent: () => true,
    copyRecords: async () => [],
    gw: { sizeOf: () => SIZE },
    ecRecovery: { start: () => undefined, stop: () => undefined, wait: async () => true },
    cluster: { notify: async () => undefined },
    store: {
      copies: async () => [],
      bestCopy: () => (installed ? 'live' : undefined),
      versionOf: async () => (installed ? 5 : undefined),
      createFull: async (_oid: bigint, _size: number, data: Buffer) => void (installed = Buffer.from(data)),
    },
    peers: {
      call: async (_n: SdNode, h: Partial<RequestHeader>) => {
        if (h.opcode === Op.OBJ_COPIES) {
          while (h.epoch === 8 && !releaseEpoch8Listing) await sleep(10);
          return { data: encodeObjectCopies({ born: 0, records: [{ oid: OID, version: 5, flags: 0 }], more: false }) };
        }
        if (h.opcode === Op.FETCH_OBJ) {
          if (++fetches === 1) {
            while (!releaseFirstFetch) await sleep(10);
            throw new SheepdogError(Res.NETWORK_ERROR, 'the connection closed');
          }
          const data = Buffer.alloc(FETCH_HEADER_SIZE + SIZE, 0x77);
          encodeFetchHeader(5, 0, data);
          return { data };
        }
        throw new Error(`unexpected opcode ${h.opcode}`);
      },
    },
  };
  const rec = new Recovery(s as unknown as Sheep);
  rec.start(7, [self, holder], true);
  while (fetches < 1) await sleep(10);
  // a read of the object waits for its fetch
  let ensured = false;
  const ensuring = rec.ensure(OID).then(() => { ensured = true; });
  // the membership changes; the new epoch's recovery has not planned yet
  s.epochNr = 8;
  rec.start(8, [self, holder], true);
  releaseFirstFetch = true; // epoch 7's fetch fails, its run cancelled
  await sleep(800);
  expect(ensured).toBe(false); // the copy is still out of date: the read must not go on
  expect(installed).toBeUndefined();
  releaseEpoch8Listing = true;
  await ensuring;
  expect(installed?.subarray(0, 4)).toEqual(Buffer.alloc(4, 0x77)); // brought up to date first
  rec.stop();
}, 30_000);
