// AWS Signature Version 4, checked on every request (S3's rules: the path
// is not normalised nor encoded twice), in an Authorization header or in a
// presigned URL's query; and the aws-chunked body encoding
// (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER], STREAMING-UNSIGNED-PAYLOAD-TRAILER)
// whose chunks carry their own chained signatures.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { IncomingMessage } from 'node:http';
import { S3Error } from './errors.js';

export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const MAX_SKEW_MS = 15 * 60_000;
const MAX_PRESIGN_S = 7 * 86400;

export interface AuthResult {
  accessKey: string;
  /** What x-amz-content-sha256 (or the presign) says of the body. */
  payload: { kind: 'sha256'; hex: string } | { kind: 'unsigned' } | { kind: 'chunked'; signed: boolean; trailer: boolean };
  /** For chunk signatures. */
  seedSignature: string;
  signingKey: Buffer;
  amzDate: string;
  scope: string;
}

/** RFC 3986 encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ (and '/' in paths). */
export function uriEncode(s: string, keepSlash: boolean): string {
  let e: string;
  try {
    // encodeURIComponent keeps ! ' ( ) * as well, which SigV4 encodes
    e = encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  } catch {
    // a lone surrogate: encode the bytes Buffer makes of it
    e = '';
    for (const b of Buffer.from(s, 'utf8')) {
      const c = String.fromCharCode(b);
      e += /[A-Za-z0-9\-_.~]/.test(c) ? c : '%' + b.toString(16).toUpperCase().padStart(2, '0');
    }
  }
  return keepSlash ? e.replace(/%2F/g, '/') : e;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new S3Error('InvalidArgument', 'malformed percent-encoding in the request URI');
  }
}

/** Query pairs, decoded, in the order they came. */
export function parseQuery(raw: string): [string, string][] {
  if (!raw) return [];
  return raw.split('&').filter((p) => p !== '').map((p) => {
    const i = p.indexOf('=');
    return i < 0 ? [safeDecode(p), ''] : [safeDecode(p.slice(0, i)), safeDecode(p.slice(i + 1))];
  });
}

function canonicalQuery(pairs: [string, string][]): string {
  return pairs
    .map(([k, v]) => [uriEncode(k, false), uriEncode(v, false)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

const hmac = (key: Buffer | string, s: string) => createHmac('sha256', key).update(s).digest();
const sha256hex = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

export function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac('AWS4' + secret, date), region), service), 'aws4_request');
}

