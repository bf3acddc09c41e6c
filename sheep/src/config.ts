// Persistent node state under DIR: cluster config and the epoch log.
// Damaged state is never guessed around: a file that does not check out
// stops the daemon with a sentence naming it and what to do (DamagedState).
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { SdNode, SD_MAX_COPIES, encodeEpochFile, decodeEpochFile } from '@sheepdog/common';

/** A node's own files are damaged or inconsistent: sheep must not start on them. */
export class DamagedState extends Error {}

/** Object stores a cluster can be formatted with. */
/** Object stores a cluster can be formatted with, in GET_STORE_LIST's order (1.0 answers `tree plain `). */
export const STORE_DRIVERS = ['farm', 'tree', 'plain'];

export interface ClusterConfig {
  ctime: bigint; // 0 = never formatted
  copies: number;
  copyPolicy: number;
  flags: number;
  blockSizeShift: number;
  store: string;
  disableRecovery: boolean;
}

export const emptyConfig = (): ClusterConfig => ({
  ctime: 0n, copies: 0, copyPolicy: 0, flags: 0, blockSizeShift: 22, store: 'plain', disableRecovery: false,
});

/** CRC-32 of a config's fields (everything but the sum itself), in a fixed order. */
function configSum(j: Record<string, unknown>): string {
  const keys = Object.keys(j).filter((k) => k !== 'sum').sort();
  return crc32(JSON.stringify(keys.map((k) => [k, j[k]]))).toString(16).padStart(8, '0');
}

/**
 * Space kept for the node's own small files (config, epoch records, VDI
 * table): a full data disk must never stop a node from writing its epoch
 * record and rejoining. The reserve is a file of real blocks; a metadata
 * write that finds the disk full gives it back and tries again.
 */
class MetadataReserve {
  private file?: string;

  async init(dir: string): Promise<void> {
    this.file = path.join(dir, '.reserve');
    try {
      if ((await fsp.stat(this.file)).size > 0) return;
    } catch { /* not there yet */ }
    const sf = await fsp.statfs(dir);
    // 1% of the file system, at most 16 MiB, at least one block
    const size = Math.max(sf.bsize, Math.min(16 << 20, Math.floor((sf.blocks * sf.bsize) / 100 / sf.bsize) * sf.bsize));
    try {
      await fsp.writeFile(this.file, Buffer.alloc(size));
    } catch {
      await fsp.rm(this.file, { force: true }); // no room for it now; the next start tries again
    }
  }

  /** Give the reserve back; true if there was one. */
  async release(): Promise<boolean> {
    if (!this.file) return false;
    try {
      await fsp.unlink(this.file);
      return true;
    } catch {
      return false;
    }
  }
}

const reserve = new MetadataReserve();

/** Per file, the write in progress: writes of one file run one after another, in the order asked. */
const writing = new Map<string, Promise<void>>();

/**
 * Two writers of one file at once (a state message and a format applied
 * back to back while joining) would share the temporary file, and the
 * second rename would fail: writes of a file are queued instead.
 */
function writeAtomic(file: string, data: Buffer | string): Promise<void> {
  const before = writing.get(file) ?? Promise.resolve();
  const p = before.catch(() => undefined).then(() => writeAtomicReserved(file, data));
  const tail = p.catch(() => undefined);
  writing.set(file, tail);
  void tail.then(() => { if (writing.get(file) === tail) writing.delete(file); });
  return p;
}

async function writeAtomicReserved(file: string, data: Buffer | string): Promise<void> {
  try {
    await writeAtomicOnce(file, data);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC' || !(await reserve.release())) throw e;
    onReserveUsed?.(file);
    await writeAtomicOnce(file, data);
  }
}

/** Told when the disk was full and the reserve had to be used (for the log). */
let onReserveUsed: ((file: string) => void) | undefined;

