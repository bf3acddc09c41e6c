// The systemd units in deploy/systemd: `systemd-analyze verify` accepts them
// (with no warning), and their ExecStart lines, expanded as systemd expands
// them (%i, %f, $VAR split on white space, ${VAR} one word, the environment
// file), start daemons that behave as Type=forking + PIDFile needs: the
// command returns once the daemon serves, the pidfile names the daemon, and
// with stderr on the journal (JOURNAL_STREAM) the daemon logs there.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT, SHEEP_BIN, freePort, runCollie, stopAll, uniqueClusterId, waitFor } from '../helpers/cluster.js';
import { tool, have } from '../helpers/nbd.js';
import { fuseUnavailable, isMounted, cleanupMount } from '../helpers/sheepfs.js';
import { requirePrereq } from '../helpers/prereq.js';

requirePrereq(!have('systemd-analyze') ? "systemd-analyze is not installed (apt-get install systemd)" : await fuseUnavailable());

const UNITS = path.join(ROOT, 'deploy/systemd');
const UNIT_FILES = ['sheep@.service', 'sheep-nbd@.service', 'sheepfs@.service'];

/** Parse KEY=VALUE / KEY="VALUE" lines (systemd EnvironmentFile). */
function envFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const l of text.split('\n')) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(l);
    if (m) env[m[1]] = m[2].replace(/^"(.*)"$/, '$1');
  }
  return env;
}

/** Environment= assignments of a unit (space-separated KEY=VALUE words). */
function unitEnv(unit: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of unit.matchAll(/^Environment=(.*)$/gm)) {
    for (const kv of m[1].split(/\s+/).filter(Boolean)) {
      const i = kv.indexOf('=');
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
  }
  return env;
}

/** A unit's ExecStart, expanded as systemd does for instance `inst`. */
function execStart(unit: string, inst: string, env: Record<string, string>, paths: (s: string) => string): string[] {
  const line = /^ExecStart=(.*)$/m.exec(unit)![1];
  const f = '/' + inst.replace(/-/g, '/');
  return line.replace(/%i/g, inst).replace(/%f/g, f).split(/\s+/).flatMap((w) => {
    let m = /^\$\{(\w+)\}$/.exec(w);
    if (m) return [env[m[1]] ?? ''];
    m = /^\$(\w+)$/.exec(w);
    if (m) return (env[m[1]] ?? '').split(/\s+/).filter(Boolean);
    return [w];
  }).map(paths);
}

async function portClosed(port: number): Promise<void> {
  await waitFor(() => new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(true));
  }), 30_000, `port ${port} to close`);
}

