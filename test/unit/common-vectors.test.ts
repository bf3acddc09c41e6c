import { describe, it, expect } from 'vitest';
import {
  fnv1a, fold64, FNV1A_64_INIT, hash24, sdHashOid, sdHash, mix, nodeHash, VnodeRing, makeNode, encodeAddr, defaultZone, autoVnodes,
  attrHash, encodeAttr, vidToVdiOid, vidToDataOid, vidToVmstateOid, vidToAttrOid, oidToVid, dataOidToIdx,
  encodeRequest, encodeResponse, decodeRequest, Op, Flag, SD_INODE_SIZE, SD_INODE_QEMU_SIZE, SD_CLUSTER_INFO_SIZE,
  Inode, encodeInodeHeader, decodeInodeHeader, emptyInodeHeader, encodeNode, decodeNode, addrToString,
  nodeVnodeHashes, encodeClusterInfo, decodeClusterInfo, sizeToStr, parseSize, fnv1a as f,
} from '../../common/src/index.js';

const hex = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(' ');
function dump(s: string): Buffer {
  return Buffer.from(
    s.trim().split('\n').map((l) => l.split(':')[1].trim()).join(' ').split(/\s+/).map((x) => parseInt(x, 16)),
  );
}

describe('§17.1 FNV-1a and VDI ids', () => {
  const cases: [string, bigint, number][] = [
    ['Alice', 0x123909cb9f15d167n, 0x15d167],
    ['test', 0xf9e6e6ef197c2b25n, 0x7c2b25],
    ['sheepdog', 0x13bf55c45f3807ben, 0x3807be],
    ['a', 0xaf63dc4c8601ec8cn, 0x01ec8c],
    ['', 0xcbf29ce484222325n, 0x222325],
  ];
  for (const [name, h, id] of cases) {
    it(`"${name}"`, () => {
      expect(fnv1a(Buffer.from(name))).toBe(h);
      expect(hash24(name)).toBe(id);
    });
  }
});

describe('§17.2 object hashes', () => {
  const cases: [bigint, bigint][] = [
    [0x8015d16700000000n, 0xeb15ee8024d334a7n],
    [0x0015d16700000003n, 0xa68f51a8f3ccac80n],
    [0x807c2b2500000000n, 0x8b4b18c243befa1an],
    [0x007c2b2500000000n, 0x387358f0fb5c1275n],
    [0x007c2b2500000001n, 0xed0c37b076d586acn],
  ];
  for (const [oid, h] of cases) it(oid.toString(16), () => expect(sdHashOid(oid)).toBe(h));
  it('the fast placement hash equals the BigInt definition mix(fold64(oid)) for any oid', () => {
    const edge = [0n, 1n, 0xffffffffn, 0x100000000n, 0xffffffffffffffffn, 0x8000000000000000n];
    const rnd = Array.from({ length: 5000 }, () => (BigInt(Math.floor(Math.random() * 2 ** 32)) << 32n) | BigInt(Math.floor(Math.random() * 2 ** 32)));
    for (const oid of [...edge, ...rnd]) expect(sdHashOid(oid)).toBe(mix(fold64(oid, FNV1A_64_INIT)));
  });
});

describe('§17.3 node hash and vnodes', () => {
  const n = makeNode('127.0.0.1', 7000);
  it('hashed bytes and h0', () => {
    const b = Buffer.alloc(18);
    n.addr.copy(b);
    b.writeUInt16LE(7000, 16);
    expect(hex(b)).toBe('00 00 00 00 00 00 00 00 00 00 00 00 7f 00 00 01 58 1b');
    expect(sdHash(b)).toBe(0x9cb3d6dd0a4c0f9fn);
    expect(nodeHash(n)).toBe(0x9cb3d6dd0a4c0f9fn);
  });
  it('vnode positions', () => {
    const v = nodeVnodeHashes(n);
    expect(v.slice(0, 3)).toEqual([0x3af2cba6e538cdf3n, 0xfd38432fd111924bn, 0x2ad2bef8f506e35dn]);
    expect(mix(0x9cb3d6dd0a4c0f9fn)).toBe(0x3af2cba6e538cdf3n);
  });
  it('default zones', () => {
    expect(defaultZone(encodeAddr('127.0.0.1'))).toBe(0x0100007f);
    expect(defaultZone(encodeAddr('192.168.1.10'))).toBe(0x0a01a8c0);
  });
  it('legacy collie node id', () => {
    const b = Buffer.alloc(18);
    b.writeUInt16LE(7000, 0);
    for (let i = 0; i < 16; i++) b[2 + i] = n.addr[15 - i];
    expect(f(b)).toBe(0x52b76e70de45e6c8n);
  });
});

