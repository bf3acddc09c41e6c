// Prometheus metrics (sheep --metrics [ADDR:]PORT, served at /metrics).
//
// The data path pays only for what must be counted as it happens: a
// request's counter, its latency bucket and its bytes, through children
// looked up once per opcode or NBD command (no label hashing per request),
// and nothing at all while --metrics is off (`metrics` is undefined and the
// hooks are one `if`). Everything else - epoch, members, store, disk,
// recovery, object cache - is read from the daemon's state when Prometheus
// scrapes, but for recovered objects, which recovery counts as it goes, and
// whose rate is sampled once a second.
import * as http from 'node:http';
import { performance } from 'node:perf_hooks';
import client from 'prom-client';
import { opName, Res } from '@sheepdog/common';
import type { Sheep } from './sheep.js';
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

interface OpChildren {
  count: client.Counter.Internal;
  errors: client.Counter.Internal;
  latency: client.Histogram.Internal<string>;
}

/** A request's start, kept on the request's own handle object (NBD). */
export interface Timed {
  mT0?: number;
  mCmd?: number;
}

export class SheepMetrics {
  readonly registry = new client.Registry();
  private server?: http.Server;
  private readonly sd: OpChildren[] = [];
  private readonly nbd: OpChildren[] = [];
  private sdInflight = 0;
  private nbdInflight = 0;
  private readonly bytesIn: { sd: client.Counter.Internal; nbd: client.Counter.Internal };
  private readonly bytesOut: { sd: client.Counter.Internal; nbd: client.Counter.Internal };
  private readonly sdCount: client.Counter<'opcode'>;
  private readonly sdErrors: client.Counter<'opcode'>;
  private readonly sdLatency: client.Histogram<'opcode'>;
  private readonly nbdCount: client.Counter<'command'>;
  private readonly nbdErrors: client.Counter<'command'>;
  private readonly nbdLatency: client.Histogram<'command'>;
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
    this.sdCount = new client.Counter({ name: 'sheep_requests_total', help: 'Sheepdog protocol requests answered, by opcode', labelNames: ['opcode'], registers });
    this.sdErrors = new client.Counter({ name: 'sheep_request_errors_total', help: 'Sheepdog protocol requests answered with a result other than SUCCESS, by opcode', labelNames: ['opcode'], registers });
    this.sdLatency = new client.Histogram({ name: 'sheep_request_duration_seconds', help: 'Time from a Sheepdog protocol request\'s arrival to its answer, by opcode', labelNames: ['opcode'], buckets: LATENCY_BUCKETS, registers });
    this.nbdCount = new client.Counter({ name: 'sheep_nbd_requests_total', help: 'NBD commands answered, by command', labelNames: ['command'], registers });
    this.nbdErrors = new client.Counter({ name: 'sheep_nbd_request_errors_total', help: 'NBD commands answered with an error, by command', labelNames: ['command'], registers });
    this.nbdLatency = new client.Histogram({ name: 'sheep_nbd_request_duration_seconds', help: 'Time from an NBD command\'s arrival to its answer, by command', labelNames: ['command'], buckets: LATENCY_BUCKETS, registers });
    const rx = new client.Counter({ name: 'sheep_received_bytes_total', help: 'Payload bytes received in requests, by protocol (sheepdog, nbd)', labelNames: ['protocol'], registers });
    const tx = new client.Counter({ name: 'sheep_sent_bytes_total', help: 'Payload bytes sent in answers, by protocol (sheepdog, nbd)', labelNames: ['protocol'], registers });
    this.bytesIn = { sd: rx.labels('sheepdog'), nbd: rx.labels('nbd') };
    this.bytesOut = { sd: tx.labels('sheepdog'), nbd: tx.labels('nbd') };
    for (const c of [this.bytesIn, this.bytesOut]) { c.sd.inc(0); c.nbd.inc(0); }

    const self = this;
    const s = sheep;
    new client.Gauge({
      name: 'sheep_requests_in_flight', help: 'Requests received and not yet answered, by protocol', labelNames: ['protocol'], registers,
      collect() { this.set({ protocol: 'sheepdog' }, self.sdInflight); this.set({ protocol: 'nbd' }, self.nbdInflight); },
    });
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
    if (payload) this.bytesIn.sd.inc(payload);
    return performance.now();
  }

  /** A Sheepdog request started at t0 is answered with `sent` payload bytes. */
  sdDone(opcode: number, t0: number, result: number, sent: number): void {
    this.sdInflight--;
    const c = this.sd[opcode] ??= this.children(this.sdCount, this.sdErrors, this.sdLatency, opName(opcode).startsWith('UNKNOWN') ? 'UNKNOWN' : opName(opcode));
    c.count.inc();
    if (result !== Res.SUCCESS) c.errors.inc();
    c.latency.observe((performance.now() - t0) / 1000);
    if (sent) this.bytesOut.sd.inc(sent);
  }

  /** An NBD command arrived (write payload bytes, for writes). */
  nbdStart(h: Timed, cmd: number, payload: number): void {
    this.nbdInflight++;
    h.mT0 = performance.now();
    h.mCmd = cmd;
    if (payload) this.bytesIn.nbd.inc(payload);
  }

  /** The NBD command on handle h is answered (errno 0: success) with `sent` data bytes. */
  nbdDone(h: Timed, errno: number, sent: number): void {
    if (h.mT0 === undefined) return;
    this.nbdInflight--;
    const cmd = h.mCmd!;
    const c = this.nbd[cmd] ??= this.children(this.nbdCount, this.nbdErrors, this.nbdLatency, NBD_COMMANDS[cmd] ?? 'unknown');
    c.count.inc();
    if (errno) c.errors.inc();
    c.latency.observe((performance.now() - h.mT0) / 1000);
    if (sent) this.bytesOut.nbd.inc(sent);
    h.mT0 = undefined;
  }

  private children<L extends string>(count: client.Counter<L>, errors: client.Counter<L>, latency: client.Histogram<L>, label: string): OpChildren {
    const c = { count: count.labels(label), errors: errors.labels(label), latency: latency.labels(label) };
    c.errors.inc(0); // a series from the first request on, so rate() sees the first error
    return c;
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
