// Failure stories that need ZooKeeper's own timing: a dead member's
// ephemeral znode outlives it by its session timeout, so nodes that start in
// that window see it listed as a member (a "ghost"). Real ZooKeeper, real
// sheep processes, real kill -9, checked byte for byte.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Res } from '@sheepdog/common';
import { startSheep, stopAll, waitFor, uniqueClusterId, SheepProc } from '../helpers/cluster.js';
import { formatCluster, nodeList, clusterStatus, recoveryIdle, epochOf } from '../helpers/cluster-scenarios.js';
import { startZooKeeper, ZooKeeperServer } from '../helpers/zookeeper.js';
import { Wire } from '../helpers/wire.js';

const MB = 1 << 20;
const OBJ = 4 * MB;

let zk: ZooKeeperServer;
beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await zk?.stop();
});
const dirs: string[] = [];
afterEach(async (ctx) => {
  // DEBUG_CHURN=1: the logs of every node of a failed story
  if (process.env.DEBUG_CHURN && ctx.task.result?.state === 'fail') {
    for (const d of dirs) console.log(`=== ${d}\n${await fsp.readFile(path.join(d, 'sheep.log'), 'utf8').catch(() => '')}`);
    console.log(`=== ZooKeeper\n${zk.output().split('\n').filter((l) => !/ INFO /.test(l)).slice(-60).join('\n')}`);
  }
  dirs.length = 0;
  await stopAll();
});

async function withWire<T>(port: number, fn: (w: Wire) => Promise<T>, timeoutMs?: number): Promise<T> {
  const w = new Wire(port, timeoutMs);
  try {
    return await fn(w);
  } finally {
    w.close();
  }
}

