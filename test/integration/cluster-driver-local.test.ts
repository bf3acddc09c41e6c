// The driver conformance suite against the embedded `local` driver, and
// what only the local driver has: a sequencer that members elect again.
import { it, expect, afterEach } from 'vitest';
import { driverConformance, Member, memberPort, killAllMembers } from '../helpers/driver-conformance.js';
import { uniqueClusterId } from '../helpers/cluster.js';

driverConformance(async () => `local:${uniqueClusterId()}`);

afterEach(async () => {
  await killAllMembers();
});

it('local: a notify sent by a member the new sequencer gave up on is delivered when it comes back (chaos seed 4105)', async () => {
  const spec = `local:${uniqueClusterId()}`;
  const ms: Member[] = [];
  for (let i = 0; i < 3; i++) {
    const m = Member.spawn(spec, await memberPort());
    await m.started$();
    ms.push(m);
  }
  const [seq, b, c] = ms;
  await b.until('all three', () => b.view()?.length === 3);
  // c is away (paused) when the sequencer dies, and sends while it is away
  process.kill(c.proc.pid!, 'SIGSTOP');
  c.notify({ t: 'while-away' });
  await seq.kill();
  try {
    await b.until('c given up on', () => b.events.some((e) => e.type === 'leave' && e.node === c.port), 20_000);
  } finally {
    process.kill(c.proc.pid!, 'SIGCONT');
  }
  await b.until('c back', () => b.view()?.includes(c.port) === true, 20_000);
  await b.until('the message c sent while away', () => b.messages().some((e) => e.from === c.port && e.msg.t === 'while-away'), 20_000);
  await c.until('its own message', () => c.messages().some((e) => e.from === c.port && e.msg.t === 'while-away'), 20_000);
  expect(b.messages().filter((e) => e.msg.t === 'while-away').length).toBe(1);
}, 90_000);
