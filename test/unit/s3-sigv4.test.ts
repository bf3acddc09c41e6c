// The S3 gateway's Signature V4 checks against the worked examples of
// AWS's S3 documentation (header auth, presigned URL, aws-chunked upload
// with chained chunk signatures), plus the bucket layout codecs.
import { describe, it, expect } from 'vitest';
import type { IncomingMessage } from 'node:http';
import * as zlib from 'node:zlib';
import { verifyRequest, decodeAwsChunked, parseQuery } from '../../sheep/src/s3/auth.js';
import { S3Error } from '../../sheep/src/s3/errors.js';
import {
  encodeBucketSuper, decodeBucketSuper, encodeLogRecord, decodeLogRecords, encodeS3Users, decodeS3Users, validBucketName, S3_DATA_START,
} from '@sheepdog/common';

const AK = 'AKIAIOSFODNN7EXAMPLE';
const SK = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const NOW = Date.UTC(2013, 4, 24, 0, 0, 30);
const secretOf = async (k: string) => (k === AK ? SK : undefined);
const req = (method: string, headers: Record<string, string>) => ({ method, headers }) as unknown as IncomingMessage;

async function s3code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    if (e instanceof S3Error) return e.code;
    throw e;
  }
}

const GET_HEADERS = {
  host: 'examplebucket.s3.amazonaws.com',
  range: 'bytes=0-9',
  'x-amz-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  'x-amz-date': '20130524T000000Z',
  authorization: `AWS4-HMAC-SHA256 Credential=${AK}/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41`,
};

describe('SigV4 (AWS documentation examples)', () => {
  it('accepts the GET Object example and refuses it altered', async () => {
    const a = await verifyRequest(req('GET', GET_HEADERS), '/test.txt', [], secretOf, NOW);
    expect(a.accessKey).toBe(AK);
    expect(a.payload).toEqual({ kind: 'sha256', hex: GET_HEADERS['x-amz-content-sha256'] });
    expect(await s3code(verifyRequest(req('GET', { ...GET_HEADERS, range: 'bytes=0-10' }), '/test.txt', [], secretOf, NOW))).toBe('SignatureDoesNotMatch');
    expect(await s3code(verifyRequest(req('GET', GET_HEADERS), '/test.txt2', [], secretOf, NOW))).toBe('SignatureDoesNotMatch');
    expect(await s3code(verifyRequest(req('PUT', GET_HEADERS), '/test.txt', [], secretOf, NOW))).toBe('SignatureDoesNotMatch');
    expect(await s3code(verifyRequest(req('GET', GET_HEADERS), '/test.txt', [['x', 'y']], secretOf, NOW))).toBe('SignatureDoesNotMatch');
    expect(await s3code(verifyRequest(req('GET', GET_HEADERS), '/test.txt', [], async () => 'other', NOW))).toBe('SignatureDoesNotMatch');
    expect(await s3code(verifyRequest(req('GET', GET_HEADERS), '/test.txt', [], async () => undefined, NOW))).toBe('InvalidAccessKeyId');
    expect(await s3code(verifyRequest(req('GET', GET_HEADERS), '/test.txt', [], secretOf, NOW + 3600_000))).toBe('RequestTimeTooSkewed');
    expect(await s3code(verifyRequest(req('GET', { host: 'x' }), '/test.txt', [], secretOf, NOW))).toBe('AccessDenied');
    expect(await s3code(verifyRequest(req('GET', { ...GET_HEADERS, authorization: 'AWS4-HMAC-SHA256 garbage' }), '/test.txt', [], secretOf, NOW))).toBe('AuthorizationHeaderMalformed');
  });

  it('accepts the presigned URL example until it expires', async () => {
    const raw = 'X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404';
    const r = req('GET', { host: 'examplebucket.s3.amazonaws.com' });
    const a = await verifyRequest(r, '/test.txt', parseQuery(raw), secretOf, NOW);
    expect(a.payload).toEqual({ kind: 'unsigned' });
    expect(await s3code(verifyRequest(r, '/test.txt', parseQuery(raw), secretOf, NOW + 86401_000))).toBe('AccessDenied');
    expect(await s3code(verifyRequest(r, '/test.txt', parseQuery(raw.replace('86400', '86401')), secretOf, NOW))).toBe('SignatureDoesNotMatch');
  });

  const PUT_HEADERS = {
    host: 's3.amazonaws.com',
    'x-amz-date': '20130524T000000Z',
    'x-amz-storage-class': 'REDUCED_REDUNDANCY',
    'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
    'content-encoding': 'aws-chunked',
    'x-amz-decoded-content-length': '66560',
    'content-length': '66824',
    authorization: `AWS4-HMAC-SHA256 Credential=${AK}/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9`,
  };
  const chunked = (sig3 = 'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9', second = Buffer.alloc(1024, 'a')) => Buffer.concat([
    Buffer.from('10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n'), Buffer.alloc(65536, 'a'), Buffer.from('\r\n'),
    Buffer.from('400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n'), second, Buffer.from('\r\n'),
    Buffer.from(`0;chunk-signature=${sig3}\r\n\r\n`),
  ]);
  async function decode(body: Buffer, sliceAt: number[]): Promise<Buffer> {
    const a = await verifyRequest(req('PUT', PUT_HEADERS), '/examplebucket/chunkObject.txt', [], secretOf, NOW);
    expect(a.payload).toEqual({ kind: 'chunked', signed: true, trailer: false });
    const pieces: Buffer[] = [];
    let p = 0;
    for (const s of [...sliceAt, body.length]) { pieces.push(body.subarray(p, s)); p = s; }
    const out: Buffer[] = [];
    for await (const b of decodeAwsChunked((async function* () { yield* pieces; })(), a)) out.push(b);
    return Buffer.concat(out);
  }

  it('decodes the aws-chunked example, however the body is split, checking every chunk signature', async () => {
    for (const cuts of [[], [1], [5, 90, 65600, 65601, 66700], Array.from({ length: 60 }, (_, i) => i * 1117 + 3)]) {
      const out = await decode(chunked(), cuts);
      expect(out.length).toBe(66560);
      expect(out.every((x) => x === 0x61)).toBe(true);
    }
    const tampered = Buffer.alloc(1024, 'a');
    tampered[500] = 0x62;
    expect(await s3code(decode(chunked(undefined, tampered), []))).toBe('SignatureDoesNotMatch');
    expect(await s3code(decode(chunked('0'.repeat(64)), []))).toBe('SignatureDoesNotMatch');
    expect(await s3code(decode(chunked().subarray(0, 66000), []))).toBe('IncompleteBody');
    expect(await s3code(decode(Buffer.concat([Buffer.from('ffffffffffff;chunk-signature='), Buffer.alloc(5000, '0')]), []))).toBe('IncompleteBody');
  });
});

