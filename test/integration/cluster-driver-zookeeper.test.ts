// The zookeeper cluster driver against a real standalone ZooKeeper on
// 127.0.0.1: the common conformance suite, plus what only this driver has
// (spec parsing, queue garbage collection, losing one's own session, ghosts
// left by a cluster that died while nobody watched).
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import zookeeper from 'node-zookeeper-client';
import { startZooKeeper, ZooKeeperServer } from '../helpers/zookeeper.js';
import { driverConformance, Member, killAllMembers, expectSameOrder, memberPort } from '../helpers/driver-conformance.js';
import { uniqueClusterId } from '../helpers/cluster.js';
import { parseZkSpec, applyEntry, emptyFold } from '../../sheep/src/cluster/zookeeper.js';
import { makeNode } from '@sheepdog/common';

let zk: ZooKeeperServer;
// a low session timeout so that a killed member is noticed fast
const TIMEOUT = 1000;
const specFor = async (id = uniqueClusterId()) => `zookeeper:${zk.hostPort}/${id},timeout=${TIMEOUT}`;

beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await killAllMembers();
  await zk?.stop();
});

driverConformance(() => specFor());

describe('zookeeper driver spec', () => {
  it('parses servers, cluster id and timeout', () => {
    expect(parseZkSpec('10.0.0.1:2181')).toEqual({
      servers: [{ host: '10.0.0.1', port: 2181 }], connect: '10.0.0.1:2181', clusterId: 'sheepdog', timeout: 3000,
    });
    expect(parseZkSpec('a:1,b.example:2,c:3/prod-1,timeout=700')).toEqual({
      servers: [{ host: 'a', port: 1 }, { host: 'b.example', port: 2 }, { host: 'c', port: 3 }],
      connect: 'a:1,b.example:2,c:3', clusterId: 'prod-1', timeout: 700,
    });
    expect(parseZkSpec('h:2181,timeout=5000')).toMatchObject({ clusterId: 'sheepdog', timeout: 5000 });
    expect(parseZkSpec('h:2181/x')).toMatchObject({ clusterId: 'x', timeout: 3000 });
  });

  it.each([
    ['', /no server/],
    ['h', /'h' is not HOST:PORT/],
    ['h:', /not HOST:PORT/],
    ['h:99999', /out of range/],
    ['h:0', /out of range/],
    ['h:1,', /'' is not HOST:PORT/],
    ['h:1/', /cluster id/],
    ['h:1/a/b', /cluster id/],
    ['h:1/..', /cluster id/],
    ['h:1,timeout=', /not a number/],
    ['h:1,timeout=abc', /not a number/],
    ['h:1,timeout=5', /out of range/],
    ['h:1,timeout=500/x', /timeout=MS must come last|cluster id/],
    ['h:1,timeout=500,h2:2', /timeout=MS must come last/],
    ['/x', /no server/],
  ])('rejects %j', (args, re) => {
    expect(() => parseZkSpec(args)).toThrow(re);
    expect(() => parseZkSpec(args)).toThrow(/zookeeper:HOST:PORT\[,HOST:PORT\.\.\.\]\[\/CLUSTER_ID\]\[,timeout=MS\]/);
  });
});

describe('zookeeper driver fold', () => {
  it('ignores duplicate joins, leaves of non-members and repeated messages', () => {
    const s = emptyFold();
    const a = makeNode('127.0.0.1', 1), b = makeNode('127.0.0.1', 2);
    expect(applyEntry(s, { t: 'join', inst: 'A', node: a, info: { t: 'i' } })).toHaveLength(1);
    expect(applyEntry(s, { t: 'join', inst: 'A', node: a, info: { t: 'i' } })).toEqual([]);
    expect(applyEntry(s, { t: 'join', inst: 'B', node: b, info: { t: 'i' } })).toMatchObject([{ type: 'join', members: [a, b] }]);
    expect(applyEntry(s, { t: 'msg', inst: 'B', node: b, mid: 'm1', msg: { t: 'x' } })).toHaveLength(1);
    expect(applyEntry(s, { t: 'msg', inst: 'B', node: b, mid: 'm1', msg: { t: 'x' } })).toEqual([]);
    expect(applyEntry(s, { t: 'leave', inst: 'A', node: a })).toMatchObject([{ type: 'leave', node: a, members: [b] }]);
    expect(applyEntry(s, { t: 'leave', inst: 'A', node: a })).toEqual([]);
    expect(applyEntry(s, { t: 'msg', inst: 'A', node: a, mid: 'm2', msg: { t: 'x' } })).toEqual([]);
    // the same address joining again replaces its old incarnation
    expect(applyEntry(s, { t: 'join', inst: 'B2', node: b, info: { t: 'i' } })).toMatchObject([
      { type: 'leave', node: b, members: [] },
      { type: 'join', node: b, members: [b] },
    ]);
  });
});

