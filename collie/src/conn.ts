// Connections to sheep, the node-list prologue (spec §14.1 NL) and the small
// request building blocks every command uses (LOOKUP, READ_INODE, OBJWRITE).
import * as dns from 'node:dns/promises';
import { isIP } from 'node:net';
import {
  SheepClient, ConnectionError, Op, Flag, Res, resultMessage, decodeNodes, sortNodes, VnodeRing, nodeConnectAddress,
  addrToString, encodeFixedString, vidToVdiOid, SdNode, ClusterFlag, SD_MAX_NODES, SD_NODE_SIZE,
  SD_INODE_HEADER_SIZE, RequestFields, Response,
} from '@sheepdog/common';
import { CliError, EXIT_FAILURE, EXIT_SYSFAIL } from './exitcodes.js';
import { Sink, processSink } from './output.js';
import { writeStdout } from './io.js';

export interface Target {
  host: string;
  port: number;
}

/** A connection failure whose "failed to connect" lines were already printed. */
export class ReportedConnectionError extends ConnectionError {}

export class Ctx {
  host = '127.0.0.1';
  port = 7000;
  raw = false;
  /** --json: print the command's JSON document instead of its text */
  json = false;
  verbose = false;
  prog = 'collie';
  sink: Sink = processSink;

  /** Filled by loadNodeList(). */
  nodes: SdNode[] = [];
  epoch = 0;
  clusterFlags = 0;
  ring?: VnodeRing;

  private clients = new Map<string, SheepClient>();
  private busy = new Map<SheepClient, number>();

  out(s: string | Buffer): void {
    this.sink.out(s);
  }
  /** Bulk data to stdout, with back-pressure when writing to the process. */
  async writeData(b: Buffer): Promise<void> {
    if (this.sink === processSink) await writeStdout(b);
    else this.sink.out(b);
  }
  err(s: string): void {
    this.sink.err(s.endsWith('\n') ? s : s + '\n');
  }

  get local(): Target {
    return { host: this.host, port: this.port };
  }

  /** Resolve a host name once so that messages show the address, like dog. */
  async resolveHost(): Promise<void> {
    if (isIP(this.host)) return;
    try {
      const r = await dns.lookup(this.host, { family: 0, verbatim: false });
      this.host = r.address;
    } catch {
      throw new CliError(EXIT_FAILURE, `Invalid ip address ${this.host}`);
    }
  }

  private async client(t: Target): Promise<SheepClient> {
    const key = `${t.host}|${t.port}`;
    let c = this.clients.get(key);
    if (!c) {
      c = new SheepClient({ host: t.host, port: t.port, connectTimeout: 5000 });
      this.clients.set(key, c);
    }
    // dog tries its cached socket and then a fresh one: one line per attempt.
    for (let attempt = 0; ; attempt++) {
      try {
        await c.connect();
        return c;
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        this.err(msg);
        if (attempt >= 1) throw new ReportedConnectionError(msg);
      }
    }
  }

  /** One request to a node (default: the -a/-p node); any result. */
  async exec(fields: RequestFields, payload?: Buffer, target: Target = this.local): Promise<Response> {
    const c = await this.client(target);
    // dog sends id 0; we do too unless another request is in flight on this
    // connection (pipelined transfers need distinct ids).
    const busy = this.busy.get(c) ?? 0;
    this.busy.set(c, busy + 1);
    try {
      return await c.send({ ...fields, id: fields.id ?? (busy === 0 ? 0 : undefined) }, payload);
    } catch (e) {
      if (e instanceof ConnectionError && !(e instanceof ReportedConnectionError)) {
        this.err(`failed to communicate with ${c.address}: ${e.message}`);
        throw new ReportedConnectionError(e.message);
      }
      throw e;
    } finally {
      this.busy.set(c, (this.busy.get(c) ?? 1) - 1);
    }
  }

  /** Like exec, but a connection failure becomes a CliError(EXIT_SYSFAIL). */
  async execOrFail(fields: RequestFields, payload?: Buffer, target?: Target): Promise<Response> {
    try {
      return await this.exec(fields, payload, target);
    } catch (e) {
      if (e instanceof ConnectionError) throw new CliError(EXIT_SYSFAIL);
      throw e;
    }
  }

  /** send_light_req: header-only request; non-SUCCESS prints "Response's result". Returns ok. */
  async lightReq(fields: RequestFields, target?: Target): Promise<boolean> {
    const r = await this.execOrFail(fields, undefined, target);
    if (r.rsp.result !== Res.SUCCESS) {
      this.err(`Response's result: ${resultMessage(r.rsp.result)}`);
      return false;
    }
    return true;
  }

  nodeTarget(n: SdNode): Target {
    return nodeConnectAddress(n);
  }

  /** The NL prologue: GET_NODE_LIST, then the 48-byte STAT_CLUSTER probe. */
  async loadNodeList(): Promise<void> {
    let r: Response;
    try {
      r = await this.exec({ opcode: Op.GET_NODE_LIST, dataLength: SD_MAX_NODES * SD_NODE_SIZE });
    } catch (e) {
      if (e instanceof ConnectionError) throw new CliError(EXIT_SYSFAIL, 'Failed to get node list');
      throw e;
    }
    if (r.rsp.result !== Res.SUCCESS) {
      this.err(`Failed to update node list: ${resultMessage(r.rsp.result)}`);
      throw new CliError(EXIT_SYSFAIL, 'Failed to get node list');
    }
    const nr = Math.floor(r.data.length / SD_NODE_SIZE);
    if (nr === 0) throw new CliError(EXIT_FAILURE, 'There are no active sheep daemons');
    this.nodes = sortNodes(decodeNodes(r.data, nr));
    let s: Response;
    try {
      s = await this.exec({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: { nodesNr: 0 } });
    } catch (e) {
      if (e instanceof ConnectionError) throw new CliError(EXIT_SYSFAIL, 'Failed to get node list');
      throw e;
    }
    this.clusterFlags = s.data.length >= 32 ? s.data.readUInt16LE(30) : 0;
    this.epoch = s.rsp.epoch;
    this.ring = new VnodeRing(this.nodes);
  }

