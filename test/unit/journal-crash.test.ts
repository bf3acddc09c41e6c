// The write-ahead journal (issue 19) at the store level: crashes during
// verified writes, 100 rounds, half of them a process crash (kill -9: the
// page cache survives, the files are taken as they are at that moment) and
// half a power cut (the object files as they were when last synced, the
// journal as it is: its writes are O_DSYNC, and one out at that moment may
// be torn). After replay, every acknowledged write must be there, the
// files' checksums must cover their bytes, and an object removed (or
// replaced) after its records were journaled must not get them back.
//
// The files are put back in place (same inodes): the journal's records
// name the very file they were written into.
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { dir as tmpDir, DirectoryResult } from 'tmp-promise';
import { PlainStore } from '../../sheep/src/store/plain.js';
import { Journal } from '../../sheep/src/store/journal.js';
import { REC_HEADER, FIRST_RECORD } from '../../sheep/src/store/journal-record.js';

const OBJ = 256 * 1024;
const BLK = 4096;
const NOBJ = 4;
const WORKERS = 16;
/** Each worker writes inside its own range, one write at a time: the last acknowledged write of a range is known. */
const RANGE = (NOBJ * OBJ) / WORKERS;
const JOURNAL = 1 << 20; // small: rounds wrap it and fill it

const oidOf = (i: number) => (0x7c2b5an << 32n) | BigInt(i);
const X = oidOf(100);

async function openStore(dir: string, errors: string[]): Promise<{ st: PlainStore; replay: string }> {
  const st = new PlainStore(dir, false, { file: path.join(dir, 'journal'), sizeBytes: JOURNAL });
  await st.init();
  await st.setDriver('plain');
  st.epochNow = () => 1;
  const replay = (await st.startJournal((m) => errors.push(m)))!;
  return { st, replay };
}

interface Write { off: number; data: Buffer }

/** A worker range's bytes after the given writes, over its initial bytes. */
function image(initial: Buffer, base: number, ws: Write[]): Buffer {
  const b = Buffer.from(initial);
  for (const w of ws) w.data.copy(b, w.off - base);
  return b;
}

