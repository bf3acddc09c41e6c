// cluster_info (§6.32) and epoch log record (§6.20) codecs.
import { SD_CLUSTER_INFO_SIZE, SD_NODE_SIZE, SD_EPOCH_LOG_HEADER_SIZE, SD_MAX_NODES } from './constants.js';
import { decodeFixedString, encodeFixedString } from './wire.js';
import { SdNode, encodeNode, decodeNodes } from './node.js';

export interface ClusterInfo {
  protoVer: number;
  disableRecovery: boolean;
  epoch: number;
  ctime: bigint;
  flags: number;
  nrCopies: number;
  copyPolicy: number;
  status: number;
  blockSizeShift: number;
  defaultStore: string;
  nodes: SdNode[];
}

export function encodeClusterInfo(ci: ClusterInfo, size = SD_CLUSTER_INFO_SIZE): Buffer {
  const out = Buffer.alloc(Math.max(size, 48));
  out[0] = ci.protoVer;
  out[1] = ci.disableRecovery ? 1 : 0;
  out.writeInt16LE(ci.nodes.length, 2);
  out.writeUInt32LE(ci.epoch >>> 0, 4);
  out.writeBigUInt64LE(ci.ctime, 8);
  out.writeUInt16LE(ci.flags, 16);
  out[18] = ci.nrCopies;
  out[19] = ci.copyPolicy;
  out[20] = ci.status;
  out[21] = ci.blockSizeShift;
  encodeFixedString(ci.defaultStore, 16, out, 25);
  ci.nodes.slice(0, SD_MAX_NODES).forEach((n, i) => {
    if (48 + (i + 1) * SD_NODE_SIZE <= out.length) encodeNode(n, out, 48 + i * SD_NODE_SIZE);
  });
  return out.subarray(0, size);
}

export function decodeClusterInfo(b: Buffer): ClusterInfo {
  const nr = b.readInt16LE(2);
  const fit = Math.max(0, Math.floor((b.length - 48) / SD_NODE_SIZE));
  return {
    protoVer: b[0],
    disableRecovery: b[1] !== 0,
    epoch: b.readUInt32LE(4),
    ctime: b.readBigUInt64LE(8),
    flags: b.readUInt16LE(16),
    nrCopies: b[18],
    copyPolicy: b[19],
    status: b[20],
    blockSizeShift: b[21],
    defaultStore: decodeFixedString(b, 25, 16),
    nodes: decodeNodes(b, Math.min(nr, fit), 48),
  };
}

export interface EpochLog {
  ctime: bigint;
  time: bigint; // UNIX seconds
  epoch: number;
  disableRecovery: boolean;
  nrCopies: number;
  copyPolicy: number;
  flags: number;
  drvName: string;
  nodes: SdNode[];
}

/** One STAT_CLUSTER record with `nodesNr` node slots (stride 48 + nodesNr*80). */
export function encodeEpochLog(e: EpochLog, nodesNr: number, out: Buffer, off: number, first: boolean): void {
  const stride = SD_EPOCH_LOG_HEADER_SIZE + nodesNr * SD_NODE_SIZE;
  out.fill(0, off, off + stride);
  if (first) out.writeBigUInt64LE(e.ctime, off);
  if (nodesNr > 0) {
    out.writeBigInt64LE(e.time, off + 8);
    out.writeUInt32LE(e.nodes.length, off + 20);
  }
  out.writeUInt32LE(e.epoch >>> 0, off + 16);
  if (first) {
    out[off + 24] = e.disableRecovery ? 1 : 0;
    out[off + 25] = e.nrCopies;
    out[off + 26] = e.copyPolicy;
    out.writeUInt16LE(e.flags, off + 30);
    encodeFixedString(e.drvName, 16, out, off + 32);
  }
  if (nodesNr > 0) e.nodes.forEach((n, i) => encodeNode(n, out, off + 48 + i * SD_NODE_SIZE));
}

export function decodeEpochLogs(b: Buffer, nodesNr: number): EpochLog[] {
  const stride = SD_EPOCH_LOG_HEADER_SIZE + nodesNr * SD_NODE_SIZE;
  const out: EpochLog[] = [];
  for (let off = 0; off + stride <= b.length; off += stride) {
    const nr = b.readUInt32LE(off + 20);
    out.push({
      ctime: b.readBigUInt64LE(off),
      time: b.readBigInt64LE(off + 8),
      epoch: b.readUInt32LE(off + 16),
      disableRecovery: b[off + 24] !== 0,
      nrCopies: b[off + 25],
      copyPolicy: b[off + 26],
      flags: b.readUInt16LE(off + 30),
      drvName: decodeFixedString(b, off + 32, 16),
      nodes: decodeNodes(b, Math.min(nr, nodesNr), off + 48),
    });
  }
  return out;
}
