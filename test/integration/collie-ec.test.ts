// collie's erasure coding (-c D:P) against three real sheep in three zones:
// the texts and exit statuses of upstream dog 1.0 (erasure-coding-and-md.md
// A.1, A.2, A.5, A.12, A.13), and what the cluster records. Object I/O on EC
// VDIs is the server data path's business and is not exercised here.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import {
  Op, Flag, Res, hash24, vidToVdiOid, vidToDataOid, SD_INODE_HEADER_SIZE, decodeVdiStates, encodeFixedString, SD_CLUSTER_INFO_SIZE,
  ecSplit, ecEncode,
} from '@sheepdog/common';
import { randomBytes } from 'node:crypto';
import { startCluster, stopAll, freePort, ClusterHandle, runCollie, RunResult } from '../helpers/cluster.js';
import { dog as runDog, expectDog, re } from '../helpers/dog10.js';
import { Wire } from '../helpers/wire.js';
import { run as runInProcess } from '../../collie/src/main.js';
import { BufferSink } from '../../collie/src/output.js';

let c: ClusterHandle;
let w: Wire;
const port = () => c.nodes[0].port;
/** The members as dog lists them: by address, then port. */
const ports = () => c.nodes.map((n) => n.port).sort((a, b) => a - b);
const dog = (args: string[], input?: string) => runDog(args, { port: port(), input });
const collie = (args: string[], input?: string) => runCollie(args, { port: port(), input });

/** collie in this process (no stdin: never for commands that ask), for the long loops over -c values. */
async function inProcess(args: string[], prog: 'dog' | 'collie' = 'dog', p = port()): Promise<RunResult> {
  const sink = new BufferSink();
  const code = await runInProcess([...args, '-p', String(p)], { prog, sink, env: {} });
  return { code, stdout: sink.stdout, stderr: sink.stderr, stdoutBuf: Buffer.from(sink.stdout) };
}

const INVALID = (v: string) =>
  `Invalid parameter ${v}\nTo create replicated vdi, set -c x\n  x(1 to 31)   - number of replicated copies\n` +
  'To create erasure coded vdi, set -c x:y\n  x(2,4,8,16)  - number of data strips\n  y(1 to 15)   - number of parity strips\n';
const PROMPT = (n: number) => `Number of copies (${n}) is larger than number of zones (3).\nAre you sure you want to continue? [yes/no]: `;
const UNFORMATTED = { code: 0, stdout: 'Cluster status: Waiting for cluster to be formatted\n\n' };
const FORMATTED = 'using backend plain store\n';

/** Every -c value dog accepts, with the copy_policy byte and nr_copies it must give (A.1, A.2). */
const ACCEPTED: { v: string; copies: number; policy: number }[] = [
  ...Array.from({ length: 31 }, (_, i) => ({ v: String(i + 1), copies: i + 1, policy: 0 })),
  ...[2, 4, 8, 16].flatMap((d) => Array.from({ length: 15 }, (_, k) => ({ v: `${d}:${k + 1}`, copies: d + k + 1, policy: (d / 2) * 16 + k + 1 }))),
];
const REJECTED = [
  '0', '00', '32', '99', '3:1', '1:1', '6:2', '17:1', '32:1', '64:1', '2:0', '2:16', '16:16', '4:x', 'x', 'x:1', '2:1x', '2x:1',
  ':', '::', '+3', ' 3', '3 ', '0x3', '3.0', '2:1.0', '-1', '2:-1', '99999999999999999999', '2:00000000000000000016',
];

// ---- an independent model of upstream's placement (A.5) -----------------
const M64 = (1n << 64n) - 1n;
function fnv(buf: Buffer, h: bigint): bigint {
  for (const b of buf) h = ((h ^ BigInt(b)) * 0x100000001b3n) & M64;
  return h;
}
const le64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
};
const sdHashNext = (h: bigint) => fnv(le64(h), h);
const sdHash = (buf: Buffer) => sdHashNext(fnv(buf, 0xcbf29ce484222325n));

