// NBD server (fixed newstyle, simple replies): one export per VDI, snapshots
// read-only. Requests on a connection run concurrently and are answered in
// completion order, matched by the client's handle.
//
// Connections to the same export share one VdiIO (in-memory index,
// allocation locks, flush), so a FLUSH on any connection covers writes
// completed on every connection: NBD_FLAG_CAN_MULTI_CONN is honest.
import * as net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { ByteQueue, SheepdogError, Res, VdiIO, bufferPool, POOL_MIN, SendQueue, SplicedWrite } from '@sheepdog/common';
import { fileio, Splicer } from '../store/fileio.js';
import {
  NBDMAGIC, IHAVEOPT, OPT_REPLY_MAGIC, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, HandshakeFlag, ClientFlag, Opt, Rep, Info,
  TxFlag, Cmd, CmdFlag, Errno, MAX_REQUEST, MAX_OPTION,
} from './proto.js';
import type { ExportSource, ExportRef } from './exports.js';
import { log } from '../log.js';
import type { DirectReader } from '@sheepdog/common';
import { rewrapForDirectReads, setReading, setUserBuffer } from '../direct-socket.js';
import { metrics, Timed } from '../metrics.js';
import { ConnBudget } from '../budget.js';
import { ConnectionGuard, type Guarded } from '../guard.js';
import { defaultLimits, type ServerLimits } from '../server.js';

interface OpenExport {
  io: VdiIO;
  refs: number;
}

/** Pause reading a connection when this many requests are in flight. */
const HIGH_WATER = 256;
const LOW_WATER = 64;

/** How long closing the server waits for requests in flight to be answered. */
const CLOSE_DRAIN_MS = 5000;

export class NbdServer {
  private servers: net.Server[] = [];
  private conns = new Set<net.Socket>();
  private connections = new Set<NbdConnection>();
  private exports = new Map<string, Promise<OpenExport>>();
  readonly guard: ConnectionGuard;

  constructor(private readonly source: ExportSource, readonly limits: ServerLimits = defaultLimits()) {
    this.guard = new ConnectionGuard(limits.guard, 'NBD');
  }

  async listen(host: string | undefined, port: number): Promise<number> {
    const hosts = host ? [host] : ['::', '0.0.0.0'];
    let bound = port;
    for (const h of hosts) {
      const srv = net.createServer({ noDelay: true, pauseOnConnect: true }, (sock) => this.onConnection(sock));
      try {
        await new Promise<void>((resolve, reject) => {
          srv.once('error', reject);
          srv.listen({ host: h, port: bound, ipv6Only: h === '::', backlog: 1024 }, () => { srv.off('error', reject); resolve(); });
        });
        bound = (srv.address() as net.AddressInfo).port;
        this.servers.push(srv);
      } catch (e) {
        if (hosts.length > 1 && h === '::') continue;
        throw e;
      }
    }
    if (!this.servers.length) throw new Error(`cannot listen on NBD port ${port}`);
    return bound;
  }

