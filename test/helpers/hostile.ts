// Tools for hostile-input tests: a sheep's resident memory, raw sockets
// (from a chosen loopback source address), and one-shot request/reply.
import * as net from 'node:net';
import { readFileSync } from 'node:fs';
import { ResponseHeader, SD_RSP_HEADER_SIZE, encodeRequest, RequestFields } from '@sheepdog/common';

/** Resident set size of a process, in bytes. */
export function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw connection collecting replies. */
export class Raw {
  sock: net.Socket;
  rx = Buffer.alloc(0);
  closed = false;
  ready: Promise<void>;
  constructor(port: number, localAddress?: string, opts: { read?: boolean } = {}) {
    this.sock = net.connect({ host: '127.0.0.1', port, localAddress });
    if (opts.read !== false) this.sock.on('data', (b) => (this.rx = Buffer.concat([this.rx, b])));
    this.sock.on('close', () => (this.closed = true));
    this.sock.on('error', () => undefined);
    this.ready = new Promise((r, j) => { this.sock.once('connect', () => r()); this.sock.once('error', j); });
  }
  send(f: RequestFields, payload?: Buffer): void {
    this.sock.write(payload ? Buffer.concat([encodeRequest(f), payload]) : encodeRequest(f));
  }
  /** The next reply (header and data), or undefined if the connection closed first. */
  async reply(ms = 5000): Promise<{ h: ResponseHeader; data: Buffer } | undefined> {
    const end = Date.now() + ms;
    for (;;) {
      if (this.rx.length >= SD_RSP_HEADER_SIZE) {
        const h = new ResponseHeader(Buffer.from(this.rx.subarray(0, SD_RSP_HEADER_SIZE)));
        if (this.rx.length >= SD_RSP_HEADER_SIZE + h.dataLength) {
          const data = Buffer.from(this.rx.subarray(SD_RSP_HEADER_SIZE, SD_RSP_HEADER_SIZE + h.dataLength));
          this.rx = this.rx.subarray(SD_RSP_HEADER_SIZE + h.dataLength);
          return { h, data };
        }
      }
      if (this.closed) return undefined;
      if (Date.now() > end) throw new Error(`no reply within ${ms} ms (have ${this.rx.length} bytes)`);
      await sleep(5);
    }
  }
  async waitClosed(ms = 5000): Promise<boolean> {
    const end = Date.now() + ms;
    while (!this.closed && Date.now() < end) await sleep(10);
    return this.closed;
  }
  close(): void {
    this.sock.destroy();
  }
}

/** One request on a fresh connection; the reply (or undefined if it closed) and whether it closed after. */
export async function once(port: number, f: RequestFields, payload?: Buffer, localAddress?: string): Promise<{ h: ResponseHeader; data: Buffer } | undefined> {
  const c = new Raw(port, localAddress);
  await c.ready;
  c.send(f, payload);
  try {
    return await c.reply();
  } finally {
    c.close();
  }
}
