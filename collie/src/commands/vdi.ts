// dog vdi ... (spec §14.4)
import {
  Op, Flag, Res, resultMessage, vidToVdiOid, vidToDataOid, vidToAttrOid, oidToVid, dataOidToIdx, isDataObj,
  encodeAttr, decodeAttr, encodeInodeHeader, InodeHeader, SD_INODE_HEADER_SIZE, SD_INODE_SIZE, SD_ATTR_OBJ_SIZE,
  MAX_DATA_OBJS, SD_MAX_VDI_SIZE_HYPER, SD_VDI_STATE_SIZE, addrToString, SdNode, VnodeRing, ConnectionError,
  decodeCacheInfo, CacheInfoFlag, CACHE_INFO_HEADER_SIZE, CACHE_INFO_RECORD_SIZE, sizeToStr, libvirtDiskXml, RECLAIM_HEADER_SIZE,
  decodeEcPolicy, ecEncode, ecDecode,
} from '@sheepdog/common';
import type { OptDef, SubCommand, Opts } from '../cli.js';
import {
  Ctx, findVdi, lookupVdi, readObject, writeObject, setIndex, nameTagPayload, Window, ObjectError, nodeName,
} from '../conn.js';
import {
  CliError, EXIT_SUCCESS, EXIT_FAILURE, EXIT_SYSFAIL, EXIT_USAGE, EXIT_EXISTS, EXIT_MISSING,
} from '../exitcodes.js';
import { sizeArg, parseSnapshot, parseCopies, parseShift, parseIndex, parseOidArg } from '../args.js';
import {
  scanVdis, readFullInode, readInodeHeader, statDataObjs, nrDataObjs, objectSize, isSnapshot, VdiIndex, FlatIndex,
} from '../scan.js';
import {
  VDI_LIST_HEADER, vdiListLine, vdiTreeText, GRAPH_HEADER, GRAPH_FOOTER, vdiGraphEntry, OBJECT_MAP_HEADER,
  objectMapLine, LOCK_LIST_HEADER, lockListLine,
} from '../format.js';
import { strnumber, hex16 } from '../output.js';
import { Progress } from '../progress.js';
import { stdin, writeStdout } from '../io.js';
import { confirm, reclaiming } from './common.js';
import { statClusterLogs } from './cluster.js';
import { vdiBackup, vdiRestore } from './backup.js';
import { printJson, vdiJson, vdiTreeJson, bytes, nodeJson, reclaimJson } from '../json.js';

export const vdiOptions: OptDef[] = [
  { ch: 'P', name: 'prealloc', hasArg: false, desc: 'preallocate all the data objects' },
  { ch: 'n', name: 'no-share', hasArg: false, desc: 'share nothing with its parent' },
  { ch: 'i', name: 'index', hasArg: true, desc: 'specify the index of data objects' },
  { ch: 's', name: 'snapshot', hasArg: true, desc: 'specify a snapshot id or tag name' },
  { ch: 'x', name: 'exclusive', hasArg: false, desc: 'write in an exclusive mode' },
  { ch: 'd', name: 'delete', hasArg: false, desc: 'delete a key' },
  { ch: 'w', name: 'writeback', hasArg: false, desc: 'use writeback mode' },
  { ch: 'c', name: 'copies', hasArg: true, desc: 'specify the data redundancy level' },
  { ch: 'F', name: 'from', hasArg: true, desc: 'create a differential backup from the snapshot' },
  { ch: 'f', name: 'force', hasArg: false, desc: 'do operation forcibly' },
  { ch: 'y', name: 'hyper', hasArg: false, desc: 'create a hyper volume' },
  { ch: 'o', name: 'oid', hasArg: true, desc: 'specify the object id of the tracking object' },
  {
    ch: 'e', name: 'exist', hasArg: false,
    desc: 'only check objects exist or not,\n                          neither comparing nor repairing',
  },
  { ch: 'z', name: 'block_size_shift', hasArg: true, desc: 'specify the bit shift num for data object size' },
  { ch: 'N', name: 'nbd', hasArg: true, desc: 'HOST:PORT of a sheep --nbd listener (default: the sheepdog protocol to -a/-p)' },
  { ch: 't', name: 'target', hasArg: true, desc: 'guest device name (default vda)' },
  {
    ch: 'R', name: 'reduce-identical-snapshots', hasArg: false,
    desc: "do not create snapshot if working VDI doesn't have its own objects",
  },
];

const OLD_MAX_DATA_OBJS = MAX_DATA_OBJS;
const WINDOW = 4; // objects in flight for read/write/prealloc (measured: more does not help)

function fail(msg: string, code = EXIT_FAILURE): never {
  throw new CliError(code, msg);
}

/** read_vdi_obj: LOOKUP + READ_INODE with dog's error texts. */
export async function openVdi(ctx: Ctx, name: string, snapid: number, tag: string, full: boolean) {
  const vid = await findVdi(ctx, name, snapid, tag);
  try {
    if (full) return { vid, ...(await readFullInode(ctx, vid)) };
    const h = await readInodeHeader(ctx, vid);
    return { vid, header: h.header, raw: h.raw, index: undefined as VdiIndex | undefined };
  } catch (e) {
    if (e instanceof ObjectError) {
      ctx.err(e.message);
      if (snapid) fail(`Failed to read a snapshot ${name}:${snapid}`);
      if (tag) fail(`Failed to read a snapshot ${name}:${tag}`);
      fail(`Failed to read a vdi ${name}`);
    }
    throw e;
  }
}

/** do_vdi_create: NEW_VDI. */
export async function doVdiCreate(
  ctx: Ctx, name: string, size: bigint, baseVid: number, snapshot: boolean, copies: number, policy: number,
  storePolicy: number, shift: number,
): Promise<number> {
  const payload = Buffer.alloc(256);
  payload.write(name.slice(0, 255), 'utf8');
  const r = await ctx.execOrFail(
    {
      opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, dataLength: 256,
      vdi: { vdiSize: size, baseVdiId: baseVid, snapid: snapshot ? 1 : 0, copies, copyPolicy: policy, storePolicy, blockSizeShift: shift },
    },
    payload,
  );
  if (r.rsp.result !== Res.SUCCESS) fail(`Failed to create VDI ${name}: ${resultMessage(r.rsp.result)}`);
  return r.rsp.vdi.vdiId;
}

export function needName(args: string[]): string {
  if (!args[0]) throw new CliError(EXIT_USAGE);
  return args[0];
}

function hyperUnsupported(h: InodeHeader, what: string): void {
  if (h.storePolicy !== 0) fail(`${what} of hyper volumes is not supported by this collie`);
}

// ---- create ----------------------------------------------------------------