  async close(): Promise<void> {
    this.guard.close();
    const closed = Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    // Requests in flight are answered before their connections go: a write
    // cut off here still reaches the replicas, after its client saw it fail
    // and may have read the old bytes (the churn simulator's fixed seed, at
    // a clean stop).
    const until = Date.now() + CLOSE_DRAIN_MS;
    while ([...this.connections].some((c) => c.unanswered > 0) && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    for (const c of this.conns) c.destroy();
    await closed;
  }

  private acquire(ref: ExportRef): Promise<OpenExport> {
    let p = this.exports.get(ref.key);
    if (!p) {
      p = ref.open().then((io) => {
        metrics?.nbdExports(1);
        return { io, refs: 0 };
      });
      this.exports.set(ref.key, p);
      p.catch(() => this.exports.delete(ref.key));
      return p.then((e) => { e.refs++; return e; });
    }
    // An export still held (by a connection whose requests are draining, or
    // by other connections) was opened a while ago: clients through other
    // gateways may have allocated objects since (chaos seed 4802 read the
    // parent's bytes through such an export).
    return p.then(async (e) => {
      e.refs++;
      try {
        await e.io.refreshIndex();
      } catch (err) {
        this.release(ref.key, e);
        throw err;
      }
      return e;
    });
  }

  private release(key: string, e: OpenExport): void {
    if (--e.refs > 0) return;
    // flush whatever the last user left, then forget the export
    this.exports.delete(key);
    metrics?.nbdExports(-1);
    e.io.flush().catch((err) => log.warn(`NBD: flush of ${key} on close failed: ${(err as Error).message}`));
  }

  private onConnection(accepted: net.Socket): void {
    const remote = accepted.remoteAddress;
    if (!this.guard.admit(remote)) {
      accepted.destroy();
      return;
    }
    const budget = new ConnBudget(this.limits.budget, this.limits.connBudget, `NBD connection from ${remote}:${accepted.remotePort}`);
    const c = new NbdConnection(this, this.source, budget);
    const sock = rewrapForDirectReads(accepted, c, process.env.SHEEP_NBD_DIRECT === '0') ?? accepted;
    this.conns.add(sock);
    this.connections.add(c);
    this.guard.track(c);
    sock.setNoDelay(true);
    sock.on('close', () => {
      this.conns.delete(sock);
      this.connections.delete(c);
      this.guard.untrack(c);
      this.guard.release(remote);
    });
    c.start(sock, sock !== accepted);
  }

  /** @internal */
  attach(ref: ExportRef): Promise<OpenExport> {
    return this.acquire(ref);
  }
  /** @internal */
  detach(ref: ExportRef, e: OpenExport): void {
    this.release(ref.key, e);
  }
}

function errnoOf(e: unknown): number {
  if (e instanceof SheepdogError) {
    switch (e.result) {
      case Res.READONLY: return Errno.EPERM;
      case Res.NO_SPACE: return Errno.ENOSPC;
      case Res.INVALID_PARMS: return Errno.EINVAL;
      case Res.SHUTDOWN: return Errno.ESHUTDOWN;
      default: return Errno.EIO;
    }
  }
  return Errno.EIO;
}

type Phase = 'clientflags' | 'options' | 'transmission' | 'closed';

/** The client's 8-byte request handle, as two 32-bit halves (no buffer per request); the request's start for metrics. */
interface Handle extends Timed {
  hi: number;
  lo: number;
}

/** Reads up to this size try the page cache straight into the reply slab. */
const SLAB_READ_MAX = SendQueue.MAX_PIECE - 16;

/** Reads land here (in direct mode) unless a write payload is being filled. */
const STAGE_SIZE = 256 * 1024;
const STAGE_MIN_READ = 16 * 1024;
/** What an idle connection reads into (its next request's first bytes, copied into a stage at once). */
const IDLE_BUFFER_SIZE = 4096;
/** Where the payload of a write that is refused goes: read past, never kept. */
const DISCARD = Buffer.allocUnsafe(64 * 1024);
/** Longest export name (the NBD protocol's limit). */
const MAX_NAME = 4096;
const utf8 = new TextDecoder('utf-8', { fatal: true });
function isUtf8(b: Buffer): boolean {
  try {
    utf8.decode(b);
    return true;
  } catch {
    return false;
  }
}

/**
 * Write payloads at least this large move from the socket into the object
 * file by splice when the write allows it (see VdiIO.spliceTarget): no copy
 * through our memory, which for 1 MiB writes is most of the loop's work.
 */
const SPLICE_MIN = 128 * 1024;

/** A transmission request header. */
interface Req {
  flags: number;
  type: number;
  handle: Handle;
  offset: number;
  length: number;
}

/** A write whose payload the socket is filling in place (direct mode). */
interface Filling {
  flags: number;
  handle: Handle;
  offset: number;
  buf: Buffer;
  got: number;
}

class NbdConnection implements DirectReader, Guarded {
  private sock!: net.Socket;
  private rx = new ByteQueue();
  /** Direct mode: receive buffers are ours (stage, or a payload being filled). */
  private direct = false;
  private stage?: Buffer;
  private stagePos = 0;
  private filling?: Filling;
  private headerNext = false;
  private phase: Phase = 'clientflags';
  private noZeroes = false;
  private ref?: ExportRef;
  private exp?: OpenExport;
  private io?: VdiIO;
  private busy = false; // an option is being processed asynchronously
  private inflight = 0;
  /** Requests of this connection not answered yet. */
  get unanswered(): number {
    return this.inflight;
  }
  /** Too many requests in flight: the socket is not read meanwhile. */
  private paused = false;
  /** A write payload is moving from the socket into a pipe: the socket is not read meanwhile. */
  private splicing?: { r: Req; t: SplicedWrite };
  private splicer?: Splicer;
  private readingStopped = false;
  private disconnecting = false;
  private detached = false;
  private optHdr?: { opt: number; len: number };
  // transmission request being assembled
  private req?: Req;
  private out!: SendQueue;
  /** Payload bytes of a refused write still to be read past. */
  private skipping = 0;
  /** The current request waits for memory (see budget.ts): the socket is not read meanwhile. */
  private admitting = false;
  /** Charged for the request whose payload is being received (not yet dispatched). */
  private receivingCost = 0;
  /** Reply bytes queued and not yet taken by the kernel. */
  private outCharged = 0;
  lastRx = Date.now();
  private lastProgress = Date.now();
  /** The buffer an idle connection reads into; copied into a stage when bytes arrive. */
  private idleBuf?: Buffer;

