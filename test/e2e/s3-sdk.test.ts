// sheep --s3 driven by the AWS SDK for JavaScript (@aws-sdk/client-s3) and
// by plain HTTP: buckets, objects, ranges, listings, multipart, metadata,
// ETags, Content-MD5, presigned URLs, refused signatures, and a restart of
// the node (the bucket index is replayed from its VDI).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import * as net from 'node:net';
import {
  S3Client, ListBucketsCommand, CreateBucketCommand, DeleteBucketCommand, HeadBucketCommand, PutObjectCommand,
  GetObjectCommand, HeadObjectCommand, DeleteObjectCommand, DeleteObjectsCommand, CopyObjectCommand,
  ListObjectsV2Command, ListObjectsCommand, CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand,
  AbortMultipartUploadCommand, ListPartsCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { stopAll, startSheep, runCollie } from '../helpers/cluster.js';
import { startS3Cluster, S3Cluster, ACCESS_KEY, SECRET_KEY } from '../helpers/s3.js';

const signer = new SignatureV4({
  service: 's3', region: 'us-east-1', sha256: Hash.bind(null, 'sha256'), uriEscapePath: false,
  credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY },
});

const MiB = 1 << 20;
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/** Deterministic bytes: byte i of the stream is a function of i and the seed. */
function pattern(len: number, seed: number, at = 0): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) {
    const x = at + i;
    b[i] = (x * 31 + seed * 17 + (x >>> 8) * 7 + (x >>> 16) * 13) & 0xff;
  }
  return b;
}

async function body(r: { Body?: unknown }): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r.Body as AsyncIterable<Buffer>) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    const err = e as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
    // a 304 has no body to name it
    if (err.$metadata?.httpStatusCode === 304) return 'NotModified';
    return err.Code ?? err.name ?? 'error';
  }
  return 'ok';
}

