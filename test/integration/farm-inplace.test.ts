// In-place cluster snapshots on a farm cluster (collie cluster snapshot ...
// without PATH) through real sheep and collie: every node saves what it holds
// into its own repository (DIR/farm, dog's format); a snapshot survives the
// loss of a node; de-duplication across snapshots on each node; delete;
// a damaged node farm is refused before the cluster changes.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp, readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { startCluster, startFormatted, stopAll, runCollie, waitFor, ClusterHandle } from '../helpers/cluster.js';

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

function farmBytes(dir: string): number {
  let n = 0;
  const objs = path.join(dir, 'farm', 'objects');
  for (const d of readdirSync(objs)) for (const f of readdirSync(path.join(objs, d))) n += statSync(path.join(objs, d, f)).size;
  return n;
}
const records = (dir: string) => Math.floor((statSync(path.join(dir, 'farm', 'user_snap')).size - 32) / 296);

let c: ClusterHandle;
let port: number;
const dog = (args: string[], input?: string | Buffer) => runCollie(args, { port, input });
async function ok(args: string[], input?: string | Buffer): Promise<string> {
  const r = await dog(args, input);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}
async function readVdi(name: string, size: number, snap?: string): Promise<string> {
  const r = await dog(['vdi', 'read', ...(snap ? ['-s', snap] : []), name, '0', String(size)]);
  expect(r.code, r.stderr).toBe(0);
  return md5(r.stdoutBuf);
}

beforeAll(async () => {
  c = await startCluster(3);
  port = c.nodes[0].port;
  await ok(['cluster', 'format', '-b', 'farm', '-c', '2']);
}, 120_000);
afterAll(async () => {
  await stopAll();
});

