// node_id (40 bytes) and sd_node (80 bytes) codecs, address text (§11.1).
import { isIPv4, isIPv6 } from 'node:net';
import { SD_NODE_SIZE, SD_DEFAULT_VNODES } from './constants.js';

export interface SdNode {
  addr: Buffer; // 16 bytes; IPv4 as 12 zero bytes + 4 address bytes
  port: number;
  ioAddr?: Buffer;
  ioPort?: number;
  nrVnodes: number;
  zone: number;
  space: bigint;
}

/** Encode a textual address in the "IPv4-compatible" 16-byte form. */
export function encodeAddr(host: string): Buffer {
  const out = Buffer.alloc(16);
  if (isIPv4(host)) {
    host.split('.').forEach((p, i) => (out[12 + i] = Number(p)));
    return out;
  }
  if (host === 'localhost') return encodeAddr('127.0.0.1');
  if (!isIPv6(host)) throw new Error(`invalid address '${host}'`);
  let h = host;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  let tail: number[] = [];
  if (v4) {
    const p = v4[1].split('.').map(Number);
    tail = [(p[0] << 8) | p[1], (p[2] << 8) | p[3]];
    h = h.slice(0, h.length - v4[1].length) + '0:0';
  }
  const [head, rest] = h.includes('::') ? h.split('::') : [h, undefined];
  const hp = head ? head.split(':') : [];
  const rp = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups = new Array(8).fill(0);
  hp.forEach((g, i) => (groups[i] = parseInt(g, 16)));
  rp.forEach((g, i) => (groups[8 - rp.length + i] = parseInt(g, 16)));
  if (tail.length) { groups[6] = tail[0]; groups[7] = tail[1]; }
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** Text for an encoded address, as dog prints it. */
export function addrToString(addr: Buffer): string {
  let v4 = true;
  for (let i = 0; i < 12; i++) if (addr[i] !== 0) v4 = false;
  if (v4 && addr[12] !== 0) return `${addr[12]}.${addr[13]}.${addr[14]}.${addr[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(addr.readUInt16BE(i).toString(16));
  // compress the longest run of zero groups
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return groups.slice(0, best).join(':') + '::' + groups.slice(best + bestLen).join(':');
}

export function nodeToString(n: Pick<SdNode, 'addr' | 'port'>): string {
  const a = addrToString(n.addr);
  return a.includes(':') ? `[${a}]:${n.port}` : `${a}:${n.port}`;
}

/** Default zone: the u32 read little-endian from address bytes 12–15. */
export const defaultZone = (addr: Buffer): number => addr.readUInt32LE(12);

export function makeNode(host: string, port: number, opts: Partial<SdNode> = {}): SdNode {
  const addr = encodeAddr(host);
  return {
    addr,
    port,
    ioAddr: opts.ioAddr,
    ioPort: opts.ioPort ?? 0,
    nrVnodes: opts.nrVnodes ?? SD_DEFAULT_VNODES,
    zone: opts.zone ?? defaultZone(addr),
    space: opts.space ?? 0n,
  };
}

export function encodeNodeId(n: SdNode, out: Buffer, off: number): void {
  out.fill(0, off, off + 40);
  n.addr.copy(out, off, 0, 16);
  out.writeUInt16LE(n.port, off + 16);
  if (n.ioAddr) n.ioAddr.copy(out, off + 18, 0, 16);
  out.writeUInt16LE(n.ioPort ?? 0, off + 34);
}

export function encodeNode(n: SdNode, out: Buffer = Buffer.alloc(SD_NODE_SIZE), off = 0): Buffer {
  out.fill(0, off, off + SD_NODE_SIZE);
  encodeNodeId(n, out, off + 24);
  out.writeUInt16LE(n.nrVnodes, off + 64);
  out.writeUInt32LE(n.zone >>> 0, off + 68);
  out.writeBigUInt64LE(n.space, off + 72);
  return out;
}

export function decodeNode(b: Buffer, off = 0): SdNode {
  const ioAddr = Buffer.from(b.subarray(off + 42, off + 58));
  return {
    addr: Buffer.from(b.subarray(off + 24, off + 40)),
    port: b.readUInt16LE(off + 40),
    ioAddr: ioAddr.some((x) => x !== 0) ? ioAddr : undefined,
    ioPort: b.readUInt16LE(off + 58),
    nrVnodes: b.readUInt16LE(off + 64),
    zone: b.readUInt32LE(off + 68),
    space: b.readBigUInt64LE(off + 72),
  };
}

export function encodeNodes(nodes: SdNode[]): Buffer {
  const out = Buffer.alloc(nodes.length * SD_NODE_SIZE);
  nodes.forEach((n, i) => encodeNode(n, out, i * SD_NODE_SIZE));
  return out;
}

export function decodeNodes(b: Buffer, count = Math.floor(b.length / SD_NODE_SIZE), off = 0): SdNode[] {
  const out: SdNode[] = [];
  for (let i = 0; i < count; i++) out.push(decodeNode(b, off + i * SD_NODE_SIZE));
  return out;
}

/** Order used everywhere node lists appear: address bytes, then port. */
export function compareNodes(a: Pick<SdNode, 'addr' | 'port'>, b: Pick<SdNode, 'addr' | 'port'>): number {
  const c = Buffer.compare(a.addr, b.addr);
  return c !== 0 ? c : a.port - b.port;
}

export const sortNodes = <T extends Pick<SdNode, 'addr' | 'port'>>(nodes: T[]): T[] => [...nodes].sort(compareNodes);

export const sameNode = (a: Pick<SdNode, 'addr' | 'port'>, b: Pick<SdNode, 'addr' | 'port'>): boolean =>
  compareNodes(a, b) === 0;

/** Where to connect for a node: its io address if it has one. */
export function nodeConnectAddress(n: SdNode): { host: string; port: number } {
  if (n.ioAddr && n.ioPort) return { host: addrToString(n.ioAddr), port: n.ioPort };
  return { host: addrToString(n.addr), port: n.port };
}
