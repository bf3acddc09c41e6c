// `dog node ...` as upstream dog 1.0 prints it (dog-transcript.txt,
// erasure-coding-and-md.md B.3): exact stdout, stderr and exit status
// against one real, formatted sheep.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { SheepClient, Op, Flag, Res, encodeThrottling, decodeThrottling } from '@sheepdog/common';
import { startFormatted, stopAll, freePort, SheepProc } from '../helpers/cluster.js';
import { dog as runDog, expectDog, OPT } from '../helpers/dog10.js';

let s: SheepProc;
const dog = (args: string[], input?: string) => runDog(args, { port: s.port, input });

beforeAll(async () => {
  s = await startFormatted(1, ['-z', '0']);
});
afterAll(async () => {
  await stopAll();
});

const LOG_LEVEL_USAGE =
  'Usage: dog node log level {set|get|list} [-a address] [-p port] [-h] [-T]\n' +
  'Available subcommands:\n' +
  '  set                     set new loglevel\n' +
  '  get                     get current loglevel\n' +
  '  list                    list available loglevels\n' +
  'Options:\n' + OPT.a + OPT.p + OPT.h + OPT.T;

const SET_THROTTLE_USAGE =
  'Usage: dog node recovery set-throttle [-a address] [-p port] [-h] [-P] [-r] [-T]\n' +
  'Options:\n' + OPT.a + OPT.p + OPT.h +
  '  -P, --progress          show progress of recovery in the node\n' + OPT.r + OPT.T;

