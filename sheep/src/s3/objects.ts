// Object requests: PutObject, GetObject (Range), HeadObject, DeleteObject,
// DeleteObjects and CopyObject.
import { createHash } from 'node:crypto';
import type { S3ObjectMeta } from '@sheepdog/common';
import { Ctx, sendXml, sendEmpty, header, isoTime, quoteEtag } from './context.js';
import { S3Error } from './errors.js';
import { payload, receive, readExtents, sendBody, smallBody } from './stream.js';
import type { Bucket } from './bucket.js';
import { parseXml } from './xml.js';
import { uriEncode } from './auth.js';

/** S3's largest single PUT (and part). */
export const MAX_PUT = 5 * 2 ** 30;
const MAX_META = 2048;
const STORED = ['content-type', 'content-encoding', 'content-disposition', 'content-language', 'cache-control', 'expires'];

/** The headers stored with an object: its content headers and x-amz-meta-*. */
export function storedHeaders(c: Ctx): Record<string, string> {
  const h: Record<string, string> = {};
  let meta = 0;
  for (const [k, v] of Object.entries(c.req.headers)) {
    if (v === undefined) continue;
    const val = Array.isArray(v) ? v.join(',') : v;
    if (k.startsWith('x-amz-meta-')) {
      meta += k.length - 11 + val.length;
      h[k] = val;
    } else if (STORED.includes(k)) h[k] = val;
  }
  if (meta > MAX_META) throw new S3Error('MetadataTooLarge', `Your metadata headers exceed the maximum allowed metadata size (${MAX_META} bytes)`);
  // aws-chunked is how the body came, not what it is
  if (h['content-encoding']) {
    const enc = h['content-encoding'].split(',').map((s) => s.trim()).filter((s) => s && s !== 'aws-chunked');
    if (enc.length) h['content-encoding'] = enc.join(','); else delete h['content-encoding'];
  }
  h['content-type'] ??= 'binary/octet-stream';
  return h;
}

/** The body's length: x-amz-decoded-content-length for aws-chunked bodies, else Content-Length. */
export function bodyLength(c: Ctx): number {
  const v = c.auth.payload.kind === 'chunked' ? header(c, 'x-amz-decoded-content-length') : header(c, 'content-length');
  if (v === undefined) throw new S3Error('MissingContentLength', 'You must provide the Content-Length HTTP header.');
  if (!/^\d{1,16}$/.test(v)) throw new S3Error('InvalidArgument', 'Content-Length is not a number');
  const n = Number(v);
  if (n > MAX_PUT) throw new S3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size (5 GiB); use a multipart upload');
  return n;
}

/** Content-MD5, if sent: its 16 bytes. */
export function contentMd5(c: Ctx): Buffer | undefined {
  const v = header(c, 'content-md5');
  if (v === undefined) return undefined;
  const b = Buffer.from(v, 'base64');
  if (b.length !== 16 || b.toString('base64') !== v.trim()) throw new S3Error('InvalidDigest', 'The Content-MD5 you specified is not valid.');
  return b;
}

export function checkMd5(want: Buffer | undefined, got: Buffer): void {
  if (want && !want.equals(got)) throw new S3Error('BadDigest', 'The Content-MD5 you specified did not match what we received.');
}

export function checkKey(c: Ctx): void {
  if (!c.key) throw new S3Error('InvalidRequest', 'an object request needs a key');
  if (Buffer.byteLength(c.key) > 1024) throw new S3Error('KeyTooLongError', 'Your key is too long (1024 bytes at most)');
}

export async function putObject(c: Ctx): Promise<void> {
  checkKey(c);
  const b = await c.store.bucketForWrite(c.bucket);
  const size = bodyLength(c);
  const want = contentMd5(c);
  const headers = storedHeaders(c);
  const r = await receive(b, payload(c.req, c.auth), size);
  checkMd5(want, r.md5);
  const etag = r.md5.toString('hex');
  await b.commit([{ t: 'put', k: c.key, o: { size, etag, mtime: Date.now(), headers, extents: r.extents } }]);
  sendEmpty(c, 200, { etag: quoteEtag(etag) });
}

function objectHeaders(o: S3ObjectMeta): Record<string, string | number> {
  return { ...o.headers, etag: quoteEtag(o.etag), 'last-modified': new Date(o.mtime).toUTCString(), 'accept-ranges': 'bytes' };
}


/** A single byte range of `bytes=a-b`, `bytes=a-` or `bytes=-n`; undefined: the whole object (as S3 does for forms it ignores). */
export function parseRange(v: string | undefined, size: number): [number, number] | undefined {
  if (!v) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(v.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let a: number;
  let z: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) throw new S3Error('InvalidRange', 'The requested range is not satisfiable');
    a = Math.max(0, size - n);
    z = size;
  } else {
    a = Number(m[1]);
    z = m[2] === '' ? size : Math.min(size, Number(m[2]) + 1);
    if (m[2] !== '' && Number(m[2]) < a) return undefined;
  }
  if (a >= size) throw new S3Error('InvalidRange', 'The requested range is not satisfiable');
  return [a, z];
}

