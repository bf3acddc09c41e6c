// The cluster snapshot repository of `dog cluster snapshot` (farm-and-backup.md
// A.3-A.6), byte for byte: a content-addressed directory of SHA-1-named files
// (objects/XX/<38 hex>), and the snapshot log `user_snap` (a 32-byte header,
// then 296-byte records). Content files are slices of objects (128 KiB),
// slice indexes (20-byte SHA-1s) and trunks (32-byte entries). Integers are
// little-endian. The codecs are pure; FarmRepo does the file work.
import { promises as fsp, constants as FS } from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';

export const FARM_MAGIC = 0xfee1c001;
export const FARM_VERSION = 1;
export const FARM_LOG_HEADER_SIZE = 32;
export const FARM_LOG_RECORD_SIZE = 296;
export const FARM_TAG_SIZE = 256;
export const FARM_TRUNK_ENTRY_SIZE = 32;
export const FARM_SHA1_SIZE = 20;
/** Writers cut objects into slices of this size (readers do not depend on it). */
export const FARM_SLICE_SIZE = 128 * 1024;

// ---- user_snap -----------------------------------------------------------------

export interface FarmLogHeader {
  magic: number;
  version: number;
  copies: number;
  copyPolicy: number;
  blockSizeShift: number;
}

export function encodeFarmLogHeader(h: Omit<FarmLogHeader, 'magic' | 'version'> & Partial<FarmLogHeader>): Buffer {
  const b = Buffer.alloc(FARM_LOG_HEADER_SIZE); // reserved bytes 11-31: zeros
  b.writeUInt32LE((h.magic ?? FARM_MAGIC) >>> 0, 0);
  b.writeUInt32LE((h.version ?? FARM_VERSION) >>> 0, 4);
  b.writeUInt8(h.copies & 0xff, 8);
  b.writeUInt8(h.copyPolicy & 0xff, 9);
  b.writeUInt8(h.blockSizeShift & 0xff, 10);
  return b;
}

export function decodeFarmLogHeader(b: Buffer): FarmLogHeader {
  if (b.length < FARM_LOG_HEADER_SIZE) throw new RangeError('the snapshot log header is 32 bytes');
  return { magic: b.readUInt32LE(0), version: b.readUInt32LE(4), copies: b[8], copyPolicy: b[9], blockSizeShift: b[10] };
}

export interface FarmLogRecord {
  idx: number;
  tag: string;
  /** seconds since the epoch */
  time: bigint;
  /** SHA-1 of the snapshot's trunk file (20 bytes) */
  trunk: Buffer;
}

export function encodeFarmLogRecord(r: FarmLogRecord): Buffer {
  const b = Buffer.alloc(FARM_LOG_RECORD_SIZE);
  b.writeUInt32LE(r.idx >>> 0, 0);
  // the tag is kept to 255 bytes and a NUL; padding at 260 and 292 stays zero
  Buffer.from(r.tag, 'utf8').subarray(0, FARM_TAG_SIZE - 1).copy(b, 4);
  b.writeBigUInt64LE(r.time, 264);
  if (r.trunk.length !== FARM_SHA1_SIZE) throw new RangeError('a trunk SHA-1 is 20 bytes');
  r.trunk.copy(b, 272);
  return b;
}

export function decodeFarmLogRecord(b: Buffer, off = 0): FarmLogRecord {
  const tagBytes = b.subarray(off + 4, off + 4 + FARM_TAG_SIZE);
  const nul = tagBytes.indexOf(0);
  return {
    idx: b.readUInt32LE(off),
    tag: tagBytes.subarray(0, nul < 0 ? FARM_TAG_SIZE : nul).toString('utf8'),
    time: b.readBigUInt64LE(off + 264),
    trunk: Buffer.from(b.subarray(off + 272, off + 292)),
  };
}

/** Why a snapshot log cannot be read (dog's own sentences, farm-and-backup.md A.4). */
export class FarmError extends Error {}

export interface FarmLog {
  /** undefined: the log is empty (no snapshot yet) */
  header?: FarmLogHeader;
  records: FarmLogRecord[];
}

/** Parse a whole user_snap: empty = no snapshots; a trailing partial record is ignored (as dog does). */
export function parseFarmLog(b: Buffer): FarmLog {
  if (b.length === 0) return { records: [] };
  if (b.length < FARM_LOG_HEADER_SIZE) throw new FarmError(`failed to read log header, Success, ret = ${b.length}`);
  const header = decodeFarmLogHeader(b);
  if (header.magic !== FARM_MAGIC) throw new FarmError('magic number mismatch');
  const n = Math.floor((b.length - FARM_LOG_HEADER_SIZE) / FARM_LOG_RECORD_SIZE);
  const records: FarmLogRecord[] = [];
  for (let i = 0; i < n; i++) records.push(decodeFarmLogRecord(b, FARM_LOG_HEADER_SIZE + i * FARM_LOG_RECORD_SIZE));
  return { header, records };
}

