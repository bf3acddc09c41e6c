// collie cluster/node commands against a real sheep, from unformatted to shutdown.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { SheepClient, Op, Flag, Res, hash24 } from '@sheepdog/common';
import { startSheep, stopAll, runCollie, SheepProc } from '../helpers/cluster.js';

let s: SheepProc;
const localId = () => `local:collie-${process.pid}-${randomBytes(4).toString('hex')}`;
const dog = (args: string[], input?: string) => runCollie(args, { port: s.port, input });

beforeAll(async () => {
  s = await startSheep({ args: ['-c', localId(), '-z', '0'] });
});
afterAll(async () => {
  await stopAll();
});

describe('collie cluster and node commands', { timeout: 120_000 }, () => {
  it('before format', async () => {
    const info = await dog(['cluster', 'info']);
    expect(info.code).toBe(0);
    expect(info.stdout).toBe('Cluster status: Waiting for cluster to be formatted\n\n');

    const nl = await dog(['node', 'list']);
    expect(nl.code).toBe(0);
    expect(nl.stdout).toBe(`  Id   Host:Port         V-Nodes       Zone\n   0   ${`127.0.0.1:${s.port}`.padEnd(20)}\t128          0\n`);

    const c = await dog(['vdi', 'create', 'NotYet', '10M'], 'yes\n');
    expect(c.code).toBe(1);
    expect(c.stderr).toBe('Failed to create VDI NotYet: Waiting for cluster to be formatted\n');
  });

  it('format with an unknown store lists the stores', async () => {
    const f = await dog(['cluster', 'format', '-b', 'nosuch', '-f']);
    expect(f.code).toBe(2); // 1.0 exits 2 here, although the store list was fetched
    expect(f.stdout.split('\n').slice(0, 3)).toEqual(['using backend nosuch store', 'Available stores:', '---------------------------------------']);
    expect(f.stdout).toMatch(/plain/);
    expect(f.stderr).toBe('Format failed: Targeted backend store is not found\n');
  });

  it('format and info', async () => {
    const f = await dog(['cluster', 'format', '--copies', '1', '-l']);
    expect(f.code).toBe(0);
    expect(f.stdout).toBe('using backend plain store\n');

    const info = await dog(['cluster', 'info']);
    expect(info.code).toBe(0);
    const lines = info.stdout.split('\n');
    expect(lines[0]).toBe('Cluster status: running, auto-recovery enabled');
    expect(lines[1]).toBe('');
    expect(lines[2]).toMatch(/^Cluster created at \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$/);
    expect(lines[3]).toBe('');
    expect(lines[4]).toBe('Epoch Time           Version [Host:Port:V-Nodes,,,]');
    expect(lines[5]).toMatch(new RegExp(`^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d      1 \\[127\\.0\\.0\\.1:${s.port}:128\\]$`));
    expect(lines.length).toBe(7);

    const v = await dog(['cluster', 'info', '-v']);
    expect(v.stdout.split('\n').slice(0, 5)).toEqual([
      'Cluster status: running, auto-recovery enabled',
      'Cluster store: plain with 1 redundancy policy',
      'Cluster vnodes strategy: auto',
      'Cluster vnode mode: node',
      lines[2],
    ]);

    const r = await dog(['cluster', 'info', '-r']);
    expect(r.stdout).toMatch(new RegExp(`^running, auto-recovery enabled\\n\\n\\d+ 1 \\[127\\.0\\.0\\.1:${s.port}:128\\]\\n$`));
    const sec = Number(/\n\n(\d+) /.exec(r.stdout)![1]);
    expect(Math.abs(sec - Date.now() / 1000)).toBeLessThan(60);
  });

  it('node list -r and node info', async () => {
    expect((await dog(['node', 'list', '-r'])).stdout).toBe(`0 127.0.0.1:${s.port} 128 0\n`);
    const info = await dog(['node', 'info']);
    expect(info.code).toBe(0);
    const l = info.stdout.split('\n');
    expect(l[0]).toBe('Id\tSize\tUsed\tAvail\tUse%');
    expect(l[1]).toMatch(/^ 0\t\d+(\.\d)? [MGTP]B\t\d+(\.\d)? [MGTP]B\t\d+(\.\d)? [MGTP]B\t *\d+%$/);
    expect(l[2]).toMatch(/^Total\t/);
    expect(l[3]).toBe('');
    expect(l[4]).toBe('Total virtual image size\t0.0 MB');

    const raw = await dog(['node', 'info', '-r']);
    const m = /^0 (\d+) (\d+) (\d+) (\d+)%\nTotal (\d+) (\d+) (\d+) (\d+)% (\d+)\n$/.exec(raw.stdout);
    expect(m).not.toBeNull();
    const [size, used, avail] = [m![1], m![2], m![3]].map(BigInt);
    expect(size).toBeGreaterThan(0n);
    expect(used + avail).toBe(size);
    expect(m![5]).toBe(m![1]);
    expect(m![9]).toBe('0');
  });

  it('node stat / recovery / throttle / log level', async () => {
    const st = await dog(['node', 'stat']);
    expect(st.code).toBe(0);
    const l = st.stdout.split('\n');
    expect(l[0]).toBe('Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD');
    expect(l[1]).toMatch(/^Client(\t\d+){6}\t\S+ [MGT]B\t\S+ [MGT]B$/);
    expect(l[2]).toMatch(/^Peer(\t\d+){6}\t\S+ [MGT]B\t\S+ [MGT]B$/);

    const rec = await dog(['node', 'recovery']);
    expect(rec.stdout).toBe('Nodes In Recovery:\n  Id   Host:Port         V-Nodes       Zone       Progress\n');
    expect((await dog(['node', 'recovery', '-P'])).code).toBe(0);

    expect((await dog(['node', 'recovery', 'set-throttle', '1', '100'])).code).toBe(0);
    expect((await dog(['node', 'recovery', 'get-throttle'])).stdout).toBe('max (1), interval (100)\n');
    expect((await dog(['node', 'recovery', 'set-throttle', '0', '0'])).code).toBe(0);
    expect((await dog(['node', 'recovery', 'get-throttle'])).stdout).toBe('max (0), interval (0)\n');

    expect((await dog(['node', 'log', 'level', 'set', 'debug'])).code).toBe(0);
    expect((await dog(['node', 'log', 'level', 'get'])).stdout).toBe('debug (7)\n');
    expect((await dog(['node', 'log', 'level', 'set', '6'])).code).toBe(0);
    expect((await dog(['node', 'log', 'level', 'get'])).stdout).toBe('info (6)\n');
    const bad = await dog(['node', 'log', 'level', 'set', 'loud']);
    expect(bad.code).toBe(64);
    expect(bad.stderr.split('\n')[0]).toBe('Invalid log level: loud');
  });

  it('recover enable/disable, alter-copy, reweight', async () => {
    const d = await dog(['cluster', 'recover', 'disable']);
    expect(d.code).toBe(0);
    expect((await dog(['cluster', 'info'])).stdout.split('\n')[0]).toBe('Cluster status: running, auto-recovery disabled');
    expect((await dog(['cluster', 'recover', 'enable'])).stdout).toBe('Cluster recovery: enable\n');
    expect((await dog(['cluster', 'info'])).stdout.split('\n')[0]).toBe('Cluster status: running, auto-recovery enabled');
    const a = await dog(['cluster', 'alter-copy', '-c', '1']);
    expect(a.stdout).toBe("The cluster's redundancy level is already set to 1.\n");
    const too = await dog(['cluster', 'alter-copy', '-c', '2']);
    expect(too.code).toBe(1);
    expect(too.stderr).toBe('There are not enough nodes(1) to hold the copies(2)\n');
    expect((await dog(['cluster', 'reweight'])).code).toBe(0);
  });

  it('vdi lock list / unlock (cluster formatted with -l)', async () => {
    expect((await dog(['vdi', 'create', 'Locked', '10M'])).code).toBe(0);
    const c = new SheepClient({ port: s.port });
    try {
      const payload = Buffer.alloc(512);
      payload.write('Locked');
      const r = await c.send({ opcode: Op.LOCK_VDI, flags: Flag.CMD_WRITE, protoVer: 1 }, payload);
      expect(r.rsp.result).toBe(Res.SUCCESS);
    } finally {
      c.close();
    }
    const vid = hash24('Locked').toString(16);
    const l = await dog(['vdi', 'lock', 'list']);
    expect(l.stdout).toBe('  Name         Id  VDI id  Tag            Owner node(s)\n' +
      `  Locked        0 ${vid.padStart(7)}                 127.0.0.1:${s.port}\n`);
    expect((await dog(['vdi', 'lock', 'list', '-r'])).stdout).toBe(`Locked 0 ${vid}  127.0.0.1:${s.port}\n`);
    expect((await dog(['vdi', 'lock', 'unlock', 'Locked'])).code).toBe(0);
    expect((await dog(['vdi', 'lock', 'list', '-r'])).stdout).toBe('');
    const again = await dog(['vdi', 'lock', 'unlock', 'Locked']);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe('VDI Locked is not locked\n');
  });

  it('shutdown', async () => {
    const r = await dog(['cluster', 'shutdown']);
    expect(r.code).toBe(0);
    await s.exited;
    const nl = await dog(['node', 'list']);
    expect(nl.code).toBe(2);
    expect(nl.stderr).toBe(`failed to connect to 127.0.0.1:${s.port}: Connection refused\n`.repeat(2) + 'Failed to get node list\n');
  });
});
