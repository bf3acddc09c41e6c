// TCP listener: frames bytes into requests, runs them concurrently and
// writes responses in completion order (spec §1).
import * as net from 'node:net';
import {
  RequestHeader, encodeResponse, Flag, Res, Op, opName, bufferPool, SendQueue, FrameReader, MAX_PAYLOAD,
} from '@sheepdog/common';
import type { Sheep } from './sheep.js';
import { execute, Reply, OPS, type RequestOrigin } from './ops.js';
import { log } from './log.js';
import { metrics } from './metrics.js';
import { rewrapForDirectReads, setReading } from './direct-socket.js';
import { frame, type Framing } from './validate.js';
import { NodeBudget, ConnBudget, DEFAULT_BUDGET } from './budget.js';
import { AdminAllow, MemberAddresses, plainAddress } from './access.js';
import { ConnectionGuard, DEFAULT_GUARD, type GuardConfig } from './guard.js';


/**
 * Object writes whose large payloads are assembled in pooled buffers (a
 * fresh megabyte costs more than copying one) and given back when the
 * request succeeds: none of these keeps its payload past completion.
 */
const POOLED_PAYLOAD = new Set<number>([Op.WRITE_OBJ, Op.CREATE_AND_WRITE_OBJ, Op.WRITE_PEER, Op.CREATE_AND_WRITE_PEER]);

/** Replica and recovery traffic between sheep: charged to the part of the node budget clients cannot take (see budget.ts). */
const PEER_TRAFFIC = new Set<number>([
  Op.CREATE_AND_WRITE_PEER, Op.READ_PEER, Op.WRITE_PEER, Op.REMOVE_PEER, Op.DECREF_PEER, Op.GET_OBJ_LIST, Op.GET_HASH, Op.GET_EPOCH,
  Op.OBJ_COPIES, Op.FETCH_OBJ, Op.CHECK_HELD, Op.SLICE_HASHES,
]);

/** Operations serialised across the cluster (the 'cluster' kind of the opcode table). */
const CLUSTER_OPS = new Set<number>([...OPS].filter(([, d]) => d.kind === 'cluster').map(([op]) => op));
/** Of those, how many one connection may have queued or running (QEMU and dog send them one at a time). */
const MAX_CLUSTER_INFLIGHT = 1;

/** What bounds a listener's connections (sheep options; see man/sheep.8). */
export interface ServerLimits {
  budget: NodeBudget;
  /** Bytes one connection may hold (payloads being received or run, replies not yet sent). */
  connBudget: number;
  adminAllow: AdminAllow;
  guard: GuardConfig;
}

export function defaultLimits(): ServerLimits {
  return {
    budget: new NodeBudget(DEFAULT_BUDGET.node), connBudget: DEFAULT_BUDGET.conn,
    adminAllow: AdminAllow.parse(AdminAllow.DEFAULT), guard: { ...DEFAULT_GUARD },
  };
}

/** A request as the receive path carries it: the header and what validate.frame() made of it. */
interface Req {
  h: RequestHeader;
  f: Framing;
  /** Bytes charged to the connection's budget for it (payload and reply estimate). */
  cost: number;
}

export class SheepServer {
  private servers: net.Server[] = [];
  private conns = new Set<net.Socket>();
  readonly guard: ConnectionGuard;
  private readonly members: MemberAddresses;

  constructor(private readonly sheep: Sheep, readonly limits: ServerLimits = defaultLimits()) {
    this.guard = new ConnectionGuard(limits.guard, 'sheepdog port');
    this.members = new MemberAddresses(() => ({
      epoch: sheep.epochNr,
      lists: [sheep.present, sheep.epochs.get(sheep.epochNr)?.nodes ?? [], [sheep.selfNode]],
    }));
  }

  async listen(host: string | undefined, port: number): Promise<void> {
    const hosts = host ? [host] : ['::', '0.0.0.0'];
    for (const h of hosts) {
      const srv = net.createServer({ noDelay: true, pauseOnConnect: true }, (sock) => this.onConnection(sock));
      try {
        await new Promise<void>((resolve, reject) => {
          srv.once('error', reject);
          srv.listen({ host: h, port, ipv6Only: h === '::', backlog: 1024 }, () => { srv.off('error', reject); resolve(); });
        });
        this.servers.push(srv);
      } catch (e) {
        // '::' fails without IPv6; the IPv4 listener is enough then
        if (hosts.length > 1 && h === '::') continue;
        throw e;
      }
    }
    if (!this.servers.length) throw new Error(`cannot listen on port ${port}`);
  }

