// collie vdi backup without -F (not in dog 1.0): a full backup in dog's
// stream format, against a snapshot of zeros; restored onto the empty
// snapshot of a new VDI it gives back every byte. Real sheep, real collie.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { startFormatted, stopAll, runCollie, SheepProc } from '../helpers/cluster.js';

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const M = 1 << 20;
let s: SheepProc;
const dog = (args: string[], input?: Buffer | string) => runCollie(args, { port: s.port, input });

beforeAll(async () => {
  s = await startFormatted(1);
}, 60_000);
afterAll(async () => {
  await stopAll();
});

describe('vdi backup without -F', { timeout: 120_000 }, () => {
  it('is a full backup: records only where the snapshot has data, restored onto an empty snapshot byte for byte', async () => {
    expect((await dog(['vdi', 'create', 'src', '12M'])).code).toBe(0);
    const a = randomBytes(M);
    expect((await dog(['vdi', 'write', 'src', '0', String(M)], a)).code).toBe(0);
    expect((await dog(['vdi', 'write', 'src', String(9 * M), '6'], 'tail!\n')).code).toBe(0);
    expect((await dog(['vdi', 'snapshot', '-s', 'full', 'src'])).code).toBe(0);
    const b = await dog(['vdi', 'backup', '-s', 'full', 'src']);
    expect(b.code, b.stderr).toBe(0);
    const st = b.stdoutBuf;
    // header, then idx 0 (the 1 MiB written, one span) and idx 2 (one 512-byte sector), the end marker
    expect(st.subarray(0, 8).toString('hex')).toBe('0100000092119211');
    expect([st.readUInt32LE(8), st.readUInt32LE(12), st.readUInt32LE(16)]).toEqual([0, 0, M]);
    const r2 = 8 + 16 + M;
    expect([st.readUInt32LE(r2), st.readUInt32LE(r2 + 4), st.readUInt32LE(r2 + 8)]).toEqual([2, M, 512]);
    expect(st.length).toBe(8 + 16 + M + 16 + 512 + 16);
    expect(st.subarray(st.length - 16).toString('hex')).toBe('ffffffff' + '00'.repeat(12));

    // onto a new VDI's empty snapshot
    expect((await dog(['vdi', 'create', 'copy', '12M'])).code).toBe(0);
    expect((await dog(['vdi', 'snapshot', '-s', 'empty', 'copy'])).code).toBe(0);
    const r = await dog(['vdi', 'restore', '-s', 'empty', 'copy'], st);
    expect(r.code, r.stderr).toBe(0);
    const want = md5((await dog(['vdi', 'read', '-s', 'full', 'src', '0', String(12 * M)])).stdoutBuf);
    // as dog restores: the restored data is a new snapshot (id 2, no tag); the working VDI stays on the old parent
    expect(md5((await dog(['vdi', 'read', '-s', '2', 'copy', '0', String(12 * M)])).stdoutBuf)).toBe(want);
    // without -s it is still dog's usage error
    expect((await dog(['vdi', 'backup', 'src'])).code).toBe(64);
  });
});
