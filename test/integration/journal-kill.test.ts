// A real sheep (sync mode, with its journal, as by default) killed with
// SIGKILL while verified writes are in flight, five times: after each
// restart every acknowledged write reads back (the journal's replay; the
// store-level crash simulation in test/unit/journal-crash.test.ts runs the
// many rounds and the power cuts).
import { it, expect, afterAll } from 'vitest';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { SheepClient, Op, Flag, Res, timestamp64, ClusterFlag, vidToDataOid } from '@sheepdog/common';
import { startSheep, stopAll, uniqueClusterId, SheepProc } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';

afterAll(stopAll);

const MB = 1 << 20;
const SIZE = 16 * MB;
const OS = 4 * MB;
const WORKERS = 16;
const RANGE = SIZE / WORKERS;

it('kill -9 during verified writes: every acknowledged write is there after the restart (5 rounds)', async () => {
  const spec = `local:${uniqueClusterId()}`;
  let s: SheepProc = await startSheep({ cluster: spec });
  const { dir, port } = s;
  const c0 = new SheepClient({ port });
  const f = await c0.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 1, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES } }, Buffer.from('plain\0'));
  c0.close();
  expect(f.rsp.result).toBe(Res.SUCCESS);
  const w0 = new Wire(port);
  const vid = (await w0.newVdi('journaled', BigInt(SIZE))).rsp.vdi.vdiId;
  const image = randomBytes(SIZE);
  await w0.writeVdi(vid, 0, image);
  w0.close();

  let replayed = 0;
  for (let round = 0; round < 5; round++) {
    const c = new SheepClient({ port, timeout: 30_000 });
    const acked: { off: number; data: Buffer }[][] = Array.from({ length: WORKERS }, () => []);
    const out: ({ off: number; data: Buffer } | undefined)[] = Array(WORKERS).fill(undefined);
    const killAfter = 50 + Math.floor(Math.random() * 400);
    let acks = 0;
    let killed = false;
    let kill: Promise<void> | undefined;
    const worker = async (wk: number) => {
      const base = wk * RANGE;
      while (!killed) {
        const off = base + Math.floor(Math.random() * (RANGE - 1));
        const len = Math.min(base + RANGE - off, Math.random() < 0.7 ? 4096 : 1 + Math.floor(Math.random() * 20000));
        const wr = { off, data: randomBytes(len) };
        // one object each (a range does not cross objects)
        const idx = Math.floor(off / OS);
        out[wk] = wr;
        try {
          await c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, idx), offset: off % OS } }, wr.data);
        } catch (e) {
          if (killed) return;
          throw e;
        }
        if (killed) return; // answered while the kill was on its way: it may or may not be there
        acked[wk].push(wr);
        out[wk] = undefined;
        if (++acks === killAfter) {
          killed = true;
          kill = s.kill();
        }
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, (_, wk) => worker(wk)));
    await kill;
    c.close();
    s = await startSheep({ dir, port, cluster: spec });
    const log = (await readFile(path.join(dir, 'sheep.log'), 'utf8')).split('\n');
    const replay = log.filter((l) => / journal .*(replayed|nothing to replay)/.test(l)).at(-1) ?? '';
    expect(replay, 'the restart says what it replayed').toMatch(/journal/);
    if (/replayed [1-9]/.test(replay)) replayed++;
    const r = new SheepClient({ port });
    for (let wk = 0; wk < WORKERS; wk++) {
      const base = wk * RANGE;
      const want = Buffer.from(image.subarray(base, base + RANGE));
      for (const wr of acked[wk]) wr.data.copy(want, wr.off - base);
      const alt = out[wk] ? Buffer.from(want) : undefined;
      if (alt) out[wk]!.data.copy(alt, out[wk]!.off - base);
      const got = (await r.request({ opcode: Op.READ_OBJ, dataLength: RANGE, obj: { oid: vidToDataOid(vid, Math.floor(base / OS)), offset: base % OS } })).data;
      let at = 0;
      while (at < RANGE && (got[at] === want[at] || (alt !== undefined && got[at] === alt[at]))) at++;
      expect(at, `round ${round}, writer ${wk}: byte ${base + at} is not what the last acknowledged write left (${replay})`).toBe(RANGE);
      got.copy(image, base);
    }
    r.close();
  }
  // the kills came with records not yet checkpointed (the replay had work to do)
  expect(replayed).toBeGreaterThan(0);
  await s.stop();
}, 180_000);
