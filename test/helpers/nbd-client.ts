// A small raw NBD client for protocol tests (fixed newstyle, simple replies).
import * as net from 'node:net';
import { ByteQueue } from '@sheepdog/common';

export const NBD = {
  IHAVEOPT: 0x49484156454f5054n,
  OPT_REPLY_MAGIC: 0x3e889045565a9n,
  REQ_MAGIC: 0x25609513,
  REPLY_MAGIC: 0x67446698,
  OPT: { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8 },
  REP: { ACK: 1, SERVER: 2, INFO: 3, ERR_UNSUP: 0x80000001, ERR_POLICY: 0x80000002, ERR_INVALID: 0x80000003, ERR_UNKNOWN: 0x80000006 },
  CMD: { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, WRITE_ZEROES: 6, BLOCK_STATUS: 7 },
  FLAG: { FUA: 1, NO_HOLE: 2 },
  TX: { HAS_FLAGS: 1, READ_ONLY: 2, SEND_FLUSH: 4, SEND_FUA: 8, SEND_TRIM: 32, SEND_WRITE_ZEROES: 64, CAN_MULTI_CONN: 256 },
} as const;

export class RawConn {
  sock: net.Socket;
  private rx = new ByteQueue();
  closed = false;
  private waiters: (() => void)[] = [];
  constructor(port: number) {
    this.sock = net.connect({ host: '127.0.0.1', port });
    this.sock.on('data', (b: Buffer) => { this.rx.push(b); this.wake(); });
    this.sock.on('close', () => { this.closed = true; this.wake(); });
    this.sock.on('error', () => undefined);
  }
  private wake() { const w = this.waiters; this.waiters = []; w.forEach((f) => f()); }
  async read(n: number, ms = 5000): Promise<Buffer> {
    const end = Date.now() + ms;
    while (this.rx.length < n) {
      if (this.closed) throw new Error(`connection closed with ${this.rx.length}/${n} bytes`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for ${n} bytes (have ${this.rx.length})`);
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, left); });
    }
    return this.rx.take(n);
  }
  async waitClosed(ms = 5000): Promise<boolean> {
    const end = Date.now() + ms;
    while (!this.closed && Date.now() < end) await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 50); });
    return this.closed;
  }
  write(b: Buffer) { this.sock.write(b); }
  close() { this.sock.destroy(); }

  /** Read the greeting, send client flags. */
  async hello(clientFlags = 3): Promise<number> {
    const g = await this.read(18);
    if (g.toString('latin1', 0, 8) !== 'NBDMAGIC' || g.toString('latin1', 8, 16) !== 'IHAVEOPT') throw new Error('bad greeting');
    const f = Buffer.alloc(4);
    f.writeUInt32BE(clientFlags);
    this.write(f);
    return g.readUInt16BE(16);
  }
  sendOpt(opt: number, data: Buffer = Buffer.alloc(0)) {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(NBD.IHAVEOPT, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
  }
  async optReply(): Promise<{ opt: number; type: number; data: Buffer }> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== NBD.OPT_REPLY_MAGIC) throw new Error('bad option reply magic');
    const len = h.readUInt32BE(16);
    return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: Buffer.from(await this.read(len)) };
  }
  /** NBD_OPT_GO; returns {size, flags} or the error reply type. */
  async go(name: string, opt: number = NBD.OPT.GO): Promise<{ size: bigint; flags: number } | { error: number }> {
    const nb = Buffer.from(name);
    const d = Buffer.alloc(4 + nb.length + 2);
    d.writeUInt32BE(nb.length, 0);
    nb.copy(d, 4);
    this.sendOpt(opt, d);
    let size = -1n;
    let flags = 0;
    for (;;) {
      const r = await this.optReply();
      if (r.type === NBD.REP.INFO && r.data.readUInt16BE(0) === 0) { size = r.data.readBigUInt64BE(2); flags = r.data.readUInt16BE(10); continue; }
      if (r.type === NBD.REP.INFO) continue;
      if (r.type === NBD.REP.ACK) return { size, flags };
      return { error: r.type };
    }
  }
  private handle = 0n;
  /** The bytes of one request (not sent), with a fresh handle. */
  frame(type: number, offset: number, length: number, data?: Buffer, flags = 0): { handle: bigint; bytes: Buffer } {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(NBD.REQ_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    const handle = ++this.handle;
    h.writeBigUInt64BE(handle, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    return { handle, bytes: data ? Buffer.concat([h, data]) : h };
  }
  request(type: number, offset: number, length: number, data?: Buffer, flags = 0): bigint {
    const f = this.frame(type, offset, length, data, flags);
    this.write(f.bytes);
    return f.handle;
  }
  /** Send bytes in pieces of random size (1..max), yielding to the event loop between them. */
  async writeFragmented(b: Buffer, max: number): Promise<void> {
    for (let pos = 0; pos < b.length;) {
      const n = Math.min(b.length - pos, 1 + Math.floor(Math.random() * max));
      await new Promise<void>((r) => this.sock.write(b.subarray(pos, pos + n), () => r()));
      pos += n;
      if (Math.random() < 0.01) await new Promise((r) => setTimeout(r, 1));
    }
  }
  /** Read one simple reply; readLen = payload length if this answers a successful READ. */
  async reply(readLens: Map<bigint, number> = new Map()): Promise<{ handle: bigint; error: number; data?: Buffer }> {
    const h = await this.read(16);
    if (h.readUInt32BE(0) !== NBD.REPLY_MAGIC) throw new Error('bad reply magic');
    const error = h.readUInt32BE(4);
    const handle = h.readBigUInt64BE(8);
    const n = readLens.get(handle);
    if (n !== undefined && error === 0) return { handle, error, data: Buffer.from(await this.read(n)) };
    return { handle, error };
  }
  async cmd(type: number, offset: number, length: number, data?: Buffer, flags = 0): Promise<{ error: number; data?: Buffer }> {
    const hd = this.request(type, offset, length, data, flags);
    const r = await this.reply(new Map(type === NBD.CMD.READ ? [[hd, length]] : []));
    if (r.handle !== hd) throw new Error('unexpected handle');
    return r;
  }
}
