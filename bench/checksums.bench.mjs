// The cost of block checksums (issue 17: at most 5% of 4K write IOPS).
// Two single-node sheep side by side, one with SHEEP_CHECKSUMS=0 (objects
// created without block checksums, so nothing is summed on write nor
// checked on read) and one as shipped; fio's nbd engine drives 4 KiB random
// writes and reads at QD 32 over each one's --nbd export, on a prefilled
// VDI (so every object exists, with its sums, before the timed runs).
// The runs alternate between the two, the order rotating between repeats,
// after a `sync`, so that a noisy moment on a shared machine hits both
// alike; the table shows medians of BENCH_REPEAT runs.
//
// Env: BENCH_SECS (default 5), BENCH_REPEAT (3), BENCH_CSUM_SIZE_MB (256),
// BENCH_CSUM_SYNC=1 (without -n: every write synced; the default -n shows
// the CPU cost, which the sync would hide).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { SheepClient, Op, Flag, encodeFixedString } from '@sheepdog/common';
import { startSheep, cleanup, format, freePort, waitPort } from './lib.mjs';

const SECS = Number(process.env.BENCH_SECS ?? 5);
const REPEAT = Math.max(1, Number(process.env.BENCH_REPEAT ?? 3));
const SIZE = Number(process.env.BENCH_CSUM_SIZE_MB ?? 256) << 20;
const SYNC = process.env.BENCH_CSUM_SYNC === '1';

const have = (c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0;
if (!have('fio')) { console.log('checksums bench: fio is not installed (apt-get install fio); skipped'); process.exit(0); }

const WORKLOADS = [
  { key: 'randwrite-4k', args: ['--rw=randwrite', '--bs=4k', '--iodepth=32'], side: 'write' },
  { key: 'randread-4k', args: ['--rw=randread', '--bs=4k', '--iodepth=32'], side: 'read' },
];

/** The CPU time a process has used, in seconds (user + system, from /proc). */
function cpuSecs(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

/** IOPS, and the sheep's CPU microseconds per I/O (less sensitive to other load on the machine than IOPS). */
function fio(t, w) {
  const c0 = cpuSecs(t.pid);
  const r = spawnSync('fio', ['--name=b', '--ioengine=nbd', `--uri=${t.uri}`, `--size=${SIZE}`, '--time_based', `--runtime=${SECS}`,
    '--randrepeat=0', '--norandommap', '--output-format=json', ...w.args], { encoding: 'utf8', timeout: (SECS + 60) * 1000 });
  const c1 = cpuSecs(t.pid);
  if (r.status !== 0) throw new Error(`fio ${w.key} failed: ${r.stderr}`);
  const side = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0][w.side];
  return { iops: side.iops, cpuUs: ((c1 - c0) * 1e6) / side.total_ios };
}

async function node(label, env) {
  const nbdPort = await freePort();
  const h = await startSheep({ cluster: `local:csumbench-${process.pid}-${label}`, zone: 0, env, args: [...(SYNC ? [] : ['-n']), '--nbd', `127.0.0.1:${nbdPort}`] });
  await new Promise((r) => setTimeout(r, 300));
  await format(h.port, 1);
  const c = new SheepClient({ port: h.port });
  await c.request({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(SIZE) } }, encodeFixedString('bench', 256));
  c.close();
  await waitPort(nbdPort);
  const uri = `nbd://127.0.0.1:${nbdPort}/bench`;
  const r = spawnSync('fio', ['--name=fill', '--ioengine=nbd', `--uri=${uri}`, `--size=${SIZE}`, '--rw=write', '--bs=1m', '--iodepth=8'], { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`prefill failed: ${r.stderr}`);
  return { label, uri, pid: h.proc.pid };
}

const median = (xs) => {
  const a = [...xs].sort((x, y) => x - y);
  return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
};

try {
  console.log(`checksums bench: 1 node${SYNC ? '' : ' (-n)'}, ${SIZE >> 20} MiB VDI prefilled, fio nbd ${SECS}s per run, ${REPEAT} repeat(s), medians`);
  const targets = [await node('off', { SHEEP_CHECKSUMS: '0' }), await node('on', {})];
  const res = { off: {}, on: {} };
  for (const w of WORKLOADS) {
    for (let r = 0; r < REPEAT; r++) {
      for (let i = 0; i < targets.length; i++) {
        const t = targets[(i + r) % targets.length];
        spawnSync('sync');
        (res[t.label][w.key] ??= []).push(fio(t, w));
      }
    }
  }
  const diff = (off, on) => `${(((on - off) / off) * 100).toFixed(1)}%`;
  const rows = WORKLOADS.map((w) => {
    const iops = (l) => median(res[l][w.key].map((x) => x.iops));
    const cpu = (l) => median(res[l][w.key].map((x) => x.cpuUs));
    return [`${w.key} QD32`, Math.round(iops('off')).toString(), Math.round(iops('on')).toString(), diff(iops('off'), iops('on')),
      cpu('off').toFixed(1), cpu('on').toFixed(1), diff(cpu('off'), cpu('on')),
      `${res.off[w.key].map((x) => Math.round(x.iops)).join('/')} vs ${res.on[w.key].map((x) => Math.round(x.iops)).join('/')}`];
  });
  const header = ['workload', 'IOPS off', 'IOPS on', 'IOPS diff', 'CPU us/IO off', 'on', 'CPU diff', 'IOPS runs (off vs on)'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r) => r.map((x, i) => (i === 0 || i === 7 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  console.log('(off: SHEEP_CHECKSUMS=0; CPU: the sheep process\'s user+system time per I/O, which other load on the machine disturbs less than IOPS)');
  const wr = rows[0];
  console.log(`4K random write cost of checksums: IOPS ${wr[3]}, sheep CPU per write ${wr[6]} (the issue's limit: 5% of write IOPS)`);
} finally {
  await cleanup();
}
