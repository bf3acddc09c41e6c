// Small fixed structures: vdi_state, recovery state and throttling, sd_stat,
// md_info (spec §6.23–§6.36).
import { SD_VDI_STATE_SIZE, SD_STAT_SIZE, SD_MD_INFO_SIZE } from './constants.js';
import { SdNode, encodeNodeId } from './node.js';

export const LockState = { UNLOCKED: 1, LOCKED: 2, SHARED: 3 } as const;

export interface VdiState {
  vid: number;
  nrCopies: number;
  snapshot: boolean;
  deleted: boolean;
  copyPolicy: number;
  blockSizeShift: number;
  parentVid: number;
  lockState: number;
  lockOwner?: SdNode;
  participants: SdNode[];
}

export function encodeVdiState(s: VdiState, out: Buffer, off: number): void {
  out.fill(0, off, off + SD_VDI_STATE_SIZE);
  out.writeUInt32LE(s.vid >>> 0, off);
  out[off + 4] = s.nrCopies;
  out[off + 5] = s.snapshot ? 1 : 0;
  out[off + 6] = s.deleted ? 1 : 0;
  out[off + 7] = s.copyPolicy;
  out[off + 8] = s.blockSizeShift;
  out.writeUInt32LE(s.parentVid >>> 0, off + 12);
  out.writeUInt32LE(s.lockState, off + 16);
  if (s.lockOwner) encodeNodeId(s.lockOwner, out, off + 20);
  const p = s.participants.slice(0, 31);
  out.writeUInt32LE(p.length, off + 60);
  p.forEach((n, i) => {
    out.writeUInt32LE(2, off + 64 + 4 * i);
    encodeNodeId(n, out, off + 188 + 40 * i);
  });
}

export interface VdiStateRecord {
  vid: number;
  nrCopies: number;
  snapshot: boolean;
  deleted: boolean;
  copyPolicy: number;
  blockSizeShift: number;
  parentVid: number;
  lockState: number;
  lockOwnerAddr: Buffer;
  lockOwnerPort: number;
  nrParticipants: number;
}

export function decodeVdiStates(b: Buffer): VdiStateRecord[] {
  const out: VdiStateRecord[] = [];
  for (let off = 0; off + SD_VDI_STATE_SIZE <= b.length; off += SD_VDI_STATE_SIZE) {
    out.push({
      vid: b.readUInt32LE(off),
      nrCopies: b[off + 4],
      snapshot: b[off + 5] !== 0,
      deleted: b[off + 6] !== 0,
      copyPolicy: b[off + 7],
      blockSizeShift: b[off + 8],
      parentVid: b.readUInt32LE(off + 12),
      lockState: b.readUInt32LE(off + 16),
      lockOwnerAddr: Buffer.from(b.subarray(off + 20, off + 36)),
      lockOwnerPort: b.readUInt16LE(off + 36),
      nrParticipants: b.readUInt32LE(off + 60),
    });
  }
  return out;
}

export interface RecoveryState {
  inRecovery: boolean;
  state: number; // 0 preparing, 1 recovering, 2 notifying
  nrFinished: bigint;
  nrTotal: bigint;
}

export function encodeRecoveryState(r: RecoveryState): Buffer {
  const b = Buffer.alloc(24);
  b[0] = r.inRecovery ? 1 : 0;
  b.writeUInt32LE(r.state, 4);
  b.writeBigUInt64LE(r.nrFinished, 8);
  b.writeBigUInt64LE(r.nrTotal, 16);
  return b;
}
export function decodeRecoveryState(b: Buffer): RecoveryState {
  return { inRecovery: b[0] !== 0, state: b.readUInt32LE(4), nrFinished: b.readBigUInt64LE(8), nrTotal: b.readBigUInt64LE(16) };
}

export interface RecoveryThrottling {
  maxExecCount: number;
  queueWorkInterval: bigint;
  throttling: boolean;
}
export function encodeThrottling(t: RecoveryThrottling): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(t.maxExecCount >>> 0, 0);
  b.writeBigUInt64LE(t.queueWorkInterval, 8);
  b[16] = t.throttling ? 1 : 0;
  return b;
}
export function decodeThrottling(b: Buffer): RecoveryThrottling {
  return { maxExecCount: b.readUInt32LE(0), queueWorkInterval: b.readBigUInt64LE(8), throttling: b[16] !== 0 };
}

export const STAT_FIELDS = [
  'gwActive', 'peerActive', 'gwTotal', 'peerTotal', 'gwBytesIn', 'gwBytesOut', 'peerBytesIn', 'peerBytesOut',
  'gwRemove', 'gwRead', 'gwWrite', 'gwFlush', 'peerRemove', 'peerRead', 'peerWrite',
] as const;
export type SdStat = Record<(typeof STAT_FIELDS)[number], bigint>;

export function emptyStat(): SdStat {
  return Object.fromEntries(STAT_FIELDS.map((k) => [k, 0n])) as SdStat;
}
export function encodeStat(s: SdStat): Buffer {
  const b = Buffer.alloc(SD_STAT_SIZE);
  STAT_FIELDS.forEach((k, i) => b.writeBigUInt64LE(s[k], i * 8));
  return b;
}
export function decodeStat(b: Buffer): SdStat {
  return Object.fromEntries(STAT_FIELDS.map((k, i) => [k, b.readBigUInt64LE(i * 8)])) as SdStat;
}

export interface MdDisk { idx: number; free: bigint; used: bigint; path: string }
export function encodeMdInfo(disks: MdDisk[]): Buffer {
  const b = Buffer.alloc(SD_MD_INFO_SIZE);
  disks.slice(0, 64).forEach((d, i) => {
    const off = i * 4120;
    b.writeInt32LE(d.idx, off);
    b.writeBigUInt64LE(d.free, off + 8);
    b.writeBigUInt64LE(d.used, off + 16);
    b.write(d.path.slice(0, 4095), off + 24, 'utf8');
  });
  b.writeInt32LE(Math.min(disks.length, 64), 263680);
  return b;
}
/** MD_PLUG / MD_UNPLUG payload: the comma-separated paths, as given, NUL-terminated. */
export function encodeMdPaths(paths: string): Buffer {
  return Buffer.from(paths + '\0', 'utf8');
}
/** The paths of an MD_PLUG / MD_UNPLUG payload (up to its first NUL); empty names are dropped. */
export function decodeMdPaths(b: Buffer): string[] {
  const end = b.indexOf(0);
  return b.toString('utf8', 0, end < 0 ? b.length : end).split(',').filter((p) => p !== '');
}
export function decodeMdInfo(b: Buffer): MdDisk[] {
  const nr = b.readInt32LE(263680);
  const out: MdDisk[] = [];
  for (let i = 0; i < nr && i < 64; i++) {
    const off = i * 4120;
    const end = b.indexOf(0, off + 24);
    out.push({ idx: b.readInt32LE(off), free: b.readBigUInt64LE(off + 8), used: b.readBigUInt64LE(off + 16), path: b.toString('utf8', off + 24, end < 0 || end > off + 4120 ? off + 4120 : end) });
  }
  return out;
}
