// A free list of large I/O buffers. Allocating a fresh megabyte costs far
// more than copying one (new pages from the kernel, and the external-memory
// pressure makes V8 collect more often); requests that move 64 KiB or more
// borrow a buffer here and give it back when the bytes have left.
//
// Only buffers this pool handed out are taken back (put() of anything else,
// or a second put(), is ignored), so a caller that is unsure whether a buffer
// is still referenced elsewhere can simply not return it.

/** Requests below this size use ordinary allocation. */
export const POOL_MIN = 64 * 1024;

export class BufferPool {
  private free = new Map<number, Buffer[]>();
  private owned = new WeakMap<ArrayBuffer, { full: Buffer; out: boolean }>();
  private freeBytes = 0;

  /** @param maxFreeBytes how much idle memory the pool may keep */
  constructor(private readonly maxFreeBytes = 64 << 20) {}

  private static classOf(n: number): number {
    let c = POOL_MIN;
    while (c < n) c *= 2;
    return c;
  }

  /** get() as a free-standing function, for ByteQueue.take(n, alloc). */
  readonly alloc = (n: number): Buffer => this.get(n);

  /** An uninitialised buffer of exactly n bytes (pooled when n >= POOL_MIN). */
  get(n: number): Buffer {
    if (n < POOL_MIN) return Buffer.allocUnsafe(n);
    const c = BufferPool.classOf(n);
    const list = this.free.get(c);
    let full = list?.pop();
    if (full) {
      this.freeBytes -= c;
    } else {
      full = Buffer.allocUnsafeSlow(c);
      this.owned.set(full.buffer as ArrayBuffer, { full, out: true });
    }
    this.owned.get(full.buffer as ArrayBuffer)!.out = true;
    return n === c ? full : full.subarray(0, n);
  }

  /** Give back a buffer from get() once nothing refers to its bytes any more. */
  put(b: Buffer): void {
    const rec = this.owned.get(b.buffer as ArrayBuffer);
    if (!rec || !rec.out) return;
    const c = rec.full.length;
    if (this.freeBytes + c > this.maxFreeBytes) {
      this.owned.delete(b.buffer as ArrayBuffer);
      return;
    }
    rec.out = false;
    let list = this.free.get(c);
    if (!list) this.free.set(c, (list = []));
    list.push(rec.full);
    this.freeBytes += c;
  }
}

/** The process-wide pool. */
export const bufferPool = new BufferPool();
