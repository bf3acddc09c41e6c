// The cluster-wide lock (cluster operations such as GET_VDI_INFO and
// NEW_VDI run under it) through a scripted membership driver: a request
// that the cluster lost or never delivered must not hold its operation for
// good (chaos seed 4105, replayed: a GET_VDI_INFO hung for 150 s after its
// node was dropped and joined again), and a request nobody waits for any
// more must not block everyone behind it.
import { describe, it, expect, afterEach } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeNode, type SdNode } from '@sheepdog/common';
import { Sheep } from '../../sheep/src/sheep.js';
import { ScriptedDriver } from '../helpers/scripted-driver.js';

const other: SdNode = makeNode('127.0.0.1', 1);

describe('cluster lock', () => {
  const dirs: string[] = [];
  const sheeps: Sheep[] = [];
  afterEach(async () => {
    for (const s of sheeps.splice(0)) await s.close().catch(() => undefined);
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });
  const start = async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lock-'));
    dirs.push(dir);
    const d = new ScriptedDriver();
    const s = new Sheep({ dir, host: '127.0.0.1', port: 7000, nosync: true, gateway: false }, d);
    sheeps.push(s);
    await s.init();
    await s.join();
    s.lockRetryMs = 300;
    return { s, d };
  };
  const lockQueue = (s: Sheep) => (s as unknown as { lockQueue: { id: string }[] }).lockQueue.map((l) => l.id);

  it('a request that is not delivered is asked for again, and released if it arrives late', async () => {
    const { s, d } = await start();
    d.holdLockRequests = 1;
    let ran = 0;
    const t0 = Date.now();
    expect(await s.withClusterLock(async () => ++ran)).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(d.held.length).toBe(1);
    expect(lockQueue(s)).toEqual([]);
    // the first request arrives after all: at the head with nobody waiting, it is released
    await d.deliver(d.self, d.held[0]);
    await new Promise((r) => setTimeout(r, 50));
    expect(lockQueue(s)).toEqual([]);
    expect(d.sent.filter((m) => m.t === 'lock_rel' && m.id === d.held[0].id).length).toBe(1);
    // and the lock works on
    expect(await s.withClusterLock(async () => ++ran)).toBe(2);
    await new Promise((r) => setTimeout(r, 50));
    // every request released once (a second release would let a later holder in early)
    const rels = d.sent.filter((m) => m.t === 'lock_rel').map((m) => m.id);
    expect(new Set(rels).size).toBe(rels.length);
  });

  it('a queued request lost with this node\'s membership is asked for again', async () => {
    const { s, d } = await start();
    // another node holds the lock; ours queues behind it
    await d.deliver(other, { t: 'lock_req', id: 'theirs' });
    let ran = false;
    const p = s.withClusterLock(async () => { ran = true; });
    await new Promise((r) => setTimeout(r, 50));
    const ours = lockQueue(s)[1];
    expect(lockQueue(s)).toEqual(['theirs', ours]);
    // dropped and joined again: the state this node is sent holds only the other's request
    const internals = s as unknown as { lockQueue: unknown[]; lockRequestsLost(): void };
    internals.lockQueue = [{ id: 'theirs', node: other }];
    internals.lockRequestsLost();
    await new Promise((r) => setTimeout(r, 50));
    // asked again, behind the other's
    expect(lockQueue(s).length).toBe(2);
    expect(lockQueue(s)[1]).not.toBe(ours);
    expect(ran).toBe(false);
    await d.deliver(other, { t: 'lock_rel', id: 'theirs' });
    await p;
    expect(ran).toBe(true);
    expect(lockQueue(s)).toEqual([]);
  });

  it('a granted lock is ours until its operation ends, whatever else arrives meanwhile', async () => {
    const { s, d } = await start();
    let release!: () => void;
    const running = new Promise<void>((r) => (release = r));
    let inside = 0;
    const p = s.withClusterLock(async () => { inside++; await running; });
    await new Promise((r) => setTimeout(r, 50));
    expect(inside).toBe(1);
    const ours = lockQueue(s)[0];
    // another node asks (and the queue is looked at again): ours must stay at the head
    await d.deliver(other, { t: 'lock_req', id: 'next' });
    await new Promise((r) => setTimeout(r, 50));
    expect(lockQueue(s)).toEqual([ours, 'next']);
    expect(d.sent.filter((m) => m.t === 'lock_rel').length).toBe(0);
    // our second operation waits behind both
    let second = false;
    const q = s.withClusterLock(async () => { second = true; });
    await new Promise((r) => setTimeout(r, 50));
    expect(second).toBe(false);
    release();
    await p;
    expect(d.sent.filter((m) => m.t === 'lock_rel' && m.id === ours).length).toBe(1);
    await d.deliver(other, { t: 'lock_rel', id: 'next' });
    await q;
    expect(second).toBe(true);
    expect(lockQueue(s)).toEqual([]);
  });

  it('a queued request waits its turn however long the holder takes', async () => {
    const { s, d } = await start();
    await d.deliver(other, { t: 'lock_req', id: 'slow' });
    let ran = false;
    const p = s.withClusterLock(async () => { ran = true; });
    await new Promise((r) => setTimeout(r, 1000)); // three retry deadlines
    expect(ran).toBe(false);
    expect(d.sent.filter((m) => m.t === 'lock_req').length).toBe(1);
    await d.deliver(other, { t: 'lock_rel', id: 'slow' });
    await p;
    expect(ran).toBe(true);
  });
});
