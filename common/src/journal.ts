// systemd connects a service's stderr to the journal and says so in
// JOURNAL_STREAM ("DEV:INODE" of that stream). A daemon started by systemd
// keeps that stderr for its detached child, so the child's log reaches
// journald (`journalctl -u sheep@NAME`) as well as its log file.
import { fstatSync } from 'node:fs';

/** Whether fd 2 is the journal stream systemd gave this service. */
export function stderrIsJournal(): boolean {
  const js = process.env.JOURNAL_STREAM;
  if (!js) return false;
  try {
    const st = fstatSync(2);
    return `${st.dev}:${st.ino}` === js;
  } catch {
    return false;
  }
}
