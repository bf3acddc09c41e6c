// The vdi backup stream codec and dog's sector comparison (farm-and-backup.md B.2, B.3).
import { describe, it, expect } from 'vitest';
import {
  encodeBackupHeader, decodeBackupHeader, isValidBackupHeader, encodeBackupRecord, decodeBackupRecord, backupEndMarker,
  backupDiffSpan,
} from '@sheepdog/common';

describe('backup stream', () => {
  it('header, record and end marker bytes', () => {
    expect(encodeBackupHeader().toString('hex')).toBe('0100000092119211');
    expect(isValidBackupHeader(decodeBackupHeader(Buffer.from('0100000092119211', 'hex')))).toBe(true);
    expect(isValidBackupHeader(decodeBackupHeader(Buffer.from('9211921101000000', 'hex')))).toBe(false);
    expect(isValidBackupHeader(decodeBackupHeader(Buffer.from('0200000092119211', 'hex')))).toBe(false);
    const r = { idx: 2, offset: 0x1000, length: 0x200, reserved: 0xdeadbeef };
    expect(encodeBackupRecord(r).toString('hex')).toBe('02000000' + '00100000' + '00020000' + 'efbeadde');
    expect(decodeBackupRecord(encodeBackupRecord(r))).toEqual(r);
    expect(backupEndMarker().toString('hex')).toBe('ffffffff' + '00'.repeat(12));
    expect(() => decodeBackupRecord(Buffer.alloc(15))).toThrow(RangeError);
  });

  it('the span runs from the first to the last differing 512-byte sector', () => {
    const size = 8192;
    const a = Buffer.alloc(size, 7);
    expect(backupDiffSpan(a, Buffer.from(a))).toBeUndefined();
    const b = Buffer.from(a);
    b[4096] = 1;
    expect(backupDiffSpan(a, b)).toEqual({ offset: 4096, length: 512 });
    b[600] = 1; // sector 1; equal sectors in between stay in the span
    expect(backupDiffSpan(a, b)).toEqual({ offset: 512, length: 4096 });
    b[size - 1] = 1;
    expect(backupDiffSpan(a, b)).toEqual({ offset: 512, length: size - 512 });
    b[0] = 1;
    expect(backupDiffSpan(a, b)).toEqual({ offset: 0, length: size });
  });

  it('an object that is not a whole number of sectors ends the span at its end', () => {
    const a = Buffer.alloc(1000);
    const b = Buffer.alloc(1000);
    b[999] = 1;
    expect(backupDiffSpan(a, b)).toEqual({ offset: 512, length: 488 });
    b[10] = 1;
    expect(backupDiffSpan(a, b)).toEqual({ offset: 0, length: 1000 });
  });
});
