// The store on several disks (store/md.ts with store/plain.ts): start-up
// checks of B.1, objects on their ring disk, plug and unplug moving files
// (with their versions) while reads and writes go on, and B.5's handling
// of errors on a disk.
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { dir as tmpDir, DirectoryResult } from 'tmp-promise';
import { Res, SheepdogError } from '@sheepdog/common';
import { PlainStore } from '../../sheep/src/store/plain.js';
import { MdDisks, DiskChange } from '../../sheep/src/store/md.js';
import { versionIO } from '../../sheep/src/store/fileio.js';

const SIZE = 64 * 1024;
const oidOf = (i: number) => (0x7c2b5an << 32n) | BigInt(i);
const N = 60;

let d: DirectoryResult;
let base: string;
const disk = (i: number) => path.join(d.path, `d${i}`);
const stores: PlainStore[] = [];
const mds: MdDisks[] = [];
const mounted: string[] = [];

async function open(disks: string[], opts: { journal?: boolean } = {}): Promise<{ st: PlainStore; md: MdDisks; changes: DiskChange[] }> {
  const md = new MdDisks(base, disks);
  mds.push(md);
  const st = new PlainStore(base, false, opts.journal ? { file: path.join(base, 'journal'), sizeBytes: 1 << 20 } : undefined, md);
  stores.push(st);
  const changes: DiskChange[] = [];
  st.onDiskChange = (c) => changes.push(c);
  await md.init();
  await st.init();
  await st.setDriver('plain');
  st.epochNow = () => 3;
  if (opts.journal) await st.startJournal(() => undefined);
  return { st, md, changes };
}

const files = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => /^[0-9a-f]{16}$/.test(f)) : []);

/** Every object file is on the disk md says is its home. */
function expectHome(md: MdDisks, n: number): void {
  let total = 0;
  for (const r of md.roots()) {
    for (const f of files(r)) {
      expect(md.homeOf(BigInt('0x' + f))).toBe(r);
      total++;
    }
  }
  expect(total).toBe(n);
}

beforeEach(async () => {
  d = await tmpDir({ unsafeCleanup: true, prefix: 'md-store-' });
  base = path.join(d.path, 'base');
});
afterEach(async () => {
  for (const st of stores.splice(0)) await st.close().catch(() => undefined);
  for (const md of mds.splice(0)) md.close();
  for (const m of mounted.splice(0)) execFileSync('umount', ['-l', m]);
  await d.cleanup();
});

