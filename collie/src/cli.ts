// The command table, upstream-style usage texts and option parsing.
// Options are parsed with commander (getopt-like: options may come before or
// after positional arguments); usage texts are printed exactly like dog's.
import { Command, Option, CommanderError } from 'commander';
import type { Ctx } from './conn.js';

export interface OptDef {
  ch: string;
  name: string;
  hasArg: boolean;
  desc: string;
}

/** Parsed options: letter -> string value (has_arg) or true. */
export type Opts = Record<string, string | true | undefined>;

export type RunFn = (ctx: Ctx, args: string[], o: Opts) => Promise<number>;

export interface SubCommand {
  name: string;
  arg?: string;
  /** Option letters as upstream lists them ('T' is appended to all). */
  opts?: string;
  desc: string;
  needNodeList?: boolean;
  needArg?: boolean;
  sub?: SubCommand[];
  run?: RunFn;
  /** Takes --json (see json.ts); other commands refuse it as a usage error. */
  json?: boolean;
  /** Command-group specific options (vdi_options, node_options, ...). */
  options?: OptDef[];
}

export interface CommandGroup {
  name: string;
  sub: SubCommand[];
  /**
   * Checks option values as dog's per-command option parser does, right
   * after the command line is parsed and before any connection is made
   * (an invalid -c or -z fails even when no sheep is running).
   */
  parser?: (o: Opts) => void;
}

export const globalOptions: OptDef[] = [
  { ch: 'a', name: 'address', hasArg: true, desc: 'specify the daemon address (default: localhost)' },
  { ch: 'p', name: 'port', hasArg: true, desc: 'specify the daemon port' },
  {
    ch: 'r', name: 'raw', hasArg: false,
    desc: 'raw output mode: omit headers, separate fields with\n                          single spaces and print all sizes in decimal bytes',
  },
  { ch: 'v', name: 'verbose', hasArg: false, desc: 'print more information than default' },
  { ch: 'h', name: 'help', hasArg: false, desc: 'display this help and exit' },
  { ch: 'T', name: 'time', hasArg: false, desc: 'show elapsed time' },
];

export function optionLetters(sc: SubCommand): string {
  const o = sc.opts ?? 'aph';
  return o.includes('T') ? o : o + 'T';
}

export function findOpt(sc: SubCommand, ch: string): OptDef {
  const d = sc.options?.find((x) => x.ch === ch) ?? globalOptions.find((x) => x.ch === ch);
  if (!d) throw new Error(`option -${ch} is not defined`);
  return d;
}

/**
 * subcommand_usage(): `path` is [cmd, subcmd, sub-subcmd...]; options and
 * argument text come from the top subcommand, the subcommand list from the
 * deepest one.
 */
export function usageText(prog: string, path: string[], top: SubCommand, deepest: SubCommand): string {
  let s = `Usage: ${prog} ${path.join(' ')}`;
  const subsub = deepest.sub;
  if (subsub && subsub.length === 1) s += ` ${subsub[0].name}`;
  else if (subsub && subsub.length > 1) s += ` {${subsub.map((x) => x.name).join('|')}}`;
  const letters = optionLetters(top);
  for (const ch of letters) {
    const d = findOpt(top, ch);
    s += d.hasArg ? ` [-${d.ch} ${d.name}]` : ` [-${d.ch}]`;
  }
  if (top.arg) s += ` ${top.arg}`;
  s += '\n';
  if (subsub) {
    s += 'Available subcommands:\n';
    for (const x of subsub) s += `  ${x.name.padEnd(24)}${x.desc}\n`;
  }
  s += 'Options:\n';
  for (const ch of letters) {
    const d = findOpt(top, ch);
    s += `  ${`-${d.ch}, --${d.name}`.padEnd(24)}${d.desc}\n`;
  }
  return s;
}

export function mainUsage(prog: string, version: string, groups: CommandGroup[]): string {
  let s = `Sheepdog administrator utility (version ${version})\n`;
  s += `Usage: ${prog} [options] <command> <subcommand> [options]\n\nAvailable commands:\n`;
  for (const g of groups) for (const sc of g.sub) s += `  ${`${g.name} ${sc.name}`.padEnd(24)}${sc.desc}\n`;
  s += `\nFor more information, run '${prog} <command> <subcommand> --help'.\n`;
  return s;
}

export class OptionParseError extends Error {}

/** getopt_long over the letters of one subcommand; returns options and operands. */
export function parseOptions(sc: SubCommand, argv: string[]): { opts: Opts; args: string[] } {
  const cmd = new Command();
  cmd
    .exitOverride()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined, outputError: () => undefined })
    .helpOption(false)
    .allowExcessArguments(true)
    .argument('[args...]')
    .action(() => undefined);
  const attrs: [OptDef, Option][] = [];
  for (const ch of optionLetters(sc)) {
    const d = findOpt(sc, ch);
    const opt = new Option(d.hasArg ? `-${d.ch}, --${d.name} <${d.name}>` : `-${d.ch}, --${d.name}`);
    cmd.addOption(opt);
    attrs.push([d, opt]);
  }
  try {
    cmd.parse(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) throw new OptionParseError(getoptMessage(e.message));
    throw e;
  }
  const opts: Opts = {};
  for (const [d, opt] of attrs) {
    const v = cmd.getOptionValue(opt.attributeName());
    if (d.hasArg) {
      if (typeof v === 'string') opts[d.ch] = v;
    } else if (opt.negate ? v === false : v === true) {
      opts[d.ch] = true;
    }
  }
  return { opts, args: cmd.args };
}

/** Turn commander's error text into getopt's wording. */
function getoptMessage(m: string): string {
  let x = /unknown option '(-[^-=\s']+|--[^=\s']+)/.exec(m);
  if (x) {
    const o = x[1];
    return o.startsWith('--') ? `unrecognized option '${o}'` : `invalid option -- '${o.slice(1, 2)}'`;
  }
  x = /option '(-\w)[, ]/.exec(m) ?? /option '([^']+)'/.exec(m);
  if (/argument missing/.test(m) && x) {
    const o = x[1];
    return o.startsWith('--') ? `option '${o}' requires an argument` : `option requires an argument -- '${o.slice(1, 2)}'`;
  }
  return m.replace(/^error: /, '');
}
