// What the unit tests of sheep/src/recovery.ts give Recovery in place of a
// Sheep: this node (port 1) and one holder (port 2), copies 2, epoch 7, and
// whatever store, peers and listing of its own copies a test plays.
import type { SdNode, RequestHeader, CopyRecord } from '@sheepdog/common';
import { Recovery } from '../../sheep/src/recovery.js';
import type { Sheep } from '../../sheep/src/sheep.js';

export const fakeNode = (port: number): SdNode => ({ addr: Buffer.alloc(16), port, nrVnodes: 128, zone: port, space: 0n });
export const self = fakeNode(1);
export const holder = fakeNode(2);

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until(what: string, ok: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export interface FakeParts {
  /** Objects of 4 KiB unless said otherwise. */
  size?: number;
  store: Record<string, unknown>;
  call: (n: SdNode, h: Partial<RequestHeader>) => Promise<unknown>;
  copyRecords?: () => Promise<CopyRecord[]>;
  notify?: (m: { epoch: number; complete: boolean }) => void;
}

/** A Recovery over the parts; `s.epochNr` moves the fake node's epoch. */
export function fakeRecovery(p: FakeParts) {
  const s = {
    selfNode: self, born: 0, epochNr: 7, closing: false, formatted: true,
    config: { disableRecovery: false, store: 'plain' },
    recoveryThrottle: { queueWorkInterval: 0n, maxExecCount: 8 },
    ensureHistory: async () => undefined,
    copiesOf: () => 2,
    warmRings: async () => undefined,
    newestIsPresent: () => true,
    copyRecords: p.copyRecords ?? (async () => []),
    gw: { sizeOf: () => p.size ?? 4096 },
    ecRecovery: { start: () => undefined, stop: () => undefined, wait: async () => true },
    cluster: { notify: async (m: { epoch: number; complete: boolean }) => void p.notify?.({ epoch: m.epoch, complete: m.complete }) },
    store: { copies: async () => [], ...p.store },
    peers: { call: p.call },
  };
  return { s, rec: new Recovery(s as unknown as Sheep) };
}
