// vdi backup / vdi restore: incremental backups between two snapshots of a
// VDI, in dog 1.0's stream format (common/src/backup.ts), with 1.0's texts
// and exit statuses. Restore differs from 1.0 on purpose (see collie.8):
// it reads and checks the whole stream before it changes anything, and it
// refuses to drop writes that no snapshot holds unless given -f.
import { fsyncSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  Res, vidToDataOid, InodeHeader, BACKUP_HEADER_SIZE, BACKUP_RECORD_SIZE, BACKUP_END_IDX, encodeBackupHeader,
  decodeBackupHeader, isValidBackupHeader, encodeBackupRecord, decodeBackupRecord, backupEndMarker, backupDiffSpan,
} from '@sheepdog/common';
import type { Opts } from '../cli.js';
import { Ctx, readObject, writeObject, setIndex, ObjectError, lookupVdi } from '../conn.js';
import { CliError, EXIT_SUCCESS, EXIT_FAILURE, EXIT_SYSFAIL, EXIT_USAGE } from '../exitcodes.js';
import { parseSnapshot, parseFromSnapshot } from '../args.js';
import { objectSize, nrDataObjs, readInodeHeader, VdiIndex } from '../scan.js';
import { processSink } from '../output.js';
import { stdin } from '../io.js';
import { openVdi, doVdiCreate, doVdiDelete, needName } from './vdi.js';

const WINDOW = 4;

/** The index of a snapshot that holds nothing (the FROM of a full backup). */
const NO_OBJECTS: VdiIndex = { entries: () => [], get: () => 0 }; // objects read ahead while the previous ones are compared and written

function fail(msg: string, code = EXIT_FAILURE): never {
  throw new CliError(code, msg);
}

// ---- backup ------------------------------------------------------------------

export async function vdiBackup(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const from = parseFromSnapshot(o.F as string | undefined);
  const to = parseSnapshot(o.s as string | undefined);
  if (!to.id && !to.tag) {
    ctx.err("Please specify snapshots with '-F' and '-s' options");
    return EXIT_USAGE;
  }
  // Without -F (dog 1.0 requires it): a full backup, against a snapshot of
  // zeros; it restores onto any snapshot that holds nothing (a new VDI's).
  const full = !from.id && !from.tag;
  const t = await openVdi(ctx, name, to.id, to.tag, true);
  const f = full ? { header: t.header, index: NO_OBJECTS } : await openVdi(ctx, name, from.id, from.tag, true);
  const os_ = objectSize(f.header);
  const count = nrDataObjs(t.header);
  // Every index where either snapshot has an object, ascending (dog walks
  // 0..count-1 and skips the ones where both are empty).
  const idxs = new Set<number>();
  for (const ix of [f.index!, t.index!]) for (const [i] of ix.entries()) if (i < count) idxs.add(i);
  const order = [...idxs].sort((a, b) => a - b);

  const readOne = async (owner: number, idx: number): Promise<Buffer> => {
    if (!owner) return Buffer.alloc(os_);
    try {
      return await readObject(ctx, vidToDataOid(owner, idx), os_, 0, true);
    } catch (e) {
      if (e instanceof ObjectError) fail(`Failed to read object ${owner.toString(16)}, ${idx}`);
      throw e;
    }
  };
  const pending: Promise<[Buffer, Buffer]>[] = [];
  let next = 0;
  const issue = () => {
    const idx = order[next++];
    const p = Promise.all([readOne(f.index!.get(idx), idx), readOne(t.index!.get(idx), idx)]);
    p.catch(() => undefined);
    pending.push(p);
  };
  await ctx.writeData(encodeBackupHeader());
  for (let k = 0; k < order.length; k++) {
    while (next < order.length && pending.length < WINDOW) issue();
    const [fb, tb] = await pending.shift()!;
    const span = backupDiffSpan(fb, tb);
    if (!span) continue;
    await ctx.writeData(encodeBackupRecord({ idx: order[k], offset: span.offset, length: span.length, reserved: 0 }));
    await ctx.writeData(tb.subarray(span.offset, span.offset + span.length));
  }
  await ctx.writeData(backupEndMarker());
  if (ctx.sink === processSink) {
    try {
      fsyncSync(1); // a file: on disk before we say it is done (a pipe cannot be synced)
    } catch { /* not a file */ }
  }
  return EXIT_SUCCESS;
}

// ---- restore -----------------------------------------------------------------

interface SpooledRecord {
  idx: number;
  offset: number;
  length: number;
  /** where its data sits in the spool file */
  at: number;
}

const CHUNK = 1 << 20;

/**
 * Read the whole stream from stdin into a spool file, checking every record
 * against the snapshot it will be applied to. Nothing is allocated from a
 * length field before it is checked against the object size.
 */
