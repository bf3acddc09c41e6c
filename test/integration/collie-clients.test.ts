// Every caller in docs/clients.md, re-implemented from its public parser and
// fed with our real output.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { startFormatted, stopAll, run, ROOT, SheepProc } from '../helpers/cluster.js';

let s: SheepProc;
const localId = () => `local:collie-${process.pid}-${randomBytes(4).toString('hex')}`;
const COLLIE = path.join(ROOT, 'collie/bin/collie.js');
const DOG = path.join(ROOT, 'collie/bin/dog.js');

beforeAll(async () => {
  s = await startFormatted(1, ['-c', localId(), '-z', '0']);
});
afterAll(async () => {
  await stopAll();
});

// ---- libvirt storage_backend_sheepdog.c --------------------------------------

/** virStrToLong_ull: strtoull (leading blanks allowed) with an end pointer. */
function strtoull(s: string, p: number): { v: bigint; end: number } | undefined {
  const m = /^\s*(\d+)/.exec(s.slice(p));
  if (!m) return undefined;
  return { v: BigInt(m[1]), end: p + m[0].length };
}

function libvirtParseNodeInfo(output: string): { capacity: bigint; allocation: bigint } | undefined {
  let p = 0;
  for (;;) {
    const nl = output.indexOf('\n', p);
    if (nl < 0) return undefined; // the Total line must end with a newline
    const next = nl + 1;
    if (output.startsWith('Total ', p)) {
      const a = strtoull(output, p + 6);
      if (!a || a.end + 1 > next) return undefined;
      const b = strtoull(output, a.end + 1);
      if (!b) return undefined;
      return { capacity: a.v, allocation: b.v };
    }
    p = next;
  }
}

function libvirtVolumeNames(output: string): string[] {
  return output.split('\n').map((l) => l.split(' ')).filter((c) => c.length > 2).map((c) => c[1]);
}

function libvirtParseVdiList(output: string): { capacity: bigint; allocation: bigint } | undefined {
  let p = 0;
  while (p < output.length) {
    const nl = output.indexOf('\n', p);
    const next = nl < 0 ? output.length : nl + 1;
    if (output[p] === '=') {
      if (p + 2 < next) p += 2; else return undefined;
      while (p < output.length && output[p] !== ' ') {
        if (output[p] === '\\') p++;
        p++;
      }
      const id = strtoull(output, p);
      if (!id) return undefined;
      const cap = strtoull(output, id.end + 1);
      if (!cap) return undefined;
      const alloc = strtoull(output, cap.end + 1);
      if (!alloc) return undefined;
      return { capacity: cap.v, allocation: alloc.v };
    }
    p = next;
  }
  return undefined;
}

describe('libvirt sheepdog pool backend', { timeout: 180_000 }, () => {
  const collie = (args: string[]) => run(COLLIE, [...args, '-a', '127.0.0.1', '-p', String(s.port)]);

  it('parser accepts the documented samples', () => {
    expect(libvirtParseNodeInfo('0 15245667872 117571104 0%\nTotal 15245667872 117571104 0% 20972341\n'))
      .toEqual({ capacity: 15245667872n, allocation: 117571104n });
    expect(libvirtParseNodeInfo('Total 15245667872 117571104 0% 20972341')).toBeUndefined();
    expect(libvirtParseVdiList('= test 3 10 20 0 1336557216 7c2b27\n')).toEqual({ capacity: 10n, allocation: 20n });
    expect(libvirtParseVdiList('= test\\ with\\ spaces 3 10 20 0 1336557216 7c2b27\n')).toEqual({ capacity: 10n, allocation: 20n });
  });

  it('create, refresh pool, refresh volume, resize, delete', async () => {
    expect((await collie(['vdi', 'create', 'lv1', String(64 * 1024 * 1024)])).code).toBe(0);
    expect((await collie(['vdi', 'create', 'lv with spaces', '10485760'])).code).toBe(0);
    const w = await run(COLLIE, ['vdi', 'write', 'lv1', '0', '4M', '-a', '127.0.0.1', '-p', String(s.port)], { input: randomBytes(4 << 20) });
    expect(w.code).toBe(0);

    const ni = await collie(['node', 'info', '-r']);
    const pool = libvirtParseNodeInfo(ni.stdout);
    expect(pool).toBeDefined();
    expect(pool!.capacity).toBeGreaterThan(0n);
    expect(pool!.allocation).toBeLessThanOrEqual(pool!.capacity);

    const names = libvirtVolumeNames((await collie(['vdi', 'list', '-r'])).stdout);
    expect(names).toContain('lv1');

    const one = libvirtParseVdiList((await collie(['vdi', 'list', 'lv1', '-r'])).stdout);
    expect(one).toEqual({ capacity: 64n << 20n, allocation: 4n << 20n });
    const sp = libvirtParseVdiList((await collie(['vdi', 'list', 'lv with spaces', '-r'])).stdout);
    expect(sp).toEqual({ capacity: 10485760n, allocation: 0n });

    expect((await collie(['vdi', 'resize', 'lv1', String(128 * 1024 * 1024)])).code).toBe(0);
    expect(libvirtParseVdiList((await collie(['vdi', 'list', 'lv1', '-r'])).stdout)!.capacity).toBe(128n << 20n);
    expect((await collie(['vdi', 'delete', 'lv1'])).code).toBe(0);
    expect(libvirtParseVdiList((await collie(['vdi', 'list', 'lv1', '-r'])).stdout)).toBeUndefined();
  });
});

