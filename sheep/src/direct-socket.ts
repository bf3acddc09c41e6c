// Receive into buffers we choose. A 1 MiB write otherwise arrives as
// sixteen freshly allocated 64 KiB chunks that are then copied into one
// buffer: the allocations keep V8's collector busy and the copy is a second
// pass over every byte. With net's `onread` option the kernel copies each
// payload straight into its final (pooled) buffer, as a C server's recv()
// would.
//
// `net.Server` does not offer `onread` for accepted sockets, so the accepted
// socket's handle is moved into a new Socket that has it. This leans on
// net.Socket's `_handle` (stable since Node 0.x, and what `onread` itself is
// built on); where it is missing the caller keeps the ordinary socket.
import * as net from 'node:net';
import type { DirectReader } from '@sheepdog/common';

interface HandleLike {
  readStart(): number;
  readStop(): number;
  useUserBuffer(b: Buffer): void;
  reading?: boolean;
}

/**
 * Re-wrap a socket accepted with `pauseOnConnect: true`; returns the new
 * socket, or undefined (and leaves `sock` untouched) when this Node cannot
 * or `off` (the operator's switch) says not to.
 */
export function rewrapForDirectReads(sock: net.Socket, reader: DirectReader, off = false): net.Socket | undefined {
  const s = sock as unknown as { _handle: HandleLike | null };
  const handle = s._handle;
  if (off || !handle || typeof handle.useUserBuffer !== 'function' || typeof handle.readStart !== 'function') return undefined;
  const opts = {
    handle,
    readable: true,
    writable: true,
    onread: { buffer: () => reader.buffer(), callback: (n: number, b: Buffer) => { reader.received(n, b); } },
  };
  let direct: net.Socket;
  try {
    direct = new net.Socket(opts as unknown as net.SocketConstructorOpts);
  } catch {
    return undefined; // the old wrapper still owns the handle
  }
  // detach, so that destroying the old wrapper releases the server's
  // connection count without closing the connection
  s._handle = null;
  sock.destroy();
  return direct;
}

/**
 * Stop or restart reading a socket from rewrapForDirectReads, at the handle:
 * what net.Socket#pause/resume do for such sockets, without the stream
 * state machine around it (a large write pauses and resumes the socket
 * once per request). Keeps the handle's reading flag, which net.Socket
 * consults, in step.
 */
export function setReading(sock: net.Socket, on: boolean): void {
  const h = (sock as unknown as { _handle: HandleLike | null })._handle;
  if (!h || sock.destroyed || h.reading === on) return;
  h.reading = on;
  const err = on ? h.readStart() : h.readStop();
  if (err < 0) sock.destroy(new Error(`cannot ${on ? 'resume' : 'pause'} reading (${err})`));
}

/**
 * Make buf the buffer the socket's next read fills, in place of the one
 * the reader's buffer() last gave (so that the reader may let that one go
 * while the connection idles). Node keeps the buffer twice: in the handle,
 * which the kernel's bytes go into, and in the socket (its `kBuffer`
 * symbol), which the read callback is handed; both must change together.
 * False (nothing changed) where this Node keeps it elsewhere.
 */
export function setUserBuffer(sock: net.Socket, buf: Buffer): boolean {
  const h = (sock as unknown as { _handle: HandleLike | null })._handle;
  const sym = Object.getOwnPropertySymbols(sock).find((x) => x.description === 'kBuffer');
  if (!h || !sym || sock.destroyed || !Buffer.isBuffer((sock as unknown as Record<symbol, unknown>)[sym])) return false;
  (sock as unknown as Record<symbol, unknown>)[sym] = buf;
  h.useUserBuffer(buf);
  return true;
}
