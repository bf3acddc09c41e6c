// collie vdi commands against a real formatted sheep: outputs, exit codes and
// the bytes that come back.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { hash24 } from '@sheepdog/common';
import { startFormatted, stopAll, runCollie, SheepProc } from '../helpers/cluster.js';

let s: SheepProc;
const localId = () => `local:collie-${process.pid}-${randomBytes(4).toString('hex')}`;
const dog = (args: string[], input?: Buffer | string) => runCollie(args, { port: s.port, input });
const M = 1 << 20;
const data8 = randomBytes(8 * M);
const data4 = randomBytes(4 * M);
const hx = (n: number) => n.toString(16);

/** Parse `vdi list -r` into records. */
function rawList(out: string) {
  return out.trim().split('\n').filter(Boolean).map((l) => {
    const f = l.split(' ');
    return { flag: f[0], name: f[1], id: +f[2], size: BigInt(f[3]), used: BigInt(f[4]), shared: BigInt(f[5]), ctime: +f[6], vid: f[7], copies: f[8], tag: f[9], shift: +f[10] };
  });
}

beforeAll(async () => {
  s = await startFormatted(1, ['-c', localId(), '-z', '0']);
});
afterAll(async () => {
  await stopAll();
});

describe('collie vdi', { timeout: 240_000 }, () => {
  it('create, duplicate, preallocate, size limits', async () => {
    const c = await dog(['vdi', 'create', 'Alice', '1G']);
    expect(c.code).toBe(0);
    expect(c.stdout + c.stderr).toBe('');
    const dup = await dog(['vdi', 'create', 'Alice', '1G']);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toBe('Failed to create VDI Alice: VDI exists already\n');

    expect((await dog(['vdi', 'create', '-P', 'Pre', '64M'])).code).toBe(0);
    const big = await dog(['vdi', 'create', 'Hyper', '5T']);
    expect(big.code).toBe(64);
    expect(big.stderr).toBe(
      "VDI size is larger than 4.0 TB bytes, please use '-y' to create a hyper volume with size up to 16 PB bytes or use '-z' to create larger object size volume\n");
    // dog prints the usage block on stdout
    expect(big.stdout.split('\n')[0]).toBe(
      'Usage: collie vdi create [-P] [-y] [-c copies] [-a address] [-p port] [-h] [-r] [-v] [-z block_size_shift] [-T] <vdiname> <size>');
    expect((await dog(['vdi', 'create', '-y', 'BigHyper', '5T'])).code).toBe(0);
    const v = await dog(['vdi', 'create', '-v', 'Verbose', '10M']);
    expect(v.stdout).toBe(`VDI ID of newly created VDI: ${hx(hash24('Verbose'))}\n`);
  });

  it('list, plain and raw', async () => {
    const raw = rawList((await dog(['vdi', 'list', '-r'])).stdout);
    const alice = raw.find((r) => r.name === 'Alice')!;
    expect(alice).toMatchObject({ flag: '=', id: 0, size: 1n << 30n, used: 0n, shared: 0n, vid: hx(hash24('Alice')), copies: '1', tag: '', shift: 22 });
    expect(Math.abs(alice.ctime - Date.now() / 1000)).toBeLessThan(120);
    expect(raw.find((r) => r.name === 'Pre')).toMatchObject({ used: 64n << 20n, shared: 0n });
    expect(raw.find((r) => r.name === 'BigHyper')).toMatchObject({ size: 5n << 40n, used: 0n });
    // ascending VDI id order, like dog
    const vids = raw.map((r) => parseInt(r.vid, 16));
    expect([...vids].sort((a, b) => a - b)).toEqual(vids);
    // empty tag leaves two spaces
    expect((await dog(['vdi', 'list', '-r', 'Alice'])).stdout).toMatch(/^= Alice 0 1073741824 0 0 \d+ 15d167 1  22\n$/);

    const plain = await dog(['vdi', 'list', 'Pre']);
    const lines = plain.stdout.split('\n');
    expect(lines[0]).toBe('  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift');
    expect(lines[1]).toMatch(new RegExp(`^  Pre          0   64 MB   64 MB  0\\.0 MB \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d   ${hx(hash24('Pre'))}      1                22$`));
    expect(lines.length).toBe(3);
    // options after the positional
    expect((await dog(['vdi', 'list', 'Pre', '-r'])).stdout).toMatch(/^= Pre 0 67108864 67108864 0 /);
    // missing name: header only / nothing in raw mode
    expect((await dog(['vdi', 'list', 'Nobody'])).stdout).toBe(lines[0] + '\n');
    const none = await dog(['vdi', 'list', 'Nobody', '-r']);
    expect(none.stdout).toBe('');
    expect(none.code).toBe(0);
  });

  it('write and read back bytes', async () => {
    const w = await dog(['vdi', 'write', 'Alice', '0', '8M'], data8);
    expect(w.code).toBe(0);
    const r = await dog(['vdi', 'read', 'Alice', '0', '8M']);
    expect(r.code).toBe(0);
    expect(r.stdoutBuf.equals(data8)).toBe(true);

    expect((await dog(['vdi', 'write', 'Alice', '100M', '4M'], data4)).code).toBe(0);
    expect((await dog(['vdi', 'read', 'Alice', '100M', '4M'])).stdoutBuf.equals(data4)).toBe(true);
    const head = await dog(['vdi', 'read', 'Alice', '0', '512']);
    expect(head.stdoutBuf.equals(data8.subarray(0, 512))).toBe(true);
    // an unallocated range reads as zeros
    const z = await dog(['vdi', 'read', 'Alice', '50M', '1M']);
    expect(z.stdoutBuf.equals(Buffer.alloc(M))).toBe(true);
    // unaligned write across object boundaries
    const odd = randomBytes(5 * M + 123);
    expect((await dog(['vdi', 'write', 'Alice', String(200 * M - 77), String(odd.length)], odd)).code).toBe(0);
    expect((await dog(['vdi', 'read', 'Alice', String(200 * M - 77), String(odd.length)])).stdoutBuf.equals(odd)).toBe(true);

    const atEnd = await dog(['vdi', 'write', 'Alice', '1G'], 'hello');
    expect(atEnd.code).toBe(0);
    const past = await dog(['vdi', 'read', 'Alice', '2G', '1']);
    expect(past.code).toBe(1);
    expect(past.stderr).toBe('Read offset is beyond the end of the VDI\n');
    const missing = await dog(['vdi', 'read', 'NoSuchVdi', '0', '1']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('Failed to open VDI NoSuchVdi (snapshot id: 0 snapshot tag: ): No VDI found\n');

    const list = rawList((await dog(['vdi', 'list', '-r', 'Alice'])).stdout)[0];
    // objects 0,1 (8M), 25 (100M), 49..51 (the odd write)
    expect(list.used).toBe(6n * 4n * BigInt(M));
  });

  it('object map, location, track', async () => {
    const vid = hx(hash24('Alice'));
    const map = await dog(['vdi', 'object', 'map', 'Alice']);
    expect(map.stdout).toBe(`Index       VID\n${[0, 1, 25, 49, 50, 51].map((i) => `${String(i).padStart(8, '0')}   ${vid}\n`).join('')}`);
    const loc = await dog(['vdi', 'object', 'location', '-i', '0', 'Alice']);
    expect(loc.stdout).toBe(
      `Looking for the object 00${vid}00000000 (vid 0x${vid} idx 0, 1 copies) with 1 nodes\n\n` +
      `127.0.0.1:${s.port} has the object\n\n` +
      `According to sheepdog algorithm, the object should be located at:\n127.0.0.1:${s.port}\n`);
    const na = await dog(['vdi', 'object', 'location', '-i', '100', 'Alice']);
    expect(na.stdout).toBe(`The inode object 0x${vid} idx 100 is not allocated\n`);
    const tr = await dog(['vdi', 'track', '-i', '0', 'Alice']);
    expect(tr.stdout).toBe(
      `Tracking the object 00${vid}00000000 (the inode vid 0x${vid} idx 0) with 1 nodes\n\n` +
      `obj 00${vid}00000000 locations at epoch 1, copies = 1\n` +
      '---------------------------------------------------\n' +
      `127.0.0.1:${s.port}\n`);
  });

  it('attributes', async () => {
    expect((await dog(['vdi', 'setattr', 'Alice', 'mykey', 'myvalue'])).code).toBe(0);
    const g = await dog(['vdi', 'getattr', 'Alice', 'mykey']);
    expect(g.code).toBe(0);
    expect(g.stdout).toBe('myvalue');
    const n = await dog(['vdi', 'getattr', 'Alice', 'nokey']);
    expect(n.code).toBe(5);
    expect(n.stderr).toBe("Attribute 'nokey' not found\n");
    const x = await dog(['vdi', 'setattr', '-x', 'Alice', 'mykey', 'other']);
    expect(x.code).toBe(3);
    expect(x.stderr).toBe("The attribute 'mykey' already exists\n");
    expect((await dog(['vdi', 'setattr', 'Alice', 'fromstdin'], 'piped value')).code).toBe(0);
    expect((await dog(['vdi', 'getattr', 'Alice', 'fromstdin'])).stdout).toBe('piped value');
    expect((await dog(['vdi', 'setattr', '-d', 'Alice', 'mykey'])).code).toBe(0);
    expect((await dog(['vdi', 'getattr', 'Alice', 'mykey'])).code).toBe(5);
    const nv = await dog(['vdi', 'getattr', 'Nobody', 'k']);
    expect(nv.code).toBe(5);
    expect(nv.stderr).toBe('VDI not found\n');
  });

  it('snapshot, copy-on-write, clone, tree, graph', async () => {
    expect((await dog(['vdi', 'snapshot', '-s', 'snap1', 'Alice'])).code).toBe(0);
    const again = await dog(['vdi', 'snapshot', '-s', 'snap1', 'Alice']);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe('Failed to create snapshot for Alice, maybe snapshot id (0) or tag (snap1) is existed\n');
    const nov = await dog(['vdi', 'snapshot', '-s', 'x', 'Nobody']);
    expect(nov.code).toBe(1);
    expect(nov.stderr).toBe('Failed to create snapshot for Nobody: No VDI found\n');

    // a short write pads the object with zeros (dog's behaviour)
    expect((await dog(['vdi', 'write', 'Alice', '0'], 'CHANGED')).code).toBe(0);
    const r = await dog(['vdi', 'read', 'Alice', '0', '8M']);
    expect(r.stdoutBuf.subarray(0, 7).toString()).toBe('CHANGED');
    expect(r.stdoutBuf.subarray(7, 4 * M).equals(Buffer.alloc(4 * M - 7))).toBe(true);
    expect(r.stdoutBuf.subarray(4 * M).equals(data8.subarray(4 * M))).toBe(true);
    expect((await dog(['vdi', 'read', '-s', 'snap1', 'Alice', '0', '8M'])).stdoutBuf.equals(data8)).toBe(true);
    expect((await dog(['vdi', 'read', '-s', '1', 'Alice', '0', '7'])).stdoutBuf.equals(data8.subarray(0, 7))).toBe(true);
    const nt = await dog(['vdi', 'read', '-s', 'nosnap', 'Alice', '0', '1']);
    expect(nt.code).toBe(1);
    expect(nt.stderr).toBe('Failed to open VDI Alice (snapshot id: 0 snapshot tag: nosnap): Failed to find requested tag\n');

    expect((await dog(['vdi', 'snapshot', 'Alice'])).code).toBe(0);
    expect((await dog(['vdi', 'clone', '-s', 'snap1', 'Alice', 'Bob'])).code).toBe(0);
    expect((await dog(['vdi', 'read', 'Bob', '0', '8M'])).stdoutBuf.equals(data8)).toBe(true);

    const raw = rawList((await dog(['vdi', 'list', '-r'])).stdout);
    const a = hash24('Alice');
    expect(raw.filter((x) => x.name === 'Alice' || x.name === 'Bob').map((x) => [x.flag, x.name, x.id, x.vid, x.tag, x.used / BigInt(4 * M), x.shared / BigInt(4 * M)])).toEqual([
      ['c', 'Bob', 0, hx(hash24('Bob')), '', 0n, 6n],
      ['s', 'Alice', 1, hx(a), 'snap1', 6n, 0n],
      ['s', 'Alice', 2, hx(a + 1), '', 1n, 5n],
      ['=', 'Alice', 0, hx(a + 2), '', 0n, 6n],
    ].sort((p, q) => parseInt(p[3] as string, 16) - parseInt(q[3] as string, 16)));

    const tree = (await dog(['vdi', 'tree'])).stdout;
    expect(tree).toContain('Bob---(you are here)\n');
    expect(tree).toMatch(/^Alice---\[\d{4}-\d\d-\d\d \d\d:\d\d\]---\[\d{4}-\d\d-\d\d \d\d:\d\d\]---\(you are here\)$/m);

    const graph = (await dog(['vdi', 'graph'])).stdout;
    expect(graph.startsWith('digraph G {\n  node [shape = "box", fontname = "Courier"];\n\n  "0" [shape = "ellipse", label = "root"];\n\n')).toBe(true);
    expect(graph.endsWith('}\n')).toBe(true);
    expect(graph).toContain(`  "${hx(a)}" -> "${hx(hash24('Bob'))}";\n  "${hx(hash24('Bob'))}" [\n    group = "Bob",\n    label = "Name:        Bob\\nTag:           0\\nSize:     1.0 GB\\n`);
    expect(graph).toContain(`  "${hx(a + 1)}" -> "${hx(a + 2)}";\n`);
  });

  it('check, resize, rollback', async () => {
    const c = await dog(['vdi', 'check', 'Alice']);
    expect(c.code).toBe(0);
    expect(c.stdout).toBe('finish check&repair Alice\n');

    expect((await dog(['vdi', 'resize', 'Alice', '2G'])).code).toBe(0);
    expect(rawList((await dog(['vdi', 'list', '-r', 'Alice'])).stdout).find((x) => x.flag === '=')!.size).toBe(2n << 30n);
    const shrink = await dog(['vdi', 'resize', 'Alice', '1G']);
    expect(shrink.code).toBe(64);
    expect(shrink.stderr.split('\n')[0]).toBe('Shrinking VDIs is not implemented');
    const huge = await dog(['vdi', 'resize', 'Alice', '5T']);
    expect(huge.code).toBe(64);
    expect(huge.stderr.split('\n')[0]).toBe("New VDI size is too large. This volume's max size is 4398046511104");

    const rb = await dog(['vdi', 'rollback', '-f', '-s', '1', 'Alice']);
    expect(rb.code).toBe(0);
    expect((await dog(['vdi', 'read', 'Alice', '0', '8M'])).stdoutBuf.equals(data8)).toBe(true);
    const alice = rawList((await dog(['vdi', 'list', '-r', 'Alice'])).stdout).find((x) => x.flag === '=')!;
    expect(alice.size).toBe(1n << 30n); // the snapshot's size
    // without -f, anything but "yes" keeps the VDI
    const ask = await dog(['vdi', 'rollback', '-s', '2', 'Alice'], 'no\n');
    expect(ask.code).toBe(0);
    expect(ask.stdout).toBe('This operation discards any changes made since the previous\nsnapshot was taken.  Continue? [yes/no]: ');
    expect(rawList((await dog(['vdi', 'list', '-r', 'Alice'])).stdout).find((x) => x.flag === '=')!.vid).toBe(alice.vid);
  });

  it('delete', async () => {
    expect((await dog(['vdi', 'delete', 'Verbose'])).code).toBe(0);
    const snap = await dog(['vdi', 'delete', '-s', 'snap1', 'Alice']);
    expect(snap.code).toBe(0);
    const none = await dog(['vdi', 'delete', 'NoSuchVdi']);
    expect(none.code).toBe(0);
    expect(none.stderr).toBe('Failed to open VDI NoSuchVdi (snapshot id: 0 snapshot tag: ): No VDI found\n');
    const raw = rawList((await dog(['vdi', 'list', '-r'])).stdout);
    expect(raw.find((x) => x.name === 'Verbose')).toBeUndefined();
    expect(raw.find((x) => x.name === 'Alice' && x.tag === 'snap1')).toBeUndefined();
    // data still reachable through the clone and the new working VDI
    expect((await dog(['vdi', 'read', 'Bob', '0', '8M'])).stdoutBuf.equals(data8)).toBe(true);
    expect((await dog(['vdi', 'read', 'Alice', '0', '8M'])).stdoutBuf.equals(data8)).toBe(true);
  });

  it('object size shift, clone -n, cluster check, lock list', async () => {
    expect((await dog(['vdi', 'create', '-z', '20', 'Small', '10M'])).code).toBe(0);
    const d = randomBytes(3 * M);
    expect((await dog(['vdi', 'write', 'Small', '0'], d)).code).toBe(0);
    const rec = rawList((await dog(['vdi', 'list', '-r', 'Small'])).stdout)[0];
    expect(rec.shift).toBe(20);
    // the short read pads the 4th 1 MiB object: 4 objects of 1 MiB
    expect(rec.used).toBe(4n * BigInt(M));
    expect((await dog(['vdi', 'read', 'Small', '0', '3M'])).stdoutBuf.equals(d)).toBe(true);

    expect((await dog(['vdi', 'snapshot', '-s', 's', 'Small'])).code).toBe(0);
    expect((await dog(['vdi', 'clone', '-n', '-s', 's', 'Small', 'Indep'])).code).toBe(0);
    const indep = rawList((await dog(['vdi', 'list', '-r', 'Indep'])).stdout)[0];
    expect(indep).toMatchObject({ flag: '=', used: 4n * BigInt(M), shared: 0n, shift: 20 });
    expect((await dog(['vdi', 'read', 'Indep', '0', '3M'])).stdoutBuf.equals(d)).toBe(true);

    const cc = await dog(['cluster', 'check']);
    expect(cc.code).toBe(0);
    expect(cc.stdout).toContain('fix vdi Bob\nfinish check&repair Bob\n');
    expect(cc.stdout).toContain('fix snapshot Small (id: 1, tag: "s")\nfinish check&repair Small\n');
    const lk = await dog(['vdi', 'lock', 'list']);
    expect(lk.stdout).toBe('  Name         Id  VDI id  Tag            Owner node(s)\n');

    const info = await dog(['node', 'info', '-r']);
    const total = /Total \d+ \d+ \d+ \d+% (\d+)\n$/.exec(info.stdout)!;
    const working = rawList((await dog(['vdi', 'list', '-r'])).stdout).filter((x) => x.flag !== 's');
    expect(BigInt(total[1])).toBe(working.reduce((a, x) => a + x.size, 0n));
  });
});
