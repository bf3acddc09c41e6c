// collie's formatters fed with crafted decoded structures; expected text is
// copied from upstream dog's real output (docs/dog-transcript.txt).
process.env.TZ = 'UTC';
import { describe, it, expect } from 'vitest';
import { emptyInodeHeader, makeNode, InodeHeader, EpochLog, emptyStat, Res } from '@sheepdog/common';
import {
  vdiListLine, VDI_LIST_HEADER, nodeListText, nodeInfoLine, nodeInfoTotal, NODE_INFO_HEADER, clusterInfoText,
  recoveryLine, RECOVERY_HEADER, statText, vdiTreeText, vdiGraphEntry, objectMapLine, OBJECT_MAP_HEADER,
} from '../../collie/src/format.js';
import { strnumber, escapeName, ctime } from '../../collie/src/output.js';

const T0 = 1795464026; // 2026-11-23 20:00:26 UTC, as in the transcript
const ts = (sec: number) => BigInt(sec) << 32n;

function hdr(p: Partial<InodeHeader>): InodeHeader {
  return { ...emptyInodeHeader(), blockSizeShift: 22, nrCopies: 3, createTime: ts(T0), ...p };
}

describe('strnumber', () => {
  it('matches dog', () => {
    expect(strnumber(0n)).toBe('0.0 MB');
    expect(strnumber(64n << 20n)).toBe('64 MB');
    expect(strnumber(1n << 30n)).toBe('1.0 GB');
    expect(strnumber(5n << 40n)).toBe('5.0 TB');
    expect(strnumber(83839901696n)).toBe('78 GB');
    expect(strnumber(251519705088n)).toBe('234 GB');
    expect(strnumber(1n << 54n)).toBe('16 PB');
    expect(strnumber(12582912n)).toBe('12 MB');
    expect(strnumber(4194304n)).toBe('4.0 MB');
    expect(strnumber(12345n, true)).toBe('12345');
  });
  it('rounds like printf', () => {
    expect(strnumber(BigInt(Math.round(9.96 * 1048576)))).toBe('10.0 MB');
    expect(strnumber(BigInt(Math.round(1.25 * 1048576 * 1024)))).toBe('1.2 GB');
  });
});

describe('vdi list', () => {
  it('header', () => {
    expect(VDI_LIST_HEADER).toBe('  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n');
  });
  it('plain lines as in the transcript', () => {
    expect(vdiListLine({ vid: 0x15d167, header: hdr({ name: 'Alice', vdiSize: 1n << 30n }), mine: 3, cow: 0 }, false))
      .toBe('  Alice        0  1.0 GB   12 MB  0.0 MB 2026-11-23 20:00   15d167      3                22\n');
    expect(vdiListLine({ vid: 0xe5e944, header: hdr({ name: 'TwoCopies', vdiSize: 100n << 20n, nrCopies: 2 }), mine: 0, cow: 0 }, false))
      .toBe('  TwoCopies     0  100 MB  0.0 MB  0.0 MB 2026-11-23 20:00   e5e944      2                22\n');
    expect(vdiListLine({ vid: 0x630b80, header: hdr({ name: 'EC21', vdiSize: 100n << 20n, copyPolicy: 0x11 }), mine: 0, cow: 0 }, false))
      .toBe('  EC21         0  100 MB  0.0 MB  0.0 MB 2026-11-23 20:00   630b80    2:1                22\n');
    const snap = hdr({ name: 'Alice', vdiSize: 1n << 30n, snapCtime: ts(T0 + 4), snapId: 1, tag: 'snap1' });
    expect(vdiListLine({ vid: 0x15d167, header: snap, mine: 3, cow: 0 }, false))
      .toBe('s Alice        1  1.0 GB   12 MB  0.0 MB 2026-11-23 20:00   15d167      3         snap1  22\n');
    const clone = hdr({ name: 'Bob', vdiSize: 1n << 30n, snapId: 1, parentVdiId: 0x15d167, createTime: ts(T0 + 5) });
    expect(vdiListLine({ vid: 0x316b4, header: clone, mine: 0, cow: 3 }, false))
      .toBe('c Bob          0  1.0 GB  0.0 MB   12 MB 2026-11-23 20:00    316b4      3                22\n');
  });
  it('raw lines', () => {
    expect(vdiListLine({ vid: 0x15d167, header: hdr({ name: 'Alice', vdiSize: 1n << 30n }), mine: 0, cow: 0 }, true))
      .toBe('= Alice 0 1073741824 0 0 1795464026 15d167 3  22\n');
    const snap = hdr({ name: 'Alice', vdiSize: 1n << 30n, snapCtime: 1n, snapId: 1, tag: 'snap1' });
    expect(vdiListLine({ vid: 0x15d167, header: snap, mine: 3, cow: 0 }, true))
      .toBe('s Alice 1 1073741824 12582912 0 1795464026 15d167 3 snap1 22\n');
    expect(vdiListLine({ vid: 0x630b80, header: hdr({ name: 'EC21', vdiSize: 104857600n, copyPolicy: 0x11 }), mine: 0, cow: 0 }, true))
      .toBe('= EC21 0 104857600 0 0 1795464026 630b80 2:1  22\n');
  });
  it('escapes spaces and backslashes in raw names', () => {
    expect(escapeName('test with spaces')).toBe('test\\ with\\ spaces');
    expect(escapeName('a\\b')).toBe('a\\\\b');
    const line = vdiListLine({ vid: 3, header: hdr({ name: 'test with spaces', vdiSize: 10n }), mine: 0, cow: 0 }, true);
    expect(line.startsWith('= test\\ with\\ spaces 0 10 ')).toBe(true);
  });
});

