// Cluster-driver conformance suite, parametric in the driver spec: bare
// member processes (driver-node.mjs) join, notify, leave and get killed, and
// every member must see the same totally ordered stream of events from its
// own join on. `specFor` returns a spec for a fresh, empty cluster each time.
import { describe, it, expect, afterEach } from 'vitest';
import { spawn, ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { ROOT, freePort } from './cluster.js';
import { lineReader } from '../../sheep/src/util.js';

const NODE_BIN = path.join(ROOT, 'test/helpers/driver-node.mjs');
const DIST = path.join(ROOT, 'sheep/dist/cluster/index.js');

export type Ev =
  | { type: 'join' | 'leave'; node: number; members: number[] }
  | { type: 'message'; from: number; msg: { t: string; [k: string]: unknown } };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Member {
  readonly events: Ev[] = [];
  started = false;
  left = false;
  closed = false;
  exitCode: number | null = null;
  stderr = '';
  private waiters: (() => void)[] = [];
  readonly gone: Promise<void>;

  private constructor(readonly port: number, readonly proc: ChildProcess) {
    lineReader(proc.stdout!, (line) => {
      const o = JSON.parse(line);
      if (o.type === 'started') this.started = true;
      else if (o.type === 'left') this.left = true;
      else this.events.push(o as Ev);
      this.wake();
    });
    proc.stderr!.on('data', (b) => (this.stderr += b));
    proc.stdin!.on('error', () => undefined);
    // 'close': the process is gone and its pipes are shut, reaped or not
    this.gone = new Promise((resolve) => proc.once('close', (code) => {
      this.closed = true;
      this.exitCode = code;
      this.wake();
      resolve();
    }));
  }

  static spawn(spec: string, port: number): Member {
    const proc = spawn(process.execPath, [NODE_BIN, spec, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const m = new Member(port, proc);
    all.add(m);
    return m;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Wait until `pred` holds (re-checked on every output line). */
  async until(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!pred()) {
      if (this.closed && !pred()) throw new Error(`member ${this.port} exited (${this.exitCode}) waiting for ${what}; stderr: ${this.stderr}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`member ${this.port}: timed out waiting for ${what}; events: ${JSON.stringify(this.events)}; stderr: ${this.stderr}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => { clearTimeout(t); r(); });
      });
    }
  }

  started$ = () => this.until('start', () => this.started, 20_000);
  messages = () => this.events.filter((e): e is Extract<Ev, { type: 'message' }> => e.type === 'message');
  send(line: string): void {
    if (!this.closed) this.proc.stdin!.write(line + '\n');
  }
  notify(msg: object): void {
    this.send(`notify ${JSON.stringify(msg)}`);
  }
  /** kill -9 and wait until it is gone. */
  async kill(): Promise<void> {
    if (!this.closed && this.proc.pid !== undefined) {
      try { process.kill(this.proc.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await this.gone;
    all.delete(this);
  }
  /** the members list of the newest membership event seen */
  view(): number[] | undefined {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i];
      if (e.type !== 'message') return e.members;
    }
    return undefined;
  }
}

const all = new Set<Member>();

export async function killAllMembers(): Promise<void> {
  await Promise.all([...all].map((m) => m.kill()));
}

/** Start members one after another (each waits for its own join). */
/** Member ids handed out by this process: a member's id is a port number it never binds, so freePort alone may hand out a live member's id again. */
const usedIds = new Set<number>();

/** A port number no member of this test process has had as its id. */
export async function memberPort(): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (usedIds.has(p)) continue;
    usedIds.add(p);
    return p;
  }
}

async function startSeq(spec: string, n: number): Promise<Member[]> {
  const ms: Member[] = [];
  for (let i = 0; i < n; i++) {
    const m = Member.spawn(spec, await memberPort());
    await m.started$();
    ms.push(m);
  }
  return ms;
}

/** Everyone's stream, from its own join, is the same as everyone else's. */
export function expectSameOrder(ms: Member[]): void {
  const ref = [...ms].sort((a, b) => firstJoinIndex(a) - firstJoinIndex(b) || b.events.length - a.events.length)[0];
  for (const m of ms) {
    const own = m.events[0];
    expect(own, `member ${m.port} first event`).toMatchObject({ type: 'join', node: m.port });
    // find the member's own join in the reference stream
    const at = ref.events.findIndex((e) => e.type === 'join' && e.node === m.port);
    if (m === ref) continue;
    if (at < 0) {
      // the reference never saw it (it joined after ref died?): compare the other way round
      continue;
    }
    const n = Math.min(m.events.length, ref.events.length - at);
    expect(m.events.slice(0, n), `member ${m.port} vs ${ref.port}`).toEqual(ref.events.slice(at, at + n));
  }
}
const firstJoinIndex = (m: Member) => (m.events[0]?.type === 'join' ? (m.events[0] as { members: number[] }).members.length : 1e9);

