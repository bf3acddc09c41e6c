// Damaged node state is refused, never guessed around (issue 17): a node
// whose config or epoch records do not check out will not start, and says
// which file and what to do; a damaged object copy is never served as data,
// and is repaired from another replica.
import { describe, it, expect, afterEach } from 'vitest';
import { promises as fsp } from 'node:fs';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Res, vidToDataOid, vidToVdiOid, oidToHex } from '@sheepdog/common';
import { startSheep, stopAll, waitFor, runCollie, SheepProc, uniqueClusterId, freePort } from '../helpers/cluster.js';
import { formatCluster, nodeList } from '../helpers/cluster-scenarios.js';
import { Wire } from '../helpers/wire.js';
import { scrape, sample } from '../helpers/metrics.js';

const MB = 1 << 20;

async function withWire<T>(port: number, fn: (w: Wire) => Promise<T>): Promise<T> {
  const w = new Wire(port);
  try {
    return await fn(w);
  } finally {
    w.close();
  }
}

/** A formatted single node holding one VDI with data, stopped: its directory. */
async function stoppedNode(): Promise<SheepProc> {
  const s = await startSheep();
  await formatCluster(s.port, 1);
  await withWire(s.port, async (w) => {
    const vid = (await w.newVdi('kept', 16n * BigInt(MB))).rsp.vdi.vdiId;
    await w.writeVdi(vid, 0, randomBytes(MB));
  });
  await s.stop();
  return s;
}

/** Starting on dir must fail, saying msg. */
async function refuses(s: SheepProc, msg: RegExp): Promise<string> {
  const t0 = Date.now();
  const err = await startSheep({ dir: s.dir, port: s.port }).then(() => 'started', (e: Error) => e.message);
  expect(err).not.toBe('started');
  expect(err).toMatch(msg);
  expect(Date.now() - t0).toBeLessThan(20_000);
  return err;
}

/** A node's damaged-copy counters, by what found them, and its repairs. */
async function damageCounts(mport: number): Promise<{ read?: number; recovery?: number; scrub?: number; repaired?: number }> {
  const t = await scrape(mport);
  const by = (f: string) => sample(t, `sheep_damaged_copies_total{found_by="${f}"}`);
  return { read: by('read'), recovery: by('recovery'), scrub: by('scrub'), repaired: sample(t, 'sheep_repaired_copies_total') };
}

afterEach(() => stopAll());

describe('damaged node state', () => {
  it('a missing config.json with objects on disk: refuses to start rather than wait to be formatted', async () => {
    const s = await stoppedNode();
    await fsp.rm(path.join(s.dir, 'config.json'));
    const err = await refuses(s, /config\.json is missing, but .* holds \d+ object/);
    expect(err).toMatch(/copy config\.json from another node/);
    // the data is still all there
    expect((await fsp.readdir(path.join(s.dir, 'obj'))).filter((f) => /^[0-9a-f]{16}$/.test(f)).length).toBeGreaterThan(0);
  }, 60_000);

  it('garbage in the latest epoch record: refuses and names the file', async () => {
    const s = await stoppedNode();
    const f = path.join(s.dir, 'epoch', '00000001');
    const b = await fsp.readFile(f);
    b.fill(0x5a, 20, 60);
    await fsp.writeFile(f, b);
    await refuses(s, /epoch\/00000001: checksum mismatch/);
  }, 60_000);

  it('a stray epoch/99999999 is refused at once, not walked up to', async () => {
    const s = await stoppedNode();
    await fsp.writeFile(path.join(s.dir, 'epoch', '99999999'), randomBytes(300));
    await refuses(s, /epoch\/99999999: /);
  }, 60_000);

  it('nonsense config values are refused, each with what is wrong', async () => {
    const s = await stoppedNode();
    const file = path.join(s.dir, 'config.json');
    const good = JSON.parse(await fsp.readFile(file, 'utf8'));
    delete good.sum; // an operator's edit: the values themselves are checked
    for (const [k, v, msg] of [
      ['copies', 'x', /copies is "x", not a whole number from 1 to 31/],
      ['store', 'nosuch', /store is "nosuch", not one of farm, tree, plain/],
      ['blockSizeShift', 40, /blockSizeShift is 40, not a whole number from 20 to 31/],
    ] as const) {
      await fsp.writeFile(file, JSON.stringify({ ...good, [k]: v }));
      await refuses(s, msg);
    }
    // a damaged file (its checksum no longer matches) is refused too
    const summed = JSON.parse(await fsp.readFile(file, 'utf8'));
    await fsp.writeFile(file, JSON.stringify({ ...good, sum: '00000000', copies: 2 }));
    await refuses(s, /checksum mismatch/);
    void summed;
    // and the node starts again once the file is sound
    await fsp.writeFile(file, JSON.stringify(good));
    const back = await startSheep({ dir: s.dir, port: s.port });
    await withWire(back.port, async (w) => expect((await w.info('kept')).rsp.result).toBe(Res.SUCCESS));
  }, 120_000);
});