// ---- OpenStack Cinder sheepdog driver ----------------------------------------

describe('OpenStack Cinder driver', { timeout: 180_000 }, () => {
  const dog = (sub: string, op: string, args: string[] = [], input?: Buffer) =>
    run(DOG, [sub, op, '-a', '127.0.0.1', '-p', String(s.port), ...args], { env: { LC_ALL: 'C', LANG: 'C' }, input });
  const statsPattern = /^[\w\s%]*Total\s(\d+)\s(\d+)*/;

  it('parser accepts the documented samples', () => {
    const m = statsPattern.exec('\n0 107287605248 3623897354 3%\nTotal 107287605248 3623897354 3% 54760833024\n');
    expect(m && [m[1], m[2]]).toEqual(['107287605248', '3623897354']);
    expect('\n0 127.0.0.1:7000 128 1\n'.split('\n').filter((l) => l.trim()).map((l) => l.split(/\s+/)[1].split(':')[0])).toEqual(['127.0.0.1']);
  });

  it('cluster status, stats, hosts', async () => {
    const ci = await dog('cluster', 'info');
    expect(ci.stdout.startsWith('Cluster status: running')).toBe(true);
    const ni = await dog('node', 'info', ['-r']);
    const m = statsPattern.exec(ni.stdout);
    expect(m).not.toBeNull();
    expect(BigInt(m![1])).toBeGreaterThan(0n);
    expect(BigInt(m![2])).toBeLessThanOrEqual(BigInt(m![1]));
    const nl = await dog('node', 'list', ['-r']);
    const hosts = nl.stdout.split('\n').filter((l) => l.trim()).map((l) => l.split(/\s+/)[1].split(':')[0]);
    expect(hosts).toEqual(['127.0.0.1']);
  });

  it('volume lifecycle', async () => {
    expect((await dog('vdi', 'create', ['volume-1', '10G'])).code).toBe(0);
    const l = await dog('vdi', 'list', ['volume-1', '-r']);
    expect(l.stdout).toMatch(/^= volume-1 0 10737418240 0 0 \d+ [0-9a-f]+ 1  22\n$/);
    const absent = await dog('vdi', 'list', ['volume-404', '-r']);
    expect(absent.code).toBe(0);
    expect(absent.stdout).toBe('');

    const data = randomBytes(1 << 20);
    expect((await dog('vdi', 'write', ['volume-1', '4096', String(data.length)], data)).code).toBe(0);
    expect((await dog('vdi', 'read', ['volume-1', '4096', String(data.length)])).stdoutBuf.equals(data)).toBe(true);
    expect((await dog('vdi', 'snapshot', ['-s', 'snap-1', 'volume-1'])).code).toBe(0);
    expect((await dog('vdi', 'read', ['-s', 'snap-1', 'volume-1', '4096', '1M'])).stdoutBuf.equals(data)).toBe(true);
    expect((await dog('vdi', 'resize', ['volume-1', String(20 * 2 ** 30)])).code).toBe(0);
    expect((await dog('vdi', 'delete', ['-s', 'snap-1', 'volume-1'])).code).toBe(0);
    expect((await dog('vdi', 'delete', ['volume-1'])).code).toBe(0);

    // deleting what is already gone is tolerated: exit 0 and these endings
    const gone = await dog('vdi', 'delete', ['volume-1']);
    expect(gone.code).toBe(0);
    expect(gone.stderr.trimEnd().endsWith(': No VDI found')).toBe(true);
    expect((await dog('vdi', 'create', ['volume-2', '1G'])).code).toBe(0);
    const nosnap = await dog('vdi', 'delete', ['-s', 'snap-x', 'volume-2']);
    expect(nosnap.code).toBe(0);
    expect(nosnap.stderr.trimEnd().endsWith(': Failed to find requested tag')).toBe(true);
  });
});

