// collie cluster snapshot save|list|load|show|delete through real sheep and
// real collie runs, against repositories this test builds byte for byte from
// farm-and-backup.md Part A (not with common/src/farm.ts): a fixture
// repository loads; what collie saves is exactly what the doc's layout says
// for the cluster's objects; round trips of several VDIs with snapshots and
// clones; damaged repositories refused with the cluster unchanged;
// de-duplication; delete.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp, readdirSync, statSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { dir as tmpDir } from 'tmp-promise';
import {
  SheepClient, Op, Flag, Res, encodeInodeHeader, emptyInodeHeader, hash24, timestamp64,
} from '@sheepdog/common';
import { startCluster, stopAll, runCollie, ClusterHandle } from '../helpers/cluster.js';

const INODE_SIZE = 12_587_576;
const HDR = 4664;
const OBJ = 4 << 20;
const SLICE = 128 * 1024;
const sha1 = (b: Buffer) => createHash('sha1').update(b).digest();
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const oidHex = (oid: bigint) => oid.toString(16).padStart(16, '0');

// ---- a repository writer written from the doc alone ------------------------------

interface FixObj { oid: bigint; copies: number; policy: number; shift: number; data: Buffer; slice?: number }

class DocRepo {
  files = new Map<string, Buffer>(); // sha1 hex -> content
  constructor(readonly dir: string) {}
  put(b: Buffer): Buffer {
    const s = sha1(b);
    this.files.set(s.toString('hex'), Buffer.from(b));
    return s;
  }
  /** An object: slices (128 KiB, or `slice`), then its slice index. */
  object(data: Buffer, slice = SLICE): Buffer {
    const idx: Buffer[] = [];
    for (let o = 0; o < data.length; o += slice) idx.push(this.put(data.subarray(o, Math.min(data.length, o + slice))));
    return this.put(Buffer.concat(idx));
  }
  /** A trunk: 32-byte entries in the given order. */
  trunk(objs: FixObj[]): Buffer {
    const t = Buffer.alloc(32 * objs.length);
    objs.forEach((o, i) => {
      t.writeBigUInt64LE(o.oid, 32 * i);
      t[32 * i + 8] = o.copies;
      t[32 * i + 9] = o.policy;
      t[32 * i + 10] = o.shift;
      this.object(o.data, o.slice).copy(t, 32 * i + 12);
    });
    return this.put(t);
  }
  static header(copies: number, policy: number, shift: number): Buffer {
    const h = Buffer.alloc(32);
    h.writeUInt32LE(0xfee1c001, 0);
    h.writeUInt32LE(1, 4);
    h[8] = copies;
    h[9] = policy;
    h[10] = shift;
    return h;
  }
  static record(idx: number, tag: string, time: number, trunk: Buffer): Buffer {
    const r = Buffer.alloc(296);
    r.writeUInt32LE(idx, 0);
    r.write(tag, 4, 'utf8');
    r.writeBigUInt64LE(BigInt(time), 264);
    trunk.copy(r, 272);
    return r;
  }
  async write(log: Buffer): Promise<void> {
    for (let i = 0; i < 256; i++) await fsp.mkdir(path.join(this.dir, 'objects', i.toString(16).padStart(2, '0')), { recursive: true });
    for (const [h, b] of this.files) await fsp.writeFile(path.join(this.dir, 'objects', h.slice(0, 2), h.slice(2)), b);
    await fsp.writeFile(path.join(this.dir, 'user_snap'), log);
  }
}

/** Every content file of a repository: sha1 hex -> bytes. */
function repoFiles(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const d of readdirSync(path.join(dir, 'objects'))) {
    for (const f of readdirSync(path.join(dir, 'objects', d))) out.set(d + f, readFileSync(path.join(dir, 'objects', d, f)));
  }
  return out;
}
const repoBytes = (dir: string) => [...repoFiles(dir).values()].reduce((s, b) => s + b.length, 0);

function inode(h: Partial<ReturnType<typeof emptyInodeHeader>>, index: Record<number, number>): Buffer {
  const b = Buffer.alloc(INODE_SIZE);
  encodeInodeHeader({ ...emptyInodeHeader(), ...h }, b);
  for (const [i, v] of Object.entries(index)) b.writeUInt32LE(v, HDR + 4 * Number(i));
  return b;
}