describe('aws-chunked with an unsigned trailer (what the AWS SDK sends for streams)', () => {
  const a = { accessKey: 'x', payload: { kind: 'chunked', signed: false, trailer: true }, seedSignature: '', signingKey: Buffer.alloc(0), amzDate: '', scope: '' } as const;
  const crc = (b: Buffer) => { const o = Buffer.alloc(4); o.writeUInt32BE(zlib.crc32(b)); return o.toString('base64'); };
  const run = async (body: string) => {
    const out: Buffer[] = [];
    for await (const b of decodeAwsChunked((async function* () { yield Buffer.from(body); })(), a, 'x-amz-checksum-crc32')) out.push(b);
    return Buffer.concat(out).toString();
  };
  it('passes the data and checks the CRC-32 of the trailer', async () => {
    const data = Buffer.from('hello, sheep');
    expect(await run(`5\r\nhello\r\n7\r\n, sheep\r\n0\r\nx-amz-checksum-crc32:${crc(data)}\r\n\r\n`)).toBe('hello, sheep');
    expect(await s3code(run(`5\r\nhello\r\n7\r\n, sheep\r\n0\r\nx-amz-checksum-crc32:${crc(Buffer.from('other'))}\r\n\r\n`))).toBe('BadDigest');
    expect(await s3code(run('5\r\nhello\r\n0\r\n\r\n'))).toBe('BadDigest');
    expect(await s3code(run('5\r\nhelloXX'))).toBe('IncompleteBody');
  });
});

describe('S3 layout codecs', () => {
  it('round-trips the superblock, log records and users, and refuses damage', () => {
    const sb = { logLen: 1234, dataEnd: S3_DATA_START + 99, created: 1700000000000 };
    const b = encodeBucketSuper(sb);
    expect(decodeBucketSuper(b)).toEqual(sb);
    expect(decodeBucketSuper(Buffer.alloc(64))).toBeUndefined();
    const bad = Buffer.from(b);
    bad[20] ^= 1;
    expect(() => decodeBucketSuper(bad)).toThrow(/checksum/);
    const recs = [
      { t: 'put' as const, k: 'a/b', o: { size: 3, etag: 'x', mtime: 1, headers: { 'content-type': 'text/plain' }, extents: [[S3_DATA_START, 3] as [number, number]] } },
      { t: 'del' as const, k: 'a/b' },
    ];
    const log = Buffer.concat(recs.map(encodeLogRecord));
    expect(decodeLogRecords(log)).toEqual({ records: recs, used: log.length });
    expect(decodeLogRecords(log.subarray(0, log.length - 2)).records).toEqual(recs.slice(0, 1));
    const dam = Buffer.from(log);
    dam[12] ^= 1;
    expect(() => decodeLogRecords(dam)).toThrow(/checksum/);
    const huge = Buffer.alloc(16);
    huge.writeUInt32LE(0xffffffff, 0);
    expect(() => decodeLogRecords(huge)).toThrow(/claims/);
    const users = [{ name: 'u', accessKey: 'AK', secretKey: 'SK', created: 5 }];
    expect(decodeS3Users(encodeS3Users(users))).toEqual(users);
    expect(decodeS3Users(Buffer.alloc(16))).toEqual([]);
    expect(validBucketName('my-bucket.1')).toBe(true);
    for (const n of ['ab', 'Abc', 'a..b', '-ab', '192.168.1.1', 'a_b', 'x'.repeat(64)]) expect(validBucketName(n)).toBe(false);
  });
});