  constructor(private readonly server: NbdServer, private readonly source: ExportSource, private readonly budget: ConnBudget) {}

  // ---- Guarded ---------------------------------------------------------

  partial(): boolean {
    if (this.admitting || this.paused || this.phase === 'closed') return false;
    return this.rx.length > 0 || this.filling !== undefined || this.splicing !== undefined || this.skipping > 0 ||
      this.optHdr !== undefined || this.req !== undefined || this.phase === 'clientflags';
  }

  timeout(why: string): void {
    this.server.guard.warn(`NBD: closing connection from ${this.sock.remoteAddress}: ${why}`);
    this.sock.destroy();
  }

  idle(): void {
    this.out.idle();
    // Give the receive stage back: the next read goes into a small buffer of the connection's own.
    if (!this.direct || !this.stage || this.rx.length || this.filling || this.splicing || this.phase === 'closed') return;
    this.idleBuf ??= Buffer.allocUnsafe(IDLE_BUFFER_SIZE);
    if (!setUserBuffer(this.sock, this.idleBuf)) return;
    bufferPool.put(this.stage);
    this.stage = undefined;
  }

  /** Reply bytes queued: charged until the kernel has them. */
  private chargeOut(n: number): void {
    this.out.charge(n);
    this.outCharged += n;
  }

  /** direct: sock was built with this connection as its onread reader. */
  start(sock: net.Socket, direct: boolean): void {
    this.sock = sock;
    this.out = new SendQueue(sock, (n) => {
      this.lastProgress = Date.now();
      const k = Math.min(n, this.outCharged);
      this.outCharged -= k;
      this.budget.release(k);
    });
    this.direct = direct;
    this.budget.owner = {
      stalledFor: (now) => (sock.writableLength > 0 || this.partial() ? now - this.lastProgress : 0),
      evict: (why) => {
        this.server.guard.warn(`NBD: closing connection from ${sock.remoteAddress}: ${why}`);
        sock.destroy();
      },
    };
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(NBDMAGIC, 0);
    hello.writeBigUInt64BE(IHAVEOPT, 8);
    hello.writeUInt16BE(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES, 16);
    sock.write(hello);
    if (!direct) {
      sock.on('data', (b: Buffer) => {
        if (this.phase === 'closed') return;
        this.lastRx = this.lastProgress = Date.now();
        this.rx.push(b);
        this.pump();
      });
      sock.resume(); // accepted paused
    }
    sock.on('error', (e) => log.debug(`NBD connection error: ${e.message}`));
    sock.on('close', () => this.onClose());
  }

  buffer(): Buffer {
    const f = this.filling;
    if (f) return f.buf.subarray(f.got);
    if (this.skipping > this.rx.length) return DISCARD.subarray(0, Math.min(this.skipping - this.rx.length, DISCARD.length));
    // A stage is filled once, front to back. Small write payloads are views
    // into it and live on in queues after it is full (a write may wait for
    // earlier batches): each holds a pool reference to it, and it is reused
    // when the last is done. Unparsed bytes are copied out when it is left.
    if (!this.stage || this.stage.length - this.stagePos < STAGE_MIN_READ) {
      if (this.stage) this.leaveStage();
      this.stage = bufferPool.get(STAGE_SIZE);
      this.stagePos = 0;
    }
    // Right after a large write, read just the next header: if another large
    // write follows, its payload then lands in place instead of partly in the
    // stage (to be copied). One more read() call, but not a copy of up to 256 KiB.
    if (this.headerNext && this.rx.length === 0) return this.stage.subarray(this.stagePos, this.stagePos + 28);
    return this.stage.subarray(this.stagePos);
  }

