// Erasure-coded I/O through the sheepdog protocol against copies=3, on
// local clusters (one zone per node, -n): whole-object writes and reads
// of BENCH_EC_MB (default 64) MiB with 4 objects in flight, then reads of
// the same data right after one node (never the gateway) is killed with
// SIGKILL, recovery disabled: each read finds its strips (or replicas)
// where the failure left them, decoding or fetching on demand.
//   copies=3 on 3 nodes, EC 2:1 on 3 nodes, EC 4:2 on 6 nodes
//   (and copies=3 on 6 nodes, the same hardware as 4:2)
import { SheepClient, Op, Flag, timestamp64, encodeFixedString, vidToDataOid, vidToVdiOid, ecPolicyByte, decodeNodes } from '@sheepdog/common';
import { startSheep, cleanup } from './lib.mjs';

const MB = Number(process.env.BENCH_EC_MB ?? 64);
const OBJ = 4 << 20;
const N = Math.max(1, Math.round((MB << 20) / OBJ));
const DEPTH = 4;

const payload = Buffer.alloc(OBJ);
for (let i = 0; i < OBJ; i += 4) payload.writeUInt32LE((i * 2654435761) >>> 0, i);

async function pool(n, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: DEPTH }, async () => { while (next < n) await fn(next++); }));
}

const rate = (bytes, ms) => (bytes / 1048576 / (ms / 1000)).toFixed(1);

async function one(label, nodesNr, copies, d, p) {
  const cluster = `local:bench-ec-${process.pid}-${label.replace(/[^a-z0-9]/gi, '')}`;
  const nodes = [];
  for (let i = 0; i < nodesNr; i++) nodes.push(await startSheep({ cluster, zone: i, args: ['-n'] }));
  const c = new SheepClient({ port: nodes[0].port, timeout: 300_000 });
  try {
    for (let i = 0; i < 100; i++) {
      const r = await c.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 });
      if (decodeNodes(r.data).length >= nodesNr || i === 99) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await c.request({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 3, ctime: timestamp64(), flags: 4 } }, Buffer.from('plain\0'));
    const cp = d ? ecPolicyByte(d, p) : 0;
    const r = await c.request({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(N * OBJ), copies, copyPolicy: cp } }, encodeFixedString('bench', 256));
    const vid = r.rsp.vdi.vdiId;
    const obj = (i) => ({ oid: vidToDataOid(vid, i), copies, copyPolicy: cp });
    let t = Date.now();
    await pool(N, async (i) => {
      await c.request({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: obj(i) }, payload);
      const e = Buffer.alloc(4);
      e.writeUInt32LE(vid);
      await c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: 4664 + 4 * i, copies } }, e);
    });
    const w = rate(N * OBJ, Date.now() - t);
    const readAll = async () => {
      const t0 = Date.now();
      await pool(N, async (i) => {
        const got = await c.request({ opcode: Op.READ_OBJ, dataLength: OBJ, obj: obj(i) });
        if (!got.data.equals(payload)) throw new Error(`${label}: object ${i} read back wrong`);
      });
      return rate(N * OBJ, Date.now() - t0);
    };
    const rd = await readAll();
    await c.request({ opcode: Op.DISABLE_RECOVER });
    await nodes[nodesNr - 1].kill();
    await new Promise((r) => setTimeout(r, 500));
    const deg = await readAll();
    console.log(`${label.padEnd(22)} write ${w.padStart(6)} MB/s   read ${rd.padStart(6)} MB/s   read after a node loss ${deg.padStart(6)} MB/s`);
  } finally {
    c.close();
    await cleanup();
  }
}

console.log(`${MB} MiB in 4 MiB objects, ${DEPTH} in flight, through node 0`);
await one('copies=3, 3 nodes', 3, 3, 0, 0);
await one('EC 2:1, 3 nodes', 3, 3, 2, 1);
await one('copies=3, 6 nodes', 6, 3, 0, 0);
await one('EC 4:2, 6 nodes', 6, 6, 4, 2);
