// A pipelined connection to one sheep: many requests in flight on one TCP
// socket, responses matched by id, per-request timeouts.
import * as net from 'node:net';
import { encodeRequest, RequestFields, ResponseHeader } from './wire.js';
import { FrameReader } from './frame-reader.js';
import { SendQueue } from './sendqueue.js';
import { ConnectionError, SheepdogError } from './errors.js';
import { Res, SD_REQ_HEADER_SIZE, MAX_PAYLOAD } from './constants.js';

export interface Response {
  rsp: ResponseHeader;
  data: Buffer;
}

interface Pending {
  resolve: (r: Response) => void;
  reject: (e: Error) => void;
  /** The sweep count when it was sent (see sweep). */
  sent: number;
}

export interface ClientOptions {
  host?: string;
  port?: number;
  /** Per-request timeout in ms (0 = none). */
  timeout?: number;
  connectTimeout?: number;
}

export class SheepClient {
  readonly host: string;
  readonly port: number;
  private sock?: net.Socket;
  /** Requests issued in one turn of the event loop leave in one write. */
  private out?: SendQueue;
  private connecting?: Promise<void>;
  private pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;
  private readonly timeout: number;
  private readonly connectTimeout: number;
  /**
   * Timeouts without a timer per request (arming and clearing one cost as
   * much as the rest of a peer write): a sweep every tenth of the timeout
   * fails requests sent ten or more sweeps ago, so a request times out
   * after between 1 and 1.1 times the timeout.
   */
  private sweeper?: NodeJS.Timeout;
  private sweeps = 0;

  constructor(opts: ClientOptions = {}) {
    this.host = opts.host ?? '127.0.0.1';
    this.port = opts.port ?? 7000;
    this.timeout = opts.timeout ?? 0;
    this.connectTimeout = opts.connectTimeout ?? 5000;
  }

  get address(): string {
    return this.host.includes(':') ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }

  connect(): Promise<void> {
    if (this.sock && !this.sock.destroyed) return Promise.resolve();
    if (this.connecting) return this.connecting;
    this.closed = false;
    this.connecting = new Promise<void>((resolve, reject) => {
      // Replies are framed as they are read, into buffers the reader picks
      // (see FrameReader): a large one lands in place in its own buffer.
      const reader = new FrameReader({
        // a length no request of ours asks for: the stream cannot be trusted
        header: (raw) => new ResponseHeader(raw),
        payloadLength: (h) => (h.dataLength > MAX_PAYLOAD ? -1 : h.dataLength),
        frame: (h, data) => this.onReply(h, data, s),
        refused: () => s.destroy(),
      });
      const s = net.connect({ host: this.host, port: this.port, onread: { buffer: () => reader.buffer(), callback: (n, b) => { reader.received(n, b as Buffer); return true; } } });
      s.setNoDelay(true);
      const t = setTimeout(() => {
        s.destroy();
        reject(new ConnectionError(`failed to connect to ${this.address}: Connection timed out`, 'ETIMEDOUT'));
      }, this.connectTimeout);
      s.once('connect', () => {
        clearTimeout(t);
        this.sock = s;
        this.out = new SendQueue(s);
        resolve();
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(t);
        if (this.sock !== s) reject(new ConnectionError(`failed to connect to ${this.address}: ${errnoText(e)}`, e.code));
      });
      s.on('close', () => {
        reader.stop();
        this.failAll(new ConnectionError(`connection to ${this.address} closed`, 'ECONNRESET'));
      });
    }).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private onReply(h: ResponseHeader, data: Buffer, s: net.Socket): void {
    const p = this.pending.get(h.id);
    if (!p) {
      // An id we never sent: the stream is no longer trustworthy.
      s.destroy();
      return;
    }
    this.pending.delete(h.id);
    p.resolve({ rsp: h, data });
  }

  private failAll(e: Error): void {
    const ps = [...this.pending.values()];
    this.pending.clear();
    this.sock = undefined;
    this.out = undefined;
    for (const p of ps) p.reject(e);
  }

  private sweep(): void {
    this.sweeps++;
    for (const [id, p] of this.pending) {
      if (this.sweeps - p.sent < 10) continue;
      this.pending.delete(id);
      p.reject(new ConnectionError(`request to ${this.address} timed out`, 'ETIMEDOUT'));
    }
    if (this.pending.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  /** Send one request; resolves with the raw response whatever its result. */
  send(fields: RequestFields, payload?: Buffer): Promise<Response> {
    if (this.closed) return Promise.reject(new ConnectionError(`connection to ${this.address} closed`));
    // connected: no await (a peer write's path)
    if (this.sock && !this.sock.destroyed && this.out) return this.sendNow(fields, payload);
    return this.connect().then(() => this.sendNow(fields, payload));
  }

  private sendNow(fields: RequestFields, payload?: Buffer): Promise<Response> {
    const out = this.out;
    if (!this.sock || !out) return Promise.reject(new ConnectionError(`connection to ${this.address} closed`));
    const id = fields.id ?? this.allocId();
    // id and data_length go into the encoded header, not into a copy of
    // fields: this is every replica write's path, and copies of differing
    // shapes made the encoder's property loads megamorphic
    const hdr = encodeRequest(fields, Buffer.allocUnsafe(SD_REQ_HEADER_SIZE));
    hdr.writeUInt32LE(id >>> 0, 8);
    hdr.writeUInt32LE((fields.dataLength ?? payload?.length ?? 0) >>> 0, 12);
    return new Promise<Response>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, sent: this.sweeps });
      if (this.timeout > 0 && !this.sweeper) {
        this.sweeper = setInterval(() => this.sweep(), Math.max(10, this.timeout / 10));
        this.sweeper.unref();
      }
      out.push(hdr);
      if (payload && payload.length) out.push(payload);
    });
  }

  /** Send and throw SheepdogError unless the result is SUCCESS (or one of `ok`). */
  async request(fields: RequestFields, payload?: Buffer, ok: number[] = []): Promise<Response> {
    const r = await this.send(fields, payload);
    if (r.rsp.result !== Res.SUCCESS && !ok.includes(r.rsp.result)) throw new SheepdogError(r.rsp.result);
    return r;
  }

  private allocId(): number {
    do {
      this.nextId = (this.nextId + 1) >>> 0;
    } while (this.nextId === 0 || this.pending.has(this.nextId));
    return this.nextId;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.sock?.end();
    this.sock?.destroy();
    this.sock = undefined;
    this.out = undefined;
  }
}

export function errnoText(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ECONNREFUSED': return 'Connection refused';
    case 'ETIMEDOUT': return 'Connection timed out';
    case 'EHOSTUNREACH': return 'No route to host';
    case 'ECONNRESET': return 'Connection reset by peer';
    case 'ENOTFOUND': return 'Name or service not known';
    default: return e.message;
  }
}

/** One request on a fresh connection, then close (how QEMU does metadata ops). */
export async function oneShot(opts: ClientOptions, fields: RequestFields, payload?: Buffer): Promise<Response> {
  const c = new SheepClient(opts);
  try {
    return await c.send(fields, payload);
  } finally {
    c.close();
  }
}
