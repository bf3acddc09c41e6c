// The epoch record a node keeps on disk for every epoch (DIR/epoch/NNNNNNNN):
// the member nodes and when the epoch began, then a 16-byte trailer that
// makes a damaged or foreign file detectable: magic "SDEP", format version,
// the epoch number and a CRC-32 of everything before it. Files written
// before the trailer existed (nodes + time only) still read.
import { crc32 } from 'node:zlib';
import { SdNode, encodeNodes, decodeNodes } from './node.js';
import { SD_NODE_SIZE, SD_MAX_NODES } from './constants.js';

const MAGIC = 0x50454453; // "SDEP"
const VERSION = 1;
const TRAILER = 16;

export interface EpochFileRecord {
  nodes: SdNode[];
  time: number;
}

export function encodeEpochFile(epoch: number, r: EpochFileRecord): Buffer {
  const body = r.nodes.length * SD_NODE_SIZE + 8;
  const b = Buffer.alloc(body + TRAILER);
  encodeNodes(r.nodes).copy(b);
  b.writeBigInt64LE(BigInt(r.time), r.nodes.length * SD_NODE_SIZE);
  b.writeUInt32LE(MAGIC, body);
  b.writeUInt32LE(VERSION, body + 4);
  b.writeUInt32LE(epoch >>> 0, body + 8);
  b.writeUInt32LE(crc32(b.subarray(0, body + 12)), body + 12);
  return b;
}

/** The record, or a sentence saying what is wrong with the bytes. */
export function decodeEpochFile(epoch: number, b: Buffer): EpochFileRecord | string {
  let body = b.length;
  if (b.length >= TRAILER + 8 && b.readUInt32LE(b.length - TRAILER) === MAGIC) {
    body = b.length - TRAILER;
    if (b.readUInt32LE(body + 4) !== VERSION) return `unknown format version ${b.readUInt32LE(body + 4)}`;
    if (b.readUInt32LE(body + 12) !== crc32(b.subarray(0, body + 12))) return 'checksum mismatch (the file is damaged)';
    if (b.readUInt32LE(body + 8) !== epoch >>> 0) return `it holds epoch ${b.readUInt32LE(body + 8)}, not ${epoch}`;
  }
  if (body < 8 + SD_NODE_SIZE || (body - 8) % SD_NODE_SIZE !== 0) return `${b.length} bytes is no epoch record`;
  const n = (body - 8) / SD_NODE_SIZE;
  if (n > SD_MAX_NODES) return `${n} nodes, more than a cluster can have`;
  const nodes = decodeNodes(b, n);
  const seen = new Set<string>();
  for (const x of nodes) {
    const k = `${x.addr.toString('hex')}:${x.port}`;
    if (x.port === 0 || seen.has(k)) return 'a node listed twice, or without a port';
    seen.add(k);
  }
  const time = Number(b.readBigInt64LE(n * SD_NODE_SIZE));
  if (!(time >= 0)) return `an impossible time ${time}`;
  return { nodes, time };
}
