// 4 KiB random I/O at queue depth 32 over the sheepdog protocol itself
// (what QEMU's driver sends), 1 node copies=1 and 3 nodes copies=3, nosync.
import { SheepClient, Op, Flag, vidToDataOid } from '@sheepdog/common';
import { startSheep, cleanup, format, fillVdi } from './lib.mjs';

const SECS = Number(process.env.BENCH_SECS ?? 5);
async function run(nodes, copies, label) {
  const cluster = `local:bench-${process.pid}-${nodes}`;
  const hs = [];
  for (let i = 0; i < nodes; i++) hs.push(await startSheep({ cluster, zone: i, args: ['-n'] }));
  await new Promise((r) => setTimeout(r, 300));
  await format(hs[0].port, copies);
  const size = 256 << 20;
  const { vid, objects } = await fillVdi(hs[0].port, 'iops', size);
  const c = new SheepClient({ port: hs[0].port, timeout: 60_000 });
  const buf = Buffer.alloc(4096, 7);
  for (const mode of ['write', 'read']) {
    let n = 0;
    const end = Date.now() + SECS * 1000;
    const worker = async () => {
      while (Date.now() < end) {
        const idx = Math.floor(Math.random() * objects);
        const off = Math.floor(Math.random() * 1024) * 4096;
        if (mode === 'write') await c.request({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, idx), offset: off } }, buf);
        else await c.request({ opcode: Op.READ_OBJ, dataLength: 4096, obj: { oid: vidToDataOid(vid, idx), offset: off } });
        n++;
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    console.log(`${label}: 4K random ${mode} QD32: ${Math.round(n / SECS)} IOPS`);
  }
  c.close();
  for (const h of hs) await h.kill();
}
try {
  await run(1, 1, '1 node copies=1');
  await run(3, 3, '3 nodes copies=3');
} finally {
  await cleanup();
}
