// The pieces of the EC data path that need no cluster: strip keys and file
// names, the EC_STRIPS codec, journal records of strips, the sliced codec
// against the whole-buffer one, the stripe range locks, and a plain store
// holding strips beside replicated objects.
import { describe, it, expect } from 'vitest';
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dir as tmpDir } from 'tmp-promise';
import {
  ecEncode, ecDecode, ecSplit, encodeStripRecords, decodeStripRecords, isEcStriped, stripFileName, stripFileSize, SD_ATTR_OBJ_SIZE,
  vidToDataOid, vidToVdiOid, vidToVmstateOid, vidToAttrOid, vidToBtreeOid, dataOidToLedgerOid,
} from '@sheepdog/common';
import { stripKey, keyOid, keyStrip, keyFileName, parseStripFileName, keyTag, keyFromTag } from '../../sheep/src/ec/strip-key.js';
import { encodeSliced, decodeSliced, splitSliced, joinSliced } from '../../sheep/src/ec/codec-async.js';
import { RangeLocks } from '../../sheep/src/ec/range-lock.js';
import { encodeRecordHead, decodeRecordHead, REC_HEADER, recordIntact } from '../../sheep/src/store/journal-record.js';
import { PlainStore } from '../../sheep/src/store/plain.js';

const OID = 0x00abf94000000001n;

describe('strip keys', () => {
  it('keep the oid, carry the index above 64 bits, and name files as A.4 does', () => {
    for (const idx of [0, 1, 2, 5, 30]) {
      const k = stripKey(OID, idx);
      expect(k > 0xffffffffffffffffn).toBe(true);
      expect(keyOid(k)).toBe(OID);
      expect(keyStrip(k)).toBe(idx);
      expect(keyFromTag(OID, keyTag(k))).toBe(k);
      expect(keyFileName(k)).toBe(`00abf94000000001_${idx}`);
      expect(parseStripFileName(keyFileName(k))).toEqual({ oid: OID, idx });
    }
    // a replicated object's key is its oid, and its name is unchanged
    expect(keyStrip(OID)).toBe(-1);
    expect(keyFileName(OID)).toBe('00abf94000000001');
    expect(keyFileName(vidToVdiOid(0xabf940))).toBe('80abf94000000000');
    expect(stripFileName(OID, 2)).toBe('00abf94000000001_2');
    // what a directory scan must not take for a strip
    for (const f of ['00abf94000000001', '00abf94000000001_31', '00abf94000000001_', '00abf94000000001_1.tmp', 'abf94000000001_1', '00abf94000000001_001']) {
      expect(parseStripFileName(f), f).toBeUndefined();
    }
  });

  it('size strip files by whole stripes: exact for data objects, the attribute object padded', () => {
    expect(stripFileSize(4 << 20, 2)).toBe(2 << 20);
    expect(stripFileSize(4 << 20, 16)).toBe(256 << 10);
    expect(stripFileSize(SD_ATTR_OBJ_SIZE, 2)).toBe(33280);
    expect(stripFileSize(SD_ATTR_OBJ_SIZE, 4) * 4).toBeGreaterThanOrEqual(SD_ATTR_OBJ_SIZE);
  });

  it('stripe data, vmstate and attribute objects, never inodes, B-tree nodes or ledgers (A.3)', () => {
    expect(isEcStriped(vidToDataOid(7, 3))).toBe(true);
    expect(isEcStriped(vidToVmstateOid(7, 3))).toBe(true);
    expect(isEcStriped(vidToAttrOid(7, 3))).toBe(true);
    expect(isEcStriped(vidToVdiOid(7))).toBe(false);
    expect(isEcStriped(vidToBtreeOid(7, 1))).toBe(false);
    expect(isEcStriped(dataOidToLedgerOid(vidToDataOid(7, 3)))).toBe(false);
  });
});

