// Start real sheep processes on loopback in temp dirs, run real collie.
import { spawn, ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import { readFile, stat, rm } from 'node:fs/promises';
import * as path from 'node:path';
import * as os from 'node:os';
import { mkdirSync, writeFileSync, readFileSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dir as tmpDir } from 'tmp-promise';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SHEEP_BIN = path.join(ROOT, 'sheep/bin/sheep.js');
export const COLLIE_BIN = path.join(ROOT, 'collie/bin/collie.js');

// A port handed out is claimed, in a directory every test process shares:
// the kernel may give a just-closed port to the next bind(0), in this
// process (CI: a gateway's NBD port equal to its sheep port) or in another
// one running beside it (two simulator runs: one cluster's NBD port was
// the other's, and reads through it returned the other cluster's bytes).
// A claim lasts as long as its process, and at most a day.
const CLAIMS = path.join(os.tmpdir(), 'sheepdog-test-ports');
const claimed: string[] = [];
let cleanupHooked = false;

function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function claim(port: number): boolean {
  mkdirSync(CLAIMS, { recursive: true });
  const f = path.join(CLAIMS, String(port));
  for (let tries = 0; tries < 2; tries++) {
    try {
      writeFileSync(f, `${process.pid}\n`, { flag: 'wx' });
      claimed.push(f);
      if (!cleanupHooked) {
        cleanupHooked = true;
        process.once('exit', () => { for (const c of claimed) rmSync(c, { force: true }); });
      }
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    try {
      const owner = Number(readFileSync(f, 'utf8').trim());
      // a claim of this process, of a live one or a young one stands (a dead process
      // may look alive for a moment: that only keeps its claims a little longer)
      if (owner === process.pid || (owner > 0 && !gone(owner) && Date.now() - statSync(f).mtimeMs < 86_400_000)) return false;
      rmSync(f, { force: true });
    } catch {
      return false;
    }
  }
  return false;
}

/** A free TCP port on 127.0.0.1 that no test process has been handed. */
export async function freePort(): Promise<number> {
  for (;;) {
    const p = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
    if (claim(p)) return p;
  }
}

export async function waitForPort(port: number, timeoutMs = 15000, host = '127.0.0.1'): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port });
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`port ${port} did not open within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The port answers and the node lists itself: it has joined its cluster. */
async function waitForJoined(port: number, timeoutMs = 30_000): Promise<void> {
  await waitForPort(port, timeoutMs);
  const { SheepClient, Op, decodeNodes } = await import('@sheepdog/common');
  const end = Date.now() + timeoutMs;
  for (;;) {
    const c = new SheepClient({ port, timeout: 5000 });
    try {
      const r = await c.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 });
      if (decodeNodes(r.data).some((n) => n.port === port)) return;
    } catch { /* not yet */ } finally {
      c.close();
    }
    if (Date.now() > end) throw new Error(`sheep on ${port} did not join its cluster within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface SheepProc {
  port: number;
  dir: string;
  proc: ChildProcess;
  output: () => string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

export interface StartOptions {
  dir?: string;
  port?: number;
  args?: string[];
  /** Cluster driver spec; by default a private local cluster per sheep. */
  cluster?: string;
  /** Extra environment for the daemon. */
  env?: NodeJS.ProcessEnv;
}

/** A cluster id no other test uses, for `-c local:ID`. */
export const uniqueClusterId = () => `t${process.pid}-${Math.random().toString(36).slice(2, 10)}`;

const started = new Set<SheepProc>();

export async function startSheep(opts: StartOptions = {}): Promise<SheepProc> {
  const port = opts.port ?? (await freePort());
  const dir = opts.dir ?? (await madeDir());
  const cluster = opts.cluster ?? `local:${uniqueClusterId()}`;
  // where this run's lines start in a log an earlier run on dir wrote to
  const logFile = path.join(dir, 'sheep.log');
  const logFrom = await stat(logFile).then((st) => st.size, () => 0);
  const proc = spawn(process.execPath, [SHEEP_BIN, '-f', '-b', '127.0.0.1', '-p', String(port), '-c', cluster, ...(opts.args ?? []), dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: opts.env ? { ...process.env, ...opts.env } : process.env,
  });
  let out = '';
  proc.stdout!.on('data', (b) => (out += b));
  proc.stderr!.on('data', (b) => (out += b));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const sp: SheepProc = {
    port, dir, proc, exited,
    output: () => out,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
      started.delete(sp);
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
      started.delete(sp);
    },
  };
  started.add(sp);
  // Its own line first: another process may hold the port (tests run side by side),
  // and its answers must not pass for this sheep's.
  const serving = new RegExp(`serving [^ ]*:${port}\\b`);
  await Promise.race([
    (async () => {
      // the log file is the record: its pipe to us can lag far behind on a loaded machine
      const inLog = () => readFile(logFile).then((t) => serving.test(t.subarray(logFrom).toString()), () => false);
      const end = Date.now() + 60_000;
      for (let i = 0; !serving.test(out); i++) {
        if (i % 50 === 49 && (await inLog())) break;
        if (Date.now() > end) {
          if (await inLog()) break;
          throw new Error(`sheep on ${port} did not say it serves: ${out}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      await waitForJoined(port);
    })(),
    exited.then((c) => { throw new Error(`sheep exited early (${c}): ${out}`); }),
  ]);
  return sp;
}

export async function stopAll(): Promise<void> {
  await Promise.all([...started].map((s) => s.kill()));
}

/**
 * Store directories this helper made. Tests restart sheep on them after
 * stopAll, so they go only when the test file is done (test/helpers/setup.ts
 * runs removeMadeDirs after the file's own afterAll hooks): tmp-promise's own
 * cleanup needs a graceful process exit, which vitest's workers do not make,
 * and each directory left behind holds up to a GiB.
 */
const madeDirs: string[] = [];
async function madeDir(): Promise<string> {
  const d = (await tmpDir({ prefix: 'sheep-' })).path;
  madeDirs.push(d);
  return d;
}

/** Stop every sheep still running and remove the directories made for them. */
export async function removeMadeDirs(): Promise<void> {
  await stopAll();
  await Promise.all(madeDirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number | null;
  stdoutBuf: Buffer;
}

/** Run a node script (collie by default) with args; optional stdin. */
export function run(bin: string, args: string[], opts: { input?: Buffer | string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [bin, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (b) => out.push(b));
    p.stderr.on('data', (b) => err.push(b));
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`${args.join(' ')} timed out`)); }, opts.timeoutMs ?? 120_000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(t);
      const stdoutBuf = Buffer.concat(out);
      resolve({ stdout: stdoutBuf.toString(), stderr: Buffer.concat(err).toString(), code, stdoutBuf });
    });
    p.stdin.on('error', () => undefined);
    if (opts.input !== undefined) p.stdin.end(opts.input);
    else p.stdin.end();
  });
}

/** collie ARGS -p PORT (the port is appended last, as libvirt does). */
export function runCollie(args: string[], opts: { port?: number; input?: Buffer | string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const a = opts.port ? [...args, '-p', String(opts.port)] : args;
  return run(COLLIE_BIN, a, opts);
}

/** A formatted single-node cluster. */
export async function startFormatted(copies = 1, args: string[] = [], env?: NodeJS.ProcessEnv): Promise<SheepProc> {
  const s = await startSheep({ args, env });
  const { SheepClient, Op, Flag, timestamp64, ClusterFlag, Res } = await import('@sheepdog/common');
  const c = new SheepClient({ port: s.port });
  try {
    const r = await c.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES } }, Buffer.from('plain\0'));
    if (r.rsp.result !== Res.SUCCESS) throw new Error(`format failed: ${r.rsp.result}`);
  } finally {
    c.close();
  }
  return s;
}

export interface ClusterHandle {
  spec: string;
  nodes: SheepProc[];
  /** Start one more sheep in this cluster. */
  add(extra?: Partial<StartOptions>): Promise<SheepProc>;
}

/** n sheep in one cluster (default: a private local cluster, node i in zone i). */
export async function startCluster(n: number, opts: { cluster?: string; args?: (i: number) => string[] } = {}): Promise<ClusterHandle> {
  const spec = opts.cluster ?? `local:${uniqueClusterId()}`;
  const h: ClusterHandle = {
    spec,
    nodes: [],
    async add(extra = {}) {
      const i = h.nodes.length;
      // distinct zones, or placement caps copies at one (as upstream does)
      const s = await startSheep({ cluster: spec, args: opts.args?.(i) ?? ['-z', String(i)], ...extra });
      h.nodes.push(s);
      return s;
    },
  };
  for (let i = 0; i < n; i++) await h.add();
  return h;
}

/** Poll until fn() returns truthy (or throw after timeoutMs). */
export async function waitFor<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
