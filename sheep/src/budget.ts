// How much memory requests may hold: payloads being received or executed,
// and replies not yet taken by the kernel. Every connection (sheepdog port
// and NBD alike) draws on one node-wide budget and on a budget of its own.
// A request is charged before its buffers exist; one that cannot be
// charged waits, and its connection is not read meanwhile (backpressure),
// so a header claiming gigabytes, a client that never reads its replies or
// a thousand clients at once cost what the configuration allows, not what
// a length field says.
//
// Peer traffic (replica writes and reads between sheep) has a part of the
// node budget that client requests cannot take: a gateway's client request
// holds its charge while it waits for the replicas, so if clients could
// fill every node's budget, two gateways replicating to each other would
// wait on each other for ever. Peer requests never wait on anything but
// their own disk, so they always finish and give their charge back.
import { log } from './log.js';

export interface BudgetConfig {
  /** Bytes one connection may hold. */
  conn: number;
  /** Bytes all connections together may hold. */
  node: number;
}

export const DEFAULT_BUDGET: BudgetConfig = { conn: 64 << 20, node: 1 << 30 };

/** What the node budget keeps for peer traffic. */
export const peerReserve = (node: number): number => Math.floor(node / 4);

interface Waiter {
  conn: ConnBudget;
  n: number;
  peer: boolean;
  since: number;
  admitted: () => void;
}

/** A connection the node may close to free memory for others. */
export interface Evictable {
  /** The holder has gone this many ms without moving a byte while it holds a charge (0: not stalled). */
  stalledFor(now: number): number;
  /** Close it: its charges come back as its buffers are dropped. */
  evict(why: string): void;
}

export class NodeBudget {
  used = 0;
  /** Highest `used` seen (tests and the fuzzer report it). */
  peak = 0;
  private waiters: Waiter[] = [];
  private readonly holders = new Set<ConnBudget>();
  private evictTimer?: NodeJS.Timeout;

  /**
   * @param limit bytes all connections may hold
   * @param stallMs under pressure, a holder that has moved no byte for this
   *   long is closed so that others can be served
   */
  constructor(readonly limit: number, readonly stallMs = 1000) {
    if (process.env.SHEEP_BUDGET_TRACE) {
      setInterval(() => {
        log.info(`memory budget: ${this.used} of ${this.limit} bytes held (peak ${this.peak}) by ${[...this.holders].filter((c) => c.held > 0).length} connections, ${this.waiters.length} waiting (${this.waiters.map((w) => `${w.n}${w.peer ? 'p' : ''}${w.conn.blockedByConn(w.n) ? '/conn' : ''}`).join(' ')})`);
      }, 1000).unref();
    }
  }

  private room(peer: boolean): number {
    return (peer ? this.limit : this.limit - peerReserve(this.limit)) - this.used;
  }

  /** @internal */
  register(c: ConnBudget): void {
    this.holders.add(c);
  }

  /** @internal */
  unregister(c: ConnBudget): void {
    this.holders.delete(c);
    const before = this.waiters.length;
    this.waiters = this.waiters.filter((w) => w.conn !== c);
    if (this.waiters.length !== before) this.pump();
  }

  /** @internal: charge n bytes now if the node has room and nobody of the same kind waits before. */
  tryTake(n: number, peer: boolean): boolean {
    if (n > this.room(peer)) return false;
    if (this.waiters.some((w) => w.peer === peer && !w.conn.blockedByConn(w.n))) return false;
    this.take(n);
    return true;
  }

  /** @internal: charge without asking (a reply larger than its estimate; it is already in memory). */
  take(n: number): void {
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
  }

  /** @internal */
  give(n: number): void {
    this.used -= n;
    if (this.waiters.length) this.pump();
  }

  /** @internal */
  wait(w: Waiter): void {
    this.waiters.push(w);
    this.scheduleEviction();
  }