// ---- the cluster ----------------------------------------------------------------

let c: ClusterHandle;
let port: number;
const dog = (args: string[], input?: string | Buffer, env?: NodeJS.ProcessEnv) => runCollie(args, { port, input, env });
let work: string;

async function readObj(oid: bigint, size: number): Promise<Buffer> {
  const cl = new SheepClient({ port });
  try {
    const r = await cl.send({ opcode: Op.READ_OBJ, flags: Flag.CMD_DIRECT, dataLength: size, obj: { oid } });
    expect(r.rsp.result).toBe(Res.SUCCESS);
    const b = Buffer.alloc(size);
    r.data.copy(b);
    return b;
  } finally {
    cl.close();
  }
}

interface VdiRow { name: string; kind: string; vdi_id: number; snapshot_id: number; tag: string; size: number }
async function vdis(): Promise<VdiRow[]> {
  const l = await dog(['vdi', 'list', '--json']);
  expect(l.code).toBe(0);
  return JSON.parse(l.stdout).vdis;
}
async function readVdi(name: string, size: number, snap?: string): Promise<string> {
  const r = await dog(['vdi', 'read', ...(snap ? ['-s', snap] : []), name, '0', String(size)]);
  expect(r.code, r.stderr).toBe(0);
  return md5(r.stdoutBuf);
}
async function write(name: string, off: number, data: Buffer): Promise<void> {
  const r = await dog(['vdi', 'write', name, String(off), String(data.length)], data);
  expect(r.code, r.stderr).toBe(0);
}
async function ok(args: string[], input?: string): Promise<string> {
  const r = await dog(args, input);
  if (r.code !== 0 && process.env.DEBUG_FARM) for (const n of c.nodes) console.log(n.output().split('\n').slice(-40).join('\n'));
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  c = await startCluster(2);
  port = c.nodes[0].port;
  work = (await tmpDir({ unsafeCleanup: true, prefix: 'farm-' })).path;
  await ok(['cluster', 'format', '-c', '2']);
}, 120_000);
afterAll(async () => {
  await stopAll();
});

