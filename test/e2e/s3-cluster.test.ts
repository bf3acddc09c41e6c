// sheep --s3 on a 3-node cluster with copies=3: a node killed in the middle
// of a multipart upload loses no acknowledged part; one gateway writes a
// bucket at a time (another refuses writes, naming it); and after the
// gateway that wrote the bucket is killed too, another node's gateway
// serves everything from the bucket's VDI and writes it.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import {
  S3Client, CreateBucketCommand, PutObjectCommand, GetObjectCommand, CreateMultipartUploadCommand, UploadPartCommand,
  CompleteMultipartUploadCommand, ListObjectsV2Command,
} from '@aws-sdk/client-s3';
import { stopAll, runCollie } from '../helpers/cluster.js';
import { startS3Cluster, S3Cluster } from '../helpers/s3.js';

const MiB = 1 << 20;

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + seed * 131 + (i >>> 10)) & 0xff;
  return b;
}

async function body(r: { Body?: unknown }): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r.Body as AsyncIterable<Buffer>) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

describe('S3 gateway on 3 nodes, copies=3', () => {
  let g: S3Cluster;
  let s3: S3Client;

  beforeAll(async () => {
    g = await startS3Cluster(3, 3, ['-n'], 2);
    s3 = g.client();
  }, 90_000);
  afterAll(async () => {
    s3?.destroy();
    await stopAll();
  });

  it('loses no acknowledged part when a node dies mid-upload, and another gateway serves the bucket', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'ha-bucket' }));
    const vl = await runCollie(['vdi', 'list', '-r'], { port: g.nodes[0].port });
    // name, id, size, used, shared, time, vid, copies (raw dog format)
    expect(vl.stdout).toMatch(/^= s3\/ha-bucket 0 4398046511104 \d+ \d+ \d+ [0-9a-f]+ 3 /m);
    const small = pattern(100_000, 1);
    await s3.send(new PutObjectCommand({ Bucket: 'ha-bucket', Key: 'before', Body: small }));
    // the second gateway loads the bucket now, and must see later writes of the first
    const other = g.client({ port: g.s3Ports[1] });
    expect((await body(await other.send(new GetObjectCommand({ Bucket: 'ha-bucket', Key: 'before' })))).equals(small)).toBe(true);
    // one gateway writes a bucket at a time: the other says which one
    const refused = await other.send(new PutObjectCommand({ Bucket: 'ha-bucket', Key: 'elsewhere', Body: small })).then(() => undefined, (e: Error & { $metadata?: { httpStatusCode?: number } }) => e);
    expect(refused?.$metadata?.httpStatusCode, String(refused)).toBe(503);
    expect(refused?.message).toContain(`127.0.0.1:${g.nodes[0].port}`);
    const id = (await s3.send(new CreateMultipartUploadCommand({ Bucket: 'ha-bucket', Key: 'big' }))).UploadId!;
    const parts = Array.from({ length: 6 }, (_, i) => pattern(5 * MiB + (i === 5 ? -12345 : 0), 10 + i));
    const etags: string[] = [];
    const up = async (n: number) => {
      // an upload the dying node failed may be sent again, as clients do
      for (let attempt = 0; ; attempt++) {
        try {
          return (await s3.send(new UploadPartCommand({ Bucket: 'ha-bucket', Key: 'big', UploadId: id, PartNumber: n, Body: parts[n - 1] }))).ETag!;
        } catch (e) {
          if (attempt >= 3) throw e;
        }
      }
    };
    for (let n = 1; n <= 2; n++) etags.push(await up(n));
    // node 2 dies while parts 3 and 4 are on their way
    const inflight = [up(3), up(4)];
    await new Promise((r) => setTimeout(r, 30));
    await g.nodes[2].kill();
    etags.push(...(await Promise.all(inflight)));
    for (let n = 5; n <= 6; n++) etags.push(await up(n));
    const done = await s3.send(new CompleteMultipartUploadCommand({
      Bucket: 'ha-bucket', Key: 'big', UploadId: id, MultipartUpload: { Parts: etags.map((e, i) => ({ PartNumber: i + 1, ETag: e })) },
    }));
    const want = createHash('md5').update(Buffer.concat(parts.map((p) => createHash('md5').update(p).digest()))).digest('hex') + '-6';
    expect(done.ETag).toBe(`"${want}"`);
    expect((await body(await s3.send(new GetObjectCommand({ Bucket: 'ha-bucket', Key: 'big' })))).equals(Buffer.concat(parts))).toBe(true);

    // now the writing gateway dies too: node 1 serves the bucket from its VDI
    await g.nodes[0].kill();
    await new Promise((r) => setTimeout(r, 1100));
    try {
      const l = await other.send(new ListObjectsV2Command({ Bucket: 'ha-bucket' }));
      expect(l.Contents?.map((o) => [o.Key, o.Size])).toEqual([['before', small.length], ['big', 30 * MiB - 12345]]);
      expect((await body(await other.send(new GetObjectCommand({ Bucket: 'ha-bucket', Key: 'before' })))).equals(small)).toBe(true);
      const r = await other.send(new GetObjectCommand({ Bucket: 'ha-bucket', Key: 'big', Range: `bytes=${10 * MiB - 5}-${20 * MiB + 4}` }));
      expect((await body(r)).equals(Buffer.concat(parts).subarray(10 * MiB - 5, 20 * MiB + 5))).toBe(true);
      expect(r.ETag).toBe(`"${want}"`);
      // the writer's node is gone: this gateway writes the bucket now, on top of what the other committed
      const after = pattern(70_000, 3);
      await other.send(new PutObjectCommand({ Bucket: 'ha-bucket', Key: 'after', Body: after }));
      const l2 = await other.send(new ListObjectsV2Command({ Bucket: 'ha-bucket' }));
      expect(l2.Contents?.map((o) => o.Key)).toEqual(['after', 'before', 'big']);
      expect((await body(await other.send(new GetObjectCommand({ Bucket: 'ha-bucket', Key: 'after' })))).equals(after)).toBe(true);
      expect((await body(await other.send(new GetObjectCommand({ Bucket: 'ha-bucket', Key: 'big' })))).equals(Buffer.concat(parts))).toBe(true);
    } finally {
      other.destroy();
    }
  }, 120_000);
});
