// A node that asked the local driver's sequencer to join, and lost it
// before its join was announced, must still join through the next
// sequencer. Chaos seed 5101: such a node reconnected as a "member"; the new
// sequencer counted it in without a join event, so it waited for its own
// join for good (answering "waiting for other nodes to join" to everyone)
// while every other node's recovery waited for its object list, and every
// request behind those, for 150 s. The old sequencer is played here by
// the test, so that it dies exactly between the hello and the join.
import { it, expect, afterEach } from 'vitest';
import * as net from 'node:net';
import { makeNode, type SdNode } from '@sheepdog/common';
import { LocalDriver } from '../../sheep/src/cluster/local.js';
import { encodeMessage, decodeMessage, type ClusterEvent } from '../../sheep/src/cluster/driver.js';
import { lineReader } from '../../sheep/src/util.js';
import { uniqueClusterId } from '../helpers/cluster.js';

const drivers: LocalDriver[] = [];
afterEach(async () => {
  for (const d of drivers.splice(0)) await d.leave().catch(() => undefined);
});

/**
 * The old sequencer, played by the test: it lets member c join in a group
 * with `away` (a member that will not come back, so the next sequencer
 * waits for it a while), and answers no other hello.
 */
async function dyingSequencer(id: string) {
  const old = makeNode('127.0.0.1', 1);
  const away = makeNode('127.0.0.1', 2);
  const c = makeNode('127.0.0.1', 3);
  const socks: net.Socket[] = [];
  const hellos: { node: SdNode; member: boolean }[] = [];
  const srv = net.createServer((sock) => {
    socks.push(sock);
    lineReader(sock, (line) => {
      const m = decodeMessage<{ op: string; node: SdNode; member: boolean; info: unknown }>(line);
      if (m.op !== 'hello') return;
      hellos.push({ node: m.node, member: m.member });
      if (m.node.port !== c.port) return;
      sock.write(encodeMessage({ op: 'coord', node: old }) + '\n');
      sock.write(encodeMessage({ op: 'event', ev: { seq: 1, type: 'join', node: c, members: [away, c], info: m.info } }) + '\n');
    });
  });
  await new Promise<void>((r) => srv.listen(`\0sheepdog-local/${id}`, r));
  const cEvents: ClusterEvent[] = [];
  const dc = new LocalDriver(id);
  drivers.push(dc);
  await dc.start(c, { t: 'join', who: 'c' }, async (e) => { cEvents.push(e); });
  return { srv, socks, hellos, away, cEvents };
}

it('local: a joiner whose sequencer died before announcing it joins through the next one', async () => {
  const id = uniqueClusterId();
  const { srv, socks, hellos, away, cEvents } = await dyingSequencer(id);
  const b = makeNode('127.0.0.1', 4); // its hello gets no answer: the sequencer dies first

  const db = new LocalDriver(id);
  drivers.push(db);
  let bJoined = false;
  const bStart = db.start(b, { t: 'join', who: 'b' }, async () => undefined).then(() => { bJoined = true; });
  while (!hellos.some((h) => h.node.port === b.port)) await new Promise((r) => setTimeout(r, 10));

  // the sequencer dies: c takes over (and waits for `away`), then b finds it during that wait
  srv.close(); // stops listening at once (its callback waits for the connections)
  const [cSock, bSock] = socks;
  cSock.destroy();
  await new Promise((r) => setTimeout(r, 200));
  bSock.destroy();

  await Promise.race([bStart, new Promise((r) => setTimeout(r, 8000))]);
  expect(bJoined, 'b is told it joined').toBe(true);
  // c heard of b through a join event, not by b just being there
  expect(cEvents.some((e) => e.type === 'join' && e.node.port === b.port)).toBe(true);
  expect(cEvents.some((e) => e.type === 'leave' && e.node.port === away.port)).toBe(true);
}, 30_000);

it('local: a "member" hello that never saw an event, during a sequencer change, is taken as a join', async () => {
  const id = uniqueClusterId();
  const { srv, socks, cEvents } = await dyingSequencer(id);
  const x = makeNode('127.0.0.1', 5); // an older sheep that reconnects as a member before it was announced
  srv.close();
  socks[0].destroy();
  await new Promise((r) => setTimeout(r, 200)); // c sequences now, waiting for `away`
  const raw = net.connect(`\0sheepdog-local/${id}`);
  const got: { op: string; ev?: { type: string; node: SdNode } }[] = [];
  lineReader(raw, (line) => got.push(decodeMessage(line)));
  await new Promise<void>((r) => raw.once('connect', () => r()));
  raw.write(encodeMessage({ op: 'hello', node: x, info: { t: 'join' }, member: true, lastSeq: 0, members: [], tail: [], pending: [] }) + '\n');
  try {
    for (let i = 0; i < 100 && !got.some((m) => m.ev?.type === 'join' && m.ev.node.port === x.port); i++) await new Promise((r) => setTimeout(r, 50));
    expect(got.some((m) => m.ev?.type === 'join' && m.ev.node.port === x.port), 'x is announced').toBe(true);
    expect(cEvents.some((e) => e.type === 'join' && e.node.port === x.port)).toBe(true);
  } finally {
    raw.destroy();
  }
}, 30_000);
