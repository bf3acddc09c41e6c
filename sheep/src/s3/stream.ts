// Object bytes in and out without holding an object in memory: a request
// body is written into the bucket VDI in pieces of at most 1 MiB with a few
// writes in flight (the body is not read further while they are full), and
// a reply is read ahead by a few pieces and sent as the socket drains.
import { createHash, Hash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { S3Extent, VdiIO } from '@sheepdog/common';
import { AuthResult, decodeAwsChunked } from './auth.js';
import { S3Error } from './errors.js';
import type { Bucket } from './bucket.js';

const PIECE = 1 << 20;
const WRITES_IN_FLIGHT = 4;
const READS_AHEAD = 3;
/** Object bytes all S3 requests together may hold in memory (staged writes, reads ahead). */
const GATEWAY_BUDGET = 256 << 20;

/** Bytes in memory for object data, shared by every request: a request waits for its share. */
class ByteBudget {
  private used = 0;
  private waiters: (() => void)[] = [];
  constructor(private readonly max: number) {}
  async take(n: number): Promise<void> {
    // one request alone may always proceed, so a piece never waits forever
    while (this.used > 0 && this.used + n > this.max) await new Promise<void>((r) => this.waiters.push(r));
    this.used += n;
  }
  give(n: number): void {
    this.used -= n;
    for (const w of this.waiters.splice(0)) w();
  }
}
const budget = new ByteBudget(GATEWAY_BUDGET);

/** Bodies parsed whole (XML): CompleteMultipartUpload of 10,000 parts fits. */
export const MAX_XML_BODY = 2 << 20;

/** The payload bytes of a request: aws-chunked decoded, and checked against a signed SHA-256 at the end. */
export async function* payload(req: IncomingMessage, a: AuthResult): AsyncGenerator<Buffer> {
  if (a.payload.kind === 'chunked') {
    const t = req.headers['x-amz-trailer'];
    yield* decodeAwsChunked(req, a, typeof t === 'string' ? t : '');
    return;
  }
  const h = a.payload.kind === 'sha256' ? createHash('sha256') : undefined;
  for await (const b of req as AsyncIterable<Buffer>) {
    h?.update(b);
    yield b;
  }
  if (h && a.payload.kind === 'sha256' && h.digest('hex') !== a.payload.hex) {
    throw new S3Error('XAmzContentSHA256Mismatch', 'The provided x-amz-content-sha256 header does not match what was computed.');
  }
}

/** A small body (XML) in memory, refused past `limit` bytes. */
export async function smallBody(req: IncomingMessage, a: AuthResult, limit = MAX_XML_BODY): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const b of payload(req, a)) {
    n += b.length;
    if (n > limit) throw new S3Error('EntityTooLarge', `the request body is larger than ${limit} bytes`);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

export interface Received {
  extents: S3Extent[];
  md5: Buffer;
}

/**
 * Write exactly `size` bytes of src into newly allocated space of bucket b.
 * The space is referenced by nothing until the caller commits a record.
 */
export async function receive(b: Bucket, src: AsyncIterable<Buffer>, size: number, extra?: Hash): Promise<Received> {
  const io = b.io;
  const start = b.alloc(size);
  const md5 = createHash('md5');
  const inflight = new Set<Promise<void>>();
  let failed: unknown;
  let pos = 0;
  let stage: Buffer | undefined;
  let fill = 0;
  const flush = async () => {
    if (!stage || fill === 0) return;
    const data = fill === stage.length ? stage : stage.subarray(0, fill);
    const held = stage.length;
    const p = io.write(start + pos - fill, data).catch((e) => { failed ??= e; }).finally(() => budget.give(held));
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
    stage = undefined;
    fill = 0;
    while (inflight.size >= WRITES_IN_FLIGHT) await Promise.race(inflight);
    if (failed) throw failed;
  };
  try {
    for await (const chunk of src) {
      if (pos + chunk.length > size) throw new S3Error('IncompleteBody', 'the body is longer than its declared length');
      md5.update(chunk);
      extra?.update(chunk);
      let p = 0;
      while (p < chunk.length) {
        if (!stage) {
          // pieces end on PIECE boundaries of the VDI, so none straddles two objects
          const at = start + pos;
          const n = Math.min(PIECE - (at % PIECE), size - pos);
          await budget.take(n);
          stage = Buffer.allocUnsafe(n);
        }
        const n = Math.min(stage.length - fill, chunk.length - p);
        chunk.copy(stage, fill, p, p + n);
        fill += n;
        p += n;
        pos += n;
        if (fill === stage.length) await flush();
      }
    }
    if (pos !== size) throw new S3Error('IncompleteBody', `You did not provide the number of bytes specified by the Content-Length HTTP header (${pos} of ${size})`);
    await flush();
    await Promise.all(inflight);
  } finally {
    // a body that failed halfway gives back the piece it was filling
    if (stage) budget.give(stage.length);
  }
  if (failed) throw failed;
  return { extents: size ? [[start, size]] : [], md5: md5.digest() };
}

/** Bytes [from, to) of the object made of `extents`, read ahead by a few pieces. */
export async function* readExtents(io: VdiIO, extents: S3Extent[], from: number, to: number): AsyncGenerator<Buffer> {
  const queue: Promise<Buffer>[] = [];
  const sizes: number[] = [];
  let base = 0;
  let held = 0;
  // a piece leaves the budget when it is handed out: the consumer (sendBody)
  // waits for the socket to drain before it asks for the next
  const next = async () => {
    const b = await queue.shift()!;
    held -= sizes.shift()!;
    budget.give(b.length);
    return b;
  };
  try {
    for (const [off, len] of extents) {
      const a = Math.max(from, base);
      const z = Math.min(to, base + len);
      for (let p = a; p < z;) {
        const at = off + (p - base);
        const n = Math.min(PIECE - (at % PIECE), z - p);
        await budget.take(n);
        held += n;
        sizes.push(n);
        const r = io.read(at, n);
        r.catch(() => undefined); // awaited below; a failure is not unhandled meanwhile
        queue.push(r);
        p += n;
        if (queue.length >= READS_AHEAD) yield await next();
      }
      base += len;
      if (base >= to) break;
    }
    while (queue.length) yield await next();
  } finally {
    queue.length = 0;
    if (held) budget.give(held);
  }
}

/** Send a stream of buffers as the response body, waiting for the socket to drain. */
export async function sendBody(res: ServerResponse, src: AsyncIterable<Buffer>): Promise<void> {
  for await (const b of src) {
    if (res.destroyed) return;
    if (!res.write(b)) {
      await new Promise<void>((resolve) => {
        const done = () => { res.off('drain', done); res.off('close', done); resolve(); };
        res.on('drain', done);
        res.on('close', done);
      });
    }
  }
  res.end();
}
