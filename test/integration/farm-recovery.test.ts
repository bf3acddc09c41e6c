// Farm recovery: a node that was away brings its copies up to date by
// fetching only the 128 KiB slices that changed meanwhile (SLICE_HASHES, then
// ranged FETCH_OBJ), not whole objects. Real sheep processes, real kill -9,
// checked byte for byte and by what the log and metrics say crossed the wire.
import { describe, it, expect, afterEach } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Res } from '@sheepdog/common';
import { startSheep, stopAll, waitFor, runCollie, uniqueClusterId, SheepProc } from '../helpers/cluster.js';
import { epochOf, clusterStatus, recoveryIdle } from '../helpers/cluster-scenarios.js';
import { Wire } from '../helpers/wire.js';

const MB = 1 << 20;
const OBJ = 4 * MB;
const SLICE = 128 * 1024;

afterEach(async () => {
  await stopAll();
});

async function withWire<T>(port: number, fn: (w: Wire) => Promise<T>): Promise<T> {
  const w = new Wire(port);
  try {
    return await fn(w);
  } finally {
    w.close();
  }
}

async function settled(nodes: SheepProc[]): Promise<void> {
  await waitFor(async () => {
    const eps = await Promise.all(nodes.map((s) => epochOf(s.port)));
    if (new Set(eps).size !== 1) return false;
    if ((await Promise.all(nodes.map((s) => clusterStatus(s.port)))).some((r) => r !== Res.SUCCESS)) return false;
    return (await Promise.all(nodes.map((s) => recoveryIdle(s.port)))).every(Boolean);
  }, 90_000, 'the cluster to recover');
}

/** What recovery fetched, in MiB, by the "done" lines of a log written after `from` bytes. */
async function fetchedMiB(dir: string, from: number): Promise<{ fetched: number; local: number }> {
  const t = (await fsp.readFile(path.join(dir, 'sheep.log'))).subarray(from).toString();
  let fetched = 0;
  let local = 0;
  for (const m of t.matchAll(/recovery for epoch \d+ done: .*?, ([\d.]+) MiB fetched(?:, ([\d.]+) MiB of it found in local copies)?/g)) {
    fetched += Number(m[1]);
    local += Number(m[2] ?? 0);
  }
  return { fetched, local };
}

/** A live object's file (plain keeps them in obj/, tree and farm in subdirectories of it). */
async function find(d: string, name: string): Promise<string> {
  for (const e of await fsp.readdir(d, { withFileTypes: true })) {
    if (e.isDirectory() && !e.name.startsWith('.')) {
      const f = await find(path.join(d, e.name), name).catch(() => undefined);
      if (f) return f;
    } else if (e.name === name) return path.join(d, e.name);
  }
  throw new Error(`${name} not in ${d}`);
}

describe('farm recovery', () => {
  for (const store of ['farm', 'plain'] as const) {
    it(`a node back after a short absence fetches ${store === 'farm' ? 'only the changed slices' : 'whole objects (plain)'}`, async () => {
      const spec = `local:${uniqueClusterId()}`;
      const nodes: SheepProc[] = [];
      for (let z = 0; z < 3; z++) nodes.push(await startSheep({ cluster: spec, args: ['-z', String(z)] }));
      const f = await runCollie(['cluster', 'format', '-b', store, '--copies=3'], { port: nodes[0].port });
      expect(f.code, f.stderr).toBe(0);
      const vid = await withWire(nodes[0].port, async (w) => (await w.newVdi('away', 40n * BigInt(MB))).rsp.vdi.vdiId);
      const image = randomBytes(40 * MB);
      await withWire(nodes[0].port, async (w) => { for (let i = 0; i < 10; i++) await w.writeVdi(vid, i * OBJ, image.subarray(i * OBJ, (i + 1) * OBJ)); });
      await settled(nodes);

      const c = nodes[2];
      const [dir, port] = [c.dir, c.port];
      await c.kill();
      await settled(nodes.slice(0, 2));
      // while it is away: 4 KiB changes in one slice of every object
      for (let i = 0; i < 10; i++) {
        const at = i * OBJ + (i % 32) * SLICE + 1000;
        randomBytes(4096).copy(image, at);
        await withWire(nodes[0].port, (w) => w.writeVdi(vid, at, image.subarray(at, at + 4096)));
      }
      const logFrom = (await fsp.stat(path.join(dir, 'sheep.log'))).size;
      nodes[2] = await startSheep({ dir, port, cluster: spec, args: ['-z', '2'] });
      await settled(nodes);

      const got = await fetchedMiB(dir, logFrom);
      if (store === 'farm') {
        // one slice per object, where plain fetches all 40 MiB
        expect(got.fetched, 'MiB fetched').toBeLessThanOrEqual(10 * SLICE / MB + 0.2);
        expect(got.local, 'MiB found locally').toBeGreaterThanOrEqual(40 - 10 * SLICE / MB - 0.1);
      } else {
        expect(got.fetched, 'MiB fetched').toBeGreaterThanOrEqual(40);
      }
      // the node that was away serves the new bytes, from its own copies: the others go
      await Promise.all(nodes.slice(0, 2).map((n) => n.kill()));
      for (let i = 0; i < 10; i++) {
        const name = (BigInt(vid) << 32n | BigInt(i)).toString(16).padStart(16, '0');
        const file = await fsp.readFile(await find(path.join(dir, 'obj'), name));
        expect(file.subarray(0, OBJ).equals(image.subarray(i * OBJ, (i + 1) * OBJ)), `object ${i} on the node that was away`).toBe(true);
      }
    }, 240_000);
  }
});
