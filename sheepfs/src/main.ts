// sheepfs [OPTION]... MOUNTPOINT: options, daemonizing, mount, signals.
//
// By default the command forks a detached child that mounts and serves, and
// returns once the mount is up (or with the child's error), like upstream.
import { Command, CommanderError } from 'commander';
import { spawn, execFile } from 'node:child_process';
import { promises as fsp, constants as fsc, writeFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Fuse from 'fuse-native';
import { stderrIsJournal } from '@sheepdog/common';
import { Cluster } from './sheep.js';
import { SheepFs } from './fs.js';
import * as log from './log.js';

const EX_USAGE = 64;
const CHILD_ENV = 'SHEEPFS_DAEMON_CHILD';

export interface Parsed {
  mountpoint: string;
  address: string;
  port: number;
  foreground: boolean;
  debug: boolean;
  pageCache: boolean;
  objectCache: boolean;
  logFile?: string;
  timeout: number;
  /** -P: write the serving process's pid here once mounted (removed at exit) */
  pidfile?: string;
  /** --nbd HOST:PORT: vdi/NAME/libvirt.xml points there (protocol nbd) */
  nbd?: { host: string; port: number };
}

function usageError(msg: string): never {
  throw new CommanderError(EX_USAGE, 'sheepfs.usage', msg);
}

export function parseArgs(argv: string[]): Parsed {
  const prog = new Command('sheepfs');
  prog
    .usage('[OPTION]... MOUNTPOINT')
    .description('Mount a Sheepdog cluster as files: cluster/, vdi/, volume/, node/ and config/ under MOUNTPOINT')
    .argument('<MOUNTPOINT>', 'an existing empty directory')
    .option('-a, --address <host>', 'address of the sheep to talk to (default 127.0.0.1)')
    .option('-p, --port <port>', 'port of the sheep (default 7000)')
    .option('-f, --foreground', 'stay in the foreground, log to stderr')
    .option('-d, --debug', 'log every request (implies -f)')
    .option('-k, --pagecache', 'use the kernel page cache for volumes (default: direct I/O)')
    .option('-o, --objectcache', "use the sheep's object cache for volume I/O (fsync flushes it)")
    .option('-l, --log <file>', 'log file when daemonized (default /var/log/sheepfs.log, or sheepfs.log in the temp dir)')
    .option('-t, --timeout <seconds>', 'fail a request the cluster has not answered in this many seconds with EIO (default 60)')
    .option('-P, --pidfile <file>', 'write the pid of the process serving the mount to this file once mounted')
    .option('--nbd <host:port>', 'the sheep --nbd listener vdi/NAME/libvirt.xml names (default: the sheepdog protocol to -a/-p)')
    .helpOption('-h, --help', 'display this help and exit')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  prog.parse(argv, { from: 'user' });
  const o = prog.opts();
  const port = String(o.port ?? '7000');
  if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) usageError(`Invalid port '${port}'`);
  const timeout = String(o.timeout ?? '60');
  if (!/^\d+$/.test(timeout) || Number(timeout) < 1) usageError(`Invalid timeout '${timeout}'`);
  let nbd: Parsed['nbd'];
  if (o.nbd !== undefined) {
    const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d+)$/.exec(String(o.nbd));
    const p = m ? Number(m[3]) : NaN;
    if (!m || !(p >= 1 && p <= 65535)) usageError(`Invalid NBD address '${o.nbd}' (expected HOST:PORT)`);
    nbd = { host: m[1] ?? m[2], port: p };
  }
  return {
    nbd,
    pidfile: o.pidfile ? path.resolve(String(o.pidfile)) : undefined,
    mountpoint: path.resolve(prog.processedArgs[0] as string),
    address: String(o.address ?? '127.0.0.1'),
    port: Number(port),
    foreground: Boolean(o.foreground || o.debug),
    debug: Boolean(o.debug),
    pageCache: Boolean(o.pagecache),
    objectCache: Boolean(o.objectcache),
    logFile: o.log ? path.resolve(String(o.log)) : undefined,
    timeout: Number(timeout),
  };
}

