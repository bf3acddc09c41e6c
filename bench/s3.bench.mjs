// S3 gateway throughput through @aws-sdk/client-s3 (signed payloads, keep-alive):
// PUT and GET MB/s of 1 MiB and 64 MiB objects, and 4 KiB requests per
// second, on 1 node copies=1 and 3 nodes copies=3 (nosync). The client runs
// on the same machine and signs every byte (SHA-256), so on a small machine
// part of what is measured is the client.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { S3Client, CreateBucketCommand, PutObjectCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { startSheep, cleanup, format, freePort, waitPort, ROOT } from './lib.mjs';

const SECS = Number(process.env.BENCH_SECS ?? 5);
const AK = 'SDBENCHACCESSKEY0001';
const SK = 'bench-secret-key-0123456789';

async function drain(body) {
  let n = 0;
  for await (const c of body) n += c.length;
  return n;
}

/** Run op(i) with `depth` in flight for SECS seconds (or `count` ops); returns ops and bytes per second. */
async function timed(depth, op, count = Infinity) {
  let next = 0;
  let bytes = 0;
  const t0 = process.hrtime.bigint();
  const end = Date.now() + SECS * 1000;
  const worker = async () => {
    while (Date.now() < end && next < count) {
      const n = await op(next++); // not `bytes += await ...`: that adds to the value read before the await
      bytes += n;
    }
  };
  await Promise.all(Array.from({ length: depth }, worker));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { ops: next / s, mbs: bytes / s / 1e6, n: next };
}

async function run(nodes, copies, label) {
  const cluster = `local:bench-s3-${process.pid}-${nodes}`;
  const s3Port = await freePort();
  const hs = [];
  for (let i = 0; i < nodes; i++) hs.push(await startSheep({ cluster, zone: i, args: ['-n', ...(i === 0 ? ['--s3', `127.0.0.1:${s3Port}`] : [])] }));
  await new Promise((r) => setTimeout(r, 300));
  await format(hs[0].port, copies);
  await waitPort(s3Port);
  const add = spawnSync(process.execPath, [path.join(ROOT, 'collie/bin/collie.js'), 's3', 'user', 'add', 'bench', AK, SK, '-p', String(hs[0].port)]);
  if (add.status !== 0) throw new Error(`collie s3 user add: ${add.stderr}`);
  const s3 = new S3Client({
    endpoint: `http://127.0.0.1:${s3Port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: AK, secretAccessKey: SK },
    requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
  });
  await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
  const out = [];
  for (const [size, depth, name] of [[1 << 20, 8, '1 MiB'], [64 << 20, 2, '64 MiB'], [4096, 32, '4 KiB']]) {
    const body = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4) body.writeUInt32LE((i * 2654435761) >>> 0, i);
    const put = await timed(depth, async (i) => {
      await s3.send(new PutObjectCommand({ Bucket: 'bench', Key: `${name}/${i}`, Body: body }));
      return size;
    });
    const written = put.n;
    const get = await timed(depth, async (i) => drain((await s3.send(new GetObjectCommand({ Bucket: 'bench', Key: `${name}/${i % written}` }))).Body));
    if (size === 4096) out.push(`${label}: 4 KiB objects, ${depth} in flight: PUT ${Math.round(put.ops)} req/s, GET ${Math.round(get.ops)} req/s`);
    else out.push(`${label}: ${name} objects, ${depth} in flight: PUT ${put.mbs.toFixed(1)} MB/s, GET ${get.mbs.toFixed(1)} MB/s`);
    console.log(out[out.length - 1]);
  }
  s3.destroy();
  for (const h of hs) await h.kill();
}

try {
  await run(1, 1, '1 node copies=1');
  await run(3, 3, '3 nodes copies=3');
} finally {
  await cleanup();
}