describe('journal crash simulation', () => {
  let d: DirectoryResult;
  beforeEach(async () => { d = await tmpDir({ unsafeCleanup: true }); });
  afterEach(async () => { await d.cleanup(); });

  it('every acknowledged write is there after replay: 100 rounds of kill -9 and power cut', async () => {
    const dir = d.path;
    const objFile = (oid: bigint) => path.join(dir, 'obj', oid.toString(16).padStart(16, '0'));
    const errors: string[] = [];
    let { st } = await openStore(dir, errors);
    const initial = Buffer.alloc(NOBJ * OBJ);
    for (let i = 0; i < NOBJ; i++) {
      const data = randomBytes(OBJ);
      data.copy(initial, i * OBJ);
      await st.createFull(oidOf(i), OBJ, data, 1);
    }
    let replayed = 0;
    let torn = 0;
    let cuts = 0;
    for (let round = 0; round < 100; round++) {
      const powerCut = round % 2 === 1;
      // the object files as the disk holds them (power cut): refreshed whenever the store syncs them
      const durable = new Map<string, Buffer>();
      const keep = (oid: bigint) => {
        const f = objFile(oid);
        if (fs.existsSync(f)) durable.set(f, fs.readFileSync(f)); else durable.delete(f);
      };
      for (let i = 0; i < NOBJ; i++) keep(oidOf(i));
      const j = st.journal!;
      const sync = j.syncer;
      j.syncer = async (oids) => {
        await sync(oids);
        for (const o of oids) keep(o);
      };
      // an object written, then removed (every third round) or replaced (every sixth): its records must stay dead
      let xWant: Buffer | undefined;
      if (round % 3 === 0) {
        await st.createFull(X, OBJ, Buffer.alloc(OBJ, 1), 1);
        keep(X);
        await Promise.all(Array.from({ length: 8 }, (_, k) => st.write(X, k * BLK * 3, Buffer.alloc(BLK, 0xee))));
        await st.remove(X);
        keep(X);
        if (round % 6 === 0) {
          xWant = randomBytes(OBJ);
          await st.createFull(X, OBJ, xWant, 1);
          keep(X);
        }
      }
      // verified writes; the crash comes after a random number of acknowledgements
      const acked: Write[][] = Array.from({ length: WORKERS }, () => []);
      const out: (Write | undefined)[] = Array(WORKERS).fill(undefined);
      const crashAfter = 20 + Math.floor(Math.random() * 300);
      let acks = 0;
      let crashed = false;
      let snap: Map<string, Buffer> | undefined;
      const inflight = new Set<Promise<void>>();
      const crashNow = () => {
        crashed = true;
        // synchronous: nothing of the store runs on this thread meanwhile (its writer threads may)
        snap = new Map();
        for (const f of fs.readdirSync(path.join(dir, 'obj'))) {
          const p = path.join(dir, 'obj', f);
          if (/^[0-9a-f]{16}$/.test(f)) snap.set(p, powerCut ? (durable.get(p) ?? fs.readFileSync(p)) : fs.readFileSync(p));
        }
        const jb = fs.readFileSync(path.join(dir, 'journal'));
        if (powerCut) {
          // journal writes still out: the disk may hold any part of them (here: their first part, the rest lost)
          for (const u of j.unfinishedWrites()) {
            const cut = u.pos + Math.floor(Math.random() * (u.end - u.pos));
            jb.fill(0, Math.min(cut, jb.length), Math.min(u.end, jb.length));
            cuts++;
          }
        }
        snap.set(path.join(dir, 'journal'), jb);
      };
      const worker = async (w: number) => {
        const base = w * RANGE;
        while (!crashed) {
          // whole blocks, parts of blocks, across block boundaries
          const off = base + (Math.random() < 0.5 ? Math.floor(Math.random() * (RANGE / BLK)) * BLK : Math.floor(Math.random() * (RANGE - 1)));
          const len = Math.max(1, Math.min(base + RANGE - off, Math.random() < 0.5 ? BLK * (1 + Math.floor(Math.random() * 3)) : 1 + Math.floor(Math.random() * 9000)));
          const wr = { off, data: randomBytes(len) };
          out[w] = wr;
          const oid = oidOf(Math.floor(off / OBJ));
          const p = st.write(oid, off % OBJ, wr.data);
          inflight.add(p);
          try {
            await p;
          } catch (e) {
            if (!crashed) throw e;
            return; // refused by the crash: not acknowledged
          } finally {
            inflight.delete(p);
          }
          if (crashed) return; // acknowledged after the crash: it may or may not be there
          acked[w].push(wr);
          out[w] = undefined;
          if (++acks === crashAfter) crashNow();
        }
      };
      await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
      // the old process is gone: its journal writes nothing more, its writes in flight land (and are overwritten below)
      await j.crash();
      await Promise.allSettled([...inflight]);
      await st.close();
      for (const [f, b] of snap!) {
        const fd = fs.openSync(f, 'r+');
        fs.writeSync(fd, b, 0, b.length, 0);
        fs.ftruncateSync(fd, b.length);
        fs.closeSync(fd);
      }
      const opened = await openStore(dir, errors);
      st = opened.st;
      if (/replayed [1-9]/.test(opened.replay)) replayed++;
      if (/torn/.test(opened.replay)) torn++;
      for (let w = 0; w < WORKERS; w++) {
        const base = w * RANGE;
        const oid = oidOf(Math.floor(base / OBJ));
        const got = await st.read(oid, base % OBJ, RANGE); // checks the block sums too
        const want = image(initial.subarray(base, base + RANGE), base, acked[w]);
        const alt = out[w] ? image(want, base, [out[w]!]) : undefined;
        // a write not acknowledged may be there in part (a write of several pieces cut short)
        let at = 0;
        while (at < got.length && (got[at] === want[at] || (alt !== undefined && got[at] === alt[at]))) at++;
        if (at < got.length) {
          throw new Error(`round ${round} (${powerCut ? 'power cut' : 'kill -9'}), worker ${w}: byte ${base + at} differs from the last acknowledged write; replay: ${opened.replay}`);
        }
        // the next round starts from what is there now
        got.copy(initial, base);
      }
      if (round % 3 === 0) {
        if (xWant) expect((await st.read(X, 0, OBJ)).equals(xWant), `round ${round}: the replaced object got old records`).toBe(true);
        else expect(await st.exists(X), `round ${round}: the removed object came back`).toBe(false);
        await st.remove(X);
      }
    }
    await st.close();
    expect(errors.filter((e) => !/journal write failed|stopped/.test(e))).toEqual([]);
    // the rounds did crash with records to replay (not only after a quiet checkpoint)
    expect(replayed).toBeGreaterThan(50);
    void torn;
    void cuts;
  }, 240_000);

  it('a torn record at the tail is dropped, never applied; the records before it are', async () => {
    const dir = d.path;
    const errors: string[] = [];
    const { st } = await openStore(dir, errors);
    const oid = oidOf(1);
    await st.createFull(oid, OBJ, Buffer.alloc(OBJ, 0x11), 1);
    await st.write(oid, 0, Buffer.alloc(BLK, 0x22));
    await st.write(oid, BLK, Buffer.alloc(BLK, 0x33));
    // the last record's data damaged, as a write cut short by a power cut leaves it
    const jf = path.join(dir, 'journal');
    const snap = fs.readFileSync(jf);
    const j = st.journal!;
    await j.crash();
    await st.close();
    // after the first record: header, 4 KiB, padding to the block; then the second record's header and data
    const second = FIRST_RECORD + 2 * BLK;
    expect(snap.readUInt32LE(second)).toBe(0x31524a53);
    snap[second + REC_HEADER + 100] ^= 0xff;
    fs.writeFileSync(jf, snap);
    // and the object files as they were at their creation (neither write had reached them)
    const f = path.join(dir, 'obj', oid.toString(16).padStart(16, '0'));
    const fd = fs.openSync(f, 'r+');
    fs.writeSync(fd, Buffer.alloc(2 * BLK, 0x11), 0, 2 * BLK, 0);
    fs.closeSync(fd);
    const again = await openStore(dir, errors);
    expect(again.replay).toMatch(/replayed 1 record/);
    expect(again.replay).toMatch(/record 2 at byte \d+ is torn/);
    expect((await again.st.read(oid, 0, BLK)).equals(Buffer.alloc(BLK, 0x22))).toBe(true);
    expect((await again.st.read(oid, BLK, BLK)).equals(Buffer.alloc(BLK, 0x11))).toBe(true);
    await again.st.close();
  });

  it('a large write after journaled ones is not overwritten by them at replay', async () => {
    const dir = d.path;
    const errors: string[] = [];
    const { st } = await openStore(dir, errors);
    const oid = oidOf(2);
    const big = 4 * OBJ;
    await st.createFull(oid, big, Buffer.alloc(big, 0), 1);
    await st.write(oid, 0, Buffer.alloc(BLK, 0x44));
    // bigger than a record of this journal may be: past the journal, once the object has no record in it
    const large = randomBytes(st.journal!.maxRecord + BLK);
    await st.write(oid, 0, large);
    // and one under the bypass size, journaled after it
    await st.write(oid, large.length, Buffer.alloc(BLK, 0x55));
    const snap = fs.readFileSync(path.join(dir, 'journal'));
    await st.journal!.crash();
    await st.close();
    fs.writeFileSync(path.join(dir, 'journal'), snap);
    const again = await openStore(dir, errors);
    expect((await again.st.read(oid, 0, large.length)).equals(large)).toBe(true);
    expect((await again.st.read(oid, large.length, BLK)).equals(Buffer.alloc(BLK, 0x55))).toBe(true);
    await again.st.close();
    expect(errors).toEqual([]);
  });

  it('a clean close leaves nothing to replay; the journal survives a restart with a new size', async () => {
    const dir = d.path;
    const errors: string[] = [];
    const { st } = await openStore(dir, errors);
    await st.createFull(oidOf(3), OBJ, Buffer.alloc(OBJ, 0), 1);
    await Promise.all(Array.from({ length: 40 }, (_, i) => st.write(oidOf(3), i * BLK, Buffer.alloc(BLK, i))));
    await st.close();
    const closed = fs.readFileSync(path.join(dir, 'journal'));
    const again = await openStore(dir, errors);
    expect(again.replay).toMatch(/nothing to replay/);
    // a start with nothing to replay writes nothing (a node refused by a cluster leaves its directory as it was)
    expect(fs.readFileSync(path.join(dir, 'journal')).equals(closed)).toBe(true);
    for (let i = 0; i < 40; i++) expect((await again.st.read(oidOf(3), i * BLK, BLK)).equals(Buffer.alloc(BLK, i))).toBe(true);
    await again.st.close();
    const j = await Journal.open(path.join(dir, 'journal'), 2 * JOURNAL);
    let n = 0;
    for await (const r of j.replay()) n += r.len;
    expect(n).toBe(0);
    await j.start();
    expect(j.sizeBytes).toBe(2 * JOURNAL);
    await j.close();
  });
});

