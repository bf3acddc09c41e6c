// The churn simulator: real sheep processes on loopback, a seeded random
// schedule of failures (kill -9 and restart, clean stop and rejoin, new
// empty nodes, whole-cluster kill -9, cluster shutdown, SIGSTOP pauses,
// ZooKeeper restarts) under writers and readers on the sheepdog protocol
// and NBD, snapshots, clones, deletes and resizes; every read is checked
// against a model of every acknowledged write (model.ts), and at the end,
// once every node is back and recovery has finished: every VDI present,
// every byte as the model says, every object on exactly the nodes the
// placement names, and the same epoch history everywhere.
//
// A failure prints the seed and where the operation log is; --replay LOG
// runs the same schedule of failures again.
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fsp, mkdtempSync, writeFileSync, appendFileSync, existsSync, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  SheepClient, Op, Flag, Res, ClusterFlag, timestamp64, decodeNodes, VnodeRing, openVdi, VdiIO, Inode,
  vidToVdiOid, vidToDataOid, oidToHex, decodeRecoveryState, SD_INODE_SIZE, encodeFixedString, SheepdogError,
  resultMessage, isDataObj, oidToVid,
} from '@sheepdog/common';
import { DiskModel, SECTOR, Mismatch, sectorBytes } from './model.js';
import { RawConn, NBD } from '../helpers/nbd-client.js';
import { freePort } from '../helpers/cluster.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SHEEP = path.join(ROOT, 'sheep/bin/sheep.js');
const COLLIE = path.join(ROOT, 'collie/bin/collie.js');
const MB = 1 << 20;

export interface ChaosOptions {
  seed: number;
  /** Minutes of failures (the check at the end comes on top). */
  minutes: number;
  driver: 'local' | 'zookeeper';
  /** A log written by an earlier run: its failures are replayed in order. */
  replay?: string;
  /** Where logs go (default: a temporary directory). */
  outDir?: string;
  /** Print progress. */
  verbose?: boolean;
}

export interface ChaosReport {
  seed: number;
  driver: string;
  nodes: number;
  copies: number;
  zones: number;
  writes: number;
  acked: number;
  reads: number;
  checkedBytes: number;
  faults: Record<string, number>;
  adminOps: Record<string, number>;
  findings: string[];
  logFile: string;
  outDir: string;
}

class Rng {
  private s: number;
  constructor(seed: number) { this.s = (seed >>> 0) || 0x9e3779b9; }
  next(): number {
    // mulberry32
    let t = (this.s += 0x6d2b79f5);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number { return Math.floor(this.next() * n); }
  range(a: number, b: number): number { return a + this.int(b - a + 1); }
  pick<T>(a: T[]): T { return a[this.int(a.length)]; }
  chance(p: number): boolean { return this.next() < p; }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Node {
  id: number;
  port: number;
  nbdPort: number;
  dir: string;
  zone: number;
  proc?: ChildProcess;
  exited?: Promise<void>;
  paused: boolean;
  /** Members of the cluster (it was formatted with, or joined it). */
  member: boolean;
}

interface Vdi {
  name: string;
  vid: number;
  model: DiskModel;
  copies: number;
  snapshots: { tag: string; model: DiskModel }[];
  deleted: boolean;
  /** A writer is busy with it (snapshots wait). */
  quiet?: Promise<void>;
  busy: Set<number>;
  clone: boolean;
  /**
   * Byte ranges of writes that were never acknowledged (failed, or cut by a
   * crash): such a write may have created its copy-on-write object before the
   * index update that would refer to it was lost with it. Such an object is
   * unreferenced garbage, as in upstream; anywhere else it is a leak.
   */
  unacked: [number, number][];
}

type Fault =
  | { t: 'kill9'; node: number }
  | { t: 'stop'; node: number }
  | { t: 'restart'; node: number }
  | { t: 'add' }
  | { t: 'pause'; node: number; ms: number }
  | { t: 'crash_all' }
  | { t: 'shutdown_all' }
  | { t: 'zk_restart' }
  | { t: 'snapshot'; vdi: number }
  | { t: 'clone'; vdi: number }
  | { t: 'delete'; vdi: number }
  | { t: 'resize'; vdi: number };

/** A restartable standalone ZooKeeper on 127.0.0.1, its data kept across restarts. */
class ZooKeeper {
  proc?: ChildProcess;
  port = 0;
  private gone?: Promise<void>;
  constructor(private readonly dir: string) {}
  async start(): Promise<void> {
    if (!this.port) this.port = await freePort();
    const cfg = path.join(this.dir, 'zoo.cfg');
    writeFileSync(cfg, [
      'tickTime=200', `dataDir=${path.join(this.dir, 'data')}`, `clientPort=${this.port}`, 'clientPortAddress=127.0.0.1',
      'minSessionTimeout=400', 'maxSessionTimeout=10000', 'admin.enableServer=false', '4lw.commands.whitelist=ruok,srvr', 'maxClientCnxns=0', '',
    ].join('\n'));
    const jars = ['/usr/share/java/zookeeper.jar', '/usr/share/java/slf4j-simple.jar'];
    for (const j of jars) if (!existsSync(j)) throw new Error(`${j} is missing: install Debian's zookeeper package`);
    const p = spawn('java', ['-Xmx256m', '-XX:+UseSerialGC', '-cp', jars.join(':'), 'org.apache.zookeeper.server.ZooKeeperServerMain', cfg], {
      stdio: ['ignore', 'ignore', 'ignore'], cwd: this.dir,
    });
    this.proc = p;
    this.gone = new Promise((r) => p.once('close', () => r()));
    const end = Date.now() + 30_000;
    while (Date.now() < end) {
      if (await new Promise<boolean>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: this.port });
        s.setTimeout(500, () => s.destroy());
        let out = '';
        s.once('connect', () => s.write('ruok'));
        s.on('data', (b) => (out += b));
        s.once('close', () => resolve(out === 'imok'));
        s.once('error', () => resolve(false));
      })) return;
      await sleep(100);
    }
    throw new Error('ZooKeeper did not start');
  }
  async stop(): Promise<void> {
    if (this.proc?.pid) try { process.kill(this.proc.pid, 'SIGKILL'); } catch { /* gone */ }
    await this.gone;
    this.proc = undefined;
  }
}