async function vdiCreate(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  if (!args[1]) fail('Please specify the VDI size', EXIT_USAGE);
  const size = sizeArg(args[1]);
  const cp = o.c ? parseCopies(o.c as string) : { copies: 0, policy: 0 };
  const hyper = o.y === true;
  if (hyper && o.z !== undefined) fail("Don't specify both -y and -z options, please");
  let shift = o.z ? parseShift(o.z as string) : 0;
  if (hyper) shift = 22;
  if (Buffer.byteLength(name) > 255) fail(`VDI name is too long: ${name}`, EXIT_USAGE);

  let objSize: bigint;
  if (shift) {
    objSize = 1n << BigInt(shift);
  } else {
    const r = await ctx.execOrFail({ opcode: Op.CLUSTER_INFO, dataLength: 491568 });
    if (r.rsp.result !== Res.SUCCESS) fail(resultMessage(r.rsp.result));
    const ctime = r.data.length >= 16 ? r.data.readBigUInt64LE(8) : 0n;
    if (ctime === 0n) fail(`Failed to create VDI ${name}: ${resultMessage(Res.WAIT_FOR_FORMAT)}`);
    objSize = 1n << BigInt(r.data[21] || 22);
  }
  const oldMax = objSize * BigInt(OLD_MAX_DATA_OBJS);
  if (size > oldMax && !hyper) {
    fail(
      `VDI size is larger than ${strnumber(oldMax)} bytes, please use '-y' to create a hyper volume with size up to ` +
        `${strnumber(BigInt(SD_MAX_VDI_SIZE_HYPER))} bytes or use '-z' to create larger object size volume`,
      EXIT_USAGE,
    );
  }
  if (size > BigInt(SD_MAX_VDI_SIZE_HYPER)) fail('VDI size is too large', EXIT_USAGE);
  // 1.0 checks neither nodes nor zones here: writes fail later if too few
  const vid = await doVdiCreate(ctx, name, size, 0, false, cp.copies, cp.policy, hyper ? 1 : 0, shift);

  if (o.P) {
    const { header } = await openVdiById(ctx, vid, true);
    hyperUnsupported(header, 'Preallocation');
    await preallocate(ctx, vid, header, undefined);
  }
  // on stderr, and not under the name dog, whose every line stays 1.0's: QEMU users must learn it before they try
  if (hyper && ctx.prog !== 'dog') ctx.err(`${name} is a hyper volume (B-tree index): QEMU's sheepdog driver cannot use it; use it through sheep --nbd or sheepfs`);
  if (ctx.verbose) ctx.out(ctx.raw ? `${vid.toString(16)}\n` : `VDI ID of newly created VDI: ${vid.toString(16)}\n`);
  return EXIT_SUCCESS;
}

export async function openVdiById(ctx: Ctx, vid: number, full: boolean) {
  try {
    return full ? await readFullInode(ctx, vid) : { ...(await readInodeHeader(ctx, vid)), index: undefined };
  } catch (e) {
    if (e instanceof ObjectError) fail(e.message);
    throw e;
  }
}

/**
 * Create every data object of `vid` (empty, or copied from `src` when given)
 * and point the index at it: OBJWRITE(create, direct) then SETIDX(direct).
 */
async function preallocate(
  ctx: Ctx, vid: number, h: InodeHeader, src: { index: VdiIndex; skipUnallocated: boolean } | undefined,
): Promise<void> {
  const n = nrDataObjs(h);
  const os = objectSize(h);
  const win = new Window(WINDOW);
  const prog = new Progress(h.vdiSize);
  let done = 0n;
  for (let idx = 0; idx < n && !win.failed; idx++) {
    const owner = src?.index.get(idx) ?? 0;
    if (src && !owner && src.skipUnallocated) continue;
    await win.add(async () => {
      let data: Buffer = Buffer.alloc(0);
      if (owner) data = await readObject(ctx, vidToDataOid(owner, idx), os, 0, true);
      const r = await writeObject(ctx, {
        oid: vidToDataOid(vid, idx), data, offset: 0, copies: h.nrCopies, copyPolicy: h.copyPolicy, create: true, direct: true,
      });
      if (r !== Res.SUCCESS) throw new CliError(EXIT_FAILURE);
      const s = await setIndex(ctx, vid, idx, vid, h.nrCopies, h.copyPolicy, 0, true);
      if (s !== Res.SUCCESS) throw new CliError(EXIT_SYSFAIL);
      done += BigInt(os);
      prog.update(done > h.vdiSize ? h.vdiSize : done);
    });
  }
  try {
    await win.drain();
  } catch (e) {
    if (e instanceof ObjectError) fail(e.message);
    throw e;
  }
  prog.finish();
}

// ---- snapshot / clone / rollback / delete / resize -------------------------

async function vdiSnapshot(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const snap = parseSnapshot(o.s as string | undefined);
  if (snap.id !== 0) fail('Please specify a non-integer value for a snapshot tag name', EXIT_USAGE);
  const tag = snap.tag;
  let { result, vid } = await lookupVdi(ctx, name, 0, tag);
  let header: InodeHeader;
  if (result === Res.SUCCESS) {
    header = (await openVdiById(ctx, vid, false)).header;
    if (isSnapshot(header)) {
      fail(`Failed to create snapshot for ${name}, maybe snapshot id (0) or tag (${tag}) is existed`);
    }
  } else if (result === Res.NO_TAG) {
    ({ result, vid } = await lookupVdi(ctx, name, 0, ''));
    if (result !== Res.SUCCESS) fail(`Failed to create snapshot for ${name}: ${resultMessage(result)}`);
    header = (await openVdiById(ctx, vid, false)).header;
  } else {
    fail(`Failed to create snapshot for ${name}: ${resultMessage(result)}`);
  }
  if (header.storePolicy !== 0) fail('creating a snapshot of hypervolume is not supported');
  if (o.R) {
    const full = await openVdiById(ctx, vid, true);
    let own = false;
    for (const [, owner] of full.index!.entries()) if (owner === vid) { own = true; break; }
    if (!own) return EXIT_SUCCESS;
  }
  const tagBuf = Buffer.alloc(256);
  tagBuf.write(tag.slice(0, 256), 'utf8');
  const w = await writeObject(ctx, {
    oid: vidToVdiOid(vid), data: tagBuf, offset: 256, copies: header.nrCopies, copyPolicy: header.copyPolicy,
    create: false, direct: false,
  });
  if (w !== Res.SUCCESS) return EXIT_FAILURE;
  const newVid = await doVdiCreate(ctx, name, header.vdiSize, vid, true, header.nrCopies, header.copyPolicy,
    header.storePolicy, header.blockSizeShift);
  if (ctx.verbose) {
    ctx.out(ctx.raw ? `${newVid.toString(16)} ${vid.toString(16)}\n`
      : `new VID of original VDI: ${newVid.toString(16)}, VDI ID of newly created snapshot: ${vid.toString(16)}\n`);
  }
  return EXIT_SUCCESS;
}

async function vdiClone(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const src = needName(args);
  const dst = args[1];
  if (!dst) fail('Destination VDI name must be specified', EXIT_USAGE);
  const snap = parseSnapshot(o.s as string | undefined);
  if (!snap.id && !snap.tag) fail("Only snapshot VDIs can be cloned\nPlease specify the '-s' option", EXIT_USAGE);
  const base = await openVdi(ctx, src, snap.id, snap.tag, true);
  const h = base.header;
  const noShare = o.n === true;
  const newVid = await doVdiCreate(ctx, dst, h.vdiSize, noShare ? 0 : base.vid, false, h.nrCopies, h.copyPolicy,
    h.storePolicy, h.blockSizeShift);
  if (o.P || noShare) {
    hyperUnsupported(h, 'Copying');
    const vid = await findVdi(ctx, dst, 0, '');
    const nh = (await openVdiById(ctx, vid, false)).header;
    await preallocate(ctx, vid, nh, { index: base.index!, skipUnallocated: !o.P });
  }
  if (ctx.verbose) ctx.out(ctx.raw ? `${newVid.toString(16)}\n` : `VDI ID of newly created clone: ${newVid.toString(16)}\n`);
  return EXIT_SUCCESS;
}

/** do_vdi_delete: LOOKUP, full inode read, index wipe, DEL_VDI. */
async function reclaimsInBackground(ctx: Ctx): Promise<boolean> {
  try {
    return (await ctx.exec({ opcode: Op.RECLAIM_STATUS, dataLength: RECLAIM_HEADER_SIZE })).rsp.result === Res.SUCCESS;
  } catch {
    return false;
  }
}