describe('a journal on a full device', () => {
  it('writes still succeed, each synced in its object file instead, and all are there after a crash', async () => {
    const d = await tmpDir({ unsafeCleanup: true });
    const small = await fs.promises.mkdtemp('/tmp/sheep-jfull-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', small]);
    try {
      const errors: string[] = [];
      const place = { file: path.join(small, 'journal'), sizeBytes: 16 << 20 };
      const st = new PlainStore(d.path, false, place);
      await st.init();
      await st.setDriver('plain');
      st.epochNow = () => 1;
      await st.startJournal((m) => errors.push(m));
      const oid = oidOf(7);
      await st.createFull(oid, 4 * OBJ, Buffer.alloc(4 * OBJ, 0), 1);
      // 1 MiB of records through a journal with room for half of that: the rest fail over
      const want = randomBytes(4 * OBJ);
      for (let i = 0; i < want.length; i += 32 * BLK) {
        await Promise.all(Array.from({ length: 32 }, (_, k) => st.write(oid, i + k * BLK, want.subarray(i + k * BLK, i + (k + 1) * BLK))));
      }
      expect(errors.join('\n')).toMatch(/journal write failed \(ENOSPC.*synced in their object files instead/);
      expect(st.journal!.stats.fallbacks).toBeGreaterThan(0);
      expect((await st.read(oid, 0, want.length)).equals(want)).toBe(true);
      // a crash now: what the journal has is replayed, what failed over is in the object file
      await st.journal!.crash();
      await st.close();
      const again = new PlainStore(d.path, false, place);
      await again.init();
      await again.setDriver('plain');
      await again.startJournal((m) => errors.push(m));
      expect((await again.read(oid, 0, want.length)).equals(want)).toBe(true);
      await again.close();
    } finally {
      execFileSync('umount', ['-l', small]);
      await fs.promises.rm(small, { recursive: true, force: true });
      await d.cleanup();
    }
  }, 60_000);
});

describe('the -j option', () => {
  it('takes dir= and size=, or none; refuses anything else', async () => {
    const { parseJournalOpt } = await import('../../sheep/src/store/journal.js');
    expect(parseJournalOpt('dir=/mnt/nvme/j,size=1024')).toEqual({ off: false, dir: '/mnt/nvme/j', sizeMB: 1024 });
    expect(parseJournalOpt('size=64')).toEqual({ off: false, sizeMB: 64 });
    expect(parseJournalOpt('none').off).toBe(true);
    expect(() => parseJournalOpt('size=8')).toThrow(/MB >= 16/);
    expect(() => parseJournalOpt('dir=')).toThrow(/Invalid journal option/);
    expect(() => parseJournalOpt('sync')).toThrow(/Invalid journal option/);
  });
});