describe('zookeeper driver specifics', () => {
  afterEach(async () => {
    await killAllMembers();
  });

  const client = async () => {
    const c = zookeeper.createClient(zk.hostPort, { sessionTimeout: 2000 });
    await new Promise<void>((r) => { c.once('connected', () => r()); c.connect(); });
    return c;
  };
  const children = (c: zookeeper.Client, p: string) =>
    new Promise<string[]>((res, rej) => c.getChildren(p, (e, ch) => (e ? rej(e) : res(ch))));

  it('garbage-collects the queue once every member has read it', async () => {
    const id = uniqueClusterId();
    const spec = await specFor(id);
    const ms: Member[] = [];
    for (let i = 0; i < 3; i++) {
      const m = Member.spawn(spec, await memberPort());
      await m.started$();
      ms.push(m);
    }
    const N = 100;
    for (let i = 0; i < N; i++) for (const m of ms) m.notify({ t: 'gc', i });
    for (const m of ms) await m.until('all messages', () => m.messages().length === N * 3, 20_000);
    const c = await client();
    try {
      const q = `/sheepdog/${id}/queue`;
      const deadline = Date.now() + 8000;
      let n = (await children(c, q)).length;
      while (n > 10 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        n = (await children(c, q)).length;
      }
      expect(n, 'queue entries left').toBeLessThanOrEqual(10);
      // a newcomer still learns the full list from the snapshot
      const late = Member.spawn(spec, await memberPort());
      await late.started$();
      expect((late.events[0] as { members: number[] }).members).toEqual([...ms.map((m) => m.port), late.port]);
      late.notify({ t: 'late' });
      for (const m of [...ms, late]) await m.until('late message', () => m.messages().some((e) => e.msg.t === 'late'));
      expectSameOrder([...ms, late]);
    } finally {
      c.close();
    }
  });

  it('a member whose session expires leaves the group and exits', async () => {
    const spec = await specFor();
    const ms: Member[] = [];
    for (let i = 0; i < 3; i++) {
      const m = Member.spawn(spec, await memberPort());
      await m.started$();
      ms.push(m);
    }
    for (const m of ms) await m.until('3 members', () => m.view()?.length === 3);
    const [a, b, c] = ms;
    // freeze c past its session timeout: the others see it leave
    process.kill(c.proc.pid!, 'SIGSTOP');
    try {
      for (const m of [a, b]) await m.until('c leaves', () => m.events.some((e) => e.type === 'leave' && e.node === c.port), 5000);
    } finally {
      process.kill(c.proc.pid!, 'SIGCONT');
    }
    // c wakes up to an expired session and must not go on with a stale view
    await c.until('c exits', () => c.closed, 10_000);
    expect(c.exitCode).toBe(1);
    expect(c.stderr).toMatch(/zookeeper driver: .*(expired|cut off|leave|gone)/);
    expect(c.events.some((e) => e.type === 'leave')).toBe(false);
    a.notify({ t: 'after' });
    for (const m of [a, b]) await m.until('after', () => m.messages().some((e) => e.msg.t === 'after'));
    expectSameOrder([a, b]);
  });

  it('a joiner clears out members of a cluster that died unwatched', async () => {
    const spec = await specFor();
    const old: Member[] = [];
    for (let i = 0; i < 2; i++) {
      const m = Member.spawn(spec, await memberPort());
      await m.started$();
      old.push(m);
    }
    for (const m of old) await m.kill();
    // let their sessions expire
    await new Promise((r) => setTimeout(r, TIMEOUT * 2 + 500));
    const m = Member.spawn(spec, await memberPort());
    await m.started$();
    expect(m.events[0]).toEqual({ type: 'join', node: m.port, members: [m.port] });
  });

  it('createDriver rejects a malformed zookeeper spec', async () => {
    const { createDriver } = await import('../../sheep/src/cluster/index.js');
    await expect(createDriver('zookeeper:')).rejects.toThrow(/no server given/);
    await expect(createDriver('zookeeper:127.0.0.1:2181,timeout=x')).rejects.toThrow(/not a number/);
  });
});
