// NBD throughput: sheep --nbd against nbdkit's file plugin on the same disk,
// same workloads, same run. fio (nbd engine): 4 KiB random read/write at
// QD 32, 1 MiB sequential read/write at QD 8; qemu-img bench: 4 KiB at QD 32
// (sequential offsets). Ratios are sheep / nbdkit.
//
// Every server is started and prefilled first; then each workload runs on
// each server in turn (the order rotating between repeats), after a `sync`,
// so that neither side measures in the other's write-back, and a noisy
// moment hits one workload of every server alike rather than one server's
// whole column. With BENCH_REPEAT > 1 the table shows medians.
//
// Env: BENCH_SECS (default 5), BENCH_REPEAT (1), BENCH_NBD_CONFIGS (comma
// list of "1x1-nosync,1x1-sync,3x3-nosync"; default all), BENCH_NBD_SIZE_MB
// (256), BENCH_NBD_ONLY (comma list of workload keys, e.g.
// "randread-4k,write-1m"), BENCH_NBD_REF=0 (skip nbdkit, for quick A/B of
// sheep alone).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { tmpdir } from 'node:os';
import { SheepClient, Op, Flag, encodeFixedString } from '@sheepdog/common';
import { startSheep, cleanup, format, freePort, waitPort } from './lib.mjs';

const SECS = Number(process.env.BENCH_SECS ?? 5);
const SIZE = Number(process.env.BENCH_NBD_SIZE_MB ?? 256) << 20;
const CONFIGS = (process.env.BENCH_NBD_CONFIGS ?? '1x1-nosync,1x1-sync,3x3-nosync').split(',');
const REPEAT = Math.max(1, Number(process.env.BENCH_REPEAT ?? 1));

const have = (c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0;
for (const t of ['fio', 'nbdkit', 'qemu-img']) {
  if (!have(t)) { console.log(`nbd bench: ${t} is not installed (apt-get install fio nbdkit qemu-utils); skipped`); process.exit(0); }
}

const WORKLOADS = [
  { key: 'randread-4k', args: ['--rw=randread', '--bs=4k', '--iodepth=32'], unit: 'IOPS' },
  { key: 'randwrite-4k', args: ['--rw=randwrite', '--bs=4k', '--iodepth=32'], unit: 'IOPS' },
  { key: 'read-1m', args: ['--rw=read', '--bs=1m', '--iodepth=8'], unit: 'MB/s' },
  { key: 'write-1m', args: ['--rw=write', '--bs=1m', '--iodepth=8'], unit: 'MB/s' },
];

function fio(uri, w) {
  const r = spawnSync('fio', ['--name=b', '--ioengine=nbd', `--uri=${uri}`, `--size=${SIZE}`, '--time_based', `--runtime=${SECS}`,
    '--ramp_time=1', '--randrepeat=0', '--norandommap', '--output-format=json', ...w.args], { encoding: 'utf8', timeout: (SECS + 60) * 1000 });
  if (r.status !== 0) throw new Error(`fio ${w.key} failed: ${r.stderr}`);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  const side = w.key.includes('read') ? j.read : j.write;
  return w.unit === 'IOPS' ? side.iops : side.bw_bytes / 1e6;
}

function qemuBench(uri, write) {
  const count = Number(process.env.BENCH_QEMU_COUNT ?? 50_000);
  const t0 = process.hrtime.bigint();
  const r = spawnSync('qemu-img', ['bench', '-f', 'raw', '-c', String(count), '-d', '32', '-s', '4k', '-S', '4k', ...(write ? ['-w'] : []), '-n', uri],
    { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`qemu-img bench failed: ${r.stderr}`);
  const m = /Run completed in ([\d.]+) seconds/.exec(r.stdout);
  const secs = m ? Number(m[1]) : Number(process.hrtime.bigint() - t0) / 1e9;
  return count / secs;
}

function prefill(uri) {
  const r = spawnSync('fio', ['--name=fill', '--ioengine=nbd', `--uri=${uri}`, `--size=${SIZE}`, '--rw=write', '--bs=1m', '--iodepth=8'], { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`prefill failed: ${r.stderr}`);
}

const ONLY = process.env.BENCH_NBD_ONLY ? new Set(process.env.BENCH_NBD_ONLY.split(',')) : undefined;
const want = (k) => !ONLY || ONLY.has(k);

/** Every workload as key -> (uri) => number. */
const RUNS = [
  ...WORKLOADS.map((w) => [w.key, (uri) => fio(uri, w)]),
  ['qemu-img-read-4k', (uri) => qemuBench(uri, false)],
  ['qemu-img-write-4k', (uri) => qemuBench(uri, true)],
].filter(([k]) => want(k));

async function nbdkitFile(dir) {
  const file = path.join(dir, 'nbdkit.img');
  writeFileSync(file, '');
  spawnSync('truncate', ['-s', String(SIZE), file]);
  const port = await freePort();
  const p = spawn('nbdkit', ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), 'file', `file=${file}`], { stdio: 'ignore' });
  await waitPort(port);
  const uri = `nbd://127.0.0.1:${port}`;
  prefill(uri);
  return { name: 'nbdkit-file', uri, stop: async () => { p.kill('SIGTERM'); } };
}

/** sheep cluster of `nodes` with `copies`; nosync adds -n. Hook for more layouts: add entries to CONFIGS. */
async function sheepCluster(cfg, nodes, copies, nosync) {
  const cluster = `local:nbdbench-${process.pid}-${nodes}-${nosync ? 'n' : 's'}`;
  const nbdPort = await freePort();
  const hs = [];
  for (let i = 0; i < nodes; i++) {
    const args = [...(nosync ? ['-n'] : []), ...(i === 0 ? ['--nbd', `127.0.0.1:${nbdPort}`] : [])];
    hs.push(await startSheep({ cluster, zone: i, args }));
  }
  await new Promise((r) => setTimeout(r, 300));
  await format(hs[0].port, copies);
  const c = new SheepClient({ port: hs[0].port });
  await c.request({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(SIZE) } }, encodeFixedString('bench', 256));
  c.close();
  await waitPort(nbdPort);
  const uri = `nbd://127.0.0.1:${nbdPort}/bench`;
  prefill(uri);
  return { name: `sheep ${cfg}`, uri, stop: async () => { for (const h of hs) await h.kill(); } };
}

