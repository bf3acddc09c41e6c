// ps and pgrep see our programs as upstream's: `sheep STORE -p PORT ...`,
// `sheepfs ...`, `collie ...` (the path they were invoked by, then their
// arguments), not `node .../sheep.js ...`; operators' scripts find a daemon
// with `pgrep -f "sheep STORE "`.
import { describe, it, expect, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SHEEP_BIN, COLLIE_BIN, freePort, run, runCollie, startFormatted, stopAll, uniqueClusterId, waitFor, waitForPort } from '../helpers/cluster.js';
import { tool } from '../helpers/nbd.js';
import { fuseUnavailable, mountSheepfs } from '../helpers/sheepfs.js';
import { requirePrereq } from '../helpers/prereq.js';

requirePrereq(await fuseUnavailable());

const pgrep = async (...args: string[]) => (await tool('pgrep', args)).stdout.split('\n').filter(Boolean).map(Number);
const psField = async (pid: number, field: string) => (await tool('ps', ['-o', `${field}=`, '-p', String(pid)])).stdout.trim();

/** Resolves when nothing accepts connections on PORT any more. */
async function portClosed(port: number): Promise<void> {
  const net = await import('node:net');
  await waitFor(() => new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(true));
  }), 20_000, `port ${port} to close`);
}

describe('process titles', () => {
  const tmps: string[] = [];
  const mk = async (p: string) => { const d = await fsp.mkdtemp(path.join(os.tmpdir(), p)); tmps.push(d); return d; };
  afterAll(async () => {
    await stopAll();
    for (const d of tmps) await fsp.rm(d, { recursive: true, force: true });
  });

  it('a daemonized sheep shows `sheep STORE ARGS` and is found by pgrep -f "sheep STORE "', async () => {
    const dir = await mk('sheep-title-');
    const port = await freePort();
    const pidfile = path.join(dir, 'sheep.pid');
    const args = [dir, '-p', String(port), '-b', '127.0.0.1', '-c', `local:${uniqueClusterId()}`, '-P', pidfile];
    const r = await run(SHEEP_BIN, args);
    expect(r.code, r.stderr).toBe(0);
    const pid = Number((await fsp.readFile(pidfile, 'utf8')).trim());
    try {
      expect(await pgrep('-f', `sheep ${dir} `)).toEqual([pid]);
      expect(await psField(pid, 'args')).toBe(['sheep', ...args].join(' '));
      expect(await psField(pid, 'comm')).toBe('sheep');
      expect(await pgrep('-x', 'sheep')).toContain(pid);
      // the daemon-only marker the parent passes its child is not shown
      expect((await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8')).replace(/\0+$/, '')).toBe(['sheep', ...args].join(' '));
    } finally {
      process.kill(pid, 'SIGTERM');
      await portClosed(port);
    }
  });

  it('sheep run through a command on PATH shows that path', async () => {
    const bin = await mk('sheep-bin-');
    await fsp.symlink(SHEEP_BIN, path.join(bin, 'sheep'));
    const dir = await mk('sheep-title-');
    const port = await freePort();
    const args = [dir, '-f', '-p', String(port), '-b', '127.0.0.1', '-c', `local:${uniqueClusterId()}`];
    const p = spawn('sh', ['-c', 'exec sheep "$@"', 'sh', ...args], {
      stdio: 'ignore', env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
    });
    const exited = new Promise((r) => p.once('exit', r));
    try {
      await waitForPort(port);
      expect(await pgrep('-f', `sheep ${dir} `)).toEqual([p.pid]);
      expect(await psField(p.pid!, 'args')).toBe([path.join(bin, 'sheep'), ...args].join(' '));
      expect(await psField(p.pid!, 'comm')).toBe('sheep');
    } finally {
      p.kill('SIGTERM');
      await exited;
    }
  });

  it('collie and sheepfs show their own names and arguments', async () => {
    const s = await startFormatted(1);
    expect((await runCollie(['vdi', 'create', 'titled', '4M'], { port: s.port })).code).toBe(0);
    // `vdi write` waits for its data on stdin: a collie that stays up
    const c = spawn(process.execPath, [COLLIE_BIN, 'vdi', 'write', 'titled', '0', '512', '-p', String(s.port)], { stdio: ['pipe', 'ignore', 'pipe'] });
    const done = new Promise<number | null>((r) => c.once('close', r));
    await waitFor(async () => (await pgrep('-f', '^collie vdi write titled ')).includes(c.pid!), 10_000, 'collie to set its title');
    expect(await psField(c.pid!, 'args')).toBe(`collie vdi write titled 0 512 -p ${s.port}`);
    expect(await psField(c.pid!, 'comm')).toBe('collie');
    c.stdin!.end(Buffer.alloc(512, 7));
    expect(await done).toBe(0);

    const m = await mountSheepfs(s.port);
    try {
      expect(await pgrep('-f', `^sheepfs -f -p ${s.port} ${m.dir}$`)).toEqual([m.proc.pid]);
      expect(await psField(m.proc.pid!, 'comm')).toBe('sheepfs');
    } finally {
      expect(await m.stop()).toBe(0);
    }
  });
});
