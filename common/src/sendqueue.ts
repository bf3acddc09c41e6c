// What a program sends on one connection (a server's replies, a client's
// requests), assembled for few, large socket writes. Small pieces (headers,
// and data a request could read straight into place) are built in a slab,
// a pooled buffer the size of many of them, so a piece costs no allocation
// of its own; larger data is queued by reference. Everything queued during
// one turn of the event loop leaves in one write (a writev when there is
// more than one piece), sent from setImmediate, after the poll phase has run
// every completion that was ready.
import type * as net from 'node:net';
import { bufferPool } from './bufpool.js';

const SLAB_SIZE = 512 * 1024;

export class SendQueue {
  /** The slab being filled (its pool reference is ours; each send in flight holds another). */
  private slab?: Buffer;
  /** Bytes of the slab before this offset are queued or sent. */
  private start = 0;
  /** Where the next piece goes in the slab (see room()). */
  pos = 0;
  private chunks: Buffer[] = [];
  /** Slabs and pooled buffers the queued chunks refer to (each with a pool reference for the send). */
  private slabsQueued: Buffer[] = [];
  private pooledQueued: Buffer[] = [];
  /** A send is scheduled (something is queued). */
  scheduled = false;
  /** Memory charged to what is queued (see charge()), handed to onSent once it has left. */
  private charged = 0;

  /** onSent(n): the bytes charge()d to a batch have been taken by the kernel (or the socket failed). */
  constructor(private readonly sock: net.Socket, private readonly onSent?: (n: number) => void) {}

  /** Count n bytes of what is queued against the owner's memory budget, given back through onSent. */
  charge(n: number): void {
    this.charged += n;
  }

  /** The connection has closed: give the slab back (sends still in flight hold their own references). */
  close(): void {
    this.chunks = [];
    this.slabsQueued = [];
    this.pooledQueued = [];
    if (this.slab) bufferPool.put(this.slab);
    this.slab = undefined;
    this.start = this.pos = 0;
  }

  /** Give back the slab while nothing is queued (an idle connection keeps no send memory). */
  idle(): void {
    if (!this.slab || this.scheduled || this.pos !== this.start) return;
    bufferPool.put(this.slab);
    this.slab = undefined;
    this.start = this.pos = 0;
  }

  /** Largest piece room() takes. */
  static readonly MAX_PIECE = SLAB_SIZE / 4;

  /**
   * The slab buffer, with at least n bytes (n <= MAX_PIECE) free at this.pos.
   * Write the piece there and commit(n) it, or leave it uncommitted (the
   * bytes are then overwritten by the next piece).
   */
  room(n: number): Buffer {
    let s = this.slab;
    if (!s || s.length - this.pos < n) {
      if (s) {
        this.cut();
        bufferPool.put(s);
      }
      s = this.slab = bufferPool.get(SLAB_SIZE);
      this.start = this.pos = 0;
    }
    return s;
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

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.send);
  }

  /** Move the slab's unqueued bytes into the chunk list. */
  private cut(): void {
    const s = this.slab;
    if (!s || this.pos === this.start) return;
    this.chunks.push(s.subarray(this.start, this.pos));
    this.start = this.pos;
    if (this.slabsQueued[this.slabsQueued.length - 1] !== s) {
      bufferPool.retain(s);
      this.slabsQueued.push(s);
    }
  }

  /** Send what is queued now, not at the end of the turn (before ending the connection, say). */
  flush(): void {
    this.send();
  }

  private readonly send = (): void => {
    this.scheduled = false;
    this.cut();
    const q = this.chunks;
    const slabs = this.slabsQueued;
    const pooled = this.pooledQueued;
    const charged = this.charged;
    this.charged = 0;
    if (q.length === 0) {
      if (charged) this.onSent?.(charged);
      return;
    }
    this.chunks = [];
    this.slabsQueued = [];
    this.pooledQueued = [];
    if (this.sock.destroyed) {
      if (charged) this.onSent?.(charged);
      return;
    }
    // writes complete in order: the last one's callback covers the batch
    const done = (err?: Error | null) => {
      if (charged) this.onSent?.(charged);
      // after a failed write the bytes may still be referenced: leave them to the collector
      if (err) return;
      for (const s of slabs) bufferPool.put(s);
      for (const b of pooled) bufferPool.put(b);
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
