// A tiny real VM for boot tests: a hand-assembled boot sector that prints a
// line on COM1, and qemu-system-x86_64 (TCG) running it from a drive.
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';

/**
 * Real-mode boot sector, loaded by the BIOS at 0000:7C00:
 *   cli; xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
 *   l: lodsb; test al,al; jz d; out dx,al; jmp l
 *   d: hlt; jmp d
 *   msg: db MESSAGE, 13, 10, 0
 *   ... 0x55 0xAA at 510
 */
export function bootSector(message: string): Buffer {
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
  Buffer.from(`${message}\r\n\0`, 'latin1').copy(b, 0x16);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

/**
 * Boot qemu-system-x86_64 from `drive` (a -drive spec) with COM1 logged to
 * `serialLog`; stop as soon as `message` appears (or after 40 s) and return
 * the log and qemu's stderr.
 */
export async function bootAndReadSerial(drive: string, serialLog: string, message: string): Promise<{ text: string; stderr: string }> {
  const vm = spawn('qemu-system-x86_64', [
    '-accel', 'tcg', '-nographic', '-m', '32', '-no-reboot', '-nodefaults',
    '-monitor', 'none', '-serial', `file:${serialLog}`,
    '-drive', drive,
    '-boot', 'c',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  vm.stderr!.on('data', (b) => (stderr += b));
  const exited = new Promise<number | null>((r) => vm.once('exit', (c) => r(c)));
  let text = '';
  try {
    const end = Date.now() + 40_000;
    while (Date.now() < end && vm.exitCode === null) {
      text = await fsp.readFile(serialLog, 'latin1').catch(() => '');
      if (text.includes(message)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    vm.kill('SIGKILL');
    await exited;
  }
  return { text, stderr };
}
