// ps and `pgrep -f` show our daemons as upstream's C programs appear:
// `sheep /var/lib/sheepdog -p 7000`, not `node /usr/lib/.../sheep.js ...`,
// because operators' scripts and upstream's tooling find a daemon with
// `pgrep -f "sheep STORE "`.
//
// Node's process.title rewrites the argv area in place (libuv), so the title
// may be as long as the original command line: ours always fits, since it
// drops at least the leading `node `. libuv also names the main thread after
// the title's first 15 bytes; /proc/self/comm is set back to the program's
// name so `pgrep -x sheep` and top's COMMAND work too.
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

/** Environment variable a daemonizing parent sets so its child keeps the parent's argv[0]. */
export const INVOKED_AS_ENV = 'SHEEPDOG_INVOKED_AS';

/**
 * The path the program was invoked by: the command as found on PATH
 * (e.g. /usr/local/bin/sheep), or `name` when run as `node .../name.js`.
 */
export function invokedAs(name: string): string {
  const inherited = process.env[INVOKED_AS_ENV];
  if (inherited) return inherited;
  const a1 = process.argv[1];
  return !a1 || /\.(c|m)?js$/.test(a1) ? name : a1;
}

/** Set the title to `INVOKED-AS ARGS...`; `args` are the user's arguments. */
export function setProcessTitle(name: string, args: readonly string[]): void {
  const argv0 = invokedAs(name);
  delete process.env[INVOKED_AS_ENV];
  try {
    process.title = [argv0, ...args].join(' ');
    writeFileSync('/proc/self/comm', path.basename(argv0).slice(0, 15));
  } catch {
    // not Linux, or /proc is not mounted: the title is cosmetic
  }
}
