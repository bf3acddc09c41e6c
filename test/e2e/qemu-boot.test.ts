// A real VM boots from a VDI over NBD: qemu-system-x86_64 (TCG) runs a
// hand-assembled 512-byte boot sector stored in the VDI; it prints a line on
// COM1, which the test reads back from the serial log file.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Res } from '@sheepdog/common';
import { stopAll } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { startNbdSheep, NbdSheep, tool, have } from '../helpers/nbd.js';

const MB = 1 << 20;
const MESSAGE = 'SHEEPDOG-NBD-BOOT-OK';

/**
 * Real-mode boot sector, loaded by the BIOS at 0000:7C00:
 *   cli; xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
 *   l: lodsb; test al,al; jz d; out dx,al; jmp l
 *   d: hlt; jmp d
 *   msg: db MESSAGE, 13, 10, 0
 *   ... 0x55 0xAA at 510
 */
function bootSector(): Buffer {
  const code = [
    0xfa, // cli
    0x31, 0xc0, // xor ax,ax
    0x8e, 0xd8, // mov ds,ax
    0xbe, 0x16, 0x7c, // mov si,0x7c16 (msg)
    0xba, 0xf8, 0x03, // mov dx,0x3f8
    0xac, // l: lodsb
    0x84, 0xc0, // test al,al
    0x74, 0x03, // jz d
    0xee, // out dx,al
    0xeb, 0xf8, // jmp l
    0xf4, // d: hlt
    0xeb, 0xfd, // jmp d
  ];
  const b = Buffer.alloc(512);
  Buffer.from(code).copy(b, 0);
  if (code.length !== 0x16) throw new Error('message offset changed');
  Buffer.from(`${MESSAGE}\r\n\0`, 'latin1').copy(b, 0x16);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

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
    await fsp.writeFile(img, bootSector());
    const cv = await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', img, n.uri('bootdisk')]);
    expect(cv.code, cv.stderr).toBe(0);
    // the sector is really in the VDI
    expect((await w.readVdi(await w.vid('bootdisk'), 0, 512)).equals(bootSector())).toBe(true);

    const serial = path.join(tmp, 'serial.log');
    const vm = spawn('qemu-system-x86_64', [
      '-accel', 'tcg', '-nographic', '-m', '32', '-no-reboot', '-nodefaults',
      '-monitor', 'none', '-serial', `file:${serial}`,
      '-drive', `file=${n.uri('bootdisk')},format=raw,if=ide,cache=writeback`,
      '-boot', 'c',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let vmErr = '';
    vm.stderr!.on('data', (b) => (vmErr += b));
    const exited = new Promise<number | null>((r) => vm.once('exit', (c) => r(c)));
    let text = '';
    try {
      const end = Date.now() + 40_000;
      while (Date.now() < end && vm.exitCode === null) {
        text = await fsp.readFile(serial, 'latin1').catch(() => '');
        if (text.includes(MESSAGE)) break;
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      vm.kill('SIGKILL');
      await exited;
    }
    expect(text, `serial log: ${JSON.stringify(text)}; qemu stderr: ${vmErr}`).toContain(`${MESSAGE}\r\n`);
  });
});
