// Persistent pipelined connections to other sheep, for peer (store-level)
// requests. One client per node; reconnects on demand.
import {
  SheepClient, SdNode, nodeConnectAddress, nodeToString, Op, Flag, Res, SheepdogError, RequestFields, Response,
} from '@sheepdog/common';

export class PeerPool {
  private clients = new Map<string, SheepClient>();
  /** The key of each node object (placements reuse them; formatting an address per request is not free). */
  private keys = new WeakMap<SdNode, string>();

  private key(n: SdNode): string {
    let k = this.keys.get(n);
    if (k === undefined) this.keys.set(n, (k = nodeToString(n)));
    return k;
  }

  private client(n: SdNode): SheepClient {
    const key = this.key(n);
    let c = this.clients.get(key);
    if (!c) {
      const { host, port } = nodeConnectAddress(n);
      c = new SheepClient({ host, port, timeout: 60_000, connectTimeout: 3000 });
      this.clients.set(key, c);
    }
    return c;
  }

  /**
   * One request to a peer; throws SheepdogError (NETWORK_ERROR when
   * unreachable). Peer opcodes are all >= 0x80, so they go out with the
   * sheep protocol version without saying so.
   */
  call(n: SdNode, f: RequestFields, payload?: Buffer, ok: number[] = []): Promise<Response> {
    return this.client(n).send(f, payload).then((r) => {
      if (r.rsp.result !== Res.SUCCESS && !ok.includes(r.rsp.result)) {
        const err = new SheepdogError(r.rsp.result);
        (err as SheepdogError & { epoch?: number }).epoch = r.rsp.epoch;
        throw err;
      }
      return r;
    }, (e) => {
      this.drop(n);
      throw new SheepdogError(Res.NETWORK_ERROR, `${nodeToString(n)}: ${(e as Error).message}`);
    });
  }

  async readPeer(n: SdNode, oid: bigint, off: number, len: number, epoch: number, flags = 0, tgtEpoch = 0): Promise<Buffer> {
    const r = await this.call(n, { opcode: Op.READ_PEER, epoch, flags, dataLength: len, obj: { oid, offset: off, tgtEpoch } });
    return r.data;
  }

  /** Resolves with the peer's response, which a write has no use for. */
  writePeer(n: SdNode, oid: bigint, off: number, data: Buffer, epoch: number): Promise<unknown> {
    return this.call(n, { opcode: Op.WRITE_PEER, epoch, flags: Flag.CMD_WRITE, obj: { oid, offset: off } }, data);
  }

  async createPeer(n: SdNode, oid: bigint, off: number, data: Buffer, epoch: number): Promise<void> {
    await this.call(n, { opcode: Op.CREATE_AND_WRITE_PEER, epoch, flags: Flag.CMD_WRITE, obj: { oid, offset: off } }, data);
  }

  async removePeer(n: SdNode, oid: bigint, epoch: number): Promise<void> {
    await this.call(n, { opcode: Op.REMOVE_PEER, epoch, obj: { oid } });
  }

  drop(n: SdNode): void {
    const key = this.key(n);
    this.clients.get(key)?.close();
    this.clients.delete(key);
  }

  closeAll(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
