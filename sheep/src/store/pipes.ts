// Pipes that carry large write payloads from a socket to an object file
// without a copy through user memory (see native/fileio: the splicer moves
// received pages into a pipe, a write batch splices them into the file).
// A few are kept open for reuse.
import * as fs from 'node:fs';
import { fileio } from './fileio.js';

export interface Pipe {
  r: number;
  w: number;
  capacity: number;
}

/**
 * What a pipe is asked to hold (Linux lets an unprivileged process have
 * 1 MiB, /proc/sys/fs/pipe-max-size); payloads up to it are spliced.
 */
const PIPE_SIZE = Number(process.env.SHEEP_SPLICE_PIPE_SIZE ?? 1 << 20);
const KEEP = 16;
const idle: Pipe[] = [];
/** The capacity pipes get here, once one has been made (the system may give less than asked). */
let capacity = fileio ? PIPE_SIZE : 0;

const closeQuietly = (fd: number) => fs.close(fd, () => undefined);

/** A pipe that holds len bytes, or undefined (no addon, too large, or no descriptors left). */
export function takePipe(len: number): Pipe | undefined {
  if (len > capacity) return undefined;
  let p = idle.pop();
  if (!p) {
    try {
      const [r, w, cap] = fileio!.pipeOpen(PIPE_SIZE);
      p = { r, w, capacity: cap };
    } catch {
      return undefined;
    }
    capacity = p.capacity;
    if (len > p.capacity) {
      givePipe(p, true);
      return undefined;
    }
  }
  return p;
}

/** Back for reuse if it is known to be empty; closed otherwise. */
export function givePipe(p: Pipe, empty: boolean): void {
  if (empty && idle.length < KEEP) {
    idle.push(p);
    return;
  }
  closeQuietly(p.r);
  closeQuietly(p.w);
}

/**
 * n bytes that are in the pipe now, read into into[0, n) at once (a memory
 * copy: the read cannot wait, the bytes are there).
 */
export function readPipeNow(p: Pipe, into: Buffer, n: number): void {
  let got = 0;
  while (got < n) {
    const k = fs.readSync(p.r, into, got, n - got, null);
    if (k === 0) throw new Error(`the pipe held ${got} of ${n} bytes`);
    got += k;
  }
}