export async function doVdiDelete(ctx: Ctx, name: string, snapid: number, tag: string): Promise<number> {
  let vid: number;
  try {
    vid = await findVdi(ctx, name, snapid, tag);
  } catch (e) {
    if (e instanceof CliError && e.message) {
      ctx.err(e.message);
      return EXIT_FAILURE;
    }
    throw e;
  }
  let full;
  try {
    full = await readFullInode(ctx, vid, false);
  } catch (e) {
    if (e instanceof ObjectError) {
      ctx.err(e.message);
      ctx.err(`Failed to read an inode of ${name}`);
      return EXIT_FAILURE;
    }
    throw e;
  }
  const h = full.header;
  // A sheep that reclaims deleted VDIs in the background (it answers
  // RECLAIM_STATUS) frees the objects itself after DEL_VDI, with progress
  // in node recovery: the index is not wiped here first, as dog does for
  // upstream sheep, which would make the command last as long as the wipe.
  if (h.storePolicy === 0 && !(await reclaimsInBackground(ctx))) {
    const ids = (full.index as FlatIndex).ids;
    const n = Math.min(nrDataObjs(h), ids.length);
    const win = new Window(WINDOW);
    let i = 0;
    while (i < n && !win.failed) {
      while (i < n && ids[i] === 0) i++;
      if (i >= n) break;
      const start = i;
      let count = 0;
      let end = i;
      while (i < n && count < 128) {
        if (ids[i]) {
          count++;
          end = i + 1;
        }
        i++;
      }
      i = end;
      const len = end - start;
      await win.add(async () => {
        const r = await writeObject(ctx, {
          oid: vidToVdiOid(vid), data: Buffer.alloc(4 * len), offset: SD_INODE_HEADER_SIZE + 4 * start,
          copies: h.nrCopies, copyPolicy: h.copyPolicy, create: false, direct: true,
        });
        if (r !== Res.SUCCESS) throw new CliError(EXIT_FAILURE);
      });
    }
    try {
      await win.drain();
    } catch (e) {
      if (e instanceof CliError) {
        ctx.err(`Failed to remove object of ${name}`);
        return EXIT_FAILURE;
      }
      throw e;
    }
  }
  const r = await ctx.execOrFail(
    { opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE, dataLength: 512, vdi: { snapid } },
    nameTagPayload(name, tag),
  );
  if (r.rsp.result !== Res.SUCCESS) {
    ctx.err(`Failed to delete ${name}: ${resultMessage(r.rsp.result)}`);
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}

async function vdiDelete(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const snap = parseSnapshot(o.s as string | undefined);
  await doVdiDelete(ctx, name, snap.id, snap.tag);
  // dog v1.0 exits 0 even when the VDI is missing or DEL_VDI fails.
  return EXIT_SUCCESS;
}

async function vdiRollback(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const snap = parseSnapshot(o.s as string | undefined);
  if (!snap.id && !snap.tag) fail("Please specify the '-s' option", EXIT_USAGE);
  const s = await openVdi(ctx, name, snap.id, snap.tag, false);
  if (!o.f) {
    await confirm(ctx, 'This operation discards any changes made since the previous\nsnapshot was taken.  Continue? [yes/no]: ');
  }
  if ((await doVdiDelete(ctx, name, 0, '')) !== EXIT_SUCCESS) fail('Failed to delete the current state');
  const h = s.header;
  const newVid = await doVdiCreate(ctx, name, h.vdiSize, s.vid, false, h.nrCopies, h.copyPolicy, h.storePolicy, h.blockSizeShift);
  if (ctx.verbose) ctx.out(ctx.raw ? `${newVid.toString(16)}\n` : `New VDI ID of rollback VDI: ${newVid.toString(16)}\n`);
  return EXIT_SUCCESS;
}

async function vdiResize(ctx: Ctx, args: string[]): Promise<number> {
  const name = needName(args);
  if (!args[1]) fail('Please specify the new size for the VDI', EXIT_USAGE);
  const newSize = sizeArg(args[1]);
  const v = await openVdi(ctx, name, 0, '', false);
  const h = v.header;
  const flatMax = BigInt(objectSize(h)) * BigInt(OLD_MAX_DATA_OBJS);
  if (h.storePolicy === 0 && newSize > flatMax) {
    fail(`New VDI size is too large. This volume's max size is ${flatMax}`, EXIT_USAGE);
  } else if (newSize > BigInt(SD_MAX_VDI_SIZE_HYPER)) {
    fail(`New VDI size is too large. This volume's max size is ${SD_MAX_VDI_SIZE_HYPER}`, EXIT_USAGE);
  }
  if (newSize < h.vdiSize) fail('Shrinking VDIs is not implemented', EXIT_USAGE);
  const raw = Buffer.from(v.raw.subarray(0, SD_INODE_HEADER_SIZE));
  raw.writeBigUInt64LE(newSize, 536);
  const r = await writeObject(ctx, {
    oid: vidToVdiOid(v.vid), data: raw, offset: 0, copies: h.nrCopies, copyPolicy: h.copyPolicy, create: false, direct: true,
  });
  if (r !== Res.SUCCESS) fail('Failed to update an inode header');
  return EXIT_SUCCESS;
}

// ---- list / tree / graph ---------------------------------------------------

async function vdiList(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = args[0];
  const oid = parseOidArg(o.o as string | undefined);
  if (oid !== undefined && !isDataObj(oid)) fail(`${hex16(oid)} is not a data object`);
  if (!ctx.raw && !ctx.json) ctx.out(VDI_LIST_HEADER);
  const vdis = await scanVdis(ctx, true);
  const list = [];
  for (const v of vdis) {
    if (name !== undefined && v.header.name !== name) continue;
    if (oid !== undefined && v.index!.get(dataOidToIdx(oid)) !== oidToVid(oid)) continue;
    const { mine, cow } = statDataObjs(v.vid, v.index!);
    if (ctx.json) {
      const os = 2n ** BigInt(v.header.blockSizeShift || 22);
      list.push({ ...vdiJson(v.vid, v.header), used: bytes(BigInt(mine) * os), shared: bytes(BigInt(cow) * os) });
    } else {
      ctx.out(vdiListLine({ vid: v.vid, header: v.header, mine, cow }, ctx.raw));
    }
  }
  // deleted VDIs whose objects are still being reclaimed: dog's table stays
  // as it is (scripts parse it); a note on stderr, a field in --json (not with -r)
  const reclaims = ctx.raw || name !== undefined || oid !== undefined ? [] : await reclaiming(ctx);
  if (ctx.json) {
    printJson(ctx, { vdis: list, reclaiming: reclaims.map(reclaimJson) });
    return EXIT_SUCCESS;
  }
  for (const e of reclaims) {
    ctx.err(e.by === undefined
      ? `Deleted VDI ${e.vid.toString(16)}: waiting to be reclaimed\n`
      : `Deleted VDI ${e.vid.toString(16)}: ${Math.max(0, e.objectsTotal - e.objectsDone)} of ${e.objectsTotal} objects still to reclaim (by ${e.by})\n`);
  }
  return EXIT_SUCCESS;
}

async function vdiTree(ctx: Ctx): Promise<number> {
  const vdis = await scanVdis(ctx, false);
  if (ctx.json) {
    printJson(ctx, { tree: vdiTreeJson(vdis) });
    return EXIT_SUCCESS;
  }
  ctx.out(vdiTreeText(vdis, Boolean(process.stdout.isTTY)));
  return EXIT_SUCCESS;
}

async function vdiGraph(ctx: Ctx): Promise<number> {
  ctx.out(GRAPH_HEADER);
  const vdis = await scanVdis(ctx, false);
  for (const v of vdis) ctx.out(vdiGraphEntry(v.vid, v.header));
  ctx.out(GRAPH_FOOTER);
  return EXIT_SUCCESS;
}

// ---- read / write ----------------------------------------------------------

function offsetLen(args: string[]): { offset: bigint; total: bigint | undefined } {
  let offset = 0n;
  let total: bigint | undefined;
  if (args[1] !== undefined) offset = sizeArg(args[1]);
  if (args[2] !== undefined) total = sizeArg(args[2]);
  return { offset, total };
}

async function vdiRead(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const { offset: off0, total: want } = offsetLen(args);
  const snap = parseSnapshot(o.s as string | undefined);
  const v = await openVdi(ctx, name, snap.id, snap.tag, true);
  const h = v.header;
  if (h.vdiSize < off0) fail('Read offset is beyond the end of the VDI');
  const os = objectSize(h);
  let total = h.vdiSize - off0;
  if (want !== undefined && want < total) total = want;
  let idx = Number(off0 / BigInt(os));
  let offset = Number(off0 % BigInt(os));
  const prog = new Progress(total);
  const pending: Promise<Buffer>[] = [];
  let done = 0n;
  let issued = 0n;
  const index = v.index!;
  const issue = () => {
    const len = Number(BigInt(os - offset) < total - issued ? BigInt(os - offset) : total - issued);
    const owner = index.get(idx);
    const i = idx, off = offset;
    pending.push(owner
      ? readObject(ctx, vidToDataOid(owner, i), len, off, false)
      : Promise.resolve(Buffer.alloc(len)));
    pending[pending.length - 1].catch(() => undefined);
    issued += BigInt(len);
    offset = 0;
    idx++;
  };
  try {
    while (done < total) {
      while (issued < total && pending.length < WINDOW) issue();
      const buf = await pending.shift()!;
      await ctx.writeData(buf);
      done += BigInt(buf.length);
      prog.update(done);
    }
  } catch (e) {
    if (e instanceof ObjectError) {
      ctx.err(e.message);
      fail('Failed to read VDI');
    }
    throw e;
  }
  prog.finish();
  return EXIT_SUCCESS;
}

async function vdiWrite(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const { offset: off0, total: want } = offsetLen(args);
  const v = await openVdi(ctx, name, 0, '', true);
  const h = v.header;
  const vid = v.vid;
  if (h.vdiSize < off0) fail('Write offset is beyond the end of the VDI');
  const os = objectSize(h);
  let total = h.vdiSize - off0;
  if (want !== undefined && want < total) total = want;
  if (total > 0n) hyperUnsupported(h, 'Writing');
  const index = v.index as FlatIndex;
  let idx = Number(off0 / BigInt(os));
  let offset = Number(off0 % BigInt(os));
  const flags = o.w ? Flag.CMD_CACHE : 0;
  const prog = new Progress(total);
  // Keep a few objects in flight, bounded by bytes too for big object sizes.
  const win = new Window(Math.max(1, Math.min(WINDOW, Math.floor((64 << 20) / os))));
  const reader = stdin();
  let done = 0n;
  while (done < total && !win.failed) {
    const len = Number(BigInt(os - offset) < total - done ? BigInt(os - offset) : total - done);
    const owner = index.get(idx);
    const create = owner === 0 || owner !== vid;
    const cowOid = owner !== 0 && owner !== vid ? vidToDataOid(owner, idx) : 0n;
    let buf = await reader.read(len);
    if (buf.length < len) {
      // Short read: pad the piece with zeros and stop after it (like dog).
      const b = Buffer.alloc(len);
      buf.copy(b);
      buf = b;
      total = done + BigInt(len);
    }
    index.set(idx, vid);
    const i = idx, off = offset;
    await win.add(async () => {
      const r = await writeObject(ctx, {
        oid: vidToDataOid(vid, i), cowOid, data: buf, offset: off, flags, copies: h.nrCopies, copyPolicy: h.copyPolicy,
        create, direct: false,
      });
      if (r !== Res.SUCCESS) throw new CliError(EXIT_FAILURE, 'Failed to write VDI');
      if (create) {
        const s = await setIndex(ctx, vid, i, vid, h.nrCopies, h.copyPolicy, flags, false);
        if (s !== Res.SUCCESS) throw new CliError(EXIT_FAILURE);
      }
    });
    offset += len;
    if (offset === os) {
      offset = 0;
      idx++;
    }
    done += BigInt(len);
    prog.update(done);
  }
  await win.drain();
  prog.finish();
  return EXIT_SUCCESS;
}

// ---- objects ---------------------------------------------------------------

async function objectMap(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const snap = parseSnapshot(o.s as string | undefined);
  const want = parseIndex(o.i as string | undefined);
  const v = await openVdi(ctx, name, snap.id, snap.tag, true);
  if (!ctx.json) ctx.out(OBJECT_MAP_HEADER);
  const objects = [];
  for (const [idx, owner] of v.index!.entries()) {
    if (want !== undefined && idx !== want) continue;
    if (ctx.json) objects.push({ index: idx, vdi_id: owner, oid: hex16(vidToDataOid(owner, idx)) });
    else ctx.out(objectMapLine(idx, owner));
  }
  if (ctx.json) printJson(ctx, { name: v.header.name, vdi_id: v.vid, objects });
  return EXIT_SUCCESS;
}

/** EXIST to every node, then the placement dog expects (json: as a document with `extra` fields). */
async function printObjLocation(ctx: Ctx, oid: bigint, copies: number, extra: Record<string, unknown> = {}): Promise<void> {
  const results = await Promise.all(ctx.nodes.map(async (n) => {
    try {
      return (await ctx.exec({ opcode: Op.EXIST, epoch: ctx.epoch, obj: { oid } }, undefined, ctx.nodeTarget(n))).rsp.result;
    } catch (e) {
      if (e instanceof ConnectionError) return -1;
      throw e;
    }
  }));
  if (ctx.json) {
    printJson(ctx, {
      ...extra, oid: hex16(oid), allocated: true, copies,
      nodes: ctx.nodes.map((n, i) => {
        const r = results[i];
        return {
          ...nodeJson(n, i),
          has_object: r === Res.SUCCESS ? true : r === Res.NO_OBJ ? false : null,
          error: r === Res.SUCCESS || r === Res.NO_OBJ ? null : r === -1 ? 'failed to connect' : resultMessage(r),
        };
      }),
      placement: ctx.ring!.placeOid(oid, copies).map((n) => nodeName(n)),
    });
    return;
  }
  ctx.nodes.forEach((n, i) => {
    const r = results[i];
    const sheep = nodeName(n);
    if (r === Res.SUCCESS) ctx.out(`${sheep} has the object\n`);
    else if (r === Res.NO_OBJ) ctx.out(`${sheep} doesn't have the object\n`);
    else if (r === Res.OLD_NODE_VER || r === Res.NEW_NODE_VER) ctx.err('The node list has changed: please try again');
    else if (r === -1) ctx.err(`${sheep}: failed to connect`);
    else ctx.err(`${sheep}: hit an unexpected error (${resultMessage(r)})`);
  });
  const placed = ctx.ring!.placeOid(oid, copies);
  ctx.out(`\nAccording to sheepdog algorithm, the object should be located at:\n${placed.map(nodeName).join(' ')}\n`);
}

async function objectLocation(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const snap = parseSnapshot(o.s as string | undefined);
  const want = parseIndex(o.i as string | undefined);
  const v = await openVdi(ctx, name, snap.id, snap.tag, true);
  const h = v.header;
  if (want === undefined) {
    if (!ctx.json) ctx.out(`Looking for the inode object 0x${v.vid.toString(16)} with ${ctx.nodes.length} nodes\n\n`);
    await printObjLocation(ctx, vidToVdiOid(v.vid), h.nrCopies, { name: h.name, vdi_id: v.vid, object: 'inode', index: null });
    return EXIT_SUCCESS;
  }
  if (h.storePolicy === 0 && want >= MAX_DATA_OBJS) fail(`The index ${want} is out of range`);
  const owner = v.index!.get(want);
  if (!owner) {
    if (ctx.json) printJson(ctx, { name: h.name, vdi_id: v.vid, object: 'data', index: want, oid: null, allocated: false, copies: h.nrCopies, nodes: [], placement: [] });
    else ctx.out(`The inode object 0x${v.vid.toString(16)} idx ${want} is not allocated\n`);
    return EXIT_SUCCESS;
  }
  const oid = vidToDataOid(owner, want);
  if (!ctx.json) ctx.out(`Looking for the object ${hex16(oid)} (vid 0x${owner.toString(16)} idx ${want}, ${h.nrCopies} copies) with ${ctx.nodes.length} nodes\n\n`);
  await printObjLocation(ctx, oid, h.nrCopies, { name: h.name, vdi_id: owner, object: 'data', index: want });
  return EXIT_SUCCESS;
}

async function vdiTrack(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const snap = parseSnapshot(o.s as string | undefined);
  const want = parseIndex(o.i as string | undefined);
  const oidArg = parseOidArg(o.o as string | undefined);
  const v = await openVdi(ctx, name, snap.id, snap.tag, true);
  const h = v.header;
  let oid: bigint;
  let idx: number;
  let vid: number;
  if (oidArg !== undefined) {
    oid = oidArg;
    vid = oidToVid(oid);
    idx = dataOidToIdx(oid);
  } else if (want !== undefined) {
    const owner = v.index!.get(want);
    if (!owner) {
      if (ctx.json) printJson(ctx, { name: h.name, oid: null, vdi_id: v.vid, index: want, allocated: false, epochs: [] });
      else ctx.out(`The inode object 0x${v.vid.toString(16)} idx ${want} is not allocated\n`);
      return EXIT_SUCCESS;
    }
    oid = vidToDataOid(owner, want);
    vid = owner;
    idx = want;
  } else {
    oid = vidToVdiOid(v.vid);
    vid = v.vid;
    idx = 0;
  }
  const { logs } = await statClusterLogs(ctx);
  if (ctx.json) {
    printJson(ctx, {
      name: h.name, oid: hex16(oid), vdi_id: vid, index: idx, allocated: true,
      epochs: logs.map((log) => {
        const ring = new VnodeRing(log.nodes);
        const copies = Math.min(h.nrCopies, ring.nrZones);
        return { epoch: log.epoch, copies, nodes: ring.placeOid(oid, copies).map((n) => nodeName(n)) };
      }),
    });
    return EXIT_SUCCESS;
  }
  ctx.out(`Tracking the object ${hex16(oid)} (the inode vid 0x${vid.toString(16)} idx ${idx}) with ${ctx.nodes.length} nodes\n`);
  for (let i = logs.length - 1; i >= 0; i--) {
    const log = logs[i];
    const ring = new VnodeRing(log.nodes);
    const copies = Math.min(h.nrCopies, ring.nrZones);
    ctx.out(`\nobj ${hex16(oid)} locations at epoch ${log.epoch}, copies = ${copies}\n`);
    ctx.out('---------------------------------------------------\n');
    for (const n of ring.placeOid(oid, copies)) ctx.out(`${nodeName(n)}\n`);
  }
  return EXIT_SUCCESS;
}

// ---- attributes ------------------------------------------------------------

async function vdiAttr(ctx: Ctx, name: string, key: string, value: Buffer, flags: number) {
  const rec = encodeAttr({ name, tag: '', ctime: 0n, snapId: 0, key, value });
  const r = await ctx.execOrFail(
    { opcode: Op.GET_VDI_ATTR, flags: Flag.CMD_WRITE | flags, dataLength: SD_ATTR_OBJ_SIZE, vdi: { snapid: 0 } },
    rec,
  );
  return { result: r.rsp.result, vid: r.rsp.vdi.vdiId, attrId: r.rsp.vdi.attrId };
}

async function vdiSetattr(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const key = args[1];
  if (!key) fail('Please specify the attribute key', EXIT_USAGE);
  let value: Buffer | undefined = args[2] !== undefined ? Buffer.from(args[2]) : undefined;
  if (value === undefined && !o.d) value = await stdin().read(65536);
  if (value) {
    const nul = value.indexOf(0);
    if (nul >= 0) value = value.subarray(0, nul); // strlen(), as dog does
  }
  let flags = 0;
  if (!o.d) flags |= Flag.CMD_CREAT;
  if (o.x) flags |= Flag.CMD_EXCL;
  if (o.d) flags |= Flag.CMD_DEL;
  const { result } = await vdiAttr(ctx, name, key, value ?? Buffer.alloc(0), flags);
  switch (result) {
    case Res.SUCCESS: return EXIT_SUCCESS;
    case Res.VDI_EXIST: fail(`The attribute '${key}' already exists`, EXIT_EXISTS);
    case Res.NO_OBJ: fail(`Attribute '${key}' not found`, EXIT_MISSING);
    case Res.NO_VDI: fail('VDI not found', EXIT_MISSING);
    default: fail(`Failed to set attribute: ${resultMessage(result)}`);
  }
}

async function vdiGetattr(ctx: Ctx, args: string[]): Promise<number> {
  const name = needName(args);
  const key = args[1];
  if (!key) fail('Please specify the attribute key', EXIT_USAGE);
  const { result, vid, attrId } = await vdiAttr(ctx, name, key, Buffer.alloc(0), 0);
  if (result === Res.NO_OBJ) fail(`Attribute '${key}' not found`, EXIT_MISSING);
  if (result === Res.NO_VDI) fail('VDI not found', EXIT_MISSING);
  if (result !== Res.SUCCESS) fail(`Failed to find attribute ${key}: ${resultMessage(result)}`);
  let rec: Buffer;
  try {
    rec = await readObject(ctx, vidToAttrOid(vid, attrId), SD_ATTR_OBJ_SIZE, 0, true);
  } catch (e) {
    if (e instanceof ObjectError) fail(`Failed to read attribute oid: ${resultMessage(e.result)}`);
    throw e;
  }
  await ctx.writeData(decodeAttr(rec).value);
  return EXIT_SUCCESS;
}

// ---- check -----------------------------------------------------------------

/** vdi check of one VDI; prints "fixed ..." lines and "finish check&repair". */
export async function checkVdi(ctx: Ctx, name: string, snapid: number, tag: string, existOnly: boolean): Promise<number> {
  const v = await openVdi(ctx, name, snapid, tag, true);
  const h = v.header;
  const oids: bigint[] = [];
  for (const [idx, owner] of v.index!.entries()) oids.push(vidToDataOid(owner, idx));
  oids.push(vidToVdiOid(v.vid));
  const ring = ctx.ring!;
  const copies = Math.min(h.nrCopies, ring.nrZones);
  const ec = h.copyPolicy !== 0;
  // dog's words (A.12): with fewer zones than D+P some strips have no holder to compare
  if (ec && !existOnly && ring.nrZones < h.nrCopies) fail('ABORT: Not enough active zones for consistency-checking erasure coded VDI');

  if (existOnly) {
    const perNode = new Map<SdNode, bigint[]>();
    // a holder of an EC data object keeps only its own strip, which OIDS_EXIST
    // (a plain lookup of the oid) does not see: EXIST with the policy asks for it
    const stripped = new Map<SdNode, bigint[]>();
    for (const oid of oids) for (const n of ring.placeOid(oid, copies)) {
      const m = ec && isDataObj(oid) ? stripped : perNode;
      if (!m.has(n)) m.set(n, []);
      m.get(n)!.push(oid);
    }
    let missing = 0;
    for (const n of ctx.nodes) {
      for (const oid of stripped.get(n) ?? []) {
        const r = await ctx.execOrFail(
          { opcode: Op.EXIST, epoch: ctx.epoch, obj: { oid, copies: h.nrCopies, copyPolicy: h.copyPolicy } }, undefined, ctx.nodeTarget(n));
        if (r.rsp.result === Res.SUCCESS) continue;
        if (r.rsp.result !== Res.NO_OBJ) fail(`${nodeName(n)}: ${resultMessage(r.rsp.result)}`);
        ctx.out(`${hex16(oid)} is missing on ${nodeName(n)}\n`);
        missing++;
      }
      const list = perNode.get(n);
      if (!list) continue;
      const payload = Buffer.alloc(8 * list.length);
      list.forEach((x, i) => payload.writeBigUInt64LE(x, 8 * i));
      const r = await ctx.execOrFail(
        { opcode: Op.OIDS_EXIST, flags: Flag.CMD_WRITE | Flag.CMD_PIGGYBACK, dataLength: payload.length },
        payload, ctx.nodeTarget(n),
      );
      if (r.rsp.result === Res.SUCCESS) continue;
      if (r.rsp.result !== Res.NO_OBJ) fail(`${nodeName(n)}: ${resultMessage(r.rsp.result)}`);
      for (let off = 0; off + 8 <= r.data.length; off += 8) {
        ctx.out(`${hex16(r.data.readBigUInt64LE(off))} is missing on ${nodeName(n)}\n`);
        missing++;
      }
    }
    return missing ? EXIT_FAILURE : EXIT_SUCCESS;
  }

  const prog = new Progress(BigInt(oids.length) * BigInt(objectSize(h)));
  const win = new Window(WINDOW);
  const lines: string[][] = oids.map(() => []);
  let done = 0n;
  const code = ec ? decodeEcPolicy(h.copyPolicy) : undefined;
  if (ec && !code) fail(`${name} has an invalid copy policy 0x${h.copyPolicy.toString(16)}`);
  /**
   * One striped object as dog checks it (A.12): every strip from its holder
   * (READ_PEER by strip index); all there: the parity re-derived from the
   * data must match; up to P missing: decoded from the others and written
   * back; more: lost.
   */
  const checkStrips = async (i: number, d: number, p: number) => {
    const oid = oids[i];
    const nodes = ring.placeOid(oid, d + p);
    const len = objectSize(h) / d;
    const obj = (ecIndex: number) => ({ oid, copies: h.nrCopies, copyPolicy: h.copyPolicy, ecIndex, offset: 0 });
    const res = await Promise.all(nodes.map((n, k) =>
      ctx.execOrFail({ opcode: Op.READ_PEER, epoch: ctx.epoch, dataLength: len, obj: obj(k) }, undefined, ctx.nodeTarget(n))));
    const strips = res.map((r) => (r.rsp.result === Res.SUCCESS && r.data.length === len ? r.data : undefined));
    let unsure = false;
    res.forEach((r, k) => {
      if (r.rsp.result === Res.NO_OBJ) return;
      if (r.rsp.result !== Res.SUCCESS) lines[i].push(`\x00failed to read strip ${k} of ${hex16(oid)} on ${nodeName(nodes[k])}: ${resultMessage(r.rsp.result)}`);
      else if (r.data.length !== len) lines[i].push(`\x00strip ${k} of ${hex16(oid)} on ${nodeName(nodes[k])} is ${r.data.length} bytes, not ${len}`);
      else return;
      unsure = true;
    });
    // a strip that could not be read may still be there: nothing is rewritten over it
    if (unsure) return;
    const missing = strips.flatMap((x, k) => (x ? [] : [k]));
    if (!missing.length) {
      const parity = ecEncode(strips.slice(0, d) as Buffer[], p);
      if (parity.some((x, k) => !x.equals(strips[d + k]!))) lines[i].push(`\x00object ${hex16(oid)} is inconsistent`);
      return;
    }
    if (missing.length > p) {
      lines[i].push(`\x00failed to rebuild object ${hex16(oid)}. ${missing.length} copies get lost, more than ${p}`);
      return;
    }
    const have = new Map<number, Buffer>();
    strips.forEach((x, k) => x && have.set(k, x));
    const data = ecDecode(d, have);
    const all = [...data, ...ecEncode(data, p)];
    for (const m of missing) {
      const w = await ctx.execOrFail(
        { opcode: Op.CREATE_AND_WRITE_PEER, flags: Flag.CMD_WRITE, epoch: ctx.epoch, dataLength: len, obj: obj(m) },
        all[m], ctx.nodeTarget(nodes[m]),
      );
      if (w.rsp.result !== Res.SUCCESS) lines[i].push(`\x00failed to write strip ${m} of ${hex16(oid)} on ${nodeName(nodes[m])}: ${resultMessage(w.rsp.result)}`);
      else lines[i].push(`fixed missing ${hex16(oid)}, copy index ${m}`);
    }
  };
  const checkOne = async (i: number) => {
    const oid = oids[i];
    // the inode of an EC VDI is a replica, of D+P full copies (A.3)
    if (code && isDataObj(oid)) return checkStrips(i, code.d, code.p);
    const nodes = ring.placeOid(oid, copies);
    const res = await Promise.all(nodes.map((n) =>
      ctx.execOrFail({ opcode: Op.GET_HASH, epoch: ctx.epoch, obj: { oid, tgtEpoch: ctx.epoch } }, undefined, ctx.nodeTarget(n))));
    const present = res.map((r) => (r.rsp.result === Res.SUCCESS ? r.rsp.hash.toString('hex') : undefined));
    for (const r of res) {
      if (r.rsp.result !== Res.SUCCESS && r.rsp.result !== Res.NO_OBJ) {
        lines[i].push(`\x00failed to check ${hex16(oid)}: ${resultMessage(r.rsp.result)}`);
      }
    }
    const counts = new Map<string, number>();
    for (const p of present) if (p) counts.set(p, (counts.get(p) ?? 0) + 1);
    if (counts.size === 0) {
      lines[i].push(`\x00no node has ${hex16(oid)}`);
      return;
    }
    let best = '';
    let bestN = 0;
    for (const [k, c] of counts) if (c > bestN) { best = k; bestN = c; }
    const good = nodes[present.indexOf(best)];
    for (let j = 0; j < nodes.length; j++) {
      if (present[j] === best) continue;
      const r = await ctx.execOrFail(
        { opcode: Op.REPAIR_REPLICA, epoch: ctx.epoch, forw: { oid, addr: good.addr, port: good.port } },
        undefined, ctx.nodeTarget(nodes[j]),
      );
      if (r.rsp.result !== Res.SUCCESS) {
        lines[i].push(`\x00failed to repair ${hex16(oid)} on ${nodeName(nodes[j])}: ${resultMessage(r.rsp.result)}`);
      } else {
        lines[i].push(present[j] === undefined ? `fixed missing ${hex16(oid)}` : `fixed replica ${hex16(oid)}`);
      }
    }
  };
  for (let i = 0; i < oids.length && !win.failed; i++) {
    await win.add(async () => {
      await checkOne(i);
      done += BigInt(objectSize(h));
      prog.update(done);
    });
  }
  await win.drain();
  prog.finish();
  let bad = false;
  for (const l of lines) for (const s of l) {
    if (s.startsWith('\x00')) {
      ctx.err(s.slice(1));
      bad = true;
    } else ctx.out(s + '\n');
  }
  ctx.out(`finish check&repair ${name}\n`);
  return bad ? EXIT_FAILURE : EXIT_SUCCESS;
}

async function vdiCheck(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const snap = parseSnapshot(o.s as string | undefined);
  return checkVdi(ctx, name, snap.id, snap.tag, o.e === true);
}

// ---- locks -----------------------------------------------------------------

interface LockRec {
  vid: number;
  state: number;
  owner: string;
  participants: string[];
}

async function getVdiLocks(ctx: Ctx): Promise<LockRec[]> {
  const r = await ctx.execOrFail({ opcode: Op.GET_VDI_COPIES, dataLength: 512 * SD_VDI_STATE_SIZE });
  if (r.rsp.result !== Res.SUCCESS) fail(`Failed to get VDI states: ${resultMessage(r.rsp.result)}`);
  const out: LockRec[] = [];
  const b = r.data;
  const nid = (off: number) => `${addrToString(b.subarray(off, off + 16))}:${b.readUInt16LE(off + 16)}`;
  for (let off = 0; off + SD_VDI_STATE_SIZE <= b.length; off += SD_VDI_STATE_SIZE) {
    const nr = Math.min(31, b.readUInt32LE(off + 60));
    const participants: string[] = [];
    for (let i = 0; i < nr; i++) participants.push(nid(off + 188 + 40 * i));
    out.push({ vid: b.readUInt32LE(off), state: b.readUInt32LE(off + 16), owner: nid(off + 20), participants });
  }
  return out;
}

const LOCKED = 2;
const SHARED = 3;

async function lockList(ctx: Ctx): Promise<number> {
  const locks = await getVdiLocks(ctx);
  const vdis = await scanVdis(ctx, false);
  if (ctx.json) {
    const list = [];
    for (const v of vdis) {
      const l = locks.find((x) => x.vid === v.vid);
      if (!l || (l.state !== LOCKED && l.state !== SHARED)) continue;
      list.push({ ...vdiJson(v.vid, v.header), state: l.state === LOCKED ? 'locked' : 'shared', owners: l.state === LOCKED ? [l.owner] : l.participants });
    }
    printJson(ctx, { locks: list });
    return EXIT_SUCCESS;
  }
  if (!ctx.raw) ctx.out(LOCK_LIST_HEADER);
  for (const v of vdis) {
    const l = locks.find((x) => x.vid === v.vid);
    if (!l || (l.state !== LOCKED && l.state !== SHARED)) continue;
    const owners = l.state === LOCKED ? l.owner : l.participants.join(', ');
    ctx.out(lockListLine(v.header.name, isSnapshot(v.header) ? v.header.snapId : 0, v.vid, v.header.tag, owners, ctx.raw));
  }
  return EXIT_SUCCESS;
}

async function lockUnlock(ctx: Ctx, args: string[]): Promise<number> {
  const name = args[0];
  if (!name) throw new CliError(EXIT_USAGE);
  const vdis = await scanVdis(ctx, false);
  const locks = await getVdiLocks(ctx);
  const v = vdis.find((x) => x.header.name === name && !isSnapshot(x.header));
  if (!v) fail(`VDI ${name} is not found`);
  const l = locks.find((x) => x.vid === v.vid);
  if (!l || (l.state !== LOCKED && l.state !== SHARED)) fail(`VDI ${name} is not locked`);
  const ok = await ctx.lightReq({ opcode: Op.RELEASE_VDI, vdi: { baseVdiId: v.vid, type: l.state === SHARED ? 1 : 0 } });
  if (!ok) fail(`Failed to unlock VDI ${name}`);
  return EXIT_SUCCESS;
}

// ---- alter-copy ------------------------------------------------------------

async function vdiAlterCopy(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  if (!o.c) fail('Please specify the redundancy level with -c', EXIT_USAGE);
  const cp = parseCopies(o.c as string);
  if (cp.policy) fail('Changing redundancy level of erasure coded vdi is not supported yet.', EXIT_USAGE);
  if (cp.copies > ctx.nodes.length) {
    fail(`There are not enough nodes(${ctx.nodes.length}) to hold the copies(${cp.copies})`);
  }
  const v = await openVdi(ctx, name, 0, '', false);
  const h = v.header;
  if (h.copyPolicy) fail(`${name}'s copy policy is erasure code, changing it is not supported yet.`);
  if (h.nrCopies === cp.copies) {
    ctx.out(`The VDI's redundancy level is already ${cp.copies}\n`);
    return EXIT_SUCCESS;
  }
  const vdis = await scanVdis(ctx, false);
  if (h.parentVdiId !== 0 || vdis.some((x) => x.header.parentVdiId === v.vid)) {
    fail('Only VDIs without snapshots and clones can change their redundancy level');
  }
  await confirm(ctx,
    "    __\n   ()'`;\n   /\\|`  Caution! Changing VDI's redundancy level will affect\n" +
    '  /  |   the VDI itself only and trigger recovery.\n(/_)_|_  Are you sure you want to continue? [yes/no]: ');
  const raw = Buffer.from(v.raw.subarray(0, SD_INODE_HEADER_SIZE));
  raw[554] = cp.copies;
  const w = await writeObject(ctx, {
    oid: vidToVdiOid(v.vid), data: raw, offset: 0, copies: h.nrCopies, copyPolicy: h.copyPolicy, create: false, direct: true,
  });
  if (w !== Res.SUCCESS) fail('Failed to update an inode header');
  const ok = await ctx.lightReq({
    opcode: Op.ALTER_VDI_COPY, vdiState: { newVid: v.vid, copies: cp.copies, copyPolicy: 0, blockSizeShift: h.blockSizeShift },
  });
  if (!ok) fail(`Failed to change the redundancy level of ${name}`);
  return EXIT_SUCCESS;
}

// ---- libvirt ---------------------------------------------------------------

/** HOST:PORT or [V6]:PORT. */
function parseHostPort(v: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d+)$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) fail(`Invalid NBD address '${v}' (expected HOST:PORT)`, EXIT_USAGE);
  return { host: m[1] ?? m[2], port };
}

