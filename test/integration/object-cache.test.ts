// The object cache (sheep -w): a write-back cache of VDI objects on the
// node the client talks to. Two-node clusters: a storage node (no cache)
// and a gateway node with the cache (-g -w), as upstream deployments did.
// "Does the cluster have it?" is answered by reading through the storage
// node, which knows nothing about the gateway's cache.
import { describe, it, expect, afterAll, afterEach } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import {
  SheepClient, openVdi, Op, Flag, Res, ClusterFlag, timestamp64, vidToVdiOid, vidToDataOid, decodeCacheInfo, CacheInfo,
} from '@sheepdog/common';
import { startSheep, stopAll, runCollie, waitFor, uniqueClusterId, freePort, waitForPort, SheepProc, run, SHEEP_BIN } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { RawConn, NBD } from '../helpers/nbd-client.js';

const MB = 1 << 20;
const OBJ = 4 * MB;

interface Pair {
  spec: string;
  store: SheepProc;
  gw: SheepProc;
  nbdPort?: number;
}

async function format(port: number, copies = 1): Promise<void> {
  const c = new SheepClient({ port });
  try {
    const r = await c.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES } }, Buffer.from('plain\0'));
    if (r.rsp.result !== Res.SUCCESS) throw new Error(`format failed: ${r.rsp.result}`);
  } finally {
    c.close();
  }
}

/** A storage node, then a gateway-only node with the object cache. */
async function startPair(cacheSpec: string | undefined, o: { nbd?: boolean; gwDir?: string } = {}): Promise<Pair> {
  const spec = `local:${uniqueClusterId()}`;
  const store = await startSheep({ cluster: spec, args: ['-z', '1'] });
  await format(store.port);
  const nbdPort = o.nbd ? await freePort() : undefined;
  const args = ['-z', '0', '-g', ...(cacheSpec ? ['-w', cacheSpec] : []), ...(nbdPort ? ['--nbd', `127.0.0.1:${nbdPort}`] : [])];
  const gw = await startSheep({ cluster: spec, args, dir: o.gwDir });
  if (nbdPort) await waitForPort(nbdPort);
  return { spec, store, gw, nbdPort };
}

async function flushVdi(c: SheepClient, vid: number, flags = Flag.CMD_CACHE): Promise<number> {
  const r = await c.send({ opcode: Op.FLUSH_VDI, protoVer: 0, flags, obj: { oid: vidToVdiOid(vid) } });
  return r.rsp.result;
}

async function cacheInfo(port: number): Promise<CacheInfo> {
  const c = new SheepClient({ port });
  try {
    const r = await c.send({ opcode: Op.GET_CACHE_INFO, dataLength: 1 << 16 });
    expect(r.rsp.result).toBe(Res.SUCCESS);
    return decodeCacheInfo(r.data);
  } finally {
    c.close();
  }
}

/** Read a VDI range the way a fresh client of `port` sees it (cluster index, no cache). */
async function clusterRead(port: number, name: string, off: number, len: number): Promise<Buffer> {
  const w = new Wire(port);
  try {
    return await w.readVdi(await w.vid(name), off, len);
  } finally {
    w.close();
  }
}

const pattern = (seed: number, n: number) => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4) b.writeUInt32LE((seed * 2654435761 + i) >>> 0, i);
  return b;
};