  /** Who sent a request, for restricted opcodes: members and --admin-allow addresses. */
  private origin(remote: string | undefined): RequestOrigin {
    const address = plainAddress(remote);
    let warned = false;
    // asked for every peer request: decided once per membership, not per request
    const admin = this.limits.adminAllow.allows(address);
    let epoch = -1;
    let present: unknown;
    let member = false;
    return {
      address,
      allowed: () => {
        if (admin) return true;
        const s = this.sheep;
        if (s.epochNr !== epoch || s.present !== present) {
          epoch = s.epochNr;
          present = s.present;
          member = this.members.has(address);
        }
        return member;
      },
      refused: (op: number) => {
        // one line per connection: a client retrying in a loop must not flood the log
        if (warned) return;
        warned = true;
        this.guard.warn(`refused ${opName(op)} from ${address}: not a cluster member, nor allowed by --admin-allow (${this.limits.adminAllow.text})`);
      },
    };
  }

  private onConnection(accepted: net.Socket): void {
    const remote = accepted.remoteAddress;
    if (!this.guard.admit(remote)) {
      accepted.destroy();
      return;
    }
    const s = this.sheep;
    const from = this.origin(remote);
    const budget = new ConnBudget(this.limits.budget, this.limits.connBudget, `connection from ${from.address}:${accepted.remotePort}`);
    let dead = false;
    let out: SendQueue;
    let sock: net.Socket;
    let direct = false;
    /** Reply bytes handed to the send queue and not yet taken by the kernel. */
    let outCharged = 0;
    /** The request whose payload is being received: charged, not yet running. */
    let receiving: Req | undefined;
    let lastProgress = Date.now();
    from.gone = () => dead;
    const guarded = {
      lastRx: Date.now(),
      partial: () => reader.midFrame && !reader.held,
      timeout: (why: string) => {
        this.guard.warn(`closing connection from ${from.address}: ${why}`);
        sock.destroy();
      },
      idle: () => {
        reader.idle();
        out.idle();
      },
    };

    /** Queue the answer; returns the reply bytes queued (charged to the budget until sent). */
    // t0: the request's start, for metrics (undefined: not a counted request)
    const reply = (h: RequestHeader, r: Reply, t0?: number): number => {
      const gone = dead || sock.destroyed;
      let data = r.data;
      const result = r.result ?? Res.SUCCESS;
      const writeType = (h.flags & Flag.CMD_WRITE) !== 0 && (h.flags & Flag.CMD_PIGGYBACK) === 0;
      // Never more than asked, and never data for a write-type request.
      if (!data || writeType) data = undefined;
      else if (data.length > h.dataLength) data = data.subarray(0, h.dataLength);
      if (result !== Res.SUCCESS && !(result === Res.NO_OBJ && h.flags & Flag.CMD_PIGGYBACK) && h.opcode !== 0x87) data = undefined;
      const len = data?.length ?? 0;
      if (metrics && t0 !== undefined) metrics.sdDone(h.opcode, t0, result, gone ? 0 : len);
      if (gone) return 0;
      const rh = encodeResponse({
        opcode: h.opcode, id: h.id, epoch: s.epochNr, result, dataLength: len,
        vdi: r.vdi as never, node: r.node as never, hash: r.hash as never, clusterDefault: r.clusterDefault as never,
      });
      if (s.stats && isGateway(h.opcode)) s.stats.gwBytesOut += BigInt(len);
      // replies finished in the same turn of the event loop leave in one write
      out.push(rh);
      if (len) {
        out.push(data!);
        out.charge(len);
        outCharged += len;
      }
      return len;
    };

    /** A request is done: its payload's charge comes back now, its reply's once sent. */
    const settle = (req: Req, replied: number) => {
      if (replied > req.cost) budget.force(replied - req.cost);
      else budget.release(req.cost - replied);
    };

    let inflight = 0;
    let refused: RequestHeader | undefined;
    // Nothing after a request that cannot be framed can be read: the ones
    // before it are answered, then it, then the connection is closed.
    const hangUpIfDone = () => {
      if (!refused || inflight > 0 || dead) return;
      reply(refused, { result: Res.INVALID_PARMS });
      out.flush();
      dead = true;
      sock.end();
    };

    let readingStopped = false;
    const updateReading = () => {
      const stop = reader.held;
      if (stop === readingStopped || dead || sock.destroyed) return;
      readingStopped = stop;
      if (direct) setReading(sock, !stop);
      else if (stop) sock.pause();
      else sock.resume();
    };

    const run = (req: Req, data: Buffer, pooled: boolean) => {
      receiving = undefined;
      const h = req.f.header ?? req.h;
      // node stat counts object I/O only, as upstream does (not admin requests)
      const gw = isGateway(h.opcode);
      if (gw) s.stats.gwBytesIn += BigInt(data.length);
      if (req.f.result !== undefined) {
        settle(req, reply(h, { result: req.f.result }));
        return;
      }
      if (gw) s.stats.gwActive++;
      inflight++;
      const cluster = CLUSTER_OPS.has(h.opcode);
      if (cluster) clusterInflight++;
      const t0 = metrics?.sdStart(data.length);
      execute(s, h, data, from).then((r) => {
        if (gw) s.stats.gwActive--;
        inflight--;
        if (cluster) clusterDone();
        // a failed request may still have I/O in flight on its payload
        if (pooled && (r.result ?? Res.SUCCESS) === Res.SUCCESS) bufferPool.put(data);
        settle(req, reply(h, r, t0));
        hangUpIfDone();
      }, (e) => {
        if (gw) s.stats.gwActive--;
        inflight--;
        if (cluster) clusterDone();
        log.err(`request ${opName(h.opcode)} crashed: ${(e as Error).stack}`);
        settle(req, reply(h, { result: Res.SYSTEM_ERROR }, t0));
        hangUpIfDone();
      });
    };

    /** Charge a request to the budget: true if it may be received now (else the reader holds it, unread). */
    const charge = (req: Req, len: number): boolean => {
      // a piggyback reply is never larger than its payload: the pair fits in one budget
      const cost = Math.min(len + req.f.reply, budget.limit);
      const peer = PEER_TRAFFIC.has(req.h.opcode) && from.allowed();
      req.cost = cost;
      if (budget.admit(cost, peer, () => { receiving = req; reader.resume(); updateReading(); })) {
        receiving = req;
        return true;
      }
      // not read until the budget has room (the reader holds the header)
      queueMicrotask(updateReading);
      return false;
    };
    let clusterInflight = 0;
    let clusterHeld: { req: Req; len: number } | undefined;
    const clusterDone = () => {
      clusterInflight--;
      const held = clusterHeld;
      if (!held || dead) return;
      clusterHeld = undefined;
      if (charge(held.req, held.len)) {
        reader.resume();
        updateReading();
      }
    };

    const reader: FrameReader<Req> = new FrameReader<Req>({
      header: (raw) => ({ h: new RequestHeader(raw), f: { payload: 0, reply: 0 }, cost: 0 }),
      payloadLength: (req) => {
        const h = req.h;
        if (h.dataLength > MAX_PAYLOAD) return -1;
        req.f = frame(s, h, OPS.has(h.opcode), budget.limit);
        return req.f.payload;
      },
      admit: (req, len) => {
        // Cluster operations run one at a time cluster-wide: a client may
        // have only a few of them queued, or one connection pipelining
        // hundreds would make every other client's VDI lookup wait behind them.
        if (req.f.result === undefined && CLUSTER_OPS.has(req.h.opcode) && clusterInflight >= MAX_CLUSTER_INFLIGHT) {
          clusterHeld = { req, len };
          queueMicrotask(updateReading);
          return false;
        }
        return charge(req, len);
      },
      frame: run,
      refused: (req) => {
        const h = req.h;
        this.guard.warn(`closing connection from ${from.address}: ${opName(h.opcode)} with data_length ${h.dataLength}, more than it may carry`);
        refused = h;
        hangUpIfDone();
      },
    }, { poolable: (req) => POOLED_PAYLOAD.has(req.h.opcode), slabs: true });

    const onRx = () => {
      guarded.lastRx = lastProgress = Date.now();
    };
    const directSock = rewrapForDirectReads(accepted, {
      buffer: () => reader.buffer(),
      received: (n, b) => { onRx(); reader.received(n, b); },
    }, process.env.SHEEP_DIRECT_RECV === '0');
    direct = directSock !== undefined;
    sock = directSock ?? accepted;
    this.conns.add(sock);
    this.guard.track(guarded);
    sock.setNoDelay(true);
    out = new SendQueue(sock, (n) => {
      lastProgress = Date.now();
      const k = Math.min(n, outCharged);
      outCharged -= k;
      budget.release(k);
    });
    budget.owner = {
      stalledFor: (now) => (sock.writableLength > 0 || guarded.partial() ? now - lastProgress : 0),
      evict: (why) => {
        this.guard.warn(`closing connection from ${from.address}: ${why}`);
        sock.destroy();
      },
    };
    if (!direct) {
      sock.on('data', (chunk: Buffer) => { onRx(); reader.push(chunk); });
      sock.resume(); // accepted paused
    }
    sock.on('error', (e) => log.debug(`connection error: ${e.message}`));
    sock.on('close', () => {
      dead = true;
      reader.stop();
      out.close();
      this.conns.delete(sock);
      this.guard.untrack(guarded);
      this.guard.release(remote);
      // replies that will never leave; requests still running give theirs back as they finish
      budget.release(outCharged + (receiving?.cost ?? 0));
      outCharged = 0;
      receiving = undefined;
      budget.close();
    });
  }

  async close(): Promise<void> {
    this.guard.close();
    const closed = Promise.all(this.servers.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
    for (const c of this.conns) c.destroy();
    await closed;
  }

  stopListening(): void {
    for (const srv of this.servers) srv.close();
  }
}

function isGateway(opcode: number): boolean {
  return OPS.get(opcode)?.kind === 'gateway';
}
