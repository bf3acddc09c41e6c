// A pipelined connection to one sheep: many requests in flight on one TCP
// socket, responses matched by id, per-request timeouts.
import * as net from 'node:net';
import { encodeRequest, RequestFields, ResponseHeader } from './wire.js';
import { ByteQueue } from './framing.js';
import { ConnectionError, SheepdogError } from './errors.js';
import { Res } from './constants.js';

export interface Response {
  rsp: ResponseHeader;
  data: Buffer;
}

interface Pending {
  resolve: (r: Response) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
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
  private connecting?: Promise<void>;
  private pending = new Map<number, Pending>();
  private nextId = 1;
  private rx = new ByteQueue();
  private hdr?: ResponseHeader;
  private closed = false;
  private readonly timeout: number;
  private readonly connectTimeout: number;

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
      const s = net.connect({ host: this.host, port: this.port });
      s.setNoDelay(true);
      const t = setTimeout(() => {
        s.destroy();
        reject(new ConnectionError(`failed to connect to ${this.address}: Connection timed out`, 'ETIMEDOUT'));
      }, this.connectTimeout);
      s.once('connect', () => {
        clearTimeout(t);
        this.sock = s;
        this.rx = new ByteQueue();
        this.hdr = undefined;
        resolve();
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(t);
        if (this.sock !== s) reject(new ConnectionError(`failed to connect to ${this.address}: ${errnoText(e)}`, e.code));
      });
      s.on('data', (b) => this.onData(b));
      s.on('close', () => this.failAll(new ConnectionError(`connection to ${this.address} closed`, 'ECONNRESET')));
    }).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private onData(b: Buffer): void {
    this.rx.push(b);
    for (;;) {
      if (!this.hdr) {
        if (this.rx.length < 48) return;
        this.hdr = new ResponseHeader(Buffer.from(this.rx.take(48)));
      }
      const h = this.hdr;
      if (this.rx.length < h.dataLength) return;
      // Large data: a view of one received chunk, or a fresh buffer when it
      // spans several, with no second copy. Small data is copied out so that
      // a kept 4-byte answer does not keep a 64 KiB socket chunk alive.
      const n = h.dataLength;
      const data = n === 0 ? Buffer.alloc(0) : n < 4096 ? Buffer.from(this.rx.take(n)) : this.rx.take(n);
      this.hdr = undefined;
      const p = this.pending.get(h.id);
      if (!p) {
        // An id we never sent: the stream is no longer trustworthy.
        this.sock?.destroy();
        return;
      }
      this.pending.delete(h.id);
      if (p.timer) clearTimeout(p.timer);
      p.resolve({ rsp: h, data });
    }
  }

  private failAll(e: Error): void {
    const ps = [...this.pending.values()];
    this.pending.clear();
    this.sock = undefined;
    for (const p of ps) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(e);
    }
  }

  /** Send one request; resolves with the raw response whatever its result. */
  async send(fields: RequestFields, payload?: Buffer): Promise<Response> {
    if (this.closed) throw new ConnectionError(`connection to ${this.address} closed`);
    await this.connect();
    const s = this.sock;
    if (!s) throw new ConnectionError(`connection to ${this.address} closed`);
    const id = fields.id ?? this.allocId();
    const hdr = encodeRequest({ ...fields, id, dataLength: fields.dataLength ?? payload?.length ?? 0 });
    return new Promise<Response>((resolve, reject) => {
      const p: Pending = { resolve, reject };
      if (this.timeout > 0) {
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new ConnectionError(`request to ${this.address} timed out`, 'ETIMEDOUT'));
        }, this.timeout);
      }
      this.pending.set(id, p);
      if (payload && payload.length) {
        s.cork();
        s.write(hdr);
        s.write(payload);
        s.uncork();
      } else {
        s.write(hdr);
      }
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
    this.sock?.end();
    this.sock?.destroy();
    this.sock = undefined;
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
