// Persistent node state under DIR: cluster config and the epoch log.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { SdNode, encodeNodes, decodeNodes, SD_NODE_SIZE } from '@sheepdog/common';

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

async function writeAtomic(file: string, data: Buffer | string): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await fsp.open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
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
  constructor(readonly dir: string) {
    this.configFile = path.join(dir, 'config.json');
    this.epochDir = path.join(dir, 'epoch');
    this.vdiFile = path.join(dir, 'vdis.json');
    this.stateFile = path.join(dir, 'node.json');
    this.runningFile = path.join(dir, '.running');
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

  async markStopped(): Promise<void> {
    await fsp.rm(this.runningFile, { force: true });
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.epochDir, { recursive: true });
  }

  async load(): Promise<ClusterConfig> {
    try {
      const j = JSON.parse(await fsp.readFile(this.configFile, 'utf8'));
      return { ...emptyConfig(), ...j, ctime: BigInt(j.ctime ?? 0) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyConfig();
      throw new Error(`cannot read ${this.configFile}: ${(e as Error).message}`);
    }
  }

  save(c: ClusterConfig): Promise<void> {
    return writeAtomic(this.configFile, JSON.stringify({ ...c, ctime: c.ctime.toString() }, null, 2) + '\n');
  }

  private epochFile(e: number): string {
    return path.join(this.epochDir, String(e).padStart(8, '0'));
  }

  async saveEpoch(epoch: number, nodes: SdNode[], time: number): Promise<void> {
    const b = Buffer.alloc(nodes.length * SD_NODE_SIZE + 8);
    encodeNodes(nodes).copy(b);
    b.writeBigInt64LE(BigInt(time), nodes.length * SD_NODE_SIZE);
    await writeAtomic(this.epochFile(epoch), b);
  }

  async loadEpoch(epoch: number): Promise<{ nodes: SdNode[]; time: number } | undefined> {
    try {
      const b = await fsp.readFile(this.epochFile(epoch));
      const n = Math.floor((b.length - 8) / SD_NODE_SIZE);
      return { nodes: decodeNodes(b, n), time: Number(b.readBigInt64LE(n * SD_NODE_SIZE)) };
    } catch {
      return undefined;
    }
  }

  async latestEpoch(): Promise<number> {
    const files = (await fsp.readdir(this.epochDir)).filter((f) => /^\d{8}$/.test(f)).map(Number);
    return files.length ? Math.max(...files) : 0;
  }

  async clearEpochs(): Promise<void> {
    for (const f of await fsp.readdir(this.epochDir)) await fsp.rm(path.join(this.epochDir, f), { force: true });
  }
}
