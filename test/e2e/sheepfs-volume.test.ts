// sheepfs volumes on a real FUSE mount: dd / qemu-img / qemu-io / fio on
// volume/NAME, data checked through the wire and through collie; snapshots
// as read-only files; clones copy-on-write; errno for the edges.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startFormatted, runCollie, stopAll, SheepProc } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { tool, have } from '../helpers/nbd.js';
import { fuseUnavailable, mountSheepfs, SheepfsMount } from '../helpers/sheepfs.js';
import { requirePrereq } from '../helpers/prereq.js';

requirePrereq(await fuseUnavailable());
const MB = 1 << 20;
const OBJ = 4 * MB;

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len + 3);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  return b.subarray(0, len);
}

const errCode = async (p: Promise<unknown>): Promise<string | undefined> => {
  try {
    await p;
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
};

describe('sheepfs volumes', () => {
  let s: SheepProc;
  let m: SheepfsMount;
  let w: Wire;
  let tmp: string;
  beforeAll(async () => {
    s = await startFormatted(1);
    w = new Wire(s.port);
    for (const [name, size] of [['vol', '64M'], ['qimg', '32M'], ['base', '16M'], ['edge', '8M']]) {
      const r = await runCollie(['vdi', 'create', name, size], { port: s.port });
      expect(r.code, r.stderr).toBe(0);
    }
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'sheepfs-vol-'));
    m = await mountSheepfs(s.port);
  });
  afterAll(async () => {
    w?.close();
    if (m) expect(await m.stop()).toBe(0);
    await stopAll();
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  const mount = async (name: string) => {
    await fsp.writeFile(m.p('vdi/mount'), `${name}\n`);
    expect(await fsp.readdir(m.p('volume'))).toContain(name);
  };

  it('vdi/mount makes volume/NAME with the VDI size, zeros where unallocated', async () => {
    await mount('vol');
    const st = await fsp.stat(m.p('volume/vol'));
    expect(st.size).toBe(64 * MB);
    expect(st.isFile()).toBe(true);
    expect(st.blocks).toBe(0); // nothing allocated yet
    const z = await tool('dd', [`if=${m.p('volume/vol')}`, 'bs=1M', 'skip=5', 'count=2', 'status=none']);
    expect(z.out.length).toBe(2 * MB);
    expect(z.out.every((x) => x === 0)).toBe(true);
    // mounting twice is fine
    await fsp.writeFile(m.p('vdi/mount'), 'vol\n');
  });

  it('dd writes land in the VDI: read back through the wire and through collie', async () => {
    // unaligned, spanning three objects
    const data = pattern(9 * MB + 12345, 7);
    const off = 3 * MB + 4096 * 3 + 512;
    const src = path.join(tmp, 'pat');
    await fsp.writeFile(src, data);
    const d = await tool('dd', [`if=${src}`, `of=${m.p('volume/vol')}`, 'bs=65536', `seek=${off}`, 'oflag=seek_bytes', 'conv=notrunc,fsync', 'status=none'], { timeoutMs: 120_000 });
    expect(d.code, d.stderr).toBe(0);
    const vid = await w.vid('vol');
    expect((await w.readVdi(vid, off, data.length)).equals(data)).toBe(true);
    expect((await w.readVdi(vid, off - 4096, 4096)).every((x) => x === 0)).toBe(true);
    // the inode index was updated: objects 0..3 belong to vol
    const ino = await w.inode(vid);
    expect([...ino.dataVdiId.subarray(0, 4)]).toEqual([vid, vid, vid, vid]);
    expect(ino.dataVdiId[4]).toBe(0);
    const r = await runCollie(['vdi', 'read', 'vol', String(off), String(data.length)], { port: s.port });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdoutBuf.equals(data)).toBe(true);
    // and back through the file, at an odd offset
    const b = await tool('dd', [`if=${m.p('volume/vol')}`, 'bs=65536', `skip=${off + 100}`, `count=${data.length - 100}`, 'iflag=skip_bytes,count_bytes', 'status=none']);
    expect(b.out.equals(data.subarray(100))).toBe(true);
    expect((await fsp.stat(m.p('volume/vol'))).blocks).toBe((4 * OBJ) / 512);
  });

  it('writes through the wire are visible in the file', async () => {
    const vid = await w.vid('vol');
    const data = pattern(100_000, 9);
    // read the range first, so that the mount has looked at it as unallocated
    const before = await tool('dd', [`if=${m.p('volume/vol')}`, 'bs=65536', `skip=${40 * MB}`, 'count=2', 'iflag=skip_bytes', 'status=none']);
    expect(before.out.every((x) => x === 0)).toBe(true);
    await w.writeVdi(vid, 40 * MB + 77, data);
    // an allocation by another writer shows on the next open (close-to-open), no remount
    const fh = await fsp.open(m.p('volume/vol'), 'r');
    try {
      const b = Buffer.alloc(data.length);
      await fh.read(b, 0, b.length, 40 * MB + 77);
      expect(b.equals(data)).toBe(true);
    } finally {
      await fh.close();
    }
  });

  it('qemu-img info and qemu-io -f raw work on volume/NAME', async () => {
    if (!have('qemu-img') || !have('qemu-io')) throw new Error('qemu-img / qemu-io are not installed (apt-get install qemu-utils)');
    await mount('qimg');
    const f = m.p('volume/qimg');
    const info = await tool('qemu-img', ['info', '--output=json', '-f', 'raw', f]);
    expect(info.code, info.stderr).toBe(0);
    const j = JSON.parse(info.stdout);
    expect(j.format).toBe('raw');
    expect(j['virtual-size']).toBe(32 * MB);
    const io = await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0xa5 5M 3M', '-c', 'write -P 0x3c 12k 4k', '-c', 'read -P 0xa5 5M 3M', '-c', 'read -P 0 0 12k', '-c', 'flush', f]);
    expect(io.code, io.stderr).toBe(0);
    expect(io.stdout).not.toMatch(/Pattern verification failed|error/i);
    const vid = await w.vid('qimg');
    expect((await w.readVdi(vid, 5 * MB, 3 * MB)).every((x) => x === 0xa5)).toBe(true);
    expect((await w.readVdi(vid, 12 * 1024, 4096)).every((x) => x === 0x3c)).toBe(true);
    // qemu-io with O_DIRECT (-n) and aio=native
    const io2 = await tool('qemu-io', ['-f', 'raw', '-n', '-i', 'native', '-c', 'aio_write -P 0x11 20M 1M', '-c', 'aio_write -P 0x22 21M 1M', '-c', 'aio_flush', '-c', 'read -P 0x11 20M 1M', '-c', 'read -P 0x22 21M 1M', f]);
    expect(io2.code, io2.stderr).toBe(0);
    expect(io2.stdout).not.toMatch(/Pattern verification failed|error/i);
  });

  it('snapshots read the snapshot bytes and refuse writes (EROFS)', async () => {
    const vid0 = await w.vid('vol');
    const before = await w.readVdi(vid0, 0, 16 * MB);
    expect((await runCollie(['vdi', 'snapshot', '-s', 'snap-a', 'vol'], { port: s.port })).code).toBe(0);
    // overwrite through the mounted volume: it follows the new working VDI (COW)
    const fresh = pattern(2 * MB, 21);
    const fh = await fsp.open(m.p('volume/vol'), 'r+');
    try {
      await fh.write(fresh, 0, fresh.length, 3 * MB);
      await fh.sync();
    } finally {
      await fh.close();
    }
    const vid1 = await w.vid('vol');
    expect(vid1).not.toBe(vid0);
    expect((await w.readVdi(vid1, 3 * MB, fresh.length)).equals(fresh)).toBe(true);
    // the part of object 0 not rewritten was copied from the snapshot
    expect((await w.readVdi(vid1, 0, 3 * MB)).equals(before.subarray(0, 3 * MB))).toBe(true);
    for (const name of ['1', 'snap-a']) {
      const f = m.p(`vdi/vol/snapshots/${name}`);
      expect((await fsp.stat(f)).size).toBe(64 * MB);
      const got = await tool('dd', [`if=${f}`, 'bs=1M', 'count=16', 'status=none']);
      expect(got.out.equals(before), name).toBe(true);
      expect(await errCode(fsp.open(f, 'r+')), name).toBe('EROFS');
      expect(await errCode(fsp.truncate(f, 0)), name).toBe('EROFS');
      const dd = await tool('dd', ['if=/dev/zero', `of=${f}`, 'bs=4k', 'count=1', 'conv=notrunc', 'status=none']);
      expect(dd.code).not.toBe(0);
      expect(dd.stderr).toMatch(/Read-only file system/);
    }
    if (have('qemu-img')) {
      const cmp = await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', m.p('vdi/vol/snapshots/1'), m.p('vdi/vol/snapshots/snap-a')]);
      expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    }
    expect(m.output()).toMatch(/snapshots are read-only -> EROFS/);
  });

  it('a clone writes copy-on-write; its parent snapshot stays intact', async () => {
    const base = pattern(8 * MB, 33);
    await mount('base');
    await fsp.writeFile(m.p('volume/base'), base); // O_TRUNC is ignored: a volume keeps its size
    expect((await fsp.stat(m.p('volume/base'))).size).toBe(16 * MB);
    expect((await runCollie(['vdi', 'snapshot', '-s', 'gold', 'base'], { port: s.port })).code).toBe(0);
    expect((await runCollie(['vdi', 'clone', '-s', 'gold', 'base', 'child'], { port: s.port })).code).toBe(0);
    await mount('child');
    const patch = Buffer.alloc(8192, 0xee);
    const fh = await fsp.open(m.p('volume/child'), 'r+');
    try {
      await fh.write(patch, 0, patch.length, 5 * MB + 100);
    } finally {
      await fh.close();
    }
    const want = Buffer.from(base);
    patch.copy(want, 5 * MB + 100);
    const got = await tool('dd', [`if=${m.p('volume/child')}`, 'bs=1M', 'count=8', 'status=none']);
    expect(got.out.equals(want)).toBe(true);
    const cvid = await w.vid('child');
    const ino = await w.inode(cvid);
    const gvid = await w.vid('base', 0, 'gold');
    expect(ino.dataVdiId[1]).toBe(cvid); // object 1 copied on write
    expect(ino.dataVdiId[0]).toBe(gvid); // object 0 still shared
    const snap = await tool('dd', [`if=${m.p('vdi/base/snapshots/gold')}`, 'bs=1M', 'count=8', 'status=none']);
    expect(snap.out.equals(base)).toBe(true);

    // Another gateway copies object 0 on write while the clone is mounted
    // here: the next open must read the clone's own object, not the
    // parent's bytes its index had at mount time.
    const outside = pattern(4096, 34);
    await w.writeVdi(cvid, 1000, outside);
    expect((await w.inode(cvid)).dataVdiId[0]).toBe(cvid);
    outside.copy(want, 1000);
    const again = await tool('dd', [`if=${m.p('volume/child')}`, 'bs=1M', 'count=8', 'status=none']);
    expect(again.out.equals(want)).toBe(true);
  });

  it('many requests in flight (fio verify: libaio, and six psync threads; direct)', async () => {
    if (!have('fio')) throw new Error('fio is not installed (apt-get install fio)');
    const r = await tool('fio', ['--name=v', `--filename=${m.p('volume/vol')}`, '--rw=randwrite', '--bsrange=4k-192k', '--size=24M', '--offset=24M',
      '--direct=1', '--ioengine=libaio', '--iodepth=32', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--randrepeat=0'], { timeoutMs: 180_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/verify: bad|crc32c: verify failed/);
    // several submitting threads: the kernel sends their requests concurrently
    const t = await tool('fio', ['--name=t', `--filename=${m.p('volume/vol')}`, '--rw=randwrite', '--bsrange=4k-256k', '--size=8M', '--offset=16M',
      '--offset_increment=8M', '--numjobs=6', '--direct=1', '--ioengine=psync', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1',
      '--verify_state_save=0', '--randrepeat=0', '--group_reporting'], { timeoutMs: 180_000 });
    expect(t.code, t.stdout + t.stderr).toBe(0);
  });

  it('a resize by collie shows in st_size and opens up the new range', async () => {
    await mount('edge');
    expect((await fsp.stat(m.p('volume/edge'))).size).toBe(8 * MB);
    expect((await runCollie(['vdi', 'resize', 'edge', '12M'], { port: s.port })).code).toBe(0);
    await new Promise((r) => setTimeout(r, 300));
    expect((await fsp.stat(m.p('volume/edge'))).size).toBe(12 * MB);
    const fh = await fsp.open(m.p('volume/edge'), 'r+');
    try {
      expect((await fh.write(Buffer.alloc(4096, 9), 0, 4096, 10 * MB)).bytesWritten).toBe(4096);
    } finally {
      await fh.close();
    }
    expect(m.output()).toMatch(/volume\/edge: size changed from 8388608 to 12582912 bytes/);
    expect((await runCollie(['vdi', 'read', 'edge', String(10 * MB), '4096'], { port: s.port })).stdoutBuf.every((x) => x === 9)).toBe(true);
  });

  it('edges: writes past the end are ENOSPC, reads there are EOF; fsync with the object cache on', async () => {
    await mount('edge');
    const f = m.p('volume/edge');
    const END = 12 * MB;
    const fh = await fsp.open(f, 'r+');
    try {
      const b = Buffer.alloc(8192, 1);
      // straddling the end: the part that fits is written
      const r = await fh.write(b, 0, b.length, END - 4096);
      expect(r.bytesWritten).toBe(4096);
      expect(await errCode(fh.write(b, 0, 4096, END))).toBe('ENOSPC');
      expect((await fh.read(Buffer.alloc(10), 0, 10, END)).bytesRead).toBe(0);
      await fsp.writeFile(m.p('config/object_cache'), '1\n');
      await fh.write(Buffer.alloc(4096, 2), 0, 4096, 0);
      await fh.sync();
      await fsp.writeFile(m.p('config/object_cache'), '0\n');
    } finally {
      await fh.close();
    }
    expect(m.output()).toMatch(/past the end of the volume .* -> ENOSPC/);
    const vid = await w.vid('edge');
    expect((await w.readVdi(vid, 0, 4096)).every((x) => x === 2)).toBe(true);
    expect((await w.readVdi(vid, 12 * MB - 4096, 4096)).every((x) => x === 1)).toBe(true);
  });
});