describe('node list / info', () => {
  const nodes = [0, 1, 2].map((i) => makeNode('127.0.0.1', 7000 + i, { zone: i, space: 83839901696n }));
  it('node list', () => {
    expect(nodeListText(nodes, false)).toBe(
      '  Id   Host:Port         V-Nodes       Zone\n' +
      '   0   127.0.0.1:7000      \t128          0\n' +
      '   1   127.0.0.1:7001      \t128          1\n' +
      '   2   127.0.0.1:7002      \t128          2\n');
    expect(nodeListText(nodes, true)).toBe('0 127.0.0.1:7000 128 0\n1 127.0.0.1:7001 128 1\n2 127.0.0.1:7002 128 2\n');
  });
  it('zone is printed unsigned', () => {
    const n = makeNode('127.0.0.1', 7000); // default zone 0x0100007f
    expect(nodeListText([n], true)).toBe('0 127.0.0.1:7000 128 16777343\n');
  });
  it('node info', () => {
    const sp = { size: 83839901696n, free: 83839901696n - (64n << 20n) };
    let s = NODE_INFO_HEADER;
    for (let i = 0; i < 3; i++) s += nodeInfoLine(i, sp, false);
    s += nodeInfoTotal(3n * sp.size, 3n * sp.free, (5n << 40n) + (1n << 30n), false);
    expect(s).toBe(
      'Id\tSize\tUsed\tAvail\tUse%\n' +
      ' 0\t78 GB\t64 MB\t78 GB\t  0%\n' +
      ' 1\t78 GB\t64 MB\t78 GB\t  0%\n' +
      ' 2\t78 GB\t64 MB\t78 GB\t  0%\n' +
      'Total\t234 GB\t192 MB\t234 GB\t  0%\n\n' +
      'Total virtual image size\t5.0 TB\n');
  });
  it('node info raw', () => {
    const sp = { size: 83839901696n, free: 83839901696n };
    expect(nodeInfoLine(0, sp, true)).toBe('0 83839901696 0 83839901696 0%\n');
    expect(nodeInfoTotal(251519705088n, 251519705088n, 0n, true)).toBe('Total 251519705088 0 251519705088 0% 0\n');
    expect(nodeInfoLine(1, { size: 100n, free: 50n }, true)).toBe('1 100 50 50 50%\n');
  });
});