async function vdiLibvirtXml(ctx: Ctx, args: string[], o: Opts): Promise<number> {
  const name = needName(args);
  const snap = parseSnapshot(o.s as string | undefined);
  const target = (o.t as string | undefined) ?? 'vda';
  if (!/^[a-z][a-z0-9]*$/.test(target)) fail(`Invalid target device '${target}'`, EXIT_USAGE);
  const nbd = typeof o.N === 'string' ? parseHostPort(o.N) : undefined;
  const vid = await findVdi(ctx, name, snap.id, snap.tag);
  ctx.out(libvirtDiskXml({
    name, snapshot: snap.tag || (snap.id ? String(snap.id) : undefined), vdiId: vid, target,
    ...(nbd ? { protocol: 'nbd', ...nbd } : { protocol: 'sheepdog', host: ctx.host, port: ctx.port }),
  }));
  return EXIT_SUCCESS;
}

// ---- cache -----------------------------------------------------------------

async function cacheOp(ctx: Ctx, args: string[], o: Opts, opcode: number, what: string): Promise<number> {
  const name = needName(args);
  const snap = parseSnapshot(o.s as string | undefined);
  const vid = await findVdi(ctx, name, snap.id, snap.tag);
  const ok = await ctx.lightReq({ opcode, obj: { oid: vidToVdiOid(vid) } });
  if (!ok) fail(`Failed to ${what} the cache of ${name}`);
  return EXIT_SUCCESS;
}

