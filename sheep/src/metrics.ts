// Prometheus metrics (sheep --metrics [ADDR:]PORT, served at /metrics).
//
// The data path pays only for what must be counted as it happens: a
// request's count, its latency bucket and its bytes, added to plain numbers
// kept per opcode or NBD command (prom-client's own counters hash their
// labels on every call: 0.7 us a request, measured) and turned into
// Prometheus series when scraped; nothing at all while --metrics is off
// (`metrics` is undefined and the hooks are one `if`). Everything else - epoch, members, store, disk,
// recovery, object cache - is read from the daemon's state when Prometheus
// scrapes, but for recovered objects, which recovery counts as it goes, and
// whose rate is sampled once a second.
import * as http from 'node:http';
import { performance } from 'node:perf_hooks';
import client from 'prom-client';
import { opName, Res } from '@sheepdog/common';
import type { Sheep } from './sheep.js';
import type { Journal } from './store/journal.js';
import { log } from './log.js';

/** The hooks' view: undefined unless sheep runs with --metrics. */
export let metrics: SheepMetrics | undefined;

const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const NBD_COMMANDS = ['read', 'write', 'disc', 'flush', 'trim', 'cache', 'write_zeroes', 'block_status', 'resize'];
/** The count of recovered objects is sampled at this interval for the rate. */
const RECOVERY_SAMPLE_MS = 1000;
/** The rate is over this many samples. */
const RATE_WINDOW = 10;
/** Counting objects and their bytes walks the store: not more often than this. */
const STORE_SCAN_MS = 10_000;

/** One opcode's (or NBD command's) requests: counts, and latencies in LATENCY_BUCKETS (not cumulative). */
class Tally {
  count = 0;
  errors = 0;
  sum = 0;
  readonly buckets = new Float64Array(LATENCY_BUCKETS.length + 1);
  constructor(readonly label: string) {}
  add(seconds: number, failed: boolean): void {
    this.count++;
    if (failed) this.errors++;
    this.sum += seconds;
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]) i++;
    this.buckets[i]++;
  }
}

type Sample = { value: number; labels?: Record<string, string | number>; metricName?: string };

/** A metric the registry asks for its samples when scraped (see Tally). */
function scraped(registry: client.Registry, name: string, help: string, type: 'counter' | 'gauge' | 'histogram', values: () => Sample[]): void {
  registry.registerMetric({
    name, help, type,
    get: async () => ({ name, help, type, values: values(), aggregator: 'sum' }),
  } as unknown as client.Metric);
}

/** counter, errors and histogram series of a family of tallies. */
function tallySeries(registry: client.Registry, prefix: string, label: string, what: string, tallies: () => Tally[]): void {
  scraped(registry, `${prefix}requests_total`, `${what} answered, by ${label}`, 'counter',
    () => tallies().map((t) => ({ value: t.count, labels: { [label]: t.label } })));
  scraped(registry, `${prefix}request_errors_total`, `${what} answered with an error, by ${label}`, 'counter',
    () => tallies().map((t) => ({ value: t.errors, labels: { [label]: t.label } })));
  const hname = `${prefix}request_duration_seconds`;
  scraped(registry, hname, `Time from arrival to answer of ${what}, by ${label}`, 'histogram', () => tallies().flatMap((t) => {
    const out: Sample[] = [];
    let acc = 0;
    LATENCY_BUCKETS.forEach((le, i) => {
      acc += t.buckets[i];
      out.push({ metricName: `${hname}_bucket`, value: acc, labels: { le, [label]: t.label } });
    });
    out.push({ metricName: `${hname}_bucket`, value: t.count, labels: { le: '+Inf', [label]: t.label } });
    out.push({ metricName: `${hname}_sum`, value: t.sum, labels: { [label]: t.label } });
    out.push({ metricName: `${hname}_count`, value: t.count, labels: { [label]: t.label } });
    return out;
  }));
}