describe('md store', () => {
  it('B.1: refuses a meta-store disk, skips duplicates and unusable paths, needs one disk', async () => {
    fs.mkdirSync(disk(9), { recursive: true });
    fs.writeFileSync(path.join(disk(9), 'config.json'), '{}');
    fs.mkdirSync(path.join(disk(9), 'epoch'));
    await expect(new MdDisks(base, [disk(0), disk(9)]).init()).rejects.toThrow(`${disk(9)} is meta-store, abort`);
    fs.writeFileSync(disk(8), 'a file');
    const { md } = await open([disk(0), disk(0), disk(8), disk(1)]);
    expect(md.disks.map((x) => x.path)).toEqual([disk(0), disk(1)]);
    // the size is measured once and kept on the directory
    expect(versionIO!.getU64Attr(disk(0), 'user.md.size')).toBe(md.disks[0].size);
    expect(md.space).toBe(BigInt(md.disks[0].size + md.disks[1].size));
    expect(fs.existsSync(path.join(disk(0), '.stale'))).toBe(true);
    expect(fs.existsSync(path.join(base, 'obj'))).toBe(true);
    await expect(new MdDisks(base, [disk(8)]).init()).rejects.toThrow("There isn't any available disk!");
  });

  it('objects go to their ring disk; plug and unplug move them with their versions while I/O goes on', async () => {
    const { st, md } = await open([disk(0), disk(1)], { journal: true });
    const data = new Map<bigint, Buffer>();
    for (let i = 0; i < N; i++) {
      const b = randomBytes(SIZE);
      await st.create(oidOf(i), SIZE, 0, b);
      data.set(oidOf(i), b);
    }
    expectHome(md, N);
    expect(files(disk(0)).length).toBeGreaterThan(0);
    expect(files(disk(1)).length).toBeGreaterThan(0);
    expect(files(path.join(base, 'obj'))).toEqual([]);
    // set one aside: set-aside copies move too
    await st.setAside(oidOf(0));
    let stop = false;
    const io = (async () => {
      for (let n = 0; !stop; n++) {
        const oid = oidOf(1 + (n % (N - 1)));
        const off = (n % 16) * 4096;
        const b = randomBytes(4096);
        await st.write(oid, off, b);
        b.copy(data.get(oid)!, off);
        const got = await st.read(oid, 0, SIZE);
        expect(got.equals(data.get(oid)!)).toBe(true);
      }
    })();
    // the new disk is a file system of its own: files are copied over (with their versions), not renamed
    fs.mkdirSync(disk(2));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', disk(2)]);
    mounted.push(disk(2));
    expect(versionIO!.setU64Attr(disk(2), 'user.md.size', md.disks[0].size)).toBe(0);
    fs.writeFileSync(path.join(disk(2), 'junk'), 'purged by plug');
    expect(await md.plug([disk(2)])).toBe(true);
    expect(fs.existsSync(path.join(disk(2), 'junk'))).toBe(false);
    expect(await md.plug([disk(2)])).toBe(false);
    await md.settled();
    expectHome(md, N - 1);
    expect(files(disk(2)).length).toBeGreaterThan(N / 6);
    expect(fs.statSync(disk(2)).dev).not.toBe(fs.statSync(disk(0)).dev);
    expect(await md.unplug([disk(0)])).toBe(true);
    expect(await md.unplug([path.join(d.path, 'nope')])).toBe(false);
    await md.settled();
    stop = true;
    await io;
    expect(files(disk(0))).toEqual([]);
    expect(md.roots()).toEqual([disk(1), disk(2)]);
    expectHome(md, N - 1);
    for (let i = 1; i < N; i++) {
      const { data: got, version } = await st.readCopy(oidOf(i), SIZE, false);
      expect(got.equals(data.get(oidOf(i))!)).toBe(true);
      expect(version).toBe(3);
    }
    expect(st.bestCopy(oidOf(0))).toBe('stale');
    expect((await st.staleRead(oidOf(0), 0, SIZE)).equals(data.get(oidOf(0))!)).toBe(true);
    expect((await st.copies()).length).toBe(N);
  });

  it('B.5: ENOENT under a present directory is NO_OBJ; a disk gone, or any other error on it, fails it and asks for a retry', async () => {
    const { st, md, changes } = await open([disk(0), disk(1), disk(2)]);
    for (let i = 0; i < N; i++) await st.create(oidOf(i), SIZE, 0, Buffer.alloc(SIZE, i));
    await expect(st.read(oidOf(1000), 0, 10)).rejects.toMatchObject({ result: Res.NO_OBJ });
    expect(changes).toEqual([]);
    // an object on disk 1, read through a descriptor not cached yet
    const victim = disk(1);
    const oid = [...Array(N).keys()].map(oidOf).find((o) => md.homeOf(o) === victim)!;
    await st.close();
    fs.renameSync(victim, `${victim}.gone`);
    fs.writeFileSync(victim, 'not a directory');
    const e = await st.read(oid, 0, 10).catch((x) => x);
    expect(e).toBeInstanceOf(SheepdogError);
    expect((e as SheepdogError).result).toBe(Res.NETWORK_ERROR);
    expect(changes).toEqual([{ kind: 'failed', disk: victim }]);
    expect(md.disks.map((x) => x.path)).toEqual([disk(0), disk(2)]);
    // its objects are gone from this node (recovery brings them back from peers); the others stay
    await expect(st.read(oid, 0, 10)).rejects.toMatchObject({ result: Res.NO_OBJ });
    expect((await st.copies()).length).toBe(N - files(`${victim}.gone`).length);
    expect(JSON.parse(fs.readFileSync(path.join(base, 'md-failed.json'), 'utf8'))).toEqual([victim]);
    // a directory removed under a disk: its parent is gone, "corrupted"
    const other = [...Array(N).keys()].map(oidOf).find((o) => md.homeOf(o) === disk(2))!;
    fs.rmSync(disk(2), { recursive: true });
    await expect(st.read(other, 0, 10)).rejects.toMatchObject({ result: Res.NETWORK_ERROR });
    expect(changes.at(-1)).toEqual({ kind: 'failed', disk: disk(2) });
    // the last disk: reads get EIO ("no disks plugged") once it fails too
    md.fail(disk(0), 'test');
    expect(changes.at(-1)).toEqual({ kind: 'failed', disk: disk(0) });
    await expect(st.read(other, 0, 10)).rejects.toMatchObject({ result: Res.EIO });
  });

  it('B.5 with real I/O errors: a disk on a loop device whose blocks go away is unplugged on the first read that fails', async () => {
    // an ext4 file system on a loop device, then the device shrunk under it: its blocks give EIO
    const img = path.join(d.path, 'img');
    fs.mkdirSync(disk(2));
    execFileSync('truncate', ['-s', '64M', img]);
    execFileSync('mkfs.ext4', ['-q', '-F', img]);
    const loop = execFileSync('losetup', ['-f', '--show', img]).toString().trim();
    try {
      execFileSync('mount', [loop, disk(2)]);
      try {
        // a size kept on the directory is what counts (as on a restart): disk 0 weighs as much as the loop
        fs.mkdirSync(disk(0));
        expect(versionIO!.setU64Attr(disk(0), 'user.md.size', 60 << 20)).toBe(0);
        const { st, md, changes } = await open([disk(0), disk(2)]);
        expect(md.disks[0].size).toBe(60 << 20);
        for (let i = 0; i < N; i++) await st.create(oidOf(i), SIZE, 0, Buffer.alloc(SIZE, i));
        const onLoop = [...Array(N).keys()].map(oidOf).filter((o) => md.homeOf(o) === disk(2));
        expect(onLoop.length).toBeGreaterThan(0);
        expect((await st.read(onLoop[0], 0, SIZE)).equals(Buffer.alloc(SIZE, Number(onLoop[0] & 0xffn)))).toBe(true);
        await st.close(); // no descriptor cached
        execFileSync('truncate', ['-s', '1M', img]);
        execFileSync('losetup', ['-c', loop]);
        // out of the page cache, so reads go to the device
        for (const f of files(disk(2))) execFileSync('dd', [`if=${path.join(disk(2), f)}`, 'iflag=nocache', 'count=0', 'status=none']);
        const e = await st.read(onLoop[0], 0, SIZE).catch((x) => x);
        expect(e).toMatchObject({ result: Res.NETWORK_ERROR });
        await new Promise((r) => setTimeout(r, 200));
        expect(changes).toContainEqual({ kind: 'failed', disk: disk(2) });
        expect(md.disks.map((x) => x.path)).toEqual([disk(0)]);
        // never served from the failed disk again
        await expect(st.read(onLoop[0], 0, SIZE)).rejects.toMatchObject({ result: Res.NO_OBJ });
        // the other disks' objects are fine
        const fine = [...Array(N).keys()].map(oidOf).find((o) => !onLoop.includes(o))!;
        expect((await st.read(fine, 0, SIZE)).equals(Buffer.alloc(SIZE, Number(fine & 0xffn)))).toBe(true);
      } finally {
        execFileSync('umount', ['-l', disk(2)]);
      }
    } finally {
      execFileSync('losetup', ['-d', loop]);
    }
  });

  it('tree layout: objects in the disks\' subdirectories; a plugged disk gets them too', async () => {
    const { st, md } = await open([disk(0), disk(1)]);
    await st.setDriver('tree');
    for (let i = 0; i < N; i++) await st.create(oidOf(i), SIZE, 0, Buffer.alloc(SIZE, i));
    expect(await md.plug([disk(2)])).toBe(true);
    await md.settled();
    const sub = '5a'; // the low byte of the vid 0x7c2b5a
    let n = 0;
    for (const r of md.roots()) {
      for (const f of files(path.join(r, sub))) {
        expect(md.homeOf(BigInt('0x' + f))).toBe(r);
        n++;
      }
    }
    expect(n).toBe(N);
    expect(files(path.join(disk(2), sub)).length).toBeGreaterThan(0);
    for (let i = 0; i < N; i++) expect((await st.read(oidOf(i), 0, SIZE)).equals(Buffer.alloc(SIZE, i))).toBe(true);
  });

  it('a file left on another disk (a move cut short) is found where it is, then moved home', async () => {
    const first = await open([disk(0), disk(1)]);
    for (let i = 0; i < N; i++) await first.st.create(oidOf(i), SIZE, 0, Buffer.alloc(SIZE, i));
    await first.st.close();
    first.md.close();
    const away = [...Array(N).keys()].map(oidOf).find((o) => first.md.homeOf(o) === disk(0))!;
    const name = away.toString(16).padStart(16, '0');
    fs.renameSync(path.join(disk(0), name), path.join(disk(1), name));
    const again = await open([disk(0), disk(1)]);
    expect((await again.st.read(away, 0, SIZE)).equals(Buffer.alloc(SIZE, Number(away & 0xffn)))).toBe(true);
    await again.md.settled();
    expect(fs.existsSync(path.join(disk(0), name))).toBe(true);
    expect(fs.existsSync(path.join(disk(1), name))).toBe(false);
    expectHome(again.md, N);
  });

  it('unplugging a disk that cannot be read any more handles it as failed (its objects come from peers)', async () => {
    const { st, md, changes } = await open([disk(0), disk(1)]);
    for (let i = 0; i < N; i++) await st.create(oidOf(i), SIZE, 0, Buffer.alloc(SIZE, i));
    fs.rmSync(disk(1), { recursive: true });
    expect(await md.unplug([disk(1)])).toBe(true);
    expect(changes).toEqual([{ kind: 'failed', disk: disk(1) }]);
    expect(md.roots()).toEqual([disk(0)]);
    expect((await st.copies()).length).toBe(files(disk(0)).length);
  });

  it('a failed disk is not used again by a restart until plugged anew', async () => {
    const first = await open([disk(0), disk(1)]);
    first.md.fail(disk(1), 'test');
    await new Promise((r) => setTimeout(r, 100));
    await first.st.close();
    first.md.close();
    const again = await open([disk(0), disk(1)]);
    expect(again.md.disks.map((x) => x.path)).toEqual([disk(0)]);
    expect(await again.md.plug([disk(1)])).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(base, 'md-failed.json'), 'utf8'))).toEqual([]);
  });
});
