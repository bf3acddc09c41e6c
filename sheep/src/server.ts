// TCP listener: frames bytes into requests, runs them concurrently and
// writes responses in completion order (spec §1).
import * as net from 'node:net';
import {
  RequestHeader, encodeResponse, Flag, Res, Op, opName, bufferPool, SendQueue, FrameReader, MAX_PAYLOAD,
} from '@sheepdog/common';
import type { Sheep } from './sheep.js';
import { execute, Reply, OPS } from './ops.js';
import { log } from './log.js';
import { rewrapForDirectReads } from './direct-socket.js';
import { metrics } from './metrics.js';


/**
 * Object writes whose large payloads are assembled in pooled buffers (a
 * fresh megabyte costs more than copying one) and given back when the
 * request succeeds: none of these keeps its payload past completion.
 */
const POOLED_PAYLOAD = new Set<number>([Op.WRITE_OBJ, Op.CREATE_AND_WRITE_OBJ, Op.WRITE_PEER, Op.CREATE_AND_WRITE_PEER]);

export class SheepServer {
  private servers: net.Server[] = [];
  private conns = new Set<net.Socket>();

  constructor(private readonly sheep: Sheep) {}

  async listen(host: string | undefined, port: number): Promise<void> {
    const hosts = host ? [host] : ['::', '0.0.0.0'];
    for (const h of hosts) {
      const srv = net.createServer({ noDelay: true, pauseOnConnect: true }, (sock) => this.onConnection(sock));
      try {
        await new Promise<void>((resolve, reject) => {
          srv.once('error', reject);
          srv.listen({ host: h, port, ipv6Only: h === '::' }, () => { srv.off('error', reject); resolve(); });
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

  private onConnection(accepted: net.Socket): void {
    const s = this.sheep;
    let dead = false;
    let out: SendQueue;
    let sock: net.Socket;

    // t0: the request's start, for metrics (undefined: not a counted request)
    const reply = (h: RequestHeader, r: Reply, t0?: number) => {
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
      if (gone) return;
      const rh = encodeResponse({
        opcode: h.opcode, id: h.id, epoch: s.epochNr, result, dataLength: len,
        vdi: r.vdi as never, node: r.node as never, hash: r.hash as never, clusterDefault: r.clusterDefault as never,
      });
      if (s.stats && isGateway(h.opcode)) s.stats.gwBytesOut += BigInt(len);
      // replies finished in the same turn of the event loop leave in one write
      out.push(rh);
      if (len) out.push(data!);
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
    const reader = new FrameReader({
      header: (raw) => new RequestHeader(raw),
      payloadLength: (h) => (h.dataLength > MAX_PAYLOAD ? -1 : h.flags & Flag.CMD_WRITE ? h.dataLength : 0),
      frame: (h, data, pooled) => {
        // node stat counts object I/O only, as upstream does (not admin requests)
        const gw = isGateway(h.opcode);
        if (gw) {
          s.stats.gwBytesIn += BigInt(data.length);
          s.stats.gwActive++;
        }
        inflight++;
        const t0 = metrics?.sdStart(data.length);
        execute(s, h, data).then((r) => {
          if (gw) s.stats.gwActive--;
          inflight--;
          // a failed request may still have I/O in flight on its payload
          if (pooled && (r.result ?? Res.SUCCESS) === Res.SUCCESS) bufferPool.put(data);
          reply(h, r, t0);
          hangUpIfDone();
        }, (e) => {
          if (gw) s.stats.gwActive--;
          inflight--;
          log.err(`request ${opName(h.opcode)} crashed: ${(e as Error).stack}`);
          reply(h, { result: Res.SYSTEM_ERROR }, t0);
          hangUpIfDone();
        });
      },
      refused: (h) => {
        log.warn(`closing connection from ${sock.remoteAddress}: ${opName(h.opcode)} with data_length ${h.dataLength}`);
        refused = h;
        hangUpIfDone();
      },
    }, { poolable: (h) => POOLED_PAYLOAD.has(h.opcode), slabs: true });

    const direct = rewrapForDirectReads(accepted, reader, process.env.SHEEP_DIRECT_RECV === '0');
    sock = direct ?? accepted;
    this.conns.add(sock);
    sock.setNoDelay(true);
    out = new SendQueue(sock);
    if (!direct) {
      sock.on('data', (chunk: Buffer) => reader.push(chunk));
      sock.resume(); // accepted paused
    }
    sock.on('error', (e) => log.debug(`connection error: ${e.message}`));
    sock.on('close', () => { dead = true; reader.stop(); this.conns.delete(sock); });
  }

  async close(): Promise<void> {
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
