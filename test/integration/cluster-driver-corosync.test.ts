// The corosync cluster driver against a real single-node corosync on
// 127.0.0.1 (knet): the common driver conformance suite, the shared
// multi-node sheep scenarios, plus what only this driver has. Needs Debian's corosync and the native CPG addon
// (sheep/native/cpg, built by `npm run build` where libcpg-dev is installed).
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { startCorosync, hasCorosync, CorosyncServer } from '../helpers/corosync.js';
import { driverConformance, Member, killAllMembers, expectSameOrder, memberPort } from '../helpers/driver-conformance.js';
import { clusterScenarios } from '../helpers/cluster-scenarios.js';
import { requirePrereq } from '../helpers/prereq.js';

let coro: CorosyncServer | undefined;
let groupNo = 0;
const specFor = async () => `corosync:t${process.pid}-${++groupNo}-${Math.random().toString(36).slice(2, 8)}`;

requirePrereq(!hasCorosync() && 'Debian\'s corosync is not installed (apt-get install corosync libcpg-dev)');

describe('corosync driver (real corosync on 127.0.0.1)', () => {
  beforeAll(async () => {
    coro = await startCorosync();
  }, 120_000);
  afterAll(async () => {
    await killAllMembers();
    await coro?.stop();
  });

  driverConformance(specFor, { detectMs: 2000 });

  // format, write, kill -9, recovery, restart: the same as every driver
  clusterScenarios('corosync driver', specFor);

  describe('corosync driver specifics', () => {
    afterEach(async () => {
      await killAllMembers();
    });

    it('the default group is "sheepdog" and groups are separate', async () => {
      const a = Member.spawn('corosync', await memberPort());
      const b = Member.spawn(await specFor(), await memberPort());
      await a.started$();
      await b.started$();
      expect(a.events[0]).toMatchObject({ type: 'join', node: a.port, members: [a.port] });
      expect(b.events[0]).toMatchObject({ type: 'join', node: b.port, members: [b.port] });
      a.notify({ t: 'in-a' });
      await a.until('own message', () => a.messages().length === 1);
      await new Promise((r) => setTimeout(r, 200));
      expect(b.messages()).toEqual([]);
    });

    it('many members starting at once agree on one order', async () => {
      const spec = await specFor();
      const ms = await Promise.all([...Array(6)].map(async () => Member.spawn(spec, await memberPort())));
      await Promise.all(ms.map((m) => m.started$()));
      for (const m of ms) await m.until('6 members', () => m.view()?.length === 6);
      const order = ms[0].view()!;
      for (const m of ms) expect(m.view()).toEqual(order);
      expectSameOrder(ms);
    });

    it('members killed while others join: the survivors and joiners agree', async () => {
      const spec = await specFor();
      const first: Member[] = [];
      for (let i = 0; i < 3; i++) {
        const m = Member.spawn(spec, await memberPort());
        await m.started$();
        first.push(m);
      }
      // two join while the two oldest are killed
      const joiners = await Promise.all([0, 1].map(async () => Member.spawn(spec, await memberPort())));
      await Promise.all([first[0].kill(), first[1].kill()]);
      await Promise.all(joiners.map((m) => m.started$()));
      const alive = [first[2], ...joiners];
      for (const m of alive) await m.until('3 members', () => m.view()?.length === 3, 15_000);
      for (let i = 0; i < 5; i++) for (const m of alive) m.notify({ t: 'z', i });
      for (const m of alive) await m.until('15 messages', () => m.messages().filter((e) => e.msg.t === 'z').length === 15);
      expectSameOrder(alive);
      expect(new Set(first[2].view())).toEqual(new Set(alive.map((m) => m.port)));
    });

    it('a lone joiner whose only established peer dies before welcoming it starts a new group', async () => {
      const spec = await specFor();
      const a = Member.spawn(spec, await memberPort());
      await a.started$();
      // freeze a so that it cannot welcome b, then kill it
      process.kill(a.proc.pid!, 'SIGSTOP');
      const b = Member.spawn(spec, await memberPort());
      await new Promise((r) => setTimeout(r, 500));
      expect(b.started).toBe(false);
      await a.kill();
      await b.started$();
      expect(b.events[0]).toEqual({ type: 'join', node: b.port, members: [b.port] });
      const c = Member.spawn(spec, await memberPort());
      await c.started$();
      expect(c.events[0]).toEqual({ type: 'join', node: c.port, members: [b.port, c.port] });
      expectSameOrder([b, c]);
    });
  });
});
