// The object store interface: one object = a byte array of fixed size,
// addressed by oid. Drivers are chosen by name at format time.
import type { SpliceTarget } from '@sheepdog/common';
import type { RecentWrites } from './recent.js';

/**
 * One copy of an object on this node. version: the epoch of the write that
 * last changed it (0: unknown, older than any); a write in a later epoch
 * always lands on a copy that was current, so a higher version is newer
 * data. stale: set aside (not served) until recovery decides.
 */
export interface ObjectCopy {
  oid: bigint;
  version: number;
  stale: boolean;
}

/** What found a damaged copy: a read (a client's, or a peer's for one), a recovery transfer (or a comparison), or a scrub. */
export type FoundBy = 'read' | 'recovery' | 'scrub';

export interface ObjectStore {
  readonly name: string;
  /** The epoch new writes are stamped with. */
  epochNow: () => number;
  /** Objects written lately (see RecentWrites). */
  readonly recent: RecentWrites;
  init(): Promise<void>;
  /** Open the write-ahead journal, replaying what a crash left in it (after setDriver); a line for the log. */
  startJournal?(onError: (msg: string) => void): Promise<string | undefined>;
  /** Use the object layout of a store driver (plain, tree, farm): at start-up and at format. */
  setDriver(store: string): Promise<void>;
  /** Called with an object whose copy here turned out damaged (short, or failing its checksum). */
  onDamage?: (oid: bigint, why: string, by: FoundBy) => void;
  /** Read len bytes at off (into `into` when given); bytes past the stored length read as zero. by: who reads (default 'read'). */
  read(oid: bigint, off: number, len: number, into?: Buffer, by?: FoundBy): Promise<Buffer>;
  /**
   * The page-cache hit path of read: fill into[at, at+len) with len bytes at
   * off, synchronously, when that needs no wait (the object's file is open
   * and the page cache holds the bytes). false: nothing is promised about
   * into, and read() must be used.
   */
  readCached?(oid: bigint, off: number, len: number, into: Buffer, at: number): boolean;
  /**
   * Optional zero-copy write (see SpliceTarget): a target for len bytes at
   * off of an existing object, if the store can take one now.
   */
  spliceTarget?(oid: bigint, off: number, len: number): SpliceTarget | undefined;
  /** Hold writes to oid (they wait) until the returned release is called. */
  hold(oid: bigint): () => void;
  /** Resolves once nothing started before is in flight on oid (hold it first). */
  idle(oid: bigint): Promise<void>;
  /** Write into an existing object; NO_OBJ if it does not exist. */
  write(oid: bigint, off: number, data: Buffer): Promise<void>;
  /** Atomically (re)create an object of `size` bytes: zeros + data at off. */
  create(oid: bigint, size: number, off: number, data: Buffer): Promise<void>;
  /** Create from a full image (used by COW and recovery), with the source's version (default: now). */
  createFull(oid: bigint, size: number, data: Buffer, version?: number): Promise<void>;
  /** Every copy held here, live and set aside, with versions. */
  copies(): Promise<ObjectCopy[]>;
  /** Recompute the block sums of the copies changed since ms (after a crash); how many were off. */
  rebuildSums(sinceMs: number): Promise<number>;
  /** Whether a copy (live, or set aside) was modified at or after the time ms. */
  changedSince(oid: bigint, stale: boolean, ms: number): Promise<boolean>;
  /** Remove the copy set aside, if any. */
  dropStale(oid: bigint): Promise<void>;
  /** A live copy's version (undefined: none). */
  versionOf(oid: bigint): Promise<number | undefined>;
  /** A whole copy and its version: the live one, or (with anyCopy) the best one, which may be set aside. */
  readCopy(oid: bigint, size: number, anyCopy: boolean, by?: FoundBy): Promise<{ data: Buffer; version: number; stale: boolean }>;
  /** Which of an object's copies is the best (the newer of live and set aside; live when equal). */
  bestCopy(oid: bigint): 'live' | 'stale' | undefined;
  remove(oid: bigint): Promise<boolean>;
  exists(oid: bigint): Promise<boolean>;
  list(): Promise<bigint[]>;
  /** Live strip files of erasure-coded objects (kept under strip keys, see ec/strip-key.ts; never in list() or copies()). */
  strips?(): Promise<{ oid: bigint; idx: number; version: number }[]>;
  /** Objects held, live and set aside. */
  count(): Promise<number>;
  /** Bytes used on disk by objects, and the store's capacity / free space. */
  usage(): Promise<{ used: bigint; size: bigint; free: bigint }>;
  /** The filesystem's size and free space, without counting objects. */
  capacity(): Promise<{ size: bigint; free: bigint }>;
  /** SHA-1 of the live copy (by: who asks, default 'read'). */
  sha1(oid: bigint, by?: FoundBy): Promise<Buffer>;
  /** Remove every object (format). */
  wipe(): Promise<void>;
  close(): Promise<void>;

  // Objects set aside as possibly stale (after rejoining a running cluster,
  // or no longer ours): never served as current, kept until recovery is done.
  setAside(oid: bigint): Promise<void>;
  staleList(): Promise<bigint[]>;
  staleRead(oid: bigint, off: number, len: number): Promise<Buffer>;
  staleSha1(oid: bigint): Promise<Buffer>;
  /** Move a set-aside object back into service. */
  restoreStale(oid: bigint): Promise<boolean>;
  purgeStale(): Promise<void>;
}