  received(n: number, buf: Buffer): void {
    if (this.phase === 'closed') return;
    this.lastRx = this.lastProgress = Date.now();
    if (buf.buffer === DISCARD.buffer) {
      // a refused write's payload: read past (buffer() asked for no more than is left)
      this.skipping -= Math.min(n, this.skipping);
      this.pump();
      return;
    }
    if (this.idleBuf && buf.buffer === this.idleBuf.buffer) {
      // the first bytes after an idle spell: into a stage, as if read there
      this.stage = bufferPool.get(STAGE_SIZE);
      this.stagePos = 0;
      buf.copy(this.stage, 0, 0, n);
      buf = this.stage;
    }
    const f = this.filling;
    if (f) {
      if (buf.buffer === f.buf.buffer && buf.byteOffset === f.buf.byteOffset + f.got) f.got += n;
      else {
        // The socket read into the stage: its next buffer was chosen before
        // this payload began outside a read (a splice whose pipe filled up).
        const k = Math.min(n, f.buf.length - f.got);
        buf.copy(f.buf, f.got, 0, k);
        f.got += k;
        this.stagePos += n;
        if (k < n) this.rx.push(buf.subarray(k, n));
      }
      if (f.got < f.buf.length) return;
      this.filling = undefined;
      this.headerNext = true;
      this.dispatch(Cmd.WRITE, f.flags, f.handle, f.offset, f.buf.length, f.buf);
    } else {
      this.headerNext = false;
      this.stagePos += n;
      this.rx.push(buf.subarray(0, n));
    }
    this.pump();
  }

  private leaveStage(): void {
    if (this.rx.length) this.rx.push(Buffer.from(this.rx.take(this.rx.length)));
    bufferPool.put(this.stage!);
    this.stage = undefined;
  }

  private onClose(): void {
    if (this.stage) this.leaveStage();
    this.out.close();
    this.phase = 'closed';
    // replies that will never leave, and a payload that will never complete; running requests give theirs back as they finish
    this.budget.release(this.outCharged + this.receivingCost);
    this.outCharged = this.receivingCost = 0;
    this.budget.close();
    if (this.splicer) {
      fileio!.splicerClose(this.splicer); // a payload on its way is cancelled
      this.splicer = undefined;
    }
    this.maybeFinish();
  }

  /** Drop the export once the socket is gone (or DISC was sent) and nothing is in flight. */
  private maybeFinish(): void {
    if (this.inflight !== 0) return;
    if (this.disconnecting && this.phase !== 'closed') {
      if (this.out.scheduled) { setImmediate(() => this.maybeFinish()); return; }
      this.sock.end();
    }
    if (this.phase === 'closed' && this.exp && this.ref && !this.detached) {
      this.detached = true;
      this.server.detach(this.ref, this.exp);
    }
  }

  private hangup(why: string): void {
    if (this.phase === 'closed') return;
    this.server.guard.warn(`NBD: closing connection from ${this.sock.remoteAddress}: ${why}`);
    this.phase = 'closed';
    this.sock.end();
    this.sock.destroySoon?.();
  }