describe('in-place cluster snapshots (farm)', { timeout: 300_000 }, () => {
  const a = randomBytes(8 << 20);
  const b = randomBytes(4 << 20);

  it('save: each node keeps what it holds, in dog\'s format; a second snapshot stores only what changed', async () => {
    await ok(['vdi', 'create', 'alpha', '12M']);
    await ok(['vdi', 'write', 'alpha', '0', String(a.length)], a);
    await ok(['vdi', 'snapshot', '-s', 'a1', 'alpha']);
    await ok(['vdi', 'create', 'beta', '8M']);
    await ok(['vdi', 'write', 'beta', '0', String(b.length)], b);
    await ok(['vdi', 'snapshot', '-s', 'b1', 'beta']);
    expect(await ok(['cluster', 'snapshot', 'save', 's1'])).toBe('');
    for (const n of c.nodes) {
      expect(records(n.dir)).toBe(1);
      expect(readFileSync(path.join(n.dir, 'farm', 'user_snap')).subarray(0, 11).toString('hex')).toBe('01c0e1fe010000000200' + '16');
    }
    // two copies of 12 MiB of data over the three farms (plus inodes' own slices)
    const total = c.nodes.reduce((s, n) => s + farmBytes(n.dir), 0);
    expect(total).toBeGreaterThan(2 * (12 << 20));
    expect(total).toBeLessThan(2 * (12 << 20) + (4 << 20));
    expect(await ok(['cluster', 'snapshot', 'list'])).toMatch(/^Index\t\tTag\t\tSnapshot Time\n1\t\ts1\t\t\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n$/);
    const show = await dog(['cluster', 'snapshot', 'show', 's1']);
    expect(show.code).toBe(0);
    expect(show.stderr.split('\n').filter(Boolean).map((l) => l.replace(/VDI id: \w+/, 'VDI id: X')))
      .toEqual(['1. VDI id: X, name: beta, tag: b1', '2. VDI id: X, name: alpha, tag: a1']);

    // a small change and a second snapshot: only the changed object's slices are new
    await ok(['vdi', 'write', 'alpha', String(1 << 20), '4096'], Buffer.alloc(4096, 9));
    await ok(['vdi', 'snapshot', '-s', 'a2', 'alpha']);
    await ok(['cluster', 'snapshot', 'save', 's2']);
    const total2 = c.nodes.reduce((s, n) => s + farmBytes(n.dir), 0);
    // de-duplication is per node: a copy of the changed object placed on a node
    // that held no copy of the old one is stored whole there (at most 2 x 4 MiB)
    expect(total2 - total).toBeLessThan((8 << 20) + (1 << 20));
    expect((await dog(['cluster', 'snapshot', 'save', 's2'])).code).toBe(2); // tag used
    expect(await ok(['cluster', 'snapshot', 'list'])).toMatch(/^Index\t\tTag\t\tSnapshot Time\n1\t\ts1\t\t.*\n2\t\ts2\t\t.*\n$/);
    // the de-duplication ratio: per node (node info -v), and of all farms (list -v)
    const info = await ok(['node', 'info', '-v']);
    const ratios = [...info.matchAll(/^Farm of node (\d): 2 snapshot\(s\) of (\d+) bytes of objects stored in \d+ content file\(s\) of (\d+) bytes: de-duplication ratio ([\d.]+)$/gm)];
    expect(ratios.map((m) => m[1])).toEqual(['0', '1', '2']);
    for (const m of ratios) expect(Number(m[4])).toBeGreaterThan(1.5); // s2 repeats s1's objects, inodes are mostly zeros
    const stored = ratios.reduce((t, m) => t + Number(m[3]), 0);
    expect(stored).toBe(total2);
    const v = await ok(['-v', 'cluster', 'snapshot', 'list']);
    expect(v).toMatch(new RegExp(`\n\n2 snapshot\\(s\\) of \\d+ bytes of objects stored in \\d+ content file\\(s\\) of ${total2} bytes: de-duplication ratio [\\d.]+\n$`));
  });

  it('a damaged farm is refused before anything changes', async () => {
    const listBefore = await ok(['vdi', 'list']);
    // a slice of alpha's data on every node that holds one: flip a byte in each copy
    const flipped: [string, Buffer][] = [];
    const oneSlice = a.subarray(0, 128 * 1024);
    const h = createHash('sha1').update(oneSlice).digest('hex');
    for (const n of c.nodes) {
      const f = path.join(n.dir, 'farm', 'objects', h.slice(0, 2), h.slice(2));
      try {
        const orig = await fsp.readFile(f);
        const bad = Buffer.from(orig);
        bad[7] ^= 1;
        await fsp.writeFile(f, bad);
        flipped.push([f, orig]);
      } catch { /* not on this node */ }
    }
    try {
      // s1's copies (2), and perhaps a2's object 0 elsewhere: it shares this slice
      expect(flipped.length).toBeGreaterThanOrEqual(2);
      const r = await dog(['cluster', 'snapshot', 'load', 's1'], 'yes\n');
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${h} is on no node's farm`);
      expect(r.stdout).toBe('');
      expect(await ok(['vdi', 'list'])).toBe(listBefore);
    } finally {
      for (const [f, orig] of flipped) await fsp.writeFile(f, orig);
    }
  });

  it('a snapshot survives the loss of a node: load in place, every byte back', async () => {
    await c.nodes[2].kill();
    await waitFor(async () => (await dog(['node', 'list'])).stdout.split('\n').filter((l) => /127\.0\.0\.1/.test(l)).length === 2, 60_000, 'two nodes');
    await ok(['vdi', 'write', 'alpha', '0', '5'], 'dirty');
    const r = await dog(['cluster', 'snapshot', 'load', 's1'], 'yes\n');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/using backend farm store\n$/);
    expect(await readVdi('alpha', 12 << 20, 'a1')).toBe(md5(Buffer.concat([a, Buffer.alloc(4 << 20)])));
    expect(await readVdi('alpha', 12 << 20)).toBe(md5(Buffer.concat([a, Buffer.alloc(4 << 20)])));
    expect(await readVdi('beta', 8 << 20)).toBe(md5(Buffer.concat([b, Buffer.alloc(4 << 20)])));
    expect((await ok(['vdi', 'list'])).split('\n').filter((l) => /^s /.test(l)).length).toBe(2); // a2 is not in s1
    // the farms outlive the format: s2 loads too
    await ok(['cluster', 'snapshot', 'load', 's2'], 'yes\n');
    const a2 = Buffer.concat([a, Buffer.alloc(4 << 20)]);
    a2.fill(9, 1 << 20, (1 << 20) + 4096);
    expect(await readVdi('alpha', 12 << 20, 'a2')).toBe(md5(a2));
    expect(await readVdi('alpha', 12 << 20)).toBe(md5(a2));
  });

  it('after a load and with an older snapshot deleted, a new save is whole: it loads back', async () => {
    // a2 refers to objects of a1, which is deleted now
    const a2 = await readVdi('alpha', 12 << 20, 'a2');
    await ok(['vdi', 'delete', '-s', 'a1', 'alpha']);
    await ok(['cluster', 'snapshot', 'save', 's3']);
    await ok(['cluster', 'snapshot', 'load', 's3'], 'yes\n');
    expect(await readVdi('alpha', 12 << 20, 'a2')).toBe(a2);
    expect(await readVdi('beta', 8 << 20, 'b1')).toBe(md5(Buffer.concat([b, Buffer.alloc(4 << 20)])));
    expect((await dog(['vdi', 'list'])).stderr).toBe('');
    await ok(['cluster', 'snapshot', 'delete', 's3']);
  });

  it('delete in place: the snapshot leaves every farm, with the files only it used', async () => {
    const before = c.nodes.slice(0, 2).map((n) => farmBytes(n.dir));
    await ok(['cluster', 'snapshot', 'delete', 's1']);
    expect(await ok(['cluster', 'snapshot', 'list'])).toMatch(/^Index\t\tTag\t\tSnapshot Time\n1\t\ts2\t\t.*\n$/);
    c.nodes.slice(0, 2).forEach((n, i) => {
      expect(records(n.dir)).toBe(1);
      expect(farmBytes(n.dir)).toBeLessThanOrEqual(before[i]);
    });
    await ok(['cluster', 'snapshot', 'delete', 's2']);
    for (const n of c.nodes.slice(0, 2)) expect(farmBytes(n.dir)).toBe(0);
  });

  it('without PATH on a cluster that is not farm: dog\'s usage error', async () => {
    const s = await startFormatted(1);
    const r = await runCollie(['cluster', 'snapshot', 'save', 'x'], { port: s.port });
    expect(r.code).toBe(64);
    expect(r.stderr).toBe('Please specify the path to save snapshot.\n');
    const l = await runCollie(['cluster', 'snapshot', 'list'], { port: s.port });
    expect(l.code).toBe(64);
    await s.stop();
  });
});