/**
 * TAG|IDX as dog's load/show parse it: strtol(base 10); the first record whose
 * idx equals that number or whose tag equals the whole argument.
 */
export function findFarmRecord(records: FarmLogRecord[], arg: string): FarmLogRecord | undefined {
  const m = /^\s*([+-]?\d+)/.exec(arg);
  const idx = m ? Number(m[1]) : 0;
  return records.find((r) => r.idx === idx || r.tag === arg);
}

/** dog's save rule: a tag strtol() consumes any of is refused. */
export const farmTagStartsWithNumber = (tag: string): boolean => /^\s*[+-]?\d/.test(tag);

// ---- trunk and slice index -------------------------------------------------------

export interface FarmTrunkEntry {
  oid: bigint;
  copies: number;
  copyPolicy: number;
  blockSizeShift: number;
  /** SHA-1 of the object's slice index */
  sha1: Buffer;
}

export function encodeFarmTrunk(entries: FarmTrunkEntry[]): Buffer {
  const b = Buffer.alloc(entries.length * FARM_TRUNK_ENTRY_SIZE);
  entries.forEach((e, i) => {
    const o = i * FARM_TRUNK_ENTRY_SIZE;
    b.writeBigUInt64LE(e.oid, o);
    b.writeUInt8(e.copies & 0xff, o + 8);
    b.writeUInt8(e.copyPolicy & 0xff, o + 9);
    b.writeUInt8(e.blockSizeShift & 0xff, o + 10);
    if (e.sha1.length !== FARM_SHA1_SIZE) throw new RangeError('a SHA-1 is 20 bytes');
    e.sha1.copy(b, o + 12);
  });
  return b;
}

/** Entries of a trunk file; a size that is not a multiple of 32 is damage. */
export function decodeFarmTrunk(b: Buffer): FarmTrunkEntry[] {
  if (b.length % FARM_TRUNK_ENTRY_SIZE) throw new FarmError(`a trunk of ${b.length} bytes is not made of 32-byte entries`);
  const out: FarmTrunkEntry[] = [];
  for (let o = 0; o < b.length; o += FARM_TRUNK_ENTRY_SIZE) {
    out.push({
      oid: b.readBigUInt64LE(o), copies: b[o + 8], copyPolicy: b[o + 9], blockSizeShift: b[o + 10],
      sha1: Buffer.from(b.subarray(o + 12, o + 32)),
    });
  }
  return out;
}

export const encodeFarmSliceIndex = (sha1s: Buffer[]): Buffer => Buffer.concat(sha1s);

export function decodeFarmSliceIndex(b: Buffer): Buffer[] {
  if (b.length % FARM_SHA1_SIZE) throw new FarmError(`a slice index of ${b.length} bytes is not made of 20-byte SHA-1s`);
  const out: Buffer[] = [];
  for (let o = 0; o < b.length; o += FARM_SHA1_SIZE) out.push(Buffer.from(b.subarray(o, o + FARM_SHA1_SIZE)));
  return out;
}

export const sha1Of = (b: Buffer): Buffer => createHash('sha1').update(b).digest();

/** FARM_READ carries a SHA-1 in the object request fields oid, cow_oid and offset (8 + 8 + 4 bytes). */
export function sha1ToObjFields(sha1: Buffer): { oid: bigint; cowOid: bigint; offset: number } {
  return { oid: sha1.readBigUInt64LE(0), cowOid: sha1.readBigUInt64LE(8), offset: sha1.readUInt32LE(16) };
}

export function objFieldsToSha1(o: { oid: bigint; cowOid: bigint; offset: number }): Buffer {
  const b = Buffer.alloc(20);
  b.writeBigUInt64LE(o.oid, 0);
  b.writeBigUInt64LE(o.cowOid, 8);
  b.writeUInt32LE(o.offset >>> 0, 16);
  return b;
}

/** A repository in figures: bytes of objects its snapshots hold, content files and bytes stored. */
export interface FarmStat {
  snapshots: number;
  logical: number;
  files: number;
  stored: number;
}