function sameHex(a: string, b: string): boolean {
  return a.length === b.length && /^[0-9a-f]+$/.test(a) && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** 20231207T120000Z -> ms */
function parseAmzDate(d: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(d);
  if (!m) return NaN;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
}

interface Credential {
  accessKey: string;
  date: string;
  region: string;
  service: string;
}

function parseCredential(c: string): Credential {
  const p = c.split('/');
  if (p.length !== 5 || p[4] !== 'aws4_request' || !/^\d{8}$/.test(p[1])) {
    throw new S3Error('AuthorizationHeaderMalformed', `the credential '${c.slice(0, 200)}' is not ACCESSKEY/DATE/REGION/SERVICE/aws4_request`);
  }
  return { accessKey: p[0], date: p[1], region: p[2], service: p[3] };
}

/**
 * Check a request's signature; returns who signed it. `secretOf` gives an
 * access key's secret (undefined: no such key). `rawPath` is the URI path
 * exactly as received.
 */
export async function verifyRequest(
  req: IncomingMessage, rawPath: string, query: [string, string][], secretOf: (ak: string) => Promise<string | undefined>, now = Date.now(),
): Promise<AuthResult> {
  const auth = req.headers.authorization;
  const q = new Map(query);
  let cred: Credential;
  let signedHeaders: string[];
  let signature: string;
  let amzDate: string;
  let payloadHash: string;
  let presigned = false;
  if (auth !== undefined) {
    const m = /^AWS4-HMAC-SHA256\s+(.*)$/s.exec(auth);
    if (!m) {
      if (auth.startsWith('AWS ')) throw new S3Error('InvalidRequest', 'Signature Version 2 is not supported: use AWS Signature Version 4');
      throw new S3Error('AuthorizationHeaderMalformed', 'the Authorization header is not AWS4-HMAC-SHA256');
    }
    const parts = new Map<string, string>();
    for (const kv of m[1].split(/\s*,\s*/)) {
      const i = kv.indexOf('=');
      if (i > 0) parts.set(kv.slice(0, i).trim(), kv.slice(i + 1).trim());
    }
    const c = parts.get('Credential');
    const sh = parts.get('SignedHeaders');
    const sig = parts.get('Signature');
    if (!c || !sh || !sig) throw new S3Error('AuthorizationHeaderMalformed', 'the Authorization header lacks Credential, SignedHeaders or Signature');
    cred = parseCredential(c);
    signedHeaders = sh.split(';');
    signature = sig;
    const d = req.headers['x-amz-date'] ?? req.headers.date;
    amzDate = typeof d === 'string' ? d : '';
    if (!/^\d{8}T\d{6}Z$/.test(amzDate)) {
      const t = Date.parse(amzDate);
      if (Number.isNaN(t)) throw new S3Error('AccessDenied', 'the request has no valid X-Amz-Date');
      amzDate = new Date(t).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
    }
    const ph = req.headers['x-amz-content-sha256'];
    if (typeof ph !== 'string') throw new S3Error('MissingSecurityHeader', 'x-amz-content-sha256 is required');
    payloadHash = ph;
    if (Math.abs(parseAmzDate(amzDate) - now) > MAX_SKEW_MS) throw new S3Error('RequestTimeTooSkewed', 'the difference between the request time and the server time is too large');
  } else if (q.has('X-Amz-Signature')) {
    presigned = true;
    if (q.get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256') throw new S3Error('AuthorizationQueryParametersError', 'X-Amz-Algorithm must be AWS4-HMAC-SHA256');
    cred = parseCredential(q.get('X-Amz-Credential') ?? '');
    signedHeaders = (q.get('X-Amz-SignedHeaders') ?? '').split(';');
    signature = q.get('X-Amz-Signature')!;
    amzDate = q.get('X-Amz-Date') ?? '';
    const t = parseAmzDate(amzDate);
    const exp = Number(q.get('X-Amz-Expires') ?? 'x');
    if (Number.isNaN(t) || !Number.isInteger(exp) || exp < 1 || exp > MAX_PRESIGN_S) throw new S3Error('AuthorizationQueryParametersError', 'X-Amz-Date or X-Amz-Expires is missing or invalid');
    if (now > t + exp * 1000) throw new S3Error('AccessDenied', 'Request has expired');
    if (t - now > MAX_SKEW_MS) throw new S3Error('AccessDenied', 'Request is not valid yet');
    payloadHash = q.get('X-Amz-Content-Sha256') ?? 'UNSIGNED-PAYLOAD';
  } else if (q.has('AWSAccessKeyId') || q.has('Signature')) {
    throw new S3Error('AccessDenied', 'Signature Version 2 presigned URLs are not supported: presign with AWS Signature Version 4');
  } else {
    throw new S3Error('AccessDenied', 'Anonymous requests are not allowed: sign them with AWS Signature Version 4');
  }
  if (!signedHeaders.includes('host')) throw new S3Error('AccessDenied', 'the host header must be signed');
  if (cred.date !== amzDate.slice(0, 8)) throw new S3Error('SignatureDoesNotMatch', 'the credential date is not the request date');
  const secret = await secretOf(cred.accessKey);
  if (secret === undefined) throw new S3Error('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');

  const headers: string[] = [];
  for (const h of signedHeaders) {
    const v = req.headers[h];
    const val = v === undefined ? '' : Array.isArray(v) ? v.join(',') : v;
    headers.push(`${h}:${val.trim().replace(/\s+/g, ' ')}\n`);
  }
  const scope = `${cred.date}/${cred.region}/${cred.service}/aws4_request`;
  const key = signingKey(secret, cred.date, cred.region, cred.service);
  const cq = canonicalQuery(presigned ? query.filter(([k]) => k !== 'X-Amz-Signature') : query);
  const signWith = (uri: string) => {
    const creq = [req.method, uri, cq, headers.join(''), signedHeaders.join(';'), payloadHash].join('\n');
    return createHmac('sha256', key).update(`AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${sha256hex(creq)}`).digest('hex');
  };
  // the path re-encoded the canonical way, or (for clients that sign what they send) as it came
  const canon = uriEncode(safeDecode(rawPath), true);
  if (!sameHex(signature, signWith(canon)) && (canon === rawPath || !sameHex(signature, signWith(rawPath)))) {
    throw new S3Error('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.');
  }
  let payload: AuthResult['payload'];
  if (payloadHash === 'UNSIGNED-PAYLOAD') payload = { kind: 'unsigned' };
  else if (payloadHash === 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD') payload = { kind: 'chunked', signed: true, trailer: false };
  else if (payloadHash === 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER') payload = { kind: 'chunked', signed: true, trailer: true };
  else if (payloadHash === 'STREAMING-UNSIGNED-PAYLOAD-TRAILER') payload = { kind: 'chunked', signed: false, trailer: true };
  else if (/^[0-9a-f]{64}$/.test(payloadHash)) payload = { kind: 'sha256', hex: payloadHash };
  else throw new S3Error('InvalidArgument', `x-amz-content-sha256 '${payloadHash.slice(0, 100)}' is not supported`);
  return { accessKey: cred.accessKey, payload, seedSignature: signature, signingKey: key, amzDate, scope };
}

const MAX_CHUNK_LINE = 4096;
const MAX_TRAILER = 16384;

/**
 * The payload of an aws-chunked body, chunk by chunk, each chunk's
 * signature checked (when signed) before the next byte is given out, so a
 * body whose signature fails stops there. Nothing is allocated by a length
 * the client sent: chunk data is passed on in the slices it arrived in.
 */
export async function* decodeAwsChunked(src: AsyncIterable<Buffer>, a: AuthResult, trailerName = ''): AsyncGenerator<Buffer> {
  // the checksum a trailer announces is checked too (crc32c, which node:zlib lacks, is taken on trust)
  const sum = trailerChecksum(trailerName.trim().toLowerCase());
  const signed = a.payload.kind === 'chunked' && a.payload.signed;
  const trailer = a.payload.kind === 'chunked' && a.payload.trailer;
  let prev = a.seedSignature;
  let line = '';
  let state: 'line' | 'data' | 'crlf' | 'trailer' | 'done' = 'line';
  let left = 0;
  let chunkSig = '';
  let h = createHash('sha256');
  let crlf = 0;
  let trailerText = '';
  let final = false;
  const chunkDone = () => {
    if (!signed) return;
    const sts = `AWS4-HMAC-SHA256-PAYLOAD\n${a.amzDate}\n${a.scope}\n${prev}\n${EMPTY_SHA256}\n${h.digest('hex')}`;
    const want = createHmac('sha256', a.signingKey).update(sts).digest('hex');
    if (!sameHex(chunkSig, want)) throw new S3Error('SignatureDoesNotMatch', 'a chunk signature of the aws-chunked body does not match');
    prev = want;
  };
  for await (const buf of src) {
    let p = 0;
    while (p < buf.length) {
      if (state === 'line') {
        const nl = buf.indexOf(10, p);
        const end = nl < 0 ? buf.length : nl + 1;
        line += buf.toString('latin1', p, end);
        p = end;
        if (line.length > MAX_CHUNK_LINE) throw new S3Error('IncompleteBody', 'aws-chunked chunk header too long');
        if (nl < 0) continue;
        const m = /^([0-9a-fA-F]{1,12})(?:;chunk-signature=([0-9a-f]{64}))?\r\n$/.exec(line);
        if (!m || (signed && !m[2])) throw new S3Error('IncompleteBody', 'malformed aws-chunked chunk header');
        line = '';
        left = parseInt(m[1], 16);
        chunkSig = m[2] ?? '';
        h = createHash('sha256');
        if (left === 0) {
          // the final chunk: its signature covers the empty string
          chunkDone();
          final = true;
          state = trailer ? 'trailer' : 'crlf';
          crlf = 0;
        } else state = 'data';
      } else if (state === 'data') {
        const n = Math.min(left, buf.length - p);
        const piece = buf.subarray(p, p + n);
        if (signed) h.update(piece);
        sum?.update(piece);
        p += n;
        left -= n;
        yield piece;
        if (left === 0) {
          chunkDone();
          state = 'crlf';
          crlf = 0;
        }
      } else if (state === 'crlf') {
        const want = crlf === 0 ? 13 : 10;
        if (buf[p] !== want) throw new S3Error('IncompleteBody', 'aws-chunked chunk not followed by CRLF');
        p++;
        if (++crlf === 2) state = final ? 'done' : 'line';
      } else if (state === 'trailer') {
        const nl = buf.indexOf(10, p);
        const end = nl < 0 ? buf.length : nl + 1;
        trailerText += buf.toString('latin1', p, end);
        p = end;
        if (trailerText.length > MAX_TRAILER) throw new S3Error('IncompleteBody', 'aws-chunked trailer too long');
        if (trailerText.endsWith('\r\n\r\n') || trailerText === '\r\n') {
          if (signed) checkTrailer(trailerText, prev, a);
          if (sum) {
            const line = trailerText.split('\r\n').find((l) => l.toLowerCase().startsWith(sum.name + ':'));
            if (!line || line.slice(line.indexOf(':') + 1).trim() !== sum.digest()) {
              throw new S3Error('BadDigest', `The ${sum.name} you specified did not match the calculated checksum.`);
            }
          }
          state = 'done';
        }
      } else {
        // bytes after the final chunk
        throw new S3Error('IncompleteBody', 'data after the final aws-chunked chunk');
      }
    }
  }
  if (state !== 'done') throw new S3Error('IncompleteBody', 'the aws-chunked body ended before its final chunk');
}

function checkTrailer(text: string, prev: string, a: AuthResult): void {
  const lines = text.split('\r\n').filter((l) => l !== '');
  const sigLine = lines.find((l) => l.toLowerCase().startsWith('x-amz-trailer-signature:'));
  if (!sigLine) throw new S3Error('SignatureDoesNotMatch', 'the aws-chunked trailer is not signed');
  const body = lines.filter((l) => l !== sigLine).map((l) => {
    const i = l.indexOf(':');
    return `${l.slice(0, i).trim().toLowerCase()}:${l.slice(i + 1).trim()}\n`;
  }).join('');
  const sts = `AWS4-HMAC-SHA256-TRAILER\n${a.amzDate}\n${a.scope}\n${prev}\n${sha256hex(body)}`;
  const want = createHmac('sha256', a.signingKey).update(sts).digest('hex');
  if (!sameHex(sigLine.slice(sigLine.indexOf(':') + 1).trim(), want)) throw new S3Error('SignatureDoesNotMatch', 'the aws-chunked trailer signature does not match');
}

interface Checksum {
  name: string;
  update(b: Buffer): void;
  /** base64, as the trailer carries it */
  digest(): string;
}

function trailerChecksum(name: string): Checksum | undefined {
  if (name === 'x-amz-checksum-crc32') {
    let c = 0;
    return {
      name, update: (b) => { c = crc32(b, c); },
      digest: () => { const o = Buffer.alloc(4); o.writeUInt32BE(c >>> 0); return o.toString('base64'); },
    };
  }
  const algo = name === 'x-amz-checksum-sha256' ? 'sha256' : name === 'x-amz-checksum-sha1' ? 'sha1' : undefined;
  if (!algo) return undefined;
  const h = createHash(algo);
  return { name, update: (b) => { h.update(b); }, digest: () => h.digest('base64') };
}
