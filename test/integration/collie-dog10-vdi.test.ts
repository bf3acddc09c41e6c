// `dog vdi ...` as upstream dog 1.0 prints it (dog-transcript.txt,
// erasure-coding-and-md.md A.1/C.1, farm-and-backup.md part B): exact
// stdout, stderr and exit status against one real, formatted sheep; and the
// backup stream byte for byte as the doc's worked example.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { hash24 } from '@sheepdog/common';
import { startFormatted, stopAll, SheepProc } from '../helpers/cluster.js';
import { dog as runDog, expectDog, OPT } from '../helpers/dog10.js';

let s: SheepProc;
const dog = (args: string[], input?: Buffer | string) => runDog(args, { port: s.port, input });
const M = 1 << 20;
const hx = (n: number) => n.toString(16);

beforeAll(async () => {
  s = await startFormatted(1, ['-z', '0']);
});
afterAll(async () => {
  await stopAll();
});

const CREATE_USAGE =
  'Usage: dog vdi create [-P] [-y] [-c copies] [-a address] [-p port] [-h] [-r] [-v] [-z block_size_shift] [-T] <vdiname> <size>\n' +
  'Options:\n' +
  '  -P, --prealloc          preallocate all the data objects\n' +
  '  -y, --hyper             create a hyper volume\n' +
  '  -c, --copies            specify the data redundancy level\n' +
  OPT.a + OPT.p + OPT.h + OPT.r + OPT.v +
  '  -z, --block_size_shift  specify the bit shift num for data object size\n' + OPT.T;

const CLONE_USAGE =
  'Usage: dog vdi clone [-s snapshot] [-P] [-n] [-a address] [-p port] [-h] [-r] [-v] [-T] <src vdi> <dst vdi>\n' +
  'Options:\n' +
  '  -s, --snapshot          specify a snapshot id or tag name\n' +
  '  -P, --prealloc          preallocate all the data objects\n' +
  '  -n, --no-share          share nothing with its parent\n' +
  OPT.a + OPT.p + OPT.h + OPT.r + OPT.v + OPT.T;

const BACKUP_USAGE =
  'Usage: dog vdi backup [-s snapshot] [-F from] [-a address] [-p port] [-h] [-T] <vdiname> <backup>\n' +
  'Options:\n' +
  '  -s, --snapshot          specify a snapshot id or tag name\n' +
  '  -F, --from              create a differential backup from the snapshot\n' +
  OPT.a + OPT.p + OPT.h + OPT.T;

// 1.0's is the same without -f, which we add (see collie.8)
const RESTORE_USAGE =
  'Usage: dog vdi restore [-s snapshot] [-f] [-a address] [-p port] [-h] [-T] <vdiname> <backup>\n' +
  'Options:\n' +
  '  -s, --snapshot          specify a snapshot id or tag name\n' +
  '  -f, --force             do operation forcibly\n' +
  OPT.a + OPT.p + OPT.h + OPT.T;

const INVALID_COPIES = (v: string) =>
  `Invalid parameter ${v}\nTo create replicated vdi, set -c x\n  x(1 to 31)   - number of replicated copies\n` +
  'To create erasure coded vdi, set -c x:y\n  x(2,4,8,16)  - number of data strips\n  y(1 to 15)   - number of parity strips\n';

const hyperHint = (max: string) =>
  `VDI size is larger than ${max} bytes, please use '-y' to create a hyper volume with size up to 16 PB bytes ` +
  "or use '-z' to create larger object size volume\n";

interface RawVdi { flag: string; name: string; id: number; vid: string; tag: string }
const rawList = (t: string): RawVdi[] => t.trim().split('\n').filter(Boolean).map((l) => {
  const f = l.split(' ');
  return { flag: f[0], name: f[1], id: Number(f[2]), vid: f[7], tag: f[9] };
});