describe('format', () => {
  it('collie cluster format refuses to wipe nodes that hold objects, naming them, unless -f', async () => {
    const spec = `local:${uniqueClusterId()}`;
    const nodes: SheepProc[] = [];
    for (let i = 0; i < 2; i++) nodes.push(await startSheep({ cluster: spec, args: ['-z', String(i), '-n'] }));
    await waitFor(async () => (await nodeList(nodes[0].port)).length === 2, 10_000, '2 members');
    const port = nodes[0].port;
    // nothing held: formats without a question, and again
    for (let i = 0; i < 2; i++) {
      const f = await runCollie(['cluster', 'format', '--copies=2'], { port });
      expect(f.code, f.stderr).toBe(0);
      expect(f.stderr).toBe('');
    }
    const data = randomBytes(8 * MB);
    const vid = await withWire(port, async (w) => {
      const v = (await w.newVdi('precious', 16n * BigInt(MB))).rsp.vdi.vdiId;
      await w.writeVdi(v, 0, data);
      return v;
    });
    // inode + 2 data objects, on both nodes
    const held = async (s: SheepProc) => (await fsp.readdir(path.join(s.dir, 'obj'))).filter((f) => /^[0-9a-f]{16}$/.test(f)).length;
    for (const s of nodes) expect(await held(s)).toBe(3);
    // without -f: refused, whatever stdin says, with the nodes and what they hold; nothing changes
    for (const input of [undefined, 'yes\n']) {
      const r = await runCollie(['cluster', 'format', '--copies=2'], { port, input });
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^Refusing to format: formatting destroys every object the nodes hold, and\n/);
      for (const s of nodes) expect(r.stderr).toContain(`  127.0.0.1:${s.port} holds 3 objects\n`);
      expect(r.stderr).toMatch(/Use -f \(--force\) to format anyway\.\n$/);
    }
    for (const s of nodes) {
      expect(await held(s)).toBe(3);
      await withWire(s.port, async (w) => expect((await w.readVdi(vid, 0, 8 * MB)).equals(data)).toBe(true));
    }
    // with -f: formatted, the objects gone
    const f = await runCollie(['cluster', 'format', '--copies=2', '-f'], { port });
    expect(f.code, f.stderr).toBe(0);
    await withWire(port, async (w) => expect((await w.info('precious')).rsp.result).toBe(Res.NO_VDI));
    for (const s of nodes) await waitFor(async () => (await held(s)) === 0, 10_000, 'the objects wiped');
  }, 90_000);
});

