// A joiner's view of the cluster when its state arrives late: the member
// that owed it the state left first, and the next one sent it after it had
// applied the join. The joiner must count itself born in the epoch the
// cluster put it in (chaos seed 4802, replayed: it counted itself born one
// epoch later, and objects placed on it in its first epoch waited for it
// for good, answering HALT after the heal).
import { it, expect, afterEach } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeNode, nodeToString, type SdNode } from '@sheepdog/common';
import { Sheep } from '../../sheep/src/sheep.js';
import { ScriptedDriver } from '../helpers/scripted-driver.js';

const dirs: string[] = [];
const sheeps: Sheep[] = [];
afterEach(async () => {
  for (const s of sheeps.splice(0)) await s.close().catch(() => undefined);
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

it('a joiner whose state comes late counts itself born in the epoch that first listed it', async () => {
  const a = makeNode('127.0.0.1', 1);
  const b = makeNode('127.0.0.1', 2);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'join-'));
  dirs.push(dir);
  const d = new ScriptedDriver([a, b]);
  const j = new Sheep({ dir, host: '127.0.0.1', port: 7000, nosync: true, gateway: false }, d);
  sheeps.push(j);
  await j.init();
  const joined = j.join();
  await new Promise((r) => setTimeout(r, 50));
  const internals = j as unknown as { selfNode: SdNode; config: object; born: number; epochNr: number };
  const me = internals.selfNode;
  // a, who owed us the state, leaves; b sends it after applying our join (epoch 2)
  await d.onEvent({ type: 'leave', node: a, members: [b, me] });
  const time = Math.floor(Date.now() / 1000);
  await d.deliver(b, {
    t: 'state', to: me, config: { ...internals.config, ctime: 0x1234n << 32n, copies: 1 }, status: 'ok', epoch: 2,
    records: [{ epoch: 1, time, nodes: [a, b] }, { epoch: 2, time, nodes: [a, b, me] }],
    expected: [a, b, me], inUse: [], deleted: [], vdiStates: [], lockQueue: [], recoveryDone: [], recoveryComplete: [],
    throttle: { maxExecCount: 1, queueWorkInterval: 0n, throttling: false },
    born: [[nodeToString(a), 1], [nodeToString(me), 2], [nodeToString(b), 1]], recovered: 1,
    skip: 1, present: [b, me], unconfirmedTimes: [], timesUnknown: false, ghosts: [], s3Writers: [],
  });
  await joined;
  // the leave the state reflects is not applied again: epoch 3 is b and us, as on b
  expect(internals.epochNr).toBe(3);
  expect(internals.born).toBe(2);
});
