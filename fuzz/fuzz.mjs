// Structure-aware fuzzer for sheep's two ports. Usage:
//   npm run fuzz -- [--seconds S] [--seed N] [--conns N] [--json]
//                   [--port P --nbd-port Q --pid PID]   (an already running sheep)
// Without --port it starts its own sheep (formatted, one copy, with an NBD
// port and a small budget: --conn-budget 16M --node-budget 128M) in a
// temporary directory, and stops it at the end.
//
// For every opcode it builds a valid request (header fields and payload as
// dog, QEMU and sheep send them) and mutates it: fields set to boundary
// values (0, 1, object size +-1, 2^31, 2^32-1), random bits flipped, flags
// and protocol version changed, payloads truncated, padded or replaced, and
// opcodes swapped; the same for NBD options and transmission requests.
// Mutated requests go out pipelined on several connections, which are
// reopened whenever sheep closes them. Meanwhile a checker writes and reads
// back known bytes through both ports and counts any wrong answer, any
// answer slower than 30 s (a hang; the slowest answers are reported too) and
// the daemon's death (a crash), and a
// sampler watches the daemon's resident memory. Exit status 0 when there
// was no crash, no hang, no wrong answer, and the peak memory above the
// starting point stayed within the budget (plus the pool's 64 MiB of idle
// buffers and some room for the collector).
import * as net from 'node:net';
import { spawn } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Op, Flag, Res, encodeRequest, ResponseHeader, SheepClient, encodeFixedString, vidToDataOid, vidToVdiOid,
  vidToAttrOid, timestamp64, ClusterFlag, encodeAddr, SD_ATTR_OBJ_SIZE,
} from '@sheepdog/common';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
};
const seconds = Number(opt('seconds', '60'));
const seed = Number(opt('seed', String(Date.now() % 1e9)));
const nconns = Number(opt('conns', '6'));
const json = args.includes('--json');
const MB = 1 << 20;
const BUDGET = 128 * MB;
const SLACK = 96 * MB;

// ---- seeded randomness ------------------------------------------------------
let st = seed >>> 0 || 1;
const rnd = () => {
  st ^= st << 13; st >>>= 0;
  st ^= st >>> 17;
  st ^= st << 5; st >>>= 0;
  return st / 4294967296;
};
const ri = (n) => Math.floor(rnd() * n);
const pick = (a) => a[ri(a.length)];
const bytes = (n) => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = ri(256);
  return b;
};

