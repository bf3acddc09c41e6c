// collie against three sheep on loopback: placement printed by collie must
// match where the daemons really put objects; check repairs; kill; epochs.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { hash24 } from '@sheepdog/common';
import { startSheep, stopAll, runCollie, SheepProc } from '../helpers/cluster.js';

let nodes: SheepProc[] = [];
const dog = (args: string[], input?: Buffer | string, i = 0) => runCollie(args, { port: nodes[i].port, input });
const hx = (n: number) => n.toString(16);

async function findFile(dir: string, name: string): Promise<string | undefined> {
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      const r = await findFile(p, name);
      if (r) return r;
    } else if (e.name === name) return p;
  }
  return undefined;
}

beforeAll(async () => {
  const id = `local:collie-${process.pid}-${randomBytes(4).toString('hex')}`;
  for (let i = 0; i < 3; i++) nodes.push(await startSheep({ args: ['-c', id, '-z', String(i)] }));
  // wait until all three are members
  for (let t = 0; t < 100; t++) {
    const r = await dog(['node', 'list', '-r']);
    if (r.stdout.trim().split('\n').length === 3) break;
    await new Promise((res) => setTimeout(res, 100));
  }
});
afterAll(async () => {
  await stopAll();
});

describe('collie with three sheep', { timeout: 180_000 }, () => {
  const data = randomBytes(12 << 20);

  it('node list and format', async () => {
    const sorted = [...nodes].sort((a, b) => a.port - b.port);
    const nl = await dog(['node', 'list']);
    expect(nl.stdout).toBe('  Id   Host:Port         V-Nodes       Zone\n' +
      sorted.map((n, i) => `   ${i}   ${`127.0.0.1:${n.port}`.padEnd(20)}\t128${String(nodes.indexOf(n)).padStart(11)}\n`).join(''));
    const f = await dog(['cluster', 'format', '-c', '2'], undefined, 1);
    expect(f.code).toBe(0);
    const ci = await dog(['cluster', 'info', '-v'], undefined, 2);
    expect(ci.stdout.split('\n')[1]).toBe('Cluster store: plain with 2 redundancy policy');
    expect(ci.stdout).toContain(`      1 [${sorted.map((n) => `127.0.0.1:${n.port}:128`).join(', ')}]\n`);
  });

  it('data written through one node reads back through another', async () => {
    expect((await dog(['vdi', 'create', 'Multi', '100M'])).code).toBe(0);
    expect((await dog(['vdi', 'write', 'Multi', '0'], data, 1)).code).toBe(0);
    expect((await dog(['vdi', 'read', 'Multi', '0', '12M'], undefined, 2)).stdoutBuf.equals(data)).toBe(true);
    // Without a length dog writes until stdin ends; the empty read at the end
    // still writes one zero-padded object: 3 + 1 objects of 4 MiB.
    const l = (await dog(['vdi', 'list', '-r', 'Multi'])).stdout.split(' ');
    expect(l[4]).toBe(String(16 << 20));
    const info = await dog(['node', 'info', '-r']);
    const rows = info.stdout.trim().split('\n');
    expect(rows.length).toBe(4);
    expect(rows.slice(0, 3).map((r) => r.split(' ')[0])).toEqual(['0', '1', '2']);
    expect(rows[3]).toMatch(/^Total \d+ \d+ \d+ \d+% 104857600$/);
  });

  it('object location agrees with where the daemons stored the object', async () => {
    const vid = hx(hash24('Multi'));
    for (const idx of [0, 1, 2]) {
      const r = await dog(['vdi', 'object', 'location', '-i', String(idx), 'Multi']);
      expect(r.code).toBe(0);
      const lines = r.stdout.split('\n');
      const oid = vid.padStart(8, '0') + idx.toString(16).padStart(8, '0');
      expect(lines[0]).toBe(`Looking for the object ${oid} (vid 0x${vid} idx ${idx}, 2 copies) with 3 nodes`);
      const has = lines.filter((l) => l.endsWith(' has the object')).map((l) => l.split(' ')[0]).sort();
      const expected = lines[lines.indexOf('According to sheepdog algorithm, the object should be located at:') + 1].split(' ').sort();
      expect(expected.length).toBe(2);
      expect(has).toEqual(expected);
      expect(lines.filter((l) => l.endsWith("doesn't have the object")).length).toBe(1);
    }
  });

  it('vdi check repairs a lost replica; -e reports it first', async () => {
    const vid = hx(hash24('Multi'));
    const oid = vid.padStart(8, '0') + '00000001';
    const loc = await dog(['vdi', 'object', 'location', '-i', '1', 'Multi']);
    const holder = loc.stdout.split('\n').find((l) => l.endsWith(' has the object'))!.split(' ')[0];
    const victim = nodes.find((n) => `127.0.0.1:${n.port}` === holder)!;
    const file = await findFile(victim.dir, oid);
    expect(file).toBeDefined();
    await fs.unlink(file!);

    const e = await dog(['vdi', 'check', '-e', 'Multi']);
    expect(e.code).toBe(1);
    expect(e.stdout).toBe(`${oid} is missing on ${holder}\n`);

    const c = await dog(['vdi', 'check', 'Multi']);
    expect(c.code).toBe(0);
    expect(c.stdout).toBe(`fixed missing ${oid}\nfinish check&repair Multi\n`);
    expect((await fs.stat(file!)).isFile()).toBe(true);
    expect((await dog(['vdi', 'check', 'Multi'])).stdout).toBe('finish check&repair Multi\n');
    expect((await dog(['vdi', 'check', '-e', 'Multi'])).code).toBe(0);
  });

  it('node kill, epochs, track', async () => {
    const sorted = [...nodes].sort((a, b) => a.port - b.port);
    const k = await dog(['node', 'kill', '2']);
    expect(k.code).toBe(0);
    const killed = sorted[2];
    await killed.exited;
    let nl = '';
    for (let t = 0; t < 100; t++) {
      nl = (await runCollie(['node', 'list', '-r'], { port: sorted[0].port })).stdout;
      if (nl.trim().split('\n').length === 2) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const zone = (n: SheepProc) => nodes.indexOf(n); // started with -z <index>
    expect(nl).toBe(`0 127.0.0.1:${sorted[0].port} 128 ${zone(sorted[0])}\n1 127.0.0.1:${sorted[1].port} 128 ${zone(sorted[1])}\n`);

    const ci = await runCollie(['cluster', 'info'], { port: sorted[0].port });
    const lines = ci.stdout.split('\n');
    expect(lines[5]).toMatch(new RegExp(`      2 \\[127\\.0\\.0\\.1:${sorted[0].port}:128, 127\\.0\\.0\\.1:${sorted[1].port}:128\\]$`));
    expect(lines[6]).toMatch(/      1 \[.*, .*, .*\]$/);
    const d = await runCollie(['cluster', 'info', '-d'], { port: sorted[0].port });
    expect(d.stdout.split('\n').slice(5, 7).map((l) => l.slice(19))).toEqual([`      2 [-127.0.0.1:${killed.port}]`, '      1 [formated]']);

    const tr = await runCollie(['vdi', 'track', '-i', '0', 'Multi'], { port: sorted[0].port });
    const blocks = tr.stdout.split('\n\n');
    expect(blocks.length).toBe(3);
    expect(blocks[1]).toMatch(/^obj [0-9a-f]{16} locations at epoch 1, copies = 2\n-+\n127\.0\.0\.1:\d+\n127\.0\.0\.1:\d+$/);
    expect(blocks[2]).toMatch(/^obj [0-9a-f]{16} locations at epoch 2, copies = 2\n-+\n127\.0\.0\.1:\d+\n127\.0\.0\.1:\d+\n$/);
    expect(blocks[2]).not.toContain(`:${killed.port}`);

    // data survives on the two remaining nodes
    expect((await runCollie(['vdi', 'read', 'Multi', '0', '12M'], { port: sorted[1].port })).stdoutBuf.equals(data)).toBe(true);
  });
});