describe('dog 1.0 texts: node', { timeout: 60_000 }, () => {
  it('list, list -r, stat, recovery on a fresh cluster', async () => {
    expectDog(await dog(['node', 'list']), {
      code: 0, stdout: `  Id   Host:Port         V-Nodes       Zone\n   0   ${`127.0.0.1:${s.port}`.padEnd(20)}\t128          0\n`,
    });
    expectDog(await dog(['node', 'list', '-r']), { code: 0, stdout: `0 127.0.0.1:${s.port} 128 0\n` });
    // only object I/O is counted: none yet
    expectDog(await dog(['node', 'stat']), {
      code: 0,
      stdout: 'Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD\n' +
        'Client\t0\t0\t0\t0\t0\t0\t0.0 MB\t0.0 MB\nPeer\t0\t0\t0\t0\t0\t0\t0.0 MB\t0.0 MB\n',
    });
    expectDog(await dog(['node', 'recovery']), {
      code: 0, stdout: 'Nodes In Recovery:\n  Id   Host:Port         V-Nodes       Zone       Progress\n',
    });
    expectDog(await dog(['node', 'recovery', '-P']), { code: 0 });
  });

  it('info', async () => {
    const sz = '\\d+(\\.\\d)? [MGTP]B';
    expectDog(await dog(['node', 'info']), {
      code: 0,
      stdout: new RegExp(`^Id\tSize\tUsed\tAvail\tUse%\n 0\t${sz}\t${sz}\t${sz}\t +\\d+%\nTotal\t${sz}\t${sz}\t${sz}\t +\\d+%\n\nTotal virtual image size\t0.0 MB\n$`),
    });
    expectDog(await dog(['node', 'info', '-r']), { code: 0, stdout: /^0 (\d+) (\d+) (\d+) \d+%\nTotal \1 \2 \3 \d+% 0\n$/ });
  });

  it('recovery set-throttle / get-throttle; out-of-range values change nothing', async () => {
    expectDog(await dog(['node', 'recovery', 'set-throttle', '1', '100']), { code: 0 });
    expectDog(await dog(['node', 'recovery', 'get-throttle']), { code: 0, stdout: 'max (1), interval (100)\n' });
    const bad: [string, string, string][] = [
      ['1001', '100', "Invalid max exec count '1001': it must be an integer from 0 to 1000"],
      ['4294967296', '100', "Invalid max exec count '4294967296': it must be an integer from 0 to 1000"],
      ['many', '100', "Invalid max exec count 'many': it must be an integer from 0 to 1000"],
      ['1', '60001', "Invalid queue work interval '60001': it must be an integer from 0 to 60000 (milliseconds)"],
      ['1', '1e3', "Invalid queue work interval '1e3': it must be an integer from 0 to 60000 (milliseconds)"],
    ];
    for (const [max, interval, msg] of bad) {
      expectDog(await dog(['node', 'recovery', 'set-throttle', max, interval]), { code: 64, stderr: `${msg}\n`, stdout: SET_THROTTLE_USAGE });
      expectDog(await dog(['node', 'recovery', 'get-throttle']), { code: 0, stdout: 'max (1), interval (100)\n' });
    }
    // sheep refuses them too, whoever sends them
    const c = new SheepClient({ port: s.port });
    try {
      for (const t of [{ maxExecCount: 1001, queueWorkInterval: 5n }, { maxExecCount: 2, queueWorkInterval: 60_001n }, { maxExecCount: 0xffffffff, queueWorkInterval: 2n ** 63n }]) {
        const r = await c.send({ opcode: Op.SET_RECOVERY, flags: Flag.CMD_WRITE }, encodeThrottling({ ...t, throttling: true }));
        expect(r.rsp.result).toBe(Res.INVALID_PARMS);
      }
      expect(decodeThrottling((await c.send({ opcode: Op.GET_RECOVERY, dataLength: 24 })).data))
        .toEqual({ maxExecCount: 1, queueWorkInterval: 100n, throttling: true });
    } finally {
      c.close();
    }
    expectDog(await dog(['node', 'recovery', 'set-throttle', '1000', '60000']), { code: 0 });
    expectDog(await dog(['node', 'recovery', 'get-throttle']), { code: 0, stdout: 'max (1000), interval (60000)\n' });
    expectDog(await dog(['node', 'recovery', 'set-throttle', '0', '0']), { code: 0 });
    expectDog(await dog(['node', 'recovery', 'get-throttle']), { code: 0, stdout: 'max (0), interval (0)\n' });
    expectDog(await dog(['node', 'recovery', 'set-throttle', '1']), { code: 64, stdout: SET_THROTTLE_USAGE });
  });

  it('log level', async () => {
    expectDog(await dog(['node', 'log', 'level']), { code: 64, stdout: LOG_LEVEL_USAGE });
    expectDog(await dog(['node', 'log', 'level', 'loud']), { code: 1, stdout: LOG_LEVEL_USAGE });
    expectDog(await dog(['node', 'log', 'level', '-h']), { code: 0, stdout: LOG_LEVEL_USAGE });
  });

  it('md plug / unplug ask first; a refused request says where to look', async () => {
    const banner = (msg: string) => `    __\n   ()'\`;\n   /\\|\`  Caution! ${msg}\n  /  |\n(/_)_|_  Are you sure you want to continue? [yes/no]: `;
    expectDog(await dog(['node', 'md', 'plug', '/nonexistent/disk'], 'no\n'),
      { code: 0, stdout: banner('The directories to be plugged will be purged.') });
    expectDog(await dog(['node', 'md', 'unplug', '/nonexistent/disk'], 'no\n'),
      { code: 0, stdout: banner('Recovery will be triggered after unplugging.') });
    expectDog(await dog(['node', 'md', 'plug', '-f', '/nonexistent/disk']),
      { code: 1, stderr: 'Failed to execute request, look for sheep.log for more information\n' });
  });

  it('md info: raw rows start with the node', async () => {
    expectDog(await dog(['node', 'md', 'info', '-r']), { code: 0, stdout: new RegExp(`^127\\.0\\.0\\.1:${s.port} 0 \\d+ \\d+ \\d+ \\d+% /\\S+\n$`) });
    expectDog(await dog(['node', 'md', 'info']), { code: 0, stdout: /^Id\tSize\tUsed\tAvail\tUse%\tPath\n 0\t[^\n]+\t\/\S+\n$/ });
  });

  it('kill with a bad id: the message only', async () => {
    expectDog(await dog(['node', 'kill', 'one']), { code: 64, stderr: "Invalid node id 'one', please specify a numeric value\n" });
    expectDog(await dog(['node', 'kill', '5']), { code: 64, stderr: "Invalid node id '5'\n" });
  });

  it('no sheep: two connect lines and "Failed to get node list", exit 2', async () => {
    const port = await freePort();
    expectDog(await runDog(['node', 'list'], { port }), {
      code: 2, stderr: `failed to connect to 127.0.0.1:${port}: Connection refused\n`.repeat(2) + 'Failed to get node list\n',
    });
  });
});
