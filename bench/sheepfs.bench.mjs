// sheepfs throughput: fio on MOUNT/volume/NAME (direct=1; psync and libaio)
// beside the same workloads on the same VDI through sheep's NBD server (fio's
// nbd engine at the same queue depth), so the cost of the FUSE path shows.
//
// Note: libfuse2 does not negotiate asynchronous direct I/O with the kernel,
// so a single libaio submitter gets no more parallelism than psync; the
// "psync x4" rows (4 threads) show what concurrent submitters get.
//
// Env: BENCH_SECS (default 5), BENCH_SHEEPFS_SIZE_MB (256), BENCH_SHEEPFS_SYNC=1
// (sheep without -n).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import { tmpdir } from 'node:os';
import { SheepClient, Op, Flag, encodeFixedString } from '@sheepdog/common';
import { ROOT, startSheep, cleanup, format, freePort, waitPort } from './lib.mjs';

const SECS = Number(process.env.BENCH_SECS ?? 5);
const SIZE = Number(process.env.BENCH_SHEEPFS_SIZE_MB ?? 256) << 20;
const SYNC = process.env.BENCH_SHEEPFS_SYNC === '1';
const SHEEPFS = path.join(ROOT, 'sheepfs/bin/sheepfs.js');

const have = (c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0;
if (!have('fio')) { console.log('sheepfs bench: fio is not installed (apt-get install fio); skipped'); process.exit(0); }
if (process.getuid?.() !== 0) { console.log('sheepfs bench: needs root for FUSE mounts; skipped'); process.exit(0); }
if (!existsSync('/dev/fuse')) { console.log('sheepfs bench: /dev/fuse is missing; skipped'); process.exit(0); }

const WORKLOADS = [
  { key: 'read-1m psync', args: ['--rw=read', '--bs=1m', '--ioengine=psync'], depth: 1, unit: 'MB/s' },
  { key: 'write-1m psync', args: ['--rw=write', '--bs=1m', '--ioengine=psync'], depth: 1, unit: 'MB/s' },
  { key: 'read-1m libaio qd8', args: ['--rw=read', '--bs=1m', '--ioengine=libaio', '--iodepth=8'], depth: 8, unit: 'MB/s' },
  { key: 'write-1m libaio qd8', args: ['--rw=write', '--bs=1m', '--ioengine=libaio', '--iodepth=8'], depth: 8, unit: 'MB/s' },
  { key: 'randread-4k psync', args: ['--rw=randread', '--bs=4k', '--ioengine=psync'], depth: 1, unit: 'IOPS' },
  { key: 'randwrite-4k psync', args: ['--rw=randwrite', '--bs=4k', '--ioengine=psync'], depth: 1, unit: 'IOPS' },
  { key: 'randread-4k libaio qd32', args: ['--rw=randread', '--bs=4k', '--ioengine=libaio', '--iodepth=32'], depth: 32, unit: 'IOPS' },
  { key: 'randwrite-4k libaio qd32', args: ['--rw=randwrite', '--bs=4k', '--ioengine=libaio', '--iodepth=32'], depth: 32, unit: 'IOPS' },
  { key: 'randread-4k psync x4', args: ['--rw=randread', '--bs=4k', '--ioengine=psync', '--numjobs=4'], depth: 1, jobs: 4, unit: 'IOPS' },
  { key: 'randwrite-4k psync x4', args: ['--rw=randwrite', '--bs=4k', '--ioengine=psync', '--numjobs=4'], depth: 1, jobs: 4, unit: 'IOPS' },
];

function runFio(target, w) {
  const r = spawnSync('fio', ['--name=b', ...target, `--size=${SIZE}`, '--time_based', `--runtime=${SECS}`, '--ramp_time=1',
    '--randrepeat=0', '--norandommap', '--group_reporting', '--output-format=json', ...w.args], { encoding: 'utf8', timeout: (SECS + 90) * 1000 });
  if (r.status !== 0) throw new Error(`fio ${w.key} failed: ${r.stderr || r.stdout}`);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  const side = w.key.includes('read') ? j.read : j.write;
  return w.unit === 'IOPS' ? side.iops : side.bw_bytes / 1e6;
}

// the nbd engine has no psync/libaio: same queue depth and thread count instead
const nbdTarget = (uri, w) => ['--ioengine=nbd', `--uri=${uri}`, `--iodepth=${w.depth}`, ...(w.jobs ? [`--numjobs=${w.jobs}`] : [])];
const nbdArgs = (w) => w.args.filter((a) => !a.startsWith('--ioengine') && !a.startsWith('--iodepth') && !a.startsWith('--numjobs'));

const mounts = () => readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1]);

