// sheepfs serves hyper volumes (B-tree index): a 20 TiB volume/NAME on a
// real FUSE mount, written at both ends with file I/O and qemu-io, the index
// checked on the wire and read back through a second mount.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import { Op, Flag, Res, SD_INODE_HEADER_SIZE, INODE_OFF, vidToVdiOid, decodeBtreeNode } from '@sheepdog/common';
import { startFormatted, runCollie, stopAll, SheepProc } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { tool, have } from '../helpers/nbd.js';
import { fuseUnavailable, mountSheepfs, SheepfsMount } from '../helpers/sheepfs.js';
import { requirePrereq } from '../helpers/prereq.js';

requirePrereq(await fuseUnavailable());
const MB = 1 << 20;
const SIZE = 20 * 2 ** 40;
const END = SIZE - MB;

describe('sheepfs on a hyper volume', () => {
  let s: SheepProc;
  let m: SheepfsMount | undefined;
  let w: Wire;
  beforeAll(async () => {
    if (!have('qemu-io')) throw new Error('qemu-io is not installed (apt-get install qemu-utils)');
    s = await startFormatted(1);
    w = new Wire(s.port);
    const r = await runCollie(['vdi', 'create', '-y', 'hyv', '20T'], { port: s.port });
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    w?.close();
    if (m) await m.stop();
    await stopAll();
  });

  it('volume/NAME is 20 TiB and takes writes at both ends', async () => {
    m = await mountSheepfs(s.port);
    await fsp.writeFile(m.p('vdi/mount'), 'hyv\n');
    const f = m.p('volume/hyv');
    expect((await fsp.stat(f)).size).toBe(SIZE);
    const fh = await fsp.open(f, 'r+');
    try {
      await fh.write(Buffer.alloc(64 * 1024, 0x42), 0, 64 * 1024, END);
      const back = Buffer.alloc(64 * 1024);
      await fh.read(back, 0, back.length, END);
      expect(back.equals(Buffer.alloc(64 * 1024, 0x42))).toBe(true);
    } finally {
      await fh.close();
    }
    const io = await tool('qemu-io', ['-f', 'raw', '-c', `write -P 0x77 0 ${MB}`, '-c', `read -P 0x77 0 ${MB}`, '-c', `read -P 0x42 ${END} 65536`, '-c', 'flush', f]);
    expect(io.code, io.stderr).toBe(0);
    expect(io.stdout).not.toMatch(/mismatch|error|failed/i);
    expect((await fsp.stat(f)).blocks * 512).toBe(8 * MB); // two 4 MiB objects, from the tree
    const vid = await w.vid('hyv');
    const r = await w.c.request({ opcode: Op.READ_OBJ, dataLength: SD_INODE_HEADER_SIZE + 64, obj: { oid: vidToVdiOid(vid) } });
    expect(decodeBtreeNode(r.data, SD_INODE_HEADER_SIZE, true)).toEqual({ depth: 1, idx: [0, Math.floor(END / (4 * MB))], vid: [vid, vid] });
  });

  it('a new mount reads the data back from the tree', async () => {
    expect(await m!.stop()).toBe(0);
    m = await mountSheepfs(s.port);
    await fsp.writeFile(m.p('vdi/mount'), 'hyv\n');
    const io = await tool('qemu-io', ['-f', 'raw', '-r', '-c', `read -P 0x77 0 ${MB}`, '-c', `read -P 0x42 ${END} 65536`, '-c', `read -P 0 ${MB} ${MB}`, m.p('volume/hyv')]);
    expect(io.code, io.stderr).toBe(0);
    expect(io.stdout).not.toMatch(/mismatch|error|failed/i);
  });

  it('attaching a hyper volume whose tree is corrupt fails with EIO', async () => {
    const c = await runCollie(['vdi', 'create', '-y', 'badtree', '1T'], { port: s.port });
    expect(c.code, c.stderr).toBe(0);
    const vid = await w.vid('badtree');
    // from btree_counter on, as hyper-volume clients write the root: magic, depth 2 in a root of 300,000 entries
    const b = Buffer.alloc(SD_INODE_HEADER_SIZE - INODE_OFF.btreeCounter + 8);
    const at = SD_INODE_HEADER_SIZE - INODE_OFF.btreeCounter;
    b.writeUInt16LE(0x6274, at); b.writeUInt16LE(2, at + 2); b.writeUInt32LE(300_000, at + 4);
    const r = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: INODE_OFF.btreeCounter } }, b);
    expect(r.rsp.result).toBe(Res.SUCCESS);
    const err = await fsp.writeFile(m!.p('vdi/mount'), 'badtree\n').then(() => undefined, (e: NodeJS.ErrnoException) => e.code);
    expect(err).toBe('EIO');
    expect(await fsp.readdir(m!.p('volume'))).not.toContain('badtree');
    expect(m!.proc.exitCode).toBeNull();
  });
});
