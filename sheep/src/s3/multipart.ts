// Multipart uploads. Each part is written once, into its own extent; the
// completed object is the list of its parts' extents (nothing is copied),
// and its ETag is S3's: the MD5 of the parts' MD5s, a dash, the part count.
import { createHash, randomBytes } from 'node:crypto';
import type { S3Extent } from '@sheepdog/common';
import { Ctx, sendXml, sendEmpty, intParam, isoTime, quoteEtag } from './context.js';
import { S3Error } from './errors.js';
import { payload, receive, smallBody } from './stream.js';
import { parseXml } from './xml.js';
import { bodyLength, checkKey, checkMd5, contentMd5, storedHeaders } from './objects.js';
import type { Bucket, Upload } from './bucket.js';

const MIN_PART = 5 << 20;
const MAX_PARTS = 10_000;

function upload(b: Bucket, c: Ctx): Upload {
  const u = b.uploads.get(c.query.get('uploadId') ?? '');
  if (!u || u.key !== c.key) throw new S3Error('NoSuchUpload', 'The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed.');
  return u;
}

export async function createUpload(c: Ctx): Promise<void> {
  checkKey(c);
  const b = await c.store.bucketForWrite(c.bucket);
  const headers = storedHeaders(c);
  await smallBody(c.req, c.auth, 0);
  const id = randomBytes(16).toString('hex');
  await b.commit([{ t: 'mpu', id, k: c.key, h: headers, m: Date.now() }]);
  sendXml(c, 'InitiateMultipartUploadResult', { Bucket: c.bucket, Key: c.key, UploadId: id });
}

export async function uploadPart(c: Ctx): Promise<void> {
  checkKey(c);
  const b = await c.store.bucketForWrite(c.bucket);
  const u = upload(b, c);
  const n = intParam(c.query.get('partNumber'), 'partNumber', MAX_PARTS);
  if (!n) throw new S3Error('InvalidArgument', `Part number must be an integer between 1 and ${MAX_PARTS}, inclusive`);
  if (c.req.headers['x-amz-copy-source']) throw new S3Error('NotImplemented', 'UploadPartCopy is not implemented');
  const size = bodyLength(c);
  const want = contentMd5(c);
  const r = await receive(b, payload(c.req, c.auth), size);
  checkMd5(want, r.md5);
  if (!b.uploads.has(u.id)) throw new S3Error('NoSuchUpload', 'The multipart upload was completed or aborted meanwhile.');
  const etag = r.md5.toString('hex');
  await b.commit([{ t: 'part', id: u.id, n, size, etag, x: r.extents, m: Date.now() }]);
  sendEmpty(c, 200, { etag: quoteEtag(etag) });
}

export async function completeUpload(c: Ctx): Promise<void> {
  checkKey(c);
  const b = await c.store.bucketForWrite(c.bucket);
  const u = upload(b, c);
  const d = parseXml(await smallBody(c.req, c.auth), 'CompleteMultipartUpload');
  const listed = (d.Part ?? []) as { PartNumber?: unknown; ETag?: unknown }[];
  if (listed.length === 0 || listed.length > MAX_PARTS) throw new S3Error('MalformedXML', 'CompleteMultipartUpload must name between 1 and 10000 parts');
  const extents: S3Extent[] = [];
  const md5 = createHash('md5');
  let size = 0;
  let prev = 0;
  for (let i = 0; i < listed.length; i++) {
    const n = Number(listed[i].PartNumber);
    if (!Number.isInteger(n) || n <= prev) throw new S3Error('InvalidPartOrder', 'The list of parts was not in ascending order. The parts list must be specified in order by part number.');
    prev = n;
    const p = u.parts.get(n);
    const etag = String(listed[i].ETag ?? '').replace(/"/g, '').trim();
    if (!p || p.etag !== etag) throw new S3Error('InvalidPart', `Part ${n} was not uploaded, or its ETag does not match.`);
  }
  for (let i = 0; i < listed.length; i++) {
    const n = Number(listed[i].PartNumber);
    const p = u.parts.get(n)!;
    if (i < listed.length - 1 && p.size < MIN_PART) throw new S3Error('EntityTooSmall', `Part ${n} is smaller than the minimum allowed size (5 MiB).`);
    extents.push(...p.extents);
    md5.update(Buffer.from(p.etag, 'hex'));
    size += p.size;
  }
  const etag = `${md5.digest('hex')}-${listed.length}`;
  await b.commit([
    { t: 'put', k: u.key, o: { size, etag, mtime: Date.now(), headers: u.headers, extents } },
    { t: 'mpuend', id: u.id },
  ]);
  sendXml(c, 'CompleteMultipartUploadResult', { Location: `/${c.bucket}/${encodeURIComponent(c.key)}`, Bucket: c.bucket, Key: c.key, ETag: quoteEtag(etag) });
}

export async function abortUpload(c: Ctx): Promise<void> {
  checkKey(c);
  const b = await c.store.bucketForWrite(c.bucket);
  const u = upload(b, c);
  await b.commit([{ t: 'mpuend', id: u.id }]);
  sendEmpty(c, 204);
}

export async function listParts(c: Ctx): Promise<void> {
  checkKey(c);
  const b = await c.store.bucket(c.bucket);
  const u = upload(b, c);
  const max = Math.min(intParam(c.query.get('max-parts'), 'max-parts') ?? 1000, 1000);
  const marker = intParam(c.query.get('part-number-marker'), 'part-number-marker') ?? 0;
  const all = [...u.parts.values()].filter((p) => p.n > marker).sort((x, y) => x.n - y.n);
  const parts = all.slice(0, max);
  const truncated = all.length > parts.length;
  sendXml(c, 'ListPartsResult', {
    Bucket: c.bucket, Key: c.key, UploadId: u.id, PartNumberMarker: marker,
    ...(truncated ? { NextPartNumberMarker: parts[parts.length - 1].n } : {}),
    MaxParts: max, IsTruncated: truncated, StorageClass: 'STANDARD',
    Part: parts.map((p) => ({ PartNumber: p.n, LastModified: isoTime(p.mtime), ETag: quoteEtag(p.etag), Size: p.size })),
  });
}

export async function listUploads(c: Ctx): Promise<void> {
  const b = await c.store.bucket(c.bucket);
  const prefix = c.query.get('prefix') ?? '';
  const ups = [...b.uploads.values()].filter((u) => u.key.startsWith(prefix)).sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : x.created - y.created)).slice(0, 1000);
  sendXml(c, 'ListMultipartUploadsResult', {
    Bucket: c.bucket, KeyMarker: '', UploadIdMarker: '', Prefix: prefix, MaxUploads: 1000, IsTruncated: false,
    Upload: ups.map((u) => ({ Key: u.key, UploadId: u.id, Initiated: isoTime(u.created), StorageClass: 'STANDARD' })),
  });
}