describe('object cache', () => {
  const clients: { close(): void }[] = [];
  const client = (port: number) => {
    const c = new SheepClient({ port, timeout: 30_000 });
    clients.push(c);
    return c;
  };
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await stopAll();
  });
  afterAll(stopAll);

  it('FLUSH_VDI answers SUCCESS with -w and INVALID_PARMS without', async () => {
    const p = await startPair('size=64');
    const w = new Wire(p.gw.port);
    clients.push(w);
    expect((await w.newVdi('f', 16n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    const vid = await w.vid('f');
    expect(await flushVdi(client(p.gw.port), vid)).toBe(Res.SUCCESS);
    expect(await flushVdi(client(p.gw.port), vid, 0)).toBe(Res.SUCCESS);
    // the storage node has no cache: QEMU is told to go direct (§6.9)
    expect(await flushVdi(client(p.store.port), vid)).toBe(Res.INVALID_PARMS);
    const info = await cacheInfo(p.gw.port);
    expect(info.size).toBe(64n * BigInt(MB));
    expect((await cacheInfo(p.store.port)).flags & 2).toBe(0);
  });

  it('acknowledges writes from the cache, serves hits, and writes back on FLUSH_VDI (data before index)', async () => {
    const p = await startPair('size=64');
    const w = new Wire(p.gw.port);
    clients.push(w);
    await w.newVdi('a', 32n * BigInt(MB));
    const vid = await w.vid('a');
    const io = await openVdi(client(p.gw.port), 'a'); // QEMU's request shapes, SD_FLAG_CMD_CACHE
    const d1 = pattern(1, 3 * MB);
    await io.write(3 * MB, d1); // objects 0 and 1: creates + one index update
    // the gateway answers from its cache...
    expect((await io.read(3 * MB, 3 * MB)).equals(d1)).toBe(true);
    let info = await cacheInfo(p.gw.port);
    expect(info.vdis.find((v) => v.vid === vid)).toMatchObject({ objects: 2, dirty: 2, pendingIndex: 2 });
    expect(info.hits).toBeGreaterThan(0n);
    // ...the cluster has neither the data nor the index entries yet
    const sw = new Wire(p.store.port);
    clients.push(sw);
    expect((await sw.inode(vid)).dataVdiId[0]).toBe(0);
    expect((await clusterRead(p.store.port, 'a', 3 * MB, 3 * MB)).equals(Buffer.alloc(3 * MB))).toBe(true);
    const st = new SheepClient({ port: p.store.port });
    clients.push(st);
    expect((await st.send({ opcode: Op.READ_OBJ, dataLength: 512, obj: { oid: vidToDataOid(vid, 0) } })).rsp.result).toBe(Res.NO_OBJ);

    await io.flush(); // FLUSH_VDI
    expect((io.backend as { cacheFlags: number }).cacheFlags & Flag.CMD_CACHE).toBeTruthy(); // still write-back
    expect((await clusterRead(p.store.port, 'a', 3 * MB, 3 * MB)).equals(d1)).toBe(true);
    info = await cacheInfo(p.gw.port);
    expect(info.vdis.find((v) => v.vid === vid)).toMatchObject({ objects: 2, dirty: 0, pendingIndex: 0 });

    // a plain write to an allocated object is a WRITE_OBJ into the cache
    const d2 = pattern(2, 8192);
    await io.write(OBJ + 4096, d2);
    expect((await clusterRead(p.store.port, 'a', OBJ + 4096, 8192)).equals(d2)).toBe(false);
    const hits = (await cacheInfo(p.gw.port)).hits;
    expect((await io.read(OBJ + 4096, 8192)).equals(d2)).toBe(true);
    expect((await cacheInfo(p.gw.port)).hits).toBeGreaterThan(hits);
    expect(await flushVdi(client(p.gw.port), vid)).toBe(Res.SUCCESS);
    expect((await clusterRead(p.store.port, 'a', OBJ + 4096, 8192)).equals(d2)).toBe(true);

    // a fresh open through the gateway sees the pending index (overlay) and the data
    const d3 = pattern(3, 4096);
    await io.write(5 * OBJ, d3);
    const io2 = await openVdi(client(p.gw.port), 'a');
    expect(io2.index[5]).toBe(vid);
    expect((await io2.read(5 * OBJ, 4096)).equals(d3)).toBe(true);
  });

  it('a kill -9 of the cached sheep loses only unflushed writes', async () => {
    const gwDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sheep-gw-'));
    const p = await startPair(`size=64,dir=${path.join(gwDir, 'wcache')}`, { gwDir });
    const w = new Wire(p.gw.port);
    clients.push(w);
    await w.newVdi('k', 32n * BigInt(MB));
    const io = await openVdi(client(p.gw.port), 'k');
    const A = pattern(10, 2 * MB);
    const B = pattern(11, MB);
    const A2 = pattern(12, 4096);
    await io.write(0, A); // object 0
    await io.write(OBJ, A2); // object 1
    await io.flush();
    await io.write(2 * OBJ, B); // object 2: created in the cache only
    await io.write(4096, pattern(13, 4096)); // overwrite inside flushed object 0, not flushed
    expect((await fsp.readdir(path.join(gwDir, 'wcache'))).length).toBeGreaterThan(0);
    await p.gw.kill();
    // the cluster still has A; B never reached it, and nothing points at a missing object
    expect((await clusterRead(p.store.port, 'k', 0, 4096)).equals(A.subarray(0, 4096))).toBe(true);
    expect((await clusterRead(p.store.port, 'k', 8192, 2 * MB - 8192)).equals(A.subarray(8192))).toBe(true);
    expect((await clusterRead(p.store.port, 'k', OBJ, 4096)).equals(A2)).toBe(true);
    const st = new Wire(p.store.port);
    clients.push(st);
    const ino = await st.inode(await st.vid('k'));
    for (let i = 0; i < 8; i++) {
      if (!ino.dataVdiId[i]) continue;
      const r = await st.c.send({ opcode: Op.READ_OBJ, dataLength: 512, obj: { oid: vidToDataOid(ino.dataVdiId[i], i) } });
      expect(r.rsp.result, `object ${i} of the index`).toBe(Res.SUCCESS);
    }
    expect(ino.dataVdiId[2]).toBe(0);
    // restart on the same directories: the old cache is discarded, A is served
    const gw2 = await startSheep({ cluster: p.spec, args: ['-z', '0', '-g', '-w', `size=64,dir=${path.join(gwDir, 'wcache')}`], dir: gwDir });
    const io2 = await waitFor(() => openVdi(client(gw2.port), 'k'), 20_000, 'reopen through the restarted gateway');
    expect((await io2.read(0, 4096)).equals(A.subarray(0, 4096))).toBe(true);
    expect((await io2.read(OBJ, 4096)).equals(A2)).toBe(true);
    expect((await io2.read(2 * OBJ, MB)).equals(Buffer.alloc(MB))).toBe(true);
    const info = await cacheInfo(gw2.port);
    expect(info.vdis.every((v) => v.dirty === 0)).toBe(true);
    await fsp.rm(gwDir, { recursive: true, force: true });
  });

  it('evicts least recently used objects under a small size, flushing dirty ones first', async () => {
    const p = await startPair('size=8'); // two 4 MiB objects
    const w = new Wire(p.gw.port);
    clients.push(w);
    await w.newVdi('e', 64n * BigInt(MB));
    const io = await openVdi(client(p.gw.port), 'e');
    const parts: Buffer[] = [];
    for (let i = 0; i < 8; i++) {
      parts.push(pattern(100 + i, 64 * 1024));
      await io.write(i * OBJ + 12345 * 4, parts[i]);
    }
    let info = await cacheInfo(p.gw.port);
    expect(info.used).toBeLessThanOrEqual(info.size);
    expect(info.vdis[0].objects).toBeLessThanOrEqual(2);
    // every write is intact, through the cache...
    for (let i = 0; i < 8; i++) expect((await io.read(i * OBJ + 12345 * 4, 64 * 1024)).equals(parts[i]), `object ${i}`).toBe(true);
    info = await cacheInfo(p.gw.port);
    expect(info.used).toBeLessThanOrEqual(info.size);
    expect(info.misses).toBeGreaterThan(0n);
    // ...and in the cluster after a flush
    await io.flush();
    for (let i = 0; i < 8; i++) expect((await clusterRead(p.store.port, 'e', i * OBJ + 12345 * 4, 64 * 1024)).equals(parts[i])).toBe(true);
  });

  it('SD_FLAG_CMD_DIRECT writes bypass the cache after writing back the cached copy', async () => {
    const p = await startPair('size=64');
    const w = new Wire(p.gw.port);
    clients.push(w);
    await w.newVdi('d', 16n * BigInt(MB));
    const vid = await w.vid('d');
    const c = client(p.gw.port);
    const io = await openVdi(c, 'd');
    const a = pattern(20, 4096);
    await io.write(0, a);
    await io.flush();
    const b = pattern(21, 4096);
    await io.write(8192, b); // dirty in the cache
    const oid = vidToDataOid(vid, 0);
    const x = pattern(22, 4096);
    const r = await c.send({ opcode: Op.WRITE_OBJ, protoVer: 0, flags: Flag.CMD_WRITE | Flag.CMD_DIRECT, obj: { oid, offset: 16384 } }, x);
    expect(r.rsp.result).toBe(Res.SUCCESS);
    // the cluster has all three: the cached copy went first, the direct write after it
    const whole = await clusterRead(p.store.port, 'd', 0, 20480);
    expect(whole.subarray(0, 4096).equals(a)).toBe(true);
    expect(whole.subarray(8192, 12288).equals(b)).toBe(true);
    expect(whole.subarray(16384, 20480).equals(x)).toBe(true);
    expect((await cacheInfo(p.gw.port)).vdis.find((v) => v.vid === vid)?.objects ?? 0).toBe(0);
    // cached reads fetch the object again and see the direct write
    expect((await io.read(16384, 4096)).equals(x)).toBe(true);
    // a direct read sees cached writes too (written back first)
    const y = pattern(23, 4096);
    await io.write(24576, y);
    const rd = await c.send({ opcode: Op.READ_OBJ, protoVer: 0, flags: Flag.CMD_DIRECT, dataLength: 4096, obj: { oid, offset: 24576 } });
    expect(rd.data.equals(y)).toBe(true);
    expect((await clusterRead(p.store.port, 'd', 24576, 4096)).equals(y)).toBe(true);
  });

  it('NBD writes go through the cache; FLUSH and FUA write back', async () => {
    const p = await startPair('size=64', { nbd: true });
    const w = new Wire(p.gw.port);
    clients.push(w);
    await w.newVdi('n', 16n * BigInt(MB));
    const conn = new RawConn(p.nbdPort!);
    clients.push(conn);
    await conn.hello();
    const g = await conn.go('n');
    expect('size' in g && g.size).toBe(16n * BigInt(MB));
    const a = pattern(30, 65536);
    expect((await conn.cmd(NBD.CMD.WRITE, 0, a.length, a)).error).toBe(0);
    expect((await conn.cmd(NBD.CMD.READ, 0, a.length)).data!.equals(a)).toBe(true);
    expect((await clusterRead(p.store.port, 'n', 0, a.length)).equals(a)).toBe(false);
    expect((await conn.cmd(NBD.CMD.FLUSH, 0, 0)).error).toBe(0);
    expect((await clusterRead(p.store.port, 'n', 0, a.length)).equals(a)).toBe(true);
    // FUA: durable in the cluster when acknowledged
    const b = pattern(31, 8192);
    expect((await conn.cmd(NBD.CMD.WRITE, OBJ + 512, b.length, b, NBD.FLAG.FUA)).error).toBe(0);
    expect((await clusterRead(p.store.port, 'n', OBJ + 512, b.length)).equals(b)).toBe(true);
    // an unflushed write is still only in the cache
    const c2 = pattern(32, 4096);
    expect((await conn.cmd(NBD.CMD.WRITE, 2 * OBJ, c2.length, c2)).error).toBe(0);
    expect((await clusterRead(p.store.port, 'n', 2 * OBJ, 4096)).equals(c2)).toBe(false);
    const info = await cacheInfo(p.gw.port);
    expect(info.vdis[0].dirty).toBe(1);
  });

  it('a snapshot taken through the cached node keeps dirty data; QEMU continues through READONLY', async () => {
    const p = await startPair('size=64');
    const w = new Wire(p.gw.port);
    clients.push(w);
    await w.newVdi('s', 16n * BigInt(MB));
    const io = await openVdi(client(p.gw.port), 's');
    const a = pattern(40, 65536);
    await io.write(0, a); // dirty, index pending
    const r = await runCollie(['vdi', 'snapshot', '-s', 'snap1', 's'], { port: p.gw.port });
    expect(r.code, r.stderr).toBe(0);
    // the snapshot has the data, as seen by the storage node
    const st = new Wire(p.store.port);
    clients.push(st);
    const snapVid = await st.vid('s', 0, 'snap1');
    expect((await st.readVdi(snapVid, 0, 65536)).equals(a)).toBe(true);
    // the running guest writes on: READONLY, reload, COW into the new working VDI
    const b = pattern(41, 4096);
    await io.write(4096, b);
    expect(io.vid).not.toBe(snapVid);
    await io.flush();
    const cur = await clusterRead(p.store.port, 's', 0, 65536);
    expect(cur.subarray(4096, 8192).equals(b)).toBe(true);
    expect(cur.subarray(0, 4096).equals(a.subarray(0, 4096))).toBe(true);
    expect((await st.readVdi(snapVid, 0, 65536)).equals(a)).toBe(true);
  });

  it('collie vdi cache flush / delete / info / purge', async () => {
    const p = await startPair('size=64,directio');
    const w = new Wire(p.gw.port);
    clients.push(w);
    await w.newVdi('c1', 16n * BigInt(MB));
    await w.newVdi('c2', 16n * BigInt(MB));
    const io1 = await openVdi(client(p.gw.port), 'c1');
    const io2 = await openVdi(client(p.gw.port), 'c2');
    const a = pattern(50, 4096);
    await io1.write(0, a);
    await io2.write(OBJ, a);
    await io2.write(2 * OBJ, a);

    let r = await runCollie(['vdi', 'cache', 'info'], { port: p.gw.port });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Name\tTag\tTotal\tDirty\n/);
    expect(r.stdout).toContain('c1\t\t4.0 MB\t4.0 MB\n');
    expect(r.stdout).toContain('c2\t\t8.0 MB\t8.0 MB\n');
    expect(r.stdout).toContain('Cache size 64 MB, used 12 MB, directio');

    r = await runCollie(['vdi', 'cache', 'flush', 'c1'], { port: p.gw.port });
    expect(r.code, r.stderr).toBe(0);
    expect((await clusterRead(p.store.port, 'c1', 0, 4096)).equals(a)).toBe(true);
    expect((await clusterRead(p.store.port, 'c2', OBJ, 4096)).equals(a)).toBe(false);
    r = await runCollie(['vdi', 'cache', 'info'], { port: p.gw.port });
    expect(r.stdout).toContain('c1\t\t4.0 MB\t0.0 MB\n');

    r = await runCollie(['vdi', 'cache', 'delete', 'c2'], { port: p.gw.port });
    expect(r.code, r.stderr).toBe(0);
    expect((await clusterRead(p.store.port, 'c2', OBJ, 4096)).equals(a)).toBe(true);
    expect((await clusterRead(p.store.port, 'c2', 2 * OBJ, 4096)).equals(a)).toBe(true);
    r = await runCollie(['vdi', 'cache', 'info'], { port: p.gw.port });
    expect(r.stdout).not.toContain('c2');

    r = await runCollie(['vdi', 'cache', 'purge'], { port: p.gw.port });
    expect(r.code, r.stderr).toBe(0);
    expect((await cacheInfo(p.gw.port)).used).toBe(0n);

    // a node without the cache
    r = await runCollie(['vdi', 'cache', 'flush', 'c1'], { port: p.store.port });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Invalid parameters');
    r = await runCollie(['vdi', 'cache', 'info'], { port: p.store.port });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('not enabled');
  });

  it('rejects a bad -w spec and documents the option', async () => {
    const bad = await run(SHEEP_BIN, ['-f', '-w', 'dir=/tmp/x', '/tmp/nonexistent-sheep']);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toContain('size=MB is required');
    const help = await run(SHEEP_BIN, ['--help']);
    expect(help.stdout).toContain('-w, --cache');
  });
});
