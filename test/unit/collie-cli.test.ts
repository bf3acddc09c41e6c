// Argument parsing, usage texts and exit codes; no daemon needed.
import { describe, it, expect } from 'vitest';
import { run } from '../../collie/src/main.js';
import { BufferSink } from '../../collie/src/output.js';
import { parseSize, parseCopies, parseSnapshot } from '../../collie/src/args.js';
import { freePort } from '../helpers/cluster.js';

async function dog(args: string[], prog = 'dog') {
  const sink = new BufferSink();
  const code = await run(args, { prog, sink, env: {} });
  return { code, stdout: sink.stdout, stderr: sink.stderr };
}

const CREATE_USAGE =
  'Usage: dog vdi create [-P] [-y] [-c copies] [-a address] [-p port] [-h] [-r] [-v] [-z block_size_shift] [-T] <vdiname> <size>\n' +
  'Options:\n' +
  '  -P, --prealloc          preallocate all the data objects\n' +
  '  -y, --hyper             create a hyper volume\n' +
  '  -c, --copies            specify the data redundancy level\n' +
  '  -a, --address           specify the daemon address (default: localhost)\n' +
  '  -p, --port              specify the daemon port\n' +
  '  -h, --help              display this help and exit\n' +
  '  -r, --raw               raw output mode: omit headers, separate fields with\n' +
  '                          single spaces and print all sizes in decimal bytes\n' +
  '  -v, --verbose           print more information than default\n' +
  '  -z, --block_size_shift  specify the bit shift num for data object size\n' +
  '  -T, --time              show elapsed time\n';

const CLONE_USAGE =
  'Usage: dog vdi clone [-s snapshot] [-P] [-n] [-a address] [-p port] [-h] [-r] [-v] [-T] <src vdi> <dst vdi>\n' +
  'Options:\n' +
  '  -s, --snapshot          specify a snapshot id or tag name\n' +
  '  -P, --prealloc          preallocate all the data objects\n' +
  '  -n, --no-share          share nothing with its parent\n' +
  '  -a, --address           specify the daemon address (default: localhost)\n' +
  '  -p, --port              specify the daemon port\n' +
  '  -h, --help              display this help and exit\n' +
  '  -r, --raw               raw output mode: omit headers, separate fields with\n' +
  '                          single spaces and print all sizes in decimal bytes\n' +
  '  -v, --verbose           print more information than default\n' +
  '  -T, --time              show elapsed time\n';

const LOG_LEVEL_USAGE =
  'Usage: dog node log level {set|get|list} [-a address] [-p port] [-h] [-T]\n' +
  'Available subcommands:\n' +
  '  set                     set new loglevel\n' +
  '  get                     get current loglevel\n' +
  '  list                    list available loglevels\n' +
  'Options:\n' +
  '  -a, --address           specify the daemon address (default: localhost)\n' +
  '  -p, --port              specify the daemon port\n' +
  '  -h, --help              display this help and exit\n' +
  '  -T, --time              show elapsed time\n';

