// A listing of a node's copies (what recovery on every other node plans
// from) while the node itself moves copies between its live and set-aside
// directories: every object present throughout must be listed.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { dir as tmpDir, DirectoryResult } from 'tmp-promise';
import { PlainStore } from '../../sheep/src/store/plain.js';

const N = 1000;

describe('store listing during moves', () => {
  let d: DirectoryResult;
  beforeAll(async () => { d = await tmpDir({ unsafeCleanup: true }); });
  afterAll(async () => { await d.cleanup(); });

  it('lists every object while copies are set aside and restored', async () => {
    const st = new PlainStore(d.path, true);
    await st.init();
    st.epochNow = () => 1;
    const oids = Array.from({ length: N }, (_, i) => 0x0011af4e00000000n + BigInt(i));
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