  private pump(): void {
    try {
      for (;;) {
        if (this.phase === 'closed' || this.busy || this.splicing) return;
        if (this.phase === 'clientflags') {
          if (this.rx.length < 4) return;
          const f = this.rx.take(4).readUInt32BE(0);
          if (!(f & ClientFlag.FIXED_NEWSTYLE)) return this.hangup('client does not speak fixed newstyle');
          if (f & ~(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES)) return this.hangup(`unknown client flags 0x${f.toString(16)}`);
          this.noZeroes = (f & ClientFlag.NO_ZEROES) !== 0;
          this.phase = 'options';
          continue;
        }
        if (this.phase === 'options') {
          if (!this.optHdr) {
            if (this.rx.length < 16) return;
            const h = this.rx.take(16);
            if (h.readBigUInt64BE(0) !== IHAVEOPT) return this.hangup('bad option magic');
            this.optHdr = { opt: h.readUInt32BE(8), len: h.readUInt32BE(12) };
            if (this.optHdr.len > MAX_OPTION) return this.hangup(`option ${this.optHdr.opt} with ${this.optHdr.len} bytes`);
          }
          const { opt, len } = this.optHdr;
          if (this.rx.length < len) return;
          this.optHdr = undefined;
          const data = Buffer.from(this.rx.take(len));
          this.busy = true;
          this.option(opt, data).then(() => {
            this.busy = false;
            this.pump();
          }, (e) => {
            this.busy = false;
            this.hangup(`option ${opt} failed: ${(e as Error).message}`);
          });
          return;
        }
        // transmission
        if (this.disconnecting) { this.rx.skip(this.rx.length); return; }
        if (this.skipping > 0) {
          const k = Math.min(this.skipping, this.rx.length);
          this.rx.skip(k);
          this.skipping -= k;
          if (this.skipping > 0) return;
        }
        if (this.admitting) return;
        if (!this.req) {
          if (this.rx.length < 28) return;
          const h = this.rx.take(28);
          if (h.readUInt32BE(0) !== REQUEST_MAGIC) return this.hangup('bad request magic');
          const offHi = h.readUInt32BE(16);
          const offLo = h.readUInt32BE(20);
          const r: Req = {
            flags: h.readUInt16BE(4), type: h.readUInt16BE(6), handle: { hi: h.readUInt32BE(8), lo: h.readUInt32BE(12) },
            offset: offHi * 0x100000000 + offLo, length: h.readUInt32BE(24),
          };
          if (r.type === Cmd.WRITE && r.length > MAX_REQUEST) return this.hangup(`write of ${r.length} bytes`);
          const io = this.io!;
          if (r.type === Cmd.WRITE) {
            // checked before any buffer exists for the payload, which is then read past
            const bad = io.readonly || this.ref!.readonly ? Errno.EPERM : r.offset + r.length > io.size ? Errno.ENOSPC : 0;
            if (bad) {
              this.reply(r.handle, bad);
              this.skipping = r.length;
              continue;
            }
          }
          // memory for the payload or the reply, before it exists: wait, unread, until there is some
          const cost = r.type === Cmd.WRITE || (r.type === Cmd.READ && r.length <= MAX_REQUEST && r.offset + r.length <= io.size) ? r.length : 0;
          this.req = r;
          if (!this.budget.admit(cost, false, () => {
            this.admitting = false;
            this.receivingCost = cost;
            this.updateReading();
            this.pump();
          })) {
            this.admitting = true;
            this.updateReading();
            return;
          }
          this.receivingCost = cost;
        }
        const r = this.req;
        const payload = r.type === Cmd.WRITE ? r.length : 0;
        if (this.rx.length < payload) {
          if (!this.direct || payload < POOL_MIN) return;
          this.req = undefined;
          if (this.rx.length === 0 && payload >= SPLICE_MIN && this.spliceWrite(r)) return;
          // let the socket fill the rest of the payload in place
          const buf = bufferPool.get(payload);
          const got = this.rx.length;
          if (got) this.rx.take(got).copy(buf);
          this.filling = { flags: r.flags, handle: r.handle, offset: r.offset, buf, got };
          return;
        }
        this.req = undefined;
        const data = payload ? this.rx.take(payload, bufferPool.alloc) : undefined;
        // a view into the stage keeps it from reuse until the write is done (fresh buffers hold their own reference)
        if (data && this.stage && data.buffer === this.stage.buffer) bufferPool.retain(data);
        this.dispatch(r.type, r.flags, r.handle, r.offset, r.length, data);
      }
    } catch (e) {
      this.hangup(`internal error: ${(e as Error).message}`);
    }
  }

