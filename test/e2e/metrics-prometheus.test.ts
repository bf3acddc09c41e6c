// sheep --metrics against Debian's real Prometheus: three sheep (one with an
// NBD listener) serve /metrics, `promtool check metrics` accepts what each
// serves, a Prometheus server scrapes them every second, and its HTTP API
// answers with what the cluster did: members and epoch per node, NBD and
// sheepdog requests by kind, bytes, store objects, and recovery after a
// fourth node joins.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startCluster, runCollie, stopAll, freePort, waitFor, ClusterHandle, ROOT, run, SHEEP_BIN } from '../helpers/cluster.js';
import { tool, have } from '../helpers/nbd.js';
import { requirePrereq } from '../helpers/prereq.js';
import { sample } from '../helpers/metrics.js';

requirePrereq(!have('prometheus') ? "Debian's prometheus is not installed (apt-get install prometheus)"
  : !have('promtool') && 'promtool is not installed (it comes with Debian\'s prometheus)');

const MB = 1 << 20;

async function scrape(port: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return r.text();
}

describe('sheep --metrics with a real Prometheus', () => {
  let c: ClusterHandle;
  const mports: number[] = [];
  let nbdPort: number;
  let prom: ChildProcess | undefined;
  let promPort: number;
  let promLog = '';
  let tmp: string;

  const query = async (q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> => {
    const r = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(q)}`);
    const j = await r.json() as { status: string; data: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] } };
    expect(j.status, JSON.stringify(j)).toBe('success');
    return j.data.result;
  };
  const scalar = async (q: string) => {
    const r = await query(q);
    return r.length ? Number(r[0].value[1]) : undefined;
  };

  beforeAll(async () => {
    for (let i = 0; i < 4; i++) mports.push(await freePort());
    nbdPort = await freePort();
    c = await startCluster(3, {
      args: (i) => ['-z', String(i), '--metrics', `127.0.0.1:${mports[i]}`, ...(i === 0 ? ['--nbd', `127.0.0.1:${nbdPort}`] : [])],
    });
    const port = c.nodes[0].port;
    expect((await runCollie(['cluster', 'format', '--copies=3'], { port })).code).toBe(0);
    expect((await runCollie(['vdi', 'create', 'm', '64M'], { port })).code).toBe(0);
    // four 1 MiB NBD writes and reads, one sheepdog-protocol write
    const io = await tool('qemu-io', ['-f', 'raw',
      ...[0, 1, 2, 3].flatMap((i) => ['-c', `write -P ${i + 1} ${i * 8}M 1M`]),
      ...[0, 1, 2, 3].flatMap((i) => ['-c', `read -P ${i + 1} ${i * 8}M 1M`]),
      `nbd://127.0.0.1:${nbdPort}/m`]);
    expect(io.code, io.stderr).toBe(0);
    expect((await runCollie(['vdi', 'write', 'm', String(40 * MB), '4096'], { port, input: Buffer.alloc(4096, 9) })).code).toBe(0);

    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'sheep-prom-'));
    promPort = await freePort();
    await fsp.writeFile(path.join(tmp, 'prometheus.yml'), [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: sheep',
      '    static_configs:',
      `      - targets: [${mports.map((p) => `'127.0.0.1:${p}'`).join(', ')}]`,
      '',
    ].join('\n'));
    const chk = await tool('promtool', ['check', 'config', path.join(tmp, 'prometheus.yml')]);
    expect(chk.code, chk.stdout + chk.stderr).toBe(0);
    prom = spawn('prometheus', [
      `--config.file=${path.join(tmp, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(tmp, 'data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    prom.stdout!.on('data', (b) => (promLog += b));
    prom.stderr!.on('data', (b) => (promLog += b));
    await waitFor(async () => (await fetch(`http://127.0.0.1:${promPort}/-/ready`)).ok, 30_000, 'prometheus to be ready');
  }, 120_000);

  afterAll(async () => {
    if (prom && prom.exitCode === null) {
      const gone = new Promise((r) => prom!.once('exit', r));
      prom.kill('SIGTERM');
      await gone;
    }
    await stopAll();
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('every node serves exposition text that promtool accepts', async () => {
    for (let i = 0; i < 3; i++) {
      const text = await scrape(mports[i]);
      const r = await tool('promtool', ['check', 'metrics'], { input: text });
      expect(r.code, `node ${i}: ${r.stdout}${r.stderr}`).toBe(0);
      expect(sample(text, 'sheep_cluster_members')).toBe(3);
      expect(sample(text, 'sheep_cluster_copies')).toBe(3);
      expect(sample(text, 'sheep_store_objects')).toBeGreaterThan(0);
      expect(sample(text, 'sheep_store_free_bytes')).toBeGreaterThan(0);
      expect(sample(text, 'sheep_requests_in_flight{protocol="sheepdog"}')).toBe(0);
      expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds \d/m);
      // sync mode: every node journals (256 MiB by default) the writes it stores
      expect(sample(text, 'sheep_journal_size_bytes')).toBeGreaterThan(200 * MB);
      expect(sample(text, 'sheep_journal_records_total')).toBeGreaterThan(0);
      expect(sample(text, 'sheep_journal_batches_total')).toBeGreaterThan(0);
      expect(sample(text, 'sheep_journal_batches_total')!).toBeLessThanOrEqual(sample(text, 'sheep_journal_records_total')!);
    }
    const t0 = await scrape(mports[0]);
    // qemu-io: 4 writes, 4 reads, and the flush before it closes
    expect(sample(t0, 'sheep_nbd_requests_total{command="write"}')).toBe(4);
    expect(sample(t0, 'sheep_nbd_requests_total{command="read"}')).toBe(4);
    expect(sample(t0, 'sheep_nbd_request_duration_seconds_count{command="write"}')).toBe(4);
    expect(sample(t0, 'sheep_nbd_request_duration_seconds_bucket{le="+Inf",command="write"}')).toBe(4);
    expect(sample(t0, 'sheep_nbd_request_errors_total{command="write"}')).toBe(0);
    expect(sample(t0, 'sheep_received_bytes_total{protocol="nbd"}')).toBe(4 * MB);
    expect(sample(t0, 'sheep_sent_bytes_total{protocol="nbd"}')).toBe(4 * MB);
    expect(sample(t0, 'sheep_requests_total{opcode="NEW_VDI"}')).toBe(1);
    // the node the writes came in on sent them to its two peers
    const t1 = await scrape(mports[1]);
    expect(sample(t1, 'sheep_received_bytes_total{protocol="sheepdog"}')).toBeGreaterThanOrEqual(4 * MB + 4096);
    expect(sample(t1, 'sheep_nbd_requests_total{command="write"}')).toBeUndefined();
  });

  it('Prometheus scrapes all three nodes and answers queries about them', async () => {
    await waitFor(async () => (await scalar('count(up{job="sheep"} == 1)')) === 3, 30_000, `three targets up: ${promLog}`);
    const members = await query('sheep_cluster_members');
    expect(members.map((r) => [r.metric.instance, r.value[1]]).sort()).toEqual(mports.slice(0, 3).map((p) => [`127.0.0.1:${p}`, '3']).sort());
    const epochs = await query('sheep_epoch');
    expect(new Set(epochs.map((r) => r.value[1])).size).toBe(1);
    expect(await scalar('sum(sheep_nbd_requests_total{command=~"read|write"})')).toBe(8);
    expect(await scalar(`sum(sheep_received_bytes_total{protocol="nbd",instance="127.0.0.1:${mports[0]}"})`)).toBe(4 * MB);
    // every data object on all three nodes (copies=3); each holds the same objects
    const objs = await query('sheep_store_objects');
    expect(objs).toHaveLength(3);
    expect(new Set(objs.map((r) => r.value[1])).size).toBe(1);
    expect(Number(objs[0].value[1])).toBeGreaterThanOrEqual(6);
  }, 60_000);

  it('a fourth node joining shows as a new epoch, four members and recovered objects', async () => {
    const before = Number((await query('max(sheep_epoch)'))[0].value[1]);
    await c.add({ args: ['-z', '3', '--metrics', `127.0.0.1:${mports[3]}`] });
    await waitFor(async () => (await scalar('count(up{job="sheep"} == 1)')) === 4, 30_000, 'four targets up');
    await waitFor(async () => (await scalar('min(sheep_cluster_members)')) === 4, 30_000, 'every node to see four members');
    expect(await scalar('min(sheep_epoch)')).toBe(before + 1);
    await waitFor(async () => (await scalar(`sum(sheep_recovery_objects_total{instance="127.0.0.1:${mports[3]}",how="fetched"})`))! > 0, 30_000, 'the new node to fetch objects');
    await waitFor(async () => (await scalar('max(sheep_recovery_active)')) === 0, 30_000, 'recovery to end');
  }, 90_000);

  it('a malformed --metrics is a usage error that starts nothing', async () => {
    for (const bad of ['foo', '127.0.0.1:', '0', '70000', '[::1]']) {
      const r = await run(SHEEP_BIN, ['--metrics', bad, '-f', path.join(tmp, 'never')]);
      expect(r.code).toBe(64);
      expect(r.stderr).toContain(`sheep: Invalid metrics address '${bad}' (expected [ADDR:]PORT)`);
    }
    await expect(fsp.access(path.join(tmp, 'never'))).rejects.toThrow();
  });

  it('every query of the Grafana dashboard is valid PromQL over series the nodes export', async () => {
    const dash = JSON.parse(await fsp.readFile(path.join(ROOT, 'deploy/grafana/sheepdog-dashboard.json'), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
    expect(dash.panels.length).toBeGreaterThan(10);
    const names = new Set<string>();
    for (const text of await Promise.all(mports.map((p) => scrape(p)))) {
      for (const m of text.matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
        names.add(m[1]);
        if (m[2] === 'histogram') for (const sfx of ['_bucket', '_sum', '_count']) names.add(m[1] + sfx);
      }
    }
    for (const panel of dash.panels) {
      for (const t of panel.targets) {
        const expr = t.expr.replaceAll('$__rate_interval', '1m').replaceAll('$instance', '.*');
        for (const m of expr.matchAll(/\b((?:sheep|nodejs)_[a-z0-9_]+)\b/g)) expect(names, `${panel.title}: ${m[1]}`).toContain(m[1]);
        await query(expr); // status success: Prometheus parsed and ran it
      }
    }
  });
});
