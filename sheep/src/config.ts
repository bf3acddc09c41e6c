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

export class NodeConfigStore {
  readonly configFile: string;
  readonly epochDir: string;
  constructor(readonly dir: string) {
    this.configFile = path.join(dir, 'config.json');
    this.epochDir = path.join(dir, 'epoch');
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
