// collie / dog entry point: dispatch "<command> <subcommand> ...", parse
// options, run, map failures to dog's exit statuses.
import * as path from 'node:path';
import { ConnectionError, SheepdogError, resultMessage } from '@sheepdog/common';
import {
  CommandGroup, SubCommand, parseOptions, usageText, mainUsage, OptionParseError, Opts,
} from './cli.js';
import { Ctx } from './conn.js';
import { CliError, EXIT_SUCCESS, EXIT_FAILURE, EXIT_SYSFAIL, EXIT_USAGE } from './exitcodes.js';
import { parsePort } from './args.js';
import { vdiCommands } from './commands/vdi.js';
import { nodeCommands } from './commands/node.js';
import { clusterCommands } from './commands/cluster.js';
import { Sink, processSink } from './output.js';
import { writeStdout } from './io.js';
import { VERSION } from './version.js';

export const commandGroups: CommandGroup[] = [
  { name: 'vdi', sub: vdiCommands },
  { name: 'node', sub: nodeCommands },
  { name: 'cluster', sub: clusterCommands },
];

export function programName(argv1 = process.argv[1] ?? 'collie'): string {
  const b = path.basename(argv1).replace(/\.(m?js|ts)$/, '');
  return b === 'dog' ? 'dog' : 'collie';
}

/** Options that take a value, for finding <command> <subcommand> among leading options. */
const LEADING_WITH_VALUE = new Set(['-a', '--address', '-p', '--port']);

export interface RunOptions {
  prog?: string;
  sink?: Sink;
  env?: NodeJS.ProcessEnv;
}

/** Run one collie command line; resolves to the exit status. */
export async function run(argv: string[], ro: RunOptions = {}): Promise<number> {
  const ctx = new Ctx();
  ctx.prog = ro.prog ?? programName();
  ctx.sink = ro.sink ?? processSink;
  const env = ro.env ?? process.env;
  const prog = ctx.prog;

  // Global options may precede the command: move them after it.
  const lead: string[] = [];
  const rest = [...argv];
  while (rest.length && rest[0].startsWith('-') && rest[0] !== '-') {
    const a = rest.shift()!;
    if (a === '--help' || a === '-h') {
      ctx.out(mainUsage(prog, VERSION, commandGroups));
      return EXIT_SUCCESS;
    }
    if (a === '--version') {
      ctx.out(`${prog} version ${VERSION}\n`);
      return EXIT_SUCCESS;
    }
    lead.push(a);
    if (LEADING_WITH_VALUE.has(a) && rest.length) lead.push(rest.shift()!);
  }
  const [cmd, subcmd, ...tail] = rest;
  if (!cmd) {
    ctx.sink.err(mainUsage(prog, VERSION, commandGroups));
    return EXIT_USAGE;
  }
  const group = commandGroups.find((g) => g.name === cmd);
  if (!group) {
    ctx.err(`Invalid command '${cmd}'`);
    ctx.err(`Try '${prog} --help' for more information.`);
    return EXIT_USAGE;
  }
  const top = group.sub.find((s) => s.name === subcmd);
  if (!top) {
    if (subcmd && subcmd !== 'help' && subcmd !== '--help' && subcmd !== '-h') ctx.err(`Invalid command '${cmd} ${subcmd}'`);
    let s = `Available ${cmd} commands:\n`;
    for (const x of group.sub) s += `  ${cmd} ${x.name}\n`;
    if (subcmd === 'help' || subcmd === '--help' || subcmd === '-h') {
      ctx.out(s);
      return EXIT_SUCCESS;
    }
    ctx.sink.err(s);
    return EXIT_USAGE;
  }

  const pathNames = [cmd, subcmd];
  let deepest: SubCommand = top;
  const usage = () => usageText(prog, pathNames, top, deepest);

  let opts: Opts;
  let args: string[];
  try {
    ({ opts, args } = parseOptions(top, [...lead, ...tail]));
  } catch (e) {
    if (e instanceof OptionParseError) {
      ctx.err(`${prog}: ${e.message}`);
      ctx.sink.err(usage());
      return EXIT_USAGE;
    }
    throw e;
  }
  if (opts.h) {
    // Show the help of the deepest subcommand named on the line.
    let sc = top;
    for (const a of args) {
      const n = sc.sub?.find((x) => x.name === a);
      if (!n) break;
      pathNames.push(a);
      sc = n;
    }
    deepest = sc;
    ctx.out(usage());
    return EXIT_SUCCESS;
  }

  const started = process.hrtime.bigint();
  try {
    const addr = (opts.a as string | undefined) ?? env.SHEEPDOG_DOG_ADDR;
    const port = (opts.p as string | undefined) ?? env.SHEEPDOG_DOG_PORT;
    if (addr !== undefined) ctx.host = addr;
    if (port !== undefined) ctx.port = parsePort(port);
    ctx.raw = opts.r === true;
    ctx.verbose = opts.v === true;

    // Walk down sub-subcommands (vdi object map, node log level get, ...).
    let sc = top;
    const needNL = () => sc.needNodeList;
    let loaded = false;
    if (top.needArg && args.length === 0 && !(top.sub && top.run)) throw new CliError(EXIT_USAGE);
    if (needNL() && !loaded) {
      await ctx.resolveHost();
      await ctx.loadNodeList();
      loaded = true;
    }
    while (sc.sub && !(sc.run && args.length === 0)) {
      const name = args[0];
      const next = name === undefined ? undefined : sc.sub.find((x) => x.name === name);
      if (!next) {
        if (name !== undefined) ctx.err(`Invalid subcommand '${name}'`);
        throw new CliError(EXIT_USAGE);
      }
      args.shift();
      pathNames.push(name);
      deepest = sc = next;
      if (sc.needArg && args.length === 0) throw new CliError(EXIT_USAGE);
      if (needNL() && !loaded) {
        await ctx.resolveHost();
        await ctx.loadNodeList();
        loaded = true;
      }
    }
    if (sc.needArg && args.length === 0) throw new CliError(EXIT_USAGE);
    if (!loaded) await ctx.resolveHost();
    const code = await sc.run!(ctx, args, opts);
    if (code === EXIT_USAGE) ctx.sink.err(usage());
    if (opts.T) ctx.out(`Elapsed time: ${(Number(process.hrtime.bigint() - started) / 1e9).toFixed(3)} seconds\n`);
    return code;
  } catch (e) {
    if (e instanceof CliError) {
      if (e.message) ctx.err(e.message);
      if (e.showUsage) ctx.sink.err(usage());
      return e.code;
    }
    if (e instanceof ConnectionError) return EXIT_SYSFAIL;
    if (e instanceof SheepdogError) {
      ctx.err(resultMessage(e.result));
      return EXIT_FAILURE;
    }
    throw e;
  } finally {
    ctx.closeAll();
  }
}

/** Process entry: run, flush stdout, exit. */
export async function main(argv: string[] = process.argv.slice(2)): Promise<never> {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    // A reader that went away (e.g. `| head`) is not an error of ours.
    process.exit(e.code === 'EPIPE' ? EXIT_SUCCESS : EXIT_SYSFAIL);
  });
  let code: number;
  try {
    code = await run(argv);
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    code = EXIT_SYSFAIL;
  }
  await writeStdout('');
  await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
  process.exit(code);
}
