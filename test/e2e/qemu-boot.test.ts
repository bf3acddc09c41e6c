// A real VM boots from a VDI over NBD: qemu-system-x86_64 (TCG) runs a
// hand-assembled 512-byte boot sector stored in the VDI; it prints a line on
// COM1, which the test reads back from the serial log file.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Res } from '@sheepdog/common';
import { stopAll } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { bootSector, bootAndReadSerial } from '../helpers/qemu-vm.js';
import { startNbdSheep, NbdSheep, tool, have } from '../helpers/nbd.js';

const MB = 1 << 20;
const MESSAGE = 'SHEEPDOG-NBD-BOOT-OK';

describe('boot a VM from a VDI over NBD', () => {
  let n: NbdSheep;
  let w: Wire;
  let tmp: string;
  beforeAll(async () => {
    for (const t of ['qemu-system-x86_64', 'qemu-img']) if (!have(t)) throw new Error(`${t} is not installed (apt-get install qemu-system-x86 qemu-utils)`);
    n = await startNbdSheep(1);
    w = new Wire(n.s.port);
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'nbd-boot-'));
  });
  afterAll(async () => {
    w?.close();
    await stopAll();
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('prints the boot sector message on the serial console', async () => {
    expect((await w.newVdi('bootdisk', 8n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    const img = path.join(tmp, 'boot.raw');
    await fsp.writeFile(img, bootSector(MESSAGE));
    const cv = await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', img, n.uri('bootdisk')]);
    expect(cv.code, cv.stderr).toBe(0);
    // the sector is really in the VDI
    expect((await w.readVdi(await w.vid('bootdisk'), 0, 512)).equals(bootSector(MESSAGE))).toBe(true);

    const serial = path.join(tmp, 'serial.log');
    const { text, stderr: vmErr } = await bootAndReadSerial(`file=${n.uri('bootdisk')},format=raw,if=ide,cache=writeback`, serial, MESSAGE);
    expect(text, `serial log: ${JSON.stringify(text)}; qemu stderr: ${vmErr}`).toContain(`${MESSAGE}\r\n`);
  });
});
