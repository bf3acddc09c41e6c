// A request that waits for its object's recovery (ensure) used to go on as
// soon as that recovery's fetch ended, even when it ended because a new
// epoch cancelled the run: the request then used this node's copy, still
// out of date (chaos seed 5301: an NBD read of a clone returned a sector's
// older bytes from a node that had been away). It now waits for the run in
// charge, which brings the copy up to date first.
import { it, expect } from 'vitest';
import {
  Op, Res, SheepdogError, vidToDataOid, encodeObjectCopies, encodeFetchHeader, FETCH_HEADER_SIZE,
  type RequestHeader,
} from '@sheepdog/common';
import { fakeRecovery, self, holder, sleep } from '../helpers/recovery-fake.js';

const OID = vidToDataOid(0x653165, 2);
const SIZE = 4096;

it('a request waiting on a fetch that a new epoch cut short waits for the new epoch\'s recovery of the object', async () => {
  let installed: Buffer | undefined;
  let releaseFirstFetch = false;
  let releaseEpoch8Listing = false;
  let fetches = 0;
  const { s, rec } = fakeRecovery({
    size: SIZE,
    store: {
      bestCopy: () => (installed ? 'live' : undefined),
      versionOf: async () => (installed ? 5 : undefined),
      createFull: async (_oid: bigint, _size: number, data: Buffer) => void (installed = Buffer.from(data)),
    },
    call: async (_n, h: Partial<RequestHeader>) => {
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
  });
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