/** A request's start, kept on the request's own handle object (NBD). */
export interface Timed {
  mT0?: number;
  mCmd?: number;
}

export class SheepMetrics {
  readonly registry = new client.Registry();
  private server?: http.Server;
  private readonly sd: Tally[] = [];
  private readonly nbd: Tally[] = [];
  private sdInflight = 0;
  private nbdInflight = 0;
  private readonly bytes = { sdIn: 0, sdOut: 0, nbdIn: 0, nbdOut: 0 };
  /** NBD exports some connection holds open. */
  private exportsOpen = 0;
  /** NBD write payloads that went from the socket to a pipe, never through memory. */
  private readonly spliced = { writes: 0, bytes: 0 };
  private recoveredCount = 0;
  private recoveredHow!: { fetched: client.Counter.Internal; current: client.Counter.Internal };
  private samples: number[] = [];
  private sampler?: NodeJS.Timeout;
  private storeScan?: { at: number; objects: number; used: number; size: number; free: number };
  private storeScanning?: Promise<void>;

  constructor(private readonly sheep: Sheep) {
    const registers = [this.registry];
    // process CPU, memory, file descriptors, GC, and event-loop lag
    // (nodejs_eventloop_lag_*: a libuv histogram, nothing per request)
    client.collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
    // gauges named like counters: promtool check metrics rejects them
    for (const n of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(n);
    const reg = this.registry;
    const present = (t: Tally[]) => t.filter(Boolean);
    tallySeries(reg, 'sheep_', 'opcode', 'Sheepdog protocol requests', () => present(this.sd));
    tallySeries(reg, 'sheep_nbd_', 'command', 'NBD commands', () => present(this.nbd));
    const by = (sd: number, nbd: number): Sample[] => [{ value: sd, labels: { protocol: 'sheepdog' } }, { value: nbd, labels: { protocol: 'nbd' } }];
    scraped(reg, 'sheep_received_bytes_total', 'Payload bytes received in requests, by protocol (sheepdog, nbd)', 'counter', () => by(this.bytes.sdIn, this.bytes.nbdIn));
    scraped(reg, 'sheep_nbd_spliced_writes_total', 'NBD write payloads moved from the socket into a pipe and spliced into the object file, without a copy through memory', 'counter', () => [{ value: this.spliced.writes }]);
    scraped(reg, 'sheep_nbd_spliced_bytes_total', 'Bytes of those spliced NBD write payloads', 'counter', () => [{ value: this.spliced.bytes }]);
    scraped(reg, 'sheep_sent_bytes_total', 'Payload bytes sent in answers, by protocol (sheepdog, nbd)', 'counter', () => by(this.bytes.sdOut, this.bytes.nbdOut));

    const self = this;
    const s = sheep;
    new client.Gauge({
      name: 'sheep_requests_in_flight', help: 'Requests received and not yet answered, by protocol', labelNames: ['protocol'], registers,
      collect() { this.set({ protocol: 'sheepdog' }, self.sdInflight); this.set({ protocol: 'nbd' }, self.nbdInflight); },
    });
    new client.Gauge({ name: 'sheep_nbd_exports_open', help: 'NBD exports (VDIs) that connections hold open', registers, collect() { this.set(self.exportsOpen); } });
    new client.Gauge({ name: 'sheep_epoch', help: 'The cluster epoch this node is in', registers, collect() { this.set(s.epochNr); } });
    new client.Gauge({ name: 'sheep_cluster_members', help: 'Members of the current epoch', registers, collect() { this.set(s.members.length); } });
    new client.Gauge({
      name: 'sheep_cluster_status', help: 'The node\'s view of the cluster status (1 for the current one)', labelNames: ['status'], registers,
      collect() { this.reset(); this.set({ status: s.status }, 1); },
    });
    new client.Gauge({ name: 'sheep_cluster_copies', help: 'Copies per object the cluster was formatted with (0: not formatted)', registers, collect() { this.set(s.config.copies ?? 0); } });

    const store = (field: 'objects' | 'used' | 'size' | 'free') => async function (this: client.Gauge) {
      await self.scanStore();
      this.set(self.storeScan?.[field] ?? 0);
    };
    new client.Gauge({ name: 'sheep_store_objects', help: 'Objects held in this node\'s store (counted at most every 10 s)', registers, collect: store('objects') });
    new client.Gauge({ name: 'sheep_store_used_bytes', help: 'Disk bytes used by this node\'s objects (counted at most every 10 s)', registers, collect: store('used') });
    new client.Gauge({ name: 'sheep_store_capacity_bytes', help: 'Size of the file system holding the store', registers, collect: store('size') });
    new client.Gauge({ name: 'sheep_store_free_bytes', help: 'Bytes free for unprivileged use on the file system holding the store', registers, collect: store('free') });

    new client.Gauge({ name: 'sheep_recovery_active', help: '1 while this node recovers objects', registers, collect() { this.set(s.recovery.state.inRecovery ? 1 : 0); } });
    new client.Gauge({ name: 'sheep_recovery_objects_done', help: 'Objects the current recovery has finished', registers, collect() { this.set(Number(s.recovery.state.nrFinished)); } });
    new client.Gauge({ name: 'sheep_recovery_objects_planned', help: 'Objects the current recovery has to look at', registers, collect() { this.set(Number(s.recovery.state.nrTotal)); } });
    new client.Gauge({ name: 'sheep_recovery_objects_waiting', help: 'Objects of the current epoch waiting for nodes that are away', registers, collect() { this.set(s.recovery.waiting); } });
    const done = new client.Counter({
      name: 'sheep_recovery_objects_total', labelNames: ['how'], registers,
      help: 'Objects finished by this node\'s recoveries since it started: how="fetched" copied from another node, how="current" found current here',
    });
    this.recoveredHow = { fetched: done.labels('fetched'), current: done.labels('current') };
    this.recoveredHow.fetched.inc(0);
    this.recoveredHow.current.inc(0);
    new client.Gauge({
      name: 'sheep_recovery_rate_objects_per_second', help: 'Objects finished by recovery per second, over the last 10 s', registers,
      collect() { this.set(self.recoveryRate()); },
    });

    // damage on disk: kept by the daemon whether or not --metrics is on (Sheep.integrity)
    new client.Counter({
      name: 'sheep_damaged_copies_total', labelNames: ['found_by'], registers,
      help: 'Damaged copies (short files, failed block checksums) found on this node\'s disk since it started, by what found them: found_by="read" a read, "recovery" a recovery transfer or comparison, "scrub" a scrub',
      collect() { this.reset(); for (const [by, n] of Object.entries(s.integrity.damaged)) this.inc({ found_by: by }, n); },
    });
    new client.Counter({
      name: 'sheep_repaired_copies_total', registers,
      help: 'Damaged copies on this node replaced with a good copy from another replica since it started',
      collect() { this.reset(); this.inc(s.integrity.repaired); },
    });
    // background deletion (reclaim.ts): every node knows which VDIs wait; the first member reclaims them
    new client.Gauge({ name: 'sheep_reclaim_vdis_pending', help: 'Deleted VDIs whose objects are not all reclaimed yet', registers, collect() { this.set(s.reclaimer.pending().length); } });
    new client.Gauge({
      name: 'sheep_reclaim_objects_pending', help: 'Objects of the deleted VDI this node reclaims now that are still to go (0 on the other nodes)', registers,
      collect() { const p = s.reclaimer.progress; this.set(p ? Math.max(0, p.objects - p.dropped) : 0); },
    });
    new client.Counter({
      name: 'sheep_recovery_fetched_bytes_total', help: 'Bytes of objects recovery fetched from other nodes since this node started', registers,
      collect() { this.reset(); this.inc(s.recovery.bytesFetched); },
    });
    new client.Counter({
      name: 'sheep_recovery_local_bytes_total', registers,
      help: 'Bytes of objects recovery brought up to date from this node\'s own older copies instead of fetching them (farm store: only changed slices cross the network)',
      collect() { this.reset(); this.inc(s.recovery.bytesFoundLocally); },
    });
    new client.Counter({
      name: 'sheep_reclaimed_objects_total', help: 'Objects (references) of deleted VDIs this node has reclaimed since it started', registers,
      collect() { this.reset(); this.inc(s.reclaimer.droppedTotal); },
    });

    // the write-ahead journal (sync mode; all zero without one)
    const journal = () => (s.store as { journal?: Journal }).journal;
    const jCounter = (name: string, help: string, get: (st: Journal['stats']) => number) =>
      new client.Counter({ name, help, registers, collect() { this.reset(); const j = journal(); this.inc(j ? get(j.stats) : 0); } });
    jCounter('sheep_journal_records_total', 'Writes recorded in the journal (each acknowledged once its batch is flushed)', (st) => st.records);
    jCounter('sheep_journal_batches_total', 'Journal flushes (group commits); records_total / batches_total is the records one flush covers', (st) => st.batches);
    jCounter('sheep_journal_flush_seconds_total', 'Time spent writing and flushing journal batches', (st) => st.flushMs / 1000);
    jCounter('sheep_journal_checkpoints_total', 'Checkpoints: object files synced and the journal trimmed', (st) => st.checkpoints);
    jCounter('sheep_journal_checkpoint_seconds_total', 'Time spent in checkpoints', (st) => st.checkpointMs / 1000);
    jCounter('sheep_journal_fallbacks_total', 'Writes that went to their object file with its own flush because the journal could not take them', (st) => st.fallbacks);
    new client.Gauge({ name: 'sheep_journal_used_bytes', help: 'Journal bytes holding records not yet trimmed', registers, collect() { this.set(journal()?.usedBytes ?? 0); } });
    new client.Gauge({ name: 'sheep_journal_size_bytes', help: 'The journal\'s size (0: no journal: -n, or -j none)', registers, collect() { this.set(journal()?.sizeBytes ?? 0); } });

    const cacheGauge = (name: string, help: string, get: (c: NonNullable<Sheep['cache']>) => number, counter = false) => {
      const opts = { name, help, registers };
      if (counter) {
        new client.Counter({ ...opts, collect() { this.reset(); if (s.cache) this.inc(get(s.cache)); } });
      } else {
        new client.Gauge({ ...opts, collect() { this.set(s.cache ? get(s.cache) : 0); } });
      }
    };
    cacheGauge('sheep_object_cache_hits_total', 'Object cache reads served from the cache (-w)', (c) => Number(c.hits), true);
    cacheGauge('sheep_object_cache_misses_total', 'Object cache reads that fetched the object from the cluster (-w)', (c) => Number(c.misses), true);
    cacheGauge('sheep_object_cache_dirty_bytes', 'Bytes written into the object cache and not yet flushed to the cluster (-w)', (c) => c.dirtyBytes());
    cacheGauge('sheep_object_cache_used_bytes', 'Bytes the object cache holds (-w)', (c) => Number(c.info().used));
    cacheGauge('sheep_object_cache_size_bytes', 'The object cache\'s size limit (-w; 0: no cache)', (c) => Number(c.info().size));
  }

  // ---- hooks on the request paths --------------------------------------

  /** A Sheepdog request arrived with `payload` bytes; returns its start time. */
  sdStart(payload: number): number {
    this.sdInflight++;
    this.bytes.sdIn += payload;
    return performance.now();
  }

  /** A Sheepdog request started at t0 is answered with `sent` payload bytes. */
  sdDone(opcode: number, t0: number, result: number, sent: number): void {
    this.sdInflight--;
    const t = this.sd[opcode] ??= new Tally(opName(opcode).startsWith('UNKNOWN') ? 'UNKNOWN' : opName(opcode));
    t.add((performance.now() - t0) / 1000, result !== Res.SUCCESS);
    this.bytes.sdOut += sent;
  }

  /** An NBD command arrived (write payload bytes, for writes). */
  nbdStart(h: Timed, cmd: number, payload: number): void {
    this.nbdInflight++;
    h.mT0 = performance.now();
    h.mCmd = cmd;
    this.bytes.nbdIn += payload;
  }

  /** An NBD export was opened (+1) or let go of by its last connection (-1). */
  nbdExports(delta: number): void {
    this.exportsOpen += delta;
  }

  /** An NBD write payload of `bytes` is in its pipe, whole. */
  nbdSpliced(bytes: number): void {
    this.spliced.writes++;
    this.spliced.bytes += bytes;
  }

  /** The NBD command on handle h is answered (errno 0: success) with `sent` data bytes. */
  nbdDone(h: Timed, errno: number, sent: number): void {
    if (h.mT0 === undefined) return;
    this.nbdInflight--;
    const cmd = h.mCmd!;
    // unknown commands share one series: the type is the client's choice of 65536
    const t = this.nbd[cmd < NBD_COMMANDS.length ? cmd : NBD_COMMANDS.length] ??= new Tally(NBD_COMMANDS[cmd] ?? 'unknown');
    t.add((performance.now() - h.mT0) / 1000, errno !== 0);
    this.bytes.nbdOut += sent;
    h.mT0 = undefined;
  }

  // ---- scrape-time state ------------------------------------------------

  /** Recovery finished one object (fetched: copied here from another node). */
  recovered(fetched: boolean): void {
    this.recoveredCount++;
    (fetched ? this.recoveredHow.fetched : this.recoveredHow.current).inc();
  }

  private recoveryRate(): number {
    const s = this.samples;
    if (s.length < 2) return 0;
    return (s[s.length - 1] - s[0]) / ((s.length - 1) * RECOVERY_SAMPLE_MS / 1000);
  }

  private scanStore(): Promise<void> {
    if (this.storeScan && Date.now() - this.storeScan.at < STORE_SCAN_MS) return Promise.resolve();
    this.storeScanning ??= (async () => {
      try {
        const st = this.sheep.store;
        const [objects, u] = await Promise.all([st.list(), st.usage()]);
        this.storeScan = { at: Date.now(), objects: objects.length, used: Number(u.used), size: Number(u.size), free: Number(u.free) };
      } catch (e) {
        log.debug(`metrics: store scan failed: ${(e as Error).message}`);
      }
    })().finally(() => { this.storeScanning = undefined; });
    return this.storeScanning;
  }

  // ---- the endpoint -----------------------------------------------------

  async listen(host: string | undefined, port: number): Promise<number> {
    this.sampler = setInterval(() => {
      this.samples.push(this.recoveredCount);
      if (this.samples.length > RATE_WINDOW + 1) this.samples.shift();
    }, RECOVERY_SAMPLE_MS);
    this.sampler.unref();
    const srv = http.createServer((req, res) => {
      const url = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      } else if (url === '/metrics') {
        this.registry.metrics().then((body) => {
          res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(req.method === 'HEAD' ? undefined : body);
        }, (e) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${(e as Error).message}\n`));
      } else if (url === '/') {
        res.writeHead(200, { 'Content-Type': 'text/plain' }).end('sheep metrics: /metrics\n');
      } else {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      }
    });
    srv.keepAliveTimeout = 65_000; // Prometheus keeps its connection between scrapes
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host, port }, () => { srv.off('error', reject); resolve(); });
    });
    this.server = srv;
    return (srv.address() as import('node:net').AddressInfo).port;
  }

  async close(): Promise<void> {
    clearInterval(this.sampler);
    const srv = this.server;
    if (!srv) return;
    await new Promise<void>((r) => { srv.close(() => r()); srv.closeAllConnections(); });
  }
}

/** Turn metrics on for this process (sheep --metrics). */
export function enableMetrics(sheep: Sheep): SheepMetrics {
  metrics = new SheepMetrics(sheep);
  return metrics;
}
