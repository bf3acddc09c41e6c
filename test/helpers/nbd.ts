// Helpers for NBD tests: a formatted sheep that also serves NBD, and a
// bounded runner for external tools (qemu-img, qemu-io, nbdinfo, fio, ...).
import { spawn, spawnSync } from 'node:child_process';
import { startFormatted, freePort, waitForPort, SheepProc } from './cluster.js';

export interface NbdSheep {
  s: SheepProc;
  nbdPort: number;
  uri: (exportName: string) => string;
}

export async function startNbdSheep(copies = 1, extraArgs: string[] = [], env?: NodeJS.ProcessEnv): Promise<NbdSheep> {
  const nbdPort = await freePort();
  const s = await startFormatted(copies, ['--nbd', `127.0.0.1:${nbdPort}`, ...extraArgs], env);
  await waitForPort(nbdPort);
  return { s, nbdPort, uri: (e) => `nbd://127.0.0.1:${nbdPort}/${encodeURIComponent(e)}` };
}

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
  out: Buffer;
}

/** Run an external program with a hard time limit. */
export function tool(cmd: string, args: string[], opts: { timeoutMs?: number; input?: Buffer | string; env?: NodeJS.ProcessEnv } = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (b) => out.push(b));
    p.stderr.on('data', (b) => err.push(b));
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`${cmd} ${args.join(' ')} timed out; stderr: ${Buffer.concat(err)}`)); }, opts.timeoutMs ?? 60_000);
    p.on('error', (e) => { clearTimeout(t); reject(e); });
    p.on('close', (code) => {
      clearTimeout(t);
      const o = Buffer.concat(out);
      resolve({ code, stdout: o.toString(), stderr: Buffer.concat(err).toString(), out: o });
    });
    p.stdin.on('error', () => undefined);
    p.stdin.end(opts.input ?? '');
  });
}

/** Is this program installed? (tests fail loudly, not skip, when a required tool is missing.) */
export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}
