// A throwaway single-node corosync on 127.0.0.1 for tests, from Debian's
// `corosync` package (.ci/run installs it): knet transport, no crypto,
// votequorum with one vote, state and log in a temp dir.
//
// Only one corosync can run per mount + network namespace: it locks
// /var/run/corosync.pid, and its IPC (libqb) uses abstract unix sockets named
// after the service ("cpg", "cmap", ...). So test files that need corosync
// share one: startCorosync() takes a machine-wide lock (a directory under
// the temp dir, released by stop() or when its owner process is gone)
// before starting its own, and waits for it otherwise; if a corosync these
// tests did not start is already up, they use that one. Corosyncs in network
// namespaces of their own (makeTestNet) run beside it, each with a private
// /run.
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import { promises as fsp, existsSync, readFileSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dir as tmpDir } from 'tmp-promise';

export const COROSYNC_BIN = '/usr/sbin/corosync';
export const hasCorosync = (): boolean => existsSync(COROSYNC_BIN) && existsSync('/usr/sbin/corosync-quorumtool');

const LOCK = path.join(os.tmpdir(), 'sheepdog-test-corosync.lock');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface CorosyncServer {
  /** the generated corosync.conf */
  config: string;
  /** corosync's log so far */
  output(): string;
  /** SIGTERM (then SIGKILL) corosync, wait until it is gone, release the lock. */
  stop(): Promise<void>;
  /** SIGKILL corosync (a machine's corosync vanishing) and wait until it is gone. */
  kill(): Promise<void>;
}

export interface CorosyncOptions {
  clusterName?: string;
  nodeid?: number;
  /** the ring0 address of this node; default 127.0.0.1 */
  addr?: string;
  /** every node's [nodeid, addr]; default just this one */
  nodes?: [number, string][];
  /** run in this network namespace (ip netns) in a private mount namespace */
  netns?: string;
  /** extra top-level sections, e.g. 'uidgid {\n uid: nobody\n}' */
  extra?: string;
  /** skip the machine-wide lock (namespaced corosyncs do not collide) */
  noLock?: boolean;
}