describe('cluster snapshot', { timeout: 300_000 }, () => {
  it('a repository built from the doc: list (local time), show (stderr), load onto the cluster', async () => {
    const dir = path.join(work, 'fixture');
    const repo = new DocRepo(dir);
    const alpha = hash24('alpha');
    const beta = hash24('beta');
    const a0 = randomBytes(OBJ);
    const a1 = Buffer.alloc(OBJ);
    for (let o = 0; o < 2 << 20; o += 9) a1.write('alpha-v1\n', o);
    const b0 = Buffer.alloc(OBJ);
    b0.write('beta-v1\n', 0);
    const ct = timestamp64(Date.parse('2026-12-06T21:00:00Z'));
    const objs: FixObj[] = [
      // VDI objects first, then data: readers accept any order
      { oid: (1n << 63n) | (BigInt(beta) << 32n), copies: 2, policy: 0, shift: 22, slice: 1 << 20,
        data: inode({ name: 'beta', tag: 'b1', createTime: ct, snapCtime: ct, vdiSize: 8n << 20n, nrCopies: 2, blockSizeShift: 22, snapId: 1, vdiId: beta }, { 0: beta }) },
      { oid: (1n << 63n) | (BigInt(alpha) << 32n), copies: 2, policy: 0, shift: 22,
        data: inode({ name: 'alpha', tag: 'a1', createTime: ct, snapCtime: ct, vdiSize: 12n << 20n, nrCopies: 2, blockSizeShift: 22, snapId: 1, vdiId: alpha }, { 0: alpha, 1: alpha }) },
      { oid: BigInt(alpha) << 32n, copies: 2, policy: 0, shift: 22, data: a0 },
      { oid: (BigInt(alpha) << 32n) | 1n, copies: 2, policy: 0, shift: 22, data: a1 },
      // one slice for a whole object: readers do not depend on the slice size
      { oid: BigInt(beta) << 32n, copies: 2, policy: 0, shift: 22, data: b0, slice: OBJ },
    ];
    const trunk = repo.trunk(objs);
    await repo.write(Buffer.concat([DocRepo.header(2, 0, 22), DocRepo.record(1, 's1', 0x6b15d1b0, trunk)]));

    const utc = await dog(['cluster', 'snapshot', 'list', dir], undefined, { TZ: 'UTC' });
    expect(utc).toMatchObject({ code: 0, stdout: 'Index\t\tTag\t\tSnapshot Time\n1\t\ts1\t\tSun Dec  6 21:20:48 2026\n' });
    const tokyo = await dog(['cluster', 'snapshot', 'list', dir], undefined, { TZ: 'Asia/Tokyo' });
    expect(tokyo.stdout).toBe('Index\t\tTag\t\tSnapshot Time\n1\t\ts1\t\tMon Dec  7 06:20:48 2026\n');
    const show = await dog(['cluster', 'snapshot', 'show', 's1', dir]);
    expect(show).toMatchObject({
      code: 0, stdout: '',
      stderr: `1. VDI id: ${beta.toString(16)}, name: beta, tag: b1\n2. VDI id: ${alpha.toString(16)}, name: alpha, tag: a1\n`,
    });
    expect((await dog(['cluster', 'snapshot', 'show', '1', dir, 'alpha'])).stderr).toBe(`1. VDI id: ${alpha.toString(16)}, name: alpha, tag: a1\n`);
    // the cluster holds something already: load asks first, and "no" changes nothing
    await ok(['vdi', 'create', 'old', '4M']);
    const no = await dog(['cluster', 'snapshot', 'load', 's1', dir], 'no\n');
    expect(no.code).toBe(0);
    expect((await vdis()).map((v) => v.name)).toEqual(['old']);
    const load = await dog(['cluster', 'snapshot', 'load', 's1', dir], 'yes\n');
    expect(load.code, load.stderr).toBe(0);
    expect(load.stdout).toMatch(/Caution! The cluster is not empty[^]*using backend plain store\n$/);
    const list = (await vdis()).map((v) => [v.kind, v.name, v.snapshot_id, v.vdi_id, v.tag]).sort();
    expect(list).toEqual([
      ['snapshot', 'alpha', 1, alpha, 'a1'], ['snapshot', 'beta', 1, beta, 'b1'],
      ['vdi', 'alpha', 0, alpha + 1, ''], ['vdi', 'beta', 0, beta + 1, ''],
    ].sort());
    const aWant = md5(Buffer.concat([a0, a1, Buffer.alloc(OBJ)]));
    expect(await readVdi('alpha', 12 << 20, 'a1')).toBe(aWant);
    expect(await readVdi('alpha', 12 << 20)).toBe(aWant);
    expect(await readVdi('beta', 8 << 20)).toBe(md5(Buffer.concat([b0, Buffer.alloc(OBJ)])));
    // the loaded VDIs take writes as any other
    await write('alpha', 0, Buffer.from('after load'));
    expect((await dog(['vdi', 'read', 'alpha', '0', '10'])).stdout).toBe('after load');
    expect(await readVdi('alpha', 12 << 20, 'a1')).toBe(aWant);
  });

  const want = new Map<string, string>(); // "name@tag" -> md5 of the whole snapshot
  const SIZES: Record<string, number> = { alpha: 12 << 20, beta: 8 << 20, gamma: 12 << 20 };
  let repoDir: string;

  it('save: several VDIs with snapshots and a clone, exactly the doc\'s layout', async () => {
    await ok(['cluster', 'format', '-c', '2', '-f']);
    await ok(['vdi', 'create', 'alpha', '12M']);
    await write('alpha', 0, randomBytes(6 << 20));
    await ok(['vdi', 'snapshot', '-s', 'a1', 'alpha']);
    await write('alpha', 8 << 20, randomBytes(1 << 20));
    await ok(['vdi', 'snapshot', '-s', 'a2', 'alpha']);
    await write('alpha', 0, Buffer.from('not in any snapshot'));
    await ok(['vdi', 'create', 'beta', '8M']);
    await write('beta', 0, Buffer.from('beta-v1\n'));
    await ok(['vdi', 'snapshot', '-s', 'b1', 'beta']);
    await ok(['vdi', 'clone', '-s', 'a1', 'alpha', 'gamma']);
    await write('gamma', 4 << 20, randomBytes(64 << 10));
    await ok(['vdi', 'snapshot', '-s', 'g1', 'gamma']);
    for (const [n, t] of [['alpha', 'a1'], ['alpha', 'a2'], ['beta', 'b1'], ['gamma', 'g1']]) want.set(`${n}@${t}`, await readVdi(n, SIZES[n], t));

    repoDir = path.join(work, 'repo');
    expect((await dog(['cluster', 'snapshot', 'save', '9lives', repoDir])).code).toBe(64);
    const before = Math.floor(Date.now() / 1000);
    const s = await dog(['cluster', 'snapshot', 'save', 's1', repoDir]);
    expect(s).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const dup = await dog(['cluster', 'snapshot', 'save', 's1', repoDir]);
    expect(dup).toMatchObject({ code: 2, stderr: `Snapshot tag has already been used for another snapshot, please, use another one.\nFail to save snapshot to path: ${repoDir}.\n` });

    // what the doc says save writes for these objects (A.7): every snapshot's inode, data objects, ascending oid
    const expected = new DocRepo(repoDir);
    const objs: FixObj[] = [];
    const seen = new Set<bigint>();
    for (const v of await vdis()) {
      if (v.kind !== 'snapshot') continue;
      const ino = await readObj((1n << 63n) | (BigInt(v.vdi_id) << 32n), INODE_SIZE);
      objs.push({ oid: (1n << 63n) | (BigInt(v.vdi_id) << 32n), copies: 2, policy: 0, shift: 22, data: ino });
      for (let i = 0; i < v.size / OBJ; i++) {
        const owner = ino.readUInt32LE(HDR + 4 * i);
        const oid = (BigInt(owner) << 32n) | BigInt(i);
        if (!owner || seen.has(oid)) continue;
        seen.add(oid);
        objs.push({ oid, copies: 2, policy: 0, shift: 22, data: await readObj(oid, OBJ) });
      }
    }
    objs.sort((a, b) => (a.oid < b.oid ? -1 : 1));
    const trunk = expected.trunk(objs);
    const files = repoFiles(repoDir);
    expect([...files.keys()].sort()).toEqual([...expected.files.keys()].sort());
    for (const [h, b] of files) expect(sha1(b).toString('hex')).toBe(h);
    expect(files.get(trunk.toString('hex'))).toEqual(expected.files.get(trunk.toString('hex')));
    expect(readdirSync(path.join(repoDir, 'objects')).length).toBe(256);
    const log = readFileSync(path.join(repoDir, 'user_snap'));
    expect(log.length).toBe(32 + 296);
    expect(log.subarray(0, 32)).toEqual(DocRepo.header(2, 0, 22));
    const time = Number(log.readBigUInt64LE(32 + 264));
    expect(time).toBeGreaterThanOrEqual(before);
    expect(log.subarray(32)).toEqual(DocRepo.record(1, 's1', time, trunk));
  });

  it('round trip: a fresh format, load, every snapshot and working VDI reads back equal', async () => {
    await ok(['cluster', 'format', '-c', '2', '-f']);
    expect(await vdis()).toEqual([]);
    const r = await dog(['cluster', 'snapshot', 'load', '1', repoDir]);
    expect(r.code, r.stderr).toBe(0);
    for (const [k, m] of want) {
      const [n, t] = k.split('@');
      expect(await readVdi(n, SIZES[n], t), k).toBe(m);
    }
    // working VDIs: clones of their newest snapshot (what was written after it is not saved, as in dog)
    expect(await readVdi('alpha', SIZES.alpha)).toBe(want.get('alpha@a2'));
    expect(await readVdi('beta', SIZES.beta)).toBe(want.get('beta@b1'));
    expect(await readVdi('gamma', SIZES.gamma)).toBe(want.get('gamma@g1'));
    expect((await ok(['vdi', 'list'])).split('\n').filter((l) => /^s /.test(l)).length).toBe(4);

    // by name: a clone without its base's inode (dog marks the base's vid in use
    // without an inode, and every listing then fails to read it)
    await ok(['cluster', 'snapshot', 'save', 'g', repoDir, 'gamma']);
    await ok(['cluster', 'format', '-c', '2', '-f']);
    await ok(['cluster', 'snapshot', 'load', 'g', repoDir]);
    const l = await dog(['vdi', 'list']);
    expect(l.stderr).toBe('');
    expect(l.stdout.split('\n').filter(Boolean).map((x) => x.slice(0, 14).trim())).toEqual(['Name', 's gamma', 'gamma']);
    expect(await readVdi('gamma', SIZES.gamma, 'g1')).toBe(want.get('gamma@g1'));
    expect(await readVdi('gamma', SIZES.gamma)).toBe(want.get('gamma@g1'));
    // back to everything, for the tests below
    await ok(['cluster', 'snapshot', 'load', 's1', repoDir], 'yes\n');
  });

  it('a damaged repository is refused before anything changes; list/show give errors, not crashes', async () => {
    const listBefore = await ok(['vdi', 'list']);
    const files = repoFiles(repoDir);
    // a data slice (not the zero slice, not an index, not the trunk)
    const zero = sha1(Buffer.alloc(SLICE)).toString('hex');
    const slice = [...files.entries()].find(([h, b]) => b.length === SLICE && h !== zero)![0];
    const sliceFile = (d: string) => path.join(d, 'objects', slice.slice(0, 2), slice.slice(2));

    const missing = path.join(work, 'missing');
    await fsp.cp(repoDir, missing, { recursive: true });
    await fsp.rm(sliceFile(missing));
    const m = await dog(['cluster', 'snapshot', 'load', 's1', missing], 'yes\n');
    expect(m.code).toBe(2);
    expect(m.stderr).toContain(`${sliceFile(missing)}: No such file or directory\n`);
    expect(m.stderr).toContain('nothing was changed');
    expect(m.stdout).toBe(''); // no prompt, no format

    const flipped = path.join(work, 'flipped');
    await fsp.cp(repoDir, flipped, { recursive: true });
    const b = readFileSync(sliceFile(flipped));
    b[1000] ^= 0x40;
    await fsp.writeFile(sliceFile(flipped), b);
    const f = await dog(['cluster', 'snapshot', 'load', 's1', flipped], 'yes\n');
    expect(f.code).toBe(2);
    expect(f.stderr).toMatch(/^failed, [0-9a-f]{40} != [0-9a-f]{40}/);
    expect(f.stdout).toBe('');

    // the trunk gone: show and load say so
    const noTrunk = path.join(work, 'notrunk');
    await fsp.cp(repoDir, noTrunk, { recursive: true });
    const trunk = readFileSync(path.join(repoDir, 'user_snap')).subarray(32 + 272, 32 + 292).toString('hex');
    await fsp.rm(path.join(noTrunk, 'objects', trunk.slice(0, 2), trunk.slice(2)));
    const sh = await dog(['cluster', 'snapshot', 'show', 's1', noTrunk]);
    expect(sh.code).toBe(2);
    expect(sh.stderr).toMatch(/No such file or directory\nfailed to read trunk\nFail to show snapshot\.\nFail to show snapshot\n$/);
    expect((await dog(['cluster', 'snapshot', 'load', 's1', noTrunk], 'yes\n')).code).toBe(2);

    // a damaged log: errors from list, show and load (dog crashes here)
    const badLog = path.join(work, 'badlog');
    await fsp.cp(repoDir, badLog, { recursive: true });
    await fsp.writeFile(path.join(badLog, 'user_snap'), Buffer.alloc(10));
    const l1 = await dog(['cluster', 'snapshot', 'list', badLog]);
    expect(l1).toMatchObject({ code: 2, stderr: 'failed to read log header, Success, ret = 10\nFail to list snapshot.\n' });
    await fsp.writeFile(path.join(badLog, 'user_snap'), Buffer.alloc(400, 7));
    const l2 = await dog(['cluster', 'snapshot', 'list', badLog]);
    expect(l2).toMatchObject({ code: 2, stderr: 'magic number mismatch\nFail to list snapshot.\n' });
    expect((await dog(['cluster', 'snapshot', 'show', '1', badLog])).code).toBe(2);
    expect((await dog(['cluster', 'snapshot', 'load', '1', badLog], 'yes\n')).code).toBe(2);
    // no such snapshot
    expect(await dog(['cluster', 'snapshot', 'load', 'nosuch', repoDir])).toMatchObject({
      code: 2, stderr: 'Snapshot index or tag does not exist.\nFail to load snapshot\n',
    });

    // through all of it the cluster stayed as it was
    expect(await ok(['vdi', 'list'])).toBe(listBefore);
    expect(await readVdi('alpha', SIZES.alpha, 'a2')).toBe(want.get('alpha@a2'));
  });

  it('de-duplication: two images with the same bytes cost one image; delete keeps what others use', async () => {
    await ok(['cluster', 'format', '-c', '2', '-f']);
    const img = randomBytes(16 << 20);
    for (const n of ['img1', 'img2']) {
      await ok(['vdi', 'create', n, '16M']);
      await write(n, 0, img);
      await ok(['vdi', 'snapshot', '-s', 'base', n]);
    }
    const dir = path.join(work, 'dedup');
    await ok(['cluster', 'snapshot', 'save', 'both', dir]);
    const one = repoBytes(dir);
    // 16 MiB of data once; each inode adds one slice of its own (its header) and a slice index,
    // and the zero slice and the inodes' 4,664-byte tail are stored once for all
    expect(one).toBeGreaterThan(16 << 20);
    expect(one).toBeLessThan((16 << 20) * 1.05); // logically 2 x (16 MiB + a 12 MiB inode)
    const v = await dog(['-v', 'cluster', 'snapshot', 'list', dir]);
    const logical = 2 * (16 * 1024 * 1024 + INODE_SIZE);
    expect(v.stdout).toMatch(new RegExp(`^Index\t\tTag\t\tSnapshot Time\n1\t\tboth\t\t.*\n\n1 snapshot\\(s\\) of ${logical} bytes of objects stored in [0-9]+ content file\\(s\\) of ${one} bytes: de-duplication ratio ${(logical / one).toFixed(2)}\n$`));
    // COW clones and a second snapshot of unchanged VDIs add only inodes
    await ok(['vdi', 'clone', '-s', 'base', 'img1', 'c1']);
    await ok(['vdi', 'clone', '-s', 'base', 'img2', 'c2']);
    await write('c1', 0, Buffer.alloc(4096, 1));
    await ok(['vdi', 'snapshot', '-s', 'c', 'c1']);
    await ok(['vdi', 'snapshot', '-s', 'c', 'c2']);
    await ok(['cluster', 'snapshot', 'save', 'clones', dir]);
    const two = repoBytes(dir);
    // logically 32 MiB and four inodes more; stored: the inodes' own slices and c1's changed slice
    expect(two - one).toBeLessThan(1 << 20);
    expect(await ok(['cluster', 'snapshot', 'list', dir])).toMatch(/^Index\t\tTag\t\tSnapshot Time\n1\t\tboth\t\t.*\n2\t\tclones\t\t.*\n$/);

    // delete the first: the second is renumbered 1, and keeps every file it needs
    await ok(['cluster', 'snapshot', 'delete', 'both', dir]);
    expect(await ok(['cluster', 'snapshot', 'list', dir])).toMatch(/^Index\t\tTag\t\tSnapshot Time\n1\t\tclones\t\t.*\n$/);
    expect(readFileSync(path.join(dir, 'user_snap')).length).toBe(32 + 296);
    const left = repoBytes(dir);
    expect(left).toBeLessThanOrEqual(two);
    expect(left).toBeGreaterThan(16 << 20);
    await ok(['cluster', 'format', '-c', '2', '-f']);
    await ok(['cluster', 'snapshot', 'load', 'clones', dir]);
    expect(await readVdi('img2', 16 << 20, 'base')).toBe(md5(img));
    const c1 = Buffer.from(img);
    c1.fill(1, 0, 4096);
    expect(await readVdi('c1', 16 << 20)).toBe(md5(c1));
    // and the last: nothing left but the skeleton and the header
    await ok(['cluster', 'snapshot', 'delete', '1', dir]);
    expect(repoBytes(dir)).toBe(0);
    expect(await ok(['cluster', 'snapshot', 'list', dir])).toBe('Index\t\tTag\t\tSnapshot Time\n');
    expect(statSync(path.join(dir, 'user_snap')).size).toBe(32);
  });
});