/** The strip holders of oid, in strip-index order: ring walk over distinct zones, nr = min(D+P, zones). */
function stripHolders(nodes: { ip: string; port: number; vnodes: number; zone: number }[], oid: bigint, copies: number): string[] {
  const points: { h: bigint; n: number }[] = [];
  nodes.forEach((n, i) => {
    const id = Buffer.alloc(18);
    Buffer.from(n.ip.split('.').map(Number)).copy(id, 12);
    id.writeUInt16LE(n.port, 16);
    let h = sdHash(id);
    for (let v = 0; v < n.vnodes; v++) points.push({ h: (h = sdHashNext(h)), n: i });
  });
  points.sort((a, b) => (a.h < b.h ? -1 : a.h > b.h ? 1 : 0));
  const nr = Math.min(copies, new Set(nodes.map((n) => n.zone)).size);
  const key = sdHash(le64(oid));
  let i = points.findIndex((p) => p.h >= key);
  if (i < 0) i = 0;
  const out: number[] = [];
  for (let k = 0; out.length < nr && k < points.length; k++) {
    const n = points[(i + k) % points.length].n;
    if (!out.some((o) => nodes[o].zone === nodes[n].zone)) out.push(n);
  }
  return out.map((o) => `${nodes[o].ip}:${nodes[o].port}`);
}

async function ringNodes() {
  const r = await collie(['node', 'list', '-r']);
  expect(r.code).toBe(0);
  return r.stdout.trim().split('\n').map((l) => {
    const [, hp, vnodes, zone] = l.split(' ');
    const [ip, p] = hp.split(':');
    return { ip, port: Number(p), vnodes: Number(vnodes), zone: Number(zone) };
  });
}

/** Point index 0 of a VDI at its own data object, as a write would (the inode is a replica: copy_policy 0 on the wire). */
async function allocateIndex0(vid: number, copies: number): Promise<void> {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(vid);
  const r = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, dataLength: 4, obj: { oid: vidToVdiOid(vid), copies, offset: SD_INODE_HEADER_SIZE } }, b);
  expect(r.rsp.result).toBe(Res.SUCCESS);
}

async function states() {
  const r = await w.send({ opcode: Op.GET_VDI_COPIES, dataLength: 512 * 1428 });
  expect(r.rsp.result).toBe(Res.SUCCESS);
  return new Map(decodeVdiStates(r.data).map((s) => [s.vid, s]));
}

beforeAll(async () => {
  c = await startCluster(3);
  w = new Wire(port());
}, 180_000);
afterAll(async () => {
  w?.c.close();
  await stopAll();
});

