// Tombstones survive a restart, and a damaged or torn file is named in the
// log and read as far as it is good.
import { describe, it, expect } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { dir as tmpDir } from 'tmp-promise';
import { Tombstones } from '../../sheep/src/store/tombstones.js';

describe('tombstones', () => {
  it('keep the newest removal epoch of each object across a reload, and clear on format', async () => {
    const d = (await tmpDir({ unsafeCleanup: true })).path;
    const t = new Tombstones(d);
    await t.load();
    t.add(0x1234n, 5);
    t.add(0x1234n, 3); // older news changes nothing
    t.add(0x99n << 32n, 7);
    t.add(0x1234n, 9);
    await t.settled();
    const u = new Tombstones(d);
    await u.load();
    expect(u.get(0x1234n)).toBe(9);
    expect(u.get(0x99n << 32n)).toBe(7);
    expect(u.get(0x1n)).toBeUndefined();
    expect(u.size).toBe(2);
    await u.clear();
    const v = new Tombstones(d);
    await v.load();
    expect(v.size).toBe(0);
  });

  it('skip a damaged record and a torn tail, keeping the rest', async () => {
    const d = (await tmpDir({ unsafeCleanup: true })).path;
    const t = new Tombstones(d);
    await t.load();
    for (let i = 1; i <= 3; i++) t.add(BigInt(i), i);
    await t.settled();
    const f = path.join(d, 'removed');
    const b = await fsp.readFile(f);
    expect(b.length).toBe(48);
    b[16 + 3] ^= 0xff; // the second record's oid
    await fsp.writeFile(f, Buffer.concat([b, Buffer.from([1, 2, 3])]));
    const u = new Tombstones(d);
    await u.load();
    expect([...u.entries()].sort((a, z) => Number(a[0] - z[0]))).toEqual([[1n, 1], [3n, 3]]);
    // rewritten clean
    expect((await fsp.readFile(f)).length).toBe(32);
  });
});
