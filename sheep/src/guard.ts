// Per-listener bookkeeping of connections against clients that are slow,
// idle or many: a cap on connections from one address, a timeout on a
// request whose bytes stop arriving halfway (a header, or a payload it
// announced), and memory given back by connections that sit idle.
import { log } from './log.js';
import { plainAddress } from './access.js';

export interface GuardConfig {
  /** Connections one address may hold open on this listener. */
  maxPerAddr: number;
  /** A request whose bytes stop arriving for this long closes its connection (ms). */
  requestTimeoutMs: number;
}

export const DEFAULT_GUARD: GuardConfig = { maxPerAddr: 256, requestTimeoutMs: 10_000 };

/** A connection as the guard sees it. */
export interface Guarded {
  /** Date.now() of the last byte received. */
  lastRx: number;
  /** Some bytes of a request have arrived and the rest has not, and it is not us who stopped reading. */
  partial(): boolean;
  /** The request timed out: close. */
  timeout(why: string): void;
  /** Nothing has happened for a while: give back memory kept for speed. */
  idle(): void;
}

const IDLE_MS = 5000;

export class ConnectionGuard {
  private perAddr = new Map<string, number>();
  private conns = new Set<Guarded>();
  private timer?: NodeJS.Timeout;
  /** Addresses whose refusal was logged recently (one line per address per minute, not one per attempt). */
  private logged = new Map<string, number>();

  constructor(readonly cfg: GuardConfig, private readonly what: string) {}

  private warned = 0;
  private warnWindow = 0;
  private suppressed = 0;

  /**
   * A warning about a client (a refused request, a closed connection): at
   * most 20 lines a second per listener, so that a client cannot fill the
   * disk with the log; the rest are counted and the count logged.
   */
  warn(msg: string): void {
    const now = Date.now();
    if (now - this.warnWindow >= 1000) {
      if (this.suppressed) log.warn(`${this.what}: ${this.suppressed} more such lines not logged`);
      this.warnWindow = now;
      this.warned = 0;
      this.suppressed = 0;
    }
    if (++this.warned > 20) {
      this.suppressed++;
      return;
    }
    log.warn(msg);
  }

  /** A new connection from addr: false if that address has as many as it may (the caller closes it). */
  admit(remote: string | undefined): boolean {
    const addr = plainAddress(remote);
    const n = this.perAddr.get(addr) ?? 0;
    if (n >= this.cfg.maxPerAddr) {
      const now = Date.now();
      if ((this.logged.get(addr) ?? 0) < now - 60_000) {
        this.logged.set(addr, now);
        this.warn(`${this.what}: refusing connections from ${addr}: it has ${n} open, the most one address may (--max-conns-per-addr)`);
      }
      return false;
    }
    this.perAddr.set(addr, n + 1);
    return true;
  }

  /** A connection admit() let in has closed. */
  release(remote: string | undefined): void {
    const addr = plainAddress(remote);
    const n = (this.perAddr.get(addr) ?? 1) - 1;
    if (n > 0) this.perAddr.set(addr, n);
    else this.perAddr.delete(addr);
  }

  track(c: Guarded): void {
    this.conns.add(c);
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), Math.min(1000, Math.max(50, this.cfg.requestTimeoutMs / 4)));
      this.timer.unref();
    }
  }

  untrack(c: Guarded): void {
    this.conns.delete(c);
    if (!this.conns.size && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const c of this.conns) {
      const quiet = now - c.lastRx;
      if (c.partial()) {
        if (quiet >= this.cfg.requestTimeoutMs) c.timeout(`no byte of its request for ${quiet} ms`);
      } else if (quiet >= IDLE_MS) {
        c.idle();
      }
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.conns.clear();
  }
}