async function spoolStream(ctx: Ctx, spool: fsp.FileHandle, snap: InodeHeader): Promise<SpooledRecord[]> {
  const reader = stdin();
  const head = await reader.read(BACKUP_HEADER_SIZE);
  if (head.length < BACKUP_HEADER_SIZE || !isValidBackupHeader(decodeBackupHeader(head))) {
    fail('The backup file is corrupted', EXIT_SYSFAIL);
  }
  const os_ = objectSize(snap);
  const count = nrDataObjs(snap);
  const recs: SpooledRecord[] = [];
  let at = 0;
  for (;;) {
    const rb = await reader.read(BACKUP_RECORD_SIZE);
    if (rb.length < BACKUP_RECORD_SIZE) fail('failed to read backup data', EXIT_SYSFAIL);
    const r = decodeBackupRecord(rb);
    if (r.idx === BACKUP_END_IDX) return recs;
    if (r.idx >= count || r.offset + r.length > os_) {
      fail(`The backup file is corrupted\nrecord of object ${r.idx} (offset ${r.offset}, length ${r.length}) ` +
        `does not fit a VDI of ${count} object(s) of ${os_} bytes`, EXIT_SYSFAIL);
    }
    for (let left = r.length; left > 0;) {
      const b = await reader.read(Math.min(left, CHUNK));
      if (b.length === 0) fail('failed to read backup data', EXIT_SYSFAIL);
      await spool.write(b, 0, b.length, at + (r.length - left));
      left -= b.length;
    }
    recs.push({ idx: r.idx, offset: r.offset, length: r.length, at });
    at += r.length;
  }
}

/** Does the working VDI own objects that no snapshot holds? */
function hasOwnWrites(vid: number, index: VdiIndex): boolean {
  for (const [, owner] of index.entries()) if (owner === vid) return true;
  return false;
}

export async function vdiRestore(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const snapArg = parseSnapshot(o.s as string | undefined);
  if (!snapArg.id && !snapArg.tag) {
    ctx.err('We can restore a backup file only to snapshots');
    ctx.err("Please specify the '-s' option");
    return EXIT_USAGE;
  }
  let snap;
  try {
    snap = await openVdi(ctx, name, snapArg.id, snapArg.tag, true);
  } catch (e) {
    if (e instanceof CliError && e.message) {
      ctx.err(e.message);
      fail(`Snapshot ID ${snapArg.id} or tag ${snapArg.tag} doesn't exist`);
    }
    throw e;
  }
  const cur = await openVdi(ctx, name, 0, '', true);
  const parentVid = cur.header.parentVdiId;
  if (!parentVid) fail(`The working VDI of ${name} has no parent snapshot to keep it on`);
  try {
    await readInodeHeader(ctx, parentVid);
  } catch (e) {
    if (e instanceof ObjectError) fail(e.message);
    throw e;
  }
  if (snap.header.storePolicy !== 0) fail('restoring a hyper volume is not supported');
  if (process.stdin.isTTY && ctx.sink === processSink) {
    ctx.err('stdin must be pipe');
    return EXIT_USAGE;
  }

  if (!o.f && hasOwnWrites(cur.vid, cur.index!)) {
    fail(`${name} has writes that are in no snapshot; restoring would discard them.\n` +
      'Take a snapshot first, or give -f to discard them.');
  }

  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'collie-restore-'));
  const spool = await fsp.open(path.join(dir, 'stream'), 'w+');
  try {
    const recs = await spoolStream(ctx, spool, snap.header);
    return await applyRestore(ctx, name, snap, cur, recs, spool);
  } finally {
    await spool.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

type OpenedVdi = Awaited<ReturnType<typeof openVdi>>;

async function applyRestore(
  ctx: Ctx, name: string, snap: OpenedVdi, cur: OpenedVdi, recs: SpooledRecord[], spool: fsp.FileHandle,
): Promise<number> {
  const sh = snap.header;
  const ch = cur.header;
  if ((await doVdiDelete(ctx, name, 0, '')) !== EXIT_SUCCESS) fail('Failed to delete the current state');

  // From here on the working VDI is gone: whatever happens, end with one
  // again, on top of the snapshot it had.
  let rc = EXIT_SUCCESS;
  let restored = false;
  try {
    const newVid = await doVdiCreate(ctx, name, sh.vdiSize, snap.vid, false, sh.nrCopies, sh.copyPolicy,
      sh.storePolicy, sh.blockSizeShift);
    const created = new Set<number>();
    for (const r of recs) {
      const data = Buffer.alloc(r.length);
      await spool.read(data, 0, r.length, r.at);
      const owner = snap.index!.get(r.idx);
      const create = !created.has(r.idx);
      const w = await writeObject(ctx, {
        oid: vidToDataOid(newVid, r.idx), cowOid: create && owner ? vidToDataOid(owner, r.idx) : 0n, data,
        offset: r.offset, copies: sh.nrCopies, copyPolicy: sh.copyPolicy, create, direct: false,
      });
      const s = w === Res.SUCCESS && create ? await setIndex(ctx, newVid, r.idx, newVid, sh.nrCopies, sh.copyPolicy, 0, false) : w;
      if (s !== Res.SUCCESS) {
        ctx.err('failed to restore backup');
        rc = EXIT_FAILURE;
        break;
      }
      created.add(r.idx);
    }
    restored = rc === EXIT_SUCCESS;
    if (!restored) await doVdiDelete(ctx, name, 0, '');
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    if (e.message) ctx.err(e.message);
    rc = e.code;
    if ((await lookupVdi(ctx, name, 0, '')).result === Res.SUCCESS) await doVdiDelete(ctx, name, 0, '');
  }
  // Resume: the restored VDI becomes a snapshot and a fresh working VDI
  // grows on the old one's parent (as dog 1.0 does). Without a restored VDI
  // the old working VDI is simply recreated there.
  try {
    await doVdiCreate(ctx, name, ch.vdiSize, ch.parentVdiId, restored, ch.nrCopies, ch.copyPolicy, ch.storePolicy,
      ch.blockSizeShift);
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    if (e.message) ctx.err(e.message);
    fail('failed to resume the current vdi');
  }
  return rc;
}