/** fusermount3/fusermount -uz, else umount -l (root): the mount goes even if busy. */
export function lazyUnmount(mnt: string): Promise<void> {
  const tries: [string, string[]][] = [['fusermount3', ['-uz', mnt]], ['fusermount', ['-uz', mnt]], ['umount', ['-l', mnt]]];
  return new Promise((resolve, reject) => {
    let last = '';
    const next = (i: number) => {
      if (i >= tries.length) return reject(new Error(`cannot unmount ${mnt}: ${last}`));
      execFile(tries[i][0], tries[i][1], (err, _o, stderr) => {
        if (!err) return resolve();
        last = String(stderr || err.message).trim();
        next(i + 1);
      });
    };
    next(0);
  });
}

async function defaultLogFile(): Promise<string> {
  try {
    await fsp.access('/var/log', fsc.W_OK);
    return '/var/log/sheepfs.log';
  } catch {
    return path.join(os.tmpdir(), 'sheepfs.log');
  }
}

/** Parent side of daemonizing: start the child, wait for "mounted" or its error. */
function daemonize(argv: string[]): Promise<number> {
  return new Promise((resolve) => {
    const script = process.argv[1];
    const child = spawn(process.execPath, [script, ...argv], {
      detached: true,
      // under systemd the daemon keeps the journal as its stderr (see journal.ts)
      stdio: ['ignore', 'ignore', stderrIsJournal() ? 'inherit' : 'ignore', 'ipc'],
      env: { ...process.env, [CHILD_ENV]: '1' },
    });
    let settled = false;
    child.on('message', (m: { ok?: boolean; error?: string }) => {
      if (settled) return;
      settled = true;
      if (m.error) process.stderr.write(`sheepfs: ${m.error}\n`);
      child.disconnect();
      child.unref();
      resolve(m.ok ? 0 : 1);
    });
    child.on('exit', (code) => {
      if (settled) return;
      settled = true;
      process.stderr.write(`sheepfs: daemon exited before mounting (code ${code})\n`);
      resolve(1);
    });
  });
}

export async function main(argv: string[]): Promise<number> {
  let a: Parsed;
  try {
    a = parseArgs(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return 0;
      if (e.code === 'sheepfs.usage') process.stderr.write(`sheepfs: ${e.message}\nTry 'sheepfs --help' for more information.\n`);
      return EX_USAGE;
    }
    throw e;
  }
  const isChild = process.env[CHILD_ENV] === '1';
  if (!a.foreground && !isChild) {
    // check the mount point here so the common mistakes print in the terminal
    try {
      const st = await fsp.stat(a.mountpoint);
      if (!st.isDirectory()) throw new Error(`${a.mountpoint} is not a directory`);
    } catch (e) {
      process.stderr.write(`sheepfs: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? `${a.mountpoint} does not exist` : (e as Error).message}\n`);
      return 1;
    }
    return daemonize(argv);
  }
  log.setDebug(a.debug);
  if (isChild) {
    process.chdir('/'); // paths are absolute by now; do not keep a directory busy
  }
  if (isChild && (a.logFile || !stderrIsJournal())) {
    const file = a.logFile ?? (await defaultLogFile());
    try {
      await log.logToFile(file);
    } catch (e) {
      process.send?.({ error: `cannot open log file ${file}: ${(e as Error).message}` });
      return 1;
    }
  }
  const report = (m: { ok?: boolean; error?: string }) => {
    if (!isChild || !process.send) return;
    process.send(m);
    process.disconnect?.();
  };
  try {
    await serve(a, () => {
      if (a.pidfile) {
        writeFileSync(a.pidfile, `${process.pid}\n`);
        const pidfile = a.pidfile;
        process.on('exit', () => rmSync(pidfile, { force: true }));
      }
      report({ ok: true });
    });
  } catch (e) {
    const msg = (e as Error).message;
    log.error(msg);
    report({ error: msg });
    await log.closeLog();
    return 1;
  }
  return -1; // keep serving
}

/**
 * Exit; the mount is already gone. A log write blocked on a terminal nobody
 * reads would make Node's exit wait for it forever: then die at once instead.
 */