async function mountSheepfs(port, dir) {
  const p = spawn(process.execPath, [SHEEPFS, '-f', '-p', String(port), dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (b) => (err += b));
  for (let i = 0; i < 300 && !mounts().includes(dir); i++) {
    if (p.exitCode !== null) throw new Error(`sheepfs exited: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!mounts().includes(dir)) throw new Error(`sheepfs did not mount: ${err}`);
  return {
    async stop() {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
      if (mounts().includes(dir)) spawnSync('umount', ['-l', dir]);
    },
  };
}

const fmt = (v) => (v >= 100 ? Math.round(v).toString() : v.toFixed(1));
const dir = mkdtempSync(path.join(tmpdir(), 'sheepfs-bench-'));
const mnt = path.join(dir, 'mnt');
spawnSync('mkdir', ['-p', mnt]);
let fs;
try {
  console.log(`sheepfs bench: ${SECS}s per fio run, ${SIZE >> 20} MiB VDI (prefilled, read once), 1 sheep, 1 copy${SYNC ? '' : ', -n (no fsync)'}, direct=1`);
  const nbdPort = await freePort();
  const h = await startSheep({ cluster: `local:sfsbench-${process.pid}`, zone: 0, args: [...(SYNC ? [] : ['-n']), '--nbd', `127.0.0.1:${nbdPort}`] });
  await new Promise((r) => setTimeout(r, 300));
  await format(h.port, 1);
  const c = new SheepClient({ port: h.port });
  await c.request({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(SIZE) } }, encodeFixedString('bench', 256));
  c.close();
  await waitPort(nbdPort);
  const uri = `nbd://127.0.0.1:${nbdPort}/bench`;
  const fill = spawnSync('fio', ['--name=fill', '--ioengine=nbd', `--uri=${uri}`, `--size=${SIZE}`, '--rw=write', '--bs=1m', '--iodepth=8'], { encoding: 'utf8', timeout: 600_000 });
  if (fill.status !== 0) throw new Error(`prefill failed: ${fill.stderr}`);

  fs = await mountSheepfs(h.port, mnt);
  writeFileSync(path.join(mnt, 'vdi/mount'), 'bench\n');
  const file = path.join(mnt, 'volume/bench');
  // one untimed pass over the volume first: the first read of each object is slower (both paths get it)
  const warm = spawnSync('fio', ['--name=warm', `--filename=${file}`, '--direct=1', `--size=${SIZE}`, '--rw=read', '--bs=1m'], { encoding: 'utf8', timeout: 600_000 });
  if (warm.status !== 0) throw new Error(`warm-up failed: ${warm.stderr}`);
  const rows = [];
  for (const w of WORKLOADS) {
    const viaFs = runFio([`--filename=${file}`, '--direct=1'], w);
    const viaNbd = runFio(nbdTarget(uri, w), { ...w, args: nbdArgs(w) });
    rows.push([`${w.key} (${w.unit})`, fmt(viaFs), fmt(viaNbd), (viaFs / viaNbd).toFixed(2) + 'x']);
  }
  await fs.stop();
  fs = undefined;
  const header = ['workload', 'sheepfs', 'nbd', 'ratio'];
  const widths = header.map((x, i) => Math.max(x.length, ...rows.map((r) => r[i].length)));
  const line = (r) => r.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  console.log('(ratio = sheepfs / NBD; NBD runs fio\'s nbd engine at the same queue depth and thread count)');
} finally {
  if (fs) await fs.stop().catch(() => undefined);
  if (mounts().includes(mnt)) spawnSync('umount', ['-l', mnt]);
  await cleanup();
  rmSync(dir, { recursive: true, force: true });
}