// ---- Proxmox VE SheepdogPlugin.pm --------------------------------------------

describe('Proxmox VE storage plugin', { timeout: 180_000 }, () => {
  const collie = (args: string[]) => run(COLLIE, [...args, '-p', String(s.port)]);
  const imageRe = /(=|c) ((vm|base)-(\d+)-\S+)\s+(\d+)\s+(\d+)\s(\d+)\s(\d+)\s(\d+)\s(\S+)\s(\d+)/;
  const snapRe = /s (\S+) (\d+) (\d+) (\d+) (\d+) (\d+) (\S+) (\d+) (\S+)/;

  function sheepdogLs(list: string, graph: string) {
    const images: Record<string, { size: bigint; vmid: string; vid: string; parent?: string }> = {};
    const snaps: { name: string; tag: string; vid: string }[] = [];
    for (const raw of list.split('\n')) {
      const line = raw.trim();
      const m = imageRe.exec(line);
      if (m) images[m[2]] = { size: BigInt(m[6]), vmid: m[4], vid: m[10] };
      const sm = snapRe.exec(line);
      if (sm) snaps.push({ name: sm[1], tag: sm[9], vid: sm[7] });
    }
    const parentOf: Record<string, string> = {};
    const nameOf: Record<string, string> = {};
    let last = '';
    for (const raw of graph.split('\n')) {
      const line = raw.trim();
      const e = /"(\S+)"\s->\s"(\S+)"/.exec(line);
      if (e) {
        parentOf[e[2]] = e[1];
        last = e[2];
      }
      const g = /group\s=\s"(\S+)",/.exec(line);
      if (g) nameOf[last] = g[1];
    }
    for (const img of Object.values(images)) {
      const p = parentOf[img.vid];
      if (p && p !== '0') img.parent = nameOf[p];
    }
    return { images, snaps };
  }

  it('images, snapshots, linked clones, pool size', async () => {
    expect((await collie(['vdi', 'create', 'vm-100-disk-1', '1024k'])).code).toBe(0);
    expect((await collie(['vdi', 'create', 'base-101-disk-0', String(4 << 20)])).code).toBe(0);
    expect((await collie(['vdi', 'snapshot', '-s', '__base__', 'base-101-disk-0'])).code).toBe(0);
    expect((await collie(['vdi', 'clone', '-s', '__base__', 'base-101-disk-0', 'vm-102-disk-0'])).code).toBe(0);
    expect((await collie(['vdi', 'snapshot', '-s', 'snap1', 'vm-100-disk-1'])).code).toBe(0);

    const list = (await collie(['vdi', 'list', '-r'])).stdout;
    const graph = (await collie(['vdi', 'graph'])).stdout;
    const { images, snaps } = sheepdogLs(list, graph);
    expect(images['vm-100-disk-1']).toMatchObject({ size: 1n << 20n, vmid: '100' });
    expect(images['base-101-disk-0']).toMatchObject({ size: 4n << 20n, vmid: '101' });
    expect(images['vm-102-disk-0']).toMatchObject({ vmid: '102', parent: 'base-101-disk-0' });
    expect(snaps).toEqual(expect.arrayContaining([
      expect.objectContaining({ name: 'vm-100-disk-1', tag: 'snap1' }),
      expect.objectContaining({ name: 'base-101-disk-0', tag: '__base__' }),
    ]));

    const ni = (await collie(['node', 'info', '-r'])).stdout;
    const tot = ni.split('\n').map((l) => /^Total\s(\d+)\s(\d+)\s/.exec(l)).find(Boolean);
    expect(tot).toBeTruthy();
    expect(BigInt(tot![1])).toBeGreaterThan(0n);

    expect((await collie(['vdi', 'rollback', '-f', '-s', 'snap1', 'vm-100-disk-1'])).code).toBe(0);
    expect((await collie(['vdi', 'resize', 'vm-100-disk-1', String(2 << 20)])).code).toBe(0);
    expect((await collie(['vdi', 'delete', '-s', 'snap1', 'vm-100-disk-1'])).code).toBe(0);
    expect((await collie(['vdi', 'delete', 'vm-100-disk-1'])).code).toBe(0);
    const after = sheepdogLs((await collie(['vdi', 'list', '-r'])).stdout, '');
    expect(after.images['vm-100-disk-1']).toBeUndefined();
    expect(after.snaps.find((x) => x.name === 'vm-100-disk-1')).toBeUndefined();
  });
});
