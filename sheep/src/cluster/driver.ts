// The membership driver seam (upstream's cluster drivers).
//
// A driver gives every member the same totally ordered stream of events:
// joins, leaves and broadcast messages. A member sees every event ordered
// after its own join, starting with its own join (which carries the full
// member list). Everything else — epochs, the cluster lock, state transfer
// to joiners — is built on that stream by the group layer (group.ts), so a
// driver only has to get ordering and failure detection right.
import type { SdNode } from '@sheepdog/common';

export type ClusterMessage = { t: string; [k: string]: unknown };

export type ClusterEvent =
  /** `members`: everyone in the group after the join, in join order. `info` is the joiner's join payload. */
  | { type: 'join'; node: SdNode; info: ClusterMessage; members: SdNode[] }
  /** A member left or failed; `members` as after the leave. */
  | { type: 'leave'; node: SdNode; members: SdNode[] }
  | { type: 'message'; from: SdNode; msg: ClusterMessage };

export type EventHandler = (e: ClusterEvent) => Promise<void>;

export interface ClusterDriver {
  readonly name: string;
  /**
   * Join the group. `info` travels with the join event to every member.
   * Events are handed to `onEvent` one at a time, in order: the driver
   * waits for each returned promise before delivering the next event.
   * Resolves once this node's own join event has been delivered.
   */
  start(self: SdNode, info: ClusterMessage, onEvent: EventHandler): Promise<void>;
  /** Totally ordered broadcast to all members including self; resolves after local delivery. */
  notify(msg: ClusterMessage): Promise<void>;
  /** Leave the group cleanly (others see a leave event). */
  leave(): Promise<void>;
  /**
   * Set by the group layer: called with true when this member cannot tell
   * whether the others still count it as one (cut off from the membership
   * engine for longer than it takes them to drop it), and with false when
   * it knows it is still a member. Meanwhile it must serve nothing.
   */
  onCutOff?: (cut: boolean) => void;
}

/** bigint- and Buffer-safe JSON for cluster messages. */
export function encodeMessage(m: unknown): string {
  return JSON.stringify(m, function (this: unknown, k, v) {
    const raw = (this as Record<string, unknown>)[k];
    if (typeof raw === 'bigint') return { $big: raw.toString() };
    if (Buffer.isBuffer(raw)) return { $buf: raw.toString('base64') };
    return v;
  });
}

export function decodeMessage<T = ClusterMessage>(s: string): T {
  return JSON.parse(s, (_k, v) => {
    if (v && typeof v === 'object') {
      if ('$big' in v) return BigInt(v.$big);
      if ('$buf' in v) return Buffer.from(v.$buf, 'base64');
    }
    return v;
  });
}

/** Driver spec from `-c NAME[:ARGS]`. */
export function parseDriverSpec(spec: string): { name: string; args: string } {
  const i = spec.indexOf(':');
  return i < 0 ? { name: spec, args: '' } : { name: spec.slice(0, i), args: spec.slice(i + 1) };
}
