// Slice hashes: a copy's SHA-1 per 128 KiB slice (the farm's unit), so that
// a farm node whose copy is out of date fetches only the slices that differ
// (a node briefly away re-fetches what changed, not whole objects).
//
// SLICE_HASHES reply: a 16-byte header (version u32, flags u32, count u32,
// 0 u32, little-endian), then count SHA-1s of 20 bytes.
import { createHash } from 'node:crypto';
import { FARM_SLICE_SIZE, FARM_SHA1_SIZE } from './farm.js';

export const SLICES_HEADER_SIZE = 16;

export const sliceCount = (size: number): number => Math.ceil(size / FARM_SLICE_SIZE);

/** The reply's size for an object of size bytes. */
export const sliceHashesSize = (size: number): number => SLICES_HEADER_SIZE + FARM_SHA1_SIZE * sliceCount(size);

export function encodeSliceHashes(version: number, flags: number, hashes: Buffer[]): Buffer {
  const b = Buffer.alloc(SLICES_HEADER_SIZE + FARM_SHA1_SIZE * hashes.length);
  b.writeUInt32LE(version, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(hashes.length, 8);
  hashes.forEach((h, i) => h.copy(b, SLICES_HEADER_SIZE + FARM_SHA1_SIZE * i));
  return b;
}

export function decodeSliceHashes(b: Buffer): { version: number; flags: number; hashes: Buffer[] } {
  if (b.length < SLICES_HEADER_SIZE) throw new Error('short SLICE_HASHES reply');
  const n = b.readUInt32LE(8);
  if (b.length !== SLICES_HEADER_SIZE + FARM_SHA1_SIZE * n) throw new Error('SLICE_HASHES reply of the wrong length');
  const hashes: Buffer[] = [];
  for (let i = 0; i < n; i++) hashes.push(b.subarray(SLICES_HEADER_SIZE + FARM_SHA1_SIZE * i, SLICES_HEADER_SIZE + FARM_SHA1_SIZE * (i + 1)));
  return { version: b.readUInt32LE(0), flags: b.readUInt32LE(4), hashes };
}

/**
 * The SHA-1 of each slice of data (the last may be shorter). Hashing 4 MiB
 * takes milliseconds: the event loop gets a turn every few slices.
 */
export async function sliceHashesOf(data: Buffer, only?: (i: number) => boolean): Promise<(Buffer | undefined)[]> {
  const out: (Buffer | undefined)[] = [];
  const n = sliceCount(data.length);
  for (let i = 0; i < n; i++) {
    if (i && i % 8 === 0) await new Promise((r) => setImmediate(r));
    out.push(only && !only(i) ? undefined : createHash('sha1').update(data.subarray(i * FARM_SLICE_SIZE, (i + 1) * FARM_SLICE_SIZE)).digest());
  }
  return out;
}
