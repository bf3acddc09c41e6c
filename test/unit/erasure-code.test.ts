// The erasure code against upstream's own bytes (erasure-coding-and-md.md,
// A.6 and A.7): parity rows, worked stripes, and decoding from any D strips.
import { describe, it, expect } from 'vitest';
import { ecMatrix, ecSplit, ecJoin, ecEncode, ecDecode, gfMul, checkEcPolicy, EC_STRIPE } from '@sheepdog/common';

const hex = (b: Buffer | number[], n = 8) => [...b.slice(0, n)].map((x) => x.toString(16).padStart(2, '0')).join(' ');

describe('erasure code (upstream 1.0, bit-exact)', () => {
  it('GF(2^8) with 0x11D: the powers of 2 and 2·x', () => {
    const pw: number[] = [];
    for (let i = 0, x = 1; i < 16; i++, x = gfMul(x, 2)) pw.push(x);
    expect(hex(pw, 16)).toBe('01 02 04 08 10 20 40 80 1d 3a 74 e8 cd 87 13 26');
  });

  it('parity rows as the doc lists them', () => {
    const want: Record<number, string[]> = {
      2: ['03 02', '05 04', '09 08', '11 10'],
      4: ['77 40 38 0e', 'c7 a7 0d 6c', '53 02 6f 3f', 'f1 7b 83 08'],
      8: ['89 18 d0 7d 92 a4 f5 fe', '36 f8 d0 ce 25 19 fb 16', '5f cd a3 40 50 48 f6 9e', 'ed 91 24 90 dc 90 57 d2'],
      16: ['c5 3b 1f 2d 4f aa 83 c2 61 69 77 a6 e2 5f 37 3a', '7d 17 d7 13 60 a9 a8 9d cd a3 7d b4 ab 28 6d 1a', '40 24 3c 12 4b 62 06 d3 2e ae f1 c7 a8 4e b4 53'],
    };
    for (const [d, rows] of Object.entries(want)) {
      const e = ecMatrix(Number(d));
      for (let r = 0; r < Number(d); r++) expect(e[r].every((v, c) => v === (r === c ? 1 : 0))).toBe(true);
      rows.forEach((row, k) => expect(hex(e[Number(d) + k], Number(d)), `D=${d} k=${k}`).toBe(row));
    }
  });

  const stripe = (put: [number, string | number[]][]) => {
    const b = Buffer.alloc(EC_STRIPE);
    for (const [at, v] of put) (typeof v === 'string' ? Buffer.from(v) : Buffer.from(v)).copy(b, at);
    return b;
  };

  it('example 1: column 0 only', () => {
    const p21 = ecEncode(ecSplit(stripe([[0, [1]], [256, [2]]]), 2), 1);
    expect(p21[0][0]).toBe(0x07);
    const p42 = ecEncode(ecSplit(stripe([[0, [1]], [128, [2]], [256, [3]], [384, [4]]]), 4), 2);
    expect([p42[0][0], p42[1][0]]).toEqual([0x87, 0x2e]);
  });

  it('example 2: ASCII stripes', () => {
    const d2 = ecSplit(stripe([[0, 'ABCDEFGH'], [256, 'abcdefgh']]), 2);
    expect(hex(ecEncode(d2, 1)[0])).toBe('01 02 03 04 05 06 07 08');
    const d4 = ecSplit(stripe([[0, 'ABCDEFGH'], [128, 'abcdefgh'], [256, '01234567'], [384, 'IJKLMNOP']]), 4);
    const [p0, p1] = ecEncode(d4, 2);
    expect(hex(p0)).toBe('b3 c0 b1 26 b7 c4 b5 17');
    expect(hex(p1)).toBe('58 41 5a 73 5c 45 5e 99');
  });

  it('example 3: the cluster\'s strip files of byte k = k mod 251', () => {
    const obj = Buffer.alloc(4 << 20);
    for (let k = 0; k < obj.length; k++) obj[k] = k % 251;
    const s2 = ecSplit(obj, 2);
    expect(s2[0].length).toBe(2 << 20);
    expect(hex(s2[1])).toBe('05 06 07 08 09 0a 0b 0c');
    expect(hex(ecEncode(s2, 1)[0])).toBe('0a 0f 08 15 1e 1b 1c 11');
    const s4 = ecSplit(obj, 4);
    expect(s4.map((s) => hex(s))).toEqual(['00 01 02 03 04 05 06 07', '80 81 82 83 84 85 86 87', '05 06 07 08 09 0a 0b 0c', '85 86 87 88 89 8a 8b 8c']);
    const [p0, p1] = ecEncode(s4, 2);
    expect(hex(p0)).toBe('3a 57 38 20 93 fe 91 24');
    expect(hex(p1)).toBe('85 46 87 f2 ae 6d ac f6');
    expect(ecJoin(s4).equals(obj)).toBe(true);
  });

  it('decodes the object from any D of D+P strips', () => {
    const obj = Buffer.alloc(64 * 1024);
    for (let k = 0; k < obj.length; k++) obj[k] = (k * 131 + (k >> 9)) & 0xff;
    for (const [d, p] of [[2, 1], [2, 2], [4, 2], [8, 3], [16, 4]]) {
      const data = ecSplit(obj, d);
      const all = [...data, ...ecEncode(data, p)];
      // every way of losing p strips
      const lose = (from: number, left: number, gone: number[]): void => {
        if (left === 0) {
          const have = new Map(all.map((b, i) => [i, b] as [number, Buffer]).filter(([i]) => !gone.includes(i)));
          expect(ecJoin(ecDecode(d, have)).equals(obj), `${d}:${p} without ${gone}`).toBe(true);
          return;
        }
        for (let i = from; i < d + p; i++) lose(i + 1, left - 1, [...gone, i]);
      };
      if (d + p <= 10) lose(0, p, []);
      else lose(0, 1, []);
    }
    expect(() => ecDecode(4, new Map([[0, Buffer.alloc(8)], [5, Buffer.alloc(8)]]))).toThrow(/needs 4/);
  });

  it('refuses policies upstream refuses', () => {
    expect(() => checkEcPolicy(3, 1)).toThrow(/2, 4, 8 or 16/);
    expect(() => checkEcPolicy(4, 0)).toThrow(/1 to 15/);
    expect(() => checkEcPolicy(4, 16)).toThrow(/1 to 15/);
    expect(() => checkEcPolicy(16, 15)).not.toThrow();
  });
});

