// Multi-node scenarios shared by every cluster driver's test file:
// replication, kill -9 mid-write, joins, losing two of five, zones and a
// whole-cluster restart — always checked byte for byte and against the
// placement algorithm.
import { describe, it, expect, afterEach } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  Op, Flag, Res, ClusterFlag, timestamp64, vidToDataOid, vidToVdiOid, oidToHex, decodeNodes, VnodeRing,
  decodeRecoveryState, SdNode,
} from '@sheepdog/common';
import { startCluster, stopAll, waitFor, SheepProc, startSheep, ClusterHandle } from './cluster.js';
import { Wire } from './wire.js';

const MB = 1 << 20;
export const hasObj = (s: SheepProc, oid: bigint) =>
  fsp.access(path.join(s.dir, 'obj', oidToHex(oid))).then(() => true, () => false);

async function withWire<T>(port: number, fn: (w: Wire) => Promise<T>): Promise<T> {
  const w = new Wire(port);
  try {
    return await fn(w);
  } finally {
    w.close();
  }
}

export const nodeList = (port: number): Promise<SdNode[]> =>
  withWire(port, async (w) => decodeNodes((await w.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 })).data));

export const epochOf = (port: number): Promise<number> =>
  withWire(port, async (w) => (await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} })).rsp.epoch);

export const clusterStatus = (port: number): Promise<number> =>
  withWire(port, async (w) => (await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} })).rsp.result);

export const recoveryIdle = (port: number): Promise<boolean> =>
  withWire(port, async (w) => !decodeRecoveryState((await w.send({ opcode: Op.STAT_RECOVERY, dataLength: 24 })).data).inRecovery);

export async function formatCluster(port: number, copies: number): Promise<void> {
  await withWire(port, async (w) => {
    const r = await w.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES } }, Buffer.from('plain\0'));
    if (r.rsp.result !== Res.SUCCESS) throw new Error(`format: ${r.rsp.result}`);
  });
}

/** Where the objects are vs. where placement says they must be. */
export async function placementMismatch(nodes: SheepProc[], oids: bigint[], copies: number): Promise<string | undefined> {
  const ring = new VnodeRing(await nodeList(nodes[0].port));
  for (const oid of oids) {
    const want = ring.placeOid(oid, copies).map((n) => n.port).sort();
    const have: number[] = [];
    for (const s of nodes) if (await hasObj(s, oid)) have.push(s.port);
    have.sort();
    if (JSON.stringify(have) !== JSON.stringify(want)) return `${oidToHex(oid)} on ${have} but placement says ${want}`;
  }
  return undefined;
}

/** Wait for all nodes to agree on the epoch, finish recovery and match placement. */
export async function settle(nodes: SheepProc[], oids: bigint[], copies: number, epoch?: number, timeoutMs = 60_000): Promise<void> {
  await waitFor(async () => {
    const eps = await Promise.all(nodes.map((s) => epochOf(s.port)));
    if (epoch !== undefined && eps.some((e) => e !== epoch)) return false;
    if (new Set(eps).size !== 1) return false;
    if (!(await Promise.all(nodes.map((s) => recoveryIdle(s.port)))).every(Boolean)) return false;
    return (await placementMismatch(nodes, oids, copies)) === undefined;
  }, timeoutMs, 'the cluster to settle').catch(async (e) => {
    throw new Error(`${e.message}; ${await placementMismatch(nodes, oids, copies)}`);
  });
}

const vdiOids = (vid: number, dataObjs: number[]) => [vidToVdiOid(vid), ...dataObjs.map((i) => vidToDataOid(vid, i))];

