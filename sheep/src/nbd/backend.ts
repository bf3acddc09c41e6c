// VdiIO's object backend over the in-process gateway (or the object cache,
// which has the same signatures). Kept free of ops/exports imports so the
// cache can build on it without an import cycle.
import { VdiBackend, SpliceTarget, vidToVdiOid, SD_INODE_HEADER_SIZE } from '@sheepdog/common';
import type { Gateway } from '../gateway.js';

/** Object I/O with the gateway's signatures (the gateway itself, or the object cache above it). */
export type GatewayIO = Pick<Gateway, 'read' | 'write' | 'create'> & Partial<Pick<Gateway, 'readCached' | 'spliceTarget'>>;

/** VdiBackend over the in-process Gateway. */
export class GatewayBackend implements VdiBackend {
  constructor(private readonly gw: GatewayIO) {}
  readObj(oid: bigint, off: number, len: number, copies: number, into?: Buffer): Promise<Buffer> {
    return this.gw.read(oid, off, len, copies || undefined, into);
  }
  readCached(oid: bigint, off: number, len: number, copies: number, into: Buffer, at: number): boolean {
    return this.gw.readCached?.(oid, off, len, copies || undefined, into, at) ?? false;
  }
  spliceTarget(oid: bigint, off: number, len: number, copies: number): SpliceTarget | undefined {
    return this.gw.spliceTarget?.(oid, off, len, copies || undefined);
  }
  writeObj(oid: bigint, off: number, data: Buffer, copies: number): Promise<void> {
    return this.gw.write(oid, off, data, copies || undefined);
  }
  createObj(oid: bigint, cowOid: bigint, off: number, data: Buffer, copies: number): Promise<void> {
    return this.gw.create(oid, off, data, cowOid, copies || undefined);
  }
  writeIndex(vid: number, first: number, entries: Buffer, copies: number): Promise<void> {
    return this.gw.write(vidToVdiOid(vid), SD_INODE_HEADER_SIZE + 4 * first, entries, copies || undefined);
  }
}