  get diskMode(): boolean {
    return (this.clusterFlags & ClusterFlag.DISKMODE) !== 0;
  }

  /** Index of the -a/-p node in the node list, or -1. */
  localIndex(): number {
    return this.nodes.findIndex((n) => addrToString(n.addr) === this.host && n.port === this.port);
  }

  closeAll(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

export function nodeName(n: Pick<SdNode, 'addr' | 'port'>): string {
  return `${addrToString(n.addr)}:${n.port}`;
}

/** name[256] ‖ tag[256] payload of GET_VDI_INFO / DEL_VDI. */
export function nameTagPayload(name: string, tag: string): Buffer {
  const b = Buffer.alloc(512);
  encodeFixedString(name, 256, b, 0);
  encodeFixedString(tag, 256, b, 256);
  return b;
}

/** LOOKUP without printing: resolves to {result, vid}. */
export async function lookupVdi(ctx: Ctx, name: string, snapid: number, tag: string): Promise<{ result: number; vid: number }> {
  const r = await ctx.execOrFail(
    { opcode: Op.GET_VDI_INFO, flags: Flag.CMD_WRITE, vdi: { snapid } },
    nameTagPayload(name, tag),
  );
  return { result: r.rsp.result, vid: r.rsp.vdi.vdiId };
}

/** find_vdi_name: LOOKUP that prints dog's "Failed to open VDI" line on error. */
export async function findVdi(ctx: Ctx, name: string, snapid: number, tag: string): Promise<number> {
  const { result, vid } = await lookupVdi(ctx, name, snapid, tag);
  if (result !== Res.SUCCESS) {
    throw new CliError(
      EXIT_FAILURE,
      `Failed to open VDI ${name} (snapshot id: ${snapid} snapshot tag: ${tag}): ${resultMessage(result)}`,
    );
  }
  return vid;
}

/** dog_read_object: READ_OBJ; on error prints and throws. */
export async function readObject(
  ctx: Ctx, oid: bigint, len: number, offset: number, direct: boolean, target?: Target,
): Promise<Buffer> {
  const r = await ctx.execOrFail(
    { opcode: Op.READ_OBJ, flags: direct ? Flag.CMD_DIRECT : 0, dataLength: len, obj: { oid, offset } },
    undefined,
    target,
  );
  if (r.rsp.result !== Res.SUCCESS) {
    throw new ObjectError(r.rsp.result, `Failed to read object ${oid.toString(16)} ${resultMessage(r.rsp.result)}`);
  }
  if (r.data.length < len) {
    const b = Buffer.alloc(len);
    r.data.copy(b);
    return b;
  }
  return r.data;
}

/** An object request failed with a result code (message already composed). */
export class ObjectError extends Error {
  constructor(readonly result: number, message: string) {
    super(message);
  }
}

export interface ObjWrite {
  oid: bigint;
  cowOid?: bigint;
  data: Buffer;
  offset: number;
  flags?: number;
  copies: number;
  copyPolicy: number;
  create: boolean;
  direct: boolean;
}

/** dog_write_object (OBJWRITE of §14.1). Returns the result code. */
export async function writeObject(ctx: Ctx, w: ObjWrite): Promise<number> {
  let flags = (w.flags ?? 0) | Flag.CMD_WRITE;
  if (w.cowOid) flags |= Flag.CMD_COW;
  if (w.direct) flags |= Flag.CMD_DIRECT;
  const r = await ctx.execOrFail(
    {
      opcode: w.create ? Op.CREATE_AND_WRITE_OBJ : Op.WRITE_OBJ,
      flags,
      dataLength: w.data.length,
      obj: { oid: w.oid, cowOid: w.cowOid ?? 0n, copies: w.copies, copyPolicy: w.copyPolicy, offset: w.offset },
    },
    w.data,
  );
  if (r.rsp.result !== Res.SUCCESS) {
    ctx.err(`Failed to write object ${w.oid.toString(16)}: ${resultMessage(r.rsp.result)}`);
  }
  return r.rsp.result;
}

/** SETIDX: one index entry of a flat VDI. */
export function setIndex(
  ctx: Ctx, vid: number, idx: number, value: number, copies: number, copyPolicy: number, flags: number, direct: boolean,
): Promise<number> {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0, 0);
  return writeObject(ctx, {
    oid: vidToVdiOid(vid), data: b, offset: SD_INODE_HEADER_SIZE + 4 * idx, flags, copies, copyPolicy,
    create: false, direct,
  });
}

/** Run async tasks with at most `limit` in flight, in issue order. */
export class Window {
  private inflight = new Set<Promise<void>>();
  private failure: unknown;
  constructor(private readonly limit: number) {}
  get failed(): boolean {
    return this.failure !== undefined;
  }
  async add(task: () => Promise<void>): Promise<void> {
    while (this.inflight.size >= this.limit) await Promise.race(this.inflight);
    if (this.failure !== undefined) return;
    const p: Promise<void> = task()
      .catch((e) => {
        if (this.failure === undefined) this.failure = e;
      })
      .finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }
  async drain(): Promise<void> {
    while (this.inflight.size) await Promise.race(this.inflight);
    if (this.failure !== undefined) throw this.failure;
  }
}