describe('S3 gateway with the AWS SDK', () => {
  let g: S3Cluster;
  let s3: S3Client;

  beforeAll(async () => {
    g = await startS3Cluster(1, 1);
    s3 = g.client();
  }, 60_000);
  afterAll(async () => {
    s3?.destroy();
    await stopAll();
  });

  it('creates, heads, lists and deletes buckets, with S3 error codes', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'alpha' }));
    await s3.send(new CreateBucketCommand({ Bucket: 'beta' }));
    const l = await s3.send(new ListBucketsCommand({}));
    expect(l.Buckets?.map((b) => b.Name)).toEqual(['alpha', 'beta']);
    expect(l.Buckets?.[0].CreationDate?.getTime()).toBeGreaterThan(Date.now() - 600_000);
    await s3.send(new HeadBucketCommand({ Bucket: 'alpha' }));
    expect(await code(s3.send(new HeadBucketCommand({ Bucket: 'nosuch' })))).toBe('NotFound');
    expect(await code(s3.send(new CreateBucketCommand({ Bucket: 'alpha' })))).toBe('BucketAlreadyOwnedByYou');
    expect(await code(s3.send(new CreateBucketCommand({ Bucket: 'Bad_Name' })))).toBe('InvalidBucketName');
    expect(await code(s3.send(new GetObjectCommand({ Bucket: 'nosuch', Key: 'k' })))).toBe('NoSuchBucket');
    await s3.send(new PutObjectCommand({ Bucket: 'beta', Key: 'x', Body: 'x' }));
    expect(await code(s3.send(new DeleteBucketCommand({ Bucket: 'beta' })))).toBe('BucketNotEmpty');
    await s3.send(new DeleteObjectCommand({ Bucket: 'beta', Key: 'x' }));
    await s3.send(new DeleteBucketCommand({ Bucket: 'beta' }));
    expect((await s3.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toEqual(['alpha']);
    // the bucket is a VDI the cluster's tools see
    const vl = await runCollie(['vdi', 'list', '-r'], { port: g.nodes[0].port });
    expect(vl.stdout).toMatch(/s3\/alpha /);
    expect(vl.stdout).not.toMatch(/s3\/beta /);
  });

  it('puts and gets objects with metadata, ETag = MD5, ranges and conditional reads', async () => {
    const data = pattern(3 * MiB + 12345, 1);
    const put = await s3.send(new PutObjectCommand({
      Bucket: 'alpha', Key: 'dir/obj ü+&.bin', Body: data, ContentType: 'application/x-test', Metadata: { colour: 'blue', Owner: 'me' },
    }));
    expect(put.ETag).toBe(`"${md5(data)}"`);
    const got = await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'dir/obj ü+&.bin' }));
    expect(got.ContentType).toBe('application/x-test');
    expect(got.Metadata).toEqual({ colour: 'blue', owner: 'me' });
    expect(got.ETag).toBe(`"${md5(data)}"`);
    expect((await body(got)).equals(data)).toBe(true);
    const h = await s3.send(new HeadObjectCommand({ Bucket: 'alpha', Key: 'dir/obj ü+&.bin' }));
    expect(h.ContentLength).toBe(data.length);
    for (const [range, a, z] of [['bytes=0-0', 0, 1], ['bytes=1048570-2097160', 1048570, 2097161], ['bytes=-100', data.length - 100, data.length], ['bytes=3145000-', 3145000, data.length], ['bytes=0-99999999', 0, data.length]] as const) {
      const r = await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'dir/obj ü+&.bin', Range: range }));
      expect(r.ContentRange).toBe(`bytes ${a}-${z - 1}/${data.length}`);
      expect((await body(r)).equals(data.subarray(a, z))).toBe(true);
    }
    expect(await code(s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'dir/obj ü+&.bin', Range: `bytes=${data.length}-` })))).toBe('InvalidRange');
    expect(await code(s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'nope' })))).toBe('NoSuchKey');
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: 'alpha', Key: 'nope' })))).toBe('NotFound');
    expect(await code(s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'dir/obj ü+&.bin', IfNoneMatch: `"${md5(data)}"` })))).toBe('NotModified');
    // empty object, overwrite, delete
    await s3.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'empty', Body: Buffer.alloc(0) }));
    expect((await body(await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'empty' })))).length).toBe(0);
    await s3.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'empty', Body: 'now full' }));
    expect((await body(await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'empty' })))).toString()).toBe('now full');
    await s3.send(new DeleteObjectCommand({ Bucket: 'alpha', Key: 'empty' }));
    await s3.send(new DeleteObjectCommand({ Bucket: 'alpha', Key: 'empty' })); // deleting nothing succeeds, as S3
    expect(await code(s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'empty' })))).toBe('NoSuchKey');
  });

  it('streams a body of unknown pieces (a Node stream) and checks Content-MD5', async () => {
    const data = pattern(9 * MiB + 7, 2);
    const stream = Readable.from((function* () { for (let i = 0; i < data.length; i += 65536) yield data.subarray(i, i + 65536); })());
    await s3.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'streamed', Body: stream, ContentLength: data.length }));
    expect((await body(await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'streamed' })))).equals(data)).toBe(true);
    const good = createHash('md5').update('payload').digest('base64');
    const bad = createHash('md5').update('other').digest('base64');
    await s3.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'md5', Body: 'payload', ContentMD5: good }));
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'md5', Body: 'payload!', ContentMD5: bad })))).toBe('BadDigest');
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'md5', Body: 'payload', ContentMD5: 'not-base64' })))).toBe('InvalidDigest');
    // the refused write left the object as it was
    expect((await body(await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'md5' })))).toString()).toBe('payload');
  });

  it('lists with prefix, delimiter, max-keys and continuation tokens (V2 and V1)', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'lister' }));
    const keys = ['a', 'b/1', 'b/2', 'b/c/3', 'c', 'd/1', 'e'];
    for (let i = 0; i < 20; i++) keys.push(`many/${String(i).padStart(2, '0')}`);
    await Promise.all(keys.map((k) => s3.send(new PutObjectCommand({ Bucket: 'lister', Key: k, Body: k }))));
    const all = await s3.send(new ListObjectsV2Command({ Bucket: 'lister' }));
    expect(all.Contents?.map((o) => o.Key)).toEqual([...keys].sort());
    expect(all.Contents?.find((o) => o.Key === 'b/1')?.Size).toBe(3);
    expect(all.KeyCount).toBe(keys.length);
    const top = await s3.send(new ListObjectsV2Command({ Bucket: 'lister', Delimiter: '/' }));
    expect(top.Contents?.map((o) => o.Key)).toEqual(['a', 'c', 'e']);
    expect(top.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['b/', 'd/', 'many/']);
    const b = await s3.send(new ListObjectsV2Command({ Bucket: 'lister', Prefix: 'b/', Delimiter: '/' }));
    expect(b.Contents?.map((o) => o.Key)).toEqual(['b/1', 'b/2']);
    expect(b.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['b/c/']);
    // pages of 3 items (keys and prefixes together), following tokens
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const r = await s3.send(new ListObjectsV2Command({ Bucket: 'lister', Delimiter: '/', MaxKeys: 3, ContinuationToken: token }));
      seen.push(...(r.Contents ?? []).map((o) => o.Key!), ...(r.CommonPrefixes ?? []).map((p) => p.Prefix!));
      expect(r.KeyCount).toBeLessThanOrEqual(3);
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
      pages++;
    } while (token);
    expect(seen.sort()).toEqual(['a', 'b/', 'c', 'd/', 'e', 'many/']);
    expect(pages).toBe(2);
    const pm: string[] = [];
    token = undefined;
    do {
      const r = await s3.send(new ListObjectsV2Command({ Bucket: 'lister', Prefix: 'many/', MaxKeys: 7, ContinuationToken: token }));
      pm.push(...(r.Contents ?? []).map((o) => o.Key!));
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    expect(pm).toEqual(keys.filter((k) => k.startsWith('many/')));
    const sa = await s3.send(new ListObjectsV2Command({ Bucket: 'lister', StartAfter: 'many/17' }));
    expect(sa.Contents?.map((o) => o.Key)).toEqual(['many/18', 'many/19']);
    expect(await code(s3.send(new ListObjectsV2Command({ Bucket: 'lister', ContinuationToken: 'garbage' })))).toBe('InvalidArgument');
    const v1 = await s3.send(new ListObjectsCommand({ Bucket: 'lister', Prefix: 'many/', MaxKeys: 15 }));
    expect(v1.Contents?.length).toBe(15);
    expect(v1.IsTruncated).toBe(true);
    const v1b = await s3.send(new ListObjectsCommand({ Bucket: 'lister', Prefix: 'many/', Marker: v1.Contents![14].Key }));
    expect(v1b.Contents?.map((o) => o.Key)).toEqual(keys.slice(-5));
    // DeleteObjects: existing and missing keys, quiet off
    const d = await s3.send(new DeleteObjectsCommand({ Bucket: 'lister', Delete: { Objects: [{ Key: 'a' }, { Key: 'b/1' }, { Key: 'missing' }] } }));
    expect(d.Deleted?.map((x) => x.Key).sort()).toEqual(['a', 'b/1', 'missing']);
    expect((await s3.send(new ListObjectsV2Command({ Bucket: 'lister', Prefix: 'b' }))).Contents?.map((o) => o.Key)).toEqual(['b/2', 'b/c/3']);
  });

  it('finishes a GET that began before the object was deleted with the old bytes', async () => {
    const data = pattern(24 * MiB, 6);
    await s3.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'racy', Body: data }));
    const r = await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'racy' }));
    const it = (r.Body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    const parts: Buffer[] = [Buffer.from((await it.next()).value as Buffer)];
    // replaced and then deleted while the reader holds back (its window is far from 24 MiB)
    await s3.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'racy', Body: pattern(24 * MiB, 7) }));
    await s3.send(new DeleteObjectCommand({ Bucket: 'alpha', Key: 'racy' }));
    for (let x = await it.next(); !x.done; x = await it.next()) parts.push(Buffer.from(x.value as Buffer));
    expect(Buffer.concat(parts).equals(data)).toBe(true);
  });

  it('copies objects, keeping or replacing metadata', async () => {
    const data = pattern(5 * MiB + 3, 3);
    await s3.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'src', Body: data, Metadata: { a: '1' } }));
    await s3.send(new CreateBucketCommand({ Bucket: 'copies' }));
    const c1 = await s3.send(new CopyObjectCommand({ Bucket: 'copies', Key: 'dst', CopySource: 'alpha/src' }));
    expect(c1.CopyObjectResult?.ETag).toBe(`"${md5(data)}"`);
    const g1 = await s3.send(new GetObjectCommand({ Bucket: 'copies', Key: 'dst' }));
    expect(g1.Metadata).toEqual({ a: '1' });
    expect((await body(g1)).equals(data)).toBe(true);
    await s3.send(new CopyObjectCommand({ Bucket: 'alpha', Key: 'src', CopySource: 'alpha/src', MetadataDirective: 'REPLACE', Metadata: { b: '2' } }));
    const h = await s3.send(new HeadObjectCommand({ Bucket: 'alpha', Key: 'src' }));
    expect(h.Metadata).toEqual({ b: '2' });
    expect(await code(s3.send(new CopyObjectCommand({ Bucket: 'alpha', Key: 'src', CopySource: 'alpha/src' })))).toBe('InvalidRequest');
    expect(await code(s3.send(new CopyObjectCommand({ Bucket: 'alpha', Key: 'x', CopySource: 'alpha/none' })))).toBe('NoSuchKey');
  });

  it('does multipart uploads: parts, list parts, S3 ETag, abort, errors', async () => {
    const parts = [pattern(5 * MiB, 10), pattern(5 * MiB + 1, 11), pattern(1234, 12)];
    const cr = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'alpha', Key: 'mp', Metadata: { kind: 'multi' }, ContentType: 'text/x-mp' }));
    const id = cr.UploadId!;
    // parts out of order, and part 2 uploaded twice (the second wins)
    const e3 = (await s3.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'mp', UploadId: id, PartNumber: 3, Body: parts[2] }))).ETag!;
    await s3.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'mp', UploadId: id, PartNumber: 2, Body: pattern(5 * MiB + 1, 99) }));
    const e2 = (await s3.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'mp', UploadId: id, PartNumber: 2, Body: parts[1] }))).ETag!;
    const e1 = (await s3.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'mp', UploadId: id, PartNumber: 1, Body: parts[0] }))).ETag!;
    const lp = await s3.send(new ListPartsCommand({ Bucket: 'alpha', Key: 'mp', UploadId: id }));
    expect(lp.Parts?.map((p) => [p.PartNumber, p.Size, p.ETag])).toEqual([[1, 5 * MiB, e1], [2, 5 * MiB + 1, e2], [3, 1234, e3]]);
    expect(await code(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'alpha', Key: 'mp', UploadId: id, MultipartUpload: { Parts: [{ PartNumber: 2, ETag: e2 }, { PartNumber: 1, ETag: e1 }] } })))).toBe('InvalidPartOrder');
    expect(await code(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'alpha', Key: 'mp', UploadId: id, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e2 }] } })))).toBe('InvalidPart');
    expect(await code(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'alpha', Key: 'mp', UploadId: id, MultipartUpload: { Parts: [{ PartNumber: 3, ETag: e3 }, { PartNumber: 4, ETag: e3 }] } })))).toBe('InvalidPart');
    const done = await s3.send(new CompleteMultipartUploadCommand({
      Bucket: 'alpha', Key: 'mp', UploadId: id, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e1 }, { PartNumber: 2, ETag: e2 }, { PartNumber: 3, ETag: e3 }] },
    }));
    const want = createHash('md5').update(Buffer.concat(parts.map((p) => createHash('md5').update(p).digest()))).digest('hex') + '-3';
    expect(done.ETag).toBe(`"${want}"`);
    const g = await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'mp', Range: `bytes=${5 * MiB - 10}-${5 * MiB + 9}` }));
    expect((await body(g)).equals(Buffer.concat(parts).subarray(5 * MiB - 10, 5 * MiB + 10))).toBe(true);
    const full = await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'mp' }));
    expect(full.ETag).toBe(`"${want}"`);
    expect(full.Metadata).toEqual({ kind: 'multi' });
    expect(full.ContentType).toBe('text/x-mp');
    expect((await body(full)).equals(Buffer.concat(parts))).toBe(true);
    expect(await code(s3.send(new ListPartsCommand({ Bucket: 'alpha', Key: 'mp', UploadId: id })))).toBe('NoSuchUpload');
    // a part under 5 MiB that is not the last is refused
    const small = (await s3.send(new CreateMultipartUploadCommand({ Bucket: 'alpha', Key: 'mp2' }))).UploadId!;
    const s1 = (await s3.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'mp2', UploadId: small, PartNumber: 1, Body: 'tiny' }))).ETag!;
    const s2 = (await s3.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'mp2', UploadId: small, PartNumber: 2, Body: 'tiny' }))).ETag!;
    expect(await code(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'alpha', Key: 'mp2', UploadId: small, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: s1 }, { PartNumber: 2, ETag: s2 }] } })))).toBe('EntityTooSmall');
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'alpha', Key: 'mp2', UploadId: small }));
    expect(await code(s3.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'mp2', UploadId: small, PartNumber: 3, Body: 'x' })))).toBe('NoSuchUpload');
    expect(await code(s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'mp2' })))).toBe('NoSuchKey');
  });

  it('refuses anonymous requests, unknown keys, wrong secrets and tampered requests', async () => {
    const anon = await fetch(`${g.endpoint}/alpha/src`);
    expect(anon.status).toBe(403);
    expect(await anon.text()).toContain('<Code>AccessDenied</Code>');
    const unknown = g.client({ accessKey: 'SDNOSUCHKEY000000000' });
    expect(await code(unknown.send(new ListBucketsCommand({})))).toBe('InvalidAccessKeyId');
    unknown.destroy();
    const wrong = g.client({ secretKey: 'not-the-secret-0123456789' });
    expect(await code(wrong.send(new ListBucketsCommand({})))).toBe('SignatureDoesNotMatch');
    expect(await code(wrong.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'evil', Body: 'x' })))).toBe('SignatureDoesNotMatch');
    wrong.destroy();
    expect(await code(s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'evil' })))).toBe('NoSuchKey');
    // a presigned URL for one key does not open another
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'alpha', Key: 'src' }), { expiresIn: 60 });
    const other = await fetch(url.replace('/alpha/src?', '/alpha/mp?'));
    expect(other.status).toBe(403);
    expect(await other.text()).toContain('<Code>SignatureDoesNotMatch</Code>');
    // a body that is not the one signed is refused and not stored
    const r = await fetch(`${g.endpoint}/alpha/forged`, { method: 'PUT', body: 'x', headers: { authorization: 'AWS4-HMAC-SHA256 Credential=x' } });
    expect(r.status).toBe(400);
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: 'alpha', Key: 'forged' })))).toBe('NotFound');
  });

  it('takes keys from collie s3 user add, lists them, and stops taking a deleted one', async () => {
    const port = g.nodes[0].port;
    const add = await runCollie(['s3', 'user', 'add', 'bob', '--json'], { port });
    expect(add.code, add.stderr).toBe(0);
    const bob = JSON.parse(add.stdout) as { name: string; access_key: string; secret_key: string };
    expect(bob.access_key).toMatch(/^SD[A-Z0-9]{18}$/);
    expect(bob.secret_key.length).toBeGreaterThanOrEqual(32);
    const list = await runCollie(['s3', 'user', 'list', '-r'], { port });
    expect(list.stdout.split('\n').filter(Boolean).map((l) => l.split(' ').slice(0, 2))).toEqual([['tester', 'SDTESTACCESSKEY00001'], ['bob', bob.access_key]]);
    expect(list.stdout).not.toContain(bob.secret_key);
    const dup = await runCollie(['s3', 'user', 'add', 'bob'], { port });
    expect(dup.code).toBe(1);
    expect(dup.stderr).toContain('already exists');
    expect((await runCollie(['s3', 'user', 'add', 'bad name'], { port })).code).toBe(64);
    const c = g.client({ accessKey: bob.access_key, secretKey: bob.secret_key });
    try {
      expect((await c.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toContain('alpha');
      expect((await runCollie(['s3', 'user', 'delete', 'bob'], { port })).code).toBe(0);
      expect((await runCollie(['s3', 'user', 'delete', 'bob'], { port })).code).toBe(1);
      // gateways trust a key they know for 5 s at most
      const t0 = Date.now();
      while ((await code(c.send(new ListBucketsCommand({})))) === 'ok') {
        expect(Date.now() - t0).toBeLessThan(8000);
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(await code(c.send(new ListBucketsCommand({})))).toBe('InvalidAccessKeyId');
    } finally {
      c.destroy();
    }
  }, 30_000);

  it('serves presigned GET and PUT URLs, and refuses expired ones', async () => {
    const put = await getSignedUrl(s3, new PutObjectCommand({ Bucket: 'alpha', Key: 'presigned' }), { expiresIn: 120 });
    const r = await fetch(put, { method: 'PUT', body: 'via presigned put' });
    expect(r.status).toBe(200);
    const get = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'alpha', Key: 'presigned' }), { expiresIn: 120 });
    const g1 = await fetch(get);
    expect(g1.status).toBe(200);
    expect(await g1.text()).toBe('via presigned put');
    const g2 = await fetch(get, { headers: { range: 'bytes=4-12' } });
    expect(g2.status).toBe(206);
    expect(await g2.text()).toBe('presigned');
    const old = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'alpha', Key: 'presigned' }), { expiresIn: 1, signingDate: new Date(Date.now() - 60_000) });
    const g3 = await fetch(old);
    expect(g3.status).toBe(403);
    expect(await g3.text()).toContain('expired');
  });

  it('answers hostile or broken requests with S3 errors and stays up', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'hostile' }));
    // end: half-close after the text (else wait for an error document)
    const raw = (text: string, end = true) => new Promise<string>((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port: g.s3Port }, () => (end ? sock.end(text) : sock.write(text)));
      let out = '';
      sock.on('data', (b) => {
        out += b;
        if (out.includes('</Error>')) sock.destroy();
      });
      sock.on('close', () => resolve(out));
      sock.on('error', reject);
    });
    expect(await raw('GARBAGE\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
    expect(await raw('GET /%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 400[^]*InvalidArgument/);
    // a presigned PUT that claims more than S3 allows is refused before its body is read
    const put = await getSignedUrl(s3, new PutObjectCommand({ Bucket: 'hostile', Key: 'huge' }), { expiresIn: 60 });
    const u = new URL(put);
    const tooBig = await raw(`PUT ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nContent-Length: ${6 * 2 ** 30}\r\n\r\nabc`, false);
    expect(tooBig).toMatch(/^HTTP\/1\.1 400[^]*EntityTooLarge/);
    // a body that stops short: no object
    const short = await raw(`PUT ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nContent-Length: 1000\r\n\r\nonly this`);
    expect(short).not.toMatch(/^HTTP\/1\.1 200/);
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: 'hostile', Key: 'huge' })))).toBe('NotFound');
    // XML that is not XML, and too many keys
    const signed = async (method: string, pathq: string, body: string) => {
      const [p, q] = pathq.split('?');
      const r = await signer.sign({
        method, protocol: 'http:', hostname: '127.0.0.1', port: g.s3Port, path: p, query: Object.fromEntries(new URLSearchParams(q ?? '')),
        headers: { host: `127.0.0.1:${g.s3Port}`, 'x-amz-content-sha256': createHash('sha256').update(body).digest('hex') }, body,
      });
      return fetch(`${g.endpoint}${pathq}`, { method, body, headers: r.headers as Record<string, string> });
    };
    const bad = await signed('POST', '/hostile?delete', '<Delete><Object><Key>x</Key></Obj');
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain('<Code>MalformedXML</Code>');
    const many = await signed('POST', '/hostile?delete', `<Delete>${'<Object><Key>k</Key></Object>'.repeat(1001)}</Delete>`);
    expect(await many.text()).toContain('<Code>MalformedXML</Code>');
    const ent = await signed('POST', '/hostile?delete', '<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><Delete><Object><Key>&c;&c;&c;&c;</Key></Object></Delete>');
    expect(ent.status).toBeGreaterThanOrEqual(200);
    // a body that is not the one whose hash was signed is refused and not stored
    const r = await signer.sign({
      method: 'PUT', protocol: 'http:', hostname: '127.0.0.1', port: g.s3Port, path: '/hostile/swapped',
      headers: { host: `127.0.0.1:${g.s3Port}`, 'x-amz-content-sha256': createHash('sha256').update('signed body').digest('hex') },
    });
    const sw = await fetch(`${g.endpoint}/hostile/swapped`, { method: 'PUT', body: 'other body!', headers: r.headers as Record<string, string> });
    expect(sw.status).toBe(400);
    expect(await sw.text()).toContain('<Code>XAmzContentSHA256Mismatch</Code>');
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: 'hostile', Key: 'swapped' })))).toBe('NotFound');
    // and it still serves
    expect((await s3.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toContain('hostile');
  });

  it('keeps buckets, objects and uploads in progress across a restart of the node', async () => {
    const data = pattern(6 * MiB + 5, 4);
    await s3.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'survivor', Body: data }));
    const id = (await s3.send(new CreateMultipartUploadCommand({ Bucket: 'alpha', Key: 'later' }))).UploadId!;
    const e1 = (await s3.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'later', UploadId: id, PartNumber: 1, Body: pattern(5 * MiB, 5) }))).ETag!;
    const before = (await s3.send(new ListObjectsV2Command({ Bucket: 'alpha' }))).Contents?.map((o) => [o.Key, o.ETag, o.Size]);
    const n0 = g.nodes[0];
    await n0.stop();
    const again = await startSheep({ dir: n0.dir, port: n0.port, cluster: g.c.spec, args: ['-z', '0', '-n', '--s3', `127.0.0.1:${g.s3Port}`] });
    g.nodes[0] = again;
    s3.destroy();
    s3 = g.client();
    const after = (await s3.send(new ListObjectsV2Command({ Bucket: 'alpha' }))).Contents?.map((o) => [o.Key, o.ETag, o.Size]);
    expect(after).toEqual(before);
    expect((await body(await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'survivor' })))).equals(data)).toBe(true);
    const e2 = (await s3.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'later', UploadId: id, PartNumber: 2, Body: 'end' }))).ETag!;
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'alpha', Key: 'later', UploadId: id, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e1 }, { PartNumber: 2, ETag: e2 }] } }));
    expect((await body(await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'later' })))).equals(Buffer.concat([pattern(5 * MiB, 5), Buffer.from('end')]))).toBe(true);
  }, 60_000);

  it('uploads and reads back 1 GiB in a streamed multipart upload (constant memory)', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'big-bucket' }));
    const PART = 64 * MiB;
    const N = 16;
    const id = (await s3.send(new CreateMultipartUploadCommand({ Bucket: 'big-bucket', Key: 'gig' }))).UploadId!;
    const whole = createHash('md5');
    const etags: string[] = [];
    const blocks = Array.from({ length: 4 }, (_, i) => pattern(MiB, 100 + i));
    // hashed as the SDK reads it: the bytes are made once
    const partStream = (n: number, pmd5: ReturnType<typeof createHash>) => Readable.from((function* () {
      // 64 pieces of 1 MiB: the part number in the first 4 bytes, so parts differ
      for (let i = 0; i < PART / MiB; i++) {
        const b = Buffer.from(blocks[(n + i) % 4]);
        b.writeUInt32LE(n * 1000 + i, 0);
        pmd5.update(b);
        whole.update(b);
        yield b;
      }
    })());
    for (let n = 1; n <= N; n++) {
      const pmd5 = createHash('md5');
      const r = await s3.send(new UploadPartCommand({ Bucket: 'big-bucket', Key: 'gig', UploadId: id, PartNumber: n, Body: partStream(n, pmd5), ContentLength: PART }));
      expect(r.ETag).toBe(`"${pmd5.digest('hex')}"`);
      etags.push(r.ETag!);
    }
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'big-bucket', Key: 'gig', UploadId: id, MultipartUpload: { Parts: etags.map((e, i) => ({ PartNumber: i + 1, ETag: e })) } }));
    const rssBefore = (await fetchRss(g.nodes[0].proc.pid!));
    const got = await s3.send(new GetObjectCommand({ Bucket: 'big-bucket', Key: 'gig' }));
    expect(got.ContentLength).toBe(N * PART);
    const h = createHash('md5');
    let n = 0;
    for await (const c of got.Body as AsyncIterable<Buffer>) { h.update(c); n += c.length; }
    expect(n).toBe(N * PART);
    expect(h.digest('hex')).toBe(whole.digest('hex'));
    // the daemon did not hold the object: its RSS grew by far less than 1 GiB
    expect((await fetchRss(g.nodes[0].proc.pid!)) - rssBefore).toBeLessThan(300 * MiB);
  }, 240_000);
});

async function fetchRss(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}
