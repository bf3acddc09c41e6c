// Several sheep with the local driver: replication, node loss, joins,
// recovery and whole-cluster restart, checked byte for byte.
import { describe, it, expect, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  Op, Flag, Res, ClusterFlag, timestamp64, vidToDataOid, vidToVdiOid, oidToHex, decodeNodes, VnodeRing,
  decodeRecoveryState, SdNode,
} from '@sheepdog/common';
import { startCluster, stopAll, waitFor, SheepProc, startSheep } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';

const MB = 1 << 20;
const hasObj = (s: SheepProc, oid: bigint) => fsp.access(path.join(s.dir, 'obj', oidToHex(oid))).then(() => true, () => false);

async function nodeList(port: number): Promise<SdNode[]> {
  const w = new Wire(port);
  try {
    const r = await w.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 });
    return decodeNodes(r.data);
  } finally {
    w.close();
  }
}

async function epochOf(port: number): Promise<number> {
  const w = new Wire(port);
  try {
    return (await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} })).rsp.epoch;
  } finally {
    w.close();
  }
}

async function recoveryIdle(port: number): Promise<boolean> {
  const w = new Wire(port);
  try {
    const r = await w.send({ opcode: Op.STAT_RECOVERY, dataLength: 24 });
    return !decodeRecoveryState(r.data).inRecovery;
  } finally {
    w.close();
  }
}

/** Every object of the VDI has `copies` replicas exactly where placement says. */
async function checkPlacement(nodes: SheepProc[], oids: bigint[], copies: number) {
  const list = await nodeList(nodes[0].port);
  const ring = new VnodeRing(list);
  for (const oid of oids) {
    const want = ring.placeOid(oid, copies).map((n) => n.port).sort();
    const have: number[] = [];
    for (const s of nodes) if (await hasObj(s, oid)) have.push(s.port);
    expect(have.sort(), `object ${oidToHex(oid)}`).toEqual(want);
  }
}

describe('local driver cluster', () => {
  afterAll(() => stopAll());

  it('replicates, survives kill -9, rebalances on join, restarts whole', async () => {
    const c = await startCluster(3);
    const [a, b] = c.nodes;
    await waitFor(async () => (await nodeList(a.port)).length === 3, 10_000, '3 members');
    const w = new Wire(a.port);
    const fmt = await w.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 3, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES } }, Buffer.from('plain\0'));
    expect(fmt.rsp.result).toBe(Res.SUCCESS);
    for (const s of c.nodes) expect(await epochOf(s.port)).toBe(1);

    const nv = await w.newVdi('Alice', 256n * BigInt(MB));
    expect(nv.rsp.result).toBe(Res.SUCCESS);
    const vid = nv.rsp.vdi.vdiId;
    // the VDI is visible through every node
    const wb = new Wire(b.port);
    expect(await wb.vid('Alice')).toBe(vid);
    const data = randomBytes(24 * MB);
    await w.writeVdi(vid, 0, data);
    const oids = [vidToVdiOid(vid), ...Array.from({ length: 6 }, (_, i) => vidToDataOid(vid, i))];
    await checkPlacement(c.nodes, oids, 3);
    expect((await wb.readVdi(vid, 0, 24 * MB)).equals(data)).toBe(true);

    // kill -9 a node in the middle of writes
    const more = randomBytes(8 * MB);
    const writing = w.writeVdi(vid, 32 * MB, more);
    await new Promise((r) => setTimeout(r, 30));
    await c.nodes[2].kill();
    await writing;
    await waitFor(async () => (await epochOf(a.port)) === 2, 5_000, 'epoch 2 after the kill');
    const alive = c.nodes.slice(0, 2);
    expect((await w.readVdi(vid, 0, 24 * MB)).equals(data)).toBe(true);
    expect((await wb.readVdi(vid, 32 * MB, 8 * MB)).equals(more)).toBe(true);
    const oids2 = [...oids, vidToDataOid(vid, 8), vidToDataOid(vid, 9)];
    // copies are capped by the two zones left
    await checkPlacement(alive, oids2, 3);

    // a new node joins: data moves to it and nothing is lost
    const d = await c.add();
    await waitFor(async () => (await epochOf(a.port)) === 3, 10_000, 'epoch 3 after the join');
    const live = [a, b, d];
    await waitFor(async () => (await Promise.all(live.map((s) => recoveryIdle(s.port)))).every(Boolean), 30_000, 'recovery');
    await waitFor(async () => {
      try { await checkPlacement(live, oids2, 3); return true; } catch { return false; }
    }, 20_000, 'placement after join');
    const wd = new Wire(d.port);
    expect((await wd.readVdi(vid, 0, 24 * MB)).equals(data)).toBe(true);
    expect((await wd.readVdi(vid, 32 * MB, 8 * MB)).equals(more)).toBe(true);

    // whole-cluster restart: everyone comes back, data intact
    const wsh = await w.send({ opcode: Op.SHUTDOWN });
    expect(wsh.rsp.result).toBe(Res.SUCCESS);
    w.close(); wb.close(); wd.close();
    await Promise.all(live.map((s) => s.exited));
    const restarted: SheepProc[] = [];
    restarted.push(await startSheep({ dir: a.dir, port: a.port, cluster: c.spec }));
    const w2 = new Wire(a.port);
    // alone, it waits for the others of the last epoch
    expect((await w2.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} })).rsp.result).toBe(Res.WAIT_FOR_JOIN);
    restarted.push(await startSheep({ dir: b.dir, port: b.port, cluster: c.spec }));
    restarted.push(await startSheep({ dir: d.dir, port: d.port, cluster: c.spec }));
    await waitFor(async () => (await w2.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} })).rsp.result === Res.SUCCESS, 10_000, 'cluster running again');
    expect(await epochOf(a.port)).toBe(3);
    expect((await w2.readVdi(vid, 0, 24 * MB)).equals(data)).toBe(true);
    expect((await w2.readVdi(vid, 32 * MB, 8 * MB)).equals(more)).toBe(true);
    w2.close();
  });
});
