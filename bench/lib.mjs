// Shared bench helpers: start sheep processes, format, pipelined VDI writes.
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { SheepClient, Op, Flag, timestamp64, encodeFixedString, vidToDataOid, vidToVdiOid, decodeRecoveryState } from '@sheepdog/common';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SHEEP = path.join(ROOT, 'sheep/bin/sheep.js');

export async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

export async function waitPort(port) {
  for (let i = 0; i < 300; i++) {
    const ok = await new Promise((r) => { const s = net.connect({ port, host: '127.0.0.1' }); s.once('connect', () => { s.destroy(); r(true); }); s.once('error', () => r(false)); });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} never opened`);
}

const procs = [];
/** A sheep on a fresh directory and port, or (dir and port given) one restarted on its own. */
export async function startSheep({ cluster, zone, args = [], env, dir: oldDir, port: oldPort }) {
  const port = oldPort ?? (await freePort());
  const dir = oldDir ?? mkdtempSync(path.join(tmpdir(), 'sheep-bench-'));
  const nodeArgs = process.env.BENCH_SHEEP_NODE_ARGS ? process.env.BENCH_SHEEP_NODE_ARGS.split(' ') : [];
  const p = spawn(process.execPath, [...nodeArgs, SHEEP, '-f', '-b', '127.0.0.1', '-p', String(port), '-c', cluster, '-z', String(zone), ...args, dir], { stdio: 'ignore', env: env ? { ...process.env, ...env } : process.env });
  const exited = new Promise((r) => p.once('exit', r));
  // with node args (e.g. --cpu-prof) stop gracefully so node can write its output
  const sig = nodeArgs.length ? 'SIGTERM' : 'SIGKILL';
  const h = { port, dir, proc: p, exited, kill: async () => { p.kill(sig); await exited; } };
  procs.push(h);
  await waitPort(port);
  return h;
}

export async function cleanup() {
  for (const h of procs) { if (h.proc.exitCode === null) { h.proc.kill('SIGKILL'); await h.exited; } rmSync(h.dir, { recursive: true, force: true }); }
}

export async function format(port, copies) {
  const c = new SheepClient({ port });
  await c.request({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies, ctime: timestamp64(), flags: 4 } }, Buffer.from('plain\0'));
  c.close();
}

/** Create a VDI and fill `bytes` of it with data, `depth` objects in flight. */
export async function fillVdi(port, name, bytes, depth = 8) {
  const c = new SheepClient({ port, timeout: 120_000 });
  const r = await c.request({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(bytes) } }, encodeFixedString(name, 256));
  const vid = r.rsp.vdi.vdiId;
  const OS = 4 << 20;
  const n = Math.ceil(bytes / OS);
  const buf = Buffer.alloc(OS);
  for (let i = 0; i < OS; i += 4) buf.writeUInt32LE((i * 2654435761) >>> 0, i);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await c.request({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, i) } }, buf);
      const e = Buffer.alloc(4); e.writeUInt32LE(vid);
      await c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: 4664 + 4 * i } }, e);
    }
  };
  await Promise.all(Array.from({ length: depth }, worker));
  c.close();
  return { vid, objects: n };
}

export async function recoveryState(port) {
  const c = new SheepClient({ port });
  try {
    const r = await c.request({ opcode: Op.STAT_RECOVERY, dataLength: 24 });
    const st = await c.request({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} });
    return { ...decodeRecoveryState(r.data), epoch: st.rsp.epoch };
  } finally {
    c.close();
  }
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