describe('damaged object copies', () => {
  it('a truncated inode or data file is never served: the other replicas answer and it is repaired', async () => {
    const spec = `local:${uniqueClusterId()}`;
    const nodes = [];
    const mports = [await freePort(), await freePort(), await freePort()];
    for (let i = 0; i < 3; i++) nodes.push(await startSheep({ cluster: spec, args: ['-z', String(i), '--metrics', `127.0.0.1:${mports[i]}`] }));
    for (const m of mports) expect(await damageCounts(m)).toEqual({ read: 0, recovery: 0, scrub: 0, repaired: 0 });
    await waitFor(async () => (await nodeList(nodes[0].port)).length === 3, 10_000, '3 members');
    await formatCluster(nodes[0].port, 3);
    const data = randomBytes(8 * MB);
    const vid = await withWire(nodes[0].port, async (w) => {
      const v = (await w.newVdi('cut', 64n * BigInt(MB))).rsp.vdi.vdiId;
      await w.writeVdi(v, 0, data);
      return v;
    });
    const inode = vidToVdiOid(vid);
    const obj = vidToDataOid(vid, 1);
    // cut the inode short on node 0 and a data object on node 1
    await fsp.truncate(path.join(nodes[0].dir, 'obj', oidToHex(inode)), 100);
    await fsp.truncate(path.join(nodes[1].dir, 'obj', oidToHex(obj)), 4096);
    for (const s of nodes) {
      const list = await runCollie(['vdi', 'list', '-r'], { port: s.port });
      expect(list.code).toBe(0);
      expect(list.stdout).toMatch(/^= cut 0 /m);
      await withWire(s.port, async (w) => expect((await w.readVdi(vid, 0, 8 * MB)).equals(data)).toBe(true));
    }
    // both copies are whole again, and the logs name them
    await waitFor(async () => (await fsp.stat(path.join(nodes[0].dir, 'obj', oidToHex(inode)))).size > 4 * MB, 20_000, 'the inode repaired');
    await waitFor(async () => (await fsp.stat(path.join(nodes[1].dir, 'obj', oidToHex(obj)))).size > 4 * MB, 20_000, 'the object repaired');
    expect((await fsp.readFile(path.join(nodes[1].dir, 'obj', oidToHex(obj)))).subarray(0, 4 * MB).equals(data.subarray(4 * MB, 8 * MB))).toBe(true);
    expect(await fsp.readFile(path.join(nodes[0].dir, 'sheep.log'), 'utf8')).toMatch(new RegExp(`${oidToHex(inode)} is damaged`));
    expect(await fsp.readFile(path.join(nodes[1].dir, 'sheep.log'), 'utf8')).toMatch(new RegExp(`repaired ${oidToHex(obj)}`));
    // and the metrics of the nodes that held them say so: found by a read, repaired; the third node found nothing
    for (const i of [0, 1]) {
      const c = await waitFor(async () => { const d = await damageCounts(mports[i]); return d.repaired! >= 1 && d; }, 10_000, `node ${i}'s repair counted`);
      expect(c.read, `node ${i}`).toBeGreaterThanOrEqual(1);
      expect(c.recovery, `node ${i}`).toBe(0);
      expect(c.scrub, `node ${i}`).toBe(0);
    }
    expect(await damageCounts(mports[2])).toEqual({ read: 0, recovery: 0, scrub: 0, repaired: 0 });
  }, 120_000);

  it('a damaged copy a recovery transfer finds is never sent, and counts as found by recovery', async () => {
    // two copies on one zone: one copy each, until a node of a second zone
    // joins and fetches every object from the only holder, whose copies are damaged
    const spec = `local:${uniqueClusterId()}`;
    const mport = await freePort();
    const a = await startSheep({ cluster: spec, args: ['-z', '0', '-n', '--metrics', `127.0.0.1:${mport}`] });
    await formatCluster(a.port, 2);
    const vid = await withWire(a.port, async (w) => {
      const v = (await w.newVdi('moved', 16n * BigInt(MB))).rsp.vdi.vdiId;
      await w.writeVdi(v, 0, randomBytes(8 * MB));
      return v;
    });
    for (const idx of [0, 1]) {
      const fh = await fsp.open(path.join(a.dir, 'obj', oidToHex(vidToDataOid(vid, idx))), 'r+');
      await fh.write(Buffer.from('rot'), 0, 3, 4096 * (idx + 3) + 17);
      await fh.close();
    }
    execFileSync('sh', ['-c', 'sync; echo 1 > /proc/sys/vm/drop_caches']);
    const b = await startSheep({ cluster: spec, args: ['-z', '1', '-n'] });
    const c = await waitFor(async () => { const d = await damageCounts(mport); return d.recovery! >= 2 && d; }, 30_000, 'both damaged copies found by recovery');
    // (recovery may ask again, and its sources' repairs find no good copy: at least once each)
    expect({ ...c, recovery: Math.min(c.recovery!, 2) }).toEqual({ read: 0, recovery: 2, scrub: 0, repaired: 0 });
    // and the joiner did not take them as good copies
    for (const idx of [0, 1]) expect(await fsp.stat(path.join(b.dir, 'obj', oidToHex(vidToDataOid(vid, idx)))).then(() => true, () => false)).toBe(false);
  }, 60_000);

  it('with one copy, a truncated inode makes lookups fail with an I/O error, not "No VDI found"', async () => {
    const s = await startSheep();
    await formatCluster(s.port, 1);
    const vid = await withWire(s.port, async (w) => (await w.newVdi('alone', 16n * BigInt(MB))).rsp.vdi.vdiId);
    await fsp.truncate(path.join(s.dir, 'obj', oidToHex(vidToVdiOid(vid))), 10);
    await withWire(s.port, async (w) => expect((await w.info('alone')).rsp.result).toBe(Res.EIO));
    // as upstream dog: the listing goes on, and says which inode it could not read
    const r = await runCollie(['vdi', 'list'], { port: s.port });
    expect(r.stderr).toMatch(/Failed to read inode header/);
    expect(r.stdout).not.toMatch(/alone/);
    expect(r.stdout + r.stderr).not.toMatch(/No VDI found/);
    const c = await runCollie(['vdi', 'check', 'alone'], { port: s.port });
    expect(c.code).not.toBe(0);
    expect(c.stdout + c.stderr).toMatch(/I\/O error/);
  }, 60_000);
});

