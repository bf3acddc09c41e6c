// Frames the sheepdog wire (a 48-byte header, then a payload whose length
// the header gives) out of one connection's bytes: requests on the daemon's
// port, responses on a client's connection.
//
// In direct mode (net's `onread`) the socket reads into buffers chosen here:
// headers and small payloads into a 256 KiB stage that the connection keeps
// for its life, and a large payload into its own buffer (pooled where the
// owner gives it back), which the kernel then fills in place. A 1 MiB
// payload thus costs one copy out of the socket instead of sixteen fresh
// 64 KiB chunks, a second copy to join them, and the collector's time for
// both. Nothing handed out is a view into the stage: it is overwritten as it
// is reused.
import { ByteQueue } from './framing.js';
import { POOL_MIN, bufferPool } from './bufpool.js';
import { SD_REQ_HEADER_SIZE } from './constants.js';

/** Requests and responses alike. */
const HEADER = SD_REQ_HEADER_SIZE;
const STAGE_SIZE = 256 * 1024;
/** Below this much room the stage is compacted before the next read. */
const STAGE_MIN_READ = 16 * 1024;

const SLAB_SIZE = 128 * 1024;
/** Largest payload carved from a slab (a kept one holds its slab's memory). */
const SLAB_MAX = 16 * 1024;

/** Where bytes after the end of framing go (the connection is closing). */
const DISCARD = Buffer.allocUnsafe(64 * 1024);

/** What reads a socket into buffers of its own choosing (net's `onread`). */
export interface DirectReader {
  /** The buffer the next read fills (called after every read, and once at start). */
  buffer(): Buffer;
  /** n bytes arrived at the start of the buffer last returned by buffer(). */
  received(n: number, buf: Buffer): void;
}

/** H: the decoded header (RequestHeader or ResponseHeader), decoded once per frame. */
export interface FrameSink<H> {
  /** Decode a header (given a 48-byte copy of its own). */
  header(raw: Buffer): H;
  /** Bytes of payload after this header, or -1: it cannot be taken, and nothing after it can be framed. */
  payloadLength(h: H): number;
  /** A whole frame; pooled: data came from bufferPool and may be given back once done with. */
  frame(h: H, data: Buffer, pooled: boolean): void;
  /** The header payloadLength refused. */
  refused(h: H): void;
}

export interface FrameReaderOptions<H> {
  /** Whether this frame's large payload may come from the pool (its owner then puts it back). */
  poolable?: (h: H) => boolean;
  /** Carve small payloads from slabs: only where nobody keeps them long (a kept one holds 128 KiB). */
  slabs?: boolean;
}

export class FrameReader<H> implements DirectReader {
  private rx = new ByteQueue();
  private hdr?: H;
  private len = 0;
  private stage?: Buffer;
  private stagePos = 0;
  private filling?: { h: H; buf: Buffer; got: number; pooled: boolean };
  private stopped = false;
  /** A large payload was just received in place: read only the next header. */
  private headerNext = false;

  constructor(private readonly sink: FrameSink<H>, private readonly opts: FrameReaderOptions<H> = {}) {}

  /** Bytes from an ordinary socket's 'data' event (a fresh chunk, which may be kept). */
  push(chunk: Buffer): void {
    if (this.stopped) return;
    this.rx.push(chunk);
    this.parse();
  }

  buffer(): Buffer {
    if (this.stopped) return DISCARD;
    const f = this.filling;
    if (f) return f.buf.subarray(f.got);
    if (!this.stage) {
      this.stage = bufferPool.get(STAGE_SIZE);
      this.stagePos = 0;
    } else if (this.stage.length - this.stagePos < STAGE_MIN_READ) {
      this.compact();
    }
    // Right after a large payload, read just the next header: if another
    // large one follows, it then lands in place instead of partly in the
    // stage (to be copied). One more read() call, not a copy of up to 256 KiB.
    if (this.headerNext && this.rx.length === 0) return this.stage.subarray(this.stagePos, this.stagePos + HEADER);
    return this.stage.subarray(this.stagePos);
  }