function exitNow(code: number): never {
  if (log.stderrStuck()) process.kill(process.pid, 'SIGKILL');
  process.exit(code);
}

/** Mount and serve until SIGINT/SIGTERM. Resolves once mounted. */
export async function serve(a: Parsed, onMounted: () => void): Promise<void> {
  const cluster = new Cluster(a.address, a.port);
  const sfs = new SheepFs(cluster, { pageCache: a.pageCache, objectCache: a.objectCache, timeoutMs: a.timeout * 1000, nbd: a.nbd });
  try {
    await cluster.client.connect();
  } catch (e) {
    cluster.close();
    throw new Error(`cannot connect to sheep ${a.address}:${a.port}: ${(e as Error).message}`);
  }

  const fuse = new Fuse(a.mountpoint, sfs.ops(), { force: true, timeout: false });
  const opts = [
    `fsname=sheepfs`, 'subtype=sheepfs', 'big_writes', 'max_write=131072', 'max_read=131072',
    // the tree changes under the kernel (vdi/mount, new VDIs, sizes of text files): no caching of names or attributes
    'entry_timeout=0', 'negative_timeout=0', 'attr_timeout=0',
    ...(process.getuid?.() === 0 ? ['allow_other'] : []),
    ...(a.pageCache ? [] : ['direct_io']),
  ];
  fuse._fuseOptions = () => `-o${opts.join(',')}`;
  // fuse-native shells out to `fusermount -uz`, which Debian's fuse3 names fusermount3
  Fuse.unmount = (mnt, cb) => void lazyUnmount(mnt).then(() => cb(null), cb);

  await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(new Error(`cannot mount on ${a.mountpoint}: ${err.message}`)) : resolve())));
  log.info(`mounted sheep ${cluster.address} on ${a.mountpoint} (${a.pageCache ? 'page cache' : 'direct I/O'}, object cache ${a.objectCache ? 'on' : 'off'}, pid ${process.pid})`);

  let stopping = false;
  const stop = async (why: string, code: number) => {
    if (stopping) return;
    stopping = true;
    log.info(`${why}: flushing volumes and unmounting ${a.mountpoint}`);
    const t = setTimeout(() => {
      log.error('unmount did not finish in 30s; exiting');
      void log.closeLog().finally(() => exitNow(code || 1));
    }, 30_000); // flushing every volume's dirty data may take a while on a loaded machine
    await sfs.flushAll();
    await new Promise<void>((resolve) => fuse.unmount((err) => {
      if (err) log.error(`unmount: ${err.message}`);
      resolve();
    }));
    clearTimeout(t);
    cluster.close();
    log.info('unmounted');
    await log.closeLog();
    exitNow(code);
  };
  // `umount MOUNTPOINT` from outside ends the FUSE session, not this process: watch for it
  const escaped = a.mountpoint.replace(/[ \t\n\\]/g, (c) => '\\' + c.charCodeAt(0).toString(8).padStart(3, '0'));
  const watch = setInterval(() => {
    if (stopping) return;
    fsp.readFile('/proc/self/mounts', 'utf8').then(async (m) => {
      if (stopping || m.split('\n').some((l) => l.split(' ')[1] === escaped)) return;
      stopping = true;
      clearInterval(watch);
      log.info(`${a.mountpoint} was unmounted from outside; flushing volumes and exiting`);
      await sfs.flushAll();
      cluster.close();
      await log.closeLog();
      exitNow(0);
    }, () => undefined);
  }, 1000);
  process.on('SIGINT', () => void stop('SIGINT', 0));
  process.on('SIGTERM', () => void stop('SIGTERM', 0));
  process.on('SIGHUP', () => log.info('SIGHUP ignored'));
  process.on('uncaughtException', (e) => {
    log.error(`internal error: ${e.stack ?? e.message}`);
    void stop('internal error', 1);
  });
  process.on('unhandledRejection', (e) => log.error(`unhandled rejection: ${(e as Error)?.stack ?? String(e)}`));
  onMounted();
}