describe('collie -c D:P (erasure coding), three zones', { timeout: 600_000 }, () => {
  it('the placement model reproduces the doc\'s observed 4:2 placement (A.5)', () => {
    const six = [0, 1, 2, 3, 4, 5].map((i) => ({ ip: '127.0.0.1', port: 7700 + i, vnodes: 128, zone: i }));
    expect(stripHolders(six, 0x00b22a9f00000000n, 6).map((x) => Number(x.split(':')[1])))
      .toEqual([7701, 7700, 7705, 7702, 7703, 7704]);
  });

  it('every rejected -c value: dog\'s text on stderr, exit 1, before any connection', async () => {
    const gone = await freePort();
    for (const v of REJECTED) {
      for (const cmd of [['cluster', 'format', '-c', v], ['cluster', 'format', `--copies=${v}`], ['vdi', 'create', '-c', v, 'bad', '8M'],
        ['vdi', 'create', '--copies', v, 'bad', '8M'], ['cluster', 'alter-copy', '-c', v], ['vdi', 'alter-copy', '-c', v, 'bad']]) {
        for (const prog of ['dog', 'collie'] as const) {
          // a port nobody listens on: the value is refused before collie connects
          expectDog(await inProcess(cmd, prog, gone), { code: 1, stderr: INVALID(v) });
        }
      }
    }
    // as processes too, with the port appended as scripts do
    expectDog(await dog(['cluster', 'format', '-c', '3:1']), { code: 1, stderr: INVALID('3:1') });
    expectDog(await collie(['vdi', 'create', '-c', '2:16', 'bad', '8M']), { code: 1, stderr: INVALID('2:16') });
    expectDog(await dog(['cluster', 'info']), UNFORMATTED);
  });

  it('a value of ten characters or more is parsed like any other (dog overflows a 10-byte buffer)', async () => {
    expectDog(await inProcess(['cluster', 'format', '-c', '0000000002:0000000016']), { code: 1, stderr: INVALID('0000000002:0000000016') });
    const long = 'x'.repeat(4096);
    expectDog(await inProcess(['vdi', 'create', '-c', long, 'bad', '8M']), { code: 1, stderr: INVALID(long) });
    expectDog(await dog(['cluster', 'info']), UNFORMATTED);
  });

  it('cluster format asks when D+P exceeds the zones; only a reply starting with yes goes on', async () => {
    for (const input of ['no\n', '', 'y\n', ' yes\n', 'nope, yes\n']) {
      expectDog(await dog(['cluster', 'format', '-c', '4:2'], input), { code: 0, stdout: PROMPT(6) });
    }
    expectDog(await dog(['cluster', 'format', '--copies', '16:15'], 'no\n'), { code: 0, stdout: PROMPT(31) });
    expectDog(await dog(['cluster', 'format', '-c', '4'], 'no\n'), { code: 0, stdout: PROMPT(4) });
    expectDog(await collie(['cluster', 'format', '-c', '2:2']), { code: 0, stdout: PROMPT(4) });
    expectDog(await dog(['cluster', 'info']), UNFORMATTED);

    // any case, and only the first three letters count (strncasecmp)
    expectDog(await dog(['cluster', 'format', '-c', '2:2'], 'YES\n'), { code: 0, stdout: PROMPT(4) + FORMATTED });
    expect((await dog(['cluster', 'info', '-v'])).stdout).toMatch(/^Cluster status: running, auto-recovery enabled\nCluster store: plain with 2:2 redundancy policy\n/);
    expectDog(await dog(['cluster', 'format', '--copies=8:2'], 'yesterday\n'), { code: 0, stdout: PROMPT(10) + FORMATTED });
    expect((await dog(['cluster', 'info', '-v'])).stdout).toMatch(/\nCluster store: plain with 8:2 redundancy policy\n/);
    // D+P within the zones: no question
    expectDog(await dog(['cluster', 'format', '-c', '2:1']), { code: 0, stdout: FORMATTED });
    expect((await dog(['cluster', 'info', '-v'])).stdout).toMatch(/\nCluster store: plain with 2:1 redundancy policy\n/);
    // -f: no question, for scripts
    expectDog(await dog(['cluster', 'format', '-f', '-c', '16:15']), { code: 0, stdout: FORMATTED });
    expect((await dog(['cluster', 'info', '-v'])).stdout).toMatch(/\nCluster store: plain with 16:15 redundancy policy\n/);
  });

  it('cluster info -v shows the policy as dog does; the wire carries it at A.2\'s offsets', async () => {
    const epoch = `\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d      1 \\[${ports().map((p) => re(`127.0.0.1:${p}:128`)).join(', ')}\\]\n`;
    const created = 'Cluster created at \\w{3} \\w{3} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d \\d{4}\n';
    const verbose = (policy: string) => new RegExp(`^Cluster status: running, auto-recovery enabled\nCluster store: plain with ${policy} redundancy policy\n` +
      `Cluster vnodes strategy: auto\nCluster vnode mode: node\n${created}\nEpoch Time           Version \\[Host:Port:V-Nodes,,,\\]\n${epoch}$`);

    expectDog(await dog(['cluster', 'format', '-c', '3']), { code: 0, stdout: FORMATTED });
    expectDog(await dog(['cluster', 'info', '-v']), { code: 0, stdout: verbose('3') });

    expectDog(await dog(['cluster', 'format', '-c', '2:2']), { code: 0, stdout: PROMPT(4) });
    expectDog(await dog(['cluster', 'format', '-f', '-c', '2:2']), { code: 0, stdout: FORMATTED });
    // not dog's (stderr): what sheep does with 3 zones for 2+2 strips (A.14)
    expectDog(await dog(['cluster', 'info', '-v']), {
      code: 0, stdout: verbose('2:2'),
      stderr: 'Warning: the cluster cannot place the 4 strips of its 2:2 erasure code: only 3 zone(s) hold data, so objects cannot get all their parity strips (this sheep refuses such writes unless formatted with --ec-few-zones)\n',
    });
    // --ec-few-zones: the flag the sheep reads (0x8000) is in the epoch log, and the warning says what it does
    expectDog(await dog(['cluster', 'format', '-f', '--ec-few-zones', '-c', '2:2']), { code: 0, stdout: FORMATTED });
    expectDog(await dog(['cluster', 'info', '-v']), {
      code: 0, stdout: verbose('2:2'),
      stderr: 'Warning: the cluster cannot place the 4 strips of its 2:2 erasure code: only 3 zone(s) hold data, so objects get only 3 of their strips (--ec-few-zones)\n',
    });

    expectDog(await dog(['cluster', 'format', '-f', '-c', '4:2']), { code: 0, stdout: FORMATTED });
    expectDog(await dog(['cluster', 'info', '-v']), {
      code: 0, stdout: verbose('4:2'),
      stderr: 'Warning: the cluster cannot place the 6 strips of its 4:2 erasure code: only 3 zone(s) hold data, so objects can be neither written nor read\n',
    });
    // without -v dog does not show the policy
    const plain = await dog(['cluster', 'info']);
    expect(plain.stdout).not.toMatch(/redundancy/);
    expect(plain.stdout).toMatch(/^Cluster status: running, auto-recovery enabled\n\nCluster created at /);

    const st = await w.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: { nodesNr: 0 } });
    expect([st.data[25], st.data[26]]).toEqual([6, 0x22]);
    const def = await w.send({ opcode: Op.GET_CLUSTER_DEFAULT });
    expect(def.rsp.clusterDefault).toEqual({ nrCopies: 6, copyPolicy: 0x22, blockSizeShift: 22 });
    const ci = await w.send({ opcode: Op.CLUSTER_INFO, dataLength: SD_CLUSTER_INFO_SIZE });
    expect([ci.data[18], ci.data[19]]).toEqual([6, 0x22]);
    // every node has it, not only the one that was asked
    for (const n of c.nodes.slice(1)) {
      const o = new Wire(n.port);
      try {
        expect((await o.send({ opcode: Op.GET_CLUSTER_DEFAULT })).rsp.clusterDefault).toEqual({ nrCopies: 6, copyPolicy: 0x22, blockSizeShift: 22 });
      } finally {
        o.c.close();
      }
    }

    const j = JSON.parse((await dog(['cluster', 'info', '--json'])).stdout);
    expect(j).toMatchObject({ running: true, copies: 6, redundancy: '4:2', erasure_code: { data_strips: 4, parity_strips: 2 }, zones: 3 });
  });

  it('vdi list shows D:P in the Copies column, plain and raw (A.13); a VDI without -c takes the EC default', async () => {
    // the doc's names, so the VDI ids are the doc's too
    expectDog(await dog(['vdi', 'create', '-c', '8:2', 'ec82', '8M']), { code: 0 });
    expectDog(await dog(['vdi', 'create', '-c', '16:15', 'ec1615', '8M']), { code: 0 });
    expectDog(await dog(['vdi', 'create', '-c', '2:1', 'ec21', '8M']), { code: 0 });
    expectDog(await dog(['vdi', 'create', '-c', '2', 'rep2', '8M']), { code: 0 });
    expectDog(await dog(['vdi', 'create', '--copies', '4:2', 'ec42', '16M']), { code: 0 });
    expectDog(await dog(['vdi', 'create', 'dflt', '8M']), { code: 0 }); // the cluster's 4:2
    expectDog(await dog(['vdi', 'create', '-c', '3', 'rep3', '8M']), { code: 0 }); // plain on an EC cluster
    const vid = (n: string) => hash24(n).toString(16);
    expect(['ec82', 'ec1615', 'ec21', 'rep2', 'ec42'].map(vid)).toEqual(['8f17f3', '99b17c', 'abf940', 'abfe96', 'b22a9f']);

    const date = '\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d';
    const rows: [string, string, string, string][] = [
      ['ec82', '8.0 MB', '8f17f3', '8:2'], ['ec1615', '8.0 MB', '99b17c', '16:15'], ['ec21', '8.0 MB', 'abf940', '2:1'],
      ['rep2', '8.0 MB', 'abfe96', '2'], ['ec42', ' 16 MB', 'b22a9f', '4:2'], ['dflt', '8.0 MB', vid('dflt'), '4:2'], ['rep3', '8.0 MB', vid('rep3'), '3'],
    ];
    rows.sort((a, b) => parseInt(a[2], 16) - parseInt(b[2], 16));
    const line = ([n, size, v, cp]: [string, string, string, string]) =>
      `  ${re(n.padEnd(8))}     0  ${re(size)}  0\\.0 MB  0\\.0 MB ${date}   ${re(v.padStart(6))}  ${re(cp.padStart(5))}                22\n`;
    expectDog(await dog(['vdi', 'list']), {
      code: 0,
      stdout: new RegExp('^  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n' + rows.map(line).join('') + '$'),
    });
    // one of them by name, as libvirt asks
    expectDog(await dog(['vdi', 'list', 'ec1615']), {
      code: 0,
      stdout: new RegExp(`^  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n  ec1615       0  8\\.0 MB  0\\.0 MB  0\\.0 MB ${date}   99b17c  16:15                22\n$`),
    });
    const rawRows = rows.map(([n, size, v, cp]) => `= ${n} 0 ${size.trim() === '16 MB' ? 16 << 20 : 8 << 20} 0 0 \\d+ ${v} ${re(cp)}  22\n`);
    expectDog(await dog(['vdi', 'list', '-r']), { code: 0, stdout: new RegExp(`^${rawRows.join('')}$`) });
    expectDog(await collie(['vdi', 'list', '-r', 'ec21']), { code: 0, stdout: /^= ec21 0 8388608 0 0 \d+ abf940 2:1  22\n$/ });

    // Proxmox's and Cinder's parsers still read a line (COPIES is \S+)
    const prox = /(=|c) ((vm|base)-(\d+)-\S+)\s+(\d+)\s+(\d+)\s(\d+)\s(\d+)\s(\d+)\s(\S+)\s(\d+)/;
    expectDog(await dog(['vdi', 'create', '-c', '4:2', 'vm-100-disk-0', '8M']), { code: 0 });
    const pm = prox.exec((await dog(['vdi', 'list', '-r', 'vm-100-disk-0'])).stdout);
    expect([pm?.[2], pm?.[6], pm?.[10]]).toEqual(['vm-100-disk-0', '8388608', hash24('vm-100-disk-0').toString(16)]);

    // the default is the cluster's 4:2, with nr_copies 6, in the state and in the inode
    const st = await states();
    const check = (name: string, copies: number, policy: number) => {
      expect(st.get(hash24(name)), name).toMatchObject({ nrCopies: copies, copyPolicy: policy });
    };
    check('dflt', 6, 0x22);
    check('rep3', 3, 0);
    check('rep2', 2, 0);
    check('ec1615', 31, 0x8f);
    check('ec82', 10, 0x42);
    for (const [name, copies, policy] of [['dflt', 6, 0x22], ['ec21', 3, 0x11], ['rep3', 3, 0]] as const) {
      const ino = await w.inode(hash24(name));
      expect([ino.header.nrCopies, ino.header.copyPolicy], name).toEqual([copies, policy]);
    }

    const j = JSON.parse((await dog(['vdi', 'list', '--json'])).stdout);
    const by = (n: string) => j.vdis.find((v: { name: string }) => v.name === n);
    expect(by('ec1615')).toMatchObject({ copies: 31, redundancy: '16:15', erasure_code: { data_strips: 16, parity_strips: 15 } });
    expect(by('dflt')).toMatchObject({ copies: 6, redundancy: '4:2', erasure_code: { data_strips: 4, parity_strips: 2 } });
    expect(by('rep2')).toMatchObject({ copies: 2, redundancy: '2', erasure_code: null });
  });

  it('vdi create: every accepted -c value gives its policy byte and nr_copies = D+P', async () => {
    for (const a of ACCEPTED) {
      const name = `c${a.v.replace(':', '_')}`;
      expectDog(await inProcess(['vdi', 'create', '-c', a.v, name, '4M']), { code: 0 });
    }
    // strtok's way of cutting at ':' (empty pieces skipped, a third one ignored), and no overflow
    expectDog(await inProcess(['vdi', 'create', '-c', '2::1', 'tok1', '4M']), { code: 0 });
    expectDog(await inProcess(['vdi', 'create', '-c', '4:2:9', 'tok2', '4M']), { code: 0 });
    expectDog(await inProcess(['vdi', 'create', '--copies=0000000016:0000000015', 'long', '4M']), { code: 0 });
    const st = await states();
    for (const a of ACCEPTED) {
      const name = `c${a.v.replace(':', '_')}`;
      expect(st.get(hash24(name)), a.v).toMatchObject({ nrCopies: a.copies, copyPolicy: a.policy });
    }
    expect(st.get(hash24('tok1'))).toMatchObject({ nrCopies: 3, copyPolicy: 0x11 });
    expect(st.get(hash24('tok2'))).toMatchObject({ nrCopies: 6, copyPolicy: 0x22 });
    expect(st.get(hash24('long'))).toMatchObject({ nrCopies: 31, copyPolicy: 0x8f });
    const raw = new Map((await dog(['vdi', 'list', '-r'])).stdout.trim().split('\n').map((l) => {
      const f = l.split(' ');
      return [f[1], f[8]] as const;
    }));
    for (const a of ACCEPTED) expect(raw.get(`c${a.v.replace(':', '_')}`), a.v).toBe(a.v);
  });

  it('sheep forces nr_copies := D+P and refuses policy bytes no -c value makes', async () => {
    const nv = (name: string, copies: number, copyPolicy: number) => w.send({
      opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: 4n << 20n, copies, copyPolicy, blockSizeShift: 0 },
    }, encodeFixedString(name, 256));
    expect((await nv('forced', 1, 0x22)).rsp.result).toBe(Res.SUCCESS);
    expect((await states()).get(hash24('forced'))).toMatchObject({ nrCopies: 6, copyPolicy: 0x22 });
    // P = 0 (upstream's decoder panics), D = 6 (striping breaks), D = 0, D = 18
    for (const bad of [0x10, 0x30, 0x01, 0x91, 0xff]) {
      expect((await nv(`bad${bad}`, 3, bad)).rsp.result, `0x${bad.toString(16)}`).toBe(Res.INVALID_PARMS);
      const mk = await w.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 3, copyPolicy: bad } }, Buffer.from('plain\0'));
      expect(mk.rsp.result, `MAKE_FS 0x${bad.toString(16)}`).toBe(Res.INVALID_PARMS);
    }
    expect((await w.send({ opcode: Op.GET_CLUSTER_DEFAULT })).rsp.clusterDefault).toEqual({ nrCopies: 6, copyPolicy: 0x22, blockSizeShift: 22 });
  });

  it('vdi object location lists the strip holders in strip-index order (A.5, A.13)', async () => {
    const nodes = await ringNodes();
    await allocateIndex0(0xb22a9f, 6);
    const loc = await dog(['vdi', 'object', 'location', 'ec42', '-i', '0']);
    const holders = stripHolders(nodes, 0x00b22a9f00000000n, 6);
    expect(holders).toHaveLength(3);
    expectDog(loc, {
      code: 0,
      stdout: 'Looking for the object 00b22a9f00000000 (vid 0xb22a9f idx 0, 6 copies) with 3 nodes\n\n' +
        ports().map((p) => `127.0.0.1:${p} doesn't have the object\n`).join('') +
        `\nAccording to sheepdog algorithm, the object should be located at:\n${holders.join(' ')}\n`,
    });
    const j = JSON.parse((await dog(['vdi', 'object', 'location', 'ec42', '-i', '0', '--json'])).stdout);
    expect(j).toMatchObject({ oid: '00b22a9f00000000', copies: 6, placement: holders });

    // the inode of a 16:15 VDI: 31 full copies wanted, one per zone placed
    const inode = stripHolders(nodes, vidToVdiOid(0x99b17c), 31);
    expectDog(await dog(['vdi', 'object', 'location', 'ec1615']), {
      code: 0,
      stdout: 'Looking for the inode object 0x99b17c with 3 nodes\n\n' + ports().map((p) => `127.0.0.1:${p} has the object\n`).join('') +
        `\nAccording to sheepdog algorithm, the object should be located at:\n${inode.join(' ')}\n`,
    });
  });

  it('vdi check: aborts with fewer zones than D+P (A.12); repairs the inode as a replica; more than P strips lost is said', async () => {
    const abort = { code: 1, stderr: 'ABORT: Not enough active zones for consistency-checking erasure coded VDI\n' };
    expectDog(await dog(['vdi', 'check', 'ec42']), abort);
    expectDog(await dog(['vdi', 'check', 'ec1615']), abort);
    expectDog(await dog(['vdi', 'check', 'dflt']), abort);
    // 2+1 strips fit in 3 zones; a fresh VDI has only its inode
    expectDog(await dog(['vdi', 'check', 'ec21']), { code: 0, stdout: 'finish check&repair ec21\n' });
    // a replicated VDI on the same cluster is checked as before
    expectDog(await dog(['vdi', 'check', 'rep3']), { code: 0, stdout: 'finish check&repair rep3\n' });
    // cluster check goes on past an EC VDI it cannot check, and fails at the end
    const cc = await dog(['cluster', 'check']);
    expect(cc.code).toBe(1);
    expect(cc.stdout).toMatch(/(^|\n)fix vdi ec42\nfix vdi /);
    expect(cc.stdout).toContain('fix vdi ec21\nfinish check&repair ec21\n');
    expect(cc.stdout).toContain('fix vdi rep3\nfinish check&repair rep3\n');
    // every c*_* VDI of more than 3 strips, and ec82, ec1615, ec42, dflt, vm-100-disk-0, forced, tok2, long
    const wide = ACCEPTED.filter((a) => a.policy && a.copies > 3).length + 8;
    expect(cc.stderr).toBe('ABORT: Not enough active zones for consistency-checking erasure coded VDI\n'.repeat(wide));

    // the inode is a replica: a lost copy is found and fixed
    const file = path.join(c.nodes[1].dir, 'obj', '80abf94000000000');
    await fsp.rm(file);
    expectDog(await dog(['vdi', 'check', 'ec21']), { code: 0, stdout: 'fixed missing 80abf94000000000\nfinish check&repair ec21\n' });
    expect((await fsp.stat(file)).isFile()).toBe(true);

    // a data object in the index whose strips are nowhere (READ_PEER by strip index: NO_OBJ from all three)
    await allocateIndex0(0xabf940, 3);
    expectDog(await dog(['vdi', 'check', 'ec21']), {
      code: 1, stdout: 'finish check&repair ec21\n',
      stderr: 'failed to rebuild object 00abf94000000000. 3 copies get lost, more than 1\n',
    });
  });

  it('vdi check of a 2:1 data object: every strip read from its holder; consistent, rebuilt, inconsistent (A.12)', async () => {
    expectDog(await dog(['vdi', 'create', '-c', '2:1', 'chk21', '8M']), { code: 0 });
    const vid = hash24('chk21');
    const oid = vidToDataOid(vid, 0);
    const oidText = oid.toString(16).padStart(16, '0');
    await allocateIndex0(vid, 3);
    // the strips, put on their holders by strip index as a gateway would (A.4, A.10)
    const obj = randomBytes(4 << 20);
    const strips = [...ecSplit(obj, 2)];
    strips.push(...ecEncode(strips, 1));
    const holders = stripHolders(await ringNodes(), oid, 3).map((h) => Number(h.split(':')[1]));
    const peer = async (k: number, req: { opcode: number; flags?: number; dataLength?: number }, data?: Buffer) => {
      const x = new Wire(holders[k]);
      try {
        const st = await x.send({ opcode: Op.STAT_CLUSTER, dataLength: 48, cluster: { nodesNr: 0 } });
        const epoch = st.data.readUInt32LE(16);
        return await x.send({ ...req, epoch, obj: { oid, copies: 3, copyPolicy: 0x11, ecIndex: k, offset: 0 } }, data);
      } finally {
        x.c.close();
      }
    };
    const read = async (k: number) => {
      const r = await peer(k, { opcode: Op.READ_PEER, dataLength: 2 << 20 });
      expect(r.rsp.result).toBe(Res.SUCCESS);
      return r.data;
    };
    for (let k = 0; k < 3; k++) {
      expect((await peer(k, { opcode: Op.CREATE_AND_WRITE_PEER, flags: Flag.CMD_WRITE, dataLength: 2 << 20 }, strips[k])).rsp.result).toBe(Res.SUCCESS);
    }
    expectDog(await dog(['vdi', 'check', 'chk21']), { code: 0, stdout: 'finish check&repair chk21\n' });
    // -e: each holder asked for its own strip
    expectDog(await dog(['vdi', 'check', '-e', 'chk21']), { code: 0 });

    // a lost strip (data, then parity) is decoded from the other two and written back to its holder
    for (const k of [0, 2]) {
      expect((await peer(k, { opcode: Op.REMOVE_PEER })).rsp.result).toBe(Res.SUCCESS);
      expect((await peer(k, { opcode: Op.READ_PEER, dataLength: 2 << 20 })).rsp.result).toBe(Res.NO_OBJ);
      expectDog(await dog(['vdi', 'check', '-e', 'chk21']), { code: 1, stdout: `${oidText} is missing on 127.0.0.1:${holders[k]}\n` });
      expectDog(await dog(['vdi', 'check', 'chk21']), {
        code: 0, stdout: `fixed missing ${oidText}, copy index ${k}\nfinish check&repair chk21\n`,
      });
      expect((await read(k)).equals(strips[k])).toBe(true);
    }

    // a parity strip that does not match the data: said, not repaired
    const bad = Buffer.from(strips[2]);
    bad[1000] ^= 0x5a;
    expect((await peer(2, { opcode: Op.WRITE_PEER, flags: Flag.CMD_WRITE, dataLength: 2 << 20 }, bad)).rsp.result).toBe(Res.SUCCESS);
    expectDog(await dog(['vdi', 'check', 'chk21']), {
      code: 1, stdout: 'finish check&repair chk21\n', stderr: `object ${oidText} is inconsistent\n`,
    });
    expect((await read(2)).equals(bad)).toBe(true);
  });

  it('alter-copy: dog\'s messages and statuses (A.1); sheep refuses too', async () => {
    const usage = (prog: string, what: string) => new RegExp(`^Usage: ${prog} ${what} `);
    expectDog(await dog(['cluster', 'alter-copy', '-c', '2:1']), {
      code: 64, stderr: 'Changing redundancy level of erasure coded vdi is not supported yet.\n',
      stdout: /^Usage: dog cluster alter-copy \[-a address\] \[-p port\] \[-h\] \[-c copies\] \[-f\] \[-T\]\nOptions:\n/,
    });
    expectDog(await collie(['cluster', 'alter-copy', '-f', '--copies', '4:2']), {
      code: 64, stderr: 'Changing redundancy level of erasure coded vdi is not supported yet.\n', stdout: usage('collie', 'cluster alter-copy'),
    });
    for (const name of ['ec21', 'rep2']) {
      expectDog(await dog(['vdi', 'alter-copy', '-c', '2:1', name]), {
        code: 64, stderr: 'Changing redundancy level of erasure coded vdi is not supported yet.\n', stdout: usage('dog', 'vdi alter-copy'),
      });
    }
    // an EC cluster or VDI to a plain count
    for (const f of [[], ['-f']]) {
      expectDog(await dog(['cluster', 'alter-copy', '-c', '2', ...f]), {
        code: 1, stderr: "The cluster's copy policy is erasure code, changing it is not supported yet.\n",
      });
    }
    expectDog(await dog(['vdi', 'alter-copy', '-c', '2', 'ec21'], 'yes\n'), {
      code: 1, stderr: "ec21's copy policy is erasure code, changing it is not supported yet.\n",
    });
    expectDog(await collie(['vdi', 'alter-copy', '-c', '3', 'ec1615'], 'yes\n'), {
      code: 1, stderr: "ec1615's copy policy is erasure code, changing it is not supported yet.\n",
    });
    expect((await states()).get(0xabf940)).toMatchObject({ nrCopies: 3, copyPolicy: 0x11 });

    // the server: a non-zero policy, or altering what is erasure coded, is INVALID_PARMS
    const acc = (copies: number, copyPolicy: number) => w.send({ opcode: Op.ALTER_CLUSTER_COPY, cluster: { copies, copyPolicy } });
    expect((await acc(2, 0)).rsp.result).toBe(Res.INVALID_PARMS);
    expect((await acc(3, 0x11)).rsp.result).toBe(Res.INVALID_PARMS);
    const avc = (vid: number, copies: number, copyPolicy: number) => w.send({ opcode: Op.ALTER_VDI_COPY, vdiState: { newVid: vid, copies, copyPolicy } });
    expect((await avc(0xabf940, 2, 0)).rsp.result).toBe(Res.INVALID_PARMS);
    expect((await avc(0xabfe96, 3, 0x11)).rsp.result).toBe(Res.INVALID_PARMS);
    expect((await w.send({ opcode: Op.GET_CLUSTER_DEFAULT })).rsp.clusterDefault).toEqual({ nrCopies: 6, copyPolicy: 0x22, blockSizeShift: 22 });
    const st = await states();
    expect(st.get(0xabf940)).toMatchObject({ nrCopies: 3, copyPolicy: 0x11 });
    expect(st.get(0xabfe96)).toMatchObject({ nrCopies: 2, copyPolicy: 0 });
    // a replicated VDI still alters (on an EC cluster)
    expectDog(await dog(['vdi', 'alter-copy', '-c', '3', 'rep2'], 'yes\n'), { code: 0, stdout: /Are you sure you want to continue\? \[yes\/no\]: $/ });
    expect((await states()).get(0xabfe96)).toMatchObject({ nrCopies: 3, copyPolicy: 0 });
  });
});
