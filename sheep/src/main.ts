// sheep [options] [DIR]: option parsing, daemonizing, pidfile, signals.
import { Command, CommanderError, Option } from 'commander';
import { promises as fsp, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initLogger, log, LOG_LEVELS, LogLevel, closeLogger } from './log.js';
import { Sheep } from './sheep.js';
import { SheepServer } from './server.js';
import { createDriver } from './cluster/index.js';
import { SHEEP_VERSION } from './version.js';
import { NbdServer } from './nbd/server.js';
import { SheepExports, GatewayBackend } from './nbd/exports.js';
import { S3Server } from './s3/server.js';
import { S3Store } from './s3/store.js';
import { parseCacheOpt, attachCache, CacheBackend } from './cache/index.js';
import { parseJournalOpt, DEFAULT_JOURNAL_MB, MIN_JOURNAL_MB, type JournalOption } from './store/journal.js';
import { fileioStatus } from './store/fileio.js';
import { parseDiskArg } from './store/md.js';
import { INVOKED_AS_ENV, invokedAs, stderrIsJournal } from '@sheepdog/common';
import { enableMetrics, SheepMetrics } from './metrics.js';
import { DEFAULT_SCRUB_RATE } from './scrub.js';
import { NodeBudget, DEFAULT_BUDGET, peerReserve } from './budget.js';
import { AdminAllow } from './access.js';
import { DEFAULT_GUARD } from './guard.js';
import type { ServerLimits } from './server.js';

const EX_USAGE = 64;

interface Parsed {
  dir: string;
  /** md: object disks after the first path (BASE,D1,D2...). */
  disks: string[];
  port: number;
  bindaddr?: string;
  myaddr: string;
  foreground: boolean;
  pidfile?: string;
  logLevel: LogLevel;
  logDir: string;
  cluster: string;
  zone?: number;
  nosync: boolean;
  vnodes?: number;
  gateway: boolean;
  nbd?: { host?: string; port: number };
  s3?: { host?: string; port: number };
  metrics?: { host?: string; port: number };
  scrubInterval: number;
  scrubRate: number;
  cache?: { sizeMB: number; dir?: string; directio: boolean };
  journal?: JournalOption;
  connBudget: number;
  nodeBudget: number;
  adminAllow: AdminAllow;
  maxConnsPerAddr: number;
  requestTimeoutMs: number;
}

/** SIZE with an optional suffix k, M, G (powers of 1024). */
function parseSizeOpt(name: string, min: number) {
  return (v: string) => {
    const m = /^(\d+)([kKmMgG]?)$/.exec(v);
    const n = m ? Number(m[1]) * { '': 1, k: 1024, m: 1 << 20, g: 1 << 30 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'] : NaN;
    if (!m || !(n >= min) || n > 2 ** 46) {
      throw new CommanderError(EX_USAGE, 'sheep.usage', `Invalid ${name} '${v}' (a size such as 64M or 1G, at least ${min >> 20}M)`);
    }
    return n;
  };
}

function parseIntOpt(name: string, min: number, max: number) {
  return (v: string) => {
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
      throw new CommanderError(EX_USAGE, 'sheep.usage', `Invalid ${name} '${v}' (${min}-${max})`);
    }
    return Number(v);
  };
}

/** --nbd / --metrics [ADDR:]PORT (ADDR may be [v6]). */
const parseListenOpt = (what: string) => (v: string): { host?: string; port: number } => {
  const m = /^(?:\[([^\]]+)\]:|([^:]+):)?(\d+)$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) throw new CommanderError(EX_USAGE, 'sheep.usage', `Invalid ${what} address '${v}' (expected [ADDR:]PORT)`);
  return { host: m[1] ?? m[2], port };
};

