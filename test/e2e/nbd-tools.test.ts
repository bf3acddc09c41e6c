// sheep --nbd driven by Debian's real tools: nbdinfo, qemu-img, qemu-io,
// nbdcopy, fio (nbd engine). Everything on 127.0.0.1, every tool bounded.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Op, Flag, Res, vidToVdiOid, encodeFixedString } from '@sheepdog/common';
import { stopAll } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { startNbdSheep, NbdSheep, tool, have } from '../helpers/nbd.js';

const MB = 1 << 20;
const REQUIRED = ['qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy', 'fio'];

describe('NBD export with real tools', () => {
  let n: NbdSheep;
  let w: Wire;
  let tmp: string;

  beforeAll(async () => {
    const missing = REQUIRED.filter((t) => !have(t));
    if (missing.length) throw new Error(`missing tools (install qemu-utils libnbd-bin fio): ${missing.join(', ')}`);
    n = await startNbdSheep(1);
    w = new Wire(n.s.port);
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'nbd-e2e-'));
  });
  afterAll(async () => {
    w?.close();
    await stopAll();
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  async function mkvdi(name: string, size: number): Promise<number> {
    const r = await w.newVdi(name, BigInt(size));
    expect(r.rsp.result).toBe(Res.SUCCESS);
    return r.rsp.vdi.vdiId;
  }

  async function snapshot(name: string, tag: string): Promise<number> {
    const vid = await w.vid(name);
    await w.c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: 256 } }, encodeFixedString(tag, 256));
    const ino = await w.inode(vid);
    const r = await w.newVdi(name, ino.header.vdiSize, { base: vid, snapshot: true });
    expect(r.rsp.result).toBe(Res.SUCCESS);
    return vid;
  }

  it('nbdinfo reports size and flags, and lists the VDIs', async () => {
    await mkvdi('info1', 40 * MB);
    await mkvdi('info2', 8 * MB);
    const r = await tool('nbdinfo', ['--json', n.uri('info1')]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    const e = j.exports[0];
    expect(e['export-size']).toBe(40 * MB);
    expect(e.is_read_only).toBe(false);
    expect(e.can_multi_conn).toBe(true);
    expect(e.can_flush).toBe(true);
    expect(e.can_fua).toBe(true);
    expect(e.can_trim).toBe(true);
    expect(e.can_zero).toBe(true);
    const l = await tool('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${n.nbdPort}`]);
    expect(l.code).toBe(0);
    const names = JSON.parse(l.stdout).exports.map((x: { 'export-name': string }) => x['export-name']);
    expect(names).toEqual(expect.arrayContaining(['info1', 'info2']));
    const bad = await tool('nbdinfo', [n.uri('no-such-vdi')]);
    expect(bad.code).not.toBe(0);
  });

  it('qemu-img info / convert into and out of a VDI', async () => {
    await mkvdi('img', 20 * MB);
    const info = await tool('qemu-img', ['info', '--output=json', n.uri('img')]);
    expect(info.code).toBe(0);
    expect(JSON.parse(info.stdout)['virtual-size']).toBe(20 * MB);
    const src = path.join(tmp, 'src.raw');
    const data = randomBytes(20 * MB);
    // leave a hole to exercise zero handling
    data.fill(0, 6 * MB, 13 * MB);
    await fsp.writeFile(src, data);
    const into = await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, n.uri('img')]);
    expect(into.code, into.stderr).toBe(0);
    const dst = path.join(tmp, 'dst.raw');
    const out = await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', n.uri('img'), dst]);
    expect(out.code, out.stderr).toBe(0);
    expect((await fsp.readFile(dst)).equals(data)).toBe(true);
    const cmp = await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, n.uri('img')]);
    expect(cmp.code).toBe(0);
    // the same bytes through the sheepdog protocol
    expect((await w.readVdi(await w.vid('img'), 0, 20 * MB)).equals(data)).toBe(true);
  });

  it('qemu-io writes and reads back patterns, discards and zeroes', async () => {
    await mkvdi('io', 16 * MB);
    const r = await tool('qemu-io', ['-f', 'raw',
      '-c', 'write -P 0xa5 0 64k',
      '-c', 'write -P 0x5a 4190208 8192', // straddles objects 0 and 1
      '-c', 'write -P 0x33 12M 4M',
      '-c', 'read -P 0xa5 0 64k',
      '-c', 'read -P 0x5a 4190208 8192',
      '-c', 'read -P 0x33 12M 4M',
      '-c', 'read -P 0 64k 1M',
      '-c', 'discard 12M 4M',
      '-c', 'read -P 0 12M 4M',
      '-c', 'write -z 0 4k',
      '-c', 'read -P 0 0 4k',
      '-c', 'read -P 0xa5 4k 60k',
      '-c', 'flush',
      n.uri('io')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/fail|error/i);
    expect(r.stdout.match(/^read /gm)?.length).toBe(7);
    // a wrong pattern is noticed (proves the check above can fail)
    const neg = await tool('qemu-io', ['-f', 'raw', '-c', 'read -P 0x77 0 4k', n.uri('io')]);
    expect(neg.stdout + neg.stderr).toMatch(/Pattern verification failed/);
    const vid = await w.vid('io');
    expect((await w.inode(vid)).dataVdiId[3]).toBe(0); // discarded object 3
  });

  it('nbdcopy copies in and out (multi-connection)', async () => {
    await mkvdi('copy', 24 * MB);
    const src = path.join(tmp, 'copy-src.raw');
    const data = randomBytes(24 * MB);
    await fsp.writeFile(src, data);
    const a = await tool('nbdcopy', ['--connections=4', '--requests=16', src, n.uri('copy')], { timeoutMs: 120_000 });
    expect(a.code, a.stderr).toBe(0);
    const dst = path.join(tmp, 'copy-dst.raw');
    const b = await tool('nbdcopy', ['--connections=4', n.uri('copy'), dst], { timeoutMs: 120_000 });
    expect(b.code, b.stderr).toBe(0);
    expect((await fsp.readFile(dst)).equals(data)).toBe(true);
  });

  it('fio random read/write with verification', async () => {
    await mkvdi('fio', 32 * MB);
    const enginesOut = await tool('fio', ['--enghelp']);
    const hasNbd = /^\s*nbd\s*$/m.test(enginesOut.stdout);
    expect(hasNbd, "this fio has no nbd ioengine (Debian 12's fio package has it)").toBe(true);
    const common = ['--ioengine=nbd', `--uri=${n.uri('fio')}`, '--size=32M', '--bs=4k', '--iodepth=16', '--output-format=json'];
    const wr = await tool('fio', ['--name=rw', ...common, '--rw=randrw', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--io_size=16M', '--randrepeat=0'], { timeoutMs: 120_000 });
    expect(wr.code, wr.stderr).toBe(0);
    const jw = JSON.parse(wr.stdout.slice(wr.stdout.indexOf('{')));
    expect(jw.jobs[0].error).toBe(0);
    expect(jw.jobs[0].write.io_bytes).toBeGreaterThan(0);
    expect(jw.jobs[0].read.io_bytes).toBeGreaterThan(0);
    // second pass: write the whole device, verify every block
    const full = await tool('fio', ['--name=full', ...common, '--rw=randwrite', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1'], { timeoutMs: 120_000 });
    expect(full.code, full.stderr).toBe(0);
    const jf = JSON.parse(full.stdout.slice(full.stdout.indexOf('{')));
    expect(jf.jobs[0].error).toBe(0);
    expect(jf.jobs[0].read.io_bytes).toBe(32 * MB); // verify read everything back
  });

  it('exports snapshots read-only by id and by tag', async () => {
    await mkvdi('snapvdi', 8 * MB);
    const w1 = await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 1M', n.uri('snapvdi')]);
    expect(w1.code).toBe(0);
    const snapVid = await snapshot('snapvdi', 'before');
    const w2 = await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 0 1M', n.uri('snapvdi')]);
    expect(w2.code).toBe(0);
    for (const e of ['snapvdi:before', 'snapvdi:1']) {
      const info = await tool('nbdinfo', ['--json', n.uri(e)]);
      expect(info.code).toBe(0);
      expect(JSON.parse(info.stdout).exports[0].is_read_only).toBe(true);
      const rd = await tool('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x11 0 1M', n.uri(e)]);
      expect(rd.code).toBe(0);
      expect(rd.stdout).not.toMatch(/fail/i);
      const wr = await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 4k', n.uri(e)]);
      expect(wr.code).not.toBe(0);
      expect(wr.stdout + wr.stderr).toMatch(/read-only|permission denied|not permitted/i);
    }
    // the snapshot's bytes did not change, the working VDI has the new ones
    expect((await w.readVdi(snapVid, 0, MB)).equals(Buffer.alloc(MB, 0x11))).toBe(true);
    const cur = await tool('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x22 0 1M', n.uri('snapvdi')]);
    expect(cur.code).toBe(0);
    expect(cur.stdout).not.toMatch(/fail/i);
  });

  it('copy-on-writes a clone through NBD', async () => {
    await mkvdi('cowbase', 12 * MB);
    const w1 = await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 0 12M', n.uri('cowbase')]);
    expect(w1.code).toBe(0);
    const snapVid = await snapshot('cowbase', 'gold');
    const cl = await w.newVdi('cowclone', 12n * BigInt(MB), { base: snapVid });
    expect(cl.rsp.result).toBe(Res.SUCCESS);
    const cloneVid = cl.rsp.vdi.vdiId;
    const r = await tool('qemu-io', ['-f', 'raw',
      '-c', 'read -P 0x44 0 12M',
      '-c', 'write -P 0x55 4M 4k',
      '-c', 'read -P 0x44 0 4M',
      '-c', 'read -P 0x55 4M 4k',
      '-c', 'read -P 0x44 4198400 8384512',
      n.uri('cowclone')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/fail/i);
    const ino = await w.inode(cloneVid);
    expect([ino.dataVdiId[0], ino.dataVdiId[1], ino.dataVdiId[2]]).toEqual([snapVid, cloneVid, snapVid]);
    expect((await w.readVdi(snapVid, 4 * MB, 4096)).equals(Buffer.alloc(4096, 0x44))).toBe(true);
  });
});