/** Cleanups of the runs in progress (the CLI runs them when it is stopped). */
export const running = new Set<() => Promise<void>>();

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const rng = new Rng(o.seed);
  const frng = new Rng(o.seed ^ 0x5eed);
  const outDir = o.outDir ?? mkdtempSync(path.join(os.tmpdir(), `chaos-${o.seed}-`));
  await fsp.mkdir(outDir, { recursive: true });
  // node directories of another run would make nodes of another cluster
  if ((await fsp.readdir(outDir)).length) throw new Error(`${outDir} is not empty: give an empty or new directory`);
  const logFile = path.join(outDir, 'ops.log');
  const replay: Fault[] | undefined = o.replay
    ? readFileSync(o.replay, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).filter((e) => e.fault).map((e) => e.fault)
    : undefined;
  const t0 = Date.now();
  const say = (s: string) => {
    const line = `${((Date.now() - t0) / 1000).toFixed(1).padStart(7)}s ${s}`;
    appendFileSync(logFile, line + '\n');
    if (o.verbose) console.log(line);
  };
  const record = (fault: Fault) => appendFileSync(logFile, JSON.stringify({ at: Date.now() - t0, fault }) + '\n');
  const findings: string[] = [];
  const finding = (s: string) => {
    if (findings.length < 50) findings.push(s);
    say(`FINDING: ${s}`);
  };

  // a replay takes the topology from the log, and draws as the run did, so
  // that what is drawn after it (VDIs, writers) comes out the same too
  const logged = replay ? readFileSync(o.replay!, 'utf8') : '';
  const fromLog = (k: string): number | undefined => {
    const m = logged.match(new RegExp(`^# ${k} (\\d+)$`, 'm'));
    return m ? Number(m[1]) : undefined;
  };
  const drawnNodes = rng.range(3, 6);
  const nNodes = fromLog('nodes') ?? drawnNodes;
  const drawnZones = Math.max(2, Math.min(nNodes, rng.range(2, nNodes)));
  const zonesNr = fromLog('zones') ?? drawnZones;
  const drawnCopies = Math.max(1, Math.min(zonesNr, rng.range(1, 3)));
  const copies = fromLog('copies') ?? drawnCopies;
  // odd seeds run the nodes in sync mode (the write-ahead journal's paths), even ones with -n;
  // not drawn from rng, so that earlier seeds still make the same choices
  const sync = replay ? /^# sync 1$/m.test(logged) : o.seed % 2 === 1;
  writeFileSync(logFile, `# seed ${o.seed}\n# nodes ${nNodes}\n# driver ${o.driver}\n# copies ${copies}\n# zones ${zonesNr}\n# sync ${sync ? 1 : 0}\n`);
  say(`seed ${o.seed}: ${nNodes} nodes in ${zonesNr} zones, copies=${copies}, driver ${o.driver}, ${sync ? 'sync (journal)' : 'nosync'}; out ${outDir}`);

  let zk: ZooKeeper | undefined;
  let spec = `local:chaos${process.pid}-${o.seed}-${Date.now() % 100000}`;
  if (o.driver === 'zookeeper') {
    zk = new ZooKeeper(path.join(outDir, 'zk'));
    await fsp.mkdir(path.join(outDir, 'zk'), { recursive: true });
    await zk.start();
    spec = `zookeeper:127.0.0.1:${zk.port}/chaos${o.seed},timeout=2000`;
  }

  const nodes: Node[] = [];
  const newNode = async (zone: number): Promise<Node> => {
    const id = nodes.length;
    const n: Node = { id, port: await freePort(), nbdPort: await freePort(), dir: path.join(outDir, `node${id}`), zone, paused: false, member: false };
    await fsp.mkdir(n.dir, { recursive: true });
    nodes.push(n);
    return n;
  };
  const startNode = (n: Node) => {
    if (n.proc) return;
    const p = spawn(process.execPath, [SHEEP, '-f', '-b', '127.0.0.1', '-p', String(n.port), '--nbd', `127.0.0.1:${n.nbdPort}`, '-c', spec, '-z', String(n.zone), ...(sync ? [] : ['-n']), '-l', 'level=debug', n.dir], {
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    n.proc = p;
    n.paused = false;
    n.exited = new Promise((r) => p.once('close', (code) => {
      // our signals end it with no code; a node that stops by itself (a port taken, say) is worth a line
      if (code) say(`node ${n.id} (port ${n.port}, NBD ${n.nbdPort}) exited with code ${code}: see ${path.join(n.dir, 'sheep.log')}`);
      r();
    }));
    void n.exited.then(() => { if (n.proc === p) n.proc = undefined; });
  };
  const signal = async (n: Node, sig: NodeJS.Signals) => {
    const p = n.proc;
    if (!p?.pid) return;
    if (n.paused && sig !== 'SIGCONT') { try { process.kill(p.pid, 'SIGCONT'); } catch { /* gone */ } n.paused = false; }
    try { process.kill(p.pid, sig); } catch { /* gone */ }
    if (sig === 'SIGKILL' || sig === 'SIGTERM') await Promise.race([n.exited, sleep(20_000)]);
    if (sig === 'SIGTERM' && n.proc === p && p.pid) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } await n.exited; }
  };
  const live = () => nodes.filter((n) => n.proc && !n.paused);
  const client = (n: Node, timeout = 150_000) => new SheepClient({ port: n.port, timeout, connectTimeout: 3000 });
  const req = async (n: Node, f: Parameters<SheepClient['send']>[0], payload?: Buffer, timeout = 30_000) => {
    const c = client(n, timeout);
    try {
      return await c.send(f, payload);
    } finally {
      c.close();
    }
  };
  const collie = (n: Node, args: string[], input?: string) => new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const p = spawn(process.execPath, [COLLIE, ...args, '-p', String(n.port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b) => (out += b));
    p.stderr.on('data', (b) => (err += b));
    const t = setTimeout(() => p.kill('SIGKILL'), 120_000);
    p.on('close', (code) => { clearTimeout(t); resolve({ code, out, err }); });
    p.stdin.end(input ?? '');
  });
  const status = async (n: Node): Promise<{ result: number; epoch: number } | undefined> => {
    try {
      const r = await req(n, { opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} }, undefined, 3000);
      return { result: r.rsp.result, epoch: r.rsp.epoch };
    } catch {
      return undefined;
    }
  };

  // every node and ZooKeeper go with the run, however it ends (a harness
  // killed or failing must not leave a cluster running behind it)
  let finished = false;
  const cleanup = async () => {
    for (const n of nodes) if (n.paused && n.proc?.pid) { try { process.kill(n.proc.pid, 'SIGCONT'); } catch { /* gone */ } n.paused = false; }
    await Promise.all(nodes.map((n) => signal(n, 'SIGKILL')));
    await zk?.stop();
  };
  running.add(cleanup);
  // a run that outlives its time by far is stuck: say so, and stop its cluster (its requests then fail)
  const watchdog = setTimeout(() => {
    if (finished) return;
    finding(`the run is stuck: still going ${o.minutes + 15} minutes after its start`);
    void cleanup();
  }, (o.minutes + 15) * 60_000);
  watchdog.unref();
  let writes = 0;
  let acked = 0;
  let reads = 0;
  let checkedBytes = 0;
  const faults: Record<string, number> = {};
  const adminOps: Record<string, number> = {};
  try {
    // ---- the cluster ---------------------------------------------------------
    for (let i = 0; i < nNodes; i++) await newNode(i % zonesNr);
    nodes.forEach(startNode);
    await waitUntil(async () => {
      const r = await req(nodes[0], { opcode: Op.GET_NODE_LIST, dataLength: 1 << 20 }).catch(() => undefined);
      return !!r && decodeNodes(r.data).length === nNodes;
    }, 60_000, 'all nodes to join');
    const fmt = await req(nodes[0], { opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES } }, Buffer.from('plain\0'));
    if (fmt.rsp.result !== Res.SUCCESS) throw new Error(`format failed: ${resultMessage(fmt.rsp.result)}`);
    for (const n of nodes) n.member = true;

    const vdis: Vdi[] = [];
    const createVdi = async (name: string, size: number, vcopies: number, via: Node): Promise<Vdi> => {
      const r = await req(via, { opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(size), copies: vcopies } }, encodeFixedString(name, 256));
      if (r.rsp.result !== Res.SUCCESS) throw new Error(`create ${name}: ${resultMessage(r.rsp.result)}`);
      const v: Vdi = { name, vid: r.rsp.vdi.vdiId, model: new DiskModel(size), copies: vcopies, snapshots: [], deleted: false, busy: new Set(), clone: false, unacked: [] };
      vdis.push(v);
      return v;
    };
    for (let i = 0; i < 3; i++) await createVdi(`v${i}`, 32 * MB, rng.chance(0.3) ? Math.max(1, Math.min(zonesNr, rng.range(1, 3))) : 0, nodes[0]);
    say(`formatted; VDIs ${vdis.map((v) => `${v.name}(${v.vid.toString(16)}, copies ${v.copies || copies})`).join(', ')}`);

    // ---- writers and readers ---------------------------------------------------
    let stop = false;
    let wid = 0;
    const checkRead = (v: Vdi, model: DiskModel, off: number, data: Buffer, what: string) => {
      const m: Mismatch | undefined = model.check(off, data);
      checkedBytes += data.length;
      if (m) finding(`${what}: ${v.name} sector ${m.sector} (offset ${m.sector * SECTOR}) holds write ${m.saw} (-1: nobody's bytes), expected one of ${m.expected.join(',')}`);
    };
    const isFatal = (e: unknown) => e instanceof SheepdogError && (e.result === Res.NO_VDI || e.result === Res.NO_OBJ);

    /** One writer per VDI at a time, over the sheepdog protocol (as QEMU) or NBD (as qemu-img). */
    const writer = async (k: number) => {
      while (!stop) {
        const v = vdis[k];
        if (!v || v.deleted) return;
        const via = live();
        if (!via.length) { await sleep(500); continue; }
        const n = rng.pick(via);
        const nbd = rng.chance(0.4);
        try {
          if (nbd) await nbdSession(v, n);
          else await protoSession(v, n);
        } catch (e) {
          if (isFatal(e) && !v.deleted) finding(`${v.name} via ${n.port}: ${(e as Error).message}`);
          if ((e as { code?: string }).code === 'ETIMEDOUT' && !stop) finding(`a request to ${v.name} via ${n.port} hung for 150 s`);
          await sleep(200 + rng.int(800));
        }
      }
    };

    const pickRange = (v: Vdi): [number, number] | undefined => {
      for (let tries = 0; tries < 20; tries++) {
        const len = SECTOR * rng.pick([1, 8, 8, 64, 256, 2048]);
        const off = SECTOR * rng.int((v.model.size - len) / SECTOR);
        let free = true;
        for (let s = off / SECTOR; s < (off + len) / SECTOR; s++) if (v.busy.has(s)) { free = false; break; }
        if (free) return [off, len];
      }
      return undefined;
    };
    const hold = (v: Vdi, off: number, len: number, on: boolean) => {
      for (let s = off / SECTOR; s < (off + len) / SECTOR; s++) (on ? v.busy.add(s) : v.busy.delete(s));
    };
    const payload = (id: number, off: number, len: number) => {
      const b = Buffer.alloc(len);
      for (let i = 0; i < len / SECTOR; i++) sectorBytes(id, off / SECTOR + i, b, i * SECTOR);
      return b;
    };

    /** A session of QEMU-style I/O on one node until the session's budget of requests is spent or it fails. */
    const protoSession = async (v: Vdi, n: Node) => {
      const c = client(n);
      let vio: VdiIO;
      try {
        vio = await openVdi(c, v.name, { cacheFlags: Flag.CMD_DIRECT });
      } catch (e) {
        c.close();
        throw annotate(e, 'open');
      }
      const budget = 20 + rng.int(80);
      try {
        let inflight: Promise<void>[] = [];
        for (let i = 0; i < budget && !stop && !v.deleted && !v.quiet; i++) {
          if (rng.chance(0.3)) {
            // a read of a quiet range
            const r = pickRange(v);
            if (!r) continue;
            const [off, len] = r;
            hold(v, off, len, true);
            inflight.push(vio.read(off, len).then((d) => { reads++; checkRead(v, v.model, off, d, `read via ${n.port}`); }, (e) => { throw annotate(e, `read ${off}+${len}`); }).finally(() => hold(v, off, len, false)));
          } else {
            const r = pickRange(v);
            if (!r) continue;
            const [off, len] = r;
            const id = ++wid;
            hold(v, off, len, true);
            v.model.begin(off, len, id);
            writes++;
            inflight.push(vio.write(off, payload(id, off, len)).then(() => { acked++; v.model.ack(off, len, id); }, (e) => { v.unacked.push([off, len]); throw annotate(e, `write ${off}+${len} (object ${Math.floor(off / (4 * MB))})`); }).finally(() => hold(v, off, len, false)));
          }
          if (inflight.length >= 4) {
            await settled(inflight);
            inflight = [];
          }
        }
        await settled(inflight);
      } finally {
        c.close();
      }
    };

    const nbdSession = async (v: Vdi, n: Node) => {
      const conn = new RawConn(n.nbdPort);
      try {
        await conn.hello();
        const g = await conn.go(v.name);
        if ('error' in g) throw new Error(`NBD export ${v.name} on ${n.port}: error ${g.error}`);
        const budget = 20 + rng.int(60);
        for (let i = 0; i < budget && !stop && !v.deleted && !v.quiet; i++) {
          const r = pickRange(v);
          if (!r) continue;
          const [off, len] = r;
          if (off + len > Number(g.size)) continue;
          hold(v, off, len, true);
          try {
            if (rng.chance(0.3)) {
              const x = await conn.cmd(NBD.CMD.READ, off, len);
              if (x.error) throw new Error(`NBD read error ${x.error}`);
              reads++;
              checkRead(v, v.model, off, x.data!, `NBD read via ${n.port}`);
            } else {
              const id = ++wid;
              v.model.begin(off, len, id);
              writes++;
              const x = await conn.cmd(NBD.CMD.WRITE, off, len, payload(id, off, len), rng.chance(0.2) ? NBD.FLAG.FUA : 0)
                .catch((e) => { v.unacked.push([off, len]); throw e; });
              if (x.error) {
                v.unacked.push([off, len]);
                throw new Error(`NBD write error ${x.error}`);
              }
              acked++;
              v.model.ack(off, len, id);
            }
          } finally {
            hold(v, off, len, false);
          }
        }
      } finally {
        conn.close();
      }
    };

    const writers = vdis.map((_, k) => writer(k));

    // ---- failures and administration -------------------------------------------------
    const restartLater = (n: Node, ms: number) => setTimeout(() => { if (!stop && !n.proc) { record({ t: 'restart', node: n.id }); say(`restart node ${n.id}`); startNode(n); } }, ms).unref();
    const quiesce = async (v: Vdi, fn: () => Promise<void>) => {
      let release!: () => void;
      v.quiet = new Promise((r) => (release = r));
      const end = Date.now() + 30_000;
      while (v.busy.size && Date.now() < end) await sleep(50);
      try {
        if (!v.busy.size) await fn();
      } finally {
        v.quiet = undefined;
        release();
      }
    };

    const apply = async (f: Fault) => {
      record(f);
      faults[f.t] = (faults[f.t] ?? 0) + 1;
      const node = 'node' in f ? nodes[f.node] : undefined;
      switch (f.t) {
        case 'kill9':
          say(`kill -9 node ${node!.id}`);
          await signal(node!, 'SIGKILL');
          if (!replay) restartLater(node!, frng.range(500, 12_000));
          return;
        case 'stop':
          say(`stop (clean) node ${node!.id}`);
          await signal(node!, 'SIGTERM');
          if (!replay) restartLater(node!, frng.range(500, 12_000));
          return;
        case 'restart':
          say(`restart node ${node!.id}`);
          startNode(node!);
          return;
        case 'add': {
          const n = await newNode(frng.int(zonesNr));
          n.member = true;
          say(`new empty node ${n.id} (zone ${n.zone})`);
          startNode(n);
          return;
        }
        case 'pause': {
          const n = node!;
          if (!n.proc?.pid) return;
          say(`SIGSTOP node ${n.id} for ${f.ms} ms`);
          n.paused = true;
          try { process.kill(n.proc.pid, 'SIGSTOP'); } catch { /* gone */ }
          setTimeout(() => { if (n.proc?.pid && n.paused) { try { process.kill(n.proc.pid, 'SIGCONT'); } catch { /* gone */ } } n.paused = false; }, f.ms).unref();
          return;
        }
        case 'crash_all':
          say('kill -9 every node, then start them all at once');
          await Promise.all(nodes.map((n) => signal(n, 'SIGKILL')));
          nodes.filter((n) => n.member).forEach(startNode);
          return;
        case 'shutdown_all': {
          const n = live()[0];
          if (!n) return;
          say(`collie cluster shutdown via node ${n.id}, then start them all`);
          await collie(n, ['cluster', 'shutdown']);
          await Promise.all(nodes.map((x) => Promise.race([x.exited, sleep(15_000)])));
          await Promise.all(nodes.map((x) => signal(x, 'SIGKILL')));
          nodes.filter((x) => x.member).forEach(startNode);
          return;
        }
        case 'zk_restart':
          if (!zk) return;
          say('restart ZooKeeper');
          await zk.stop();
          await sleep(frng.range(200, 3000));
          await zk.start();
          return;
        case 'snapshot': {
          const v = vdis[f.vdi];
          const n = live()[0];
          if (!v || v.deleted || v.clone || !n) return;
          await quiesce(v, async () => {
            const tag = `s${v.snapshots.length}`;
            const r = await collie(n, ['vdi', 'snapshot', '-s', tag, v.name]);
            say(`snapshot ${v.name} as ${tag}: exit ${r.code} ${r.err.trim()}`);
            if (r.code === 0) {
              v.snapshots.push({ tag, model: v.model.clone() });
              adminOps.snapshot = (adminOps.snapshot ?? 0) + 1;
            }
            // on failure the snapshot may or may not exist: the name is not reused
            else v.snapshots.push({ tag, model: undefined as unknown as DiskModel });
          });
          return;
        }
        case 'clone': {
          const v = vdis[f.vdi];
          const n = live()[0];
          const snap = v?.snapshots.filter((s) => s.model).at(-1);
          if (!v || !snap || !n) return;
          const name = `${v.name}c${vdis.length}`;
          const r = await collie(n, ['vdi', 'clone', '-s', snap.tag, v.name, name]);
          say(`clone ${v.name}:${snap.tag} as ${name}: exit ${r.code} ${r.err.trim()}`);
          if (r.code === 0) {
            const info = await req(n, { opcode: Op.GET_VDI_INFO, flags: Flag.CMD_WRITE }, Buffer.concat([encodeFixedString(name, 256), encodeFixedString('', 256)])).catch(() => undefined);
            if (info?.rsp.result === Res.SUCCESS) {
              const c: Vdi = { name, vid: info.rsp.vdi.vdiId, model: snap.model.clone(), copies: v.copies, snapshots: [], deleted: false, busy: new Set(), clone: true, unacked: [] };
              vdis.push(c);
              writers.push(writer(vdis.length - 1));
              adminOps.clone = (adminOps.clone ?? 0) + 1;
            }
          }
          return;
        }
        case 'delete': {
          const v = vdis[f.vdi];
          const n = live()[0];
          if (!v || v.deleted || !v.clone || !n) return;
          await quiesce(v, async () => {
            v.deleted = true;
            // dog's vdi delete exits 0 even when it failed (and says so on
            // stderr): such a delete may or may not have happened, so it is
            // tried again until it says nothing, or that the VDI is gone
            let uncertain = false;
            for (let attempt = 0; ; attempt++) {
              const via = live()[0] ?? n;
              const r = await collie(via, ['vdi', 'delete', v.name]);
              const err = r.err.trim();
              say(`delete ${v.name}: exit ${r.code} ${err}`);
              if (r.code === 0 && (err === '' || (attempt > 0 && /No VDI found/.test(err)))) {
                adminOps.delete = (adminOps.delete ?? 0) + 1;
                break;
              }
              if (r.code !== 0) {
                v.deleted = false;
                break;
              }
              // refused at the lookup (the cluster waits for its members, or has halted) by every
              // try so far: nothing was deleted, and the VDI stays (an error, not a finding)
              if (/^Failed to open VDI /.test(err) && !/No VDI found/.test(err) && !uncertain) {
                v.deleted = false;
                break;
              }
              uncertain = true;
              if (attempt === 20) {
                finding(`delete of ${v.name} still fails after 20 tries: ${err}`);
                break;
              }
              await sleep(1000);
            }
          });
          return;
        }
        case 'resize': {
          const v = vdis[f.vdi];
          const n = live()[0];
          if (!v || v.deleted || !n) return;
          const size = v.model.size + 8 * MB;
          await quiesce(v, async () => {
            const r = await collie(n, ['vdi', 'resize', v.name, String(size)]);
            say(`resize ${v.name} to ${size}: exit ${r.code} ${r.err.trim()}`);
            if (r.code === 0) {
              v.model.size = size;
              adminOps.resize = (adminOps.resize ?? 0) + 1;
            }
          });
          return;
        }
      }
    };

    const nextFault = (): Fault => {
      const running = nodes.filter((n) => n.proc);
      const any = () => frng.pick(running.length ? running : nodes).id;
      const r = frng.next();
      const vdiIdx = frng.int(vdis.length);
      if (r < 0.25) return { t: 'kill9', node: any() };
      if (r < 0.38) return { t: 'stop', node: any() };
      if (r < 0.46 && nodes.length < nNodes + 3) return { t: 'add' };
      if (r < 0.54) return { t: 'pause', node: any(), ms: frng.range(500, 4000) };
      if (r < 0.59) return { t: 'crash_all' };
      if (r < 0.63) return { t: 'shutdown_all' };
      if (r < 0.68 && zk) return { t: 'zk_restart' };
      if (r < 0.78) return { t: 'snapshot', vdi: vdiIdx };
      if (r < 0.85) return { t: 'clone', vdi: vdiIdx };
      if (r < 0.92) return { t: 'delete', vdi: vdiIdx };
      return { t: 'resize', vdi: vdiIdx };
    };

    const end = t0 + o.minutes * 60_000;
    if (replay) {
      for (const f of replay) {
        if (Date.now() > end) break;
        await sleep(frng.range(1500, 6000));
        await apply(f).catch((e) => say(`fault ${f.t} failed: ${(e as Error).message}`));
      }
    } else {
      while (Date.now() < end) {
        await sleep(frng.range(1500, 6000));
        if (Date.now() >= end) break;
        await apply(nextFault()).catch((e) => say(`fault failed: ${(e as Error).message}`));
      }
    }

    // ---- heal and check ----------------------------------------------------------
    say('healing: every node back, waiting for recovery');
    stop = true;
    for (const n of nodes) if (n.paused && n.proc?.pid) { try { process.kill(n.proc.pid, 'SIGCONT'); } catch { /* gone */ } n.paused = false; }
    await Promise.all(writers.map((w) => w.catch(() => undefined)));
    nodes.filter((n) => n.member).forEach(startNode);
    const members = () => nodes.filter((n) => n.member);
    // what kept the cluster from counting as healed, last time it was asked (for the finding)
    let unhealed = '';
    const healed = await waitUntil(async () => {
      for (const n of members()) if (!n.proc) startNode(n);
      const st = await Promise.all(members().map(status));
      const bad = members().filter((_, i) => !st[i] || st[i]!.result !== Res.SUCCESS);
      if (bad.length) {
        unhealed = `node(s) ${bad.map((n) => `${n.id} (${st[members().indexOf(n)]?.result ?? 'no answer'})`).join(', ')} not serving`;
        return false;
      }
      const epochs = st.map((x) => x!.epoch);
      if (new Set(epochs).size !== 1) {
        unhealed = `epochs differ: ${members().map((n, i) => `node ${n.id} ${epochs[i]}`).join(', ')}`;
        return false;
      }
      const list = await req(members()[0], { opcode: Op.GET_NODE_LIST, dataLength: 1 << 20 }).catch(() => undefined);
      if (!list || decodeNodes(list.data).length !== members().length) {
        unhealed = `node list of node ${members()[0].id} has ${list ? decodeNodes(list.data).length : '?'} of ${members().length} members`;
        return false;
      }
      for (const n of members()) {
        const r = await req(n, { opcode: Op.STAT_RECOVERY, dataLength: 24 }, undefined, 5000).catch(() => undefined);
        if (!r || decodeRecoveryState(r.data).inRecovery) {
          unhealed = r ? `node ${n.id} still recovering (${JSON.stringify(decodeRecoveryState(r.data), (_, x) => (typeof x === 'bigint' ? String(x) : x))})` : `node ${n.id} does not answer STAT_RECOVERY`;
          return false;
        }
      }
      return true;
    }, 240_000, 'the cluster to heal').then(() => true, (e) => { finding(`never healed: ${(e as Error).message}; last: ${unhealed}`); return false; });

    if (healed) {
      // every VDI and snapshot there, every byte as the model says
      const via = members();
      const list = await collie(via[0], ['vdi', 'list', '-r']);
      for (const v of vdis) {
        const listed = new RegExp(`^[=c] ${v.name} 0 `, 'm').test(list.out);
        if (v.deleted && listed) finding(`${v.name} was deleted but is listed`);
        if (!v.deleted && !listed) finding(`${v.name} is not listed: ${list.out}${list.err}`);
        for (const s of v.snapshots) {
          if (s.model && !new RegExp(`^s ${v.name} \\d+ .* ${s.tag} \\d+$`, 'm').test(list.out)) finding(`snapshot ${v.name}:${s.tag} is not listed`);
        }
      }
      const readAll = async (n: Node, name: string, model: DiskModel, what: string, tag = '') => {
        const c = client(n, 120_000);
        try {
          const vio = await openVdi(c, name, { tag: tag || undefined, cacheFlags: Flag.CMD_DIRECT });
          for (let off = 0; off < model.size; off += 4 * MB) {
            const len = Math.min(4 * MB, model.size - off);
            const d = await vio.read(off, len);
            reads++;
            checkRead({ name: tag ? `${name}:${tag}` : name } as Vdi, model, off, d, what);
          }
        } catch (e) {
          finding(`${what}: ${name}${tag ? ':' + tag : ''}: ${(e as Error).message}`);
        } finally {
          c.close();
        }
      };
      for (const v of vdis.filter((x) => !x.deleted)) {
        for (const n of [rng.pick(via), rng.pick(via)]) await readAll(n, v.name, v.model, `final read via ${n.port}`);
        for (const s of v.snapshots.filter((x) => x.model)) await readAll(rng.pick(via), v.name, s.model, 'final snapshot read', s.tag);
      }
      // placement: every object of every VDI on exactly the nodes named, nothing anywhere else
      const misplaced = await waitUntil(async () => (await placementProblems(nodes, members, req, vdis)) ?? true, 120_000, 'placement')
        .then(() => undefined, async () => placementProblems(nodes, members, req, vdis));
      if (misplaced) finding(`placement: ${misplaced}`);
      // the same, whole epoch history everywhere
      const infos = await Promise.all(via.map((n) => collie(n, ['cluster', 'info'])));
      const table = (t: string) => t.split('\n').filter((l) => /^\d{4}-\d\d-\d\d /.test(l)).join('\n');
      for (let i = 1; i < infos.length; i++) if (table(infos[i].out) !== table(infos[0].out)) finding(`epoch history of node ${via[i].id} differs from node ${via[0].id}`);
      for (const l of table(infos[0].out).split('\n')) if (/\[\]/.test(l)) finding(`an epoch with no members in the history: ${l}`);
    }

    say(`done: ${writes} writes (${acked} acknowledged), ${reads} reads, ${(checkedBytes / MB).toFixed(0)} MiB checked, faults ${JSON.stringify(faults)}, admin ${JSON.stringify(adminOps)}, ${findings.length} finding(s)`);
  } catch (e) {
    finding(`the run stopped: ${(e as Error).stack ?? e}`);
  } finally {
    finished = true;
    clearTimeout(watchdog);
    await cleanup();
    running.delete(cleanup);
  }
  return {
    seed: o.seed, driver: o.driver, nodes: nNodes, copies, zones: zonesNr, writes, acked, reads, checkedBytes, faults, adminOps, findings, logFile, outDir,
  };
}

