// Durable (sync mode) writes against the disk's own figures, same run, same
// directory (the issue-19 targets). The disk: fio on a file in the directory
// the sheep stores live in, 4 KiB random writes O_DIRECT at QD 32, 4 KiB
// random writes each followed by fdatasync at QD 1, 1 MiB sequential writes
// O_DIRECT at QD 8. Sheep: fio over NBD (a prefilled VDI), 4 KiB random
// writes at QD 32 and 1 MiB sequential writes at QD 8, in sync mode (the
// default: every acknowledged write is on disk; with the journal, in the
// journal) for 1 node and for 3 nodes with 3 copies.
//
// Env: BENCH_SECS (default 5), BENCH_REPEAT (3; medians), BENCH_JOURNAL_CONFIGS
// (default "1x1-sync,3x3-sync"; "-nojournal" appended to a config runs it
// with -j none), BENCH_NBD_SIZE_MB (256).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { tmpdir } from 'node:os';
import { SheepClient, Op, Flag, encodeFixedString } from '@sheepdog/common';
import { startSheep, cleanup, format, freePort, waitPort } from './lib.mjs';

const SECS = Number(process.env.BENCH_SECS ?? 5);
const SIZE = Number(process.env.BENCH_NBD_SIZE_MB ?? 256) << 20;
const REPEAT = Math.max(1, Number(process.env.BENCH_REPEAT ?? 3));
const CONFIGS = (process.env.BENCH_JOURNAL_CONFIGS ?? '1x1-sync,3x3-sync').split(',').map((s) => s.trim());

const have = (c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0;
if (!have('fio')) { console.log('journal bench: fio is not installed; skipped'); process.exit(0); }

function runFio(args, side) {
  const r = spawnSync('fio', ['--name=b', '--time_based', `--runtime=${SECS}`, '--ramp_time=1', '--randrepeat=0', '--norandommap',
    '--output-format=json', ...args], { encoding: 'utf8', timeout: (SECS + 120) * 1000 });
  if (r.status !== 0) throw new Error(`fio failed: ${r.stderr}`);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0][side];
  return { iops: j.iops, mbs: j.bw_bytes / 1e6 };
}

const DISK = [
  { key: 'disk direct 4k randwrite QD32 (IOPS)', args: ['--ioengine=libaio', '--direct=1', '--rw=randwrite', '--bs=4k', '--iodepth=32'], v: (r) => r.iops },
  { key: 'disk fdatasync 4k randwrite QD1 (IOPS)', args: ['--ioengine=psync', '--fdatasync=1', '--rw=randwrite', '--bs=4k', '--iodepth=1'], v: (r) => r.iops },
  { key: 'disk direct 1m write QD8 (MB/s)', args: ['--ioengine=libaio', '--direct=1', '--rw=write', '--bs=1m', '--iodepth=8'], v: (r) => r.mbs },
];
const NBD = [
  { key: 'randwrite-4k QD32 (IOPS)', args: ['--rw=randwrite', '--bs=4k', '--iodepth=32'], v: (r) => r.iops },
  { key: 'write-1m QD8 (MB/s)', args: ['--rw=write', '--bs=1m', '--iodepth=8'], v: (r) => r.mbs },
];

async function sheepCluster(cfg) {
  const m = /^(\d+)x(\d+)-(nosync|sync)(-nojournal)?$/.exec(cfg);
  if (!m) throw new Error(`unknown config ${cfg}`);
  const [nodes, copies] = [Number(m[1]), Number(m[2])];
  const cluster = `local:jbench-${process.pid}-${cfg}`;
  const nbdPort = await freePort();
  const hs = [];
  for (let i = 0; i < nodes; i++) {
    const args = [...(m[3] === 'nosync' ? ['-n'] : []), ...(m[4] ? ['-j', 'none'] : []), ...(i === 0 ? ['--nbd', `127.0.0.1:${nbdPort}`] : [])];
    hs.push(await startSheep({ cluster, zone: i, args }));
  }
  await new Promise((r) => setTimeout(r, 300));
  await format(hs[0].port, copies);
  const c = new SheepClient({ port: hs[0].port });
  await c.request({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(SIZE) } }, encodeFixedString('bench', 256));
  c.close();
  await waitPort(nbdPort);
  const uri = `nbd://127.0.0.1:${nbdPort}/bench`;
  runFio(['--ioengine=nbd', `--uri=${uri}`, `--size=${SIZE}`, '--rw=write', '--bs=1m', '--iodepth=8', '--time_based=0'], 'write');
  return { cfg, uri, stop: async () => { for (const h of hs) await h.kill(); } };
}

const median = (xs) => {
  const a = [...xs].sort((x, y) => x - y);
  return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
};
const fmt = (v) => (v === undefined || Number.isNaN(v) ? '-' : v >= 100 ? Math.round(v).toString() : v.toFixed(1));

// the disk's figures are taken where the sheep keep their stores (lib.mjs: os.tmpdir())
const dir = mkdtempSync(path.join(tmpdir(), 'journal-bench-'));
const file = path.join(dir, 'fio.img');
const res = new Map();
const add = (k, v) => (res.get(k) ?? res.set(k, []).get(k)).push(v);
const clusters = [];
try {
  console.log(`journal bench: ${SECS}s per fio run, ${SIZE >> 20} MiB, ${REPEAT} repeat(s) (medians), directory ${tmpdir()}`);
  for (const cfg of CONFIGS) clusters.push(await sheepCluster(cfg));
  for (let r = 0; r < REPEAT; r++) {
    for (const d of DISK) {
      spawnSync('sync');
      add(d.key, d.v(runFio([`--filename=${file}`, `--size=${SIZE}`, ...d.args], 'write')));
    }
    for (const c of clusters) {
      for (const w of NBD) {
        spawnSync('sync');
        add(`sheep ${c.cfg} ${w.key}`, w.v(runFio(['--ioengine=nbd', `--uri=${c.uri}`, `--size=${SIZE}`, ...w.args], 'write')));
      }
    }
  }
  const val = (k) => (res.get(k)?.length ? median(res.get(k)) : NaN);
  for (const [k, vs] of res) console.log(`${k.padEnd(52)} ${fmt(val(k)).padStart(8)}   (${vs.map(fmt).join(', ')})`);
  const direct = val(DISK[0].key);
  const qd1 = val(DISK[1].key);
  const direct1m = val(DISK[2].key);
  const ratio = (cfg, w, ref, target, what) => {
    const v = val(`sheep ${cfg} ${w}`);
    if (Number.isNaN(v)) return;
    const x = v / ref;
    console.log(`target: ${cfg} ${w} / ${what} = ${x.toFixed(2)}x (target >= ${target}x) ${x >= target ? 'MET' : 'NOT MET'}`);
  };
  ratio('1x1-sync', NBD[0].key, direct, 0.5, 'disk direct 4k QD32');
  ratio('1x1-sync', NBD[0].key, qd1, 10, 'disk fdatasync 4k QD1');
  ratio('3x3-sync', NBD[0].key, direct, 0.25, 'disk direct 4k QD32');
  ratio('1x1-sync', NBD[1].key, direct1m, 0.8, 'disk direct 1m');
} finally {
  for (const c of clusters) await c.stop().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
  await cleanup();
}
