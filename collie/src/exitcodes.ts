// Exit statuses, as upstream dog defines them (and as callers test them).
export const EXIT_SUCCESS = 0;
export const EXIT_FAILURE = 1; // command failed
export const EXIT_SYSFAIL = 2; // something is wrong with the cluster or local host
export const EXIT_EXISTS = 3; // the object already exists
export const EXIT_FULL = 4; // no space left
export const EXIT_MISSING = 5; // the object does not exist
export const EXIT_USAGE = 64; // bad command line (sysexits.h EX_USAGE)

/**
 * Thrown by commands to stop with an exit status. `message` (if any) goes to
 * stderr; with EXIT_USAGE the subcommand's usage block follows it.
 */
export class CliError extends Error {
  readonly showUsage: boolean;
  constructor(readonly code: number, message = '', showUsage?: boolean) {
    super(message);
    this.name = 'CliError';
    this.showUsage = showUsage ?? code === EXIT_USAGE;
  }
}