describe('systemd units', () => {
  let tmp: string;
  let bin: string;
  const pids: number[] = [];

  beforeAll(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'sheep-units-'));
    bin = path.join(tmp, 'bin');
    await fsp.mkdir(bin);
    await fsp.symlink(SHEEP_BIN, path.join(bin, 'sheep'));
    await fsp.symlink(path.join(ROOT, 'sheepfs/bin/sheepfs.js'), path.join(bin, 'sheepfs'));
  });
  afterAll(async () => {
    for (const p of pids) try { process.kill(p, 'SIGTERM'); } catch { /* gone */ }
    await stopAll();
    if (tmp) {
      await cleanupMount(path.join(tmp, 'mnt/sheep')).catch(() => undefined);
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  });

  it('systemd-analyze verify accepts every unit, without a warning', async () => {
    const dir = path.join(tmp, 'verify');
    await fsp.mkdir(dir);
    for (const u of UNIT_FILES) {
      const text = await fsp.readFile(path.join(UNITS, u), 'utf8');
      expect(text).toMatch(/^ExecStart=\/usr\/local\/bin\/sheep/m); // where `npm install -g` puts the commands
      expect(text).toMatch(/^Restart=on-failure$/m);
      expect(text).toMatch(/^Type=forking$/m);
      expect(text).toMatch(/^PIDFile=/m);
      // verify checks that ExecStart's command exists: point it at this checkout's
      await fsp.writeFile(path.join(dir, u), text.replaceAll('/usr/local/bin/', `${bin}/`));
    }
    const r = await tool('systemd-analyze', ['verify', '--man=no',
      path.join(dir, 'sheep@demo.service'), path.join(dir, 'sheep-nbd@gw.service'), path.join(dir, 'sheepfs@mnt-sheepdog.service')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // a unit with a mistake is reported (the check is not a formality)
    await fsp.writeFile(path.join(dir, 'sheep@.service'), (await fsp.readFile(path.join(dir, 'sheep@.service'), 'utf8')).replace('Restart=on-failure', 'Restart=sometimes'));
    const bad = await tool('systemd-analyze', ['verify', '--man=no', path.join(dir, 'sheep@demo.service')]);
    expect(bad.stderr).toMatch(/Failed to parse service restart specifier/);
  });

  it('the ExecStart lines start a storage node, an NBD gateway and a sheepfs mount as systemd would', async () => {
    const id = uniqueClusterId();
    const [p1, p2, nbd] = [await freePort(), await freePort(), await freePort()];
    const etc = path.join(tmp, 'etc');
    await fsp.mkdir(etc);
    await fsp.writeFile(path.join(etc, 'store1.conf'), `SHEEP_OPTS="-p ${p1} -b 127.0.0.1 -c local:${id}"\n`);
    await fsp.writeFile(path.join(etc, 'gw1.conf'), `NBD_LISTEN=127.0.0.1:${nbd}\nSHEEP_OPTS="-p ${p2} -b 127.0.0.1 -c local:${id}"\n`);
    await fsp.writeFile(path.join(etc, 'sheepfs-mnt-sheep.conf'), `SHEEPFS_OPTS="-p ${p1}"\n`);
    const paths = (w: string) => w.replace('/usr/local/bin/', `${bin}/`).replace(/^\/run\//, `${tmp}/run/`).replace(/^\/var\/lib\//, `${tmp}/lib/`)
      .replace(/^\/mnt\//, `${tmp}/mnt/`);

    /** Start a unit's ExecStart with stderr on a "journal" pipe; resolves when the command returns. */
    const start = async (unitFile: string, inst: string, conf: string) => {
      const unit = await fsp.readFile(path.join(UNITS, unitFile), 'utf8');
      const env = { ...unitEnv(unit), ...envFile(await fsp.readFile(path.join(etc, conf), 'utf8')) };
      const argv = execStart(unit, inst, env, paths);
      const runtime = paths(/^RuntimeDirectory=(.*)$/m.exec(unit)![1].replace(/%i/g, inst).replace(/^/, '/run/'));
      await fsp.mkdir(runtime, { recursive: true });
      const pidfile = paths(/^PIDFile=(.*)$/m.exec(unit)![1].replace(/%i/g, inst));
      // systemd's journal stream: JOURNAL_STREAM names the device and inode of stderr
      const p = spawn('sh', ['-c', 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"', 'sh', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
      let journal = '';
      p.stderr!.on('data', (b) => (journal += b));
      const code = await new Promise<number | null>((r) => p.once('exit', r));
      return { argv, pidfile, code, journal: () => journal };
    };

    // storage node
    const store = await start('sheep@.service', 'store1', 'store1.conf');
    expect(store.code, store.journal()).toBe(0);
    const pid1 = Number((await fsp.readFile(store.pidfile, 'utf8')).trim());
    pids.push(pid1);
    expect((await tool('pgrep', ['-f', `sheep ${tmp}/lib/sheepdog/store1 `])).stdout.trim()).toBe(String(pid1));
    await waitFor(() => /serving 127\.0\.0\.1:\d+, data in /.test(store.journal()), 10_000, `the daemon's log in the journal: ${store.journal()}`);
    expect((await runCollie(['cluster', 'format', '--copies=1'], { port: p1 })).code).toBe(0);
    expect((await runCollie(['vdi', 'create', 'unitvdi', '8M'], { port: p1 })).code).toBe(0);

    // NBD gateway joins the same cluster and serves the VDI
    const gw = await start('sheep-nbd@.service', 'gw1', 'gw1.conf');
    expect(gw.code, gw.journal()).toBe(0);
    expect(gw.argv).toContain(`127.0.0.1:${nbd}`);
    const pid2 = Number((await fsp.readFile(gw.pidfile, 'utf8')).trim());
    pids.push(pid2);
    const io = await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 64k', '-c', 'read -P 0x33 0 64k', `nbd://127.0.0.1:${nbd}/unitvdi`]);
    expect(io.code, io.stderr).toBe(0);
    expect(io.stdout).not.toMatch(/fail/i);

    // sheepfs on /mnt/sheep (instance mnt-sheep)
    const mnt = `${tmp}/mnt/sheep`;
    await fsp.mkdir(mnt, { recursive: true }); // ExecStartPre
    const fs = await start('sheepfs@.service', 'mnt-sheep', 'sheepfs-mnt-sheep.conf');
    expect(fs.code, fs.journal()).toBe(0);
    expect(fs.argv.at(-1)).toBe(mnt);
    const pid3 = Number((await fsp.readFile(fs.pidfile, 'utf8')).trim());
    expect(await isMounted(mnt)).toBe(true);
    expect((await fsp.readFile(path.join(mnt, 'vdi/list'), 'utf8'))).toMatch(/unitvdi/);
    await waitFor(() => /mounted sheep/.test(fs.journal()), 10_000, `sheepfs's log in the journal: ${fs.journal()}`);

    // systemctl stop: SIGTERM to the pid in the pidfile; pidfiles go with the daemons
    process.kill(pid3, 'SIGTERM');
    await waitFor(async () => !(await isMounted(mnt)), 20_000, 'sheepfs to unmount');
    await waitFor(async () => !(await fsp.access(fs.pidfile).then(() => true, () => false)), 10_000, 'the sheepfs pidfile to go');
    for (const [pid, port, pidfile] of [[pid2, p2, gw.pidfile], [pid1, p1, store.pidfile]] as const) {
      process.kill(pid, 'SIGTERM');
      await portClosed(port);
      await waitFor(async () => !(await fsp.access(pidfile).then(() => true, () => false)), 10_000, `${pidfile} to go`);
    }
    pids.length = 0;
  }, 120_000);
});