async function cachePurgeAll(ctx: Ctx): Promise<number> {
  if (!(await ctx.lightReq({ opcode: Op.CACHE_PURGE }))) fail('Failed to purge the cache');
  return EXIT_SUCCESS;
}

async function cacheInfo(ctx: Ctx): Promise<number> {
  const r = await ctx.execOrFail({ opcode: Op.GET_CACHE_INFO, dataLength: CACHE_INFO_HEADER_SIZE + CACHE_INFO_RECORD_SIZE * 16384 });
  if (r.rsp.result !== Res.SUCCESS) fail(`failed to get cache infomation: ${resultMessage(r.rsp.result)}`);
  const info = decodeCacheInfo(r.data);
  if (!(info.flags & CacheInfoFlag.ENABLED)) fail('The object cache is not enabled on this node (start sheep with -w)');
  const size = (n: bigint) => sizeToStr(n, ctx.raw);
  if (!ctx.json) ctx.out('Name\tTag\tTotal\tDirty\n');
  const list = [];
  for (const v of info.vdis) {
    let name = `(vid ${v.vid.toString(16)})`;
    let tag = '';
    let os = 1n << 22n;
    try {
      const { header } = await readInodeHeader(ctx, v.vid);
      name = header.name;
      tag = header.tag;
      os = BigInt(objectSize(header));
    } catch { /* deleted meanwhile */ }
    if (ctx.json) list.push({ name, vdi_id: v.vid, tag, total: bytes(BigInt(v.objects) * os), dirty: bytes(BigInt(v.dirty) * os), objects: v.objects, dirty_objects: v.dirty });
    else ctx.out(`${name}\t${tag}\t${size(BigInt(v.objects) * os)}\t${size(BigInt(v.dirty) * os)}\n`);
  }
  if (ctx.json) {
    printJson(ctx, { vdis: list, size: bytes(info.size), used: bytes(info.used), directio: (info.flags & CacheInfoFlag.DIRECTIO) !== 0, hits: bytes(info.hits), misses: bytes(info.misses) });
    return EXIT_SUCCESS;
  }
  ctx.out(`\nCache size ${size(info.size)}, used ${size(info.used)}, ${info.flags & CacheInfoFlag.DIRECTIO ? 'directio' : 'non-directio'}\n`);
  return EXIT_SUCCESS;
}

