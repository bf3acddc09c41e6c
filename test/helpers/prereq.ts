// A test whose prerequisite is missing fails; it is never skipped. Test files
// call this at the top, so a missing tool or privilege fails the whole file
// at collection with one sentence naming what is missing and how to get it.
export function requirePrereq(missing: string | undefined | false): void {
  if (missing) {
    throw new Error(`prerequisite missing: ${missing}. ./scripts/test.sh installs everything the tests need (as root on Debian 12).`);
  }
}
