// The NBD port against hostile clients: writes beyond the export's end
// refused before their payload is buffered, pipelined reads never read
// bounded by the budget, option and name limits, requests before the
// handshake ends, and stalled requests timed out.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Res } from '@sheepdog/common';
import { stopAll, waitFor } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';
import { startNbdSheep, NbdSheep } from '../helpers/nbd.js';
import { RawConn, NBD } from '../helpers/nbd-client.js';
import { rss, sleep } from '../helpers/hostile.js';

const MB = 1 << 20;
const SLACK = 96 * MB;

describe('NBD port under hostile input', () => {
  let n: NbdSheep;
  let w: Wire;
  let base: number;
  const conns: RawConn[] = [];
  const attached = async (name = 'disk') => {
    const c = new RawConn(n.nbdPort);
    conns.push(c);
    await c.hello();
    const r = await c.go(name);
    if ('error' in r) throw new Error(`GO ${name}: ${r.error.toString(16)}`);
    return c;
  };
  const log = () => readFileSync(path.join(n.s.dir, 'sheep.log'), 'utf8');
  const works = async () => {
    const c = await attached();
    const r = await c.cmd(NBD.CMD.READ, 0, 4096);
    expect(r.error).toBe(0);
    c.close();
  };

  beforeAll(async () => {
    n = await startNbdSheep(1, ['--conn-budget', '16M', '--node-budget', '128M', '--request-timeout', '2']);
    w = new Wire(n.s.port);
    expect((await w.newVdi('disk', 64n * BigInt(MB))).rsp.result).toBe(Res.SUCCESS);
    await sleep(300);
    base = rss(n.s.proc.pid!);
  });
  afterAll(async () => {
    conns.forEach((c) => c.close());
    w?.close();
    await stopAll();
  });

  it('refuses writes beyond the export before buffering their payload, and the connection goes on', async () => {
    const c = await attached();
    const payload = Buffer.alloc(32 * MB, 1);
    // 40 writes of 32 MiB beyond the end, pipelined (header, then the same payload buffer each time)
    const handles = new Set<bigint>();
    for (let i = 0; i < 40; i++) {
      const f = c.frame(NBD.CMD.WRITE, 64 * MB + i * 32 * MB, 32 * MB);
      handles.add(f.handle);
      c.write(f.bytes);
      c.write(payload);
    }
    let peak = 0;
    for (let i = 0; i < 40; i++) {
      const r = await c.reply(undefined);
      expect(handles.has(r.handle)).toBe(true);
      expect(r.error).toBe(28); // ENOSPC
      if (i % 4 === 0) peak = Math.max(peak, rss(n.s.proc.pid!));
    }
    peak = Math.max(peak, rss(n.s.proc.pid!));
    const back = await c.cmd(NBD.CMD.WRITE, 0, 4096, Buffer.alloc(4096, 9));
    expect(back.error).toBe(0);
    const rd = await c.cmd(NBD.CMD.READ, 0, 4096);
    expect(rd.data?.equals(Buffer.alloc(4096, 9))).toBe(true);
    c.close();
    // and 40 connections each announcing such a write and sending only its first kilobyte
    const holders = await Promise.all(Array.from({ length: 40 }, () => attached()));
    holders.forEach((h, i) => {
      h.write(h.frame(NBD.CMD.WRITE, 64 * MB + i * 32 * MB, 32 * MB).bytes);
      h.write(Buffer.alloc(1024));
    });
    for (const h of holders) expect((await h.reply()).error).toBe(28);
    await sleep(300);
    peak = Math.max(peak, rss(n.s.proc.pid!));
    holders.forEach((h) => h.close());
    expect(peak - base).toBeLessThan(SLACK);
  });

  it('answers a zero-length write with EINVAL and the connection goes on (found by the fuzzer)', async () => {
    const c = await attached();
    expect((await c.cmd(NBD.CMD.WRITE, 4096, 0, Buffer.alloc(0))).error).toBe(22);
    const back = await c.cmd(NBD.CMD.WRITE, 0, 4096, Buffer.alloc(4096, 5));
    expect(back.error).toBe(0);
    expect((await c.cmd(NBD.CMD.READ, 0, 4096)).data?.equals(Buffer.alloc(4096, 5))).toBe(true);
    c.close();
    expect(log()).not.toMatch(/internal error/);
  });

  it('holds at most its budget for a client that never reads its replies', async () => {
    const c = await attached();
    c.sock.pause();
    const reqs: Buffer[] = [];
    for (let i = 0; i < 271; i++) reqs.push(c.frame(NBD.CMD.READ, 0, 32 * MB).bytes); // 7.6 KB asking for 8.5 GiB
    c.write(Buffer.concat(reqs));
    let peak = 0;
    for (let i = 0; i < 20; i++) {
      await sleep(100);
      peak = Math.max(peak, rss(n.s.proc.pid!));
    }
    await works();
    c.close();
    expect(peak - base).toBeLessThan(16 * MB + 32 * MB + SLACK);
  });

  it('limits option lengths and export names, and closes on requests before the handshake ends', async () => {
    const a = new RawConn(n.nbdPort);
    conns.push(a);
    await a.hello();
    a.sendOpt(NBD.OPT.GO, Buffer.alloc(200_000)); // over the option limit
    expect(await a.waitClosed()).toBe(true);

    const b = new RawConn(n.nbdPort);
    conns.push(b);
    await b.hello();
    expect(await b.go('x'.repeat(5000))).toEqual({ error: NBD.REP.ERR_INVALID });
    expect(await b.go(Buffer.from([0xff, 0xfe, 0x41]).toString('latin1'))).toEqual({ error: NBD.REP.ERR_UNKNOWN });
    const bad = Buffer.alloc(4 + 3 + 2);
    bad.writeUInt32BE(3, 0);
    Buffer.from([0xff, 0xfe, 0x41]).copy(bad, 4);
    b.sendOpt(NBD.OPT.GO, bad);
    expect((await b.optReply()).type).toBe(NBD.REP.ERR_INVALID);
    b.close();

    const c = new RawConn(n.nbdPort);
    conns.push(c);
    await c.hello();
    c.request(NBD.CMD.READ, 0, 4096); // a transmission request during option haggling
    expect(await c.waitClosed()).toBe(true);
    await works();
  });

  it('closes a connection whose request stops halfway, and one that never finishes the handshake', async () => {
    const c = await attached();
    c.write(c.frame(NBD.CMD.WRITE, 0, 65536).bytes);
    c.write(Buffer.alloc(1000)); // then nothing
    const d = new RawConn(n.nbdPort);
    conns.push(d);
    await d.read(18); // greeting read, no client flags
    expect(await c.waitClosed(8000)).toBe(true);
    expect(await d.waitClosed(8000)).toBe(true);
    // the log is written asynchronously: on a loaded machine the line may follow the close
    await waitFor(() => /NBD: closing connection from .*127\.0\.0\.1: no byte of its request for \d+ ms/.test(log()), 10_000, 'the stalled request in the log');
    await works();
  });
});
