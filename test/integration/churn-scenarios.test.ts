// Operators' failure stories that once lost or hid data (issue 15): each is
// told with real sheep processes on loopback, real kill -9 and real collie,
// and checked byte for byte.
import { describe, it, expect, afterEach } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  Op, Flag, Res, vidToDataOid, vidToVdiOid, SD_INODE_HEADER_SIZE, MAX_DATA_OBJS, decodeNodes,
} from '@sheepdog/common';
import {
  startSheep, stopAll, waitFor, SheepProc, runCollie, uniqueClusterId, SHEEP_BIN, freePort,
} from '../helpers/cluster.js';
import { formatCluster, nodeList, epochOf, recoveryIdle, clusterStatus } from '../helpers/cluster-scenarios.js';
import { Wire } from '../helpers/wire.js';

const MB = 1 << 20;
const OBJ = 4 * MB;

async function withWire<T>(port: number, fn: (w: Wire) => Promise<T>): Promise<T> {
  const w = new Wire(port);
  try {
    return await fn(w);
  } finally {
    w.close();
  }
}

/** One node of a test cluster, restartable on its directory, port and zone. */
interface Slot {
  zone: number;
  port: number;
  dir: string;
  proc?: SheepProc;
}

const clusters: TestCluster[] = [];

class TestCluster {
  readonly spec = `local:${uniqueClusterId()}`;
  readonly slots: Slot[] = [];
  constructor(private extraArgs: string[] = []) {
    clusters.push(this);
    if (process.env.DEBUG_CHURN) this.extraArgs = [...extraArgs, '-l', 'level=debug'];
  }

  async add(zone = this.slots.length): Promise<Slot> {
    const proc = await startSheep({ cluster: this.spec, args: ['-z', String(zone), ...this.extraArgs] });
    const s: Slot = { zone, port: proc.port, dir: proc.dir, proc };
    this.slots.push(s);
    return s;
  }

  async start(s: Slot): Promise<void> {
    s.proc = await startSheep({ dir: s.dir, port: s.port, cluster: this.spec, args: ['-z', String(s.zone), ...this.extraArgs] });
  }

  async kill(s: Slot): Promise<void> {
    await s.proc!.kill();
    s.proc = undefined;
  }

  get live(): Slot[] {
    return this.slots.filter((s) => s.proc);
  }

  /** Every live node in the same epoch, running, recovered. */
  async settled(timeoutMs = 90_000): Promise<void> {
    await waitFor(async () => {
      const live = this.live;
      const eps = await Promise.all(live.map((s) => epochOf(s.port)));
      if (new Set(eps).size !== 1) return false;
      if ((await Promise.all(live.map((s) => clusterStatus(s.port)))).some((r) => r !== Res.SUCCESS)) return false;
      const members = await nodeList(live[0].port);
      if (members.length !== live.length) return false;
      return (await Promise.all(live.map((s) => recoveryIdle(s.port)))).every(Boolean);
    }, timeoutMs, 'the cluster to recover');
  }
}

/** Files of vid's data objects (live or set aside) in the nodes' stores, as "port:oid". */
async function dataObjectsOf(vid: number, slots: Slot[]): Promise<string[]> {
  const out: string[] = [];
  const walk = async (port: number, d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(port, path.join(d, e.name));
      else if (/^[0-9a-f]{16}$/.test(e.name) && Number(BigInt(`0x${e.name}`) >> 32n) === vid) out.push(`${port}:${e.name}`);
    }
  };
  for (const s of slots) await walk(s.port, path.join(s.dir, 'obj'));
  return out;
}

afterEach(async (ctx) => {
  // DEBUG_CHURN=1: the logs of every node of a failed story
  if (process.env.DEBUG_CHURN && ctx.task.result?.state === 'fail') {
    for (const c of clusters) {
      for (const x of c.slots) console.log(`=== ${x.port} (zone ${x.zone})\n${await fsp.readFile(path.join(x.dir, 'sheep.log'), 'utf8').catch(() => '')}`);
    }
  }
  clusters.length = 0;
  await stopAll();
});

