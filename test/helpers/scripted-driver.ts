// A cluster membership driver scripted by a unit test.
import type { SdNode } from '@sheepdog/common';
import type { ClusterDriver, ClusterMessage, EventHandler } from '../../sheep/src/cluster/driver.js';

/**
 * A membership driver the test scripts: start() delivers this node's own
 * join (alone, or with the members given), notify() delivers at once
 * unless lock requests are being held back, and deliver() hands the node
 * any event from anyone.
 */
export class ScriptedDriver implements ClusterDriver {
  readonly name = 'scripted';
  self!: SdNode;
  onEvent!: EventHandler;
  /** lock_req messages not delivered (yet): the test delivers or drops them. */
  held: ClusterMessage[] = [];
  holdLockRequests = 0;
  sent: ClusterMessage[] = [];
  /** Members before this node joins (its join lists them first). */
  constructor(readonly before: SdNode[] = []) {}
  async start(self: SdNode, info: ClusterMessage, onEvent: EventHandler): Promise<void> {
    this.self = self;
    this.onEvent = onEvent;
    await onEvent({ type: 'join', node: self, info, members: [...this.before, self] });
  }
  notify(msg: ClusterMessage): Promise<void> {
    this.sent.push(msg);
    if (msg.t === 'lock_req' && this.holdLockRequests > 0) {
      this.holdLockRequests--;
      this.held.push(msg);
      return new Promise(() => undefined); // never delivered while the node is away
    }
    return this.deliver(this.self, msg);
  }
  deliver(from: SdNode, msg: ClusterMessage): Promise<void> {
    return this.onEvent({ type: 'message', from, msg });
  }
  async leave(): Promise<void> {}
}
