// Parsers for option values and positional arguments, with dog's messages.
import { CliError, EXIT_FAILURE, EXIT_USAGE } from './exitcodes.js';
import { parseRedundancy } from '@sheepdog/common';

const isNumeric = (s: string) => /^[0-9]+$/.test(s);

/**
 * option_parse_size(): a number (decimals allowed) with an optional
 * k/M/G/T/P/E/Z suffix (powers of 1024) or 'b'.
 */
export function parseSize(s: string): bigint | undefined {
  const m = /^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.)([kKmMgGtTpPeEzZbB]?)$/.exec(s);
  if (!m) return undefined;
  const shifts: Record<string, number> = { '': 0, b: 0, k: 10, m: 20, g: 30, t: 40, p: 50, e: 60, z: 70 };
  const shift = shifts[m[2].toLowerCase()];
  if (/^[0-9]+$/.test(m[1])) return BigInt(m[1]) << BigInt(shift);
  const v = Number(m[1]) * 2 ** shift;
  if (!Number.isFinite(v)) return undefined;
  return BigInt(Math.floor(v));
}

/** parseSize, or print dog's error and fail with EXIT_USAGE. */
export function sizeArg(s: string): bigint {
  const v = parseSize(s);
  if (v === undefined) {
    throw new CliError(
      EXIT_USAGE,
      `Invalid size '${s}'\nYou may use k, M, G, T, P, E or Z suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes, exabytes and zettabytes.`,
    );
  }
  return v;
}

/** -s ID|TAG: a positive number is a snapshot id, anything else a tag. */
export function parseSnapshot(s: string | undefined): { id: number; tag: string } {
  if (s === undefined) return { id: 0, tag: '' };
  if (isNumeric(s)) {
    const id = Number(s);
    if (id === 0) throw new CliError(EXIT_FAILURE, 'The snapshot id must be larger than zero');
    return { id, tag: '' };
  }
  return { id: 0, tag: s };
}

/**
 * -F ID|TAG of vdi backup: a decimal number is an id and 0 means "not
 * given"; anything else is a tag.
 */
export function parseFromSnapshot(s: string | undefined): { id: number; tag: string } {
  if (s === undefined) return { id: 0, tag: '' };
  if (isNumeric(s)) return { id: Number(s), tag: '' };
  return { id: 0, tag: s };
}

export const SD_EC_MAX_STRIP = 16;
export const SD_MAX_COPIES = 31;

/** The text dog 1.0 prints for any -c value it refuses (then exit 1). */
export function invalidCopiesText(str: string): string {
  return `Invalid parameter ${str}\n` +
    'To create replicated vdi, set -c x\n' +
    `  x(1 to ${SD_MAX_COPIES})   - number of replicated copies\n` +
    'To create erasure coded vdi, set -c x:y\n' +
    '  x(2,4,8,16)  - number of data strips\n' +
    `  y(1 to ${SD_EC_MAX_STRIP - 1})   - number of parity strips`;
}

/**
 * -c N or -c D:P -> { copies, policy } (parse_copy). The value is cut at
 * ':' the way strtok does (empty pieces skipped, a third piece ignored);
 * unlike upstream a long value cannot overflow anything.
 */
export function parseCopies(str: string): { copies: number; policy: number } {
  const [n1, n2] = str.split(':').filter((x) => x !== '');
  const r = n1 === undefined ? undefined : parseRedundancy(n2 === undefined ? n1 : `${n1}:${n2}`);
  if (!r) throw new CliError(EXIT_FAILURE, invalidCopiesText(str));
  return { copies: r.copies, policy: r.copyPolicy };
}

/** C atoi(): leading blanks, a sign, digits; 0 when there are none. */
export function atoi(s: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?[0-9]+)/.exec(s);
  return m ? Number.parseInt(m[1], 10) : 0;
}

/** -z SHIFT: atoi cast to a byte, as dog's option parsers do, then 20..31. */
export function parseShift(s: string): number {
  const shift = atoi(s) & 0xff;
  if (shift > 31) throw new CliError(EXIT_FAILURE, 'Object Size is limited to 2^31. Please set shift bit lower than 31');
  if (shift < 20) throw new CliError(EXIT_FAILURE, 'Object Size is larger than 2^20. Please set shift bit larger than 20');
  return shift;
}

export function parseIndex(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  if (!isNumeric(s)) throw new CliError(EXIT_FAILURE, 'The index must be an integer');
  const v = Number(s);
  if (v > 0xffffffff) throw new CliError(EXIT_FAILURE, 'The index must be an integer');
  return v;
}

export function parseOidArg(s: string | undefined): bigint | undefined {
  if (s === undefined) return undefined;
  const t = s.replace(/^0[xX]/, '');
  if (!/^[0-9a-fA-F]{1,16}$/.test(t)) throw new CliError(EXIT_FAILURE, 'object id must be a hex integer');
  return BigInt('0x' + t);
}

export function parsePort(s: string): number {
  if (!isNumeric(s) || Number(s) < 1 || Number(s) > 65535) {
    throw new CliError(EXIT_USAGE, `Invalid port number '${s}'`, false);
  }
  return Number(s);
}
