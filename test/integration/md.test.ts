// Multi-disk nodes (erasure-coding-and-md.md part B) on real processes: a
// 3-node copies=3 cluster whose first node spreads its objects over several
// directories. Where each object file lands is checked against a model of
// the disk ring written from the doc (not from store/md.ts); plug, unplug
// and a disk that fails under writes must keep every acknowledged byte.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fnv1a, sdHashOid } from '@sheepdog/common';
import { startSheep, stopAll, runCollie, waitFor, SheepProc, uniqueClusterId } from '../helpers/cluster.js';
import { versionIO } from '../../sheep/src/store/fileio.js';

const M64 = (1n << 64n) - 1n;
const next = (h: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(h); return fnv1a(b, h) & M64; };

/** B.2: points of a disk are sd_hash(path) then sd_hash_next repeatedly, one per 16 MiB of its size. */
function modelRing(disks: { path: string; size: number }[]): (oid: bigint) => string {
  const pts: { h: bigint; p: string }[] = [];
  for (const d of disks) {
    let h = next(fnv1a(Buffer.from(d.path)));
    for (let i = 0; i < Math.ceil(d.size / (16 << 20)); i++) {
      h = next(h);
      pts.push({ h, p: d.path });
    }
  }
  pts.sort((a, b) => (a.h < b.h ? -1 : a.h > b.h ? 1 : 0));
  return (oid) => (pts.find((x) => x.h >= sdHashOid(oid)) ?? pts[0]).p;
}

const OBJ = /^[0-9a-f]{16}$/;
const objectsIn = async (dir: string) => (await fs.readdir(dir).catch(() => [] as string[])).filter((f) => OBJ.test(f));

let root: string;
let base: string;
let disk: string[];
const nodes: SheepProc[] = [];
let clusterId = '';
const dog = (args: string[], input?: Buffer | string, i = 0) => runCollie(args, { port: nodes[i].port, input });

/** Disks of node 0 as it reports them (md info -r): path and size (the size kept in user.md.size). */
async function plugged(): Promise<{ path: string; size: number }[]> {
  const r = await dog(['node', 'md', 'info', '-r']);
  expect(r.code).toBe(0);
  return r.stdout.trim().split('\n').map((l) => {
    const p = l.split(' ')[6];
    return { path: p, size: versionIO!.getU64Attr(p, 'user.md.size') };
  });
}

/** Every object file of node 0 is on the disk the ring gives it, and node 0 holds want objects. */
async function placedByRing(want: number): Promise<Map<string, string[]>> {
  const disks = await plugged();
  const home = modelRing(disks);
  const by = new Map<string, string[]>();
  let n = 0;
  for (const d of disks) {
    const files = await objectsIn(d.path);
    by.set(d.path, files);
    n += files.length;
    for (const f of files) if (home(BigInt('0x' + f)) !== d.path) throw new Error(`${f} is on ${d.path}, the ring says ${home(BigInt('0x' + f))}`);
  }
  if (n !== want) throw new Error(`${n} object files, want ${want}`);
  return by;
}

const DATA = randomBytes(96 << 20);
const model = Buffer.from(DATA);
let objects = 0;

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'sheep-md-'));
  base = path.join(root, 'n0');
  disk = [0, 1, 2, 3].map((i) => path.join(root, `n0d${i}`));
  const id = (clusterId = `local:${uniqueClusterId()}`);
  // node 0 starts with three object disks; a trailing slash is trimmed
  nodes.push(await startSheep({ dir: `${base},${disk[0]}/,${disk[1]},${disk[2]}`, args: ['-c', id, '-z', '0'] }));
  for (let i = 1; i < 3; i++) nodes.push(await startSheep({ args: ['-c', id, '-z', String(i)] }));
  await waitFor(async () => (await dog(['node', 'list', '-r'])).stdout.trim().split('\n').length === 3, 90_000, 'three members');
  expect((await dog(['cluster', 'format', '-c', '3'])).code).toBe(0);
  expect((await dog(['vdi', 'create', 'mdvol', '200M'])).code).toBe(0);
  expect((await dog(['vdi', 'write', 'mdvol', '0', String(DATA.length)], DATA, 1)).code).toBe(0);
  objects = 1 + DATA.length / (4 << 20); // the inode and the data objects
}, 300_000);

