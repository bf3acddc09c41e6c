// `dog cluster ...` as upstream dog 1.0 prints it (dog-transcript.txt,
// erasure-coding-and-md.md A.1, farm-and-backup.md C.1): exact stdout,
// stderr and exit status against one real sheep.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startSheep, stopAll, freePort, SheepProc } from '../helpers/cluster.js';
import { dog as runDog, expectDog, re } from '../helpers/dog10.js';

let s: SheepProc;
const dog = (args: string[], input?: string) => runDog(args, { port: s.port, input });

const INVALID_COPIES = (v: string) =>
  `Invalid parameter ${v}\nTo create replicated vdi, set -c x\n  x(1 to 31)   - number of replicated copies\n` +
  'To create erasure coded vdi, set -c x:y\n  x(2,4,8,16)  - number of data strips\n  y(1 to 15)   - number of parity strips\n';
const UNFORMATTED = { code: 0, stdout: 'Cluster status: Waiting for cluster to be formatted\n\n' };

beforeAll(async () => {
  s = await startSheep({ args: ['-z', '0'] });
});
afterAll(async () => {
  await stopAll();
});

describe('dog 1.0 texts: cluster', { timeout: 60_000 }, () => {
  it('before format', async () => {
    expectDog(await dog(['cluster', 'info']), UNFORMATTED);
    expectDog(await dog(['vdi', 'create', 'NotYet', '10M'], 'yes\n'),
      { code: 1, stderr: 'Failed to create VDI NotYet: Waiting for cluster to be formatted\n' });
  });

  it('format refuses bad -c and -z values before sending anything', async () => {
    for (const v of ['3:1', '0', '32', '2:0', '2:16', '4:x']) {
      expectDog(await dog(['cluster', 'format', '-c', v]), { code: 1, stderr: INVALID_COPIES(v) });
    }
    expectDog(await dog(['cluster', 'format', '-z', '19']),
      { code: 1, stderr: 'Object Size is larger than 2^20. Please set shift bit larger than 20\n' });
    expectDog(await dog(['cluster', 'format', '-z', '32']),
      { code: 1, stderr: 'Object Size is limited to 2^31. Please set shift bit lower than 31\n' });
    // the -c check comes before the connection: no sheep needed
    const gone = await freePort();
    expectDog(await runDog(['cluster', 'format', '-c', '3:1', '-p', String(gone)]), { code: 1, stderr: INVALID_COPIES('3:1') });
    expectDog(await dog(['cluster', 'info']), UNFORMATTED);
  });

  it('format asks when copies exceed zones; anything but yes changes nothing', async () => {
    expectDog(await dog(['cluster', 'format', '-c', '2'], 'no\n'), {
      code: 0, stdout: 'Number of copies (2) is larger than number of zones (1).\nAre you sure you want to continue? [yes/no]: ',
    });
    expectDog(await dog(['cluster', 'format', '-c', '2']), {
      code: 0, stdout: 'Number of copies (2) is larger than number of zones (1).\nAre you sure you want to continue? [yes/no]: ',
    });
    expectDog(await dog(['cluster', 'info']), UNFORMATTED);
  });

  it('an unknown store lists the available ones and exits 2, cluster unchanged', async () => {
    expectDog(await dog(['cluster', 'format', '-b', 'nosuch']), {
      code: 2,
      stdout: 'using backend nosuch store\nAvailable stores:\n---------------------------------------\nfarm tree plain \n',
      stderr: 'Format failed: Targeted backend store is not found\n',
    });
    expectDog(await dog(['cluster', 'info']), UNFORMATTED);
  });

  it('format and info', async () => {
    expectDog(await dog(['cluster', 'format', '--copies', '1']), { code: 0, stdout: 'using backend plain store\n' });
    const epoch = `\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d      1 \\[${re(`127.0.0.1:${s.port}:128`)}\\]\n`;
    const created = 'Cluster created at \\w{3} \\w{3} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d \\d{4}\n';
    expectDog(await dog(['cluster', 'info']), {
      code: 0,
      stdout: new RegExp(`^Cluster status: running, auto-recovery enabled\n\n${created}\nEpoch Time           Version \\[Host:Port:V-Nodes,,,\\]\n${epoch}$`),
    });
    expectDog(await dog(['cluster', 'info', '-v']), {
      code: 0,
      stdout: new RegExp('^Cluster status: running, auto-recovery enabled\nCluster store: plain with 1 redundancy policy\n' +
        `Cluster vnodes strategy: auto\nCluster vnode mode: node\n${created}\nEpoch Time           Version \\[Host:Port:V-Nodes,,,\\]\n${epoch}$`),
    });
    expectDog(await dog(['cluster', 'info', '-r']), {
      code: 0, stdout: new RegExp(`^running, auto-recovery enabled\n\n\\d+ 1 \\[${re(`127.0.0.1:${s.port}:128`)}\\]\n$`),
    });
  });

  it('a cluster whose nodes hold objects is formatted only with -f (1.0 asks, and formats after a yes)', async () => {
    expectDog(await dog(['vdi', 'create', 'Keep', '4M']), { code: 0 });
    for (const input of ['no\n', 'yes\n']) {
      expectDog(await dog(['cluster', 'format', '--copies', '1'], input), {
        code: 1,
        stderr: `Refusing to format: formatting destroys every object the nodes hold, and\n  127.0.0.1:${s.port} holds 1 object\nUse -f (--force) to format anyway.\n`,
      });
    }
    expect((await dog(['vdi', 'list', '-r', 'Keep'])).stdout).toMatch(/^= Keep 0 4194304 /);
  });

  it('recover enable / disable', async () => {
    // 1.0 prints no "*Note*" line before it
    expectDog(await dog(['cluster', 'recover', 'disable']), { code: 0, stdout: 'Cluster recovery: disable\n' });
    expect((await dog(['cluster', 'info'])).stdout).toMatch(/^Cluster status: running, auto-recovery disabled\n/);
    expectDog(await dog(['cluster', 'recover', 'enable']), { code: 0, stdout: 'Cluster recovery: enable\n' });
    expect((await dog(['cluster', 'info'])).stdout).toMatch(/^Cluster status: running, auto-recovery enabled\n/);
  });

  it('alter-copy refuses erasure coding with the usage', async () => {
    expectDog(await dog(['cluster', 'alter-copy', '-c', '2:1']), {
      code: 64,
      stderr: 'Changing redundancy level of erasure coded vdi is not supported yet.\n',
      stdout: /^Usage: dog cluster alter-copy \[-a address\] \[-p port\] \[-h\] \[-c copies\] \[-f\] \[-T\]\nOptions:\n/,
    });
  });

  it('command words: missing, unknown, help', async () => {
    // dog 1.0's list (snapshot is where upstream's cluster.c has it), then the commands 1.0 does not have
    const list = 'Available cluster commands:\n' +
      ['info', 'format', 'shutdown', 'snapshot', 'recover', 'reweight', 'check', 'alter-copy', 'scrub'].map((c) => `  cluster ${c}\n`).join('');
    expectDog(await runDog(['cluster']), { code: 64, stderr: list });
    expectDog(await runDog(['cluster', 'help']), { code: 64, stderr: list });
    expectDog(await runDog(['cluster', 'fromat']), { code: 64, stderr: "Invalid command 'cluster fromat'\n" + list });
    expectDog(await runDog(['clutser', 'info']), { code: 64, stderr: "Invalid command 'clutser'\nTry 'dog --help' for more information.\n" });
    // a missing sub-subcommand is a usage error; an unknown one prints the usage and fails
    const recUsage = /^Usage: dog cluster recover \{force\|enable\|disable\} \[-a address\] \[-f\] \[-p port\] \[-h\] \[-T\]\nAvailable subcommands:\n/;
    expectDog(await dog(['cluster', 'recover']), { code: 64, stdout: recUsage });
    expectDog(await dog(['cluster', 'recover', 'sideways']), { code: 1, stdout: recUsage });
    expectDog(await dog(['cluster', 'info', '-q']), { code: 64, stderr: "dog: invalid option -- 'q'\n", stdout: /^Usage: dog cluster info / });
  });

  it('shutdown, then nothing answers', async () => {
    expectDog(await dog(['cluster', 'shutdown']), { code: 0 });
    await s.exited;
    expectDog(await dog(['node', 'list']), {
      code: 2,
      stderr: `failed to connect to 127.0.0.1:${s.port}: Connection refused\n`.repeat(2) + 'Failed to get node list\n',
    });
  });
});
