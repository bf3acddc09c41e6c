// Mount sheepfs on a temp dir for a test, and take it down again.
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fsp, constants as fsc } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from './cluster.js';
import { tool } from './nbd.js';

export const SHEEPFS_BIN = path.join(ROOT, 'sheepfs/bin/sheepfs.js');

/** Why FUSE mounts cannot work here, or undefined when they can. */
export async function fuseUnavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not root';
  try {
    await fsp.access('/dev/fuse', fsc.R_OK | fsc.W_OK);
  } catch {
    return '/dev/fuse is missing';
  }
  return undefined;
}

export async function isMounted(dir: string): Promise<boolean> {
  const m = await fsp.readFile('/proc/self/mounts', 'utf8');
  return m.split('\n').some((l) => l.split(' ')[1] === dir);
}

export async function mkMountDir(): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), 'sheepfs-mnt-'));
}

export interface SheepfsMount {
  dir: string;
  proc: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  /** SIGTERM, wait, and make sure nothing is left mounted. */
  stop(): Promise<number | null>;
  p(rel: string): string;
}

/** `sheepfs -f -p PORT DIR` in the foreground, resolved once DIR is a mount. */
export async function mountSheepfs(port: number, args: string[] = [], dir?: string): Promise<SheepfsMount> {
  const mnt = dir ?? (await mkMountDir());
  const proc = spawn(process.execPath, [SHEEPFS_BIN, '-f', '-p', String(port), ...args, mnt], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (b) => (out += b));
  proc.stderr!.on('data', (b) => (out += b));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)));
  const end = Date.now() + 15_000;
  while (!(await isMounted(mnt)) || !/mounted sheep/.test(out)) {
    if (proc.exitCode !== null) throw new Error(`sheepfs exited (${proc.exitCode}): ${out}`);
    if (Date.now() > end) throw new Error(`sheepfs did not mount within 15s: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const m: SheepfsMount = {
    dir: mnt, proc, exited,
    output: () => out,
    p: (rel) => path.join(mnt, rel),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 45_000); // sheepfs gives up unmounting after 30 s
      const code = await exited;
      clearTimeout(t);
      await cleanupMount(mnt);
      return code;
    },
  };
  return m;
}

/** Lazy-unmount DIR if something is still mounted there, then remove it. */
export async function cleanupMount(dir: string): Promise<void> {
  if (await isMounted(dir)) await tool('umount', ['-l', dir]);
  await fsp.rmdir(dir).catch(() => undefined);
}