export function driverConformance(specFor: () => Promise<string>, opts: { detectMs?: number } = {}): void {
  const detectMs = opts.detectMs ?? 2000;

  describe('cluster driver conformance', () => {
    if (!existsSync(DIST)) throw new Error(`${DIST} is missing: run 'npx tsc -b common sheep' first`);

    afterEach(async () => {
      await killAllMembers();
    });

    it('members join in one order and everyone sees the same member lists', async () => {
      const spec = await specFor();
      const [a] = await startSeq(spec, 1);
      expect(a.events[0]).toEqual({ type: 'join', node: a.port, members: [a.port] });
      // four more join concurrently
      const rest = await Promise.all([0, 1, 2, 3].map(async () => Member.spawn(spec, await memberPort())));
      await Promise.all(rest.map((m) => m.started$()));
      const ms = [a, ...rest];
      for (const m of ms) await m.until('all 5 members', () => m.view()?.length === 5);
      expectSameOrder(ms);
      const order = a.view()!;
      expect(new Set(order)).toEqual(new Set(ms.map((m) => m.port)));
      expect(order[0]).toBe(a.port);
      for (const m of ms) {
        expect(m.view()).toEqual(order);
        // own join lists everyone who joined before it, then itself, in the common order
        const own = m.events[0] as { members: number[] };
        expect(own.members).toEqual(order.slice(0, order.indexOf(m.port) + 1));
      }
      // a's join events announce the members in order, each list the previous one plus the joiner
      const joins = a.events.filter((e) => e.type === 'join') as { node: number; members: number[] }[];
      expect(joins.map((j) => j.node)).toEqual(order);
      joins.forEach((j, i) => expect(j.members).toEqual(order.slice(0, i + 1)));
    });

    it('concurrent notifies from every member arrive in one total order everywhere', async () => {
      const spec = await specFor();
      const ms = await startSeq(spec, 4);
      for (const m of ms) await m.until('4 members', () => m.view()?.length === 4);
      const N = 25;
      for (let i = 0; i < N; i++) for (const m of ms) m.notify({ t: 'test', from: m.port, i });
      for (const m of ms) await m.until(`${N * ms.length} messages`, () => m.messages().length >= N * ms.length, 20_000);
      await sleep(200);
      const ref = ms[0].messages();
      expect(ref.length).toBe(N * ms.length);
      for (const m of ms) expect(m.messages()).toEqual(ref);
      // each sender's messages in the order it sent them, attributed to it
      for (const m of ms) {
        const mine = ref.filter((e) => e.msg.from === m.port);
        expect(mine.map((e) => e.from)).toEqual(mine.map(() => m.port));
        expect(mine.map((e) => e.msg.i)).toEqual([...Array(N).keys()]);
      }
      expectSameOrder(ms);
    });

    it('a clean leave is seen by everyone', async () => {
      const spec = await specFor();
      const ms = await startSeq(spec, 3);
      const [a, b, c] = ms;
      for (const m of ms) await m.until('3 members', () => m.view()?.length === 3);
      b.send('leave');
      await b.until('left', () => b.left);
      for (const m of [a, c]) {
        await m.until('b leaves', () => m.events.some((e) => e.type === 'leave' && e.node === b.port));
      }
      for (const m of [a, c]) {
        const lv = m.events.find((e) => e.type === 'leave')!;
        expect(lv).toEqual({ type: 'leave', node: b.port, members: [a.port, c.port] });
      }
      // the group goes on
      a.notify({ t: 'after' });
      for (const m of [a, c]) await m.until('message after leave', () => m.messages().some((e) => e.msg.t === 'after'));
      expectSameOrder([a, c]);
      // b saw nothing after its leave (and exactly one leave per member overall)
      for (const m of [a, c]) expect(m.events.filter((e) => e.type === 'leave')).toHaveLength(1);
    });

    it(`kill -9 of a member is seen as a leave by all survivors within ${detectMs} ms`, async () => {
      const spec = await specFor();
      const ms = await startSeq(spec, 4);
      for (const m of ms) await m.until('4 members', () => m.view()?.length === 4);
      const victim = ms[2];
      const survivors = ms.filter((m) => m !== victim);
      const t0 = Date.now();
      await victim.kill();
      await Promise.all(survivors.map((m) => m.until('victim leaves', () => m.events.some((e) => e.type === 'leave' && e.node === victim.port), detectMs + 3000)));
      const took = Date.now() - t0;
      console.info(`leave of a kill -9'd member seen by all survivors after ${took} ms`);
      expect(took, `detection took ${took} ms`).toBeLessThan(detectMs);
      const expected = survivors.map((m) => m.port);
      for (const m of survivors) {
        expect(m.events.filter((e) => e.type === 'leave')).toEqual([{ type: 'leave', node: victim.port, members: expected }]);
      }
      survivors[0].notify({ t: 'after' });
      for (const m of survivors) await m.until('message after kill', () => m.messages().some((e) => e.msg.t === 'after'));
      await sleep(300);
      expectSameOrder(survivors);
      // a leave is announced once, even if several survivors noticed
      for (const m of survivors) expect(m.events.filter((e) => e.type === 'leave')).toHaveLength(1);
    });

    it('a member joining later sees its own join with the full list and every later event', async () => {
      const spec = await specFor();
      const ms = await startSeq(spec, 3);
      for (const m of ms) await m.until('3 members', () => m.view()?.length === 3);
      for (let i = 0; i < 10; i++) for (const m of ms) m.notify({ t: 'before', i });
      // join while messages are in flight
      const late = Member.spawn(spec, await memberPort());
      await late.started$();
      const own = late.events[0] as { type: string; node: number; members: number[] };
      expect(own.type).toBe('join');
      expect(own.node).toBe(late.port);
      expect(own.members).toEqual([...ms.map((m) => m.port), late.port]);
      for (let i = 0; i < 5; i++) for (const m of [...ms, late]) m.notify({ t: 'after', i });
      const everyone = [...ms, late];
      for (const m of everyone) await m.until('20 after-messages', () => m.messages().filter((e) => e.msg.t === 'after').length === 20, 15_000);
      await sleep(200);
      expectSameOrder(everyone);
      // late's stream is exactly the tail of an old member's stream from late's join on
      const at = ms[0].events.findIndex((e) => e.type === 'join' && e.node === late.port);
      expect(late.events).toEqual(ms[0].events.slice(at));
      // and it got every 'after' message, none of the 'before' ones that preceded its join
      expect(late.messages().filter((e) => e.msg.t === 'after')).toHaveLength(20);
    });

    it('kill -9 of the member that joined first: the rest carry on', async () => {
      const spec = await specFor();
      const ms = await startSeq(spec, 4);
      for (const m of ms) await m.until('4 members', () => m.view()?.length === 4);
      const [first, ...rest] = ms;
      const t0 = Date.now();
      await first.kill();
      await Promise.all(rest.map((m) => m.until('first leaves', () => m.events.some((e) => e.type === 'leave' && e.node === first.port), detectMs + 3000)));
      const took = Date.now() - t0;
      console.info(`leave of a kill -9'd member seen by all survivors after ${took} ms`);
      expect(took, `detection took ${took} ms`).toBeLessThan(detectMs);
      for (const m of rest) expect(m.view()).toEqual(rest.map((x) => x.port));
      // concurrent traffic still totally ordered, and a newcomer can join
      for (let i = 0; i < 10; i++) for (const m of rest) m.notify({ t: 'x', i });
      const late = Member.spawn(spec, await memberPort());
      await late.started$();
      expect((late.events[0] as { members: number[] }).members).toEqual([...rest.map((m) => m.port), late.port]);
      late.notify({ t: 'late' });
      const everyone = [...rest, late];
      for (const m of everyone) await m.until('late message', () => m.messages().some((e) => e.msg.t === 'late'));
      for (const m of rest) await m.until('30 x-messages', () => m.messages().filter((e) => e.msg.t === 'x').length === 30);
      await sleep(200);
      expectSameOrder(everyone);
      // kill the new first member too, then one more
      await rest[0].kill();
      const left = [rest[1], rest[2], late];
      await Promise.all(left.map((m) => m.until('second leave', () => m.events.some((e) => e.type === 'leave' && e.node === rest[0].port), detectMs + 3000)));
      for (const m of left) expect(m.view()).toEqual(left.map((x) => x.port));
      expectSameOrder(left);
    });
  });
}
