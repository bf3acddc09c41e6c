// The md disk ring (erasure-coding-and-md.md B.2) against a BigInt model
// written from the doc, the path syntax of B.1, and the MD_PLUG payload.
import { describe, it, expect } from 'vitest';
import { randomBytes } from 'node:crypto';

const randomOid = () => randomBytes(8).readBigUInt64LE();
import { fnv1a, sdHashOid, encodeMdPaths, decodeMdPaths } from '@sheepdog/common';
import { DiskRing, diskPoints, vdiskCount, MD_VDISK_SIZE } from '../../sheep/src/store/md-ring.js';
import { parseDiskArg } from '../../sheep/src/store/md.js';

const M64 = (1n << 64n) - 1n;
const next = (h: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(h); return fnv1a(b, h) & M64; };

describe('md disk ring', () => {
  it('uses 16 MiB virtual disks (upstream master): the doc\'s 81,002,614,784-byte disk has 4829', () => {
    expect(MD_VDISK_SIZE).toBe(16 << 20);
    expect(vdiskCount(81_002_614_784)).toBe(4829);
    expect(vdiskCount(1)).toBe(1);
    expect(vdiskCount(0)).toBe(1);
  });

  it('a disk\'s points are sd_hash_next iterated from sd_hash(path), the seed not one of them', () => {
    const p = '/srv/sheep/n0d1';
    let h = next(fnv1a(Buffer.from(p)));
    const want: bigint[] = [];
    for (let i = 0; i < 500; i++) want.push((h = next(h)));
    expect(diskPoints(p, 500)).toEqual(want);
  });

  it('an object goes to the disk of the first point at or after sd_hash_oid(oid), wrapping', () => {
    const disks = [{ path: '/a/d0', size: 3 * 2 ** 30 }, { path: '/a/d1', size: 1 * 2 ** 30 }, { path: '/b/d2', size: 5 * 2 ** 30 }];
    const pts = disks.flatMap((d) => diskPoints(d.path, vdiskCount(d.size)).map((h) => ({ h, p: d.path }))).sort((a, b) => (a.h < b.h ? -1 : 1));
    const ring = new DiskRing(disks);
    const count = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      // random oids: sequential ones hash unevenly (FNV), on upstream's rings as on ours
      const oid = i < 1000 ? (BigInt(0x7c2b25 + (i % 7)) << 32n) | BigInt(i) : randomOid();
      const k = sdHashOid(oid);
      const want = (pts.find((x) => x.h >= k) ?? pts[0]).p;
      expect(ring.diskOf(oid)!.path).toBe(want);
      count.set(want, (count.get(want) ?? 0) + 1);
    }
    // weighted by size: 3 : 1 : 5 (of 2000 random oids, and 1000 others)
    expect(count.get('/b/d2')!).toBeGreaterThan(count.get('/a/d0')!);
    expect(count.get('/a/d0')!).toBeGreaterThan(count.get('/a/d1')!);
    expect(new DiskRing([]).diskOf(1n)).toBeUndefined();
  });

  it('adding a disk moves only objects to it; removing one moves only its objects', () => {
    const two = [{ path: '/x/0', size: 2 * 2 ** 30 }, { path: '/x/1', size: 2 * 2 ** 30 }];
    const three = [...two, { path: '/x/2', size: 2 * 2 ** 30 }];
    const r2 = new DiskRing(two);
    const r3 = new DiskRing(three);
    let moved = 0;
    for (let i = 0; i < 2000; i++) {
      const oid = randomOid();
      const a = r2.diskOf(oid)!.path;
      const b = r3.diskOf(oid)!.path;
      if (a !== b) {
        expect(b).toBe('/x/2');
        moved++;
      }
    }
    expect(moved).toBeGreaterThan(400);
    expect(moved).toBeLessThan(1000);
  });

  it('parses BASE,DISK... : absolute, trailing slashes trimmed, no empty names', () => {
    expect(parseDiskArg('/var/lib/sheepdog')).toEqual({ base: '/var/lib/sheepdog', disks: [] });
    expect(parseDiskArg('/meta/,/d0/,/d1')).toEqual({ base: '/meta', disks: ['/d0', '/d1'] });
    expect(parseDiskArg('rel,d1').base).toBe(`${process.cwd()}/rel`);
    expect(() => parseDiskArg('/meta,,/d1')).toThrow(/empty path/);
  });

  it('MD_PLUG / MD_UNPLUG payload: comma-separated paths and a NUL', () => {
    const b = encodeMdPaths('/d3,/d4');
    expect(b.equals(Buffer.from('/d3,/d4\0'))).toBe(true);
    expect(decodeMdPaths(b)).toEqual(['/d3', '/d4']);
    expect(decodeMdPaths(Buffer.from('/d3,,\0junk'))).toEqual(['/d3']);
  });
});

describe('md disk ring at scale', () => {
  it('a ring of twelve 4 TiB disks (3 million points) is built, and changed, without holding the loop for seconds', () => {
    const disks = Array.from({ length: 12 }, (_, i) => ({ path: `/srv/disk${i}`, size: 4 * 2 ** 40 }));
    let t = Date.now();
    const ring = new DiskRing(disks);
    const first = Date.now() - t;
    t = Date.now();
    // a disk fails: the others' sorted points are kept, nothing is rebuilt
    const less = new DiskRing(disks.slice(1));
    const again = Date.now() - t;
    expect(again).toBeLessThan(100);
    expect(first).toBeLessThan(60_000);
    t = Date.now();
    for (let i = 0; i < 100_000; i++) less.diskOf(BigInt(i) * 0x9e3779b97f4a7c15n & ((1n << 64n) - 1n));
    expect(Date.now() - t).toBeLessThan(30_000);
    for (let i = 0; i < 2000; i++) {
      const oid = (0x3f5n << 32n) | BigInt(i);
      const d = ring.diskOf(oid)!.path;
      // consistent hashing: only the failed disk's objects move
      if (d !== '/srv/disk0') expect(less.diskOf(oid)!.path).toBe(d);
    }
  }, 180_000);
});