async function writeAtomicOnce(file: string, data: Buffer | string): Promise<void> {
  const tmp = `${file}.tmp`;
  try {
    const fh = await fsp.open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}

/**
 * What this node knows about its own store and the cluster's recovery
 * (node.json): born, the epoch in which this store joined the cluster (it
 * can vouch for no copy of an earlier epoch); recovered, the newest epoch
 * in which every member finished recovery with nothing missing.
 */
export interface NodeState {
  born: number;
  recovered: number;
}

export class NodeConfigStore {
  readonly configFile: string;
  readonly epochDir: string;
  readonly vdiFile: string;
  readonly stateFile: string;
  /** Present while the daemon runs: found at start-up, the last run ended in a crash. */
  readonly runningFile: string;
  /**
   * Left by a stop in a cluster-wide shutdown, until every member has
   * recovered after the restart: writes in flight then may have reached
   * some replicas only (the others were stopping too).
   */
  readonly shutdownFile: string;
  constructor(readonly dir: string) {
    this.configFile = path.join(dir, 'config.json');
    this.epochDir = path.join(dir, 'epoch');
    this.vdiFile = path.join(dir, 'vdis.json');
    this.stateFile = path.join(dir, 'node.json');
    this.runningFile = path.join(dir, '.running');
    this.shutdownFile = path.join(dir, '.shutdown');
  }

  async loadVdiTable<T>(): Promise<T | undefined> {
    try {
      return JSON.parse(await fsp.readFile(this.vdiFile, 'utf8')) as T;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`cannot read ${this.vdiFile}: ${(e as Error).message}`);
    }
  }

  saveVdiTable(t: unknown): Promise<void> {
    return writeAtomic(this.vdiFile, JSON.stringify(t) + '\n');
  }

  async loadState(): Promise<NodeState | undefined> {
    try {
      const j = JSON.parse(await fsp.readFile(this.stateFile, 'utf8'));
      return { born: Number(j.born) || 0, recovered: Number(j.recovered) || 0 };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`cannot read ${this.stateFile}: ${(e as Error).message}`);
    }
  }

  saveState(st: NodeState): Promise<void> {
    return writeAtomic(this.stateFile, JSON.stringify(st) + '\n');
  }

  /** When the previous run last said it was alive, if it did not stop cleanly. */
  async lastAlive(): Promise<number | undefined> {
    try {
      return (await fsp.stat(this.runningFile)).mtimeMs;
    } catch {
      return undefined; // stopped cleanly, or never ran
    }
  }

  markRunning(): Promise<void> {
    return writeAtomic(this.runningFile, `${process.pid}\n`);
  }

  /** While running: the marker's time says when the daemon was last alive. */
  async touchRunning(): Promise<void> {
    const now = new Date();
    await fsp.utimes(this.runningFile, now, now).catch(() => undefined);
  }

  /** inShutdown: the stop was the cluster's shutdown (see shutdownFile). */
  async markStopped(inShutdown = false): Promise<void> {
    if (inShutdown) await writeAtomic(this.shutdownFile, `${new Date().toISOString()}\n`);
    await fsp.rm(this.runningFile, { force: true });
  }

  /** When the cluster shutdown that stopped this node came (undefined: none pending). */
  async lastShutdown(): Promise<number | undefined> {
    try {
      return (await fsp.stat(this.shutdownFile)).mtimeMs;
    } catch {
      return undefined;
    }
  }

  async clearShutdown(): Promise<void> {
    await fsp.rm(this.shutdownFile, { force: true });
  }

  async init(onFull?: (file: string) => void): Promise<void> {
    await fsp.mkdir(this.epochDir, { recursive: true });
    onReserveUsed = onFull;
    await reserve.init(this.dir);
  }

  /** undefined: there is no config (never formatted). */
  async load(): Promise<ClusterConfig | undefined> {
    let text: string;
    try {
      text = await fsp.readFile(this.configFile, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new DamagedState(`cannot read ${this.configFile}: ${(e as Error).message}`);
    }
    const bad = (why: string) => new DamagedState(`${this.configFile}: ${why}; every node of a cluster holds the same file: copy it from another node, or move this directory away to start the node afresh`);
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(text);
    } catch (e) {
      throw bad(`not JSON (${(e as Error).message})`);
    }
    if (!j || typeof j !== 'object') throw bad('not a JSON object');
    if (j.sum !== undefined && j.sum !== configSum(j)) throw bad('checksum mismatch (the file is damaged or was edited)');
    const int = (k: string, lo: number, hi: number) => {
      const v = j[k];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw bad(`${k} is ${JSON.stringify(v)}, not a whole number from ${lo} to ${hi}`);
      return v;
    };
    if (typeof j.ctime !== 'string' || !/^\d{1,20}$/.test(j.ctime)) throw bad(`ctime is ${JSON.stringify(j.ctime)}, not a creation time`);
    const c: ClusterConfig = {
      ctime: BigInt(j.ctime),
      copies: int('copies', 1, SD_MAX_COPIES),
      copyPolicy: int('copyPolicy', 0, 255),
      flags: int('flags', 0, 0xffff),
      blockSizeShift: int('blockSizeShift', 20, 31),
      store: String(j.store),
      disableRecovery: j.disableRecovery === true,
    };
    if (c.ctime === 0n) throw bad('ctime is 0, yet the file says the cluster was formatted');
    if (!STORE_DRIVERS.includes(c.store)) throw bad(`store is ${JSON.stringify(j.store)}, not one of ${STORE_DRIVERS.join(', ')}`);
    if (typeof j.disableRecovery !== 'boolean') throw bad(`disableRecovery is ${JSON.stringify(j.disableRecovery)}, not true or false`);
    return c;
  }

  /** Drop the config (an interrupted format left it with nothing behind it). */
  async forget(): Promise<void> {
    await fsp.rm(this.configFile, { force: true });
  }

  save(c: ClusterConfig): Promise<void> {
    const j: Record<string, unknown> = { format: 1, ...c, ctime: c.ctime.toString() };
    j.sum = configSum(j);
    return writeAtomic(this.configFile, JSON.stringify(j, null, 2) + '\n');
  }

  private epochFile(e: number): string {
    return path.join(this.epochDir, String(e).padStart(8, '0'));
  }

  async saveEpoch(epoch: number, nodes: SdNode[], time: number): Promise<void> {
    await writeAtomic(this.epochFile(epoch), encodeEpochFile(epoch, { nodes, time }));
  }

  /** The epochs there are records of (the history may have gaps: records a node missed are fetched later). */
  async epochNumbers(): Promise<number[]> {
    return (await fsp.readdir(this.epochDir)).filter((f) => /^\d{8}$/.test(f)).map(Number).sort((a, b) => a - b);
  }

  async loadEpoch(epoch: number): Promise<{ nodes: SdNode[]; time: number }> {
    const file = this.epochFile(epoch);
    let b: Buffer;
    try {
      b = await fsp.readFile(file);
    } catch (e) {
      throw new DamagedState(`cannot read ${file}: ${(e as Error).message}`);
    }
    const r = decodeEpochFile(epoch, b);
    if (typeof r === 'string') {
      throw new DamagedState(`${file}: ${r}; remove it if it does not belong there (the node then fetches the record from the others when it joins), or copy it from another node of the cluster`);
    }
    return r;
  }

  async clearEpochs(): Promise<void> {
    for (const f of await fsp.readdir(this.epochDir)) await fsp.rm(path.join(this.epochDir, f), { force: true });
  }
}