describe('§17.4 placement', () => {
  const nodes = [7000, 7001, 7002].map((p, i) => makeNode('127.0.0.1', p, { zone: i }));
  const ring = new VnodeRing(nodes);
  const cases: [bigint, number, [number, bigint][]][] = [
    [0x8015d16700000000n, 3, [[7000, 0xeb7b5a8253b0447cn], [7001, 0xebbdf6db43b5ccb2n], [7002, 0xf1525dea0ac226a1n]]],
    [0x807c2b2500000000n, 2, [[7002, 0x8b4f7298ed0b6215n], [7001, 0x8c5945e25d996d69n]]],
    [0x007c2b2500000000n, 2, [[7001, 0x391b7dbc5efab3e6n], [7000, 0x3a92371473646581n]]],
    [0x007c2b2500000001n, 2, [[7000, 0xed3ea822648ab071n], [7001, 0xee060d1648c2b062n]]],
  ];
  for (const [oid, copies, want] of cases) {
    it(oid.toString(16), () => {
      const got = ring.placeWithPositions(sdHashOid(oid), copies).map((v) => [v.node.port, v.hash]);
      expect(got).toEqual(want);
    });
  }
  it('caps copies at the number of zones', () => {
    const same = [7000, 7001].map((p) => makeNode('127.0.0.1', p, { zone: 5 }));
    expect(new VnodeRing(same).placeOid(1n, 3)).toHaveLength(1);
  });
});

describe('§17.5 auto vnodes', () => {
  it('capacities 100/200/0/150 GiB', () => {
    const G = 1n << 30n;
    const nodes = [100n, 200n, 0n, 150n].map((s, i) => makeNode('127.0.0.1', 7000 + i, { space: s * G }));
    expect(autoVnodes(nodes).map((n) => n.nrVnodes)).toEqual([85, 171, 0, 128]);
  });
});

describe('§17.6 attribute slot', () => {
  it('Alice/mykey', () => {
    const rec = encodeAttr({ name: 'Alice', tag: '', ctime: 0n, snapId: 0, key: 'mykey', value: Buffer.from('v') });
    const slot = attrHash(rec);
    expect(slot).toBe(0x0c71e8e6);
    expect(vidToAttrOid(hash24('Alice'), slot)).toBe(0x2015d1670c71e8e6n);
  });
});

describe('§7 object ids', () => {
  it('helpers', () => {
    expect(vidToVdiOid(0x15d167)).toBe(0x8015d16700000000n);
    expect(vidToDataOid(0x15d167, 3)).toBe(0x0015d16700000003n);
    expect(vidToVmstateOid(0x15d167, 0)).toBe(0x4015d16700000000n);
    expect(oidToVid(0x8015d16700000000n)).toBe(0x15d167);
    expect(dataOidToIdx(0x0015d16700000003n)).toBe(3);
  });
});