describe('EC_STRIPS records', () => {
  it('round-trip, and a count the bytes do not hold is refused', () => {
    const recs = [{ oid: OID, idx: 0, version: 7 }, { oid: OID + 1n, idx: 30, version: 0xffffffff }, { oid: OID, idx: 255, version: 3 }];
    const b = encodeStripRecords(recs, true);
    expect(b.length).toBe(8 + 16 * 3);
    expect(decodeStripRecords(b)).toEqual({ records: recs, more: true });
    const lying = Buffer.from(b);
    lying.writeUInt32LE(1_000_000, 0);
    expect(() => decodeStripRecords(lying)).toThrow(/claims/);
    expect(() => decodeStripRecords(Buffer.alloc(3))).toThrow();
  });
});

describe('journal records of strips', () => {
  it('carry the strip index in the word that was zero, so replay finds <oid>_<idx>', () => {
    const data = randomBytes(100);
    for (const key of [OID, stripKey(OID, 0), stripKey(OID, 17)]) {
      const h = Buffer.alloc(REC_HEADER);
      encodeRecordHead(h, { seq: 5, oid: key, ino: 9n, btime: 11n, off: 4096 }, data);
      const r = decodeRecordHead(h)!;
      expect(r.oid).toBe(key);
      expect(recordIntact(h, data)).toBe(true);
      // a replicated object's record is byte for byte what it was
      if (key === OID) expect(h.readUInt32LE(20)).toBe(0);
    }
  });
});

describe('sliced erasure code', () => {
  it('gives the bytes of the whole-buffer code, encoding and decoding, for objects larger than a slice', async () => {
    for (const [d, p] of [[2, 1], [4, 2], [16, 4]]) {
      const obj = randomBytes(1 << 20);
      const data = ecSplit(obj, d);
      const parity = await encodeSliced(data, p);
      const want = ecEncode(data, p);
      parity.forEach((b, k) => expect(b.equals(want[k]), `${d}:${p} parity ${k}`).toBe(true));
      // the last D strips (the first P lost)
      const all = [...data, ...parity];
      const have = new Map(all.map((b, i) => [i, b] as [number, Buffer]).slice(p));
      const got = await decodeSliced(d, have);
      const ref = ecDecode(d, have);
      got.forEach((b, j) => {
        expect(b.equals(ref[j])).toBe(true);
        expect(b.equals(data[j])).toBe(true);
      });
    }
  });

  it('cuts and joins stripes as ecSplit and ecJoin do, from aligned and unaligned buffers', async () => {
    for (const d of [2, 4, 8, 16]) {
      const big = randomBytes((1 << 20) + 1);
      for (const obj of [big.subarray(0, 1 << 20), big.subarray(1)]) {
        const want = ecSplit(obj, d);
        const got = await splitSliced(obj, d);
        got.forEach((b, j) => expect(b.equals(want[j]), `D=${d} strip ${j}`).toBe(true));
        expect((await joinSliced(got)).equals(obj)).toBe(true);
        const odd = got.map((b) => { const c = Buffer.alloc(b.length + 1); b.copy(c, 1); return c.subarray(1); });
        expect((await joinSliced(odd)).equals(obj)).toBe(true);
      }
    }
  });

  it('lets the event loop run between slices of a 4 MiB object', async () => {
    const data = ecSplit(randomBytes(4 << 20), 2);
    let ticks = 0;
    const t = setInterval(() => ticks++, 0);
    await encodeSliced(data, 1);
    clearInterval(t);
    expect(ticks).toBeGreaterThan(0);
  });
});

describe('stripe range locks', () => {
  it('serialise overlapping stripe ranges of one object, and only those', async () => {
    const l = new RangeLocks();
    const order: string[] = [];
    const r1 = await l.lock(OID, 0, 2);
    const p2 = l.lock(OID, 1, 3).then((r) => { order.push('overlap'); return r; });
    const r3 = await l.lock(OID, 2, 4); // adjacent, not overlapping
    const r4 = await l.lock(OID + 1n, 0, 2); // another object
    order.push('free');
    await new Promise((r) => setTimeout(r, 10));
    expect(order).toEqual(['free']);
    r1();
    await new Promise((r) => setTimeout(r, 10));
    expect(order).toEqual(['free']); // still overlaps [2, 4)
    r3();
    const r2 = await p2;
    expect(order).toEqual(['free', 'overlap']);
    r2();
    r4();
  });
});

