// A real VM boots from volume/NAME on a sheepfs mount: QEMU opens the file
// like a local raw image (cache=none: O_DIRECT through FUSE) and runs a
// 512-byte boot sector that prints a line on COM1.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startFormatted, runCollie, stopAll, SheepProc } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { bootSector, bootAndReadSerial } from '../helpers/qemu-vm.js';
import { have } from '../helpers/nbd.js';
import { fuseUnavailable, mountSheepfs, SheepfsMount } from '../helpers/sheepfs.js';
import { requirePrereq } from '../helpers/prereq.js';

requirePrereq(await fuseUnavailable());
const MESSAGE = 'SHEEPDOG-SHEEPFS-BOOT-OK';

describe('boot a VM from a sheepfs volume', () => {
  let s: SheepProc;
  let m: SheepfsMount;
  let w: Wire;
  let tmp: string;
  beforeAll(async () => {
    if (!have('qemu-system-x86_64')) throw new Error('qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)');
    s = await startFormatted(1);
    w = new Wire(s.port);
    expect((await runCollie(['vdi', 'create', 'bootdisk', '8M'], { port: s.port })).code).toBe(0);
    m = await mountSheepfs(s.port);
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'sheepfs-boot-'));
  });
  afterAll(async () => {
    w?.close();
    if (m) await m.stop();
    await stopAll();
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('prints the boot sector message on the serial console', async () => {
    await fsp.writeFile(m.p('vdi/mount'), 'bootdisk\n');
    const disk = m.p('volume/bootdisk');
    const fh = await fsp.open(disk, 'r+');
    try {
      await fh.write(bootSector(MESSAGE), 0, 512, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    expect((await w.readVdi(await w.vid('bootdisk'), 0, 512)).equals(bootSector(MESSAGE))).toBe(true);

    const serial = path.join(tmp, 'serial.log');
    const { text, stderr: vmErr } = await bootAndReadSerial(`file=${disk},format=raw,if=ide,cache=none,aio=threads`, serial, MESSAGE);
    expect(text, `serial log: ${JSON.stringify(text)}; qemu stderr: ${vmErr}`).toContain(`${MESSAGE}\r\n`);
  });
});
