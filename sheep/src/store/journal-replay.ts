// Start-up after a crash: the journal's records since its last checkpoint
// are written into their object files again (see journal.ts), and those
// files made durable before the journal takes new records.
//
// A record goes only into the very file it was written into the first
// time (same inode number and birth time), found where the object's file
// may be now (live, in either layout, or set aside): an object removed
// since, or replaced by a new copy, keeps what it has. The written files'
// block checksums are recomputed from their bytes (a record carries no
// sums: its blocks' other bytes are the file's).
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { oidToHex } from '@sheepdog/common';
import type { Journal } from './journal.js';
import { pwriteFull } from './fdcache.js';
import { versionIO } from './fileio.js';

const statP = promisify(fs.stat);
const openP = promisify(fs.open);
const closeP = promisify(fs.close);

export interface ReplayTarget {
  /** The files that may be oid's now. */
  candidates(oid: bigint): string[];
  /** Recompute a file's block checksums from its bytes. */
  rebuildSums(fd: number): Promise<boolean>;
  sync(fd: number): Promise<void>;
}

interface FileId { ino: bigint; btime: bigint }

/** Apply j's records; a line for the log of what was done. */
export async function replayInto(j: Journal, t: ReplayTarget, onError: (msg: string) => void): Promise<string> {
  const ids = new Map<string, FileId | null>();
  const fds = new Map<string, number>();
  let applied = 0;
  let skipped = 0;
  const idOf = async (file: string): Promise<FileId | null> => {
    let id = ids.get(file);
    if (id === undefined) {
      id = await statP(file, { bigint: true }).then((st) => ({ ino: st.ino, btime: st.birthtimeNs }), () => null);
      ids.set(file, id);
    }
    return id;
  };
  try {
    for await (const r of j.replay()) {
      let target: string | undefined;
      for (const f of t.candidates(r.oid)) {
        const id = await idOf(f);
        if (id && id.ino === r.ino && id.btime === r.btime) {
          target = f;
          break;
        }
      }
      if (!target) {
        skipped++;
        continue;
      }
      let fd = fds.get(target);
      if (fd === undefined) {
        fd = await openP(target, 'r+');
        fds.set(target, fd);
      }
      const size = versionIO!.getObjectSize(fd);
      if (size > 0 && r.off + r.len > size) {
        onError(`journal record ${r.seq} for ${oidToHex(r.oid)} writes bytes ${r.off}-${r.off + r.len - 1}, past the object's ${size}: not applied`);
        skipped++;
        continue;
      }
      await pwriteFull(fd, r.data, r.off);
      applied++;
    }
    for (const fd of fds.values()) {
      await t.rebuildSums(fd);
      await t.sync(fd);
    }
  } finally {
    for (const fd of fds.values()) await closeP(fd).catch(() => undefined);
  }
  const what = applied || skipped
    ? `replayed ${applied} record(s) into ${fds.size} object file(s), ${skipped} for objects removed or replaced since`
    : 'nothing to replay';
  return `${what}; ${j.replayEnd}`;
}