const median = (xs) => {
  const a = [...xs].sort((x, y) => x - y);
  return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
};

const fmt = (v) => (Number.isNaN(v) ? '-' : v >= 100 ? Math.round(v).toString() : v.toFixed(1));
const dir = mkdtempSync(path.join(tmpdir(), 'nbd-bench-'));
const targets = [];
try {
  console.log(`NBD bench: ${SECS}s per fio run, ${SIZE >> 20} MiB device, prefilled, ${REPEAT} repeat(s)${REPEAT > 1 ? ' (medians)' : ''}`);
  const ref = process.env.BENCH_NBD_REF === '0' ? undefined : await nbdkitFile(dir);
  if (ref) targets.push(ref);
  for (const cfg of CONFIGS) {
    const m = /^(\d+)x(\d+)-(nosync|sync)$/.exec(cfg.trim());
    if (!m) { console.log(`unknown config ${cfg}`); continue; }
    try {
      targets.push(await sheepCluster(cfg.trim(), Number(m[1]), Number(m[2]), m[3] === 'nosync'));
    } catch (e) {
      console.log(`${cfg}: failed to start: ${e.message}`);
    }
  }
  const res = new Map(targets.map((t) => [t, {}]));
  for (const [key, run] of RUNS) {
    for (let r = 0; r < REPEAT; r++) {
      for (let i = 0; i < targets.length; i++) {
        const t = targets[(i + r) % targets.length];
        spawnSync('sync');
        try {
          (res.get(t)[key] ??= []).push(run(t.uri));
        } catch (e) {
          console.log(`${t.name} ${key}: ${e.message}`);
        }
      }
    }
  }
  const val = (t, k) => (res.get(t)[k]?.length ? median(res.get(t)[k]) : NaN);
  const cols = targets.filter((t) => t !== ref);
  const rows = RUNS.map(([k]) => k);
  const unit = (k) => (k.includes('1m') ? 'MB/s' : 'IOPS');
  const header = ['workload', ...(ref ? [ref.name] : []), ...cols.flatMap((c) => [c.name, ...(ref ? ['ratio'] : [])])];
  const table = rows.map((k) => [`${k} (${unit(k)})`, ...(ref ? [fmt(val(ref, k))] : []),
    ...cols.flatMap((c) => [fmt(val(c, k)), ...(ref ? [(val(c, k) / val(ref, k)).toFixed(2) + 'x'] : [])])]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i].length)));
  const line = (r) => r.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  console.log(line(header));
  for (const r of table) console.log(line(r));
  console.log('(nodes x copies; ratio = sheep / nbdkit file plugin; nbdkit file does no fsync per write either)');
} finally {
  for (const t of targets) await t.stop().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
  await cleanup();
}