describe('bit rot', () => {
  it('random bits flipped and files cut on random replicas under load: every read returns the right bytes, and the copies are repaired', async () => {
    const spec = `local:${uniqueClusterId()}`;
    const nodes: SheepProc[] = [];
    for (let i = 0; i < 3; i++) nodes.push(await startSheep({ cluster: spec, args: ['-z', String(i), '-n'] }));
    await waitFor(async () => (await nodeList(nodes[0].port)).length === 3, 10_000, '3 members');
    await formatCluster(nodes[0].port, 3);
    const SIZE = 32 * MB;
    const data = randomBytes(SIZE);
    const vid = await withWire(nodes[0].port, async (w) => {
      const v = (await w.newVdi('rot', BigInt(SIZE))).rsp.vdi.vdiId;
      await w.writeVdi(v, 0, data);
      return v;
    });
    // load: a writer rewriting the second half while the damage happens (its model kept in data)
    let stop = false;
    const writer = withWire(nodes[1].port, async (w) => {
      for (let i = 0; !stop; i++) {
        const off = SIZE / 2 + ((i * 7919) % 64) * 64 * 1024;
        const piece = randomBytes(64 * 1024);
        await w.writeVdi(vid, off, piece);
        piece.copy(data, off);
      }
    });
    // damage: in each object, on one replica, flip bits or cut the file short
    const rng = (n: number) => Math.floor(Math.random() * n);
    const damaged: { node: SheepProc; oid: bigint }[] = [];
    for (let idx = 0; idx < SIZE / (4 * MB) / 2; idx++) {
      const oid = vidToDataOid(vid, idx);
      const node = nodes[rng(3)];
      const file = path.join(node.dir, 'obj', oidToHex(oid));
      if (idx % 3 === 2) {
        await fsp.truncate(file, rng(4 * MB));
      } else {
        const fh = await fsp.open(file, 'r+');
        for (let k = 0; k < 1 + rng(8); k++) {
          const pos = rng(4 * MB);
          const b = Buffer.alloc(1);
          await fh.read(b, 0, 1, pos);
          b[0] ^= 1 << rng(8);
          await fh.write(b, 0, 1, pos);
        }
        await fh.close();
      }
      damaged.push({ node, oid });
    }
    // the page cache holds what was written: drop it so that reads come from the damaged files
    execFileSync('sh', ['-c', 'sync; echo 1 > /proc/sys/vm/drop_caches']);
    stop = true;
    await writer;
    for (const s of nodes) {
      await withWire(s.port, async (w) => expect((await w.readVdi(vid, 0, SIZE)).equals(data), `via ${s.port}`).toBe(true));
    }
    // every damaged copy was found and repaired: its bytes are the object's again
    for (const { node, oid } of damaged) {
      const idx = Number(oid & 0xffffffffn);
      await waitFor(async () => {
        const b = await fsp.readFile(path.join(node.dir, 'obj', oidToHex(oid))).catch(() => Buffer.alloc(0));
        return b.length > 4 * MB && b.subarray(0, 4 * MB).equals(data.subarray(idx * 4 * MB, (idx + 1) * 4 * MB));
      }, 30_000, `${oidToHex(oid)} on ${node.port} repaired`);
    }
  }, 180_000);
});