export function parseArgs(argv: string[]): Parsed {
  const prog = new Command('sheep');
  prog
    .usage('[OPTION]... [PATH[,DISK,...]]')
    .description('Sheepdog storage daemon: stores VDI objects under PATH (default /var/lib/sheepdog) and serves port 7000')
    .argument('[PATH]', 'data directory; as PATH,DISK1,DISK2 with DISKs (comma-separated, no spaces), objects are spread over those directories and PATH keeps the metadata', '/var/lib/sheepdog')
    .option('-p, --port <port>', 'listen port', parseIntOpt('port', 1, 65535), 7000)
    .option('-b, --bindaddr <addr>', 'bind only to this address (default: all)')
    .option('-y, --myaddr <addr>', 'address announced to the cluster (default: bindaddr or 127.0.0.1)')
    .option('-f, --foreground', 'stay in the foreground and log to stderr too', false)
    .option('-P, --pidfile <file>', 'write the daemon pid to this file')
    .option('-l, --log <spec>', "logging: 'level=LEVEL,dir=DIR' (levels: " + LOG_LEVELS.join(', ') + ')')
    .option('-c, --cluster <driver>', "cluster driver: local[:ID] (default, sheep on this machine), zookeeper:HOST:PORT[,...][/ID][,timeout=MS], corosync[:GROUP]", 'local')
    .option('-z, --zone <zone>', 'failure zone of this node (default: from the address)', parseIntOpt('zone', 0, 0xffffffff))
    .option('-n, --nosync', 'do not sync every write to disk (faster, loses acknowledged writes on power loss)', false)
    .option('-j, --journal <spec>', `write-ahead journal of durable writes: 'dir=PATH,size=MB' (default PATH/journal, ${DEFAULT_JOURNAL_MB} MB, at least ${MIN_JOURNAL_MB}; put it on a fast device of its own with dir=), or 'none' (each write syncs its object file); not used with -n`, (v: string) => {
      try { return parseJournalOpt(v); } catch (e) { throw new CommanderError(EX_USAGE, 'sheep.usage', (e as Error).message); }
    })
    .option('-V, --vnodes <count>', 'fixed number of virtual nodes (default: automatic from capacity)', parseIntOpt('vnodes', 1, 65535))
    .option('-g, --gateway', 'gateway only: store no objects', false)
    .option('-w, --cache <spec>', "object cache: 'size=MB[,dir=PATH][,directio]' - write-back cache of VDI objects for the clients of this node (dir defaults to PATH/cache; directio writes cache files with O_DSYNC); flushed on FLUSH_VDI, NBD FLUSH/FUA and before snapshots", (v: string) => {
      try { return parseCacheOpt(v); } catch (e) { throw new CommanderError(EX_USAGE, 'sheep.usage', (e as Error).message); }
    })
    .option('--nbd <[addr:]port>', 'also serve VDIs over NBD on this port (e.g. 10809 or 127.0.0.1:10809); export NAME = VDI, NAME:SNAPID or NAME:TAG = snapshot (read-only)', parseListenOpt('NBD'))
    .option('--s3 <[addr:]port>', 'also serve an S3-compatible HTTP gateway on this port (e.g. 8080 or 127.0.0.1:8080): buckets are VDIs s3/BUCKET, access keys are managed with collie s3 user', parseListenOpt('S3'))
    .option('--metrics <[addr:]port>', 'serve Prometheus metrics over HTTP at /metrics on this port (e.g. 9760 or 127.0.0.1:9760)', parseListenOpt('metrics'))
    .option('--scrub-interval <seconds>', 'read and check every copy this node holds, and compare it with its other replicas, every this many seconds (default 604800, a week; 0: only when collie cluster scrub asks)', parseIntOpt('scrub interval', 0, 365 * 86400), 7 * 86400)
    .option('--scrub-rate <MB/s>', `how fast a scrub reads (default ${DEFAULT_SCRUB_RATE})`, parseIntOpt('scrub rate', 1, 100_000), DEFAULT_SCRUB_RATE)
    .option('--conn-budget <size>', `memory one connection may hold in request payloads and unsent replies (default ${DEFAULT_BUDGET.conn >> 20}M); a request larger than this is refused`, parseSizeOpt('connection budget', 4 << 20), DEFAULT_BUDGET.conn)
    .option('--node-budget <size>', `memory all connections together may hold (default ${DEFAULT_BUDGET.node >> 20}M, a quarter of it kept for replica traffic between sheep)`, parseSizeOpt('node budget', 16 << 20), DEFAULT_BUDGET.node)
    .option('--admin-allow <cidrs>', "addresses besides the cluster members that may send peer and admin requests: CIDR[,CIDR]..., 'loopback' (default) or 'none'", (v: string) => {
      try { return AdminAllow.parse(v); } catch (e) { throw new CommanderError(EX_USAGE, 'sheep.usage', (e as Error).message); }
    })
    .option('--max-conns-per-addr <n>', `connections one client address may hold open on each port (default ${DEFAULT_GUARD.maxPerAddr})`, parseIntOpt('connection limit', 1, 1_000_000), DEFAULT_GUARD.maxPerAddr)
    .option('--request-timeout <seconds>', `close a connection whose request stops arriving halfway for this long (default ${DEFAULT_GUARD.requestTimeoutMs / 1000})`, parseIntOpt('request timeout', 1, 86_400), DEFAULT_GUARD.requestTimeoutMs / 1000)
    .addOption(new Option('--daemon-child').hideHelp())
    .version(`Sheepdog daemon version ${SHEEP_VERSION}`, '-v, --version')
    .helpOption('-h, --help', 'display this help and exit')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  prog.parse(argv, { from: 'user' });
  const o = prog.opts();
  let logLevel: LogLevel = 'info';
  let dir: string;
  let disks: string[];
  try {
    ({ base: dir, disks } = parseDiskArg(prog.processedArgs[0] as string));
  } catch (e) {
    throw new CommanderError(EX_USAGE, 'sheep.usage', `Invalid path: ${(e as Error).message}`);
  }
  let logDir = dir;
  if (o.log) {
    for (const kv of String(o.log).split(',')) {
      const [k, v] = kv.split('=');
      if (k === 'level' && (LOG_LEVELS as readonly string[]).includes(v)) logLevel = v as LogLevel;
      else if (k === 'dir' && v) logDir = path.resolve(v);
      else throw new CommanderError(EX_USAGE, 'sheep.usage', `Invalid log option '${kv}'`);
    }
  }
  if (o.connBudget > o.nodeBudget - peerReserve(o.nodeBudget)) {
    throw new CommanderError(EX_USAGE, 'sheep.usage', `--conn-budget (${o.connBudget}) must be at most three quarters of --node-budget (${o.nodeBudget})`);
  }
  return {
    connBudget: o.connBudget, nodeBudget: o.nodeBudget, adminAllow: o.adminAllow ?? AdminAllow.parse(AdminAllow.DEFAULT),
    maxConnsPerAddr: o.maxConnsPerAddr, requestTimeoutMs: o.requestTimeout * 1000,
    dir, disks, port: o.port, bindaddr: o.bindaddr, myaddr: o.myaddr ?? o.bindaddr ?? '127.0.0.1',
    foreground: o.foreground || !!o.daemonChild, pidfile: o.pidfile ? path.resolve(o.pidfile) : undefined,
    logLevel, logDir, cluster: o.cluster, zone: o.zone, nosync: o.nosync, vnodes: o.vnodes, gateway: o.gateway, nbd: o.nbd, s3: o.s3, metrics: o.metrics, cache: o.cache, journal: o.journal, scrubInterval: o.scrubInterval, scrubRate: o.scrubRate,
  };
}

