// The farm store's in-place cluster snapshots (collie cluster snapshot save
// TAG, without a PATH): every node puts the snapshot objects it holds into
// its own repository, DIR/farm, in dog's repository format (common/src/farm.ts);
// no object crosses the network. collie reads the repositories back through
// FARM_READ (content files, checked against their names) to show and load
// them, and removes a snapshot from every node with FARM_DELETE.
import {
  FarmRepo, FarmError, FarmTrunkEntry, encodeFarmTrunk, oidToVid, isVdiObj,
  isDataObj, isVmstateObj, objectStoredSize, SheepdogError, Res, decodeFixedString,
} from '@sheepdog/common';
import type { Sheep } from './sheep.js';
import { log } from './log.js';

let queue: Promise<unknown> = Promise.resolve();
/** One repository operation at a time on a node. */
function serial<T>(fn: () => Promise<T>): Promise<T> {
  const p = queue.then(fn, fn);
  queue = p.catch(() => undefined);
  return p;
}

const ready = new Set<string>();

/** This node's repository, its skeleton made once. */
async function repoOf(s: Sheep): Promise<FarmRepo> {
  if (s.config.store !== 'farm') throw new SheepdogError(Res.NO_STORE, 'the cluster was not formatted with the farm store');
  const repo = new FarmRepo((s.store as unknown as { farmDir: string }).farmDir);
  if (!ready.has(repo.dir)) {
    await repo.init({ recursive: true });
    ready.add(repo.dir);
  }
  return repo;
}

const asSheepError = (e: unknown): never => {
  if (e instanceof FarmError) throw new SheepdogError(Res.EIO, e.message);
  throw e;
};

/**
 * FARM_SAVE: the snapshot objects held here into this node's repository,
 * under tag and time. After tag and time, the payload lists VDI ids (u32
 * each): the objects of each are saved, and with bit 31 set its inode too
 * (collie names the snapshots, and every VDI whose objects they refer to).
 */
export function farmSave(s: Sheep, payload: Buffer): Promise<number> {
  const tag = decodeFixedString(payload, 0, 256);
  const time = payload.readBigUInt64LE(256);
  const owners = new Set<number>();
  const inodes = new Set<number>();
  for (let o = 264; o + 4 <= payload.length; o += 4) {
    const v = payload.readUInt32LE(o);
    owners.add(v & 0xffffff);
    if (v & 0x80000000) inodes.add(v & 0xffffff);
  }
  return serial(async () => {
    const repo = await repoOf(s);
    const logNow = await repo.readLog().catch(asSheepError);
    if (logNow.records.some((r) => r.tag === tag)) throw new SheepdogError(Res.VDI_EXIST, `snapshot ${tag} is already in ${repo.dir}`);
    const entries: FarmTrunkEntry[] = [];
    for (const oid of (await s.store.list()).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
      const vid = oidToVid(oid);
      if (isVdiObj(oid) ? !inodes.has(vid) : !((isDataObj(oid) || isVmstateObj(oid)) && owners.has(vid))) continue;
      const size = objectStoredSize(oid, s.vdis.objectSize(vid));
      let data: Buffer;
      try {
        data = (await s.store.readCopy(oid, size, false)).data;
      } catch (e) {
        if (e instanceof SheepdogError && e.result === Res.NO_OBJ) continue; // removed meanwhile
        throw e;
      }
      const st = s.vdis.state(vid);
      entries.push({
        oid, copies: st?.nrCopies || s.config.copies, copyPolicy: st?.copyPolicy ?? 0,
        blockSizeShift: Math.log2(s.vdis.objectSize(vid)), sha1: await repo.putObject(data),
      });
    }
    if (!logNow.header || !logNow.records.length) {
      await repo.writeLogHeader({ copies: s.config.copies, copyPolicy: s.config.copyPolicy, blockSizeShift: s.config.blockSizeShift });
    }
    const trunk = await repo.put(encodeFarmTrunk(entries));
    await repo.appendLog({ idx: logNow.records.length + 1, tag, time, trunk });
    log.info(`farm: snapshot ${tag}: ${entries.length} object(s) saved in ${repo.dir}`);
    return entries.length;
  });
}

/** FARM_READ: a content file (checked against its name), or with an all-zero name the log. */
export async function farmRead(s: Sheep, sha1: Buffer): Promise<Buffer> {
  const repo = await repoOf(s);
  if (sha1.every((b) => b === 0)) return repo.readLog().then(() => fsRead(repo.logFile)).catch(asSheepError);
  try {
    return await repo.get(sha1);
  } catch (e) {
    if (e instanceof FarmError && /No such file/.test(e.message)) throw new SheepdogError(Res.NO_OBJ, e.message);
    return asSheepError(e);
  }
}

async function fsRead(file: string): Promise<Buffer> {
  const { promises: fsp } = await import('node:fs');
  return fsp.readFile(file);
}

/** FARM_DELETE: remove a snapshot (by tag) from this node's repository and the files only it used. */
export function farmDelete(s: Sheep, payload: Buffer): Promise<void> {
  const tag = decodeFixedString(payload, 0, 256);
  return serial(async () => {
    const repo = await repoOf(s);
    const l = await repo.readLog().catch(asSheepError);
    const rec = l.records.find((r) => r.tag === tag);
    if (!rec || !l.header) return; // not on this node (it was away at the save)
    const r = await repo.deleteSnapshot(l.header, l.records, rec).catch(asSheepError);
    if (r.problems.length) throw new SheepdogError(Res.EIO, r.problems.join('; '));
  });
}

/** FARM_STAT: this node's repository in figures (JSON). */
export function farmStat(s: Sheep): Promise<Buffer> {
  return serial(async () => {
    const repo = await repoOf(s);
    const st = await repo.stat().catch(asSheepError);
    return Buffer.from(JSON.stringify(st));
  });
}