describe('dog 1.0 texts: vdi', { timeout: 120_000 }, () => {
  it('create and its refusals', async () => {
    expectDog(await dog(['vdi', 'create', 'Alice', '1G']), { code: 0 });
    expectDog(await dog(['vdi', 'create', 'Alice', '1G']), { code: 1, stderr: 'Failed to create VDI Alice: VDI exists already\n' });
    expectDog(await dog(['vdi', 'create', 'Hyper', '5T']), { code: 64, stderr: hyperHint('4.0 TB'), stdout: CREATE_USAGE });
    expectDog(await dog(['vdi', 'create', '-z', '23', 'big9', '9T']), { code: 64, stderr: hyperHint('8.0 TB'), stdout: CREATE_USAGE });
    expectDog(await dog(['vdi', 'create', '-y', 'huge', '17P']), { code: 64, stderr: 'VDI size is too large\n', stdout: CREATE_USAGE });
    for (const args of [['-y', '-z', '23'], ['-z', '23', '-y']]) {
      expectDog(await dog(['vdi', 'create', ...args, 'both', '1G']), { code: 1, stderr: "Don't specify both -y and -z options, please\n" });
    }
    expectDog(await dog(['vdi', 'create', '-z', '19', 'small', '1G']),
      { code: 1, stderr: 'Object Size is larger than 2^20. Please set shift bit larger than 20\n' });
    expectDog(await dog(['vdi', 'create', '-z', '32', 'large', '1G']),
      { code: 1, stderr: 'Object Size is limited to 2^31. Please set shift bit lower than 31\n' });
    for (const v of ['3:1', '0', '32', '2:16']) expectDog(await dog(['vdi', 'create', '-c', v, 'bad', '1G']), { code: 1, stderr: INVALID_COPIES(v) });
    expectDog(await dog(['vdi', 'create', '-y', 'BigHyper', '5T']), { code: 0 });
    // 1.0 checks neither nodes nor zones here (one node, two copies)
    expectDog(await dog(['vdi', 'create', '-c', '2', 'Two', '64M']), { code: 0 });
    expectDog(await dog(['vdi', 'create']), { code: 64, stdout: CREATE_USAGE });
    expectDog(await dog(['vdi', 'list', 'Alice', '-r']), { code: 0, stdout: new RegExp(`^= Alice 0 1073741824 0 0 \\d+ ${hx(hash24('Alice'))} 1  22\n$`) });
    expectDog(await dog(['vdi', 'list', 'Nobody']), {
      code: 0, stdout: '  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n',
    });
  });

  it('read, attributes, delete', async () => {
    expectDog(await dog(['vdi', 'write', 'Alice', '1G'], 'hello'), { code: 0 });
    expectDog(await dog(['vdi', 'read', 'Alice', '2G', '1']), { code: 1, stderr: 'Read offset is beyond the end of the VDI\n' });
    const noVdi = 'Failed to open VDI NoSuchVdi (snapshot id: 0 snapshot tag: ): No VDI found\n';
    expectDog(await dog(['vdi', 'read', 'NoSuchVdi', '0', '1']), { code: 1, stderr: noVdi });
    expectDog(await dog(['vdi', 'setattr', 'Alice', 'mykey', 'myvalue']), { code: 0 });
    expectDog(await dog(['vdi', 'getattr', 'Alice', 'mykey']), { code: 0, stdout: 'myvalue' });
    expectDog(await dog(['vdi', 'getattr', 'Alice', 'nokey']), { code: 5, stderr: "Attribute 'nokey' not found\n" });
    expectDog(await dog(['vdi', 'delete', 'NoSuchVdi']), { code: 0, stderr: noVdi });
    expectDog(await dog(['vdi', 'object', 'location', '-i', '100', 'Alice']),
      { code: 0, stdout: `The inode object 0x${hx(hash24('Alice'))} idx 100 is not allocated\n` });
  });

  it('snapshot, clone, rollback, alter-copy prompts', async () => {
    expectDog(await dog(['vdi', 'snapshot', '-s', 'snap1', 'Alice']), { code: 0 });
    expectDog(await dog(['vdi', 'clone', 'Alice', 'Carol']),
      { code: 64, stderr: "Only snapshot VDIs can be cloned\nPlease specify the '-s' option\n", stdout: CLONE_USAGE });
    expectDog(await dog(['vdi', 'clone', '-s', 'snap1', 'Alice', 'Bob']), { code: 0 });
    expectDog(await dog(['vdi', 'snapshot', 'BigHyper']), { code: 1, stderr: 'creating a snapshot of hypervolume is not supported\n' });
    expectDog(await dog(['vdi', 'read', '-s', '0', 'Alice']), { code: 1, stderr: 'The snapshot id must be larger than zero\n' });
    expectDog(await dog(['vdi', 'rollback', '-s', 'snap1', 'Alice'], 'no\n'), {
      code: 0, stdout: 'This operation discards any changes made since the previous\nsnapshot was taken.  Continue? [yes/no]: ',
    });
    expectDog(await dog(['vdi', 'rollback', '-f', '-s', '1', 'Alice']), { code: 0 });
    expectDog(await dog(['vdi', 'alter-copy', '-c', '1', 'Two'], 'no\n'), {
      code: 0,
      stdout: "    __\n   ()'`;\n   /\\|`  Caution! Changing VDI's redundancy level will affect\n" +
        '  /  |   the VDI itself only and trigger recovery.\n(/_)_|_  Are you sure you want to continue? [yes/no]: ',
    });
    expectDog(await dog(['vdi', 'alter-copy', '-c', '2:1', 'Two']), {
      code: 64, stderr: 'Changing redundancy level of erasure coded vdi is not supported yet.\n', stdout: /^Usage: dog vdi alter-copy /,
    });
    expectDog(await dog(['vdi', 'tree']), {
      code: 0,
      // roots in VDI id order: Bob (316b4), Alice (15d167), ...
      stdout: new RegExp('^Bob---\\(you are here\\)\nAlice---\\[\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d\\]---\\(you are here\\)\n' +
        'Two---\\(you are here\\)\nBigHyper---\\(you are here\\)\n$'),
    });
  });

  describe('backup and restore', () => {
    // farm-and-backup.md B.5: alpha (12 MiB) holds "alpha-v1\n" over its
    // first 6 MiB in a1; a2 adds "alpha-v2b\n" at 4096 and "alpha-v2\n" at 8 MiB.
    const v1 = Buffer.alloc(6 * M, 'alpha-v1\n');
    const a2obj0 = Buffer.from(v1.subarray(0, 4 * M));
    a2obj0.write('alpha-v2b\n', 4096);
    const u32 = (...v: number[]) => Buffer.concat(v.map((x) => { const b = Buffer.alloc(4); b.writeUInt32LE(x >>> 0); return b; }));
    const HEADER = Buffer.from('0100000092119211', 'hex');
    const END = u32(0xffffffff, 0, 0, 0);
    const sector2 = Buffer.alloc(512);
    sector2.write('alpha-v2\n');
    const A1_TO_A2 = Buffer.concat([HEADER, u32(0, 4096, 512, 0), a2obj0.subarray(4096, 4608), u32(2, 0, 512, 0), sector2, END]);
    let listBefore = '';
    const unchanged = async () => {
      expect((await dog(['vdi', 'list', '-r', 'alpha'])).stdout).toBe(listBefore);
    };

    it('backup: the stream of the worked example, byte for byte', async () => {
      expectDog(await dog(['vdi', 'create', 'alpha', '12M']), { code: 0 });
      expectDog(await dog(['vdi', 'write', 'alpha', '0', '6M'], v1), { code: 0 });
      expectDog(await dog(['vdi', 'snapshot', '-s', 'a1', 'alpha']), { code: 0 });
      expectDog(await dog(['vdi', 'write', 'alpha', '4096', '10'], 'alpha-v2b\n'), { code: 0 });
      expectDog(await dog(['vdi', 'write', 'alpha', '8M', '9'], 'alpha-v2\n'), { code: 0 });
      expectDog(await dog(['vdi', 'snapshot', '-s', 'a2', 'alpha']), { code: 0 });

      const b = await dog(['vdi', 'backup', '-F', 'a1', '-s', 'a2', 'alpha']);
      expect(b.code).toBe(0);
      expect(b.stderr).toBe('');
      expect(b.stdoutBuf.length).toBe(1080);
      expect(b.stdoutBuf.equals(A1_TO_A2)).toBe(true);
      // the doc's dump, rows 0, 536 and 1064
      expect(b.stdoutBuf.subarray(0, 32).toString('hex')).toBe('01000000921192110000000000100000' + '0002000000000000616c7068612d7632');
      expect(b.stdoutBuf.subarray(536, 562).toString('hex')).toBe('02000000000000000002000000000000' + '616c7068612d76320a00');
      expect(b.stdoutBuf.subarray(1064).toString('hex')).toBe('ffffffff' + '00'.repeat(12));
      // ids work as well as tags; FROM = TO is the empty stream
      expect((await dog(['vdi', 'backup', '-F', '1', '-s', '2', 'alpha'])).stdoutBuf.equals(A1_TO_A2)).toBe(true);
      const same = await dog(['vdi', 'backup', '-F', 'a2', '-s', 'a2', 'alpha']);
      expect(same.stdoutBuf.equals(Buffer.concat([HEADER, END]))).toBe(true);
      listBefore = (await dog(['vdi', 'list', '-r', 'alpha'])).stdout;
    });

    it('backup: argument errors', async () => {
      const need = { code: 64, stderr: "Please specify snapshots with '-F' and '-s' options\n", stdout: BACKUP_USAGE };
      expectDog(await dog(['vdi', 'backup', 'alpha']), need);
      // not dog 1.0's: without -F (or with -F 0, "not given") a full backup (see vdi-backup-full.test.ts)
      expect((await dog(['vdi', 'backup', '-s', 'a2', 'alpha'])).code).toBe(0);
      expect((await dog(['vdi', 'backup', '-F', '0', '-s', 'a2', 'alpha'])).code).toBe(0);
      expectDog(await dog(['vdi', 'backup', '-F', 'a1', '-s', '0', 'alpha']), { code: 1, stderr: 'The snapshot id must be larger than zero\n' });
      expectDog(await dog(['vdi', 'backup', '-F', 'nosuch', '-s', 'a2', 'alpha']),
        { code: 1, stderr: 'Failed to open VDI alpha (snapshot id: 0 snapshot tag: nosuch): Failed to find requested tag\n' });
      expectDog(await dog(['vdi', 'backup']), { code: 64, stdout: BACKUP_USAGE });
    });

    it('restore: argument errors change nothing', async () => {
      expectDog(await dog(['vdi', 'restore', 'alpha'], A1_TO_A2), {
        code: 64, stderr: "We can restore a backup file only to snapshots\nPlease specify the '-s' option\n", stdout: RESTORE_USAGE,
      });
      expectDog(await dog(['vdi', 'restore', '-s', 'nosuch', 'alpha'], A1_TO_A2), {
        code: 1,
        stderr: "Failed to open VDI alpha (snapshot id: 0 snapshot tag: nosuch): Failed to find requested tag\nSnapshot ID 0 or tag nosuch doesn't exist\n",
      });
      expectDog(await dog(['vdi', 'restore', '-s', '7', 'alpha'], A1_TO_A2), {
        code: 1,
        stderr: "Failed to open VDI alpha (snapshot id: 7 snapshot tag: ): Failed to find requested tag\nSnapshot ID 7 or tag  doesn't exist\n",
      });
      await unchanged();
      // snapshots but no working VDI
      expectDog(await dog(['vdi', 'create', 'beta', '8M']), { code: 0 });
      expectDog(await dog(['vdi', 'snapshot', '-s', 'b1', 'beta']), { code: 0 });
      expectDog(await dog(['vdi', 'delete', 'beta']), { code: 0 });
      expectDog(await dog(['vdi', 'restore', '-s', 'b1', 'beta'], Buffer.concat([HEADER, END])),
        { code: 1, stderr: 'Failed to open VDI beta (snapshot id: 0 snapshot tag: ): No VDI found\n' });
    });

    it('restore: a bad or truncated stream is refused before anything changes (1.0 deletes the working VDI first)', async () => {
      expectDog(await dog(['vdi', 'restore', '-s', 'a1', 'alpha'], Buffer.concat([u32(2, 0x11921192), END])),
        { code: 2, stderr: 'The backup file is corrupted\n' });
      expectDog(await dog(['vdi', 'restore', '-s', 'a1', 'alpha'], HEADER.subarray(0, 5)),
        { code: 2, stderr: 'The backup file is corrupted\n' });
      expectDog(await dog(['vdi', 'restore', '-s', 'a1', 'alpha'], A1_TO_A2.subarray(0, A1_TO_A2.length - 16)),
        { code: 2, stderr: 'failed to read backup data\n' });
      expectDog(await dog(['vdi', 'restore', '-s', 'a1', 'alpha'], A1_TO_A2.subarray(0, 100)),
        { code: 2, stderr: 'failed to read backup data\n' });
      // records that do not fit the VDI (1.0 writes them anyway)
      for (const [idx, off, len] of [[3, 0, 512], [0, 4 * M - 4, 8], [0xfffffffe, 0, 1]]) {
        expectDog(await dog(['vdi', 'restore', '-s', 'a1', 'alpha'], Buffer.concat([HEADER, u32(idx, off, len, 0), Buffer.alloc(Math.min(len, 16)), END])), {
          code: 2,
          stderr: `The backup file is corrupted\nrecord of object ${idx} (offset ${off}, length ${len}) does not fit a VDI of 3 object(s) of 4194304 bytes\n`,
        });
      }
      // a length field of 4 GiB allocates nothing
      expectDog(await dog(['vdi', 'restore', '-s', 'a1', 'alpha'], Buffer.concat([HEADER, u32(0, 0, 0xffffffff, 0)])), {
        code: 2, stderr: 'The backup file is corrupted\nrecord of object 0 (offset 0, length 4294967295) does not fit a VDI of 3 object(s) of 4194304 bytes\n',
      });
      await unchanged();
    });

    it('restore: writes no snapshot holds are kept unless -f', async () => {
      expectDog(await dog(['vdi', 'write', 'alpha', '0', '5'], 'dirty'), { code: 0 });
      const dirtyList = (await dog(['vdi', 'list', '-r', 'alpha'])).stdout;
      expectDog(await dog(['vdi', 'restore', '-s', 'a1', 'alpha'], A1_TO_A2), {
        code: 1,
        stderr: 'alpha has writes that are in no snapshot; restoring would discard them.\nTake a snapshot first, or give -f to discard them.\n',
      });
      expect((await dog(['vdi', 'list', '-r', 'alpha'])).stdout).toBe(dirtyList);
      expect((await dog(['vdi', 'read', 'alpha', '0', '5'])).stdout).toBe('dirty');
    });

    it('restore -f: the restored data becomes a tagless snapshot beside a2, the working VDI sits on a2 again', async () => {
      expectDog(await dog(['vdi', 'restore', '-f', '-s', 'a1', 'alpha'], A1_TO_A2), { code: 0 });
      const l = rawList((await dog(['vdi', 'list', '-r', 'alpha'])).stdout);
      expect(l.map((x) => [x.flag, x.id, x.tag])).toEqual([['s', 1, 'a1'], ['s', 2, 'a2'], ['s', 3, ''], ['=', 0, '']]);
      const a2 = (await dog(['vdi', 'read', '-s', 'a2', 'alpha'])).stdoutBuf;
      expect((await dog(['vdi', 'read', '-s', '3', 'alpha'])).stdoutBuf.equals(a2)).toBe(true);
      expect((await dog(['vdi', 'read', 'alpha'])).stdoutBuf.equals(a2)).toBe(true); // "dirty" is gone, as -f said
      expect((await dog(['vdi', 'tree'])).stdout).toMatch(/^alpha---\[[^\]]+\]-\+-\[[^\]]+\]---\(you are here\)\n {25,}`-\[[^\]]+\]\n/m);
    });

    it('restore of a hand-made stream: unaligned record, reserved field set, an object the base lacks', async () => {
      const stream = Buffer.concat([HEADER, u32(0, 100, 7, 0xdeadbeef), Buffer.from('UNALIGN'), u32(2, 5, 3, 0), Buffer.from('xyz'), END,
        Buffer.from('bytes after the end marker are ignored')]);
      expectDog(await dog(['vdi', 'restore', '-s', 'a1', 'alpha'], stream), { code: 0 });
      const want = Buffer.alloc(12 * M);
      v1.copy(want);
      want.write('UNALIGN', 100);
      want.write('xyz', 8 * M + 5);
      const l = rawList((await dog(['vdi', 'list', '-r', 'alpha'])).stdout);
      const newest = Math.max(...l.filter((x) => x.flag === 's').map((x) => x.id));
      expect(newest).toBe(4);
      expect((await dog(['vdi', 'read', '-s', String(newest), 'alpha'])).stdoutBuf.equals(want)).toBe(true);
    });
  });
});
