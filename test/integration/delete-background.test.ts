// Deleting a VDI marks it and returns; its objects are reclaimed in the
// background, resumably, while other VDIs' requests go on (issue 17).
import { describe, it, expect, afterEach } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Res, Op, Flag } from '@sheepdog/common';
import { startSheep, stopAll, waitFor, runCollie, SheepProc } from '../helpers/cluster.js';
import { formatCluster } from '../helpers/cluster-scenarios.js';
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
    const log = await fsp.readFile(path.join(dir, 'sheep.log'), 'utf8');
    expect(log).toMatch(new RegExp(`deleted VDI ${vid.toString(16)}: \\d+ reference\\(s\\) dropped`));
    // and the other VDI is untouched
    const w2 = new Wire(s.port);
    expect((await w2.info('other')).rsp.result).toBe(Res.SUCCESS);
    w2.close();
  }, 300_000);
});