/** `N snapshot(s) of L bytes of objects stored in F content file(s) of S bytes: de-duplication ratio R` */
export function farmStatText(st: FarmStat): string {
  const ratio = st.stored ? (st.logical / st.stored).toFixed(2) : '-';
  return `${st.snapshots} snapshot(s) of ${st.logical} bytes of objects stored in ${st.files} content file(s) of ${st.stored} bytes: ` +
    `de-duplication ratio ${ratio}`;
}

// ---- the repository on disk ------------------------------------------------------

/**
 * A repository directory. Content files are written once (an existing file
 * counts as written: de-duplication) and always checked against their name
 * when read.
 */
export class FarmRepo {
  readonly logFile: string;
  readonly objDir: string;
  /** content bytes written by this process (not counting de-duplicated ones) */
  bytesWritten = 0;

  constructor(readonly dir: string) {
    this.logFile = path.join(dir, 'user_snap');
    this.objDir = path.join(dir, 'objects');
  }

  /**
   * Create the skeleton if it is missing, as every dog subcommand does: DIR
   * (its parent must exist), objects/ and its 256 fan-out directories, an
   * empty user_snap. Errors carry dog's sentences.
   */
  async init(opts: { recursive?: boolean } = {}): Promise<void> {
    try {
      const st = await fsp.stat(this.dir);
      if (!st.isDirectory()) throw new FarmError(`Path is not a directory: ${this.dir}\nFail to create directory: File exists`);
    } catch (e) {
      if (e instanceof FarmError) throw e;
      try {
        await fsp.mkdir(this.dir, { recursive: opts.recursive, mode: 0o755 });
      } catch (e2) {
        throw new FarmError(`Fail to create directory: ${errText(e2)}`);
      }
    }
    try {
      await fsp.mkdir(this.objDir, { recursive: true, mode: 0o755 });
      for (let i = 0; i < 256; i++) await fsp.mkdir(path.join(this.objDir, hex2(i)), { recursive: true, mode: 0o755 });
    } catch (e) {
      throw new FarmError(`Fail to create directory: ${errText(e)}`);
    }
    try {
      await (await fsp.open(this.logFile, FS.O_CREAT | FS.O_EXCL | FS.O_WRONLY, 0o666)).close();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new FarmError(`Fail to create snapshot log file: ${errText(e)}`);
    }
  }

  /** The path of a content file. */
  pathOf(sha1: Buffer): string {
    const h = sha1.toString('hex');
    return path.join(this.objDir, h.slice(0, 2), h.slice(2));
  }

  async readLog(): Promise<FarmLog> {
    let b: Buffer;
    try {
      b = await fsp.readFile(this.logFile);
    } catch (e) {
      throw new FarmError(`${this.logFile}: ${errText(e)}`);
    }
    return parseFarmLog(b);
  }

  /** Write the header (the first save does, before any object). */
  async writeLogHeader(h: { copies: number; copyPolicy: number; blockSizeShift: number }): Promise<void> {
    await fsp.writeFile(this.logFile, encodeFarmLogHeader(h));
  }

