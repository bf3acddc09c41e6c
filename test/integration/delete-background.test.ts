// Deleting a VDI marks it and returns; its objects are reclaimed in the
// background, resumably, while other VDIs' requests go on (issue 17).
import { describe, it, expect, afterEach } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Res, Op, Flag } from '@sheepdog/common';
import { startSheep, stopAll, waitFor, runCollie, SheepProc, freePort, uniqueClusterId } from '../helpers/cluster.js';
import { RECOVERY_HEADER } from '@sheepdog/common/text';
import { formatCluster, nodeList } from '../helpers/cluster-scenarios.js';
import { Wire, nameTag } from '../helpers/wire.js';

const objects = async (s: SheepProc, vid: number) =>
  (await fsp.readdir(path.join(s.dir, 'obj'))).filter((f) => f.startsWith('00' + vid.toString(16).padStart(6, '0'))).length;

afterEach(() => stopAll());

describe('VDI deletion in the background', () => {
  it('DEL_VDI returns at once; lookups of other VDIs are answered while the objects go; a crash mid-way resumes', async () => {
    let s = await startSheep({ args: ['-n'] });
    await formatCluster(s.port, 1);
    const pre = await runCollie(['vdi', 'create', '-P', 'big', '6G'], { port: s.port });
    expect(pre.code, pre.stderr).toBe(0);
    expect((await runCollie(['vdi', 'create', 'other', '1G'], { port: s.port })).code).toBe(0);
    const w = new Wire(s.port);
    const vid = await w.vid('big');
    const total = await objects(s, vid);
    expect(total).toBe(1536);
    // DEL_VDI as QEMU sends it (upstream dog empties the index itself first, entry batch by batch)
    expect((await w.send({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE, vdi: {} }, nameTag('big'))).rsp.result).toBe(Res.SUCCESS);
    // marked, not yet reclaimed: the name is gone at once, most objects are still there
    expect((await w.info('big')).rsp.result).toBe(Res.NO_VDI);
    const right = await objects(s, vid);
    expect(right).toBeGreaterThan(total / 2);
    // lookups of another VDI are answered while the objects go
    let answeredDuring = 0;
    for (;;) {
      const left = await objects(s, vid);
      expect((await w.info('other')).rsp.result).toBe(Res.SUCCESS);
      if (left > 0 && left < total) answeredDuring++;
      if (left < total * 0.6) break;
    }
    expect(answeredDuring).toBeGreaterThan(0);
    w.close();
    // a crash part-way: the next start goes on where the index says
    const { dir, port } = s;
    await s.kill();
    const leftAtCrash = await objects(s, vid);
    expect(leftAtCrash).toBeGreaterThan(0);
    s = await startSheep({ dir, port, args: ['-n'] });
    await waitFor(async () => (await objects(s, vid)) === 0, 120_000, 'every object reclaimed').catch(async (e) => {
      console.log((await fsp.readFile(path.join(dir, 'sheep.log'), 'utf8')).split('\n').filter((l) => !l.includes('cluster event')).slice(-40).join('\n'));
      throw e;
    });
    // (the last objects go before the index is cleared and the end is logged)
    const done = new RegExp(`deleted VDI ${vid.toString(16)}: \\d+ reference\\(s\\) dropped`);
    await waitFor(async () => done.test(await fsp.readFile(path.join(dir, 'sheep.log'), 'utf8')), 20_000, 'the end of the reclaim logged');
    // and the other VDI is untouched
    const w2 = new Wire(s.port);
    expect((await w2.info('other')).rsp.result).toBe(Res.SUCCESS);
    w2.close();
  }, 300_000);

  it('collie node recovery and vdi list show a reclaim in progress, with objects left, and nothing once it is done; so do the metrics', async () => {
    // reclaim slowed down: 16 index entries a batch, 600 ms between batches (about 10 s for the 256 objects)
    const spec = `local:${uniqueClusterId()}`;
    const env = { SHEEP_RECLAIM_BATCH: '16', SHEEP_RECLAIM_PAUSE_MS: '600' };
    const mports = [await freePort(), await freePort()];
    const nodes: SheepProc[] = [];
    for (let i = 0; i < 2; i++) nodes.push(await startSheep({ cluster: spec, env, args: ['-n', '-z', String(i), '--metrics', `127.0.0.1:${mports[i]}`] }));
    await waitFor(async () => (await nodeList(nodes[0].port)).length === 2, 10_000, '2 members');
    await formatCluster(nodes[0].port, 1);
    const port = nodes[1].port;
    expect((await runCollie(['vdi', 'create', '-P', 'big', '1G'], { port })).code).toBe(0);
    expect((await runCollie(['vdi', 'create', 'other', '16M'], { port })).code).toBe(0);
    const w = new Wire(port);
    const vid = await w.vid('big');
    w.close();
    const hexVid = vid.toString(16);
    const metric = async (i: number, name: string) => {
      const t = await (await fetch(`http://127.0.0.1:${mports[i]}/metrics`)).text();
      const line = t.split('\n').find((l) => l.startsWith(`${name} `));
      return line === undefined ? undefined : Number(line.slice(name.length + 1));
    };
    // nothing pending: dog's output, exactly
    const idle = async () => {
      const rec = await runCollie(['node', 'recovery'], { port });
      const list = await runCollie(['vdi', 'list'], { port });
      return rec.code === 0 && rec.stdout === RECOVERY_HEADER && rec.stderr === '' && list.code === 0 && list.stderr === '' && list;
    };
    expect(await idle()).toBeTruthy();
    for (const i of [0, 1]) expect(await metric(i, 'sheep_reclaim_vdis_pending')).toBe(0);

    // DEL_VDI as QEMU sends it (collie vdi delete, like dog, empties the index itself first)
    const wd = new Wire(port);
    expect((await wd.send({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE, vdi: {} }, nameTag('big'))).rsp.result).toBe(Res.SUCCESS);
    wd.close();
    // while it runs: a section after dog's table names the VDI, the node at it and the objects left
    const lineRe = new RegExp(`^  ${hexVid} +127\\.0\\.0\\.1:(\\d+) +([\\d.]+)% +(\\d+)$`, 'm');
    const seen = new Set<number>();
    let reclaimer = -1;
    for (;;) {
      const rec = await runCollie(['node', 'recovery'], { port });
      expect(rec.code, rec.stderr).toBe(0);
      expect(rec.stdout.startsWith(RECOVERY_HEADER)).toBe(true);
      const m = lineRe.exec(rec.stdout);
      if (!m) {
        expect(rec.stdout).toBe(RECOVERY_HEADER); // done already (only if it went fast)
        break;
      }
      expect(rec.stdout).toContain('\nDeleted VDIs Being Reclaimed:\n  VDI id   Node                  Progress  Objects left\n');
      reclaimer = nodes.findIndex((n) => n.port === Number(m[1]));
      expect(reclaimer).toBeGreaterThanOrEqual(0);
      const left = Number(m[3]);
      expect(left).toBeLessThanOrEqual(256);
      expect(Number(m[2])).toBeCloseTo(100 * (256 - left) / 256, 0);
      seen.add(left);
      // enough left for what follows to see the reclaim still under way
      if (seen.size >= 3 && left >= 96) break;
    }
    // progress moves, and was seen mid-way
    expect(seen.size).toBeGreaterThanOrEqual(3);
    expect([...seen].some((n) => n > 0 && n < 256)).toBe(true);
    // the metrics: every node knows the VDI waits; the one at it counts what is left
    for (const i of [0, 1]) expect(await metric(i, 'sheep_reclaim_vdis_pending')).toBe(1);
    expect(await metric(reclaimer, 'sheep_reclaim_objects_pending')).toBeGreaterThan(0);
    expect(await metric(1 - reclaimer, 'sheep_reclaim_objects_pending')).toBe(0);
    // raw output stays dog's; --json says it too; vdi list: its table as before, a note on stderr
    expect((await runCollie(['node', 'recovery', '-r'], { port })).stdout).toBe('');
    const js = JSON.parse((await runCollie(['node', 'recovery', '--json'], { port })).stdout);
    expect(js.nodes).toEqual([]);
    expect(js.reclaiming).toHaveLength(1);
    expect(js.reclaiming[0]).toMatchObject({ vdi_id: vid, node: `127.0.0.1:${nodes[reclaimer].port}`, objects_total: 256 });
    expect(js.reclaiming[0].objects_left).toBeGreaterThan(0);
    const list = await runCollie(['vdi', 'list'], { port });
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^  other /m);
    expect(list.stdout).not.toMatch(/big/);
    expect(list.stderr).toMatch(new RegExp(`^Deleted VDI ${hexVid}: \\d+ of 256 objects still to reclaim \\(by 127\\.0\\.0\\.1:${nodes[reclaimer].port}\\)$`, 'm'));
    expect((await runCollie(['vdi', 'list', '-r'], { port })).stderr).toBe('');

    // once done: dog's output again, exactly, and the metrics say so
    const after = await waitFor(idle, 60_000, 'the reclaim done');
    expect(after.stdout).toMatch(/^  other /m);
    for (const i of [0, 1]) expect(await metric(i, 'sheep_reclaim_vdis_pending')).toBe(0);
    expect(await metric(reclaimer, 'sheep_reclaim_objects_pending')).toBe(0);
    expect(await metric(reclaimer, 'sheep_reclaimed_objects_total')).toBe(256);
    expect(JSON.parse((await runCollie(['node', 'recovery', '--json'], { port })).stdout)).toEqual({ nodes: [], reclaiming: [] });
  }, 180_000);
});
