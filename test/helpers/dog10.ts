// Run collie under the name `dog` and compare what it prints with upstream
// dog 1.0's text (dog-transcript.txt and the docs in ../shared/docs).
import * as path from 'node:path';
import { expect } from 'vitest';
import { ROOT, run, RunResult } from './cluster.js';

export const DOG_BIN = path.join(ROOT, 'collie/bin/dog.js');

/** dog ARGS, with `-p PORT` appended last as libvirt and Cinder do. */
export function dog(args: string[], opts: { port?: number; input?: Buffer | string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return run(DOG_BIN, opts.port ? [...args, '-p', String(opts.port)] : args, opts);
}

export interface Expected {
  code: number;
  stdout?: string | RegExp;
  stderr?: string | RegExp;
}

const match = (v: string | RegExp | undefined) => (v instanceof RegExp ? expect.stringMatching(v) : v ?? '');

/** Exit status, stdout and stderr all as expected (an omitted stream must be empty). */
export function expectDog(r: RunResult, e: Expected): void {
  expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code: e.code, stdout: match(e.stdout), stderr: match(e.stderr) });
}

/** The option lines of dog's usage blocks, by letter. */
export const OPT: Record<string, string> = {
  a: '  -a, --address           specify the daemon address (default: localhost)\n',
  p: '  -p, --port              specify the daemon port\n',
  h: '  -h, --help              display this help and exit\n',
  r: '  -r, --raw               raw output mode: omit headers, separate fields with\n' +
     '                          single spaces and print all sizes in decimal bytes\n',
  v: '  -v, --verbose           print more information than default\n',
  T: '  -T, --time              show elapsed time\n',
};

/** Escape a literal for use inside a RegExp. */
export const re = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