  /** Append a record (idx = records before it + 1), synced. */
  async appendLog(r: FarmLogRecord): Promise<void> {
    const fh = await fsp.open(this.logFile, 'a');
    try {
      await fh.write(encodeFarmLogRecord(r));
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /** Replace the whole log (delete), atomically. */
  async rewriteLog(header: FarmLogHeader, records: FarmLogRecord[]): Promise<void> {
    const tmp = `${this.logFile}.${randomBytes(4).toString('hex')}.tmp`;
    const fh = await fsp.open(tmp, 'w', 0o666);
    try {
      await fh.write(Buffer.concat([encodeFarmLogHeader(header), ...records.map(encodeFarmLogRecord)]));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, this.logFile);
  }

  /**
   * Store content; its SHA-1. An existing file of that name counts as stored.
   * The file appears whole or not at all (written aside, then linked in).
   */
  async put(data: Buffer, sha1 = sha1Of(data)): Promise<Buffer> {
    const file = this.pathOf(sha1);
    try {
      await fsp.access(file);
      return sha1;
    } catch { /* not there yet */ }
    const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
    await fsp.writeFile(tmp, data, { mode: 0o666 });
    try {
      await fsp.link(tmp, file);
      this.bytesWritten += data.length;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    } finally {
      await fsp.rm(tmp, { force: true });
    }
    return sha1;
  }

  /** Read content and check it against its name. */
  async get(sha1: Buffer): Promise<Buffer> {
    const file = this.pathOf(sha1);
    let b: Buffer;
    try {
      b = await fsp.readFile(file);
    } catch (e) {
      throw new FarmError(`${file}: ${errText(e)}`);
    }
    const got = sha1Of(b);
    if (!got.equals(sha1)) throw new FarmError(`failed, ${got.toString('hex')} != ${sha1.toString('hex')} (${file} is damaged)`);
    return b;
  }

  /** Cut an object into slices, store them and its slice index; the index's SHA-1. */
  async putObject(data: Buffer): Promise<Buffer> {
    const sha1s: Buffer[] = [];
    for (let off = 0; off < data.length; off += FARM_SLICE_SIZE) {
      sha1s.push(await this.put(data.subarray(off, Math.min(data.length, off + FARM_SLICE_SIZE))));
    }
    return this.put(encodeFarmSliceIndex(sha1s));
  }

  /** Reassemble an object from its slice index (every file checked). */
  async getObject(indexSha1: Buffer): Promise<Buffer> {
    const slices = decodeFarmSliceIndex(await this.get(indexSha1));
    const parts: Buffer[] = [];
    for (const s of slices) parts.push(await this.get(s));
    return Buffer.concat(parts);
  }

  async getTrunk(sha1: Buffer): Promise<FarmTrunkEntry[]> {
    return decodeFarmTrunk(await this.get(sha1));
  }

  /** Every content file's SHA-1 (hex) with its size. */
  async contents(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (let i = 0; i < 256; i++) {
      const d = path.join(this.objDir, hex2(i));
      for (const f of await fsp.readdir(d).catch(() => [] as string[])) {
        if (!/^[0-9a-f]{38}$/.test(f)) continue;
        try {
          out.set(hex2(i) + f, (await fsp.stat(path.join(d, f))).size);
        } catch { /* removed meanwhile */ }
      }
    }
    return out;
  }

  /**
   * Remove one snapshot: its record leaves the log (the others are
   * renumbered: dog takes idx as the position), then every content file no
   * remaining snapshot refers to. If a remaining snapshot cannot be read
   * whole, no content file is removed (problems says why).
   */
  async deleteSnapshot(header: FarmLogHeader, records: FarmLogRecord[], rec: FarmLogRecord): Promise<{ files: number; bytes: number; problems: string[] }> {
    const rest = records.filter((r) => r !== rec).map((r, i) => ({ ...r, idx: i + 1 }));
    const keep = new Set<string>();
    const problems: string[] = [];
    for (const r of rest) {
      keep.add(r.trunk.toString('hex'));
      try {
        for (const e of await this.getTrunk(r.trunk)) {
          keep.add(e.sha1.toString('hex'));
          for (const s of decodeFarmSliceIndex(await this.get(e.sha1))) keep.add(s.toString('hex'));
        }
      } catch (e) {
        if (!(e instanceof FarmError)) throw e;
        problems.push(`snapshot ${r.idx} (${r.tag}): ${e.message}`);
      }
    }
    await this.rewriteLog(header, rest);
    let files = 0;
    let bytes = 0;
    if (problems.length) return { files, bytes, problems };
    for (const [h, size] of await this.contents()) {
      if (keep.has(h)) continue;
      await this.remove(h);
      files++;
      bytes += size;
    }
    return { files, bytes, problems };
  }

  /** The repository in figures: what its snapshots hold against what it stores. */
  async stat(): Promise<FarmStat> {
    const sizes = await this.contents();
    const { records } = await this.readLog();
    let logical = 0;
    const indexLen = new Map<string, number>();
    for (const r of records) {
      for (const e of await this.getTrunk(r.trunk)) {
        const key = e.sha1.toString('hex');
        let len = indexLen.get(key);
        if (len === undefined) {
          len = 0;
          for (const sl of decodeFarmSliceIndex(await this.get(e.sha1))) len += sizes.get(sl.toString('hex')) ?? 0;
          indexLen.set(key, len);
        }
        logical += len;
      }
    }
    let stored = 0;
    for (const v of sizes.values()) stored += v;
    return { snapshots: records.length, logical, files: sizes.size, stored };
  }

  async remove(sha1Hex: string): Promise<void> {
    await fsp.rm(path.join(this.objDir, sha1Hex.slice(0, 2), sha1Hex.slice(2)), { force: true });
  }
}

const hex2 = (i: number) => i.toString(16).padStart(2, '0');

function errText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'No such file or directory';
  if (code === 'EEXIST') return 'File exists';
  if (code === 'ENOTDIR') return 'Not a directory';
  if (code === 'EACCES') return 'Permission denied';
  return (e as Error).message;
}
