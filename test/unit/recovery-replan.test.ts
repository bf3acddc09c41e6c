// A recovery whose every source of an object failed (the one holder a
// suspect object may take from answered NO_OBJ right after listing it:
// chaos seed 5101) left the object HALT until the membership changed, in a
// quiet cluster for good, while the replicas that had it went on taking
// writes. The epoch's recovery now plans again from fresh listings a little
// later, and the object is served once a source answers; a new epoch ends
// the retries of the old one.
import { it, expect } from 'vitest';
import {
  Op, Res, SheepdogError, vidToDataOid, encodeObjectCopies, encodeFetchHeader, FETCH_HEADER_SIZE,
  type RequestHeader,
} from '@sheepdog/common';
import { fakeRecovery, self, holder, until } from '../helpers/recovery-fake.js';

const OID = vidToDataOid(0x709133, 11);
const SIZE = 4096;
const BYTES = Buffer.alloc(SIZE, 0x5a);

/** A node (self) that holds nothing and whose one source fails its first `failures` fetches. */
function fakeSheep(failures: number) {
  const notes: { epoch: number; complete: boolean }[] = [];
  let fetches = 0;
  let installed: Buffer | undefined;
  const { s, rec } = fakeRecovery({
    size: SIZE,
    notify: (m) => notes.push(m),
    store: {
      versionOf: async () => (installed ? 5 : undefined),
      createFull: async (_oid: bigint, _size: number, data: Buffer) => void (installed = Buffer.from(data)),
    },
    call: async (_n, h: Partial<RequestHeader>) => {
      if (h.opcode === Op.OBJ_COPIES) return { data: encodeObjectCopies({ born: 0, records: [{ oid: OID, version: 5, flags: 0 }], more: false }) };
      if (h.opcode === Op.FETCH_OBJ) {
        if (fetches++ < failures) throw new SheepdogError(Res.NO_OBJ);
        const data = Buffer.alloc(FETCH_HEADER_SIZE + SIZE);
        encodeFetchHeader(5, 0, data);
        BYTES.copy(data, FETCH_HEADER_SIZE);
        return { data };
      }
      throw new Error(`unexpected opcode ${h.opcode}`);
    },
  });
  return { s, rec, notes, fetches: () => fetches, installed: () => installed };
}

it('an object whose every source failed is planned again, and served once a source answers', async () => {
  const f = fakeSheep(5); // every attempt of the first run
  const rec = f.rec;
  rec.start(7, [self, holder], true);
  await until('the first run to end', () => f.notes.length === 1, 15_000);
  expect(f.notes[0]).toEqual({ epoch: 7, complete: false });
  expect(f.installed()).toBeUndefined();
  await expect(rec.ensure(OID)).rejects.toMatchObject({ result: Res.HALT });
  // no membership change: the epoch's recovery runs again by itself
  await until('the second run to end', () => f.notes.length === 2, 15_000);
  expect(f.notes[1]).toEqual({ epoch: 7, complete: true });
  expect(f.installed()).toEqual(BYTES);
  await rec.ensure(OID); // served now
  expect(f.fetches()).toBe(6);
}, 30_000);

it('a new epoch ends the retries of the old one', async () => {
  const f = fakeSheep(Infinity);
  const rec = f.rec;
  rec.start(7, [self, holder], true);
  await until('the first run to end', () => f.notes.length === 1, 15_000);
  expect(f.notes[0].complete).toBe(false);
  f.s.epochNr = 8; // the membership moved on: epoch 8's own recovery is in charge
  const fetched = f.fetches();
  await new Promise((r) => setTimeout(r, 3000));
  expect(f.notes.length).toBe(1);
  expect(f.fetches()).toBe(fetched);
  rec.stop();
}, 30_000);
