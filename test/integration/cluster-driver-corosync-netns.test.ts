// Three corosync nodes, each in a network namespace of its own
// (10.231.0.1-3 on a bridge in a fourth namespace, all created and removed
// by this test), one driver member on each: they form one group over knet,
// and when a whole node's corosync vanishes (SIGKILL; CPG reports NODEDOWN)
// the members on the other nodes see its member leave, while the member on
// that node exits saying why. Needs root, corosync, iproute2 and unshare;
// fails saying which is missing.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { startCorosync, hasCorosync, canNetns, makeTestNet, quorate, CorosyncServer, TestNet } from '../helpers/corosync.js';
import { ROOT } from '../helpers/cluster.js';
import { lineReader } from '../../sheep/src/util.js';
import { requirePrereq } from '../helpers/prereq.js';

const NODE_BIN = path.join(ROOT, 'test/helpers/driver-node.mjs');
requirePrereq(!hasCorosync() ? 'Debian\'s corosync is not installed (apt-get install corosync libcpg-dev)'
  : !canNetns() && 'network namespaces are unavailable (needs root, iproute2 and unshare)');

type Ev = { type: string; node?: number; from?: number; members?: number[]; msg?: { t: string } };

class NsMember {
  events: Ev[] = [];
  started = false;
  stderr = '';
  exitCode: number | null | undefined;
  readonly proc: ChildProcess;
  constructor(ns: string, spec: string, readonly port: number) {
    this.proc = spawn('ip', ['netns', 'exec', ns, process.execPath, NODE_BIN, spec, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    lineReader(this.proc.stdout!, (line) => {
      const o = JSON.parse(line);
      if (o.type === 'started') this.started = true;
      else this.events.push(o);
    });
    this.proc.stderr!.on('data', (b) => (this.stderr += b));
    this.proc.stdin!.on('error', () => undefined);
    this.proc.once('close', (code) => (this.exitCode = code));
  }
  async until(what: string, pred: () => boolean, ms = 20_000): Promise<void> {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`${this.port}: timed out waiting for ${what}; events ${JSON.stringify(this.events)}; stderr ${this.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  view = () => [...this.events].reverse().find((e) => e.members)?.members;
  send = (l: string) => this.proc.stdin!.write(l + '\n');
  kill(): void {
    if (this.exitCode === undefined) try { this.proc.kill('SIGKILL'); } catch { /* gone */ }
  }
}

describe('corosync driver across three namespaced corosync nodes', () => {
  let net: TestNet;
  const coros: CorosyncServer[] = [];
  const members: NsMember[] = [];

  beforeAll(async () => {
    net = makeTestNet(3);
    const nodes: [number, string][] = [1, 2, 3].map((i) => [i, net.addr(i)]);
    for (let i = 1; i <= 3; i++) coros.push(await startCorosync({ netns: net.names[i - 1], nodeid: i, nodes, clusterName: 'sdns' }));
    // the ring is whole (every node quorate) before any member joins
    const end = Date.now() + 30_000;
    while (!net.names.every((ns) => quorate(ns))) {
      if (Date.now() > end) throw new Error(`the three corosync nodes did not form a ring:\n${coros.map((c) => c.output()).join('\n')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }, 120_000);

  afterAll(async () => {
    for (const m of members) m.kill();
    for (const c of coros) await c.stop();
    net?.destroy();
  });

  it('one member per node forms one group; losing a whole node is a leave for the rest', async () => {
    const spec = `corosync:ns${process.pid}`;
    for (let i = 0; i < 3; i++) {
      const m = new NsMember(net.names[i], spec, 8101 + i);
      members.push(m);
      await m.until('start', () => m.started);
    }
    const order = [8101, 8102, 8103];
    for (const m of members) await m.until('3 members', () => m.view()?.length === 3);
    for (const m of members) expect(m.view()).toEqual(order);
    for (let i = 0; i < 5; i++) for (const m of members) m.send(`notify {"t":"x","i":${i},"from":${m.port}}`);
    for (const m of members) await m.until('15 messages', () => m.events.filter((e) => e.type === 'message').length === 15);
    const ref = members[0].events.filter((e) => e.type === 'message');
    for (const m of members) expect(m.events.filter((e) => e.type === 'message')).toEqual(ref);

    // node 3's corosync vanishes
    const t0 = Date.now();
    await coros[2].kill();
    const [a, b, c] = members;
    for (const m of [a, b]) await m.until('node 3 leaves', () => m.events.some((e) => e.type === 'leave' && e.node === 8103));
    console.info(`loss of a whole corosync node seen after ${Date.now() - t0} ms`);
    for (const m of [a, b]) expect(m.events.filter((e) => e.type === 'leave')).toEqual([{ type: 'leave', node: 8103, members: [8101, 8102] }]);
    // the member on the lost node is cut off and says so
    await c.until('exit', () => c.exitCode !== undefined);
    expect(c.exitCode).toBe(1);
    expect(c.stderr).toMatch(/corosync driver: lost the connection to corosync/);
    // the rest carry on
    a.send('notify {"t":"after"}');
    for (const m of [a, b]) await m.until('after', () => m.events.some((e) => e.msg?.t === 'after'));
    expect(b.events.slice(b.events.findIndex((e) => e.type === 'leave'))).toEqual(a.events.slice(a.events.findIndex((e) => e.type === 'leave')));
  });
});