describe('copy_policy byte and -c values (A.1, A.2)', () => {
  it('encodes and decodes as upstream', async () => {
    const { ecPolicyByte, decodeEcPolicy, parseRedundancy, formatRedundancy } = await import('@sheepdog/common');
    expect([[2, 1], [2, 2], [4, 2], [8, 2], [8, 3], [16, 15]].map(([d, p]) => ecPolicyByte(d, p))).toEqual([0x11, 0x12, 0x22, 0x42, 0x43, 0x8f]);
    expect(decodeEcPolicy(0x22)).toEqual({ d: 4, p: 2 });
    expect(decodeEcPolicy(0)).toBeUndefined();
    expect(decodeEcPolicy(0x10)).toBeUndefined(); // P = 0: upstream's decoder panics
    expect(decodeEcPolicy(0x31)).toBeUndefined(); // D = 6
    expect(parseRedundancy('3')).toEqual({ copies: 3, copyPolicy: 0 });
    expect(parseRedundancy('4:2')).toEqual({ copies: 6, copyPolicy: 0x22 });
    for (const bad of ['0', '32', '3:1', '2:0', '2:16', '4:x', 'x', '', '40:1']) expect(parseRedundancy(bad)).toBeUndefined();
    expect(formatRedundancy(6, 0x22)).toBe('4:2');
    expect(formatRedundancy(3, 0)).toBe('3');
  });
});
