// The incremental VDI backup stream of `dog vdi backup` / `dog vdi restore`
// (farm-and-backup.md B.2): an 8-byte header (version first, then magic),
// records of 16 bytes each followed by their data, and a 16-byte end marker
// whose idx is 0xffffffff. Integers are little-endian. The stream names
// neither the VDI, nor its size, nor its object size.

export const BACKUP_VERSION = 1;
export const BACKUP_MAGIC = 0x11921192;
export const BACKUP_HEADER_SIZE = 8;
export const BACKUP_RECORD_SIZE = 16;
export const BACKUP_END_IDX = 0xffffffff;
/** dog compares objects in sectors: records start and end on 512 bytes. */
export const BACKUP_SECTOR = 512;

export interface BackupHeader {
  version: number;
  magic: number;
}

export function encodeBackupHeader(h: BackupHeader = { version: BACKUP_VERSION, magic: BACKUP_MAGIC }): Buffer {
  const b = Buffer.alloc(BACKUP_HEADER_SIZE);
  b.writeUInt32LE(h.version >>> 0, 0);
  b.writeUInt32LE(h.magic >>> 0, 4);
  return b;
}

export function decodeBackupHeader(b: Buffer): BackupHeader {
  if (b.length < BACKUP_HEADER_SIZE) throw new RangeError('backup header is 8 bytes');
  return { version: b.readUInt32LE(0), magic: b.readUInt32LE(4) };
}

export function isValidBackupHeader(h: BackupHeader): boolean {
  return h.version === BACKUP_VERSION && h.magic === BACKUP_MAGIC;
}

/** One record: bytes [offset, offset+length) of data object `idx` follow it. */
export interface BackupRecord {
  idx: number;
  offset: number;
  length: number;
  /** dog writes 0 and restore ignores it. */
  reserved: number;
}

export function encodeBackupRecord(r: BackupRecord): Buffer {
  const b = Buffer.alloc(BACKUP_RECORD_SIZE);
  b.writeUInt32LE(r.idx >>> 0, 0);
  b.writeUInt32LE(r.offset >>> 0, 4);
  b.writeUInt32LE(r.length >>> 0, 8);
  b.writeUInt32LE(r.reserved >>> 0, 12);
  return b;
}

export function decodeBackupRecord(b: Buffer): BackupRecord {
  if (b.length < BACKUP_RECORD_SIZE) throw new RangeError('backup record is 16 bytes');
  return { idx: b.readUInt32LE(0), offset: b.readUInt32LE(4), length: b.readUInt32LE(8), reserved: b.readUInt32LE(12) };
}

export function backupEndMarker(): Buffer {
  return encodeBackupRecord({ idx: BACKUP_END_IDX, offset: 0, length: 0, reserved: 0 });
}

/**
 * The span dog 1.0 puts into a record for one object: equal 512-byte sectors
 * are dropped from the front and then from the back, equal sectors inside
 * the span stay. `undefined` if the two objects are equal.
 */
export function backupDiffSpan(from: Buffer, to: Buffer): { offset: number; length: number } | undefined {
  const size = to.length;
  const sectorEqual = (off: number) => {
    const end = Math.min(off + BACKUP_SECTOR, size);
    return from.subarray(off, end).equals(to.subarray(off, end));
  };
  let start = 0;
  while (start < size && sectorEqual(start)) start += BACKUP_SECTOR;
  if (start >= size) return undefined;
  let end = Math.ceil(size / BACKUP_SECTOR) * BACKUP_SECTOR;
  while (end - BACKUP_SECTOR > start && sectorEqual(end - BACKUP_SECTOR)) end -= BACKUP_SECTOR;
  end = Math.min(end, size);
  return { offset: start, length: end - start };
}
