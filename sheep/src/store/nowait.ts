// Non-blocking positional file I/O (native/nowait: preadv2/pwritev2 with
// RWF_NOWAIT). A read the page cache can serve completes inline on the
// event loop in about 2 µs; one that would wait for the disk is refused with
// EAGAIN and goes to libuv's pool as before. The loop never waits on a disk.
//
// Optional: without the addon (not built, or SHEEP_NOWAIT=0) every request
// takes the pool.
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

interface NowaitAddon {
  read(fd: number, buf: Buffer, off: number, len: number, pos: number): number;
  write(fd: number, buf: Buffer, off: number, len: number, pos: number): number;
}

export const NOWAIT_ADDON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../native/nowait/build/Release/nowait.node');

let why = '';
function load(): NowaitAddon | undefined {
  if (process.env.SHEEP_NOWAIT === '0') {
    why = 'SHEEP_NOWAIT=0';
    return undefined;
  }
  try {
    return createRequire(import.meta.url)(NOWAIT_ADDON_PATH) as NowaitAddon;
  } catch (e) {
    why = `addon not loaded: ${(e as Error).message.split('\n')[0]}; \`npm run build\` builds it`;
    return undefined;
  }
}

const addon = load();

/** One line for the log: how reads are served, and why if not inline. */
export function nowaitStatus(): string {
  return addon ? `page-cache hits up to ${NOWAIT_MAX_READ} bytes inline (RWF_NOWAIT), the rest on the thread pool` : `all on the thread pool (${why})`;
}

/** Inline reads above this size would hold the loop longer than the pool round trip they save. */
export const NOWAIT_MAX_READ = Number(process.env.SHEEP_NOWAIT_MAX ?? 256 * 1024);

/**
 * Read inline if the page cache holds the data: returns bytes read (which
 * may be short of len), or -1 when the caller must use the pool.
 */
export function tryReadNow(fd: number, buf: Buffer, off: number, len: number, pos: number): number {
  if (!addon || len > NOWAIT_MAX_READ) return -1;
  const n = addon.read(fd, buf, off, len, pos);
  // EAGAIN (not cached) or any error: the pool's read waits, or reports it properly
  return n >= 0 ? n : -1;
}
