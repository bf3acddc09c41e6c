// Every member applies every cluster event in order; that is how the
// members share one view. A node that fails to apply one (it cannot write
// the epoch record, say) must not go on serving by a view the others do
// not have: it leaves, says why, and rejoins cleanly once restarted.
// (Found by the churn simulator, seeds 206 and 402: two writers of
// vdis.json at once made a joining node fail to apply the format, and it
// stayed unformatted inside a formatted cluster, logging the error only.)
import { describe, it, expect, afterEach } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startCluster, startSheep, stopAll, waitFor } from '../helpers/cluster.js';
import { formatCluster, nodeList } from '../helpers/cluster-scenarios.js';
import { Wire } from '../helpers/wire.js';

const MB = 1 << 20;

afterEach(() => stopAll());

describe('a cluster event a node cannot apply', () => {
  it('makes that node leave (exit 1, named in its log); the others go on; it rejoins when restarted', async () => {
    const c = await startCluster(2);
    const [a, b] = c.nodes;
    await formatCluster(a.port, 2);
    const data = randomBytes(2 * MB);
    const w = new Wire(a.port);
    let vid: number;
    try {
      vid = (await w.newVdi('kept', 16n * BigInt(MB))).rsp.vdi.vdiId;
      await w.writeVdi(vid, 0, data);
    } finally {
      w.close();
    }
    // b cannot record the next epoch: its file's name is taken by a directory
    const files = (await fsp.readdir(path.join(b.dir, 'epoch'))).sort();
    const next = String(Number(files[files.length - 1]) + 1).padStart(8, '0');
    await fsp.mkdir(path.join(b.dir, 'epoch', next));
    const third = await c.add();
    expect(await b.exited).toBe(1);
    expect(b.output()).toMatch(/cannot apply the cluster event join: .*this node leaves the cluster/s);
    // the others carry on without it, with every byte
    await waitFor(async () => (await nodeList(a.port)).length === 2, 20_000, 'b to be gone');
    const r = new Wire(third.port);
    try {
      expect((await r.readVdi(vid, 0, data.length)).equals(data)).toBe(true);
    } finally {
      r.close();
    }
    // fixed and restarted, it rejoins
    await fsp.rmdir(path.join(b.dir, 'epoch', next));
    const again = await startSheep({ dir: b.dir, port: b.port, cluster: c.spec, args: ['-z', '1'] });
    await waitFor(async () => (await nodeList(a.port)).length === 3, 20_000, 'b back');
    const r2 = new Wire(again.port);
    try {
      expect((await r2.readVdi(vid, 0, data.length)).equals(data)).toBe(true);
    } finally {
      r2.close();
    }
  }, 120_000);
});