// ---- table -----------------------------------------------------------------

export const vdiCommands: SubCommand[] = [
  { name: 'check', arg: '<vdiname>', opts: 'seaph', desc: "check and repair image's consistency", needNodeList: true, needArg: true, run: vdiCheck },
  { name: 'create', arg: '<vdiname> <size>', opts: 'Pycaphrvz', desc: 'create an image', needNodeList: true, needArg: true, run: vdiCreate },
  { name: 'snapshot', arg: '<vdiname>', opts: 'saphrvR', desc: 'create a snapshot', needArg: true, run: vdiSnapshot },
  { name: 'clone', arg: '<src vdi> <dst vdi>', opts: 'sPnaphrv', desc: 'clone an image', needArg: true, run: vdiClone },
  { name: 'delete', arg: '<vdiname>', opts: 'saph', desc: 'delete an image', needArg: true, run: vdiDelete },
  { name: 'rollback', arg: '<vdiname>', opts: 'saphfrv', desc: 'rollback to a snapshot', needArg: true, run: vdiRollback },
  { name: 'list', arg: '[vdiname]', opts: 'aprho', desc: 'list images', run: vdiList, json: true },
  { name: 'tree', opts: 'aph', desc: 'show images in tree view format', run: (c) => vdiTree(c), json: true },
  { name: 'graph', opts: 'aph', desc: 'show images in Graphviz dot format', run: (c) => vdiGraph(c) },
  {
    name: 'object', arg: '<vdiname>', opts: 'isaph', desc: 'show object information in the image', needArg: true,
    sub: [
      { name: 'location', desc: 'show object location information', needNodeList: true, needArg: true, run: objectLocation, json: true },
      { name: 'map', desc: 'show object map information', needArg: true, run: objectMap, json: true },
    ],
  },
  { name: 'track', arg: '<vdiname>', opts: 'isapho', desc: 'show the object epoch trace in the image', needNodeList: true, needArg: true, run: vdiTrack, json: true },
  { name: 'setattr', arg: '<vdiname> <key> [value]', opts: 'dxaph', desc: 'set a VDI attribute', needArg: true, run: vdiSetattr },
  { name: 'getattr', arg: '<vdiname> <key>', opts: 'aph', desc: 'get a VDI attribute', needArg: true, run: vdiGetattr },
  { name: 'resize', arg: '<vdiname> <new size>', opts: 'aph', desc: 'resize an image', needArg: true, run: vdiResize },
  { name: 'read', arg: '<vdiname> [<offset> [<len>]]', opts: 'saph', desc: 'read data from an image', needArg: true, run: vdiRead },
  { name: 'write', arg: '<vdiname> [<offset> [<len>]]', opts: 'apwh', desc: 'write data to an image', needArg: true, run: vdiWrite },
  {
    name: 'backup', arg: '<vdiname> <backup>', opts: 'sFaph', desc: 'create an incremental backup between two snapshots',
    needNodeList: true, needArg: true, run: (c, a, o) => vdiBackup(c, a, o),
  },
  {
    name: 'restore', arg: '<vdiname> <backup>', opts: 'sfaph', desc: 'restore snapshot images from a backup',
    needNodeList: true, needArg: true, run: (c, a, o) => vdiRestore(c, a, o),
  },
  {
    name: 'cache', arg: '<vdiname>', opts: 'saph', desc: "Run 'dog vdi cache' for more information", needArg: true,
    sub: [
      { name: 'flush', desc: 'flush the cache of the vdi specified.', needArg: true, run: (c, a, o) => cacheOp(c, a, o, Op.FLUSH_VDI, 'flush') },
      { name: 'delete', desc: 'delete the cache of the vdi specified (on the sheep at -a/-p).', needArg: true, run: (c, a, o) => cacheOp(c, a, o, Op.DELETE_CACHE, 'delete') },
      { name: 'info', desc: 'show usage of the cache', run: (c) => cacheInfo(c), json: true },
      { name: 'purge', desc: 'flush and drop the cache of the vdi specified (all vdis without a name).', run: (c, a, o) => (a.length ? cacheOp(c, a, o, Op.CACHE_PURGE, 'purge') : cachePurgeAll(c)) },
    ],
  },
  { name: 'alter-copy', arg: '<vdiname>', opts: 'caph', desc: "set the vdi's redundancy level", needNodeList: true, needArg: true, run: vdiAlterCopy },
  { name: 'libvirt-xml', arg: '<vdiname>', opts: 'sNtaph', desc: 'print a libvirt <disk> element for the image', needArg: true, run: vdiLibvirtXml },
  {
    name: 'lock', opts: 'aprh', desc: "See 'dog vdi lock' for more information", needArg: true,
    sub: [
      { name: 'list', desc: 'list locked VDIs', run: (c) => lockList(c), json: true },
      { name: 'unlock', desc: 'unlock locked VDI forcibly', needArg: true, run: (c, a) => lockUnlock(c, a) },
    ],
  },
];
for (const c of vdiCommands) c.options = vdiOptions;

/** vdi_parser(): values that dog checks while parsing the options. */
export function vdiParser(o: Opts): void {
  if (typeof o.i === 'string') parseIndex(o.i);
  if (typeof o.s === 'string') parseSnapshot(o.s);
  if (typeof o.c === 'string') parseCopies(o.c);
  if (typeof o.o === 'string') parseOidArg(o.o);
  if (typeof o.z === 'string') parseShift(o.z);
}

