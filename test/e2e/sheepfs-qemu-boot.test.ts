// A real VM boots from volume/NAME on a sheepfs mount: QEMU opens the file
// like a local raw image (cache=none: O_DIRECT through FUSE) and runs a
// 512-byte boot sector that prints a line on COM1.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startFormatted, runCollie, stopAll, SheepProc } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { have } from '../helpers/nbd.js';
import { fuseUnavailable, mountSheepfs, SheepfsMount } from '../helpers/sheepfs.js';

const why = await fuseUnavailable();
const MESSAGE = 'SHEEPDOG-SHEEPFS-BOOT-OK';

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

describe.skipIf(!!why)('boot a VM from a sheepfs volume', () => {
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
      await fh.write(bootSector(), 0, 512, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    expect((await w.readVdi(await w.vid('bootdisk'), 0, 512)).equals(bootSector())).toBe(true);

    const serial = path.join(tmp, 'serial.log');
    const vm = spawn('qemu-system-x86_64', [
      '-accel', 'tcg', '-nographic', '-m', '32', '-no-reboot', '-nodefaults',
      '-monitor', 'none', '-serial', `file:${serial}`,
      '-drive', `file=${disk},format=raw,if=ide,cache=none,aio=threads`,
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