// dog prints usage blocks with printf: on stdout, also after an error (the
// error line itself goes to stderr).
describe('usage and exit code 64', () => {
  it('-h prints the upstream usage block on stdout, exit 0', async () => {
    const r = await dog(['vdi', 'create', '-h']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(CREATE_USAGE);
  });
  it('uses the program name it was invoked as', async () => {
    const r = await dog(['vdi', 'create', '--help'], 'collie');
    expect(r.stdout.startsWith('Usage: collie vdi create [-P]')).toBe(true);
  });
  it('missing arguments', async () => {
    const r = await dog(['vdi', 'create']);
    expect(r.code).toBe(64);
    expect(r.stdout).toBe(CREATE_USAGE);
    expect(r.stderr).toBe('');
  });
  it('clone without -s is refused before any request', async () => {
    const r = await dog(['vdi', 'clone', 'Alice', 'Carol']);
    expect(r.code).toBe(64);
    expect(r.stderr).toBe("Only snapshot VDIs can be cloned\nPlease specify the '-s' option\n");
    expect(r.stdout).toBe(CLONE_USAGE);
  });
  it('node log level without a subcommand', async () => {
    const r = await dog(['node', 'log', 'level']);
    expect(r.code).toBe(64);
    expect(r.stdout).toBe(LOG_LEVEL_USAGE);
  });
  it('unknown option', async () => {
    const r = await dog(['vdi', 'list', '-q']);
    expect(r.code).toBe(64);
    expect(r.stderr).toBe("dog: invalid option -- 'q'\n");
    expect(r.stdout).toContain('Usage: dog vdi list');
    const l = await dog(['vdi', 'list', '--bogus']);
    expect(l.code).toBe(64);
    expect(l.stderr.split('\n')[0]).toBe("dog: unrecognized option '--bogus'");
  });
  it('option missing its argument', async () => {
    const r = await dog(['vdi', 'read', 'Alice', '-s']);
    expect(r.code).toBe(64);
    expect(r.stderr.split('\n')[0]).toBe("dog: option requires an argument -- 's'");
  });
  it('unknown command and subcommand', async () => {
    // dog 1.0 has no --version: it is taken for a command
    const a = await dog(['--version']);
    expect(a.code).toBe(64);
    expect(a.stdout).toBe('');
    expect(a.stderr).toBe("Invalid command '--version'\nTry 'dog --help' for more information.\n");
    const b = await dog(['vdo', 'list']);
    expect(b.code).toBe(64);
    expect(b.stderr).toBe("Invalid command 'vdo'\nTry 'dog --help' for more information.\n");
    const c = await dog(['vdi', 'lst']);
    expect(c.code).toBe(64);
    expect(c.stderr.split('\n').slice(0, 3)).toEqual(["Invalid command 'vdi lst'", 'Available vdi commands:', '  vdi check']);
    // an unknown sub-subcommand: the usage, and exit 1 (do_generic_subcommand)
    const d = await dog(['vdi', 'object', 'mop', 'Alice']);
    expect(d.code).toBe(1);
    expect(d.stderr).toBe('');
    expect(d.stdout).toContain('Usage: dog vdi object {location|map} [-i index] [-s snapshot]');
    // no command: the command list, exit 0; no subcommand or "help": the list of subcommands on stderr, exit 64
    const e = await dog([]);
    expect(e.code).toBe(0);
    expect(e.stdout).toContain('Usage: dog [options] <command> <subcommand> [options]');
    for (const args of [['vdi'], ['vdi', 'help'], ['vdi', '--help']]) {
      const h = await dog(args);
      expect(h.code).toBe(64);
      expect(h.stdout).toBe('');
      expect(h.stderr.split('\n').slice(0, 2)).toEqual(['Available vdi commands:', '  vdi check']);
    }
  });
  it('bad sizes, ports and snapshot ids', async () => {
    const r = await dog(['vdi', 'resize', 'Alice', '12Q']);
    expect(r.code).toBe(64);
    expect(r.stderr.split('\n')[0]).toBe("Invalid size '12Q'");
    const p = await dog(['node', 'list', '-p', '70000']);
    expect(p.code).toBe(64);
    expect(p.stderr).toBe("Invalid port number '70000'\n");
    const s = await dog(['vdi', 'read', '-s', '0', 'Alice']);
    expect(s.code).toBe(1);
    expect(s.stderr).toBe('The snapshot id must be larger than zero\n');
    const t = await dog(['vdi', 'snapshot', '-s', '12', 'Alice']);
    expect(t.code).toBe(64);
    expect(t.stderr.split('\n')[0]).toBe('Please specify a non-integer value for a snapshot tag name');
  });
  it('top-level --help lists commands', async () => {
    const r = await dog(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: dog [options] <command> <subcommand> [options]');
    expect(r.stdout).toContain('  vdi create              create an image\n');
    expect(r.stdout).toContain('  cluster info            show cluster information\n');
  });
});

describe('connection failures', () => {
  it('prints dog\'s lines and exits 2; -p may follow positionals or precede the command', async () => {
    const port = await freePort();
    const want = `failed to connect to 127.0.0.1:${port}: Connection refused\n`.repeat(2) + 'Failed to get node list\n';
    for (const args of [['node', 'list', '-p', String(port)], ['-p', String(port), 'node', 'list'], [`-p${port}`, 'node', 'list'],
      [`--port=${port}`, '-r', 'node', 'list']]) {
      const r = await dog(args);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(want);
    }
    const v = await dog(['vdi', 'list', 'NAME', '-r', '-a', '127.0.0.1', '-p', String(port)]);
    expect(v.code).toBe(2);
    expect(v.stderr).toBe(`failed to connect to 127.0.0.1:${port}: Connection refused\n`.repeat(2));
  });
  it('honours SHEEPDOG_DOG_ADDR / SHEEPDOG_DOG_PORT', async () => {
    const port = await freePort();
    const sink = new BufferSink();
    const code = await run(['node', 'list'], { prog: 'dog', sink, env: { SHEEPDOG_DOG_ADDR: 'localhost', SHEEPDOG_DOG_PORT: String(port) } });
    expect(code).toBe(2);
    expect(sink.stderr).toContain(`failed to connect to 127.0.0.1:${port}: Connection refused`);
  });
});

describe('value parsers', () => {
  it('sizes', () => {
    expect(parseSize('256G')).toBe(256n << 30n);
    expect(parseSize('1024k')).toBe(1n << 20n);
    expect(parseSize('10M')).toBe(10n << 20n);
    expect(parseSize('123')).toBe(123n);
    expect(parseSize('5T')).toBe(5n << 40n);
    expect(parseSize('1.5G')).toBe(3n << 29n);
    expect(parseSize('12Q')).toBeUndefined();
    expect(parseSize('')).toBeUndefined();
  });
  it('copies', () => {
    expect(parseCopies('3')).toEqual({ copies: 3, policy: 0 });
    expect(parseCopies('2:1')).toEqual({ copies: 3, policy: 0x11 });
    expect(parseCopies('4:2')).toEqual({ copies: 6, policy: 0x22 });
    expect(parseCopies('16:15')).toEqual({ copies: 31, policy: 0x8f });
    // strtok: empty pieces are skipped and a third one is ignored
    expect(parseCopies('2:1:9')).toEqual({ copies: 3, policy: 0x11 });
    for (const bad of ['0', '32', '3:1', '2:0', '2:16', '4:x', 'x', '', '64:1']) {
      expect(() => parseCopies(bad)).toThrow(`Invalid parameter ${bad}\nTo create replicated vdi, set -c x\n`);
    }
  });
  it('snapshot id or tag', () => {
    expect(parseSnapshot('2')).toEqual({ id: 2, tag: '' });
    expect(parseSnapshot('snap1')).toEqual({ id: 0, tag: 'snap1' });
    expect(parseSnapshot(undefined)).toEqual({ id: 0, tag: '' });
  });
});

import { Progress, renderBar } from '../../collie/src/progress.js';
import { PassThrough } from 'node:stream';
describe('progress bar', () => {
  it('renders percentage, bar and sizes', () => {
    expect(renderBar(0n, 100n << 20n, 80)).toBe('  0.0 % [>                                       ] 0.0/100.0 MB');
    expect(renderBar(50n << 20n, 100n << 20n, 80)).toBe(' 50.0 % [====================>                   ] 50.0/100.0 MB');
    expect(renderBar(100n << 20n, 100n << 20n, 80)).toBe('100.0 % [========================================] 100.0/100.0 MB');
  });
  it('is silent unless stderr is a terminal and the transfer is big', () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (b) => (text += b));
    const quiet = new Progress(100n << 20n, { stream: out as unknown as NodeJS.WriteStream });
    quiet.update(1n);
    quiet.finish();
    expect(text).toBe('');
    const tty = Object.assign(out, { isTTY: true, columns: 80 }) as unknown as NodeJS.WriteStream;
    const small = new Progress(1n << 20n, { stream: tty });
    small.update(1n);
    expect(text).toBe('');
    const big = new Progress(8n << 20n, { stream: tty });
    big.update(4n << 20n);
    big.update(4n << 20n); // unchanged: not redrawn
    big.finish();
    expect(text).toBe('\r' + renderBar(4n << 20n, 8n << 20n, 80) + '\r' + renderBar(8n << 20n, 8n << 20n, 80) + '\n');
  });
});
