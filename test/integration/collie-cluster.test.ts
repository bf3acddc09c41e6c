// collie against a multi-node cluster: the upstream-format outputs of
// node list, cluster info and node recovery, through node loss and rejoin.
import { describe, it, expect, afterAll } from 'vitest';
import { randomBytes, createHash } from 'node:crypto';
import { startCluster, stopAll, runCollie, waitFor, startSheep } from '../helpers/cluster.js';

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const DATE = '\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d';

describe('collie on a 3-node cluster', () => {
  afterAll(() => stopAll());

  it('shows membership, epochs and recovery like upstream dog', async () => {
    const c = await startCluster(3);
    const [a, b, d] = c.nodes;
    let port = a.port;
    await waitFor(async () => (await runCollie(['node', 'list', '-r'], { port })).stdout.trim().split('\n').length === 3, 10_000, '3 nodes');

    let r = await runCollie(['cluster', 'info'], { port });
    expect(r.stdout).toBe('Cluster status: Waiting for cluster to be formatted\n\n');
    r = await runCollie(['node', 'list'], { port });
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toBe('  Id   Host:Port         V-Nodes       Zone');
    const ports = [a.port, b.port, d.port].sort((x, y) => x - y);
    const zone = (p: number) => c.nodes.findIndex((s) => s.port === p);
    ports.forEach((p, i) => expect(lines[1 + i]).toBe(`${String(i).padStart(4)}   ${`127.0.0.1:${p}`.padEnd(20)}\t128${String(zone(p)).padStart(11)}`));

    r = await runCollie(['cluster', 'format', '--copies=3'], { port });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('using backend plain store\n');

    r = await runCollie(['cluster', 'info'], { port: b.port });
    const members = ports.map((p) => `127.0.0.1:${p}:128`).join(', ');
    expect(r.stdout).toMatch(new RegExp(`^Cluster status: running, auto-recovery enabled\\n\\nCluster created at \\w{3} \\w{3} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d \\d{4}\\n\\nEpoch Time           Version \\[Host:Port:V-Nodes,,,\\]\\n${DATE}      1 \\[${members}\\]\\n$`));

    const data = randomBytes(24 << 20);
    expect((await runCollie(['vdi', 'create', 'Alice', '1G'], { port })).code).toBe(0);
    expect((await runCollie(['vdi', 'write', 'Alice', '0', String(data.length)], { port, input: data })).code).toBe(0);

    // lose the node with the highest port
    const victim = c.nodes.find((s) => s.port === ports[2])!;
    await victim.kill();
    const alive = c.nodes.filter((s) => s !== victim);
    port = alive[0].port;
    await waitFor(async () => (await runCollie(['node', 'list', '-r'], { port })).stdout.trim().split('\n').length === 2, 5_000, '2 nodes');
    r = await runCollie(['cluster', 'info'], { port });
    const lines2 = r.stdout.split('\n');
    expect(lines2[5]).toMatch(new RegExp(`^${DATE}      2 \\[127.0.0.1:${ports[0]}:128, 127.0.0.1:${ports[1]}:128\\]$`));
    expect(lines2[6]).toMatch(new RegExp(`^${DATE}      1 \\[${members}\\]$`));
    r = await runCollie(['cluster', 'info', '-d'], { port });
    expect(r.stdout).toContain(`      2 [-127.0.0.1:${ports[2]}]`);
    expect(r.stdout).toContain('      1 [formated]');
    r = await runCollie(['vdi', 'read', 'Alice', '0', String(data.length)], { port: alive[1].port });
    expect(r.stderr).toBe('');
    expect(md5(r.stdoutBuf)).toBe(md5(data));

    // rejoin, throttled so that progress is visible
    expect((await runCollie(['node', 'recovery', 'set-throttle', '1', '1000'], { port })).code).toBe(0);
    r = await runCollie(['node', 'recovery', 'get-throttle'], { port });
    expect(r.stdout).toBe('max (1), interval (1000)\n');
    const back = await startSheep({ dir: victim.dir, port: victim.port, cluster: c.spec, args: ['-z', String(zone(victim.port))] });
    // the throttle is cluster-wide: the rejoined node got it when it joined
    expect((await runCollie(['node', 'recovery', 'get-throttle'], { port: back.port })).stdout).toBe('max (1), interval (1000)\n');
    await waitFor(async () => / {6}3 \[/.test((await runCollie(['cluster', 'info'], { port })).stdout), 10_000, 'epoch 3');
    let sawProgress = false;
    await waitFor(async () => {
      const rr = await runCollie(['node', 'recovery'], { port });
      expect(rr.stdout.startsWith('Nodes In Recovery:\n  Id   Host:Port         V-Nodes       Zone       Progress\n')).toBe(true);
      const rows = rr.stdout.split('\n').slice(2).filter(Boolean);
      for (const row of rows) {
        expect(row).toMatch(/^ {3}\d   127\.0\.0\.1:\d+ +\d+ +\d+ +\d+\.\d%$/);
        sawProgress = true;
      }
      return rows.length > 0 || sawProgress;
    }, 10_000, 'a recovery progress line');
    await runCollie(['node', 'recovery', 'set-throttle', '0', '0'], { port });
    await waitFor(async () => (await runCollie(['node', 'recovery'], { port })).stdout.split('\n').filter(Boolean).length === 2, 30_000, 'recovery done');
    r = await runCollie(['vdi', 'read', 'Alice', '0', String(data.length)], { port: back.port });
    expect(md5(r.stdoutBuf)).toBe(md5(data));
    r = await runCollie(['vdi', 'object', 'location', '-i', '0', 'Alice'], { port });
    expect(r.stdout.match(/has the object/g)?.length).toBe(3);
  }, 180_000); // some forty collie runs, each a process start: minutes on a loaded machine
});
