// A listing of a node's copies (what recovery on every other node plans
// from) while the node itself moves copies between its live and set-aside
// directories: every object present throughout must be listed.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { dir as tmpDir, DirectoryResult } from 'tmp-promise';
import { PlainStore } from '../../sheep/src/store/plain.js';

const N = 1000;

describe.each(['plain', 'tree'])('store listing during moves (%s)', (driver) => {
  let d: DirectoryResult;
  beforeAll(async () => { d = await tmpDir({ unsafeCleanup: true }); });
  afterAll(async () => { await d.cleanup(); });

  it('lists every object while copies are set aside and restored', async () => {
    const st = new PlainStore(d.path, true);
    await st.init();
    await st.setDriver(driver);
    st.epochNow = () => 1;
    // data objects of two VDIs (two tree directories) and their inodes (meta/)
    const oids = Array.from({ length: N }, (_, i) =>
      i % 100 === 0 ? (1n << 63n) | (BigInt(0x11af4e + (i % 200 ? 1 : 0)) << 32n) | BigInt(i)
        : (BigInt(0x11af4e + (i % 2)) << 32n) + BigInt(i));
    const small = Buffer.alloc(512, 7);
    for (const oid of oids) await st.createFull(oid, 512, small, 1);
    for (let round = 0; round < 4; round++) {
      const restoring = round % 2 === 0;
      if (restoring) for (const oid of oids) await st.setAside(oid);
      // the moves run in the background, as a node's own recovery does,
      // while listings are taken
      let moving = true;
      const mover = (async () => {
        for (let i = 0; i < N; i += 8) {
          await Promise.all(oids.slice(i, i + 8).map((oid) => (restoring ? st.restoreStale(oid) : st.setAside(oid))));
        }
        moving = false;
      })();
      let listings = 0;
      while (moving) {
        const got = new Set((await st.copies()).map((c) => c.oid));
        expect(got.size, `listing ${listings} of round ${round}`).toBe(N);
        listings++;
      }
      await mover;
      expect(listings).toBeGreaterThan(0);
      const after = await st.copies();
      expect(after.length).toBe(N);
      expect(after.every((c) => c.stale === !restoring)).toBe(true);
    }
    await st.close();
  });

  it('removing an object removes a copy set aside too (a later recovery would bring it back)', async () => {
    const st = new PlainStore(d.path + '/rm', true);
    await st.init();
    st.epochNow = () => 1;
    const oid = 0x0011af4f00000003n;
    await st.createFull(oid, 512, Buffer.alloc(512, 1), 1);
    await st.setAside(oid);
    await st.createFull(oid, 512, Buffer.alloc(512, 2), 2);
    expect((await st.copies()).length).toBe(1);
    expect(await st.remove(oid)).toBe(true);
    expect(await st.copies()).toEqual([]);
    expect(await st.staleList()).toEqual([]);
    await st.createFull(oid, 512, Buffer.alloc(512, 1), 1);
    await st.setAside(oid);
    expect(await st.remove(oid)).toBe(true);
    expect(await st.copies()).toEqual([]);
    expect(await st.remove(oid)).toBe(false);
    await st.close();
  });
});

describe('the tree layout', () => {
  let d: DirectoryResult;
  beforeAll(async () => { d = await tmpDir({ unsafeCleanup: true }); });
  afterAll(async () => { await d.cleanup(); });

  it('places, reads, lists, sets aside, restores and wipes as plain does', async () => {
    const st = new PlainStore(d.path, true);
    await st.init();
    await st.setDriver('tree');
    expect(st.name).toBe('tree');
    st.epochNow = () => 3;
    const obj = path.join(d.path, 'obj');
    const data = (0x01ec8cn << 32n);
    const inode = (1n << 63n) | (0x01ec8cn << 32n);
    const vmstate = (1n << 62n) | (0x01ec8cn << 32n) | 2n;
    await st.create(data, 1 << 20, 4096, Buffer.alloc(8192, 5));
    await st.createFull(inode, 8192, Buffer.alloc(8192, 6), 2);
    await st.createFull(vmstate, 4096, Buffer.alloc(4096, 7), 2);
    // the doc's example: 0001ec8c00000000 in obj/8c/, its inode in obj/meta/
    expect(readdirSync(path.join(obj, '8c'))).toEqual(['0001ec8c00000000']);
    expect(readdirSync(path.join(obj, 'meta')).sort()).toEqual(['4001ec8c00000002', '8001ec8c00000000']);
    expect(readdirSync(obj).filter((f) => /^[0-9a-f]{16}$/.test(f))).toEqual([]);
    expect((await st.read(data, 4096, 8192)).equals(Buffer.alloc(8192, 5))).toBe(true);
    expect(await st.versionOf(data)).toBe(3);
    expect(await st.versionOf(inode)).toBe(2);
    expect((await st.list()).sort()).toEqual([vmstate, data, inode].sort());
    await st.write(data, 0, Buffer.alloc(10, 9));
    expect((await st.read(data, 0, 10)).equals(Buffer.alloc(10, 9))).toBe(true);
    // set aside: out of the tree, into .stale; back again
    await st.setAside(data);
    expect(existsSync(path.join(obj, '8c', '0001ec8c00000000'))).toBe(false);
    expect(await st.staleList()).toEqual([data]);
    expect((await st.copies()).find((c) => c.oid === data)).toEqual({ oid: data, version: 3, stale: true });
    expect(await st.restoreStale(data)).toBe(true);
    expect(existsSync(path.join(obj, '8c', '0001ec8c00000000'))).toBe(true);
    expect((await st.readCopy(data, 1 << 20, false)).data.subarray(0, 10).equals(Buffer.alloc(10, 9))).toBe(true);
    expect(await st.count()).toBe(3);
    expect((await st.usage()).used).toBeGreaterThan(0n);
    // a restart on the same directory finds the objects again
    await st.close();
    const again = new PlainStore(d.path, true);
    await again.init();
    await again.setDriver('tree');
    expect((await again.list()).length).toBe(3);
    expect((await again.read(inode, 0, 8192)).equals(Buffer.alloc(8192, 6))).toBe(true);
    // format: everything goes; a plain store afterwards is flat
    await again.wipe();
    await again.setDriver('plain');
    expect(await again.count()).toBe(0);
    await again.create(data, 4096, 0, Buffer.alloc(1, 1));
    expect(existsSync(path.join(obj, '0001ec8c00000000'))).toBe(true);
    expect(existsSync(path.join(obj, 'meta'))).toBe(false);
    await again.close();
  });
});
