// collie cluster format -b plain|tree|farm on real sheep (farm-and-backup.md
// C.1): the tree store's layout on disk, recovery and restart with it, the
// store shown by cluster info -v and node info -v, an unknown store refused
// as 1.0 refuses it.
import { describe, it, expect, afterAll } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { startCluster, startSheep, stopAll, runCollie, waitFor, SheepProc } from '../helpers/cluster.js';

afterAll(async () => {
  await stopAll();
});

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const hex = (oid: bigint) => oid.toString(16).padStart(16, '0');

async function vidOf(port: number, name: string): Promise<number> {
  const l = await runCollie(['vdi', 'list', '--json'], { port });
  expect(l.code).toBe(0);
  return (JSON.parse(l.stdout).vdis as { name: string; kind: string; vdi_id: number }[])
    .find((v) => v.name === name && v.kind === 'vdi')!.vdi_id;
}

describe('store backends', { timeout: 240_000 }, () => {
  it('an unknown store: 1.0\'s message and exit code, the three stores listed, the cluster unchanged', async () => {
    const s = await startSheep({ args: ['-z', '0'] });
    const f = await runCollie(['cluster', 'format', '-b', 'nosuch'], { port: s.port });
    expect(f.code).toBe(2);
    expect(f.stdout).toBe('using backend nosuch store\nAvailable stores:\n---------------------------------------\nfarm tree plain \n');
    expect(f.stderr).toBe('Format failed: Targeted backend store is not found\n');
    const i = await runCollie(['cluster', 'info'], { port: s.port });
    expect(i.stdout).toBe('Cluster status: Waiting for cluster to be formatted\n\n');
    // farm is accepted now (the seed's own command)
    const g = await runCollie(['cluster', 'format', '-b', 'farm', '--copies=1'], { port: s.port });
    expect(g.code).toBe(0);
    expect(g.stdout).toBe('using backend farm store\n');
    const v = await runCollie(['cluster', 'info', '-v'], { port: s.port });
    expect(v.stdout).toContain('Cluster store: farm with 1 redundancy policy\n');
    const n = await runCollie(['node', 'info', '-v'], { port: s.port });
    expect(n.stdout).toMatch(/\nStore: farm\nFarm of node 0: 0 snapshot\(s\) of 0 bytes of objects stored in 0 content file\(s\) of 0 bytes: de-duplication ratio -\n$/);
    const j = await runCollie(['node', 'info', '--json'], { port: s.port });
    expect(JSON.parse(j.stdout).store).toBe('farm');
    // farm keeps plain's layout for working objects, and has its repository
    expect((await runCollie(['vdi', 'create', 'F', '8M'], { port: s.port })).code).toBe(0);
    const vid = await vidOf(s.port, 'F');
    expect(existsSync(path.join(s.dir, 'obj', hex((1n << 63n) | (BigInt(vid) << 32n))))).toBe(true);
    expect(existsSync(path.join(s.dir, 'farm', 'user_snap'))).toBe(true);
    expect(readdirSync(path.join(s.dir, 'farm', 'objects')).length).toBe(256);
    // re-format with plain: plain it is
    const p = await runCollie(['cluster', 'format', '-b', 'plain', '-f'], { port: s.port });
    expect(p.code).toBe(0);
    expect((await runCollie(['cluster', 'info', '-v'], { port: s.port })).stdout).toContain('Cluster store: plain with 3 redundancy policy\n');
    await s.stop();
  });

  it('tree: objects in meta/ and in XX/ by the vid\'s low byte, recovered onto a new node, kept across a restart', async () => {
    const c = await startCluster(2);
    const [a] = c.nodes;
    const f = await runCollie(['cluster', 'format', '-b', 'tree', '-c', '2'], { port: a.port });
    expect(f.code).toBe(0);
    expect(f.stdout).toBe('using backend tree store\n');
    expect((await runCollie(['cluster', 'info', '-v'], { port: a.port })).stdout).toContain('Cluster store: tree with 2 redundancy policy\n');
    expect((await runCollie(['vdi', 'create', 'T', '12M'], { port: a.port })).code).toBe(0);
    const data = randomBytes(12 << 20);
    expect((await runCollie(['vdi', 'write', 'T', '0', String(data.length)], { port: a.port, input: data })).code).toBe(0);
    const vid = await vidOf(a.port, 'T');
    expect((await runCollie(['vdi', 'snapshot', '-s', 's1', 'T'], { port: a.port })).code).toBe(0);
    const xx = (vid & 0xff).toString(16).padStart(2, '0');
    const inode = hex((1n << 63n) | (BigInt(vid) << 32n));
    for (const n of c.nodes) {
      const obj = path.join(n.dir, 'obj');
      expect(readdirSync(path.join(obj, 'meta'))).toContain(inode);
      expect(readdirSync(path.join(obj, xx)).sort()).toEqual([0, 1, 2].map((i) => hex((BigInt(vid) << 32n) | BigInt(i))));
      // nothing flat
      expect(readdirSync(obj).filter((x) => /^[0-9a-f]{16}$/.test(x))).toEqual([]);
      expect(readdirSync(obj).filter((x) => /^[0-9a-f]{2}$/.test(x)).length).toBe(256);
    }
    // a third node: recovery lists the others' copies (store.copies()) and writes them in tree layout
    const b = await c.add();
    await waitFor(async () => {
      const r = await runCollie(['node', 'recovery'], { port: b.port });
      return r.code === 0 && !/[0-9]+\s+127/.test(r.stdout.split('\n').slice(1).join('\n')) ? true : undefined;
    }, 60_000, 'recovery');
    const back = await runCollie(['vdi', 'read', 'T', '0', String(data.length)], { port: b.port });
    expect(md5(back.stdoutBuf)).toBe(md5(data));
    const held = (n: SheepProc) => readdirSync(path.join(n.dir, 'obj', xx)).length + readdirSync(path.join(n.dir, 'obj', 'meta')).length;
    await waitFor(() => c.nodes.reduce((s, n) => s + held(n), 0) >= 2 * 5, 60_000, 'two copies of each object');
    expect(readdirSync(path.join(b.dir, 'obj')).filter((x) => /^[0-9a-f]{16}$/.test(x))).toEqual([]);
    // restart a node on its directory: it finds its tree again
    await a.stop();
    const a2 = await startSheep({ cluster: c.spec, dir: a.dir, port: a.port, args: ['-z', '0'] });
    await waitFor(async () => (await runCollie(['cluster', 'info'], { port: a2.port })).stdout.startsWith('Cluster status: running'), 60_000, 'rejoin');
    const again = await runCollie(['vdi', 'read', 'T', '0', String(data.length)], { port: a2.port });
    expect(md5(again.stdoutBuf)).toBe(md5(data));
    const snap = await runCollie(['vdi', 'read', '-s', 's1', 'T', '0', String(data.length)], { port: a2.port });
    expect(md5(snap.stdoutBuf)).toBe(md5(data));
    expect((await runCollie(['node', 'info', '-v'], { port: a2.port })).stdout.endsWith('Store: tree\n')).toBe(true);
  });
});
