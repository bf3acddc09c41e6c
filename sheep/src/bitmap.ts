// The 2^24-bit VDI id bitmaps (in-use and deleted), LSB-first per byte.
import { SD_NR_VDIS, SD_VDI_BITMAP_SIZE } from '@sheepdog/common';

export class VdiBitmap {
  readonly bytes = Buffer.alloc(SD_VDI_BITMAP_SIZE);
  test(v: number): boolean {
    return (this.bytes[v >>> 3] & (1 << (v & 7))) !== 0;
  }
  set(v: number): void {
    this.bytes[v >>> 3] |= 1 << (v & 7);
  }
  clear(v: number): void {
    this.bytes[v >>> 3] &= ~(1 << (v & 7));
  }
  clearAll(): void {
    this.bytes.fill(0);
  }
  /** First clear bit in [from, to), or -1. */
  findNextZero(from: number, to: number = SD_NR_VDIS): number {
    let v = from;
    while (v < to) {
      if ((v & 7) === 0 && this.bytes[v >>> 3] === 0xff) { v += 8; continue; }
      if (!this.test(v)) return v;
      v++;
    }
    return -1;
  }
  /** Ids set, ascending. */
  *setBits(): Generator<number> {
    for (let i = 0; i < this.bytes.length; i++) {
      const b = this.bytes[i];
      if (!b) continue;
      for (let j = 0; j < 8; j++) if (b & (1 << j)) yield i * 8 + j;
    }
  }
}