describe('data safety under churn', () => {
  it('1. a rotated replica set never serves the stale copies of the nodes that come back', async () => {
    const c = new TestCluster();
    const [a, b] = [await c.add(), await c.add()];
    await formatCluster(a.port, 2);
    const vid = await withWire(a.port, async (w) => (await w.newVdi('rot', 100n * BigInt(MB))).rsp.vdi.vdiId);
    const old = Array.from({ length: 25 }, () => randomBytes(512));
    await withWire(a.port, async (w) => { for (let i = 0; i < 25; i++) await w.writeVdi(vid, i * OBJ, old[i]); });
    const cc = await c.add();
    await c.kill(a);
    await c.settled();
    const d = await c.add();
    await c.kill(b);
    await c.settled();
    const fresh = Array.from({ length: 25 }, () => randomBytes(512));
    await withWire(cc.port, async (w) => { for (let i = 0; i < 25; i++) await w.writeVdi(vid, i * OBJ, fresh[i]); });
    await c.start(a);
    await c.kill(cc);
    await c.settled();
    await c.start(b);
    await c.kill(d);
    await c.settled();
    for (const s of [a, b]) {
      await withWire(s.port, async (w) => {
        for (let i = 0; i < 25; i++) expect((await w.readVdi(vid, i * OBJ, 512)).equals(fresh[i]), `object ${i} via ${s.port}`).toBe(true);
      });
    }
  }, 240_000);

  it('2. every VDI and every byte survive three whole-cluster kill -9 and restarts (8 nodes, copies=6)', async () => {
    const c = new TestCluster();
    for (let i = 0; i < 8; i++) await c.add();
    await formatCluster(c.slots[0].port, 6);
    const names = ['w0', 'w1', 'w2', 'w3'];
    const data = names.map(() => Array.from({ length: 25 }, () => randomBytes(4096)));
    const vids = await withWire(c.slots[0].port, async (w) => {
      const out: number[] = [];
      for (const n of names) out.push((await w.newVdi(n, 100n * BigInt(MB))).rsp.vdi.vdiId);
      return out;
    });
    await Promise.all(names.map((_, k) => withWire(c.slots[k % 8].port, async (w) => {
      for (let i = 0; i < 25; i++) await w.writeVdi(vids[k], i * OBJ + 1000, data[k][i]);
    })));
    for (let round = 0; round < 3; round++) {
      await Promise.all(c.slots.map((s) => c.kill(s)));
      await Promise.all(c.slots.map((s) => c.start(s)));
      await c.settled();
      const list = await runCollie(['vdi', 'list', '-r'], { port: c.slots[round].port });
      expect(list.code).toBe(0);
      for (const n of names) expect(list.stdout, `round ${round}: ${n} listed`).toMatch(new RegExp(`^= ${n} 0 `, 'm'));
      await withWire(c.slots[(round * 3) % 8].port, async (w) => {
        for (let k = 0; k < names.length; k++) {
          expect(await w.vid(names[k])).toBe(vids[k]);
          for (let i = 0; i < 25; i++) expect((await w.readVdi(vids[k], i * OBJ + 1000, 4096)).equals(data[k][i]), `round ${round} ${names[k]} object ${i}`).toBe(true);
        }
      });
    }
  }, 420_000);

  it('9. the objects of a VDI deleted while one of their holders was away do not come back with it', async () => {
    // churn simulator, seeds 712 and 1708: the returning node's copies were
    // restored as the only copies of objects nobody refers to
    const c = new TestCluster();
    for (let i = 0; i < 3; i++) await c.add();
    await formatCluster(c.slots[0].port, 2);
    const [gone, kept] = await withWire(c.slots[0].port, async (w) => [
      (await w.newVdi('gone', 40n * BigInt(MB))).rsp.vdi.vdiId, (await w.newVdi('kept', 40n * BigInt(MB))).rsp.vdi.vdiId,
    ]);
    const data = Array.from({ length: 10 }, () => randomBytes(4096));
    await withWire(c.slots[0].port, async (w) => {
      for (let i = 0; i < 10; i++) {
        await w.writeVdi(gone, i * OBJ, data[i]);
        await w.writeVdi(kept, i * OBJ, data[i]);
      }
    });
    const x = c.slots[2];
    expect((await dataObjectsOf(gone, [x])).length, 'the node to take away holds some of the objects').toBeGreaterThan(0);
    await c.kill(x);
    await c.settled();
    const del = await runCollie(['vdi', 'delete', 'gone'], { port: c.slots[0].port });
    expect(del.code, del.stderr).toBe(0);
    expect(del.stderr).toBe('');
    await waitFor(async () => (await dataObjectsOf(gone, c.live)).length === 0, 60_000, 'the deleted VDI\'s objects to be reclaimed');
    await c.start(x);
    await c.settled();
    // the returning node's own copies go once recovery has looked at them
    await waitFor(async () => (await dataObjectsOf(gone, c.slots)).length === 0, 30_000, 'no copy of the deleted VDI left').catch(async (e) => {
      throw new Error(`${e.message}: ${(await dataObjectsOf(gone, c.slots)).join(' ')}`);
    });
    for (const s of c.slots) {
      await withWire(s.port, async (w) => {
        for (let i = 0; i < 10; i++) expect((await w.readVdi(kept, i * OBJ, 4096)).equals(data[i]), `kept object ${i} via ${s.port}`).toBe(true);
      });
    }
  }, 240_000);

  it('3. VDIs whose only holder was away are found again when it is back (3 nodes, copies=1)', async () => {
    const c = new TestCluster();
    for (let i = 0; i < 3; i++) await c.add();
    await formatCluster(c.slots[0].port, 1);
    const names = Array.from({ length: 10 }, (_, i) => `pre${i}`);
    const data = names.map(() => randomBytes(16 * MB));
    for (const n of names) {
      const r = await runCollie(['vdi', 'create', '-P', n, '16M'], { port: c.slots[0].port });
      expect(r.code, r.stderr).toBe(0);
    }
    await withWire(c.slots[0].port, async (w) => {
      for (let k = 0; k < names.length; k++) await w.writeVdi(await w.vid(names[k]), 0, data[k]);
    });
    for (const s of c.slots.slice(0, 2)) {
      await c.kill(s);
      await c.settled();
    }
    await c.kill(c.slots[2]);
    for (const s of c.slots) {
      await c.start(s);
      // the cluster runs again once the last node of the newest epoch is back
      if ((await clusterStatus(s.port)) === Res.SUCCESS) await c.settled();
    }
    await c.settled();
    for (const n of names) {
      const r = await runCollie(['vdi', 'check', n], { port: c.slots[1].port });
      expect(r.code, `${n}: ${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout + r.stderr).not.toMatch(/No VDI found/);
    }
    await withWire(c.slots[2].port, async (w) => {
      for (let k = 0; k < names.length; k++) expect((await w.readVdi(await w.vid(names[k]), 0, 16 * MB)).equals(data[k]), names[k]).toBe(true);
    });
  }, 300_000);

  it('4. a node of another cluster is refused and nothing changes on either side', async () => {
    // B: formatted alone in its own cluster, then shut down
    const bSpec = `local:${uniqueClusterId()}`;
    const b0 = await startSheep({ cluster: bSpec, args: ['-z', '1'] });
    await formatCluster(b0.port, 1);
    const bVid = await withWire(b0.port, async (w) => (await w.newVdi('bee', 8n * BigInt(MB))).rsp.vdi.vdiId);
    const bData = randomBytes(MB);
    await withWire(b0.port, (w) => w.writeVdi(bVid, 0, bData));
    expect((await runCollie(['cluster', 'shutdown'], { port: b0.port })).code).toBe(0);
    await b0.exited;
    const snapshotDir = async (dir: string) => {
      const out: Record<string, string> = {};
      const walk = async (d: string) => {
        for (const e of await fsp.readdir(d, { withFileTypes: true })) {
          const p = path.join(d, e.name);
          if (e.isDirectory()) await walk(p);
          else if (e.name !== 'sheep.log') out[path.relative(dir, p)] = (await fsp.readFile(p)).toString('base64');
        }
      };
      await walk(dir);
      return out;
    };
    const bBefore = await snapshotDir(b0.dir);
    // A: a new cluster of its own
    const a = await startSheep({ args: ['-z', '0'] });
    await formatCluster(a.port, 1);
    const aVid = await withWire(a.port, async (w) => (await w.newVdi('ay', 8n * BigInt(MB))).rsp.vdi.vdiId);
    const aData = randomBytes(MB);
    await withWire(a.port, (w) => w.writeVdi(aVid, 0, aData));
    const aEpoch = await epochOf(a.port);
    const aSpec = (a.proc.spawnargs[a.proc.spawnargs.indexOf('-c') + 1]);
    // B again, on its old directory, pointed at A's cluster
    const p = spawn(process.execPath, [SHEEP_BIN, '-f', '-b', '127.0.0.1', '-p', String(b0.port), '-c', aSpec, '-z', '1', b0.dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((r) => {
      const t = setTimeout(() => { p.kill('SIGKILL'); r(-1); }, 20_000);
      p.once('exit', (c) => { clearTimeout(t); r(c); });
    });
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/another cluster/);
    const log = await fsp.readFile(path.join(b0.dir, 'sheep.log'), 'utf8');
    expect(log).toMatch(/another cluster/);
    // nothing changed on B (its config, epochs, objects) ...
    expect(await snapshotDir(b0.dir)).toEqual(bBefore);
    // ... nor on A
    expect(await epochOf(a.port)).toBe(aEpoch);
    expect((await nodeList(a.port)).map((n) => n.port)).toEqual([a.port]);
    await withWire(a.port, async (w) => {
      expect((await w.readVdi(aVid, 0, MB)).equals(aData)).toBe(true);
      expect((await w.info('bee')).rsp.result).toBe(Res.NO_VDI);
    });
  }, 120_000);

  it('5. a node that was away has the same, complete epoch history as the others', async () => {
    const c = new TestCluster();
    const [a, b, d] = [await c.add(), await c.add(), await c.add()];
    await formatCluster(a.port, 2);
    await c.kill(d);
    await c.settled();
    const e = await c.add();
    await c.settled();
    await c.kill(e);
    await c.settled();
    await c.start(d);
    await c.settled();
    const epochs = await epochOf(a.port);
    expect(epochs).toBeGreaterThanOrEqual(5);
    const infos = await Promise.all([a, b, d].map((s) => runCollie(['cluster', 'info'], { port: s.port })));
    for (const r of infos) expect(r.code).toBe(0);
    const table = (t: string) => t.split('\n').filter((l) => /^\d{4}-\d\d-\d\d /.test(l));
    const ref = table(infos[0].stdout);
    expect(ref.length).toBe(epochs);
    for (const l of ref) expect(l).not.toMatch(/\[\]/);
    for (const r of infos.slice(1)) expect(table(r.stdout).join("\n")).toBe(ref.join("\n"));
  }, 180_000);

  it('6. zero-length writes succeed and change nothing; dog-style delete of an empty VDI works', async () => {
    const s = await startSheep();
    await formatCluster(s.port, 1);
    await withWire(s.port, async (w) => {
      const vid = (await w.newVdi('empty', 64n * BigInt(MB))).rsp.vdi.vdiId;
      const inode = vidToVdiOid(vid);
      const before = (await w.send({ opcode: Op.READ_OBJ, dataLength: 4 * MB, obj: { oid: inode } })).data;
      // upstream dog's vdi delete: the index cleared in batches; with no data objects the batch is empty
      const past = SD_INODE_HEADER_SIZE + 4 * MAX_DATA_OBJS;
      for (const offset of [0, 100, SD_INODE_HEADER_SIZE, past - 4, past]) {
        const r = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: inode, offset } }, Buffer.alloc(0));
        expect(r.rsp.result, `WRITE_OBJ len 0 at ${offset}`).toBe(Res.SUCCESS);
      }
      const data = randomBytes(4096);
      await w.writeVdi(vid, 0, data);
      const dataOid = vidToDataOid(vid, 0);
      for (const offset of [0, 4096, OBJ - 1, OBJ]) {
        expect((await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: dataOid, offset } }, Buffer.alloc(0))).rsp.result).toBe(Res.SUCCESS);
        expect((await w.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: dataOid, offset } }, Buffer.alloc(0))).rsp.result).toBe(Res.SUCCESS);
      }
      expect((await w.readVdi(vid, 0, 4096)).equals(data)).toBe(true);
      const after = (await w.send({ opcode: Op.READ_OBJ, dataLength: 4 * MB, obj: { oid: inode } })).data;
      // only the index entry written by writeVdi differs
      after.writeUInt32LE(0, SD_INODE_HEADER_SIZE);
      expect(after.equals(before)).toBe(true);
    });
    const v2 = await runCollie(['vdi', 'create', 'gone', '8M'], { port: s.port });
    expect(v2.code).toBe(0);
    await withWire(s.port, async (w) => {
      const vid = await w.vid('gone');
      const r = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: SD_INODE_HEADER_SIZE } }, Buffer.alloc(0));
      expect(r.rsp.result).toBe(Res.SUCCESS);
    });
    const del = await runCollie(['vdi', 'delete', 'gone'], { port: s.port });
    expect(del.code, del.stderr).toBe(0);
    expect((await runCollie(['vdi', 'list', '-r'], { port: s.port })).stdout).not.toMatch(/ gone /);
  }, 60_000);

  it('7. after a whole-cluster kill -9 during writes, every replica reads the same and acknowledged writes are kept', async () => {
    const c = new TestCluster();
    for (let i = 0; i < 3; i++) await c.add();
    await formatCluster(c.slots[0].port, 3);
    const SIZE = 8 * OBJ;
    const vid = await withWire(c.slots[0].port, async (w) => (await w.newVdi('torn', BigInt(SIZE))).rsp.vdi.vdiId);
    const base = randomBytes(SIZE);
    await withWire(c.slots[0].port, (w) => w.writeVdi(vid, 0, base));
    const SECTOR = 4096;
    // per sector: the acknowledged value and the one in flight (either may be there after the crash)
    const acked = new Map<number, Buffer>();
    const inflight = new Map<number, Buffer>();
    let stop = false;
    const writers = c.slots.map((s, k) => withWire(s.port, async (w) => {
      const sectors = SIZE / SECTOR;
      for (let n = 0; !stop; n++) {
        // 48 candidates, a third of them this writer's: 16 writes in flight per connection
        const batch = Array.from({ length: 48 }, (_, j) => ((n * 48 + j) * 7 + k * 1031) % sectors).filter((x) => x % 3 === k);
        await Promise.all(batch.map(async (sec) => {
          const d = randomBytes(SECTOR);
          inflight.set(sec, d);
          const off = sec * SECTOR;
          const r = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, Math.floor(off / OBJ)), offset: off % OBJ } }, d)
            .catch(() => undefined);
          if (r?.rsp.result === Res.SUCCESS && !stop) { acked.set(sec, d); inflight.delete(sec); }
        }));
      }
    }).catch(() => undefined));
    await new Promise((r) => setTimeout(r, 1500));
    // one replica falls behind (frozen: the writes to it stay in flight), then the whole cluster dies
    c.slots[2].proc!.proc.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 400));
    for (const s of c.slots) s.proc!.proc.kill('SIGKILL');
    stop = true;
    await Promise.all(c.slots.map((s) => c.kill(s)));
    await Promise.all(writers);
    await Promise.all(c.slots.map((s) => c.start(s)));
    await c.settled();
    const reads = await Promise.all(c.slots.map((s) => withWire(s.port, (w) => w.readVdi(vid, 0, SIZE))));
    for (let sec = 0; sec < SIZE / SECTOR; sec++) {
      const views = reads.map((r) => r.subarray(sec * SECTOR, (sec + 1) * SECTOR));
      expect(views[1].equals(views[0]) && views[2].equals(views[0]), `sector ${sec} differs between nodes`).toBe(true);
      const ok = [acked.get(sec) ?? base.subarray(sec * SECTOR, (sec + 1) * SECTOR), inflight.get(sec)].filter(Boolean) as Buffer[];
      expect(ok.some((x) => x.equals(views[0])), `sector ${sec} holds neither the acknowledged nor the in-flight bytes`).toBe(true);
    }
    // and the object files themselves agree
    for (let i = 0; i < 8; i++) {
      const files = await Promise.all(c.slots.map((s) => fsp.readFile(path.join(s.dir, 'obj', vidToDataOid(vid, i).toString(16).padStart(16, '0')))));
      expect(files[1].equals(files[0]) && files[2].equals(files[0]), `object ${i} files differ`).toBe(true);
    }
  }, 180_000);

  it('7b. after a cluster shutdown during writes, every replica reads the same (the writes refused by a stopping replica are reconciled)', async () => {
    const c = new TestCluster();
    for (let i = 0; i < 3; i++) await c.add();
    await formatCluster(c.slots[0].port, 3);
    const SIZE = 8 * OBJ;
    const vid = await withWire(c.slots[0].port, async (w) => (await w.newVdi('stopping', BigInt(SIZE))).rsp.vdi.vdiId);
    const base = randomBytes(SIZE);
    await withWire(c.slots[0].port, (w) => w.writeVdi(vid, 0, base));
    const SECTOR = 4096;
    const acked = new Map<number, Buffer>();
    // every write sent since the sector's last acknowledged one: any of them may have landed
    const maybe = new Map<number, Buffer[]>();
    let stop = false;
    const writers = c.slots.slice(0, 2).map((s, k) => withWire(s.port, async (w) => {
      const sectors = SIZE / SECTOR;
      // writers go on through the shutdown: writes sent while members stop are what split replicas
      for (let n = 0; !stop; n++) {
        let failed = false;
        const batch = Array.from({ length: 32 }, (_, j) => ((n * 32 + j) * 7 + k * 1031) % sectors).filter((x) => x % 2 === k);
        await Promise.all(batch.map(async (sec) => {
          const d = randomBytes(SECTOR);
          // (once every member has stopped, writes fail at once and pile up here: kept to the first 64)
          const m = maybe.get(sec) ?? [];
          if (m.length < 64) maybe.set(sec, [...m, d]);
          const off = sec * SECTOR;
          const r = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, Math.floor(off / OBJ)), offset: off % OBJ } }, d)
            .catch(() => undefined);
          if (r?.rsp.result === Res.SUCCESS) { acked.set(sec, d); maybe.delete(sec); } else failed = true;
        }));
        if (failed) await new Promise((r) => setImmediate(r));
      }
    }).catch(() => undefined));
    await new Promise((r) => setTimeout(r, 1000));
    // one replica falls behind: the writes to it wait in its socket while the shutdown is ordered,
    // and it refuses them once it has stopped serving; the other two have them
    c.slots[2].proc!.proc.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 300));
    const shut = runCollie(['cluster', 'shutdown'], { port: c.slots[0].port });
    await new Promise((r) => setTimeout(r, 1000));
    c.slots[2].proc!.proc.kill('SIGCONT');
    expect((await shut).code).toBe(0);
    await Promise.all(c.slots.map((s) => s.proc!.exited));
    stop = true;
    await Promise.all(writers);
    for (const s of c.slots) expect((await fsp.stat(path.join(s.dir, '.shutdown'))).isFile()).toBe(true);
    await Promise.all(c.slots.map((s) => c.start(s)));
    await c.settled();
    const reads = await Promise.all(c.slots.map((s) => withWire(s.port, (w) => w.readVdi(vid, 0, SIZE))));
    let split = 0;
    for (let sec = 0; sec < SIZE / SECTOR; sec++) {
      const views = reads.map((r) => r.subarray(sec * SECTOR, (sec + 1) * SECTOR));
      if (!views[1].equals(views[0]) || !views[2].equals(views[0])) split++;
      const ok = [acked.get(sec) ?? base.subarray(sec * SECTOR, (sec + 1) * SECTOR), ...(maybe.get(sec) ?? [])];
      expect(ok.some((x) => x.equals(views[0])), `sector ${sec} holds neither the acknowledged nor the in-flight bytes`).toBe(true);
    }
    expect(split, 'sectors that differ between nodes').toBe(0);
    for (let i = 0; i < 8; i++) {
      const files = await Promise.all(c.slots.map((s) => fsp.readFile(path.join(s.dir, 'obj', vidToDataOid(vid, i).toString(16).padStart(16, '0')))));
      expect(files[1].equals(files[0]) && files[2].equals(files[0]), `object ${i} files differ`).toBe(true);
    }
    // reconciled: the next start has nothing to compare
    await waitFor(async () => {
      for (const s of c.slots) if (await fsp.stat(path.join(s.dir, '.shutdown')).then(() => true, () => false)) return false;
      return true;
    }, 30_000, 'the shutdown markers to go');
  }, 180_000);

  it('8. under-replication is never silent: every node gets a vnode, too few zones is reported, strict mode refuses', async () => {
    // a node whose store is tiny next to the others' (its own small filesystem)
    const small = await fsp.mkdtemp('/tmp/sheep-small-');
    const { execFileSync } = await import('node:child_process');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', small]);
    try {
      const c = new TestCluster();
      await c.add(0);
      await c.add(1);
      const p = await freePort();
      const tiny: Slot = { zone: 2, port: p, dir: small };
      c.slots.push(tiny);
      await c.start(tiny);
      await waitFor(async () => (await nodeList(c.slots[0].port)).length === 3, 10_000, '3 members');
      await formatCluster(c.slots[0].port, 3);
      const nodes = decodeNodes(await withWire(c.slots[0].port, async (w) => (await w.send({ opcode: Op.GET_NODE_LIST, dataLength: 491520 })).data));
      for (const n of nodes) expect(n.nrVnodes, `vnodes of ${n.port}`).toBeGreaterThanOrEqual(1);
      const vid = await withWire(c.slots[0].port, async (w) => (await w.newVdi('three', 16n * BigInt(MB))).rsp.vdi.vdiId);
      const data = randomBytes(MB);
      await withWire(c.slots[0].port, (w) => w.writeVdi(vid, 0, data));
      // every node holds its copy: three zones, three copies
      const holders = await Promise.all(c.slots.map((s) => fsp.access(path.join(s.dir, 'obj', vidToDataOid(vid, 0).toString(16).padStart(16, '0'))).then(() => 1, () => 0)));
      expect(holders).toEqual([1, 1, 1]);
      await c.kill(tiny);
      await c.settled();
      const info = await runCollie(['cluster', 'info'], { port: c.slots[0].port });
      expect(info.stdout + info.stderr).toMatch(/cannot place 3 copies/i);
      await withWire(c.slots[0].port, async (w) => {
        const r = await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, 0), offset: 0 } }, randomBytes(512));
        expect(r.rsp.result).toBe(Res.SUCCESS);
      });
      const log = await fsp.readFile(path.join(c.slots[0].dir, 'sheep.log'), 'utf8');
      expect(log).toMatch(/under-replicated/i);
      await Promise.all(c.live.map((s) => c.kill(s)));
    } finally {
      await stopAll();
      execFileSync('umount', ['-l', small]);
      await fsp.rmdir(small);
    }
    // strict mode (format -t): such writes are refused with HALT
    const c2 = new TestCluster();
    for (let i = 0; i < 3; i++) await c2.add(i);
    const fmt = await runCollie(['cluster', 'format', '-t', '--copies=3'], { port: c2.slots[0].port });
    expect(fmt.code, fmt.stderr).toBe(0);
    const svid = await withWire(c2.slots[0].port, async (w) => (await w.newVdi('strict', 16n * BigInt(MB))).rsp.vdi.vdiId);
    const third = c2.slots[2];
    await c2.kill(third);
    await c2.settled();
    const put = () => withWire(c2.slots[0].port, async (w) =>
      (await w.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(svid, 0), offset: 0 } }, randomBytes(512))).rsp.result);
    expect(await put()).toBe(Res.HALT);
    await c2.start(third);
    await c2.settled();
    expect(await put()).toBe(Res.SUCCESS);
  }, 180_000);
});