/** The same error, its message saying what was being done (a SheepdogError keeps its result). */
function annotate(e: unknown, what: string): unknown {
  if (e instanceof Error) e.message = `${what}: ${e.message}`;
  return e;
}

/** Promise.all that waits for every promise before it rejects (none is left unobserved). */
async function settled(ps: Promise<unknown>[]): Promise<void> {
  const rs = await Promise.allSettled(ps);
  const bad = rs.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
  if (bad) throw bad.reason;
}

async function waitUntil(fn: () => Promise<boolean | string>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await fn().catch(() => false);
    if (ok === true) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(500);
  }
}

/** undefined when every object of every VDI is where the placement says and nowhere else. */
async function placementProblems(
  nodes: Node[], members: () => Node[],
  req: (n: Node, f: Parameters<SheepClient['send']>[0], payload?: Buffer, timeout?: number) => Promise<Awaited<ReturnType<SheepClient['send']>>>,
  vdis: Vdi[],
): Promise<string | undefined> {
  const m = members();
  const list = await req(m[0], { opcode: Op.GET_NODE_LIST, dataLength: 1 << 20 });
  const ring = new VnodeRing(decodeNodes(list.data));
  const where = new Map<bigint, number[]>();
  // copies set aside until recovery checks them: not placed, but not lost either
  const aside = new Map<bigint, number[]>();
  for (const n of nodes) {
    for (const f of await fsp.readdir(path.join(n.dir, 'obj', '.stale')).catch(() => [] as string[])) {
      if (!/^[0-9a-f]{16}$/.test(f)) continue;
      const oid = BigInt('0x' + f);
      aside.set(oid, [...(aside.get(oid) ?? []), n.port]);
    }
  }
  for (const n of nodes) {
    const files = await fsp.readdir(path.join(n.dir, 'obj')).catch(() => [] as string[]);
    for (const f of files) {
      if (!/^[0-9a-f]{16}$/.test(f)) continue;
      const oid = BigInt('0x' + f);
      const w = where.get(oid) ?? [];
      w.push(n.port);
      where.set(oid, w);
    }
  }
  // the objects of every live VDI and snapshot, from the inodes themselves
  const wanted = new Map<bigint, number>();
  const named = new Map<number, { name: string; objectSize: number }>();
  const bitmap = await req(m[0], { opcode: Op.READ_VDIS, dataLength: 1 << 21 });
  for (let vid = 1; vid < bitmap.data.length * 8; vid++) {
    if (!(bitmap.data[vid >> 3] & (1 << (vid & 7)))) continue;
    const r = await req(m[0], { opcode: Op.READ_OBJ, dataLength: SD_INODE_SIZE, obj: { oid: vidToVdiOid(vid) } }, undefined, 60_000);
    if (r.rsp.result !== Res.SUCCESS) return `inode of ${vid.toString(16)}: ${resultMessage(r.rsp.result)}`;
    const ino = Inode.decode(r.data);
    const copies = ino.header.nrCopies;
    wanted.set(vidToVdiOid(vid), copies);
    named.set(vid, { name: ino.header.name, objectSize: 2 ** ino.header.blockSizeShift });
    if (ino.header.name === '') continue; // deleted: its inode stays, its data went (or lives on where others refer to it)
    // what the index refers to, owned by this VDI or shared from an ancestor
    for (let i = 0; i < ino.dataVdiId.length; i++) if (ino.dataVdiId[i]) wanted.set(vidToDataOid(ino.dataVdiId[i], i), copies);
  }
  for (const [oid, copies] of wanted) {
    const want = ring.placeOid(oid, copies).map((n) => n.port).sort();
    const have = (where.get(oid) ?? []).sort();
    if (JSON.stringify(want) !== JSON.stringify(have)) {
      const a = aside.get(oid);
      return `${oidToHex(oid)} on ${have.join(',') || 'no node'}${a ? ` (set aside on ${a.join(',')})` : ''} but placement says ${want.join(',')}`;
    }
  }
  for (const [oid, on] of where) {
    if (!wanted.has(oid) && isDataObj(oid)) {
      const owner = named.get(oidToVid(oid));
      const v = owner && owner.name !== '' ? vdis.find((x) => x.name === owner.name && !x.deleted) : undefined;
      const idx = Number(oid & 0xffffffffn);
      const os = owner?.objectSize ?? 0;
      if (v && v.unacked.some(([off, len]) => off < (idx + 1) * os && off + len > idx * os)) continue;
      // a data object nobody references (a leftover of a delete or a COW): not lost data, but a leak
      return `${oidToHex(oid)} on ${on.join(',')} belongs to no VDI`;
    }
  }
  return undefined;
}
