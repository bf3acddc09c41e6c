// The answers a server sends on one connection, assembled for few, large
// socket writes. Small pieces (reply headers, and data a request could read
// straight into place) are built in a slab, a pooled buffer the size of many
// replies, so a reply costs no allocation of its own; larger data is queued
// by reference. Everything queued during one turn of the event loop leaves in
// one write (a writev when there is more than one piece), sent from
// setImmediate, after the poll phase has run every completion that was ready.
import type * as net from 'node:net';
import { bufferPool } from './bufpool.js';

const SLAB_SIZE = 512 * 1024;

interface Slab {
  buf: Buffer;
  /** Socket writes still holding bytes of it. */
  writing: number;
  /** No longer the slab being filled. */
  retired: boolean;
}

export class ReplyWriter {
  private slab?: Slab;
  /** Bytes of the slab before this offset are queued or sent. */
  private start = 0;
  /** Where the next piece goes in slab.buf (see room()). */
  pos = 0;
  private chunks: Buffer[] = [];
  /** Slabs and pooled buffers the queued chunks refer to. */
  private slabsQueued: Slab[] = [];
  private pooledQueued: Buffer[] = [];
  /** A send is scheduled (something is queued). */
  scheduled = false;

  constructor(private readonly sock: net.Socket) {}

  /** Largest piece room() takes. */
  static readonly MAX_PIECE = SLAB_SIZE / 4;

  /**
   * The slab buffer, with at least n bytes (n <= MAX_PIECE) free at this.pos.
   * Write the piece there and commit(n) it, or leave it uncommitted (the
   * bytes are then overwritten by the next piece).
   */
  room(n: number): Buffer {
    let s = this.slab;
    if (!s || s.buf.length - this.pos < n) {
      if (s) this.retire(s);
      s = this.slab = { buf: bufferPool.get(SLAB_SIZE), writing: 0, retired: false };
      this.start = this.pos = 0;
    }
    return s.buf;
  }

  commit(n: number): void {
    this.pos += n;
    this.schedule();
  }

  /** Queue data after what is queued so far (pooled: a bufferPool buffer, given back once sent). */
  push(data: Buffer, pooled = false): void {
    this.cut();
    this.chunks.push(data);
    if (pooled) this.pooledQueued.push(data);
    this.schedule();
  }

  /** Drop everything not yet sent (the connection is going away). */
  discard(): void {
    this.chunks = [];
    this.slabsQueued = [];
    this.pooledQueued = [];
    this.start = this.pos;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.send);
  }

  /** Move the slab's unqueued bytes into the chunk list. */
  private cut(): void {
    const s = this.slab;
    if (!s || this.pos === this.start) return;
    this.chunks.push(s.buf.subarray(this.start, this.pos));
    this.start = this.pos;
    if (this.slabsQueued[this.slabsQueued.length - 1] !== s) {
      s.writing++;
      this.slabsQueued.push(s);
    }
  }

  private retire(s: Slab): void {
    this.cut();
    s.retired = true;
    if (s.writing === 0) bufferPool.put(s.buf);
  }

  private readonly send = (): void => {
    this.scheduled = false;
    this.cut();
    const q = this.chunks;
    const slabs = this.slabsQueued;
    const pooled = this.pooledQueued;
    if (q.length === 0) return;
    this.chunks = [];
    this.slabsQueued = [];
    this.pooledQueued = [];
    if (this.sock.destroyed) return;
    // writes complete in order: the last one's callback covers the batch
    const done = (err?: Error | null) => {
      for (const s of slabs) {
        // after a failed write the bytes may still be referenced: leave them to the collector
        if (--s.writing === 0 && s.retired && !err) bufferPool.put(s.buf);
      }
      if (!err) for (const b of pooled) bufferPool.put(b);
    };
    if (q.length === 1) {
      this.sock.write(q[0], done);
      return;
    }
    this.sock.cork();
    for (let i = 0; i < q.length - 1; i++) this.sock.write(q[i]);
    this.sock.write(q[q.length - 1], done);
    this.sock.uncork();
  };
}
