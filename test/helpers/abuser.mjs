// Abusive clients of a sheep's port, for the test that a valid client is
// still served while they run. Usage:
//   node abuser.mjs PORT OID_HEX SECONDS
// Runs 24 clients, four of each kind below, for SECONDS, then exits:
// pipelined 4 MiB reads whose replies are never read; headers claiming
// 2 GiB; 4 MiB write headers whose payload never comes; a header sent a
// byte at a time; random bytes; and piles of idle connections.
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';
import { encodeRequest, Op, Flag } from '@sheepdog/common';

const [port, oidHex, seconds] = process.argv.slice(2);
const oid = BigInt('0x' + oidHex);
const end = Date.now() + Number(seconds) * 1000;
const MB = 1 << 20;
const live = () => Date.now() < end;

function conn(onClose, read = true) {
  const s = net.connect({ host: '127.0.0.1', port: Number(port) });
  s.on('error', () => undefined);
  if (!read) s.pause();
  else s.on('data', () => undefined);
  s.on('close', () => { if (live()) setTimeout(onClose, 20); });
  return s;
}

const kinds = {
  nonreader() {
    const s = conn(kinds.nonreader, false);
    const reqs = [];
    for (let i = 0; i < 520; i++) reqs.push(encodeRequest({ opcode: Op.READ_OBJ, id: i, dataLength: 4 * MB, obj: { oid, offset: 0 } }));
    s.write(Buffer.concat(reqs));
  },
  bigheader() {
    const s = conn(kinds.bigheader);
    s.write(encodeRequest({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, dataLength: 2 ** 31, obj: { oid } }));
  },
  nopayload() {
    const s = conn(kinds.nopayload);
    s.write(encodeRequest({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, dataLength: 4 * MB, obj: { oid } }));
    s.write(randomBytes(1000));
  },
  slowheader() {
    const s = conn(kinds.slowheader);
    const h = encodeRequest({ opcode: Op.READ_OBJ, dataLength: 4096, obj: { oid } });
    let i = 0;
    const t = setInterval(() => {
      if (s.destroyed || !live() || i >= h.length) { clearInterval(t); return; }
      s.write(h.subarray(i, ++i));
    }, 300);
  },
  garbage() {
    const s = conn(kinds.garbage);
    s.write(randomBytes(64 * 1024));
  },
  idler() {
    for (let i = 0; i < 50; i++) conn(() => undefined);
  },
};

for (const k of Object.keys(kinds)) for (let i = 0; i < 4; i++) kinds[k]();
setTimeout(() => process.exit(0), Number(seconds) * 1000).unref();
setInterval(() => undefined, 1000).unref();
await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
process.exit(0);