describe('zookeeper churn', () => {
  it('nodes restarted while the newest member\'s dead session lingers wait for it, never resume from their older epoch', async () => {
    // Churn simulator, seed 1712: the survivor holding the newest data died;
    // the stale nodes restarted while its znode still existed, took it for a
    // member, and resumed the cluster at their old epoch once it expired.
    const id = uniqueClusterId();
    const spec = (timeoutMs: number) => `zookeeper:${zk.hostPort}/${id},timeout=${timeoutMs}`;
    // the survivor's session outlives it by 10 s: the window the others restart in
    let a = await startSheep({ cluster: spec(10_000), args: ['-z', '0'] });
    let b = await startSheep({ cluster: spec(3000), args: ['-z', '1'] });
    let c = await startSheep({ cluster: spec(3000), args: ['-z', '2'] });
    dirs.push(a.dir, b.dir, c.dir);
    await formatCluster(a.port, 3);
    const vid = await withWire(a.port, async (w) => (await w.newVdi('ghost', 40n * BigInt(MB))).rsp.vdi.vdiId);
    const old = Array.from({ length: 10 }, () => randomBytes(512));
    await withWire(a.port, async (w) => { for (let i = 0; i < 10; i++) await w.writeVdi(vid, i * OBJ, old[i]); });

    // B and C die; A goes on alone and takes new writes
    const [bDir, bPort, cDir, cPort] = [b.dir, b.port, c.dir, c.port];
    await Promise.all([b.kill(), c.kill()]);
    await waitFor(async () => (await nodeList(a.port)).length === 1 && (await clusterStatus(a.port)) === Res.SUCCESS && (await recoveryIdle(a.port)), 30_000, 'A alone');
    const fresh = Array.from({ length: 10 }, () => randomBytes(512));
    await withWire(a.port, async (w) => { for (let i = 0; i < 10; i++) await w.writeVdi(vid, i * OBJ, fresh[i]); });
    const newest = await epochOf(a.port);

    // A dies; B and C restart while its session still lives
    const [aDir, aPort] = [a.dir, a.port];
    await a.kill();
    const killedAt = Date.now();
    // (each start returns once the ghost is gone: until then the node waits for the state from it)
    [b, c] = await Promise.all([
      startSheep({ dir: bDir, port: bPort, cluster: spec(3000), args: ['-z', '1'] }),
      startSheep({ dir: cDir, port: cPort, cluster: spec(3000), args: ['-z', '2'] }),
    ]);
    // the ghost goes when its session expires (10 s), and the others must still wait
    await new Promise((r) => setTimeout(r, Math.max(0, killedAt + 14_000 - Date.now())));
    for (const s of [b, c]) {
      expect(await clusterStatus(s.port), `${s.port} must wait for A, the holder of the newest epoch`).not.toBe(Res.SUCCESS);
      const r = await withWire(s.port, (w) => w.readVdi(vid, 0, 512).then((d) => d, (e: Error) => e));
      if (Buffer.isBuffer(r)) expect(r.equals(old[0]), `${s.port} served the stale copy`).toBe(false);
    }

    // A comes back: the cluster resumes from A's epoch, and every node serves A's data
    a = await startSheep({ dir: aDir, port: aPort, cluster: spec(3000), args: ['-z', '0'] });
    const all: SheepProc[] = [a, b, c];
    await waitFor(async () => {
      const st = await Promise.all(all.map((s) => clusterStatus(s.port)));
      if (st.some((x) => x !== Res.SUCCESS)) return false;
      const eps = await Promise.all(all.map((s) => epochOf(s.port)));
      return new Set(eps).size === 1 && eps[0] > newest && (await Promise.all(all.map((s) => recoveryIdle(s.port)))).every(Boolean);
    }, 60_000, 'the cluster to resume with A');
    for (const s of all) {
      await withWire(s.port, async (w) => {
        for (let i = 0; i < 10; i++) expect((await w.readVdi(vid, i * OBJ, 512)).equals(fresh[i]), `object ${i} via ${s.port}`).toBe(true);
      });
    }
  }, 180_000);

  it('a ZooKeeper restart longer than the session timeout holds requests, and the nodes go on once it is back', async () => {
    const id = uniqueClusterId();
    const spec = `zookeeper:${zk.hostPort}/${id},timeout=10000`;
    const nodes: SheepProc[] = [];
    for (let z = 0; z < 3; z++) nodes.push(await startSheep({ cluster: spec, args: ['-z', String(z)] }));
    dirs.push(...nodes.map((n) => n.dir));
    await formatCluster(nodes[0].port, 2);
    const vid = await withWire(nodes[0].port, async (w) => (await w.newVdi('zkdown', 40n * BigInt(MB))).rsp.vdi.vdiId);
    const data = Array.from({ length: 10 }, () => randomBytes(4096));
    await withWire(nodes[1].port, async (w) => { for (let i = 0; i < 10; i++) await w.writeVdi(vid, i * OBJ, data[i]); });
    const epoch = await epochOf(nodes[0].port);
    // down for 13 s: the sessions (10 s) outlive it only because ZooKeeper keeps them
    // across its restart; meanwhile every node holds its requests instead of exiting
    await zk.restart(13_000);
    const fresh = randomBytes(4096);
    await waitFor(async () => withWire(nodes[2].port, async (w) => {
      await w.writeVdi(vid, 3 * OBJ, fresh);
      return (await w.readVdi(vid, 0, 4096)).equals(data[0]);
    }, 120_000).catch(() => false), 120_000, 'I/O once ZooKeeper is back');
    for (const n of nodes) {
      expect(n.proc.exitCode, `${n.port} still runs`).toBeNull();
      expect(await epochOf(n.port), 'no membership change').toBe(epoch);
      await withWire(n.port, async (w) => {
        for (let i = 0; i < 10; i++) expect((await w.readVdi(vid, i * OBJ, 4096)).equals(i === 3 ? fresh : data[i]), `object ${i} via ${n.port}`).toBe(true);
      });
    }
    const log = await fsp.readFile(path.join(nodes[2].dir, 'sheep.log'), 'utf8');
    expect(log).toMatch(/requests wait until it is back/);
    expect(log).toMatch(/the session is still valid/);
  }, 180_000);
});