describe('§17.7 header dumps', () => {
  it('A: dog GET_VDI_INFO', () => {
    const h = encodeRequest({ opcode: Op.GET_VDI_INFO, flags: Flag.CMD_WRITE, dataLength: 512, vdi: {} });
    expect(h).toEqual(dump(`
00: 02 14 01 00 00 00 00 00 00 00 00 00 00 02 00 00
16: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
32: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00`));
  });
  it('B: its reply', () => {
    const h = encodeResponse({ opcode: Op.GET_VDI_INFO, epoch: 1, result: 0, vdi: { vdiId: 0x15d167, copies: 3, blockSizeShift: 22 } });
    expect(h).toEqual(dump(`
00: 00 14 00 00 01 00 00 00 00 00 00 00 00 00 00 00
16: 00 00 00 00 00 00 00 00 67 d1 15 00 00 00 00 00
32: 03 16 00 00 00 00 00 00 00 00 00 00 00 00 00 00`));
  });
  it('C: QEMU LOCK_VDI Alice:1', () => {
    const h = encodeRequest({ protoVer: 1, opcode: Op.LOCK_VDI, flags: 1, dataLength: 512, vdi: { snapid: 1 } });
    expect(h).toEqual(dump(`
00: 01 12 01 00 00 00 00 00 00 00 00 00 00 02 00 00
16: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
32: 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00`));
  });
  it('D: QEMU NEW_VDI clone', () => {
    const h = encodeRequest({ protoVer: 0, opcode: Op.NEW_VDI, flags: 1, dataLength: 256, vdi: { vdiSize: 10n << 30n, baseVdiId: 0x15d167, blockSizeShift: 22 } });
    expect(h).toEqual(dump(`
00: 00 11 01 00 00 00 00 00 00 00 00 00 00 01 00 00
16: 00 00 00 80 02 00 00 00 67 d1 15 00 00 00 00 16
32: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00`));
    const r = decodeRequest(h).vdi;
    expect(r.vdiSize).toBe(10n << 30n);
    expect(r.baseVdiId).toBe(0x15d167);
    expect(r.blockSizeShift).toBe(22);
  });
  it('E: QEMU READ_OBJ', () => {
    const h = encodeRequest({ protoVer: 0, opcode: Op.READ_OBJ, flags: Flag.CMD_CACHE, id: 7, dataLength: 65536, obj: { oid: 0x0015d16700000003n, offset: 0x1000, copies: 3 } });
    expect(h).toEqual(dump(`
00: 00 02 04 00 00 00 00 00 07 00 00 00 00 00 01 00
16: 03 00 00 00 67 d1 15 00 00 00 00 00 00 00 00 00
32: 03 00 00 00 00 00 00 00 00 10 00 00 00 00 00 00`));
    const o = decodeRequest(h).obj;
    expect(o.oid).toBe(0x0015d16700000003n);
    expect(o.offset).toBe(0x1000);
  });
  it('F: its reply', () => {
    const h = encodeResponse({ opcode: Op.READ_OBJ, epoch: 1, id: 7, dataLength: 65536, result: 0 });
    expect(h).toEqual(dump(`
00: 00 02 00 00 01 00 00 00 07 00 00 00 00 00 01 00
16: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
32: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00`));
  });
  it('G: COW create', () => {
    const h = encodeRequest({ protoVer: 0, opcode: Op.CREATE_AND_WRITE_OBJ, flags: 7, id: 8, dataLength: 4096, obj: { oid: 0x0015d16800000003n, cowOid: 0x0015d16700000003n, copies: 3, offset: 0x2000 } });
    expect(h).toEqual(dump(`
00: 00 01 07 00 00 00 00 00 08 00 00 00 00 10 00 00
16: 03 00 00 00 68 d1 15 00 03 00 00 00 67 d1 15 00
32: 03 00 00 00 00 00 00 00 00 20 00 00 00 00 00 00`));
  });
  it('H: index update', () => {
    const h = encodeRequest({ protoVer: 0, opcode: Op.WRITE_OBJ, flags: 5, id: 9, dataLength: 4, obj: { oid: vidToVdiOid(0x15d168), copies: 3, offset: 4676 } });
    expect(h).toEqual(dump(`
00: 00 03 05 00 00 00 00 00 09 00 00 00 04 00 00 00
16: 00 00 00 00 68 d1 15 80 00 00 00 00 00 00 00 00
32: 03 00 00 00 00 00 00 00 44 12 00 00 00 00 00 00`));
  });
  it('I: STAT_CLUSTER probe', () => {
    const h = encodeRequest({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: {} });
    expect(h).toEqual(dump(`
00: 0a 87 00 00 00 00 00 00 00 00 00 00 30 00 00 00
16: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
32: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00`));
  });
});

describe('structure codecs', () => {
  it('inode sizes and header round trip', () => {
    expect(SD_INODE_SIZE).toBe(12587576);
    expect(SD_INODE_QEMU_SIZE).toBe(4198968);
    const h = { ...emptyInodeHeader(), name: 'Alice', tag: 'snap1', vdiSize: 1n << 30n, nrCopies: 3, blockSizeShift: 22, snapId: 1, vdiId: 0x15d167, createTime: 5n << 32n };
    const b = encodeInodeHeader(h);
    expect(b.length).toBe(4664);
    expect(b.readUInt32LE(560)).toBe(0x15d167);
    expect(b[554]).toBe(3);
    expect(b[555]).toBe(22);
    expect(b.readBigUInt64LE(536)).toBe(1n << 30n);
    expect(decodeInodeHeader(b)).toEqual(h);
    const ino = new Inode(h);
    ino.dataVdiId[3] = 0x15d167;
    ino.grefCount[3] = 2;
    const full = ino.encode();
    expect(full.length).toBe(SD_INODE_SIZE);
    expect(full.readUInt32LE(4664 + 12)).toBe(0x15d167);
    expect(full.readInt32LE(4198968 + 8 * 3 + 4)).toBe(2);
    const back = Inode.decode(full);
    expect(back.dataVdiId[3]).toBe(0x15d167);
    expect(back.grefCount[3]).toBe(2);
    expect(back.nrObjects).toBe(256);
  });
  it('sd_node round trip and address text', () => {
    const n = makeNode('127.0.0.1', 7001, { zone: 1, space: 1234n });
    const b = encodeNode(n);
    expect(b.length).toBe(80);
    expect(hex(b.subarray(24, 42))).toBe('00 00 00 00 00 00 00 00 00 00 00 00 7f 00 00 01 59 1b');
    expect(b.readUInt16LE(64)).toBe(128);
    const d = decodeNode(b);
    expect(addrToString(d.addr)).toBe('127.0.0.1');
    expect(d.port).toBe(7001);
    expect(d.zone).toBe(1);
    expect(d.space).toBe(1234n);
    expect(addrToString(encodeAddr('::1'))).toBe('::1');
    expect(addrToString(encodeAddr('fe80::1:2'))).toBe('fe80::1:2');
  });
  it('cluster_info layout', () => {
    const n = makeNode('127.0.0.1', 7000);
    const b = encodeClusterInfo({ protoVer: 0x0a, disableRecovery: false, epoch: 1, ctime: 7n, flags: 4, nrCopies: 3, copyPolicy: 0, status: 1, blockSizeShift: 22, defaultStore: 'plain', nodes: [n] });
    expect(b.length).toBe(SD_CLUSTER_INFO_SIZE);
    expect(b[0]).toBe(0x0a);
    expect(b.readInt16LE(2)).toBe(1);
    expect(b.toString('utf8', 25, 30)).toBe('plain');
    const d = decodeClusterInfo(b);
    expect(d.nodes[0].port).toBe(7000);
    expect(d.blockSizeShift).toBe(22);
  });
  it('size strings', () => {
    expect(sizeToStr(0)).toBe('0.0 MB');
    expect(sizeToStr(4n << 20n)).toBe('4.0 MB');
    expect(sizeToStr(1n << 30n)).toBe('1.0 GB');
    expect(sizeToStr(64n << 20n)).toBe('64 MB');
    expect(sizeToStr(100n << 20n)).toBe('100 MB');
    expect(sizeToStr(5n << 40n)).toBe('5.0 TB');
    expect(sizeToStr(83839901696n)).toBe('78 GB');
    expect(sizeToStr(251519705088n)).toBe('234 GB');
    expect(parseSize('1G')).toBe(1n << 30n);
    expect(parseSize('1024k')).toBe(1n << 20n);
    expect(() => parseSize('12X')).toThrow();
  });
});

