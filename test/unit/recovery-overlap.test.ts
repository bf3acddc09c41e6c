// A run of recovery that a new epoch cancelled can still be inside the
// fetch of an object: when its answer comes it used to go on and move this
// node's copy (restore the set-aside copy it had compared) after the next
// run had listed that copy as set aside. The next run then hashed a
// set-aside copy that was gone, blamed the source ("No object found"), and
// gave the object up: it answered HALT while the other replica took writes
// (chaos seed 5101). Now the next run's fetch of the object waits for the
// cancelled one, which changes nothing, and looks at the copy as it is.
import { it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { Op, Res, SheepdogError, vidToDataOid, encodeObjectCopies, CopyFlag, type RequestHeader } from '@sheepdog/common';
import { fakeRecovery, self, holder, until } from '../helpers/recovery-fake.js';

const OID = vidToDataOid(0x709133, 11);
const HASH = createHash('sha1').update('the same bytes on both').digest();

it('a cancelled run\'s fetch does not move the copy the next run planned with; the next run recovers the object', async () => {
  let state: 'live' | 'stale' = 'stale'; // our copy: set aside, the same version and bytes as the holder's
  const notes: { epoch: number; complete: boolean }[] = [];
  let listings = 0;
  let hashCalls = 0;
  let released = 0;
  let fetches = 0;
  const { s, rec } = fakeRecovery({
    notify: (m) => notes.push(m),
    copyRecords: async () => {
      listings++;
      return [{ oid: OID, version: 5, flags: state === 'stale' ? CopyFlag.STALE : 0 }];
    },
    store: {
      bestCopy: () => state,
      versionOf: async () => 5,
      staleSha1: async () => {
        if (state !== 'stale') throw new SheepdogError(Res.NO_OBJ);
        return HASH;
      },
      sha1: async () => {
        if (state !== 'live') throw new SheepdogError(Res.NO_OBJ);
        return HASH;
      },
      restoreStale: async () => {
        if (state !== 'stale') return false;
        state = 'live';
        return true;
      },
      createFull: async () => undefined,
    },
    call: async (_n, h: Partial<RequestHeader>) => {
      if (h.opcode === Op.OBJ_COPIES) return { data: encodeObjectCopies({ born: 0, records: [{ oid: OID, version: 5, flags: 0 }], more: false }) };
      if (h.opcode === Op.GET_HASH) {
        // each answer waits until the test lets it go, in order
        const n = ++hashCalls;
        while (released < n) await new Promise((r) => setTimeout(r, 10));
        return { rsp: { hash: HASH } };
      }
      if (h.opcode === Op.FETCH_OBJ) fetches++;
      throw new SheepdogError(Res.NO_OBJ);
    },
  });
  rec.start(7, [self, holder], true);
  await until('epoch 7 to ask for the holder\'s hash', () => hashCalls === 1);
  // the membership changes while epoch 7's compare is on the wire
  s.epochNr = 8;
  rec.start(8, [self, holder], true);
  await until('epoch 8 to list our copy', () => listings === 2);
  await new Promise((r) => setTimeout(r, 200));
  released = 1; // epoch 7's answer comes
  await new Promise((r) => setTimeout(r, 300));
  released = Infinity; // and epoch 8's, if it asked meanwhile
  await until('epoch 8 to end', () => notes.some((n) => n.epoch === 8));
  expect(notes.filter((n) => n.epoch === 8)).toEqual([{ epoch: 8, complete: true }]);
  expect(notes.some((n) => n.epoch === 7)).toBe(false); // a cancelled run reports nothing
  expect(state).toBe('live'); // our copy, the same bytes as the holder's, is live again
  expect(fetches).toBe(0); // and nothing was fetched: the compare found them equal
  await rec.ensure(OID); // served
  rec.stop();
}, 30_000);
