// "local" driver, single-member form: this sheep is the whole cluster.
// Ordering is trivial: notifications are applied in call order under one lock.
import type { SdNode } from '@sheepdog/common';
import type { ClusterDriver, ClusterEvents, ClusterMessage } from './driver.js';
import { Mutex } from '../util.js';

export class LocalDriver implements ClusterDriver {
  readonly name = 'local';
  private self?: SdNode;
  private events?: ClusterEvents;
  private lock = new Mutex();
  private order = new Mutex();

  async start(self: SdNode, events: ClusterEvents): Promise<void> {
    this.self = self;
    this.events = events;
    await events.onMembers([self]);
  }

  notify(msg: ClusterMessage): Promise<void> {
    return this.order.run(async () => {
      await this.events!.onMessage(msg, this.self!);
    });
  }

  withClusterLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.run(fn);
  }

  async leave(): Promise<void> {}
}

export function createDriver(spec: string): ClusterDriver {
  const name = spec.split(':')[0];
  if (name === 'local') return new LocalDriver();
  if (name === 'zookeeper' || name === 'corosync') {
    throw new Error(`cluster driver '${name}' is not available in this build yet`);
  }
  throw new Error(`unknown cluster driver '${name}' (available: local)`);
}
