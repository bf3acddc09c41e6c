// The ZooKeeper client library keeps a torn frame's bytes across
// reconnects and waits forever on a server that never answers the
// handshake (see hardenReconnect). ZooKeeper itself cannot be made
// to cut a reply at a chosen byte, so a small TCP server on loopback speaks
// the session handshake: the first connection is cut in the middle of a
// frame (or never answered), the next must still come up as a session.
import { describe, it, expect, afterEach } from 'vitest';
import * as net from 'node:net';
import zookeeper from 'node-zookeeper-client';
import { hardenReconnect } from '../../sheep/src/cluster/zookeeper.js';

/** A ConnectResponse frame: protocol version, timeout, session id, password. */
function connectResponse(timeoutMs: number): Buffer {
  const body = Buffer.alloc(4 + 4 + 8 + 4 + 16);
  body.writeInt32BE(0, 0);
  body.writeInt32BE(timeoutMs, 4);
  body.writeBigInt64BE(0x1234n, 8);
  body.writeInt32BE(16, 16);
  const frame = Buffer.alloc(4 + body.length);
  frame.writeInt32BE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

let server: net.Server | undefined;
let client: zookeeper.Client | undefined;
afterEach(() => {
  client?.close();
  server?.close();
});

async function run(patched: boolean, first: 'torn' | 'silent' = 'torn', want = 2): Promise<number> {
  let conns = 0;
  server = net.createServer((s) => {
    const n = ++conns;
    s.once('data', () => {
      if (n === 1 && first === 'silent') {
        // accepts the connection, never answers the handshake (a server still starting up)
      } else if (n === 1) {
        // a session, then the first 10 bytes of a 100-byte reply, then the connection is gone
        const torn = Buffer.alloc(14);
        torn.writeInt32BE(100, 0);
        s.write(Buffer.concat([connectResponse(4000), torn]), () => setTimeout(() => s.destroy(), 50));
      } else {
        s.write(connectResponse(4000));
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  client = zookeeper.createClient(`127.0.0.1:${port}`, { sessionTimeout: 4000, spinDelay: 50, retries: 0 });
  if (patched) hardenReconnect(client, 1000);
  let connected = 0;
  client.on('state', (st) => { if (st.name === 'SYNC_CONNECTED') connected++; });
  client.connect();
  const end = Date.now() + 4000;
  while (connected < want && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return connected;
}

describe('ZooKeeper client reconnect after a torn frame or a silent server', () => {
  it('the library alone never comes back (why the fix exists)', async () => {
    expect(await run(false)).toBe(1);
  });
  it('with hardenReconnect the second connection is a session again', async () => {
    expect(await run(true)).toBe(2);
  });
  it('the library alone waits forever on a server that accepts and never answers', async () => {
    expect(await run(false, 'silent', 1)).toBe(0);
  });
  it('with hardenReconnect a silent attempt is dropped and the next one is a session', async () => {
    expect(await run(true, 'silent', 1)).toBe(1);
  });
});
