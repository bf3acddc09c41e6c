// SheepClient against a scripted server on loopback: replies of every size,
// out of order and cut into random segments, reach the right callers byte
// for byte; a reply the client cannot trust closes the connection and fails
// what is pending.
import { describe, it, expect, afterEach } from 'vitest';
import * as net from 'node:net';
import { randomInt } from 'node:crypto';
import { SheepClient, Op, RequestHeader, encodeResponse, Res, ConnectionError } from '@sheepdog/common';

/** Reply data for request id: bytes anyone can recompute. */
const pattern = (id: number, n: number) => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (id * 31 + i * 7) & 0xff;
  return b;
};

const servers: net.Server[] = [];
afterEach(() => { for (const s of servers.splice(0)) s.close(); });

/** A server that hands each parsed request header to answer(), which writes what it likes to the socket. */
async function scripted(answer: (h: RequestHeader, sock: net.Socket) => void): Promise<number> {
  const srv = net.createServer((sock) => {
    let rx = Buffer.alloc(0);
    sock.on('data', (b) => {
      rx = Buffer.concat([rx, b]);
      while (rx.length >= 48) {
        const h = new RequestHeader(Buffer.from(rx.subarray(0, 48)));
        rx = rx.subarray(48);
        answer(h, sock);
      }
    });
    sock.on('error', () => undefined);
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return (srv.address() as net.AddressInfo).port;
}

/** Write buf to sock in random segments, some after a pause. */
async function dribble(sock: net.Socket, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length && !sock.destroyed) {
    const n = Math.min(buf.length - off, randomInt(0, 3) === 0 ? randomInt(1, 100) : randomInt(1, 200 * 1024));
    sock.write(buf.subarray(off, off + n));
    off += n;
    if (randomInt(0, 6) === 0) await new Promise((r) => setTimeout(r, 1));
  }
}

describe('SheepClient reply framing', () => {
  it('delivers replies of every size, out of order and in random segments, to their callers', async () => {
    const held: RequestHeader[] = [];
    let writing = Promise.resolve();
    const port = await scripted((h, sock) => {
      held.push(h);
      // answer in batches, newest first, once 25 are waiting
      if (held.length < 25) return;
      const batch = held.splice(0).reverse();
      const out = Buffer.concat(batch.flatMap((r) => [
        encodeResponse({ opcode: r.opcode, id: r.id, result: Res.SUCCESS, dataLength: r.dataLength }),
        pattern(r.id, r.dataLength),
      ]));
      writing = writing.then(() => dribble(sock, out)); // one batch's bytes at a time
    });
    const c = new SheepClient({ port, timeout: 30_000 });
    const sizes = [0, 1, 47, 48, 100, 4095, 4096, 65535, 65536, 65537, 200_000, 262_144, 1 << 20, 3 * (1 << 20) + 5];
    const n = 200;
    const got = await Promise.all(Array.from({ length: n }, (_, i) =>
      c.send({ opcode: Op.READ_OBJ, dataLength: sizes[i % sizes.length] })));
    c.close();
    for (const r of got) {
      expect(r.rsp.result).toBe(Res.SUCCESS);
      expect(r.data.length).toBe(r.rsp.dataLength);
      expect(r.data.equals(pattern(r.rsp.id, r.rsp.dataLength))).toBe(true);
    }
    expect(new Set(got.map((r) => r.rsp.id)).size).toBe(n);
  });

  it('closes the connection and fails what is pending on a reply to an id it never sent', async () => {
    const port = await scripted((h, sock) => {
      if (h.opcode === Op.READ_OBJ) sock.write(encodeResponse({ opcode: h.opcode, id: h.id + 1000, result: Res.SUCCESS, dataLength: 0 }));
    });
    const c = new SheepClient({ port });
    const r = await Promise.allSettled([c.send({ opcode: Op.STAT_CLUSTER }), c.send({ opcode: Op.READ_OBJ })]);
    c.close();
    for (const x of r) {
      expect(x.status).toBe('rejected');
      expect((x as PromiseRejectedResult).reason).toBeInstanceOf(ConnectionError);
    }
  });

  it('closes the connection on a reply claiming more than 2 GiB of data', async () => {
    const port = await scripted((h, sock) => {
      sock.write(encodeResponse({ opcode: h.opcode, id: h.id, result: Res.SUCCESS, dataLength: 0xffffffff }));
    });
    const c = new SheepClient({ port });
    await expect(c.send({ opcode: Op.READ_OBJ, dataLength: 16 })).rejects.toBeInstanceOf(ConnectionError);
    c.close();
  });
});
