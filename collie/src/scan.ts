// SCAN (spec §14.1): iterate every live VDI, optionally with its index; and
// index views for flat and hyper (B-tree) VDIs.
import {
  Op, Flag, Res, decodeInodeHeader, InodeHeader, vidToVdiOid, SD_VDI_BITMAP_SIZE, SD_INODE_HEADER_SIZE,
  SD_INODE_SIZE, MAX_DATA_OBJS, SD_INODE_DATA_INDEX_SIZE, resultMessage,
} from '@sheepdog/common';
import {
  BtreeError, INODE_HEADER_PLUS_BTREE, decodeBtreeHeader, indexMetaSize, liveVids, buildIndexWith, VdiIndex,
} from '@sheepdog/common';
import { Ctx, readObject } from './conn.js';
import { CliError, EXIT_SYSFAIL } from './exitcodes.js';

export {
  BTREE_MAGIC, INODE_HEADER_PLUS_BTREE, FlatIndex, SparseIndex, decodeBtreeHeader, indexMetaSize, objectSize, nrDataObjs,
  isSnapshot, liveVids, statDataObjs,
} from '@sheepdog/common';
export type { VdiIndex, BtreeHeader } from '@sheepdog/common';

/** Build the index of a VDI from its data_vdi_id area (see buildIndexWith). */
export function buildIndex(ctx: Ctx, h: InodeHeader, area: Buffer): Promise<VdiIndex> {
  return buildIndexWith((oid) => readObject(ctx, oid, SD_INODE_DATA_INDEX_SIZE, 0, true), h, area);
}

export interface ScannedVdi {
  vid: number;
  header: InodeHeader;
  /** Only when the scan was asked for the index. */
  index?: VdiIndex;
}

/** Read a VDI bitmap (READ_VDIS or READ_DEL_VDIS). */
async function readBitmap(ctx: Ctx, opcode: number): Promise<Buffer> {
  const r = await ctx.execOrFail({ opcode, dataLength: SD_VDI_BITMAP_SIZE });
  if (r.rsp.result !== Res.SUCCESS) {
    throw new CliError(EXIT_SYSFAIL, `Failed to read VDIs: ${resultMessage(r.rsp.result)}`);
  }
  return r.data;
}


/**
 * parse_vdi(): READ_VDIS, READ_DEL_VDIS, then per live id READ_OBJ of 4672
 * bytes (DIRECT) and, if `withIndex`, the index at 4664. Requests are
 * pipelined but issued in ascending id order; results come back in that order.
 */
export async function scanVdis(ctx: Ctx, withIndex: boolean, wantIndex?: (h: InodeHeader) => boolean): Promise<ScannedVdi[]> {
  const inuse = await readBitmap(ctx, Op.READ_VDIS);
  const deleted = await readBitmap(ctx, Op.READ_DEL_VDIS);
  const vids = liveVids(inuse, deleted);
  const results: (ScannedVdi | undefined)[] = new Array(vids.length);
  const one = async (i: number) => {
    const vid = vids[i];
    const oid = vidToVdiOid(vid);
    const r = await ctx.execOrFail({ opcode: Op.READ_OBJ, flags: Flag.CMD_DIRECT, dataLength: INODE_HEADER_PLUS_BTREE, obj: { oid } });
    if (r.rsp.result !== Res.SUCCESS || r.data.length < 572) {
      ctx.err('Failed to read inode header');
      return;
    }
    const header = decodeInodeHeader(r.data);
    if (!header.name) return;
    const sv: ScannedVdi = { vid, header };
    if (withIndex && (!wantIndex || wantIndex(header))) {
      const bt = decodeBtreeHeader(r.data, SD_INODE_HEADER_SIZE);
      const len = indexMetaSize(header, bt);
      let area: Buffer = Buffer.alloc(0);
      if (len > 0) {
        const ir = await ctx.execOrFail({
          opcode: Op.READ_OBJ, flags: Flag.CMD_DIRECT, dataLength: Math.min(len, SD_INODE_SIZE - SD_INODE_HEADER_SIZE),
          obj: { oid, offset: SD_INODE_HEADER_SIZE },
        });
        if (ir.rsp.result !== Res.SUCCESS) {
          ctx.err('Failed to read inode');
          return;
        }
        area = ir.data;
      }
      try {
        sv.index = await buildIndex(ctx, header, area);
      } catch (e) {
        // one VDI's corrupt B-tree must not hide the others
        if (!(e instanceof BtreeError)) throw e;
        ctx.err(`Failed to read the index of VDI ${header.name}: ${e.message}`);
        return;
      }
    }
    results[i] = sv;
  };
  const WINDOW = 16;
  let next = 0;
  const workers: Promise<void>[] = [];
  for (let w = 0; w < Math.min(WINDOW, vids.length); w++) {
    workers.push((async () => {
      while (next < vids.length) await one(next++);
    })());
  }
  await Promise.all(workers);
  return results.filter((x): x is ScannedVdi => x !== undefined);
}

/** READ_INODE(full) and decode header + index. */
export async function readFullInode(ctx: Ctx, vid: number, direct = true): Promise<{ header: InodeHeader; index: VdiIndex; raw: Buffer }> {
  const raw = await readObject(ctx, vidToVdiOid(vid), SD_INODE_SIZE, 0, direct);
  const header = decodeInodeHeader(raw);
  const area = raw.subarray(SD_INODE_HEADER_SIZE, SD_INODE_HEADER_SIZE + SD_INODE_DATA_INDEX_SIZE);
  const index = await buildIndex(ctx, header, area);
  return { header, index, raw };
}

export async function readInodeHeader(ctx: Ctx, vid: number): Promise<{ header: InodeHeader; raw: Buffer }> {
  const raw = await readObject(ctx, vidToVdiOid(vid), SD_INODE_HEADER_SIZE, 0, true);
  return { header: decodeInodeHeader(raw), raw };
}