afterAll(async () => {
  await stopAll();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

describe('multi-disk node', { timeout: 420_000 }, () => {
  it('spreads objects over its disks by the disk ring, and leaves BASE/obj empty', async () => {
    const by = await waitFor(() => placedByRing(objects), 120_000, 'objects on their disks');
    for (const d of disk.slice(0, 3)) expect(by.get(d)!.length).toBeGreaterThan(0);
    expect(await objectsIn(path.join(base, 'obj'))).toEqual([]);
    for (const d of disk.slice(0, 3)) await fs.access(path.join(d, '.stale'));
    // metadata stays in BASE
    await fs.access(path.join(base, 'config.json'));
    await fs.access(path.join(base, 'epoch'));
    expect((await dog(['vdi', 'read', 'mdvol', '0', String(DATA.length)], undefined, 0)).stdoutBuf.equals(model)).toBe(true);
  });

  it('refuses to start on a disk holding a node\'s metadata, or without any usable disk', async () => {
    const other = path.join(root, 'other');
    await fs.mkdir(path.join(other, 'epoch'), { recursive: true });
    await fs.writeFile(path.join(other, 'config.json'), '{}');
    const meta = await startSheep({ dir: `${path.join(root, 'b1')},${disk[0]}x,${other}` }).then(() => 'started', (e: Error) => e.message);
    expect(meta).toMatch(new RegExp(`sheep exited early \\(1\\).*${other} is meta-store, abort`, 's'));
    await fs.writeFile(path.join(root, 'afile'), 'x');
    const none = await startSheep({ dir: `${path.join(root, 'b2')},${path.join(root, 'afile')}` }).then(() => 'started', (e: Error) => e.message);
    expect(none).toMatch(/sheep exited early \(1\).*There isn't any available disk!/s);
    await fs.rm(other, { recursive: true });
    await fs.rm(path.join(root, 'afile'));
  });

  it('md info lists the disks with their usage (plain, raw and -A)', async () => {
    const r = await dog(['node', 'md', 'info']);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toBe('Id\tSize\tUsed\tAvail\tUse%\tPath');
    for (let i = 0; i < 3; i++) expect(lines[1 + i]).toMatch(new RegExp(`^ ${i}\\t[^\\t]+\\t[^\\t]+\\t[^\\t]+\\t +\\d+%\\t${disk[i]}$`));
    expect(lines.length).toBe(5);
    const raw = await dog(['node', 'md', 'info', '-r']);
    const rows = raw.stdout.trim().split('\n');
    expect(rows).toHaveLength(3);
    for (let i = 0; i < 3; i++) {
      const [addr, idx, size, used, free, pct, p] = rows[i].split(' ');
      expect(addr).toBe(`127.0.0.1:${nodes[0].port}`);
      expect(idx).toBe(String(i));
      expect(p).toBe(disk[i]);
      expect(BigInt(size)).toBe(BigInt(used) + BigInt(free));
      // each disk holds some 4 MiB objects
      expect(Number(used)).toBeGreaterThanOrEqual(4 << 20);
      expect(pct).toMatch(/^\d+%$/);
    }
    const all = await dog(['node', 'md', 'info', '-A']);
    expect(all.code).toBe(0);
    expect(all.stdout.startsWith('Id\tSize\tUsed\tAvail\tUse%\tPath\nNode 0:\n')).toBe(true);
    expect(all.stdout.match(/^Node \d:$/gm)).toHaveLength(3);
    expect(all.stdout.match(new RegExp(`\\t${disk[0]}$`, 'm'))).not.toBeNull();
  });

  it('advertises the sum of its disks, which weighs its auto vnodes', async () => {
    // node list -r: id host:port vnodes zone
    const list = (await dog(['node', 'list', '-r'])).stdout.trim().split('\n').map((l) => l.split(' '));
    const vnodes = (n: SheepProc) => Number(list.find((l) => l[1] === `127.0.0.1:${n.port}`)![2]);
    // node 0: the sum of its disks' sizes; a single-directory node: its file system's size
    const space0 = (await plugged()).reduce((s, d) => s + d.size, 0);
    expect(space0).toBeGreaterThan(0);
    const fsSize = async (n: SheepProc) => { const st = await fs.statfs(n.dir); return st.blocks * st.bsize; };
    const avg = (space0 + (await fsSize(nodes[1])) + (await fsSize(nodes[2]))) / 3;
    expect(Math.abs(vnodes(nodes[0]) - (128 * space0) / avg)).toBeLessThan(1.5);
    expect(Math.abs(vnodes(nodes[1]) - (128 * (await fsSize(nodes[1]))) / avg)).toBeLessThan(1.5);
  });

  it('plug asks first, refuses a duplicate, and moves to the new disk what the ring gives it', async () => {
    const no = await dog(['node', 'md', 'plug', disk[3]], 'no\n');
    expect(no.code).toBe(0);
    expect(no.stdout).toContain('Caution! The directories to be plugged will be purged.');
    expect((await plugged()).map((d) => d.path)).toEqual(disk.slice(0, 3));
    const dup = await dog(['node', 'md', 'plug', '-f', disk[1]]);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toBe('Failed to execute request, look for sheep.log for more information\n');
    // plugging purges: a directory holding the node's data, or inside it, is refused and left alone
    for (const bad of [root, base, path.join(disk[0], 'sub')]) {
      const r = await dog(['node', 'md', 'plug', '-f', bad]);
      expect(r.code).toBe(1);
      expect(nodes[0].output()).toContain(`invalid path ${bad}: it overlaps`);
    }
    await fs.access(path.join(base, 'config.json'));
    expect((await objectsIn(disk[0])).length).toBeGreaterThan(0);
    // plug purges the directory
    await fs.mkdir(disk[3], { recursive: true });
    await fs.writeFile(path.join(disk[3], 'junk'), 'x');
    expect((await dog(['node', 'md', 'plug', '-f', disk[3]])).code).toBe(0);
    await expect(fs.access(path.join(disk[3], 'junk'))).rejects.toThrow();
    expect((await plugged()).map((d) => d.path)).toEqual(disk);
    const by = await waitFor(() => placedByRing(objects), 180_000, 'objects moved by the new ring');
    expect(by.get(disk[3])!.length).toBeGreaterThan(0);
    expect((await dog(['vdi', 'read', 'mdvol', '0', String(DATA.length)], undefined, 0)).stdoutBuf.equals(model)).toBe(true);
    expect(nodes[0].output()).toMatch(new RegExp(`md: plugged ${disk[3]}`));
  });

  it('unplug asks first, refuses an unknown disk, and moves the disk\'s objects to the others', async () => {
    const no = await dog(['node', 'md', 'unplug', disk[1]], 'no\n');
    expect(no.code).toBe(0);
    expect(no.stdout).toContain('Caution! Recovery will be triggered after unplugging.');
    const unknown = await dog(['node', 'md', 'unplug', '-f', path.join(root, 'nope')]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('Failed to execute request, look for sheep.log for more information\n');
    const had = (await objectsIn(disk[1])).length;
    expect(had).toBeGreaterThan(0);
    expect((await dog(['node', 'md', 'unplug', '-f', disk[1]])).code).toBe(0);
    expect((await plugged()).map((d) => d.path)).toEqual([disk[0], disk[2], disk[3]]);
    await waitFor(() => placedByRing(objects), 180_000, 'objects moved off the unplugged disk');
    expect(await objectsIn(disk[1])).toEqual([]);
    expect((await dog(['vdi', 'read', 'mdvol', '0', String(DATA.length)], undefined, 0)).stdoutBuf.equals(model)).toBe(true);
  });

  it('a disk that fails under writes is unplugged, its objects come back from peers, nothing acknowledged is lost', async () => {
    const victim = disk[2];
    const onVictim = (await objectsIn(victim)).length;
    expect(onVictim).toBeGreaterThan(0);
    let stop = false;
    let failedAt = -1;
    const writes: Promise<void>[] = [];
    // writes through node 0 (its store is one of the replicas) go on while the disk dies
    const writer = (async () => {
      // on until the disk is out, and a few more (the retried ones among them)
      for (let n = 0, after = 0; !stop || after < 3; n++) {
        if (stop) after++;
        const off = ((n * 7919) % 12) * (4 << 20) + (n % 4) * 65536;
        const chunk = randomBytes(256 << 10);
        const r = await dog(['vdi', 'write', 'mdvol', String(off), String(chunk.length)], chunk, 0);
        if (r.code !== 0) {
          failedAt = n;
          throw new Error(`write ${n} at ${off} failed: ${r.stderr}`);
        }
        chunk.copy(model, off);
      }
    })();
    writes.push(writer);
    // and reads through node 0 of objects 12-23 (not written meanwhile), some of them on the dying disk
    let reads = 0;
    writes.push((async () => {
      for (let n = 0, after = 0; !stop || after < 2; n++) {
        if (stop) after++;
        const off = (12 + ((n * 5) % 12)) * (4 << 20);
        const r = await dog(['vdi', 'read', 'mdvol', String(off), String(4 << 20)], undefined, 0);
        if (r.code !== 0) throw new Error(`read at ${off} failed: ${r.stderr}`);
        if (!r.stdoutBuf.equals(model.subarray(off, off + (4 << 20)))) throw new Error(`read at ${off}: wrong data`);
        reads++;
      }
    })());
    await new Promise((r) => setTimeout(r, 1500));
    // the directory goes away and a file takes its place: opens under it fail with ENOTDIR
    await fs.rename(victim, `${victim}.gone`);
    await fs.writeFile(victim, 'not a directory');
    await waitFor(() => new RegExp(`md_remove_disk ${victim} from multi-disk array`).test(nodes[0].output()), 90_000, 'the disk to be unplugged');
    stop = true;
    await Promise.all(writes);
    expect(failedAt).toBe(-1);
    expect(reads).toBeGreaterThanOrEqual(2);
    expect((await plugged()).map((d) => d.path)).toEqual([disk[0], disk[3]]);
    // the victim's objects were recovered from the other replicas onto the remaining disks
    await waitFor(() => placedByRing(objects), 240_000, 'the failed disk\'s objects recovered');
    for (const i of [0, 1, 2]) {
      expect((await dog(['vdi', 'read', 'mdvol', '0', String(DATA.length)], undefined, i)).stdoutBuf.equals(model)).toBe(true);
    }
    // read node 0's own copies: every replica agrees (check compares them)
    const chk = await dog(['vdi', 'check', 'mdvol']);
    expect(chk.code).toBe(0);
    expect(chk.stdout).toBe('finish check&repair mdvol\n');
  });

  it('a disk that failed is not used again after a restart, even when it comes back with its old objects', async () => {
    const victim = disk[2];
    // the failed disk comes back, as it was when it failed (older copies of objects written since)
    await fs.rm(victim, { force: true });
    await fs.rename(`${victim}.gone`, victim);
    expect((await objectsIn(victim)).length).toBeGreaterThan(0);
    await nodes[0].stop();
    const again = await startSheep({ dir: nodes[0].dir, port: nodes[0].port, args: ['-c', clusterId, '-z', '0'] });
    nodes[0] = again;
    expect(again.output()).toContain(`${victim} failed in an earlier run`);
    // the command line's disks, less the failed one (plug and unplug last until a restart)
    expect((await plugged()).map((d) => d.path)).toEqual([disk[0], disk[1]]);
    for (let t = 0; t < 3; t++) {
      expect((await dog(['vdi', 'read', 'mdvol', '0', String(DATA.length)], undefined, 0)).stdoutBuf.equals(model)).toBe(true);
    }
  });
});