  /** Admit waiters in order of arrival; one of a kind that does not fit holds back the later ones of its kind. */
  pump(): void {
    const blocked = { client: false, peer: false };
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i];
      const kind = w.peer ? 'peer' : 'client';
      if (w.conn.blockedByConn(w.n)) continue; // waits for its own connection's replies, not for the node
      if (blocked[kind] || w.n > this.room(w.peer)) {
        blocked[kind] = true;
        continue;
      }
      this.waiters.splice(i--, 1);
      this.take(w.n);
      w.conn.held += w.n;
      w.admitted();
    }
    if (this.waiters.length) this.scheduleEviction();
  }

  /**
   * A request waits for the node: close holders that have moved no byte for
   * stallMs (a client that does not read its replies, or stopped sending a
   * payload it announced), largest first, until the oldest waiter fits.
   */
  private scheduleEviction(): void {
    if (this.evictTimer) return;
    this.evictTimer = setTimeout(() => {
      this.evictTimer = undefined;
      this.evictStalled();
    }, Math.min(200, this.stallMs));
    this.evictTimer.unref();
  }

  private evictStalled(): void {
    const head = this.waiters.find((w) => !w.conn.blockedByConn(w.n));
    if (!head) return;
    const now = Date.now();
    let need = head.n - this.room(head.peer);
    const stalled = [...this.holders]
      .filter((c) => c !== head.conn && c.held > 0 && c.owner !== undefined && c.owner.stalledFor(now) >= this.stallMs)
      .sort((a, b) => b.held - a.held);
    for (const c of stalled) {
      if (need <= 0) break;
      need -= c.held;
      log.warn(`memory budget: closing ${c.label}, which holds ${c.held} bytes and has moved none for ${c.owner!.stalledFor(now)} ms, so that waiting requests can run`);
      c.owner!.evict('stalled while holding memory others wait for');
    }
    if (this.waiters.length) this.scheduleEviction();
  }
}

/** One connection's share: what it holds, and the request it waits to admit. */
export class ConnBudget {
  held = 0;
  private waiting?: Waiter;
  private closed = false;
  owner?: Evictable;

  constructor(readonly node: NodeBudget, readonly limit: number, readonly label: string) {
    node.register(this);
  }

  /** @internal */
  blockedByConn(n: number): boolean {
    return this.held + n > this.limit;
  }

  /** Whether n bytes may ever be admitted on this connection. */
  fits(n: number): boolean {
    return n <= this.limit;
  }

  /**
   * Charge n bytes (n <= limit). True: charged now. False: the charge is
   * made later and `admitted` called then; the caller stops reading meanwhile.
   */
  admit(n: number, peer: boolean, admitted: () => void): boolean {
    if (this.closed) return false;
    n = Math.min(n, this.limit);
    if (n === 0) return true;
    if (!this.blockedByConn(n) && this.node.tryTake(n, peer)) {
      this.held += n;
      return true;
    }
    this.waiting = { conn: this, n, peer, since: Date.now(), admitted: () => { this.waiting = undefined; admitted(); } };
    this.node.wait(this.waiting);
    return false;
  }

  /** Charge n bytes without asking: memory that already exists (a reply larger than was estimated). */
  force(n: number): void {
    if (this.closed || n <= 0) return;
    this.held += n;
    this.node.take(n);
  }

  /** Give back n bytes of what this connection holds. */
  release(n: number): void {
    if (n <= 0) return;
    const k = Math.min(n, this.held);
    this.held -= k;
    this.node.give(k);
    // its own replies went out: a request blocked by the connection's limit may fit now
    if (this.waiting && !this.blockedByConn(this.waiting.n)) this.node.pump();
  }

  get isWaiting(): boolean {
    return this.waiting !== undefined;
  }

  /** The connection is gone; what it still holds is given back by release() as its buffers are dropped. */
  close(): void {
    this.closed = true;
    this.waiting = undefined;
    this.node.unregister(this);
  }
}