describe('inode index and grefs by typed-array copies', () => {
  it('decode reads every entry as readUInt32LE / readInt32LE would, from aligned, unaligned and partial buffers; encode gives the bytes back', async () => {
    const { randomBytes } = await import('node:crypto');
    const { SD_INODE_HEADER_SIZE, SD_INODE_GREF_OFFSET, MAX_DATA_OBJS } = await import('../../common/src/index.js');
    const whole = randomBytes(SD_INODE_SIZE + 1);
    for (const b of [whole.subarray(0, SD_INODE_SIZE), whole.subarray(1), whole.subarray(1, SD_INODE_QEMU_SIZE + 1), whole.subarray(0, SD_INODE_GREF_OFFSET + 8 * 10 + 5)]) {
      const ino = Inode.decode(b);
      const n = Math.min(MAX_DATA_OBJS, (Math.min(b.length, SD_INODE_QEMU_SIZE) - SD_INODE_HEADER_SIZE) >> 2);
      const g = Math.max(0, (b.length - SD_INODE_GREF_OFFSET) >> 3);
      for (let i = 0; i < MAX_DATA_OBJS; i += 997) {
        expect(ino.dataVdiId[i]).toBe(i < n ? b.readUInt32LE(SD_INODE_HEADER_SIZE + 4 * i) : 0);
        expect(ino.grefGeneration[i]).toBe(i < g ? b.readInt32LE(SD_INODE_GREF_OFFSET + 8 * i) : 0);
        expect(ino.grefCount[i]).toBe(i < g ? b.readInt32LE(SD_INODE_GREF_OFFSET + 8 * i + 4) : 0);
      }
      if (b.length === SD_INODE_SIZE) expect(ino.encode().subarray(SD_INODE_HEADER_SIZE).equals(b.subarray(SD_INODE_HEADER_SIZE))).toBe(true);
    }
    // the grefs of some entries, read apart (the reclaimer reads only those in use)
    const ino = new Inode();
    const part = whole.subarray(SD_INODE_GREF_OFFSET + 1, SD_INODE_GREF_OFFSET + 1 + 8 * 5);
    ino.decodeGrefs(part, 7);
    expect([...ino.grefGeneration.subarray(6, 13)]).toEqual([0, ...[0, 1, 2, 3, 4].map((i) => part.readInt32LE(8 * i)), 0]);
    expect([...ino.grefCount.subarray(6, 13)]).toEqual([0, ...[0, 1, 2, 3, 4].map((i) => part.readInt32LE(8 * i + 4)), 0]);
    // and index entries
    ino.decodeIndex(part, MAX_DATA_OBJS - 3);
    expect([...ino.dataVdiId.subarray(MAX_DATA_OBJS - 4)]).toEqual([0, ...[0, 1, 2].map((i) => part.readUInt32LE(4 * i))]);
    ino.decodeIndex(part.subarray(0, 8), 10);
    expect([...ino.dataVdiId.subarray(9, 13)]).toEqual([0, part.readUInt32LE(0), part.readUInt32LE(4), 0]);
  });
});
