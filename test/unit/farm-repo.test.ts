// The codecs of dog's cluster snapshot repository against the byte offsets
// and vectors of farm-and-backup.md A.4-A.6 and A.12.
import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import {
  encodeFarmLogHeader, encodeFarmLogRecord, decodeFarmLogRecord, parseFarmLog, encodeFarmTrunk, decodeFarmTrunk,
  decodeFarmSliceIndex, findFarmRecord, farmTagStartsWithNumber, FARM_LOG_RECORD_SIZE, FarmError, FARM_SLICE_SIZE,
} from '@sheepdog/common';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const TRUNK_S1 = hex('46f155c5fad2e1b2b80e1d7d7138a4a14b3f78ae');

describe('farm repository codecs', () => {
  it('user_snap header: magic, version 1, copies, policy, shift, zeros (A.4, A.12)', () => {
    const h = encodeFarmLogHeader({ copies: 2, copyPolicy: 0, blockSizeShift: 22 });
    expect(h.length).toBe(32);
    expect(h.subarray(0, 16)).toEqual(hex('01 c0 e1 fe 01 00 00 00 02 00 16 00 00 00 00 00'));
    expect(h.subarray(16).every((b) => b === 0)).toBe(true);
  });

  it('a 296-byte record: idx @0, NUL-padded tag @4, padding @260, time @264, trunk SHA-1 @272, padding @292', () => {
    const r = encodeFarmLogRecord({ idx: 1, tag: 's1', time: 0x6b15d1b0n, trunk: TRUNK_S1 });
    expect(r.length).toBe(FARM_LOG_RECORD_SIZE);
    expect(r.subarray(0, 8)).toEqual(hex('01 00 00 00 73 31 00 00'));
    // the doc's dump at absolute offsets 288.. = record offsets 256..
    expect(r.subarray(256, 272)).toEqual(hex('00 00 00 00 00 00 00 00 b0 d1 15 6b 00 00 00 00'));
    expect(r.subarray(272, 292)).toEqual(TRUNK_S1);
    expect(r.subarray(292)).toEqual(Buffer.alloc(4));
    expect(decodeFarmLogRecord(r)).toEqual({ idx: 1, tag: 's1', time: 0x6b15d1b0n, trunk: TRUNK_S1 });
    // a tag is kept to 255 bytes and a NUL
    const long = encodeFarmLogRecord({ idx: 2, tag: 'x'.repeat(400), time: 0n, trunk: TRUNK_S1 });
    expect(long[4 + 254]).toBe(0x78);
    expect(long[4 + 255]).toBe(0);
  });

  it('parsing a log: empty, short header, wrong magic, records, a trailing partial record ignored', () => {
    expect(parseFarmLog(Buffer.alloc(0))).toEqual({ records: [] });
    expect(() => parseFarmLog(Buffer.alloc(10))).toThrow(/failed to read log header/);
    expect(() => parseFarmLog(Buffer.alloc(32))).toThrow(FarmError);
    expect(() => parseFarmLog(Buffer.alloc(32))).toThrow('magic number mismatch');
    const h = encodeFarmLogHeader({ copies: 3, copyPolicy: 0, blockSizeShift: 22 });
    const r1 = encodeFarmLogRecord({ idx: 1, tag: 's1', time: 1n, trunk: TRUNK_S1 });
    const r2 = encodeFarmLogRecord({ idx: 2, tag: 's2', time: 2n, trunk: TRUNK_S1 });
    const log = parseFarmLog(Buffer.concat([h, r1, r2, Buffer.alloc(100)]));
    expect(log.header).toEqual({ magic: 0xfee1c001, version: 1, copies: 3, copyPolicy: 0, blockSizeShift: 22 });
    expect(log.records.map((r) => r.tag)).toEqual(['s1', 's2']);
  });

  it('TAG|IDX as strtol parses it; tags a save refuses', () => {
    const recs = [1, 2, 3].map((idx) => ({ idx, tag: `t${idx}`, time: 0n, trunk: TRUNK_S1 }));
    expect(findFarmRecord(recs, '2')?.idx).toBe(2);
    expect(findFarmRecord(recs, '2abc')?.idx).toBe(2);
    expect(findFarmRecord(recs, 't3')?.idx).toBe(3);
    expect(findFarmRecord(recs, 'nosuch')).toBeUndefined();
    expect(findFarmRecord(recs, '0')).toBeUndefined();
    for (const t of ['9x', '-1a', ' 7', '+3', '0']) expect(farmTagStartsWithNumber(t)).toBe(true);
    for (const t of ['a1', 'x9', '-a', '']) expect(farmTagStartsWithNumber(t)).toBe(false);
  });

  it('trunk entries: oid, copies, policy, shift, reserved, slice index SHA-1 (A.5, A.12)', () => {
    const sha = hex('d564bfde' + '00'.repeat(16));
    const t = encodeFarmTrunk([{ oid: 0x004620a700000000n, copies: 2, copyPolicy: 0, blockSizeShift: 22, sha1: sha }]);
    expect(t.subarray(0, 16)).toEqual(hex('00 00 00 00 a7 20 46 00 02 00 16 00 d5 64 bf de'));
    expect(decodeFarmTrunk(t)).toEqual([{ oid: 0x004620a700000000n, copies: 2, copyPolicy: 0, blockSizeShift: 22, sha1: sha }]);
    expect(() => decodeFarmTrunk(Buffer.alloc(33))).toThrow(FarmError);
    expect(() => decodeFarmSliceIndex(Buffer.alloc(21))).toThrow(FarmError);
    expect(decodeFarmSliceIndex(Buffer.alloc(40)).length).toBe(2);
  });

  it('the zero slice has the doc\'s SHA-1', () => {
    expect(createHash('sha1').update(Buffer.alloc(FARM_SLICE_SIZE)).digest('hex')).toBe('67dfd19f3eb3649d6f3f6631e44d0bd36b8d8d19');
  });
});