export function corosyncConf(dir: string, o: CorosyncOptions = {}): string {
  const nodeid = o.nodeid ?? 1;
  const nodes = o.nodes ?? [[nodeid, o.addr ?? '127.0.0.1']];
  return [
    'totem {',
    '  version: 2',
    `  cluster_name: ${o.clusterName ?? 'sheepdog-test'}`,
    '  transport: knet',
    '  crypto_cipher: none',
    '  crypto_hash: none',
    // fast failure detection for tests
    '  token: 1000',
    '  interface {',
    '    linknumber: 0',
    '  }',
    '}',
    'nodelist {',
    ...nodes.flatMap(([id, addr]) => ['  node {', `    ring0_addr: ${addr}`, `    nodeid: ${id}`, '  }']),
    '}',
    'quorum {',
    '  provider: corosync_votequorum',
    ...(nodes.length === 1 ? ['  expected_votes: 1'] : []),
    '}',
    'logging {',
    '  to_logfile: yes',
    `  logfile: ${path.join(dir, 'corosync.log')}`,
    '  to_stderr: no',
    '  to_syslog: no',
    '  timestamp: on',
    '}',
    'system {',
    `  state_dir: ${dir}`,
    '}',
    o.extra ?? '',
    '',
  ].join('\n');
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Take the machine-wide corosync lock; clean up after a dead owner. */
async function lock(timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(LOCK);
      writeFileSync(path.join(LOCK, 'owner'), String(process.pid));
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let owner = 0;
    let coro = 0;
    try {
      owner = Number(readFileSync(path.join(LOCK, 'owner'), 'utf8'));
      coro = Number(readFileSync(path.join(LOCK, 'corosync'), 'utf8'));
    } catch {
      /* being written */
    }
    if (owner && !alive(owner)) {
      // its owner died without stopping the corosync it started: stop that one
      if (coro && alive(coro)) {
        try { process.kill(coro, 'SIGKILL'); } catch { /* gone */ }
        for (let i = 0; i < 50 && alive(coro); i++) await sleep(100);
      }
      rmSync(LOCK, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for the corosync test lock ${LOCK} (held by pid ${owner})`);
    await sleep(200);
  }
}

const unlock = () => {
  try {
    if (Number(readFileSync(path.join(LOCK, 'owner'), 'utf8')) === process.pid) rmSync(LOCK, { recursive: true, force: true });
  } catch {
    /* not ours */
  }
};

/**
 * `corosync-quorumtool -s` exits 0 once the node is up and quorate, 2 when
 * it is up without quorum (a node of a larger ring waiting for the others).
 */
export function quorate(netns?: string, orUp = false): boolean {
  const cmd = netns ? ['ip', ['netns', 'exec', netns, 'corosync-quorumtool', '-s']] as const : ['corosync-quorumtool', ['-s']] as const;
  const st = spawnSync(cmd[0], [...cmd[1]], { stdio: 'ignore', timeout: 5000 }).status;
  return st === 0 || (orUp && st === 2);
}

export async function startCorosync(o: CorosyncOptions = {}): Promise<CorosyncServer> {
  if (!hasCorosync()) throw new Error(`${COROSYNC_BIN} is missing: install Debian's corosync package (apt-get install corosync)`);
  const locked = !o.noLock && !o.netns;
  if (locked) await lock(10 * 60_000);
  let proc: ChildProcess | undefined;
  try {
    if (!o.netns && quorate()) {
      // A corosync these tests did not start (a system one, say) is already
      // up, and a second cannot run beside it: use that one, leave it be.
      process.stderr.write('test: using the corosync already running on this machine\n');
      const release = async () => { if (locked) unlock(); };
      return { config: '/etc/corosync/corosync.conf', output: () => '', stop: release, kill: release };
    }
    const tmp = await tmpDir({ unsafeCleanup: true, prefix: 'corosync-' });
    const config = path.join(tmp.path, 'corosync.conf');
    await fsp.writeFile(config, corosyncConf(tmp.path, o));
    let out = '';
    if (o.netns) {
      // a private mount namespace with its own /run, for corosync's pid file
      const script = `mount --make-rprivate / && mount -t tmpfs tmpfs /run && exec ${COROSYNC_BIN} -f -c ${config}`;
      proc = spawn('ip', ['netns', 'exec', o.netns, 'unshare', '-m', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'], cwd: tmp.path });
    } else {
      proc = spawn(COROSYNC_BIN, ['-f', '-c', config], { stdio: ['ignore', 'pipe', 'pipe'], cwd: tmp.path });
    }
    const p = proc;
    p.stdout!.on('data', (b) => (out += b));
    p.stderr!.on('data', (b) => (out += b));
    let dead = false;
    const gone = new Promise<void>((resolve) => {
      p.once('close', () => { dead = true; resolve(); });
      p.once('error', (e) => { out += `spawn failed: ${e.message}\n`; dead = true; resolve(); });
    });
    if (locked && p.pid) writeFileSync(path.join(LOCK, 'corosync'), String(p.pid));
    const output = () => {
      let log = '';
      try { log = readFileSync(path.join(tmp.path, 'corosync.log'), 'utf8'); } catch { /* not yet */ }
      return out + log;
    };
    const stop = async () => {
      if (!dead && p.pid !== undefined) {
        try { process.kill(p.pid, 'SIGTERM'); } catch { /* gone */ }
        const t = setTimeout(() => { try { process.kill(p.pid!, 'SIGKILL'); } catch { /* gone */ } }, 5000);
        await gone;
        clearTimeout(t);
      }
      await tmp.cleanup().catch(() => undefined);
      if (locked) unlock();
    };
    const kill = async () => {
      if (!dead && p.pid !== undefined) {
        try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
        await gone;
      }
    };
    const end = Date.now() + 30_000;
    // a lone node is ready when quorate; a node of a larger ring once it is up
    const multi = (o.nodes?.length ?? 1) > 1;
    while (!quorate(o.netns, multi)) {
      if (dead) {
        await stop();
        throw new Error(`corosync exited during startup:\n${output()}`);
      }
      if (Date.now() > end) {
        await stop();
        throw new Error(`corosync did not become ready in 30 s:\n${output()}`);
      }
      await sleep(100);
    }
    return { config, output, stop, kill };
  } catch (e) {
    if (locked && !proc) unlock();
    throw e;
  }
}

// ------------------------------------------------------------ several nodes

export interface TestNet {
  /** the node namespaces, node i (1-based) at index i-1 */
  names: string[];
  /** ring0 address of node i */
  addr(i: number): string;
  destroy(): void;
}

const ipCmd = (args: string[]) => {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr || r.error}`);
};

/** Can this process make network namespaces (root, iproute2, unshare)? */
export function canNetns(): boolean {
  if (process.getuid?.() !== 0 || !existsSync('/usr/bin/unshare')) return false;
  const probe = `sdprobe${process.pid}`;
  if (spawnSync('ip', ['netns', 'add', probe], { stdio: 'ignore' }).status !== 0) return false;
  spawnSync('ip', ['netns', 'del', probe], { stdio: 'ignore' });
  return true;
}

/**
 * n test hosts, each in its own network namespace with one address
 * 10.231.0.i/24 on a bridge that lives in one more namespace: nothing
 * outside these namespaces is reachable or touched.
 */
export function makeTestNet(n: number): TestNet {
  const tag = `sd${process.pid % 100000}`;
  const br = `${tag}br`;
  const names = [...Array(n)].map((_, i) => `${tag}n${i + 1}`);
  const destroy = () => {
    for (const ns of [...names, br]) {
      // end what still runs in it (only our own test processes live there)
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout?.split(/\s+/).filter(Boolean) ?? [];
      for (const p of pids) { try { process.kill(Number(p), 'SIGKILL'); } catch { /* gone */ } }
      spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    }
  };
  destroy();
  try {
    ipCmd(['netns', 'add', br]);
    ipCmd(['-n', br, 'link', 'add', 'br0', 'type', 'bridge']);
    ipCmd(['-n', br, 'link', 'set', 'br0', 'up']);
    names.forEach((ns, i) => {
      const v = `v${i + 1}${tag}`;
      ipCmd(['netns', 'add', ns]);
      ipCmd(['-n', br, 'link', 'add', v, 'type', 'veth', 'peer', 'name', 'e0', 'netns', ns]);
      ipCmd(['-n', br, 'link', 'set', v, 'master', 'br0', 'up']);
      ipCmd(['-n', ns, 'addr', 'add', `10.231.0.${i + 1}/24`, 'dev', 'e0']);
      ipCmd(['-n', ns, 'link', 'set', 'e0', 'up']);
      ipCmd(['-n', ns, 'link', 'set', 'lo', 'up']);
    });
  } catch (e) {
    destroy();
    throw e;
  }
  return { names, addr: (i) => `10.231.0.${i}`, destroy };
}
