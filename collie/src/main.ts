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
import { vdiCommands, vdiParser } from './commands/vdi.js';
import { nodeCommands } from './commands/node.js';
import { clusterCommands, clusterParser } from './commands/cluster.js';
import { s3Commands } from './commands/s3.js';
import { Sink, processSink } from './output.js';
import { writeStdout } from './io.js';
import { VERSION } from './version.js';

export const commandGroups: CommandGroup[] = [
  { name: 'vdi', sub: vdiCommands, parser: vdiParser },
  { name: 'node', sub: nodeCommands },
  { name: 'cluster', sub: clusterCommands, parser: clusterParser },
  { name: 's3', sub: s3Commands },
];

export function programName(argv1 = process.argv[1] ?? 'collie'): string {
  const b = path.basename(argv1).replace(/\.(m?js|ts)$/, '');
  return b === 'dog' ? 'dog' : 'collie';
}

/** Global options accepted before <command>; the first two pairs take a value. */
const LEADING_WITH_VALUE = new Set(['-a', '--address', '-p', '--port']);
const LEADING = new Set([...LEADING_WITH_VALUE, '-r', '--raw', '-v', '--verbose', '-T', '--time']);
const HELP_WORDS = new Set(['help', '--help', '-h']);

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

  // Global options may precede the command (an extension of ours: dog takes
  // its first word as the command): move them after it.
  const lead: string[] = [];
  const rest = [...argv];
  while (rest.length && (LEADING.has(rest[0]) || /^(-[ap].|--(address|port)=)/.test(rest[0]))) {
    const a = rest.shift()!;
    lead.push(a);
    if (LEADING_WITH_VALUE.has(a) && rest.length) lead.push(rest.shift()!);
  }
  // --json is ours, not dog's: taken out here so it changes no usage text
  // and no option parsing; commands that do not take it refuse it below.
  const json = rest.includes('--json');
  const [cmd, subcmd, ...tail] = json ? rest.filter((a) => a !== '--json') : rest;
  // usage(): the command list on stdout (exit 0), or a pointer to it on stderr.
  if (cmd === undefined || HELP_WORDS.has(cmd)) {
    ctx.out(mainUsage(prog, VERSION, commandGroups));
    return EXIT_SUCCESS;
  }
  const group = commandGroups.find((g) => g.name === cmd);
  if (!group) {
    ctx.err(`Invalid command '${cmd}'`);
    ctx.err(`Try '${prog} --help' for more information.`);
    return EXIT_USAGE;
  }
  const top = group.sub.find((s) => s.name === subcmd);
  if (!top) {
    // dog prints the list of subcommands on stderr and exits 64, even for help
    if (subcmd !== undefined && !HELP_WORDS.has(subcmd)) ctx.err(`Invalid command '${cmd} ${subcmd}'`);
    let s = `Available ${cmd} commands:\n`;
    for (const x of group.sub) s += `  ${cmd} ${x.name}\n`;
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
      ctx.out(usage());
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
  try {
    group.parser?.(opts);
  } catch (e) {
    if (e instanceof CliError) {
      if (e.message) ctx.err(e.message);
      if (e.showUsage) ctx.out(usage());
      return e.code;
    }
    throw e;
  }

  if (json) {
    // before any connection: a command without JSON output is a usage error
    let sc = top;
    const names = [cmd, subcmd];
    for (const a of args) {
      const n = sc.sub?.find((x) => x.name === a);
      if (!n) break;
      names.push(a);
      sc = n;
    }
    if (!sc.json) {
      ctx.err(`${prog}: '${names.join(' ')}' has no JSON output (--json)`);
      ctx.out(usage());
      return EXIT_USAGE;
    }
    ctx.json = true;
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
        // do_generic_subcommand(): an unknown word prints the usage and fails (1)
        throw new CliError(name === undefined ? EXIT_USAGE : EXIT_FAILURE, '', true);
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
    if (code === EXIT_USAGE) ctx.out(usage());
    if (opts.T) ctx.out(`Elapsed time: ${(Number(process.hrtime.bigint() - started) / 1e9).toFixed(3)} seconds\n`);
    return code;
  } catch (e) {
    if (e instanceof CliError) {
      if (e.message) ctx.err(e.message);
      if (e.showUsage) ctx.out(usage());
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
