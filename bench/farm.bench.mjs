// Cluster snapshots: collie cluster snapshot save/load MB/s, into a
// repository directory (plain store) and in place (farm store). One sheep,
// copies 1, -n; BENCH_FARM_BYTES of distinct data (default 256 MiB) in one
// VDI, snapshotted, then saved, then loaded after a format.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { SheepClient, Op, Flag, timestamp64, encodeFixedString, vidToDataOid, vidToVdiOid } from '@sheepdog/common';
import { startSheep, cleanup, ROOT } from './lib.mjs';

const size = Number(process.env.BENCH_FARM_BYTES ?? 256 << 20);
const COLLIE = path.join(ROOT, 'collie/bin/collie.js');
const collie = (port, args, input) => {
  const r = spawnSync(process.execPath, [COLLIE, ...args, '-p', String(port)], { input, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`collie ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.toString();
};
const timed = (fn) => { const t = process.hrtime.bigint(); fn(); return Number(process.hrtime.bigint() - t) / 1e9; };

async function fill(port, name) {
  const c = new SheepClient({ port, timeout: 120_000 });
  const r = await c.request({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(size) } }, encodeFixedString(name, 256));
  const vid = r.rsp.vdi.vdiId;
  const OS = 4 << 20;
  const n = Math.ceil(size / OS);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await c.request({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, i) } }, randomBytes(OS));
      const e = Buffer.alloc(4); e.writeUInt32LE(vid);
      await c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: 4664 + 4 * i } }, e);
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  c.close();
}

const mb = (secs) => (size / 1048576 / secs).toFixed(1);
const repo = mkdtempSync(path.join(tmpdir(), 'farm-bench-'));
try {
  for (const store of ['plain', 'farm']) {
    const s = await startSheep({ cluster: `local:bench-farm-${store}-${process.pid}`, zone: 0, args: ['-n'] });
    await new Promise((r) => setTimeout(r, 300));
    const c = new SheepClient({ port: s.port });
    await c.request({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 1, ctime: timestamp64(), flags: 4 } }, Buffer.from(`${store}\0`));
    c.close();
    await fill(s.port, 'bench');
    collie(s.port, ['vdi', 'snapshot', '-s', 'b1', 'bench']);
    const where = store === 'farm' ? [] : [path.join(repo, 'r')];
    const save = timed(() => collie(s.port, ['cluster', 'snapshot', 'save', 's1', ...where]));
    const load = timed(() => collie(s.port, ['cluster', 'snapshot', 'load', 's1', ...where], 'yes\n'));
    const what = store === 'farm' ? 'in place (farm store)' : 'into a repository directory';
    console.log(`cluster snapshot ${what}, ${(size / 1048576).toFixed(0)} MiB: save ${save.toFixed(2)} s (${mb(save)} MB/s), load ${load.toFixed(2)} s (${mb(load)} MB/s, checking included)`);
    await s.kill();
  }
} finally {
  rmSync(repo, { recursive: true, force: true });
  await cleanup();
}