describe('cluster info', () => {
  const n3 = [0, 1, 2].map((i) => makeNode('127.0.0.1', 7000 + i, { zone: i }));
  const log = (epoch: number, time: number, nodes = n3): EpochLog => ({
    ctime: ts(1795464025), time: BigInt(time), epoch, disableRecovery: false, nrCopies: 3, copyPolicy: 0,
    flags: 0x4, drvName: 'plain', nodes,
  });
  it('running', () => {
    expect(clusterInfoText({ result: 0, resultText: 'Success', logs: [log(1, 1795464025)], verbose: false, raw: false })).toBe(
      'Cluster status: running, auto-recovery enabled\n\n' +
      'Cluster created at Mon Nov 23 20:00:25 2026\n\n' +
      'Epoch Time           Version [Host:Port:V-Nodes,,,]\n' +
      '2026-11-23 20:00:25      1 [127.0.0.1:7000:128, 127.0.0.1:7001:128, 127.0.0.1:7002:128]\n');
  });
  it('verbose', () => {
    expect(clusterInfoText({ result: 0, resultText: 'Success', logs: [log(1, 1795464025)], verbose: true, raw: false })).toBe(
      'Cluster status: running, auto-recovery enabled\n' +
      'Cluster store: plain with 3 redundancy policy\n' +
      'Cluster vnodes strategy: auto\n' +
      'Cluster vnode mode: node\n' +
      'Cluster created at Mon Nov 23 20:00:25 2026\n\n' +
      'Epoch Time           Version [Host:Port:V-Nodes,,,]\n' +
      '2026-11-23 20:00:25      1 [127.0.0.1:7000:128, 127.0.0.1:7001:128, 127.0.0.1:7002:128]\n');
  });
  it('raw', () => {
    expect(clusterInfoText({ result: 0, resultText: 'Success', logs: [log(1, 1795464025)], verbose: false, raw: true })).toBe(
      'running, auto-recovery enabled\n\n1795464025 1 [127.0.0.1:7000:128, 127.0.0.1:7001:128, 127.0.0.1:7002:128]\n');
  });
  it('not formatted', () => {
    expect(clusterInfoText({ result: Res.WAIT_FOR_FORMAT, resultText: 'Waiting for cluster to be formatted', logs: [], verbose: false, raw: false }))
      .toBe('Cluster status: Waiting for cluster to be formatted\n\n');
  });
  it('several epochs, newest first, and -d', () => {
    const logs = [log(2, 1795464056, n3.slice(0, 2)), log(1, 1795464025)];
    const s = clusterInfoText({ result: 0, resultText: '', logs, verbose: false, raw: false });
    expect(s.split('\n').slice(5, 7)).toEqual([
      '2026-11-23 20:00:56      2 [127.0.0.1:7000:128, 127.0.0.1:7001:128]',
      '2026-11-23 20:00:25      1 [127.0.0.1:7000:128, 127.0.0.1:7001:128, 127.0.0.1:7002:128]',
    ]);
    const d = clusterInfoText({ result: 0, resultText: '', logs, verbose: false, raw: false, diff: true });
    expect(d.split('\n').slice(5, 7)).toEqual(['2026-11-23 20:00:56      2 [-127.0.0.1:7002]', '2026-11-23 20:00:25      1 [formated]']);
  });
  it('ctime', () => {
    expect(ctime(1795464025)).toBe('Mon Nov 23 20:00:25 2026\n');
    expect(ctime(1794441600)).toBe('Thu Nov 12 00:00:00 2026\n');
  });
});

describe('node recovery / stat', () => {
  it('recovery line', () => {
    const n = makeNode('127.0.0.1', 7000, { zone: 0 });
    expect(RECOVERY_HEADER).toBe('Nodes In Recovery:\n  Id   Host:Port         V-Nodes       Zone       Progress\n');
    expect(recoveryLine(0, n, { inRecovery: true, state: 1, nrFinished: 241n, nrTotal: 1000n }, false))
      .toBe('   0   127.0.0.1:7000        128          0       24.1%\n');
    expect(recoveryLine(2, makeNode('127.0.0.1', 7003, { zone: 3, nrVnodes: 126 }), { inRecovery: true, state: 1, nrFinished: 279n, nrTotal: 1000n }, true))
      .toBe('2 127.0.0.1:7003 126 3 279 1000\n');
  });
  it('stat', () => {
    expect(statText(emptyStat(), false)).toBe(
      'Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD\n' +
      'Client\t0\t0\t0\t0\t0\t0\t0.0 MB\t0.0 MB\n' +
      'Peer\t0\t0\t0\t0\t0\t0\t0.0 MB\t0.0 MB\n');
    const s = { ...emptyStat(), gwTotal: 5n, gwWrite: 2n, gwRead: 3n, gwBytesIn: 4194304n, gwBytesOut: 1024n };
    expect(statText(s, true)).toBe('Client 0 5 2 3 0 0 4194304 1024\nPeer 0 0 0 0 0 0 0 0\n');
  });
});

