// The membership driver seam (upstream's cluster drivers): join, leave,
// totally ordered notify. The node that receives a cluster operation does
// its work phase under the cluster lock, then notifies the resulting state
// change; every member applies notifications in the same order.
import type { SdNode } from '@sheepdog/common';

export type ClusterMessage = { t: string; [k: string]: unknown };

export interface ClusterEvents {
  /** The member list changed (join, leave, failure). */
  onMembers(nodes: SdNode[]): void | Promise<void>;
  /** An ordered notification; delivered to every member including the sender. */
  onMessage(msg: ClusterMessage, from: SdNode): void | Promise<void>;
}

export interface ClusterDriver {
  readonly name: string;
  start(self: SdNode, events: ClusterEvents): Promise<void>;
  notify(msg: ClusterMessage): Promise<void>;
  /** Serialise a cluster operation's work phase across the whole cluster. */
  withClusterLock<T>(fn: () => Promise<T>): Promise<T>;
  leave(): Promise<void>;
}

/** bigint-safe JSON for cluster messages. */
export const encodeMessage = (m: ClusterMessage): string =>
  JSON.stringify(m, (_k, v) => (typeof v === 'bigint' ? { $big: v.toString() } : v));
export const decodeMessage = (s: string): ClusterMessage =>
  JSON.parse(s, (_k, v) => (v && typeof v === 'object' && '$big' in v ? BigInt(v.$big) : v));