  /** Receive a write's payload by splice, if the write can take it so; false: receive it as usual. */
  private spliceWrite(r: Req): boolean {
    const t = fileio && this.io!.spliceTarget(r.offset, r.length);
    if (!t) return false;
    if (!this.splicer) {
      const fd = (this.sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
      try {
        if (typeof fd !== 'number' || fd < 0) throw new Error('no descriptor');
        this.splicer = fileio!.splicerOpen(fd);
      } catch {
        t.abort();
        return false;
      }
    }
    this.splicing = { r, t };
    let st: number;
    try {
      st = fileio!.splicerStart(this.splicer, t.pipe, r.length, this.spliced);
    } catch {
      st = -5; // EIO: part of the payload may be gone from the socket, so the connection cannot go on
    }
    if (st === 0) this.updateReading(); // the rest comes later: the socket is ours until it has
    else this.spliced(st === 1 ? 0 : st);
    return true;
  }

  private readonly spliced = (status: number): void => {
    const { r, t } = this.splicing!;
    this.splicing = undefined;
    if (status === 2) {
      // The pipe ran out of room (the payload came in many small segments):
      // what it holds goes into an ordinary payload buffer, and the socket
      // fills in the rest.
      const got = fileio!.splicerMoved(this.splicer!);
      const buf = bufferPool.get(r.length);
      try {
        t.takeBack(buf, got);
      } catch (e) {
        this.hangup(`write payload lost in its pipe: ${(e as Error).message}`);
        return;
      }
      log.debug(`NBD: write of ${r.length} bytes at ${r.offset}: pipe full after ${got}, receiving the rest as usual`);
      this.filling = { flags: r.flags, handle: r.handle, offset: r.offset, buf, got };
      this.updateReading();
      return;
    }
    if (status !== 0) {
      t.abort();
      if (this.phase !== 'closed') this.hangup(`write payload not received: ${getSystemErrorName(status)}`);
      return;
    }
    this.headerNext = true;
    metrics?.nbdSpliced(r.length);
    this.updateReading();
    this.dispatch(Cmd.WRITE, r.flags, r.handle, r.offset, r.length, undefined, t);
  };

  /** The socket is read unless too much is in flight or a payload is being spliced. */
  private updateReading(): void {
    const stop = this.paused || this.admitting || this.splicing !== undefined;
    if (stop === this.readingStopped || this.phase === 'closed') return;
    this.readingStopped = stop;
    if (this.direct) setReading(this.sock, !stop);
    else if (stop) this.sock.pause();
    else this.sock.resume();
  }

  // ---- handshake -----------------------------------------------------

  private optReply(opt: number, type: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(OPT_REPLY_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(type >>> 0, 12);
    h.writeUInt32BE(data.length, 16);
    this.sock.write(data.length ? Buffer.concat([h, data]) : h);
  }

  private optError(opt: number, type: number, msg: string): void {
    this.optReply(opt, type, Buffer.from(msg));
  }

  private txFlags(ro: boolean): number {
    let f = TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH | TxFlag.SEND_FUA | TxFlag.CAN_MULTI_CONN;
    if (ro) f |= TxFlag.READ_ONLY;
    else f |= TxFlag.SEND_TRIM | TxFlag.SEND_WRITE_ZEROES;
    return f;
  }

  private async open(name: string): Promise<{ ref: ExportRef; exp: OpenExport } | string> {
    let ref: ExportRef;
    try {
      ref = await this.source.resolve(name);
    } catch (e) {
      return `no such export '${name}': ${(e as Error).message}`;
    }
    try {
      const exp = await this.server.attach(ref);
      return { ref, exp };
    } catch (e) {
      return `cannot open export '${name}': ${(e as Error).message}`;
    }
  }

  private enterTransmission(ref: ExportRef, exp: OpenExport): void {
    if (this.phase === 'closed') {
      // The client hung up while the export was being opened: the close has
      // been handled already, so nothing else would ever let go of it, and a
      // held export outlives snapshots with its old index (chaos seed 4105).
      this.server.detach(ref, exp);
      return;
    }
    this.ref = ref;
    this.exp = exp;
    this.io = exp.io;
    this.phase = 'transmission';
    log.info(`NBD: ${this.sock.remoteAddress} attached to '${ref.name}' (${ref.readonly ? 'read-only' : 'read-write'})`);
  }

  private async option(opt: number, data: Buffer): Promise<void> {
    switch (opt) {
      case Opt.EXPORT_NAME: {
        if (data.length > MAX_NAME || !isUtf8(data)) return this.hangup('export name too long or not UTF-8');
        const r = await this.open(data.toString('utf8'));
        if (typeof r === 'string') return this.hangup(r); // the only answer EXPORT_NAME allows
        const b = Buffer.alloc(10 + (this.noZeroes ? 0 : 124));
        b.writeBigUInt64BE(BigInt(r.exp.io.size), 0);
        b.writeUInt16BE(this.txFlags(r.ref.readonly || r.exp.io.readonly), 8);
        this.sock.write(b);
        this.enterTransmission(r.ref, r.exp);
        return;
      }
      case Opt.ABORT:
        this.optReply(opt, Rep.ACK);
        return this.hangup('client aborted');
      case Opt.LIST: {
        if (data.length) return this.optError(opt, Rep.ERR_INVALID, 'LIST takes no data');
        for (const n of await this.source.list()) {
          const nb = Buffer.from(n);
          const d = Buffer.alloc(4 + nb.length);
          d.writeUInt32BE(nb.length, 0);
          nb.copy(d, 4);
          this.optReply(opt, Rep.SERVER, d);
        }
        return this.optReply(opt, Rep.ACK);
      }
      case Opt.INFO:
      case Opt.GO: {
        if (data.length < 6) return this.optError(opt, Rep.ERR_INVALID, 'short option');
        const nlen = data.readUInt32BE(0);
        if (4 + nlen + 2 > data.length) return this.optError(opt, Rep.ERR_INVALID, 'bad name length');
        if (nlen > MAX_NAME || !isUtf8(data.subarray(4, 4 + nlen))) return this.optError(opt, Rep.ERR_INVALID, 'export name too long or not UTF-8');
        const name = data.toString('utf8', 4, 4 + nlen);
        const nreq = data.readUInt16BE(4 + nlen);
        if (4 + nlen + 2 + 2 * nreq !== data.length) return this.optError(opt, Rep.ERR_INVALID, 'bad info request list');
        const wanted = new Set<number>();
        for (let i = 0; i < nreq; i++) wanted.add(data.readUInt16BE(4 + nlen + 2 + 2 * i));
        const r = await this.open(name);
        if (typeof r === 'string') return this.optError(opt, Rep.ERR_UNKNOWN, r);
        const io = r.exp.io;
        const ex = Buffer.alloc(12);
        ex.writeUInt16BE(Info.EXPORT, 0);
        ex.writeBigUInt64BE(BigInt(io.size), 2);
        ex.writeUInt16BE(this.txFlags(r.ref.readonly || io.readonly), 10);
        this.optReply(opt, Rep.INFO, ex);
        if (wanted.has(Info.NAME)) {
          const nb = Buffer.from(name);
          const d = Buffer.alloc(2 + nb.length);
          d.writeUInt16BE(Info.NAME, 0);
          nb.copy(d, 2);
          this.optReply(opt, Rep.INFO, d);
        }
        if (wanted.has(Info.DESCRIPTION)) {
          const nb = Buffer.from(`sheepdog VDI ${io.header.name} (vid ${io.vid.toString(16)})`);
          const d = Buffer.alloc(2 + nb.length);
          d.writeUInt16BE(Info.DESCRIPTION, 0);
          nb.copy(d, 2);
          this.optReply(opt, Rep.INFO, d);
        }
        if (wanted.has(Info.BLOCK_SIZE)) {
          const d = Buffer.alloc(14);
          d.writeUInt16BE(Info.BLOCK_SIZE, 0);
          d.writeUInt32BE(1, 2);
          d.writeUInt32BE(4096, 6);
          d.writeUInt32BE(MAX_REQUEST, 10);
          this.optReply(opt, Rep.INFO, d);
        }
        this.optReply(opt, Rep.ACK);
        if (opt === Opt.GO) this.enterTransmission(r.ref, r.exp);
        else this.server.detach(r.ref, r.exp);
        return;
      }
      case Opt.STARTTLS:
        return this.optError(opt, Rep.ERR_POLICY, 'TLS is not supported');
      default:
        return this.optError(opt, Rep.ERR_UNSUP, `option ${opt} is not supported`);
    }
  }

  // ---- transmission ----------------------------------------------------

  /** A simple reply header at buf[at, at+16). */
  private static header(buf: Buffer, at: number, err: number, handle: Handle): void {
    buf.writeUInt32BE(SIMPLE_REPLY_MAGIC, at);
    buf.writeUInt32BE(err, at + 4);
    buf.writeUInt32BE(handle.hi, at + 8);
    buf.writeUInt32BE(handle.lo, at + 12);
  }

  /** Queue a reply (data: a READ's, sent after the header; pooled: a bufferPool buffer). */
  /** Returns the data bytes queued (charged until sent). */
  private reply(handle: Handle, err: number, data?: Buffer, pooled = false): number {
    metrics?.nbdDone(handle, err, data && !err ? data.length : 0);
    if (this.phase === 'closed' || this.sock.destroyed) return 0;
    const out = this.out;
    NbdConnection.header(out.room(16), out.pos, err, handle);
    out.commit(16);
    if (data && !err) {
      out.push(data, pooled);
      this.chargeOut(data.length);
      return data.length;
    }
    return 0;
  }

  /** Answer a READ from the page cache, header and data built in place in the reply slab; false if it must wait. */
  private readNow(io: VdiIO, handle: Handle, offset: number, length: number): boolean {
    const out = this.out;
    const buf = out.room(16 + length);
    if (!io.readCached(offset, length, buf, out.pos + 16)) return false;
    NbdConnection.header(buf, out.pos, 0, handle);
    out.commit(16 + length);
    this.chargeOut(length);
    metrics?.nbdDone(handle, 0, length);
    return true;
  }

  private dispatch(type: number, flags: number, handle: Handle, offset: number, length: number, data?: Buffer, target?: SplicedWrite): void {
    if (metrics && type !== Cmd.DISC) metrics.nbdStart(handle, type, type === Cmd.WRITE ? length : 0);
    const cost = this.receivingCost;
    this.receivingCost = 0;
    this.command(type, flags, handle, offset, length, data, target, cost);
    if (this.inflight >= HIGH_WATER && !this.paused) {
      this.paused = true;
      this.updateReading();
    }
  }

  /** release: what the request was charged and has not handed on to a queued reply. */
  private done(release = 0): void {
    this.budget.release(release);
    this.inflight--;
    if (this.paused && this.inflight <= LOW_WATER) {
      this.paused = false;
      this.updateReading();
    }
    if (this.inflight === 0) this.maybeFinish();
  }

  /** target: a WRITE whose payload is in a pipe (see spliceWrite) rather than in data. */
  private command(type: number, flags: number, handle: Handle, offset: number, length: number, data?: Buffer, target?: SplicedWrite, cost = 0): void {
    const io = this.io!;
    if (type === Cmd.DISC) {
      this.budget.release(cost);
      // finish what is in flight, then close
      this.disconnecting = true;
      this.maybeFinish();
      return;
    }
    this.inflight++;
    let p: Promise<Buffer | void>;
    const ro = io.readonly || this.ref!.readonly;
    const end = offset + length;
    const outside = end > io.size;
    switch (type) {
      case Cmd.READ:
        if (length > MAX_REQUEST || outside) { this.reply(handle, Errno.EINVAL); this.done(cost); return; }
        if (length <= SLAB_READ_MAX && this.phase !== 'closed' && this.readNow(io, handle, offset, length)) { this.done(cost - length); return; }
        p = io.read(offset, length, length >= POOL_MIN ? bufferPool.get(length) : undefined);
        break;
      case Cmd.WRITE:
        if (ro || outside) {
          if (target) target.abort();
          else bufferPool.put(data!);
          this.reply(handle, ro ? Errno.EPERM : Errno.ENOSPC);
          this.done(cost);
          return;
        }
        // a zero-length write carries no payload: nothing to write, and nothing a client should send
        if (!target && !data) { this.reply(handle, Errno.EINVAL); this.done(cost); return; }
        p = target ? target.commit() : io.write(offset, data!);
        if (flags & CmdFlag.FUA) p = p.then(() => io.flush());
        break;
      case Cmd.FLUSH:
        p = io.flush();
        break;
      case Cmd.TRIM:
        if (ro) { this.reply(handle, Errno.EPERM); this.done(cost); return; }
        if (outside) { this.reply(handle, Errno.ENOSPC); this.done(cost); return; }
        p = io.discard(offset, length);
        if (flags & CmdFlag.FUA) p = p.then(() => io.flush());
        break;
      case Cmd.WRITE_ZEROES:
        if (ro) { this.reply(handle, Errno.EPERM); this.done(cost); return; }
        if (outside) { this.reply(handle, Errno.ENOSPC); this.done(cost); return; }
        p = io.writeZeroes(offset, length, (flags & CmdFlag.NO_HOLE) !== 0);
        if (flags & CmdFlag.FUA) p = p.then(() => io.flush());
        break;
      default:
        this.reply(handle, Errno.EINVAL);
        this.done(cost);
        return;
    }
    // A failed request may leave I/O in flight on its buffer: only a
    // successful one gives its pooled buffer back.
    p.then((d) => {
      if (type === Cmd.READ) {
        // the queued reply holds the charge now
        this.done(cost - this.reply(handle, 0, d as Buffer, length >= POOL_MIN));
      } else {
        if (data) bufferPool.put(data);
        this.reply(handle, 0);
        this.done(cost);
      }
    }, (e) => {
      const errno = errnoOf(e);
      if (errno === Errno.EIO) log.warn(`NBD: command ${type} at ${offset}+${length} failed: ${(e as Error).message}`);
      this.reply(handle, errno);
      this.done(cost);
    });
  }
}