describe('vdi tree', () => {
  it('transcript case', () => {
    const vdis = [
      { vid: 0x316b4, header: hdr({ name: 'Bob', parentVdiId: 0x15d167, snapId: 1 }) },
      { vid: 0x15d167, header: hdr({ name: 'Alice', snapCtime: 1n, snapId: 1 }) },
      { vid: 0x15d168, header: hdr({ name: 'Alice', snapCtime: 1n, snapId: 2, parentVdiId: 0x15d167 }) },
      { vid: 0x15d169, header: hdr({ name: 'Alice', snapId: 3, parentVdiId: 0x15d168 }) },
      { vid: 0x4a8a4d, header: hdr({ name: 'BigHyper' }) },
    ];
    expect(vdiTreeText(vdis)).toBe(
      'Bob---(you are here)\n' +
      'Alice---[2026-11-23 20:00]---[2026-11-23 20:00]---(you are here)\n' +
      'BigHyper---(you are here)\n');
  });
  it('branches', () => {
    const vdis = [
      { vid: 1, header: hdr({ name: 'A', snapCtime: 1n, snapId: 1 }) },
      { vid: 2, header: hdr({ name: 'A', snapCtime: 1n, snapId: 2, parentVdiId: 1 }) },
      { vid: 3, header: hdr({ name: 'A', snapId: 3, parentVdiId: 1 }) },
    ];
    expect(vdiTreeText(vdis)).toBe(
      'A---[2026-11-23 20:00]-+-[2026-11-23 20:00]\n' +
      '                       `-(you are here)\n');
  });
  it('highlights working VDIs on a terminal', () => {
    const s = vdiTreeText([{ vid: 1, header: hdr({ name: 'A' }) }], true);
    expect(s).toBe('A---\x1b[1m(you are here)\x1b[0m\n');
  });
});

describe('vdi graph and object map', () => {
  it('graph entries', () => {
    expect(vdiGraphEntry(0x316b4, hdr({ name: 'Bob', vdiSize: 1n << 30n, parentVdiId: 0x15d167, createTime: ts(1795464031) }))).toBe(
      '  "15d167" -> "316b4";\n  "316b4" [\n    group = "Bob",\n' +
      '    label = "Name:        Bob\\nTag:           0\\nSize:     1.0 GB\\nDate: 2026-11-23\\nTime:   20:00:31",\n' +
      '    color="red"\n  ];\n\n');
    expect(vdiGraphEntry(0x15d167, hdr({ name: 'Alice', vdiSize: 1n << 30n, snapCtime: 1n, snapId: 1 }))).toBe(
      '  "0" -> "15d167";\n  "15d167" [\n    group = "Alice",\n' +
      '    label = "Name:      Alice\\nTag:           1\\nSize:     1.0 GB\\nDate: 2026-11-23\\nTime:   20:00:26"\n  ];\n\n');
    expect(vdiGraphEntry(0xe5e944, hdr({ name: 'TwoCopies', vdiSize: 100n << 20n }))).toContain('label = "Name:  TwoCopies\\n');
  });
  it('object map', () => {
    expect(OBJECT_MAP_HEADER + objectMapLine(0, 0x15d167) + objectMapLine(25, 0x15d167))
      .toBe('Index       VID\n00000000   15d167\n00000025   15d167\n');
  });
});

import { printfFixed } from '../../collie/src/output.js';
describe('printfFixed', () => {
  it('rounds ties to even on the exact binary value', () => {
    expect(printfFixed(1.25, 1)).toBe('1.2');
    expect(printfFixed(1.35, 1)).toBe('1.4'); // 1.35 is slightly above in binary
    expect(printfFixed(0.5, 0)).toBe('0');
    expect(printfFixed(1.5, 0)).toBe('2');
    expect(printfFixed(9.96, 1)).toBe('10.0');
    expect(printfFixed(233.5, 0)).toBe('234');
    expect(printfFixed(24.1, 1)).toBe('24.1');
  });
});
