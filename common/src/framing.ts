// Accumulates socket chunks and hands out exact byte counts without
// concatenating on every chunk. Consumed chunks are dropped by advancing an
// index (Array#shift is linear in the queue length, and a peer sending a
// payload in thousands of tiny segments would make that quadratic).
export class ByteQueue {
  private chunks: Buffer[] = [];
  private ci = 0; // first unconsumed chunk
  private head = 0; // consumed bytes of chunks[ci]
  length = 0;

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.push(b);
    this.length += b.length;
  }

  private advance(): void {
    this.ci++;
    this.head = 0;
    if (this.ci === this.chunks.length) {
      this.chunks = [];
      this.ci = 0;
    } else if (this.ci >= 1024 && this.ci * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.ci);
      this.ci = 0;
    }
  }

  /**
   * Remove and return exactly n bytes (caller checks length first): a view of
   * the received chunk when they lie in one, else a copy into alloc(n).
   */
  take(n: number, alloc: (n: number) => Buffer = Buffer.allocUnsafe): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[this.ci];
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) this.advance();
      this.length -= n;
      return out;
    }
    const out = alloc(n);
    let got = 0;
    while (got < n) {
      const c = this.chunks[this.ci];
      const want = Math.min(c.length - this.head, n - got);
      c.copy(out, got, this.head, this.head + want);
      got += want;
      this.head += want;
      if (this.head === c.length) this.advance();
    }
    this.length -= n;
    return out;
  }

  /**
   * Replace the views into `ab` (a receive buffer about to be reused) that
   * are still queued with copies of their bytes.
   */
  own(ab: ArrayBuffer): void {
    for (let i = this.ci; i < this.chunks.length; i++) {
      const c = this.chunks[i];
      if (c.buffer !== ab) continue;
      const from = i === this.ci ? this.head : 0;
      this.chunks[i] = Buffer.from(c.subarray(from));
      if (i === this.ci) this.head = 0;
    }
  }

  /** Drop n bytes without copying. */
  skip(n: number): void {
    let left = n;
    while (left > 0) {
      const c = this.chunks[this.ci];
      const d = Math.min(c.length - this.head, left);
      this.head += d;
      left -= d;
      if (this.head === c.length) this.advance();
    }
    this.length -= n;
  }
}
