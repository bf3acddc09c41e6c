// Persistent pipelined connections to other sheep, for peer (store-level)
// requests. One client per node; reconnects on demand.
import { SheepClient, SdNode, nodeConnectAddress, nodeToString, Op, Flag, Res, SheepdogError } from '@sheepdog/common';

export class PeerPool {
  private clients = new Map<string, SheepClient>();

  private client(n: SdNode): SheepClient {
    const key = nodeToString(n);
    let c = this.clients.get(key);
    if (!c) {
      const { host, port } = nodeConnectAddress(n);
      c = new SheepClient({ host, port, timeout: 30_000 });
      this.clients.set(key, c);
    }
    return c;
  }

  private async call(n: SdNode, f: Parameters<SheepClient['send']>[0], payload?: Buffer): Promise<Buffer> {
    let r;
    try {
      r = await this.client(n).send(f, payload);
    } catch (e) {
      this.drop(n);
      throw new SheepdogError(Res.NETWORK_ERROR, `${nodeToString(n)}: ${(e as Error).message}`);
    }
    if (r.rsp.result !== Res.SUCCESS) throw new SheepdogError(r.rsp.result);
    return r.data;
  }

  readPeer(n: SdNode, oid: bigint, off: number, len: number, epoch: number, flags = 0, tgtEpoch = 0): Promise<Buffer> {
    return this.call(n, { opcode: Op.READ_PEER, epoch, flags, dataLength: len, obj: { oid, offset: off, tgtEpoch } });
  }

  async writePeer(n: SdNode, oid: bigint, off: number, data: Buffer, epoch: number): Promise<void> {
    await this.call(n, { opcode: Op.WRITE_PEER, epoch, flags: Flag.CMD_WRITE, obj: { oid, offset: off } }, data);
  }

  async createPeer(n: SdNode, oid: bigint, off: number, data: Buffer, epoch: number): Promise<void> {
    await this.call(n, { opcode: Op.CREATE_AND_WRITE_PEER, epoch, flags: Flag.CMD_WRITE, obj: { oid, offset: off } }, data);
  }

  async removePeer(n: SdNode, oid: bigint, epoch: number): Promise<void> {
    await this.call(n, { opcode: Op.REMOVE_PEER, epoch, obj: { oid } });
  }

  drop(n: SdNode): void {
    const key = nodeToString(n);
    this.clients.get(key)?.close();
    this.clients.delete(key);
  }

  closeAll(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
