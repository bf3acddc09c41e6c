// Frames the sheepdog wire (a 48-byte header, then a payload whose length
// the header gives) out of one connection's bytes: requests on the daemon's
// port, responses on a client's connection.
//
// In direct mode (net's `onread`) the socket reads into buffers chosen here:
// headers and whole small frames into one receive buffer the process shares
// (reads run one at a time on one thread, and what is kept of them is
// copied out before the read returns), and a payload the read did not
// complete into a buffer of its own (pooled where the owner gives it back),
// which the kernel then fills in place. So an idle connection holds no
// receive memory, a 1 MiB payload costs one copy out of the socket instead
// of sixteen fresh 64 KiB chunks and a second copy to join them, and a
// payload's buffer fills as its bytes arrive: it exists only once the sink
// has admitted the frame (see FrameSink.admit), which is where the
// daemon's memory budget says yes or not yet.
import { ByteQueue } from './framing.js';
import { POOL_MIN, bufferPool } from './bufpool.js';
import { SD_REQ_HEADER_SIZE } from './constants.js';

/** Requests and responses alike. */
const HEADER = SD_REQ_HEADER_SIZE;
const SHARED_SIZE = 256 * 1024;

const SLAB_SIZE = 128 * 1024;
/** Largest payload carved from a slab (a kept one holds its slab's memory). */
const SLAB_MAX = 16 * 1024;

/** Where bytes after the end of framing go (the connection is closing). */
const DISCARD = Buffer.allocUnsafe(64 * 1024);

/** The receive buffer every direct-mode connection reads into (from the pool: huge pages). */
let shared: Buffer | undefined;
function sharedBuffer(): Buffer {
  if (!shared) shared = bufferPool.get(SHARED_SIZE);
  return shared;
}

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
  /**
   * Whether this frame's payload (len bytes, maybe 0) may be received now.
   * false: the reader holds the frame, allocates nothing for it, and goes
   * on once resume() is called; the owner stops reading the socket meanwhile.
   */
  admit?(h: H, len: number): boolean;
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
  /** The current header waits for admit() to say yes. */
  private holding = false;
  private filling?: { h: H; buf: Buffer; got: number; pooled: boolean };
  private stopped = false;
  /** A payload was just received in place: read only the next header. */
  private headerNext = false;

  constructor(private readonly sink: FrameSink<H>, private readonly opts: FrameReaderOptions<H> = {}) {}

  /** Bytes from an ordinary socket's 'data' event (a fresh chunk, which may be kept). */
  push(chunk: Buffer): void {
    if (this.stopped) return;
    const f = this.filling;
    if (f) {
      const k = Math.min(chunk.length, f.buf.length - f.got);
      chunk.copy(f.buf, f.got, 0, k);
      f.got += k;
      if (k < chunk.length) this.rx.push(chunk.subarray(k));
      if (f.got < f.buf.length) return;
      this.filling = undefined;
      this.sink.frame(f.h, f.buf, f.pooled);
    } else {
      this.rx.push(chunk);
    }
    this.parse();
  }

  buffer(): Buffer {
    if (this.stopped) return DISCARD;
    const f = this.filling;
    if (f) return f.buf.subarray(f.got);
    // Right after a payload received in place, read just the next header:
    // if another payload follows that this read does not complete, it then
    // lands in its own buffer instead of partly in the shared one (to be
    // copied). One more read() call, not a copy of up to 256 KiB.
    if (this.headerNext && this.rx.length === 0) return sharedBuffer().subarray(0, HEADER);
    return sharedBuffer();
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
      } else {
        f.got += n;
      }
      if (f.got < f.buf.length) return;
      this.filling = undefined;
      // (after a small payload, the next read is a full one: small frames come many to a read)
      this.headerNext = f.buf.length >= POOL_MIN;
      this.sink.frame(f.h, f.buf, f.pooled);
    } else {
      this.headerNext = false;
      this.rx.push(buf.subarray(0, n));
    }
    this.parse();
    // the shared buffer is the next read's, on whichever connection: keep a copy of what is left
    if (shared) this.rx.own(shared.buffer as ArrayBuffer);
  }

  /** The frame admit() held back may be received now. */
  resume(): void {
    if (this.stopped || !this.holding) return;
    this.holding = false;
    this.parse();
    if (shared) this.rx.own(shared.buffer as ArrayBuffer);
  }

  /** Waiting for admit(): the owner should not read the socket. */
  get held(): boolean {
    return this.holding;
  }

  /** In the middle of a frame (a partial header, or a payload not complete). */
  get midFrame(): boolean {
    return this.rx.length > 0 || this.filling !== undefined || this.hdr !== undefined;
  }

  /** Drop memory kept for speed between frames (the small-payload slab), when idle. */
  idle(): void {
    if (!this.midFrame) this.slab = undefined;
  }

  /** No more frames from this connection (it closed, or cannot be framed any more). */
  stop(): void {
    this.stopped = true;
    this.filling = undefined;
    this.hdr = undefined;
    this.holding = false;
    this.rx = new ByteQueue();
    this.slab = undefined;
  }

  /** n bytes off rx in a buffer of their own (rx may hold views into the shared buffer). */
  private takeOwn(n: number, alloc: (n: number) => Buffer): Buffer {
    if (n <= SLAB_MAX && this.opts.slabs && alloc !== bufferPool.alloc) alloc = this.slabAlloc;
    const b = this.rx.take(n, alloc);
    if (shared && b.buffer === shared.buffer) {
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
    while (!this.stopped && !this.holding) {
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
        if (this.sink.admit && !this.sink.admit(h, len)) {
          this.holding = true;
          return;
        }
      }
      const h = this.hdr;
      const len = this.len;
      const pooled = len >= POOL_MIN && this.opts.poolable !== undefined && this.opts.poolable(h);
      const alloc = pooled ? bufferPool.alloc : (k: number) => Buffer.allocUnsafe(k);
      this.hdr = undefined;
      if (this.rx.length < len) {
        // the rest of the payload fills a buffer of its own as it arrives (in place, in direct mode)
        const buf = len <= SLAB_MAX && this.opts.slabs ? this.slabAlloc(len) : alloc(len);
        const got = this.rx.length;
        if (got) this.rx.take(got).copy(buf);
        this.filling = { h, buf, got, pooled };
        return;
      }
      const data = len ? this.takeOwn(len, alloc) : Buffer.alloc(0);
      this.sink.frame(h, data, pooled);
    }
  }
}