describe('plain store with strips', () => {
  it('keeps strips in <oid>_<idx> files with versions, out of the replicated listings', async () => {
    const d = await tmpDir({ unsafeCleanup: true });
    try {
      const st = new PlainStore(d.path, true);
      await st.init();
      await st.setDriver('plain');
      st.epochNow = () => 4;
      const a = randomBytes(8192);
      const b = randomBytes(8192);
      await st.createFull(OID, 16384, Buffer.concat([a, b]), 3);
      await st.createFull(stripKey(OID, 0), 8192, a, 3);
      await st.create(stripKey(OID, 2), 8192, 512, b.subarray(0, 100));
      await st.write(stripKey(OID, 0), 10, Buffer.from('strip'));
      const names = (await fsp.readdir(path.join(d.path, 'obj'))).filter((f) => !f.startsWith('.')).sort();
      expect(names).toEqual(['00abf94000000001', '00abf94000000001_0', '00abf94000000001_2']);
      expect(await st.list()).toEqual([OID]);
      expect((await st.copies()).map((c) => c.oid)).toEqual([OID]);
      const strips = (await st.strips()).sort((x, y) => x.idx - y.idx);
      expect(strips).toEqual([{ oid: OID, idx: 0, version: 4 }, { oid: OID, idx: 2, version: 4 }]);
      const s0 = await st.read(stripKey(OID, 0), 0, 8192);
      expect(s0.subarray(10, 15).toString()).toBe('strip');
      expect(s0.subarray(0, 10).equals(a.subarray(0, 10))).toBe(true);
      expect((await st.read(stripKey(OID, 2), 512, 100)).equals(b.subarray(0, 100))).toBe(true);
      // the replicated object is untouched by its strips
      expect((await st.read(OID, 0, 16384)).equals(Buffer.concat([a, b]))).toBe(true);
      expect(await st.exists(stripKey(OID, 1))).toBe(false);
      await expect(st.read(stripKey(OID, 1), 0, 10)).rejects.toMatchObject({ result: 2 });
      expect(await st.remove(stripKey(OID, 2))).toBe(true);
      expect((await st.strips()).map((x) => x.idx)).toEqual([0]);
      await st.close();
    } finally {
      await d.cleanup();
    }
  });
});

describe('journal replay of strips', () => {
  it('puts an acknowledged strip write the object file lost back into <oid>_<idx>, not into the object', async () => {
    const d = await tmpDir({ unsafeCleanup: true });
    const open = async () => {
      const st = new PlainStore(d.path, false, { file: path.join(d.path, 'journal'), sizeBytes: 1 << 20 });
      await st.init();
      await st.setDriver('plain');
      st.epochNow = () => 1;
      const errors: string[] = [];
      const replay = await st.startJournal((m) => errors.push(m));
      return { st, replay, errors };
    };
    try {
      const { st } = await open();
      const key = stripKey(OID, 1);
      const a = randomBytes(65536);
      await st.createFull(key, 65536, a, 1);
      await st.createFull(OID, 65536, a, 1);
      const strip = path.join(d.path, 'obj', '00abf94000000001_1');
      // a first write opens the file and learns its identity (inode, birth time), which journal records name
      await st.write(key, 0, a.subarray(0, 1));
      await new Promise((r) => setTimeout(r, 200));
      const durable = await fsp.readFile(strip);
      // a checkpoint would sync the object file and then drop the record: it never ends, as in a crash right after the write
      st.journal!.syncer = () => new Promise<void>(() => undefined);
      const piece = randomBytes(300);
      await st.write(key, 1000, piece);
      await new Promise((r) => setTimeout(r, 200));
      // the power cut: the object file as it was on disk before the write (same file, same inode)
      const fh = await fsp.open(strip, 'r+');
      await fh.write(durable, 0, durable.length, 0);
      await fh.close();
      const again = await open();
      expect(again.errors).toEqual([]);
      expect(again.replay).toMatch(/journal/);
      const want = Buffer.from(a);
      piece.copy(want, 1000);
      expect((await again.st.read(key, 0, 65536)).equals(want)).toBe(true);
      // the replicated object of the same oid is untouched
      expect((await again.st.read(OID, 0, 65536)).equals(a)).toBe(true);
      await again.st.close();
    } finally {
      await d.cleanup();
    }
  });
});
