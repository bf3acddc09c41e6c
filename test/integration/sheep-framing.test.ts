// Requests on the sheepdog port however their bytes are cut: pipelined
// writes of every size class (header-sized, stage-sized, pooled, several
// MiB), sent in random segments, must all be answered and land byte for
// byte, whether the daemon receives into buffers of its own choosing
// (direct, the default) or through ordinary 'data' chunks.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as net from 'node:net';
import { randomBytes, randomInt } from 'node:crypto';
import {
  Op, Flag, Res, ClusterFlag, encodeRequest, ResponseHeader, timestamp64, vidToDataOid, vidToVdiOid, SD_RSP_HEADER_SIZE,
} from '@sheepdog/common';
import { startSheep, stopAll, SheepProc } from '../helpers/cluster.js';
import { Wire } from '../helpers/wire.js';

const MB = 1 << 20;
const OBJ = 4 * MB;
const SIZES = [1, 47, 48, 49, 4096, 16 * 1024 - 1, 65535, 65536, 65537, 200_000, 256 * 1024, 256 * 1024 + 48, MB, MB, 3 * MB + 5, 17, MB, 300_001, 2 * MB, 4096];

for (const mode of ['direct', 'data events'] as const) {
  describe(`sheepdog port framing (${mode})`, () => {
    let s: SheepProc;
    let w: Wire;
    let vid: number;
    const objects = 16;
    beforeAll(async () => {
      s = await startSheep(mode === 'direct' ? {} : { env: { SHEEP_DIRECT_RECV: '0' } });
      w = new Wire(s.port);
      const r = await w.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies: 1, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES } }, Buffer.from('plain\0'));
      expect(r.rsp.result).toBe(Res.SUCCESS);
      const n = await w.newVdi('framing', BigInt(objects * OBJ));
      vid = n.rsp.vdi.vdiId;
      // every object exists, so that the stream below is plain overwrites
      for (let i = 0; i < objects; i++) {
        const c = await w.send({ opcode: Op.CREATE_AND_WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToDataOid(vid, i) } }, Buffer.alloc(OBJ));
        expect(c.rsp.result).toBe(Res.SUCCESS);
        const e = Buffer.alloc(4);
        e.writeUInt32LE(vid);
        await w.send({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, obj: { oid: vidToVdiOid(vid), offset: 4664 + 4 * i } }, e);
      }
    });
    afterAll(async () => {
      w.close();
      await stopAll();
    });

    it('answers every pipelined write sent in random segments, and every byte lands', async () => {
      // lay the writes out back to back over the objects, none crossing an object's end
      const expected = Buffer.alloc(objects * OBJ);
      const reqs: Buffer[] = [];
      let pos = 0;
      let id = 1;
      // the sizes above twice, then a run of small writes (which wait in the
      // receive stage, so the stage fills up in the middle of requests) with
      // a large one now and then
      const sizes = [...SIZES, ...SIZES, ...Array.from({ length: 600 }, (_, i) => (i % 97 === 96 ? randomInt(65536, 2 * MB) : randomInt(1, 30000)))];
      {
        for (const size of sizes) {
          if (Math.floor(pos / OBJ) !== Math.floor((pos + size - 1) / OBJ)) pos = Math.ceil(pos / OBJ) * OBJ;
          const data = randomBytes(size);
          data.copy(expected, pos);
          const oid = vidToDataOid(vid, Math.floor(pos / OBJ));
          reqs.push(encodeRequest({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, id: id++, dataLength: size, obj: { oid, offset: pos % OBJ } }), data);
          // a request without payload between writes
          reqs.push(encodeRequest({ opcode: Op.READ_OBJ, id: id++, dataLength: 0, obj: { oid, offset: 0 } }));
          pos += size + randomInt(0, 5000);
        }
      }
      expect(pos).toBeLessThan(objects * OBJ);
      const stream = Buffer.concat(reqs);
      const total = id - 1;

      const sock = net.connect({ host: '127.0.0.1', port: s.port });
      sock.setNoDelay(true);
      await new Promise<void>((r) => sock.once('connect', () => r()));
      let rx = Buffer.alloc(0);
      const results = new Map<number, number>();
      const done = new Promise<void>((resolve, reject) => {
        sock.on('data', (b) => {
          rx = Buffer.concat([rx, b]);
          while (rx.length >= SD_RSP_HEADER_SIZE) {
            const h = new ResponseHeader(rx.subarray(0, SD_RSP_HEADER_SIZE));
            if (rx.length < SD_RSP_HEADER_SIZE + h.dataLength) break;
            results.set(h.id, h.result);
            rx = rx.subarray(SD_RSP_HEADER_SIZE + h.dataLength);
            if (results.size === total) resolve();
          }
        });
        sock.on('close', () => reject(new Error(`closed after ${results.size} of ${total} replies`)));
        sock.on('error', reject);
      });
      // segments from 1 byte to 300 KiB, some after a pause so they arrive apart
      let off = 0;
      while (off < stream.length) {
        const n = Math.min(stream.length - off, randomInt(0, 4) === 0 ? randomInt(1, 64) : randomInt(1, 300 * 1024));
        const ok = sock.write(stream.subarray(off, off + n));
        off += n;
        if (!ok) await new Promise((r) => sock.once('drain', r));
        if (randomInt(0, 8) === 0) await new Promise((r) => setTimeout(r, 2));
      }
      await done;
      sock.destroy();
      expect(results.size).toBe(total);
      for (const [rid, result] of results) expect({ id: rid, result }).toEqual({ id: rid, result: Res.SUCCESS });
      const back = await w.readVdi(vid, 0, objects * OBJ);
      expect(back.equals(expected)).toBe(true);
    });

    it('answers an oversized request after the good ones before it, then hangs up', async () => {
      const sock = net.connect({ host: '127.0.0.1', port: s.port });
      await new Promise<void>((r) => sock.once('connect', () => r()));
      let rx = Buffer.alloc(0);
      let closed = false;
      sock.on('data', (b) => (rx = Buffer.concat([rx, b])));
      sock.on('close', () => (closed = true));
      const data = randomBytes(MB);
      const oid = vidToDataOid(vid, objects - 1);
      sock.write(Buffer.concat([
        encodeRequest({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, id: 1, dataLength: MB, obj: { oid, offset: 0 } }), data,
        encodeRequest({ opcode: Op.WRITE_OBJ, flags: Flag.CMD_WRITE, id: 2, dataLength: 0xffffffff, obj: { oid, offset: 0 } }),
        randomBytes(1000),
      ]));
      for (let i = 0; i < 500 && !closed; i++) await new Promise((r) => setTimeout(r, 10));
      expect(closed).toBe(true);
      const ids: [number, number][] = [];
      while (rx.length >= SD_RSP_HEADER_SIZE) {
        const h = new ResponseHeader(rx.subarray(0, SD_RSP_HEADER_SIZE));
        ids.push([h.id, h.result]);
        rx = rx.subarray(SD_RSP_HEADER_SIZE + h.dataLength);
      }
      expect(ids).toEqual([[1, Res.SUCCESS], [2, Res.INVALID_PARMS]]);
      expect((await w.readVdi(vid, (objects - 1) * OBJ, MB)).equals(data)).toBe(true);
    });
  });
}
