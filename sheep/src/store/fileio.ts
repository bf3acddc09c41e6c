// Native file I/O for the store's hot path (native/fileio): reads the page
// cache can serve complete inline on the event loop (preadv2 RWF_NOWAIT;
// anything that would wait for the disk is refused and goes to libuv's
// pool), and writes go to the pool in batches, one job per batch
// (see writequeue.ts). The loop never waits on a disk.
//
// Optional: without the addon (not built, or SHEEP_NATIVE_IO=0) every read
// and write is one libuv request, as Node does it.
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bufferPool } from '@sheepdog/common';

/** length bytes waiting in a pipe (read end), to be written somewhere. */
export interface PipeSource {
  pipe: number;
  length: number;
}

/** A socket's zero-copy receiver (opaque). */
export type Splicer = object;

export interface FileIOAddon {
  readNow(fd: number, buf: Buffer, off: number, len: number, pos: number): number;
  writeBatch(fds: Int32Array, bufs: (Buffer | PipeSource)[], positions: Float64Array, status: Int32Array, done: () => void): void;
  /** Writes stop at every multiple of bytes of the file (0: no limit); see WRITE_CHUNK. */
  setWriteChunk(bytes: number): void;
  pipeOpen(size: number): [number, number, number];
  splicerOpen(socketFd: number): Splicer;
  /** 1: all moved now; 0: callback(status) follows (0 done); 2: the pipe is full, the rest is in the socket; < 0: -errno. */
  splicerStart(s: Splicer, pipeWriteFd: number, length: number, callback: (status: number) => void): number;
  /** Bytes moved into the pipe by the last start. */
  splicerMoved(s: Splicer): number;
  splicerClose(s: Splicer): void;
  /** Uninitialised memory of exactly size bytes, on transparent huge pages where the kernel has them (its own ArrayBuffer). */
  hugeAlloc(size: number): Buffer;
  /** An object file's version (0: none), or -errno; see native/fileio/src/xattr.c. */
  getVersion(file: string | number): number;
  /** 0, or -errno. */
  setVersion(file: string | number, version: number): number;
  /** The object's size kept beside the version (0: the file carries no checksums), or -errno. */
  getObjectSize(file: string | number): number;
  /** Version and object size together; 0, or -errno. */
  setMeta(file: string | number, version: number, size: number): number;
  /** A u64 extended attribute of a path (md's user.md.size), or -errno (-ENODATA: none). */
  getU64Attr(file: string, name: string): number;
  /** 0, or -errno. */
  setU64Attr(file: string, name: string, value: number): number;
}

export const FILEIO_ADDON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../native/fileio/build/Release/fileio.node');

let why = '';
function loadAddon(): FileIOAddon | undefined {
  try {
    return createRequire(import.meta.url)(FILEIO_ADDON_PATH) as FileIOAddon;
  } catch (e) {
    why = `addon not loaded: ${(e as Error).message.split('\n')[0]}; \`npm run build\` builds it`;
    return undefined;
  }
}

const addon = loadAddon();

function load(): FileIOAddon | undefined {
  if (process.env.SHEEP_NATIVE_IO === '0') {
    why = 'SHEEP_NATIVE_IO=0';
    return undefined;
  }
  return addon;
}

export const fileio = load();

/**
 * Object versions live in extended attributes, which Node cannot reach: the
 * addon is needed for them whatever SHEEP_NATIVE_IO says (recovery's safety
 * rests on versions, so a sheep without them refuses to start).
 */
export const versionIO: Pick<FileIOAddon, 'getVersion' | 'setVersion' | 'getObjectSize' | 'setMeta' | 'getU64Attr' | 'setU64Attr'> | undefined = addon;
export const versionIOMissing = (): string => why;

/**
 * Every write to an object file stops at multiples of this many bytes of
 * the file (SHEEP_WRITE_CHUNK; 0: no limit). The page cache holds a range
 * in folios as large as the write that first cached it, and ext4 walks
 * every 4 KiB block of a folio on each write into it: a 4 KiB write into a
 * range first written whole (4 MiB) costs ~3x one into 256 KiB folios. A
 * large write pays a few more syscalls, and large I/O into 256 KiB folios
 * costs a little more (see native/fileio).
 */
export const WRITE_CHUNK = chunkSetting(process.env.SHEEP_WRITE_CHUNK);
if (fileio && typeof fileio.setWriteChunk === 'function') fileio.setWriteChunk(WRITE_CHUNK);

function chunkSetting(v: string | undefined): number {
  const n = Number(v ?? 256 * 1024);
  return Number.isInteger(n) && (n === 0 || n >= 4096) ? n : 256 * 1024;
}

/** Bytes a write at pos may take before the next WRITE_CHUNK boundary (want at most). */
export function chunkRoom(pos: number, want: number): number {
  if (WRITE_CHUNK === 0) return want;
  return Math.min(want, WRITE_CHUNK - (pos % WRITE_CHUNK));
}

/**
 * The buffer pool's memory (every large request's bytes) on huge pages: a
 * copy into or out of 4 KiB pages costs a TLB miss per page, expensive on a
 * virtual machine (a cached 1 MiB pread: ~450 us into ordinary pages, ~100
 * into a huge page). SHEEP_HUGE_BUFFERS=0 keeps Node's ordinary allocation.
 */
const hugeBuffers = fileio !== undefined && typeof fileio.hugeAlloc === 'function' && process.env.SHEEP_HUGE_BUFFERS !== '0';
if (hugeBuffers) bufferPool.setAllocator(fileio!.hugeAlloc);

/** Inline reads above this size would hold the loop longer than the pool round trip they save. */
export const INLINE_READ_MAX = Number(process.env.SHEEP_INLINE_READ_MAX ?? 256 * 1024);

/**
 * Read inline if the page cache holds the data: returns bytes read (which
 * may be short of len), or -1 when the caller must use the pool.
 */
export function tryReadNow(fd: number, buf: Buffer, off: number, len: number, pos: number): number {
  if (!fileio || len > INLINE_READ_MAX) return -1;
  const n = fileio.readNow(fd, buf, off, len, pos);
  // EAGAIN (not cached) or any error: the pool's read waits, or reports it properly
  return n >= 0 ? n : -1;
}

/** One line for the log: how the store does file I/O. */
export function fileioStatus(): string {
  return fileio
    ? `native: page-cache hits up to ${INLINE_READ_MAX} bytes read inline (RWF_NOWAIT), writes batched, large NBD payloads spliced, I/O buffers ${hugeBuffers ? 'on huge pages' : 'on ordinary pages (SHEEP_HUGE_BUFFERS=0)'}`
    : `one thread-pool request per read and write (${why})`;
}