export function clusterScenarios(name: string, specFor: () => Promise<string>) {
  describe(`${name} cluster scenarios`, () => {
    afterEach(() => stopAll());

    it('4 nodes, copies=3: kill -9 mid-write, every byte and 3 copies again', async () => {
      const c = await startCluster(4, { cluster: await specFor() });
      const [a, b] = c.nodes;
      await waitFor(async () => (await nodeList(a.port)).length === 4, 10_000, '4 members');
      await formatCluster(a.port, 3);
      await withWire(a.port, async (w) => {
        const vid = (await w.newVdi('Alice', 256n * BigInt(MB))).rsp.vdi.vdiId;
        const data = randomBytes(16 * MB);
        await w.writeVdi(vid, 0, data);
        await settle(c.nodes, vdiOids(vid, [0, 1, 2, 3]), 3, 1);
        // kill -9 a node while large writes are in flight: into new
        // objects, and over existing ones (on another connection, so both
        // are under way at once)
        const more = randomBytes(16 * MB);
        const over = Buffer.from(data);
        let stop = false;
        const writing = w.writeVdi(vid, 40 * MB, more);
        // 8 writers, each over its own 256 KiB pieces of the first 16 MiB,
        // round and round until well after the kill
        const overwriting = withWire(a.port, (wo) => Promise.all(Array.from({ length: 8 }, async (_, k) => {
          const P = 256 * 1024;
          for (let i = k; !stop; i = (i + 8) % 64) {
            const piece = randomBytes(P);
            const r = await wo.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, Math.floor((i * P) / (4 * MB))), offset: (i * P) % (4 * MB) } }, piece);
            expect(r.rsp.result).toBe(Res.SUCCESS);
            piece.copy(over, i * P);
          }
        })));
        await new Promise((r) => setTimeout(r, 20));
        // frozen first, so that requests to it are surely in flight when it dies
        c.nodes[3].proc.kill('SIGSTOP');
        await new Promise((r) => setTimeout(r, 200));
        await c.nodes[3].kill();
        await writing;
        await new Promise((r) => setTimeout(r, 500));
        stop = true;
        await overwriting;
        const alive = c.nodes.slice(0, 3);
        await settle(alive, vdiOids(vid, [0, 1, 2, 3, 10, 11, 12, 13]), 3, 2);
        expect((await w.readVdi(vid, 0, 16 * MB)).equals(over)).toBe(true);
        await withWire(b.port, async (wb) => {
          expect((await wb.readVdi(vid, 40 * MB, 16 * MB)).equals(more)).toBe(true);
        });
      });
    });

    it('the first node (and sequencer) dies; a new node joins and data rebalances', async () => {
      const c = await startCluster(3, { cluster: await specFor() });
      const [a, b, d] = c.nodes;
      await waitFor(async () => (await nodeList(b.port)).length === 3, 10_000, '3 members');
      await formatCluster(b.port, 2);
      const data = randomBytes(12 * MB);
      const vid = await withWire(b.port, async (w) => {
        const v = (await w.newVdi('Bob', 64n * BigInt(MB))).rsp.vdi.vdiId;
        await w.writeVdi(v, 0, data);
        return v;
      });
      await a.kill();
      await settle([b, d], vdiOids(vid, [0, 1, 2]), 2, 2);
      const e = await c.add({ args: ['-z', '7'] });
      await settle([b, d, e], vdiOids(vid, [0, 1, 2]), 2, 3);
      await withWire(e.port, async (w) => {
        expect((await w.readVdi(vid, 0, 12 * MB)).equals(data)).toBe(true);
        // the cluster still takes VDI operations after losing its first node
        expect((await w.newVdi('Carol', 8n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
      });
    });

    it('5 nodes, copies=3: losing two keeps every byte', async () => {
      const c = await startCluster(5, { cluster: await specFor() });
      await waitFor(async () => (await nodeList(c.nodes[0].port)).length === 5, 10_000, '5 members');
      await formatCluster(c.nodes[0].port, 3);
      const data = randomBytes(20 * MB);
      const vid = await withWire(c.nodes[1].port, async (w) => {
        const v = (await w.newVdi('Five', 64n * BigInt(MB))).rsp.vdi.vdiId;
        await w.writeVdi(v, 0, data);
        return v;
      });
      const oids = vdiOids(vid, [0, 1, 2, 3, 4]);
      await settle(c.nodes, oids, 3, 1);
      await c.nodes[1].kill();
      await c.nodes[3].kill();
      const alive = [c.nodes[0], c.nodes[2], c.nodes[4]];
      await settle(alive, oids, 3);
      for (const s of alive) {
        await withWire(s.port, async (w) => expect((await w.readVdi(vid, 0, 20 * MB)).equals(data)).toBe(true));
      }
    });

    it('zones: no two copies in one zone', async () => {
      const zones = [0, 0, 1, 1];
      const c = await startCluster(4, { cluster: await specFor(), args: (i) => ['-z', String(zones[i])] });
      await waitFor(async () => (await nodeList(c.nodes[0].port)).length === 4, 10_000, '4 members');
      await formatCluster(c.nodes[0].port, 3);
      const vid = await withWire(c.nodes[0].port, async (w) => {
        const v = (await w.newVdi('Zoned', 64n * BigInt(MB))).rsp.vdi.vdiId;
        await w.writeVdi(v, 0, randomBytes(16 * MB));
        return v;
      });
      const zoneOf = new Map(c.nodes.map((s, i) => [s.port, zones[i]]));
      // two zones: three copies are capped at two, one per zone
      await settle(c.nodes, vdiOids(vid, [0, 1, 2, 3]), 3, 1);
      for (const oid of vdiOids(vid, [0, 1, 2, 3])) {
        const holders: number[] = [];
        for (const s of c.nodes) if (await hasObj(s, oid)) holders.push(zoneOf.get(s.port)!);
        expect(holders.sort()).toEqual([0, 1]);
      }
    });

    it('client I/O goes on during a slow (throttled) recovery', async () => {
      const c = await startCluster(4, { cluster: await specFor() });
      await waitFor(async () => (await nodeList(c.nodes[0].port)).length === 4, 10_000, '4 members');
      await formatCluster(c.nodes[0].port, 2);
      const data = randomBytes(32 * MB);
      const vid = await withWire(c.nodes[0].port, async (w) => {
        const v = (await w.newVdi('Slow', 64n * BigInt(MB))).rsp.vdi.vdiId;
        await w.writeVdi(v, 0, data);
        return v;
      });
      const { encodeThrottling } = await import('@sheepdog/common');
      const throttle = (t: { maxExecCount: number; queueWorkInterval: bigint; throttling: boolean }) => Promise.all(
        alive.map((s) => withWire(s.port, async (w) => {
          expect((await w.send({ opcode: Op.SET_RECOVERY, flags: Flag.CMD_WRITE }, encodeThrottling(t))).rsp.result).toBe(Res.SUCCESS);
        })));
      const alive = c.nodes.slice(0, 3);
      await throttle({ maxExecCount: 1, queueWorkInterval: 500n, throttling: true });
      await c.nodes[3].kill();
      await waitFor(async () => (await Promise.all(alive.map((s) => epochOf(s.port)))).every((e) => e === 2), 10_000, 'epoch 2');
      const busy = await Promise.all(alive.map(async (s) => !(await recoveryIdle(s.port))));
      expect(busy.some(Boolean)).toBe(true);
      // meanwhile, read and write through every survivor
      for (const s of alive) {
        await withWire(s.port, async (w) => {
          expect((await w.readVdi(vid, 0, 32 * MB)).equals(data)).toBe(true);
          const patch = randomBytes(MB);
          const at = (2 + alive.indexOf(s) * 9) * MB;
          await w.writeVdi(vid, at, patch);
          patch.copy(data, at);
        });
      }
      await throttle({ maxExecCount: 0, queueWorkInterval: 0n, throttling: false });
      await settle(alive, vdiOids(vid, [0, 1, 2, 3, 4, 5, 6, 7]), 2, 2);
      for (const s of alive) await withWire(s.port, async (w) => expect((await w.readVdi(vid, 0, 32 * MB)).equals(data)).toBe(true));
    });

    it('a killed node restarts on its directory, rejoins and catches up', async () => {
      const spec = await specFor();
      const c = await startCluster(3, { cluster: spec });
      const [a, b, d] = c.nodes;
      await waitFor(async () => (await nodeList(a.port)).length === 3, 10_000, '3 members');
      await formatCluster(a.port, 3);
      const first = randomBytes(8 * MB);
      const vid = await withWire(a.port, async (w) => {
        const v = (await w.newVdi('Back', 64n * BigInt(MB))).rsp.vdi.vdiId;
        await w.writeVdi(v, 0, first);
        return v;
      });
      await d.kill();
      await settle([a, b], vdiOids(vid, [0, 1]), 3, 2);
      // written while d is away: d's old copies are now stale
      const second = randomBytes(8 * MB);
      await withWire(b.port, (w) => w.writeVdi(vid, 0, second));
      const d2 = await startSheep({ dir: d.dir, port: d.port, cluster: spec, args: ['-z', '2'] });
      await settle([a, b, d2], vdiOids(vid, [0, 1]), 3, 3);
      await withWire(d2.port, async (w) => {
        // reads served by d2 itself must be the new bytes
        for (let i = 0; i < 4; i++) expect((await w.readVdi(vid, 0, 8 * MB)).equals(second)).toBe(true);
      });
      const local = await fsp.readFile(path.join(d2.dir, 'obj', oidToHex(vidToDataOid(vid, 0))));
      // the object's bytes, then its block checksums (one CRC-32 per 4 KiB)
      expect(local.length).toBe(4 * MB + 4 * (MB / 4096) * 4);
      expect(local.subarray(0, 4 * MB).equals(second.subarray(0, 4 * MB))).toBe(true);
    });

    it('a restarted cluster missing a node can be forced to go on', async () => {
      const spec = await specFor();
      const c = await startCluster(3, { cluster: spec });
      await waitFor(async () => (await nodeList(c.nodes[0].port)).length === 3, 10_000, '3 members');
      await formatCluster(c.nodes[0].port, 2);
      const data = randomBytes(8 * MB);
      const vid = await withWire(c.nodes[0].port, async (w) => {
        const v = (await w.newVdi('Forced', 64n * BigInt(MB))).rsp.vdi.vdiId;
        await w.writeVdi(v, 0, data);
        expect((await w.send({ opcode: Op.SHUTDOWN })).rsp.result).toBe(Res.SUCCESS);
        return v;
      });
      await Promise.all(c.nodes.map((s) => s.exited));
      const back = [
        await startSheep({ dir: c.nodes[0].dir, port: c.nodes[0].port, cluster: spec, args: ['-z', '0'] }),
        await startSheep({ dir: c.nodes[1].dir, port: c.nodes[1].port, cluster: spec, args: ['-z', '1'] }),
      ];
      expect(await clusterStatus(back[0].port)).toBe(Res.WAIT_FOR_JOIN);
      await withWire(back[1].port, async (w) => {
        // WAIT_FOR_JOIN until back[1] has got the cluster state from back[0]
        // (it serves its port before that; slower drivers show the window)
        const r = await waitFor(async () => {
          const res = (await w.send({ opcode: Op.FORCE_RECOVER, dataLength: 491520 })).rsp.result;
          return res !== Res.WAIT_FOR_JOIN && { res };
        }, 10_000, 'back[1] joined');
        expect(r.res).toBe(Res.SUCCESS);
      });
      await waitFor(async () => (await clusterStatus(back[0].port)) === Res.SUCCESS, 10_000, 'running after force');
      await settle(back, vdiOids(vid, [0, 1]), 2, 2);
      await withWire(back[0].port, async (w) => expect((await w.readVdi(vid, 0, 8 * MB)).equals(data)).toBe(true));
    }, 120_000); // two restarts and a forced recovery: minutes on a loaded machine

    it('whole-cluster shutdown and restart with data intact', async () => {
      const spec = await specFor();
      const c = await startCluster(3, { cluster: spec });
      await waitFor(async () => (await nodeList(c.nodes[0].port)).length === 3, 10_000, '3 members');
      await formatCluster(c.nodes[0].port, 3);
      const data = randomBytes(8 * MB);
      const vid = await withWire(c.nodes[0].port, async (w) => {
        const v = (await w.newVdi('Keep', 64n * BigInt(MB))).rsp.vdi.vdiId;
        await w.writeVdi(v, 0, data);
        expect((await w.send({ opcode: Op.SHUTDOWN })).rsp.result).toBe(Res.SUCCESS);
        return v;
      });
      await Promise.all(c.nodes.map((s) => s.exited));
      const back: SheepProc[] = [];
      back.push(await startSheep({ dir: c.nodes[0].dir, port: c.nodes[0].port, cluster: spec, args: ['-z', '0'] }));
      expect(await clusterStatus(back[0].port)).toBe(Res.WAIT_FOR_JOIN);
      back.push(await startSheep({ dir: c.nodes[1].dir, port: c.nodes[1].port, cluster: spec, args: ['-z', '1'] }));
      expect(await clusterStatus(back[0].port)).toBe(Res.WAIT_FOR_JOIN);
      back.push(await startSheep({ dir: c.nodes[2].dir, port: c.nodes[2].port, cluster: spec, args: ['-z', '2'] }));
      await waitFor(async () => (await clusterStatus(back[0].port)) === Res.SUCCESS, 15_000, 'running again');
      expect(await epochOf(back[2].port)).toBe(1);
      await withWire(back[1].port, async (w) => expect((await w.readVdi(vid, 0, 8 * MB)).equals(data)).toBe(true));
    });
  });
}

export type { ClusterHandle };