describe('scrub', () => {
  it('collie cluster scrub finds a damaged copy nobody reads, repairs it, and node scrub status says so', async () => {
    const spec = `local:${uniqueClusterId()}`;
    const nodes: SheepProc[] = [];
    const mports = [await freePort(), await freePort(), await freePort()];
    for (let i = 0; i < 3; i++) nodes.push(await startSheep({ cluster: spec, args: ['-z', String(i), '-n', '--metrics', `127.0.0.1:${mports[i]}`] }));
    await waitFor(async () => (await nodeList(nodes[0].port)).length === 3, 10_000, '3 members');
    await formatCluster(nodes[0].port, 3);
    const data = randomBytes(8 * MB);
    const vid = await withWire(nodes[0].port, async (w) => {
      const v = (await w.newVdi('quiet', 16n * BigInt(MB))).rsp.vdi.vdiId;
      await w.writeVdi(v, 0, data);
      return v;
    });
    const oid = vidToDataOid(vid, 1);
    const file = path.join(nodes[2].dir, 'obj', oidToHex(oid));
    const fh = await fsp.open(file, 'r+');
    await fh.write(Buffer.from('rot'), 0, 3, 123_456);
    await fh.close();
    const r = await runCollie(['cluster', 'scrub', '--rate', '200'], { port: nodes[0].port });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Scrubbed \d+ object copies \([\d.]+ MB\): 1 damaged and repaired from another replica, 0 replica\(s\) that differed/m);
    await waitFor(async () => (await fsp.readFile(file)).subarray(0, 4 * MB).equals(data.subarray(4 * MB)), 20_000, 'the copy repaired');
    const st = await runCollie(['node', 'scrub', 'status', '-r'], { port: nodes[0].port });
    expect(st.code).toBe(0);
    const lines = st.stdout.trim().split('\n').map((l) => l.split(' '));
    expect(lines.length).toBe(3);
    for (const l of lines) expect(l[2]).toBe('done');
    expect(lines.find((l) => l[1].endsWith(`:${nodes[2].port}`))![5]).toBe('1');
    const js = JSON.parse((await runCollie(['node', 'scrub', 'status', '--json'], { port: nodes[0].port })).stdout);
    expect(js.nodes.reduce((a: number, n: { damaged: number }) => a + n.damaged, 0)).toBe(1);
    // the damaged copy's node counts it as found by the scrub, and repaired
    expect(await waitFor(async () => { const d = await damageCounts(mports[2]); return d.repaired === 1 && d; }, 10_000, 'the repair counted'))
      .toEqual({ read: 0, recovery: 0, scrub: 1, repaired: 1 });
    for (const i of [0, 1]) expect(await damageCounts(mports[i])).toEqual({ read: 0, recovery: 0, scrub: 0, repaired: 0 });
    // a typo is a usage error
    expect((await runCollie(['cluster', 'scrub', '--rate', 'fast'], { port: nodes[0].port })).code).toBe(64);
  }, 120_000);
});
