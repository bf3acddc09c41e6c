// A free list of large I/O buffers. Allocating a fresh megabyte costs far
// more than copying one (new pages from the kernel, and the external-memory
// pressure makes V8 collect more often); requests that move 64 KiB or more
// borrow a buffer here and give it back when the bytes have left.
//
// A buffer may have several holders (a receive buffer and the request
// payloads that are views into it): each retain() adds one, each put()
// drops one, and the memory is reused when the last is gone. Only buffers
// this pool handed out are counted (put() or retain() of anything else, or a
// put() after the last, is ignored), so a holder that is unsure whether the
// bytes are still referenced elsewhere can simply not return them.

/** Requests below this size use ordinary allocation. */
export const POOL_MIN = 64 * 1024;
/** Nor do those above this: rare, and the pool's allocator may not serve them (huge pages stop at 1 GiB). */
export const POOL_MAX = 256 * 1024 * 1024;

export class BufferPool {
  private free = new Map<number, Buffer[]>();
  private owned = new WeakMap<ArrayBuffer, { full: Buffer; refs: number }>();
  private freeBytes = 0;
  private allocate: (n: number) => Buffer = (n) => Buffer.allocUnsafeSlow(n);

  /** @param maxFreeBytes how much idle memory the pool may keep */
  constructor(private readonly maxFreeBytes = 64 << 20) {}

  private static classOf(n: number): number {
    let c = POOL_MIN;
    while (c < n) c *= 2;
    return c;
  }

  /**
   * Where the pool's new memory comes from from now on (sheep's is on huge
   * pages, see native/fileio): fn(n) returns a Buffer of exactly n bytes
   * that is its own ArrayBuffer (the pool tells its buffers apart by it).
   */
  setAllocator(fn: (n: number) => Buffer): void {
    this.allocate = fn;
  }

  /** get() as a free-standing function, for ByteQueue.take(n, alloc). */
  readonly alloc = (n: number): Buffer => this.get(n);

  /** An uninitialised buffer of exactly n bytes (pooled when n >= POOL_MIN). */
  get(n: number): Buffer {
    if (n < POOL_MIN) return Buffer.allocUnsafe(n);
    if (n > POOL_MAX) return Buffer.allocUnsafeSlow(n);
    const c = BufferPool.classOf(n);
    const list = this.free.get(c);
    let full = list?.pop();
    if (full) {
      this.freeBytes -= c;
      this.owned.get(full.buffer as ArrayBuffer)!.refs = 1;
    } else {
      full = this.allocate(c);
      this.owned.set(full.buffer as ArrayBuffer, { full, refs: 1 });
    }
    return n === c ? full : full.subarray(0, n);
  }

  /** One more holder of the memory of b (a buffer from get(), or a view into one), who will put() it too. */
  retain(b: Buffer): void {
    const rec = this.owned.get(b.buffer as ArrayBuffer);
    if (rec && rec.refs > 0) rec.refs++;
  }

  /** A holder is done with b (a buffer from get(), or a view into one); the last one gives the memory back. */
  put(b: Buffer): void {
    const rec = this.owned.get(b.buffer as ArrayBuffer);
    if (!rec || rec.refs === 0 || --rec.refs > 0) return;
    const c = rec.full.length;
    if (this.freeBytes + c > this.maxFreeBytes) {
      this.owned.delete(b.buffer as ArrayBuffer);
      return;
    }
    let list = this.free.get(c);
    if (!list) this.free.set(c, (list = []));
    list.push(rec.full);
    this.freeBytes += c;
  }
}

/** The process-wide pool. */
export const bufferPool = new BufferPool();