/** Re-run ourselves detached and wait until the child says it serves. */
function daemonize(argv: string[]): Promise<number> {
  const script = fileURLToPath(new URL('../bin/sheep.js', import.meta.url));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, ...argv, '--daemon-child'], {
      // under systemd the daemon keeps the journal as its stderr (see journal.ts)
      detached: true, stdio: ['ignore', 'ignore', stderrIsJournal() ? 'inherit' : 'ignore', 'ipc'],
      env: { ...process.env, [INVOKED_AS_ENV]: invokedAs('sheep') },
    });
    child.on('message', (m: { ready?: boolean; error?: string; code?: number }) => {
      if (m.error) process.stderr.write(`sheep: ${m.error}\n`);
      child.disconnect();
      child.unref();
      resolve(m.ready ? 0 : m.code ?? 1);
    });
    child.on('exit', (code) => resolve(code || 1));
  });
}

export async function main(argv: string[]): Promise<number> {
  let p: Parsed;
  try {
    p = parseArgs(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return 0;
      if (e.code === 'sheep.usage') process.stderr.write(`sheep: ${e.message}\n`);
      process.stderr.write("Try 'sheep --help' for more information.\n");
      return EX_USAGE;
    }
    throw e;
  }
  const isChild = argv.includes('--daemon-child');
  if (!p.foreground && !isChild) return daemonize(argv);
  const tell = (m: object) => new Promise<void>((resolve) => {
    if (isChild && process.send) process.send(m, undefined, {}, () => resolve());
    else resolve();
  });

  try {
    mkdirSync(p.dir, { recursive: true });
    mkdirSync(p.logDir, { recursive: true });
  } catch (e) {
    const msg = `cannot create ${p.dir}: ${(e as Error).message}`;
    process.stderr.write(`sheep: ${msg}\n`);
    await tell({ error: msg });
    return 1;
  }
  initLogger({ dir: p.logDir, level: p.logLevel, foreground: (p.foreground && !isChild) || (isChild && stderrIsJournal()) });
  let driver;
  try {
    driver = await createDriver(p.cluster);
  } catch (e) {
    process.stderr.write(`sheep: ${(e as Error).message}\n`);
    await tell({ error: (e as Error).message, code: EX_USAGE });
    return EX_USAGE;
  }
  const sheep = new Sheep({
    dir: p.dir, disks: p.disks, host: p.myaddr, port: p.port, zone: p.zone, nosync: p.nosync, vnodes: p.vnodes, gateway: p.gateway, journal: p.journal ? { ...p.journal, dir: p.journal.dir && path.resolve(p.journal.dir) } : undefined,
  }, driver);
  const limits: ServerLimits = {
    budget: new NodeBudget(p.nodeBudget), connBudget: p.connBudget, adminAllow: p.adminAllow,
    guard: { maxPerAddr: p.maxConnsPerAddr, requestTimeoutMs: p.requestTimeoutMs },
  };
  const server = new SheepServer(sheep, limits);
  let nbd: NbdServer | undefined;
  let s3: S3Server | undefined;
  let metricsServer: SheepMetrics | undefined;
  // Set before the port opens: a KILL_NODE or SHUTDOWN that arrives while
  // the node is still starting must still stop it.
  let stopping = false;
  const stop = async (why: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    log.notice(`shutting down (${why})`);
    server.stopListening();
    await nbd?.close();
    await s3?.close();
    await metricsServer?.close();
    // let in-flight replies (e.g. the SHUTDOWN answer) leave first
    await new Promise((r) => setTimeout(r, 100));
    await server.close();
    await sheep.cache?.close(); // write back what the cache holds
    await sheep.close();
    if (p.pidfile) rmSync(p.pidfile, { force: true });
    await closeLogger();
    process.exit(code);
  };
  sheep.onShutdown = (why) => void stop(why);
  sheep.onFatal = (why) => void stop(why, 1);
  try {
    // before the listeners, so the first request is counted
    if (p.metrics) metricsServer = enableMetrics(sheep);
    await sheep.init();
    if (p.cache) await attachCache(sheep, p.cache);
    await server.listen(p.bindaddr, p.port);
    await sheep.join();
    if (p.nbd) {
      nbd = new NbdServer(new SheepExports(sheep, sheep.cache ? () => new CacheBackend(sheep.cache!) : undefined), limits);
      await nbd.listen(p.nbd.host ?? p.bindaddr, p.nbd.port);
    }
    if (p.s3) {
      s3 = new S3Server(new S3Store(sheep, () => (sheep.cache ? new CacheBackend(sheep.cache) : new GatewayBackend(sheep.gw))));
      await s3.listen(p.s3.host ?? p.bindaddr, p.s3.port);
    }
    if (p.metrics) await metricsServer!.listen(p.metrics.host ?? p.bindaddr, p.metrics.port);
    sheep.scrubber.every(p.scrubInterval, p.scrubRate);
  } catch (e) {
    const msg = `failed to start: ${(e as Error).message}`;
    log.err(msg);
    process.stderr.write(`sheep: ${msg}\n`);
    await tell({ error: msg });
    await closeLogger();
    return 1;
  }
  if (p.pidfile) writeFileSync(p.pidfile, `${process.pid}\n`);
  log.notice(`sheep ${SHEEP_VERSION} serving ${p.bindaddr ?? '*'}:${p.port}, data in ${p.dir}`);
  log.info(`file I/O: ${fileioStatus()}`);

  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => undefined);
  // A stray rejected promise must not take the node down; log it loudly.
  process.on('unhandledRejection', (e) => log.err(`unhandled rejection: ${(e as Error)?.stack ?? e}`));
  await tell({ ready: true });
  if (isChild) {
    process.disconnect?.();
  }
  await fsp.access(p.dir);
  return -1; // keep running
}
