import { describe, it, expect } from 'vitest';
import { BufferPool, POOL_MIN } from '@sheepdog/common';

describe('BufferPool', () => {
  it('hands out exact lengths and reuses returned memory', () => {
    const p = new BufferPool();
    const a = p.get(MB(1));
    expect(a.length).toBe(MB(1));
    a.fill(1);
    p.put(a);
    const b = p.get(MB(1) - 5); // same size class
    expect(b.length).toBe(MB(1) - 5);
    expect(b.buffer).toBe(a.buffer);
    const c = p.get(MB(1)); // the only free one is out: a new one
    expect(c.buffer).not.toBe(a.buffer);
  });

  it('ignores buffers it did not hand out, and second returns', () => {
    const p = new BufferPool();
    const foreign = Buffer.alloc(POOL_MIN);
    p.put(foreign);
    expect(p.get(POOL_MIN).buffer).not.toBe(foreign.buffer);
    const a = p.get(POOL_MIN);
    p.put(a);
    p.put(a);
    const x = p.get(POOL_MIN);
    const y = p.get(POOL_MIN);
    expect(x.buffer).not.toBe(y.buffer);
  });

  it('reuses memory only when every holder has returned it', () => {
    const p = new BufferPool();
    const stage = p.get(MB(1));
    const view = stage.subarray(100, 4196); // a payload that outlives its receive buffer
    p.retain(view);
    p.put(stage); // the receive buffer is left
    expect(p.get(MB(1)).buffer).not.toBe(stage.buffer); // the payload still holds it
    p.put(view);
    const again = p.get(MB(1));
    expect(again.buffer).toBe(stage.buffer);
    p.retain(Buffer.alloc(10)); // not ours: ignored
    p.put(again);
    expect(p.get(MB(1)).buffer).toBe(stage.buffer);
  });

  it('allocates small requests normally and keeps at most maxFreeBytes idle', () => {
    const p = new BufferPool(MB(2));
    const small = p.get(100);
    expect(small.length).toBe(100);
    const bufs = [p.get(MB(1)), p.get(MB(1)), p.get(MB(1))];
    bufs.forEach((b) => p.put(b));
    const again = [p.get(MB(1)), p.get(MB(1)), p.get(MB(1))];
    const reused = again.filter((b) => bufs.some((o) => o.buffer === b.buffer));
    expect(reused.length).toBe(2);
  });

  it('takes new memory from the allocator it is given, and reuses that memory as its own', () => {
    const p = new BufferPool();
    const made: number[] = [];
    p.setAllocator((n) => { made.push(n); return Buffer.alloc(n, 7); });
    const a = p.get(MB(1) - 1);
    expect(made).toEqual([MB(1)]); // the size class, not the request
    expect(a.length).toBe(MB(1) - 1);
    expect(a[0]).toBe(7);
    p.put(a);
    expect(p.get(MB(1)).buffer).toBe(a.buffer);
    expect(made).toEqual([MB(1)]);
    expect(p.get(100).length).toBe(100); // small requests never reach it
    expect(made).toEqual([MB(1)]);
  });
});

function MB(n: number): number {
  return n * 1024 * 1024;
}