// ---- the daemon ----------------------------------------------------------------
let port = Number(opt('port', '0'));
let nbdPort = Number(opt('nbd-port', '0'));
let pid = Number(opt('pid', '0'));
let own;
let dir;
const freePort = () => new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});
async function waitPort(p) {
  for (let i = 0; i < 300; i++) {
    const ok = await new Promise((r) => {
      const s = net.connect({ host: '127.0.0.1', port: p });
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${p} did not open`);
}
let crashed = false;
if (!port) {
  port = await freePort();
  nbdPort = await freePort();
  dir = mkdtempSync(path.join(os.tmpdir(), 'sheep-fuzz-'));
  own = spawn(process.execPath, [path.join(root, 'sheep/bin/sheep.js'), '-f', '-b', '127.0.0.1', '-p', String(port), '-c', `local:fuzz${process.pid}`,
    '--nbd', `127.0.0.1:${nbdPort}`, '--conn-budget', '16M', '--node-budget', '128M', '--request-timeout', '5', dir], { stdio: ['ignore', 'ignore', process.env.FUZZ_SHEEP_STDERR ? 'inherit' : 'ignore'], env: { ...process.env } });
  own.on('exit', () => { crashed = true; });
  pid = own.pid;
  await waitPort(port);
  await waitPort(nbdPort);
  const c = new SheepClient({ port, timeout: 30_000 });
  for (let i = 0; ; i++) {
    const r = await c.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 1, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES } }, Buffer.from('plain\0'));
    if (r.rsp.result === Res.SUCCESS) break;
    if (i > 50) throw new Error(`format failed: ${r.rsp.result}`);
    await new Promise((res) => setTimeout(res, 100));
  }
  c.close();
}
const rss = () => {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
  } catch {
    return 0;
  }
};

// ---- fixtures: a VDI the checker owns, one the fuzzer may wreck ------------------
const admin = new SheepClient({ port, timeout: 30_000 });
async function vdi(name, size) {
  const r = await admin.send({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: size, copies: 1 } }, encodeFixedString(name, 256));
  if (r.rsp.result === Res.SUCCESS) return r.rsp.vdi.vdiId;
  const g = await admin.send({ opcode: Op.GET_VDI_INFO, flags: Flag.CMD_WRITE }, Buffer.concat([encodeFixedString(name, 256), Buffer.alloc(256)]));
  return g.rsp.vdi.vdiId;
}
const checkVid = await vdi('fuzz-check', 64n * BigInt(MB));
const victimVid = await vdi('fuzz-victim', 64n * BigInt(MB));
const OBJ = 4 * MB;

// ---- request templates: one valid request per opcode ----------------------------------
const victimOid = () => vidToDataOid(victimVid, ri(16));
const name = (n) => encodeFixedString(n, 256);
const nameTag = (n, t = '') => Buffer.concat([name(n), encodeFixedString(t, 256)]);
/** Opcodes that would stop or wipe the cluster when valid: sent only in forms that must be refused. */
const DANGEROUS = new Set([Op.SHUTDOWN, Op.KILL_NODE, Op.MAKE_FS, Op.SET_LOGLEVEL]);
const templates = {
  [Op.CREATE_AND_WRITE_OBJ]: () => { const len = pick([0, 1, 512, 4096, 65536, 200_000]); return { f: { opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: victimOid(), offset: ri(OBJ - len) } }, p: Buffer.alloc(len, ri(256)) }; },
  [Op.READ_OBJ]: () => ({ f: { opcode: Op.READ_OBJ, dataLength: pick([0, 512, 4096, 65536, OBJ]), obj: { oid: victimOid(), offset: pick([0, 4096, OBJ - 4096]) } } }),
  [Op.WRITE_OBJ]: () => { const len = pick([0, 1, 4096, 65536]); return { f: { opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: victimOid(), offset: ri(OBJ - len) } }, p: Buffer.alloc(len, 3) }; },
  [Op.REMOVE_OBJ]: () => ({ f: { opcode: Op.REMOVE_OBJ, obj: { oid: victimOid() } } }),
  [Op.DISCARD_OBJ]: () => ({ f: { opcode: Op.DISCARD_OBJ, obj: { oid: victimOid() } } }),
  [Op.NEW_VDI]: () => ({ f: { opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(pick([MB, 64 * MB])), copies: 1 } }, p: name(`fz${ri(50)}`) }),
  [Op.LOCK_VDI]: () => ({ f: { opcode: Op.LOCK_VDI, flags: Flag.CMD_WRITE, vdi: { type: ri(2) } }, p: nameTag('fuzz-victim') }),
  [Op.RELEASE_VDI]: () => ({ f: { opcode: Op.RELEASE_VDI, vdi: { baseVdiId: victimVid } } }),
  [Op.GET_VDI_INFO]: () => ({ f: { opcode: Op.GET_VDI_INFO, flags: Flag.CMD_WRITE }, p: nameTag(pick(['fuzz-victim', 'nope'])) }), // never the checkers' VDI: a mutated opcode could make this a DEL_VDI
  [Op.READ_VDIS]: () => ({ f: { opcode: Op.READ_VDIS, dataLength: 2 * MB } }),
  [Op.FLUSH_VDI]: () => ({ f: { opcode: Op.FLUSH_VDI, obj: { oid: vidToVdiOid(victimVid) } } }),
  [Op.DEL_VDI]: () => ({ f: { opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE }, p: nameTag(`fz${ri(50)}`) }),
  [Op.GET_CLUSTER_DEFAULT]: () => ({ f: { opcode: Op.GET_CLUSTER_DEFAULT } }),
  [Op.GET_NODE_LIST]: () => ({ f: { opcode: Op.GET_NODE_LIST, dataLength: 491520 } }),
  [Op.MAKE_FS]: () => ({ f: { opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 32 + ri(200), ctime: 1n } }, p: Buffer.from('plain\0') }),
  [Op.SHUTDOWN]: () => ({ f: { opcode: Op.SHUTDOWN, protoVer: 0x09 } }),
  [Op.STAT_SHEEP]: () => ({ f: { opcode: Op.STAT_SHEEP } }),
  [Op.STAT_CLUSTER]: () => ({ f: { opcode: Op.STAT_CLUSTER, dataLength: 4096, cluster: { nodesNr: 3 } } }),
  [Op.GET_VDI_ATTR]: () => {
    const p = Buffer.alloc(SD_ATTR_OBJ_SIZE);
    name('fuzz-victim').copy(p, 0);
    Buffer.from(`key${ri(10)}\0`).copy(p, 528);
    p.writeUInt32LE(4, 524);
    return { f: { opcode: Op.GET_VDI_ATTR, flags: Flag.CMD_WRITE | pick([0, Flag.CMD_CREAT, Flag.CMD_DEL]) }, p };
  },
  [Op.FORCE_RECOVER]: () => ({ f: { opcode: Op.FORCE_RECOVER, dataLength: 491520 } }),
  [Op.GET_STORE_LIST]: () => ({ f: { opcode: Op.GET_STORE_LIST, dataLength: 512 } }),
  [Op.STAT_RECOVERY]: () => ({ f: { opcode: Op.STAT_RECOVERY, dataLength: 24 } }),
  [Op.NOTIFY_VDI_DEL]: () => ({ f: { opcode: Op.NOTIFY_VDI_DEL, flags: Flag.CMD_WRITE }, p: Buffer.from([0x99, 0x99, 0x99, 0]) }),
  [Op.KILL_NODE]: () => ({ f: { opcode: Op.KILL_NODE, protoVer: 0x02 } }),
  [Op.GET_OBJ_LIST]: () => ({ f: { opcode: Op.GET_OBJ_LIST, dataLength: MB } }),
  [Op.GET_EPOCH]: () => ({ f: { opcode: Op.GET_EPOCH, dataLength: 4096, obj: { tgtEpoch: 1 } } }),
  [Op.CREATE_AND_WRITE_PEER]: () => ({ f: { opcode: Op.CREATE_AND_WRITE_PEER, flags: Flag.CMD_WRITE, epoch: 1, obj: { oid: victimOid() } }, p: Buffer.alloc(4096, 5) }),
  [Op.READ_PEER]: () => ({ f: { opcode: Op.READ_PEER, epoch: 1, dataLength: 4096, obj: { oid: victimOid() } } }),
  [Op.WRITE_PEER]: () => ({ f: { opcode: Op.WRITE_PEER, flags: Flag.CMD_WRITE, epoch: 1, obj: { oid: victimOid() } }, p: Buffer.alloc(4096, 6) }),
  [Op.REMOVE_PEER]: () => ({ f: { opcode: Op.REMOVE_PEER, epoch: 1, obj: { oid: victimOid() } } }),
  [Op.ENABLE_RECOVER]: () => ({ f: { opcode: Op.ENABLE_RECOVER } }),
  [Op.DISABLE_RECOVER]: () => ({ f: { opcode: Op.DISABLE_RECOVER } }),
  [Op.GET_VDI_COPIES]: () => ({ f: { opcode: Op.GET_VDI_COPIES, dataLength: 65536 } }),
  [Op.NOTIFY_VDI_ADD]: () => ({ f: { opcode: Op.NOTIFY_VDI_ADD, vdiState: { newVid: 0x800000 + ri(1000), copies: 1, blockSizeShift: 22 } } }),
  [Op.MD_INFO]: () => ({ f: { opcode: Op.MD_INFO, dataLength: 263688 } }),
  [Op.MD_PLUG]: () => ({ f: { opcode: Op.MD_PLUG, flags: Flag.CMD_WRITE }, p: Buffer.from('/nonexistent/disk\0') }),
  [Op.GET_HASH]: () => ({ f: { opcode: Op.GET_HASH, obj: { oid: victimOid() } } }),
  [Op.STAT]: () => ({ f: { opcode: Op.STAT, dataLength: 120 } }),
  [Op.GET_LOGLEVEL]: () => ({ f: { opcode: Op.GET_LOGLEVEL, dataLength: 4 } }),
  [Op.SET_LOGLEVEL]: () => ({ f: { opcode: Op.SET_LOGLEVEL, flags: Flag.CMD_WRITE }, p: Buffer.from(pick([[8, 0, 0, 0], [255, 255, 255, 255], [0, 0, 0, 1]])) }),
  [Op.EXIST]: () => ({ f: { opcode: Op.EXIST, obj: { oid: victimOid() } } }),
  [Op.CLUSTER_INFO]: () => ({ f: { opcode: Op.CLUSTER_INFO, dataLength: 491568 } }),
  [Op.ALTER_CLUSTER_COPY]: () => ({ f: { opcode: Op.ALTER_CLUSTER_COPY, cluster: { copies: 1 } } }),
  [Op.ALTER_VDI_COPY]: () => ({ f: { opcode: Op.ALTER_VDI_COPY, vdiState: { newVid: victimVid, copies: 1 } } }),
  [Op.DECREF_OBJ]: () => ({ f: { opcode: Op.DECREF_OBJ, ref: { oid: victimOid(), generation: ri(3), count: ri(3) } } }),
  [Op.DECREF_PEER]: () => ({ f: { opcode: Op.DECREF_PEER, epoch: 1, ref: { oid: victimOid(), generation: 1, count: 1 } } }),
  [Op.REPAIR_REPLICA]: () => ({ f: { opcode: Op.REPAIR_REPLICA, forw: { oid: victimOid(), addr: encodeAddr('127.0.0.1'), port } } }),
  [Op.OIDS_EXIST]: () => { const n = ri(20); const p = Buffer.alloc(8 * n); for (let i = 0; i < n; i++) p.writeBigUInt64LE(victimOid(), 8 * i); return { f: { opcode: Op.OIDS_EXIST, flags: Flag.CMD_WRITE | Flag.CMD_PIGGYBACK }, p }; },
  [Op.READ_DEL_VDIS]: () => ({ f: { opcode: Op.READ_DEL_VDIS, dataLength: 2 * MB } }),
  [Op.GET_RECOVERY]: () => ({ f: { opcode: Op.GET_RECOVERY, dataLength: 24 } }),
  [Op.SET_RECOVERY]: () => ({ f: { opcode: Op.SET_RECOVERY, flags: Flag.CMD_WRITE }, p: Buffer.alloc(24) }),
  [Op.SET_VNODES]: () => ({ f: { opcode: Op.SET_VNODES, flags: Flag.CMD_WRITE }, p: Buffer.from([0, 0, 0, 0, 0, 0, 0, 0]) }),
  [Op.GET_VNODES]: () => ({ f: { opcode: Op.GET_VNODES, dataLength: 4 } }),
  // this implementation's own operations
  [Op.OBJ_COPIES]: () => ({ f: { opcode: Op.OBJ_COPIES, epoch: 1, dataLength: pick([0, 16, 4096, MB]), obj: { cowOid: BigInt(ri(2 ** 31)) } } }),
  [Op.FETCH_OBJ]: () => ({ f: { opcode: Op.FETCH_OBJ, epoch: 1, flags: pick([0, Flag.CMD_WILDCARD]), dataLength: pick([0, 8, 9, 4096 + 8, OBJ + 8, 0xffffffff]), obj: { oid: victimOid(), offset: pick([0, 1, OBJ - 1, OBJ, 0xffffffff]), tgtEpoch: 1 } } }),
  [Op.SLICE_HASHES]: () => ({ f: { opcode: Op.SLICE_HASHES, epoch: 1, flags: pick([0, Flag.CMD_WILDCARD]), dataLength: pick([0, 16, 16 + 20 * 32, 0xffffffff]), obj: { oid: victimOid(), tgtEpoch: 1 } } }),
  [Op.CHECK_HELD]: () => { const n = ri(20); const p = Buffer.alloc(12 * n); for (let i = 0; i < n; i++) { p.writeBigUInt64LE(victimOid(), 12 * i); p.writeUInt32LE(ri(5), 12 * i + 8); } return { f: { opcode: Op.CHECK_HELD, epoch: 1, flags: Flag.CMD_WRITE, dataLength: p.length }, p }; },
  [Op.SCRUB_STATUS]: () => ({ f: { opcode: Op.SCRUB_STATUS, dataLength: pick([0, 16, 4096]) } }),
  [Op.RECLAIM_STATUS]: () => ({ f: { opcode: Op.RECLAIM_STATUS, dataLength: pick([0, 8, 4096, 65536]) } }),
  [Op.FARM_STAT]: () => ({ f: { opcode: Op.FARM_STAT, dataLength: pick([0, 4096]) } }),
  [Op.FARM_READ]: () => ({ f: { opcode: Op.FARM_READ, dataLength: pick([0, 4096, MB]), obj: { oid: BigInt(ri(2 ** 31)), cowOid: BigInt(ri(2 ** 31)), offset: ri(2 ** 31) } } }),
  [Op.FARM_DELETE]: () => ({ f: { opcode: Op.FARM_DELETE, flags: Flag.CMD_WRITE }, p: name(pick(['nosuch', 'fuzz'])) }),
};
void vidToAttrOid;
// Operations serialised cluster-wide (and some of them fsync a 12 MiB inode)
// are an eighth as likely as the others: a flood of them measures the disk,
// not sheep's handling of hostile input (each connection may have only one
// queued anyway).
const SLOW = new Set([Op.NEW_VDI, Op.DEL_VDI, Op.GET_VDI_ATTR, Op.LOCK_VDI, Op.GET_VDI_INFO, Op.RELEASE_VDI, Op.NOTIFY_VDI_ADD,
  Op.NOTIFY_VDI_DEL, Op.ALTER_CLUSTER_COPY, Op.ALTER_VDI_COPY, Op.ENABLE_RECOVER, Op.DISABLE_RECOVER, Op.FORCE_RECOVER]);
const opcodes = Object.keys(templates).map(Number).flatMap((op) => (SLOW.has(op) ? [op] : Array(8).fill(op)));

const BOUNDS = [0, 1, 47, 48, 4095, 4096, OBJ - 1, OBJ, OBJ + 1, 2 ** 30, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1];
/** One request's bytes: a template, then a few mutations of its encoded header and payload. */
function mutant() {
  let op = pick(opcodes);
  const t = templates[op]();
  const hdr = encodeRequest({ dataLength: t.p?.length ?? t.f.dataLength ?? 0, ...t.f });
  let p = t.p ?? Buffer.alloc(0);
  const n = ri(4);
  for (let i = 0; i < n; i++) {
    switch (ri(9)) {
      case 0: hdr.writeUInt32LE(pick(BOUNDS), 12); break; // data_length
      case 1: hdr.writeUInt32LE(pick(BOUNDS), 40); break; // obj offset
      case 2: hdr[16 + ri(32)] = pick([0, 1, 0x7f, 0x80, 0xff, ri(256)]); break; // a union byte
      case 3: hdr[2] ^= 1 << ri(8); hdr[3] ^= ri(2) ? 1 << ri(8) : 0; break; // flags
      case 4: hdr[0] = pick([0, 1, 2, 3, 0x0a, 0x0b, 0xff]); break; // proto_ver
      // a payload shorter than data_length says desynchronises the stream: rare, or every connection would be short
      case 5: p = ri(20) ? p.subarray(0, ri(p.length + 1)) : p; if (ri(20)) hdr.writeUInt32LE(p.length, 12); break; // truncated
      case 6: p = Buffer.concat([p, bytes(ri(300))]); hdr.writeUInt32LE(p.length, 12); break; // padded
      case 7: p = bytes(ri(600)); if (ri(20)) hdr.writeUInt32LE(p.length, 12); break; // replaced
      case 8: hdr[1] = ri(256); break; // another opcode's header
    }
  }
  op = hdr[1];
  // never a valid request that stops or wipes the cluster
  if (DANGEROUS.has(op)) hdr[0] = 0x07; // a protocol version nobody speaks: VER_MISMATCH, whatever the rest says
  const writes = (hdr.readUInt16LE(2) & Flag.CMD_WRITE) !== 0;
  const len = hdr.readUInt32LE(12);
  // what follows the header is what data_length says when WRITE is set (a short payload desynchronises on purpose)
  const body = writes ? (p.length >= len ? p.subarray(0, len) : p) : Buffer.alloc(0);
  return { hdr, body, full: !writes || body.length === len };
}

// ---- counters ------------------------------------------------------------------------
const stats = { sent: 0, replies: 0, closed: 0, nbdSent: 0, nbdReplies: 0, nbdClosed: 0, checks: 0, wrong: 0, hangs: 0, results: {} };
const end = Date.now() + seconds * 1000;
const running = () => Date.now() < end && !crashed;
let base = rss();
let peak = base;
const sampler = setInterval(() => { const r = rss(); if (r > peak) peak = r; }, 100);

// ---- sheepdog port mutators ----------------------------------------------------------------
async function sheepFuzzer(i) {
  while (running()) {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('error', () => undefined);
    let rx = Buffer.alloc(0);
    let outstanding = 0;
    let closed = false;
    let closedBySheep = false;
    s.on('end', () => { closedBySheep = true; });
    const done = new Promise((resolve) => s.on('close', () => { closed = true; resolve(); }));
    s.on('data', (b) => {
      rx = rx.length ? Buffer.concat([rx, b]) : b;
      while (rx.length >= 48) {
        const h = new ResponseHeader(Buffer.from(rx.subarray(0, 48)));
        if (rx.length < 48 + h.dataLength) break;
        rx = rx.subarray(48 + h.dataLength);
        outstanding--;
        stats.replies++;
        stats.results[h.result] = (stats.results[h.result] ?? 0) + 1;
      }
    });
    await new Promise((r) => { s.once('connect', r); s.once('error', r); });
    // pipelined mutants, up to 128 unanswered, until sheep closes the connection (or it has had a few thousand)
    let lastReply = Date.now();
    let seen = stats.replies;
    for (let sentHere = 0; sentHere < 4000 && !closed && running();) {
      const parts = [];
      const k = 1 + ri(64);
      let desync = false;
      for (let j = 0; j < k && !desync; j++) {
        const m = mutant();
        parts.push(m.hdr, m.body);
        stats.sent++;
        sentHere++;
        outstanding++;
        if (!m.full) desync = true; // the rest of the stream would be its payload
      }
      s.write(Buffer.concat(parts));
      if (desync) {
        // what sheep makes of a stream that stops mid-payload: it answers what came before, then waits or closes
        const t0 = Date.now();
        while (outstanding > 1 && !closed && Date.now() - t0 < 1000) await new Promise((r) => setTimeout(r, 2));
        break;
      }
      while (outstanding > 64 && !closed) {
        await new Promise((r) => setTimeout(r, 1));
        if (stats.replies !== seen) { seen = stats.replies; lastReply = Date.now(); }
        if (Date.now() - lastReply > 3000) break;
      }
      if (Date.now() - lastReply > 3000) break;
    }
    s.destroy();
    await done;
    stats.closed++;
    if (process.env.FUZZ_DEBUG && stats.closed < 60) console.error(`conn ${i}: left ${outstanding} unanswered, closed by sheep: ${closedBySheep}`);
  }
}

// ---- NBD mutators ------------------------------------------------------------------------------
const NBD_REQ = 0x25609513;
const IHAVEOPT = 0x49484156454f5054n;
function nbdOpt(opt, data) {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(IHAVEOPT, 0);
  h.writeUInt32BE(opt >>> 0, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}
function goData(nm) {
  const nb = Buffer.from(nm);
  const d = Buffer.alloc(4 + nb.length + 2);
  d.writeUInt32BE(nb.length, 0);
  nb.copy(d, 4);
  return d;
}
function nbdRequest(type, flags, offset, length, payload) {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(NBD_REQ, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(ri(1e9)), 8);
  h.writeBigUInt64BE(BigInt(offset), 16);
  h.writeUInt32BE(length >>> 0, 24);
  return payload ? Buffer.concat([h, payload]) : h;
}
const EXPORT = 64 * MB;
async function nbdFuzzer() {
  while (running()) {
    const s = net.connect({ host: '127.0.0.1', port: nbdPort });
    s.on('error', () => undefined);
    let closed = false;
    let got = 0;
    const done = new Promise((resolve) => s.on('close', () => { closed = true; resolve(); }));
    s.on('data', (b) => { got += b.length; });
    await new Promise((r) => { s.once('connect', r); s.once('error', r); });
    const parts = [];
    // handshake: usually right, sometimes not
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(ri(10) ? 3 : ri(2 ** 32));
    parts.push(flags);
    for (let o = ri(3); o > 0; o--) {
      const opt = pick([1, 2, 3, 5, 6, 8, 9, 10, ri(2 ** 32), 7]);
      const data = pick([goData('fuzz-victim'), goData('x'.repeat(ri(6000))), bytes(ri(100)), goData('fuzz-victim:1'), Buffer.alloc(0)]);
      if (opt !== 7 && opt !== 2 && opt !== 1) { parts.push(nbdOpt(opt, data)); stats.nbdSent++; }
    }
    if (ri(8) === 0) parts.push(nbdRequest(0, 0, 0, 4096)); // a request before the handshake ended
    parts.push(nbdOpt(7, goData('fuzz-victim')));
    stats.nbdSent++;
    const n = 1 + ri(400);
    for (let j = 0; j < n; j++) {
      const type = ri(12) === 0 ? ri(16) : pick([0, 0, 1, 1, 3, 4, 6]);
      const length = ri(4) ? pick([0, 1, 512, 4096, 65536, 131072]) : pick([32 * MB, 32 * MB + 1, 2 ** 31, 2 ** 32 - 1]);
      const offset = ri(3) ? ri(EXPORT - 131072) : pick([EXPORT - 1, EXPORT, EXPORT + 4096, 2 ** 53, 2 ** 63]);
      const fl = ri(4) ? 0 : ri(65536);
      const payload = type === 1 && length <= 131072 ? Buffer.alloc(length, 0x5a) : undefined;
      parts.push(nbdRequest(type, fl, offset, length, payload));
      stats.nbdSent++;
      if (type === 1 && !payload) break; // a huge write: the rest would be its payload
      if (ri(50) === 0) parts.push(bytes(ri(64)));
    }
    if (ri(3) === 0) parts.push(nbdRequest(2, 0, 0, 0));
    s.write(Buffer.concat(parts));
    const t0 = Date.now();
    let last = -1;
    while (!closed && Date.now() - t0 < 3000 && running()) {
      await new Promise((r) => setTimeout(r, 20));
      if (got === last && Date.now() - t0 > 300) break;
      last = got;
    }
    stats.nbdReplies += got > 0 ? 1 : 0;
    s.destroy();
    await done;
    stats.nbdClosed++;
  }
}

// ---- the checker: valid requests with known answers, through both ports ---------------------------
/** A valid request slower than this is a hang (the machine may be loaded: this is about stuck, not slow). */
const HANG_MS = 30_000;
const slowest = { sheep: 0, nbd: 0 };
async function withTimeout(p, what) {
  let t;
  const t0 = Date.now();
  const r = await Promise.race([p, new Promise((res) => { t = setTimeout(() => res('hang'), HANG_MS); })]);
  clearTimeout(t);
  slowest.sheep = Math.max(slowest.sheep, Date.now() - t0);
  if (r === 'hang') {
    stats.hangs++;
    if (!json) console.error(`fuzz: no answer to ${what} within ${HANG_MS / 1000} s`);
  }
  return r;
}
async function sheepChecker() {
  const c = new SheepClient({ port, timeout: 0 });
  // objects of the check VDI exist, each with a known pattern
  const known = new Map();
  for (let i = 0; i < 4; i++) {
    const data = Buffer.alloc(65536, i + 1);
    const oid = vidToDataOid(checkVid, i);
    await c.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid } }, data);
    known.set(i, data);
  }
  while (running()) {
    const i = ri(4);
    const oid = vidToDataOid(checkVid, i);
    const data = Buffer.alloc(65536, ri(256));
    const w = await withTimeout(c.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid } }, data).catch((e) => e), 'WRITE_OBJ');
    if (w === 'hang') continue;
    if (w instanceof Error || w.rsp.result !== Res.SUCCESS) { stats.wrong++; if (!json) console.error(`fuzz: check write failed: ${w instanceof Error ? w.message : w.rsp.result}`); continue; }
    known.set(i, data);
    const r = await withTimeout(c.send({ opcode: Op.READ_OBJ, dataLength: 65536, obj: { oid } }).catch((e) => e), 'READ_OBJ');
    if (r === 'hang') continue;
    stats.checks++;
    if (r instanceof Error || r.rsp.result !== Res.SUCCESS || !r.data.equals(known.get(i))) { stats.wrong++; if (!json) console.error('fuzz: check read gave wrong bytes'); }
    await new Promise((res) => setTimeout(res, 20));
  }
  c.close();
}
async function nbdChecker() {
  // a plain NBD client: handshake, then write/read/verify
  while (running()) {
    const s = net.connect({ host: '127.0.0.1', port: nbdPort });
    s.on('error', () => undefined);
    let rx = Buffer.alloc(0);
    let closed = false;
    s.on('data', (b) => { rx = Buffer.concat([rx, b]); });
    s.on('close', () => { closed = true; });
    const need = async (n) => {
      const t0 = Date.now();
      while (rx.length < n) {
        if (closed) return undefined;
        if (Date.now() - t0 > HANG_MS) { stats.hangs++; if (!json) console.error(`fuzz: NBD check: no answer within ${HANG_MS / 1000} s (${stage}, have ${rx.length} of ${n} bytes)`); return undefined; }
        await new Promise((r) => setTimeout(r, 2));
      }
      slowest.nbd = Math.max(slowest.nbd, Date.now() - t0);
      const out = rx.subarray(0, n);
      rx = rx.subarray(n);
      return out;
    };
    const fail = (why) => { stats.wrong++; if (!json) console.error(`fuzz: NBD check: ${why}`); };
    let stage = 'greeting';
    if (!(await need(18))) { if (running()) fail('no greeting'); s.destroy(); continue; }
    const fl = Buffer.alloc(4);
    fl.writeUInt32BE(3);
    s.write(Buffer.concat([fl, nbdOpt(7, goData('fuzz-check'))]));
    stage = 'GO';
    let ok = false;
    for (;;) {
      const h = await need(20);
      if (!h) break;
      const len = h.readUInt32BE(16);
      if (len && !(await need(len))) break;
      if (h.readUInt32BE(12) === 1) { ok = true; break; }
      if (h.readUInt32BE(12) >= 0x80000000) break;
    }
    if (!ok) { if (running()) fail('GO refused'); s.destroy(); continue; }
    for (let k = 0; k < 50 && running() && !closed; k++) {
      const off = 16 * MB + ri(256) * 4096;
      const data = Buffer.alloc(4096, ri(256));
      stage = `write ${k}`;
      s.write(nbdRequest(1, 0, off, 4096, data));
      const wr = await need(16);
      if (!wr) break;
      if (wr.readUInt32BE(4) !== 0) { fail(`write error ${wr.readUInt32BE(4)}`); continue; }
      stage = `read ${k}`;
      s.write(nbdRequest(0, 0, off, 4096));
      const rh = await need(16);
      if (!rh) break;
      const rd = rh.readUInt32BE(4) === 0 ? await need(4096) : undefined;
      stats.checks++;
      if (!rd || !rd.equals(data)) fail('read gave wrong bytes');
      await new Promise((r) => setTimeout(r, 20));
    }
    s.destroy();
  }
}

// ---- run ---------------------------------------------------------------------------------------------
const t0 = Date.now();
await Promise.all([
  ...Array.from({ length: nconns }, (_, i) => sheepFuzzer(i)),
  // each NBD connection's GO is a VDI lookup, serialised cluster-wide: fewer, longer NBD connections
  ...Array.from({ length: Math.max(1, nconns >> 2) }, () => nbdFuzzer()),
  sheepChecker(),
  nbdChecker(),
]);
clearInterval(sampler);
// still alive and answering?
let alive = !crashed;
if (alive) {
  const r = await withTimeout(admin.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 }).catch((e) => e), 'final GET_NODE_LIST');
  alive = r !== 'hang' && !(r instanceof Error) && r.rsp.result === Res.SUCCESS;
}
// and cluster operations still run: once the mutators stop, a VDI lookup must come back (a stuck cluster lock would not)
let lookupMs = -1;
if (alive) {
  const t = Date.now();
  const r = await Promise.race([
    admin.send({ opcode: Op.GET_VDI_INFO, flags: Flag.CMD_WRITE }, Buffer.concat([encodeFixedString('fuzz-check', 256), Buffer.alloc(256)])).catch((e) => e),
    new Promise((res) => setTimeout(() => res('hang'), 60_000)),
  ]);
  if (r === 'hang' || r instanceof Error || r.rsp.result !== Res.SUCCESS) {
    stats.hangs++;
    if (!json) console.error(`fuzz: a VDI lookup after the run got ${r === 'hang' ? 'no answer in 60 s' : r instanceof Error ? r.message : r.rsp.result}`);
  } else lookupMs = Date.now() - t;
}
admin.close();
const summary = {
  lookupAfterMs: lookupMs, slowestCheckMs: slowest,
  seed, seconds: Math.round((Date.now() - t0) / 1000), sheepRequests: stats.sent, sheepReplies: stats.replies, sheepConnections: stats.closed,
  nbdRequests: stats.nbdSent, nbdConnections: stats.nbdClosed, checks: stats.checks, wrongAnswers: stats.wrong, hangs: stats.hangs,
  crashes: alive ? 0 : 1, baseRssMB: Math.round(base / MB), peakRssMB: Math.round(peak / MB), budgetMB: own ? BUDGET / MB : undefined,
  results: stats.results,
};
const withinBudget = !own || peak - base <= BUDGET + SLACK;
// a handler that threw (a field nobody checked) shows as SYSTEM_ERROR and a logged stack
let internalErrors = [];
if (own) {
  try {
    internalErrors = readFileSync(path.join(dir, 'sheep.log'), 'utf8').split('\n')
      .filter((l) => /(failed|crashed): .*(RangeError|TypeError|ReferenceError|ERR_[A-Z_]+)/.test(l) || /unhandled rejection|internal error/.test(l));
  } catch { /* no log */ }
}
summary.internalErrors = internalErrors.length;
summary.systemErrors = stats.results[Res.SYSTEM_ERROR] ?? 0;
if (json) console.log(JSON.stringify({ ...summary, withinBudget }));
else {
  console.log(`fuzz: seed ${seed}, ${summary.seconds} s: ${stats.sent} sheepdog requests (${stats.replies} answered, ${stats.closed} connections), ${stats.nbdSent} NBD requests (${stats.nbdClosed} connections)`);
  console.log(`fuzz: ${stats.checks} valid requests checked, ${stats.wrong} wrong answers, ${stats.hangs} hangs, ${summary.crashes} crashes; slowest valid answer ${slowest.sheep} ms (sheepdog), ${slowest.nbd} ms (NBD, handshake included); VDI lookup after the run ${lookupMs} ms`);
  console.log(`fuzz: ${summary.systemErrors} SYSTEM_ERROR answers, ${internalErrors.length} internal errors logged`);
  for (const l of internalErrors.slice(0, 5)) console.log(`fuzz:   ${l.slice(0, 300)}`);
  console.log(`fuzz: RSS ${summary.baseRssMB} MB at start, peak ${summary.peakRssMB} MB${own ? ` (budget ${BUDGET / MB} MB + ${SLACK / MB} MB slack: ${withinBudget ? 'within' : 'OVER'})` : ''}`);
}
if (own) {
  own.removeAllListeners('exit');
  own.kill('SIGKILL');
  await new Promise((r) => own.once('exit', r));
  if (args.includes('--keep')) console.log(`fuzz: sheep's directory kept: ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}
process.exit(alive && stats.hangs === 0 && stats.wrong === 0 && withinBudget && !internalErrors.length && !summary.systemErrors ? 0 : 1);