function conditional(c: Ctx, o: S3ObjectMeta): number | undefined {
  const im = header(c, 'if-match');
  if (im && !im.split(',').some((e) => e.trim() === '*' || e.trim().replace(/"/g, '') === o.etag)) throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
  const inm = header(c, 'if-none-match');
  if (inm && inm.split(',').some((e) => e.trim() === '*' || e.trim().replace(/"/g, '') === o.etag)) return 304;
  return undefined;
}

export async function getObject(c: Ctx, head: boolean): Promise<void> {
  checkKey(c);
  const b = await c.store.bucket(c.bucket);
  const o = b.objects.get(c.key);
  if (!o) throw new S3Error('NoSuchKey', 'The specified key does not exist.');
  return b.reading(() => sendObject(c, b, o, head));
}

async function sendObject(c: Ctx, b: Bucket, o: S3ObjectMeta, head: boolean): Promise<void> {
  const h = objectHeaders(o);
  if (conditional(c, o) === 304) {
    c.res.writeHead(304, { etag: String(h.etag), 'last-modified': String(h['last-modified']) });
    c.res.end();
    return;
  }
  let range: [number, number] | undefined;
  try {
    range = parseRange(header(c, 'range'), o.size);
  } catch (e) {
    if (e instanceof S3Error) c.res.setHeader('content-range', `bytes */${o.size}`);
    throw e;
  }
  const [a, z] = range ?? [0, o.size];
  if (range) {
    h['content-range'] = `bytes ${a}-${z - 1}/${o.size}`;
  }
  h['content-length'] = z - a;
  c.res.writeHead(range ? 206 : 200, h);
  if (head) {
    c.res.end();
    return;
  }
  await sendBody(c.res, readExtents(b.io, o.extents, a, z));
}

export async function deleteObject(c: Ctx): Promise<void> {
  checkKey(c);
  const b = await c.store.bucketForWrite(c.bucket);
  if (b.objects.has(c.key)) await b.commit([{ t: 'del', k: c.key }]);
  sendEmpty(c, 204);
}

export async function deleteObjects(c: Ctx): Promise<void> {
  const b = await c.store.bucketForWrite(c.bucket);
  const want = contentMd5(c);
  const body = await smallBody(c.req, c.auth);
  checkMd5(want, createHash('md5').update(body).digest());
  const d = parseXml(body, 'Delete');
  const objs = (d.Object ?? []) as { Key?: unknown }[];
  if (objs.length > 1000) throw new S3Error('MalformedXML', 'DeleteObjects takes at most 1000 keys');
  const quiet = String(d.Quiet ?? '').toLowerCase() === 'true';
  const keys = objs.map((o) => (typeof o.Key === 'string' ? o.Key : o.Key === undefined ? '' : String(o.Key)));
  const deleted: { Key: string }[] = [];
  const errors: { Key: string; Code: string; Message: string }[] = [];
  const recs: { t: 'del'; k: string }[] = [];
  for (const k of keys) {
    if (!k || Buffer.byteLength(k) > 1024) { errors.push({ Key: k, Code: 'InvalidArgument', Message: 'invalid key' }); continue; }
    if (b.objects.has(k) && !recs.some((r) => r.k === k)) recs.push({ t: 'del', k });
    deleted.push({ Key: k });
  }
  if (recs.length) await b.commit(recs);
  sendXml(c, 'DeleteResult', { ...(quiet ? {} : { Deleted: deleted }), Error: errors });
}

/** x-amz-copy-source: [/]BUCKET/KEY[?versionId=...], URL-encoded. */
function copySource(c: Ctx): { bucket: string; key: string } {
  let v = header(c, 'x-amz-copy-source') ?? '';
  const q = v.indexOf('?');
  if (q >= 0) v = v.slice(0, q);
  let s: string;
  try {
    s = decodeURIComponent(v);
  } catch {
    throw new S3Error('InvalidArgument', 'x-amz-copy-source is not URL-encoded properly');
  }
  if (s.startsWith('/')) s = s.slice(1);
  const i = s.indexOf('/');
  if (i <= 0 || i === s.length - 1) throw new S3Error('InvalidArgument', 'x-amz-copy-source must be BUCKET/KEY');
  return { bucket: s.slice(0, i), key: s.slice(i + 1) };
}

export async function copyObject(c: Ctx): Promise<void> {
  checkKey(c);
  const src = copySource(c);
  const db = await c.store.bucketForWrite(c.bucket);
  const sb = await c.store.bucket(src.bucket);
  const o = sb.objects.get(src.key);
  if (!o) throw new S3Error('NoSuchKey', 'The specified key does not exist.');
  const directive = (header(c, 'x-amz-metadata-directive') ?? 'COPY').toUpperCase();
  if (directive !== 'COPY' && directive !== 'REPLACE') throw new S3Error('InvalidArgument', 'x-amz-metadata-directive must be COPY or REPLACE');
  if (directive === 'COPY' && src.bucket === c.bucket && src.key === c.key) {
    throw new S3Error('InvalidRequest', 'This copy request is illegal because it is trying to copy an object to itself without changing the object\'s metadata.');
  }
  const im = header(c, 'x-amz-copy-source-if-match');
  if (im && im.replace(/"/g, '') !== o.etag) throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
  const headers = directive === 'COPY' ? { ...o.headers } : storedHeaders(c);
  const r = await sb.reading(async () => {
    // the body of a copy request is empty; read it so the connection stays usable
    await smallBody(c.req, c.auth, 0);
    return receive(db, readExtents(sb.io, o.extents, 0, o.size), o.size);
  });
  // a multipart object's ETag is not its MD5 and stays what it was
  const etag = o.etag.includes('-') ? o.etag : r.md5.toString('hex');
  const mtime = Date.now();
  await db.commit([{ t: 'put', k: c.key, o: { size: o.size, etag, mtime, headers, extents: r.extents } }]);
  sendXml(c, 'CopyObjectResult', { LastModified: isoTime(mtime), ETag: quoteEtag(etag) });
}

export const encodeKey = (k: string) => uriEncode(k, true);
