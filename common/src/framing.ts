// Accumulates socket chunks and hands out exact byte counts without
// concatenating on every chunk.
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // consumed bytes of chunks[0]
  length = 0;

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.push(b);
    this.length += b.length;
  }

  /** Remove and return exactly n bytes (caller checks length first). */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) { this.chunks.shift(); this.head = 0; }
      this.length -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const c = this.chunks[0];
      const avail = c.length - this.head;
      const want = Math.min(avail, n - got);
      c.copy(out, got, this.head, this.head + want);
      got += want;
      this.head += want;
      if (this.head === c.length) { this.chunks.shift(); this.head = 0; }
    }
    this.length -= n;
    return out;
  }

  /** Drop n bytes without copying. */
  skip(n: number): void {
    let left = n;
    while (left > 0) {
      const c = this.chunks[0];
      const avail = c.length - this.head;
      const d = Math.min(avail, left);
      this.head += d;
      left -= d;
      if (this.head === c.length) { this.chunks.shift(); this.head = 0; }
    }
    this.length -= n;
  }
}