  received(n: number, buf: Buffer): void {
    if (this.stopped) return;
    const f = this.filling;
    if (f) {
      if (buf.buffer !== f.buf.buffer || buf.byteOffset !== f.buf.byteOffset + f.got) {
        // not the buffer buffer() gave for it: should Node ever ask ahead, copy
        const k = Math.min(n, f.buf.length - f.got);
        buf.copy(f.buf, f.got, 0, k);
        f.got += k;
        if (k < n) this.rx.push(Buffer.from(buf.subarray(k, n)));
        if (buf.buffer === this.stage?.buffer) this.stagePos += n;
      } else {
        f.got += n;
      }
      if (f.got < f.buf.length) return;
      this.filling = undefined;
      this.headerNext = true;
      this.sink.frame(f.h, f.buf, f.pooled);
    } else {
      this.headerNext = false;
      this.stagePos += n;
      this.rx.push(buf.subarray(0, n));
    }
    this.parse();
  }

  /** No more frames from this connection (it closed, or cannot be framed any more). */
  stop(): void {
    this.stopped = true;
    this.filling = undefined;
    this.rx = new ByteQueue();
    if (this.stage) bufferPool.put(this.stage);
    this.stage = undefined;
  }

  /**
   * Move the unparsed bytes, which are the last rx.length bytes before
   * stagePos (the stage is filled front to back and parsed in order), to its
   * start. They are at most a header and a small payload.
   */
  private compact(): void {
    const stage = this.stage!;
    const n = this.rx.length;
    stage.copy(stage, 0, this.stagePos - n, this.stagePos);
    this.rx = new ByteQueue();
    if (n) this.rx.push(stage.subarray(0, n));
    this.stagePos = n;
  }

  /** n bytes off rx in a buffer of their own (rx may hold views into the stage). */
  private takeOwn(n: number, alloc: (n: number) => Buffer): Buffer {
    if (n <= SLAB_MAX && this.opts.slabs && alloc !== bufferPool.alloc) alloc = this.slabAlloc;
    const b = this.rx.take(n, alloc);
    if (this.stage && b.buffer === this.stage.buffer) {
      const own = alloc(n);
      b.copy(own);
      return own;
    }
    return b;
  }

  // Small payloads (a replica's 4 KiB write, an index entry) may be carved
  // from a slab, as Buffer.allocUnsafe does below 4 KiB: a buffer of its
  // own each cost a malloc and a collector's visit on every request.
  private slab?: Buffer;
  private slabPos = 0;
  private readonly slabAlloc = (n: number): Buffer => {
    if (!this.slab || this.slabPos + n > SLAB_SIZE) {
      this.slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
      this.slabPos = 0;
    }
    const b = this.slab.subarray(this.slabPos, this.slabPos + n);
    this.slabPos = (this.slabPos + n + 7) & ~7;
    return b;
  };

  private parse(): void {
    while (!this.stopped) {
      if (!this.hdr) {
        if (this.rx.length < HEADER) return;
        const h = this.sink.header(Buffer.from(this.rx.take(HEADER)));
        const len = this.sink.payloadLength(h);
        if (len < 0) {
          this.stop();
          this.sink.refused(h);
          return;
        }
        this.hdr = h;
        this.len = len;
      }
      const h = this.hdr;
      const len = this.len;
      const pooled = len >= POOL_MIN && this.opts.poolable !== undefined && this.opts.poolable(h);
      const alloc = pooled ? bufferPool.alloc : (k: number) => Buffer.allocUnsafe(k);
      if (this.rx.length < len) {
        // direct mode: let the socket fill the rest of a large payload in place
        if (!this.stage || len < POOL_MIN) return;
        const buf = alloc(len);
        const got = this.rx.length;
        if (got) this.rx.take(got).copy(buf);
        this.hdr = undefined;
        this.filling = { h, buf, got, pooled };
        return;
      }
      this.hdr = undefined;
      const data = len ? this.takeOwn(len, alloc) : Buffer.alloc(0);
      this.sink.frame(h, data, pooled);
    }
  }
}
