// collie --json: each listing and info command prints one JSON document
// whose fields say what the text says (checked against the -r output of
// the same command), sizes in bytes and times in ISO 8601; commands without
// JSON output refuse --json as a usage error before connecting.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { SheepClient, Op, Flag, Res } from '@sheepdog/common';
import { startCluster, runCollie, stopAll, ClusterHandle, COLLIE_BIN, freePort } from '../helpers/cluster.js';

const MB = 1 << 20;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe('collie --json', () => {
  let c: ClusterHandle;
  let port: number;
  const dog = (args: string[], input?: Buffer) => runCollie(args, { port, input });
  const json = async (args: string[]) => {
    const r = await dog([...args, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.endsWith('}\n')).toBe(true);
    return JSON.parse(r.stdout);
  };
  const rawLines = async (args: string[]) => (await dog([...args, '-r'])).stdout.split('\n').filter(Boolean).map((l) => l.split(' '));

  beforeAll(async () => {
    c = await startCluster(2, { args: (i) => ['-z', String(i), ...(i === 0 ? ['-w', 'size=64'] : [])] });
    port = c.nodes[0].port;
    expect((await dog(['cluster', 'format', '--copies=2', '-l'])).code).toBe(0);
    expect((await dog(['vdi', 'create', 'alpha', '64M'])).code).toBe(0);
    expect((await dog(['vdi', 'write', 'alpha', String(4 * MB), '4096'], Buffer.alloc(4096, 1))).code).toBe(0);
    expect((await dog(['vdi', 'snapshot', '-s', 'snap1', 'alpha'])).code).toBe(0);
    expect((await dog(['vdi', 'clone', '-s', 'snap1', 'alpha', 'beta'])).code).toBe(0);
    expect((await dog(['vdi', 'create', 'gamma', '1G'])).code).toBe(0);
  });
  afterAll(stopAll);

  it('vdi list: every VDI and snapshot, as -r lists them', async () => {
    const j = await json(['vdi', 'list']);
    const raw = await rawLines(['vdi', 'list']);
    expect(j.vdis).toHaveLength(raw.length);
    j.vdis.forEach((v: Record<string, unknown>, i: number) => {
      const [flag, name, snapid, size, used, shared, time, vid, copies, tag, shift] = raw[i];
      expect(v.name).toBe(name);
      expect(v.kind).toBe({ s: 'snapshot', c: 'clone', '=': 'vdi' }[flag]);
      expect(v.snapshot_id).toBe(Number(snapid));
      expect(v.size).toBe(Number(size));
      expect(v.used).toBe(Number(used));
      expect(v.shared).toBe(Number(shared));
      expect(v.created).toBe(new Date(Number(time) * 1000).toISOString());
      expect(v.vdi_id).toBe(parseInt(vid, 16));
      expect(v.copies).toBe(Number(copies));
      expect(v.tag).toBe(tag ?? '');
      expect(v.block_size_shift).toBe(Number(shift));
    });
    const snap = j.vdis.find((v: { kind: string }) => v.kind === 'snapshot');
    expect(snap).toMatchObject({ name: 'alpha', tag: 'snap1', snapshot_id: 1, size: 64 * MB, used: 4 * MB, parent_vdi_id: 0 });
    expect(snap.snapshot_time).toMatch(ISO);
    const alpha = j.vdis.find((v: { name: string; kind: string }) => v.name === 'alpha' && v.kind === 'vdi');
    expect(alpha).toMatchObject({ parent_vdi_id: snap.vdi_id, used: 0, shared: 4 * MB, snapshot_time: null });
    expect(j.vdis.find((v: { name: string }) => v.name === 'beta')).toMatchObject({ kind: 'clone', parent_vdi_id: snap.vdi_id });
    // a name picks that VDI and its snapshots
    expect((await json(['vdi', 'list', 'alpha'])).vdis.map((v: { kind: string }) => v.kind)).toEqual(['snapshot', 'vdi']);
  });

  it('vdi tree: children under their parents', async () => {
    const { tree } = await json(['vdi', 'tree']);
    const snap = tree.find((t: { name: string }) => t.name === 'alpha');
    expect(snap.kind).toBe('snapshot');
    expect(snap.children.map((x: { name: string; kind: string }) => `${x.name}/${x.kind}`).sort()).toEqual(['alpha/vdi', 'beta/clone']);
    expect(tree.find((t: { name: string }) => t.name === 'gamma')).toMatchObject({ kind: 'vdi', children: [] });
  });

  it('vdi object map / location and vdi track', async () => {
    const map = await json(['vdi', 'object', 'map', 'alpha', '-s', 'snap1']);
    expect(map.objects).toEqual([{ index: 1, vdi_id: map.vdi_id, oid: `${map.vdi_id.toString(16).padStart(8, '0')}00000001` }]);
    const loc = await json(['vdi', 'object', 'location', 'alpha', '-i', '1']);
    expect(loc).toMatchObject({ object: 'data', index: 1, allocated: true, copies: 2, oid: map.objects[0].oid });
    expect(loc.nodes.map((n: { has_object: boolean }) => n.has_object)).toEqual([true, true]);
    expect(loc.placement.sort()).toEqual(c.nodes.map((n) => `127.0.0.1:${n.port}`).sort());
    expect((await json(['vdi', 'object', 'location', 'alpha', '-i', '9'])).allocated).toBe(false);
    const inode = await json(['vdi', 'object', 'location', 'alpha']);
    expect(inode).toMatchObject({ object: 'inode', index: null, allocated: true });
    const tr = await json(['vdi', 'track', 'alpha', '-i', '1']);
    expect(tr).toMatchObject({ oid: loc.oid, index: 1, allocated: true });
    const info = await json(['cluster', 'info']);
    expect(tr.epochs.map((e: { epoch: number }) => e.epoch)).toEqual(info.epochs.map((e: { epoch: number }) => e.epoch));
    expect(tr.epochs[0].nodes.sort()).toEqual(loc.placement.sort());
  });

  it('node list / info / recovery / stat / md info', async () => {
    const nl = await json(['node', 'list']);
    const raw = await rawLines(['node', 'list']);
    expect(nl.nodes.map((n: Record<string, unknown>) => [String(n.id), `${n.address}:${n.port}`, String(n.vnodes), String(n.zone)])).toEqual(raw);
    const ni = await json(['node', 'info']);
    const rawInfo = await rawLines(['node', 'info']);
    // free space moves (other programs write to the same disk): ids and used bytes must match
    ni.nodes.forEach((n: Record<string, number>, i: number) => {
      expect([String(n.id), String(n.used)]).toEqual([rawInfo[i][0], rawInfo[i][2]]);
      expect(n.size - n.used).toBe(n.avail);
      expect(Math.abs(n.size - Number(rawInfo[i][1]))).toBeLessThan(1 << 30);
    });
    expect(ni.total_virtual_image_size).toBe(64 * MB + 64 * MB + 1024 * MB);
    expect(await json(['node', 'recovery'])).toEqual({ nodes: [], reclaiming: [] });
    const st = await json(['node', 'stat']);
    expect(st.time).toMatch(ISO);
    expect(st.client.total).toBeGreaterThan(0);
    expect(Object.keys(st.peer)).toEqual(['active', 'total', 'write', 'read', 'remove', 'flush', 'bytes_written', 'bytes_read']);
    const md = await json(['node', 'md', 'info', '-A']);
    expect(md.nodes.map((n: { id: number }) => n.id)).toEqual([0, 1]);
    expect(md.nodes.map((n: { port: number; disks: { path: string }[] }) => `${n.port} ${n.disks[0].path}`).sort())
      .toEqual(c.nodes.map((n) => `${n.port} ${n.dir}/obj`).sort());
  });

  it('node stat -w --json streams JSON Lines', async () => {
    const p = spawn(process.execPath, [COLLIE_BIN, 'node', 'stat', '-w', '--json', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    await new Promise<void>((resolve) => p.stdout!.on('data', (b) => { out += b; if (out.split('\n').length > 2) resolve(); }));
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await exited;
    const [first, second] = out.split('\n').slice(0, 2).map((l) => JSON.parse(l));
    expect(first.interval).toBeNull();
    expect(second.interval).toBe(1);
    expect(second.client.total).toBeGreaterThanOrEqual(0);
  });

  it('cluster info / check', async () => {
    const ci = await json(['cluster', 'info']);
    expect(ci).toMatchObject({ status: 'running', running: true, auto_recovery: true, store: 'plain', copies: 2, redundancy: '2', zones: 2 });
    expect(ci.created).toMatch(ISO);
    expect(ci.epochs[0].nodes.map((n: { port: number }) => n.port).sort()).toEqual(c.nodes.map((n) => n.port).sort());
    expect(ci.epochs.length).toBe((await rawLines(['cluster', 'info'])).length - 1);
    const chk = await json(['cluster', 'check']);
    expect(chk.ok).toBe(true);
    expect(chk.vdis.map((v: { name: string }) => v.name).sort()).toEqual(['alpha', 'alpha', 'beta', 'gamma']);
    for (const v of chk.vdis) expect(v).toMatchObject({ exit_status: 0, ok: true, fixed: 0 });
    expect(chk.vdis[0].messages).toContain(`finish check&repair ${chk.vdis[0].name}`);
  });

  it('vdi lock list and vdi cache info', async () => {
    const cl = new SheepClient({ port });
    try {
      const payload = Buffer.alloc(512);
      payload.write('gamma');
      expect((await cl.send({ opcode: Op.LOCK_VDI, flags: Flag.CMD_WRITE, protoVer: 1 }, payload)).rsp.result).toBe(Res.SUCCESS);
    } finally {
      cl.close();
    }
    const { locks } = await json(['vdi', 'lock', 'list']);
    expect(locks).toHaveLength(1);
    expect(locks[0]).toMatchObject({ name: 'gamma', state: 'locked', owners: [`127.0.0.1:${port}`] });
    expect((await dog(['vdi', 'lock', 'unlock', 'gamma'])).code).toBe(0);
    expect(await json(['vdi', 'lock', 'list'])).toEqual({ locks: [] });

    const ci = await json(['vdi', 'cache', 'info']);
    expect(ci).toMatchObject({ size: 64 * MB, directio: false });
    expect(Array.isArray(ci.vdis)).toBe(true);
  });

  it('--json on a command without JSON output is a usage error, before connecting', async () => {
    const nobody = await freePort();
    for (const [cmd, args] of [['vdi create', ['x', '1G']], ['node recovery get-throttle', []], ['vdi graph', []]] as const) {
      const r = await runCollie([...cmd.split(' '), ...args, '--json', '-p', String(nobody)]);
      expect(r.code).toBe(64);
      expect(r.stderr).toBe(`collie: '${cmd}' has no JSON output (--json)\n`);
      expect(r.stdout).toMatch(/^Usage: collie /);
    }
  });
});
