// A store's writes go to other threads in batches, at most two batches at
// a time for all its files. While both are out, later writes wait here;
// when one completes, everything waiting goes out as the next batch, as one
// job (native writeBatch, on the addon's writer threads: back-to-back
// ranges of a file as one pwritev; without the addon, a batch is one libuv
// pool request per write). A
// write that finds fewer than two batches out goes at once, so nothing waits
// that did not have to.
//
// Why: each job wakes a thread and then the loop, which on a virtual
// machine costs far more than a 4 KiB copy: ~20 µs of thread CPU per job
// here, and as much again on the loop. Batching per file helped writes
// that stay in one object (4 KiB sequential writes at queue depth 32,
// 2 cores: one request per write ~30k IOPS with fio, one batch per file at
// a time ~45k, two ~65k), but random writes touch a different object almost
// every time and still paid one job each; batches that span files carry
// them too. More than two batches only add threads contending for the
// same inode locks and cores.
//
// Writes that overlap land in the order they were issued (see submit);
// each write settles with its own result once its batch is done.
import { getSystemErrorName } from 'node:util';
import { fileio, PipeSource } from './fileio.js';
import { pwriteFull } from './fdcache.js';

/** How a queued write reports: null, or the error that failed it. */
export type WriteDone = (err: NodeJS.ErrnoException | null) => void;

interface Pending {
  fd: number;
  pos: number;
  end: number;
  /** The bytes, or a pipe holding them (only with the addon, which splices them in). */
  data: Buffer | PipeSource;
  done: WriteDone;
}

/** Byte ranges by descriptor. */
type Ranges = Map<number, { pos: number; end: number }[]>;

/** Batches with the pool at once. */
const MAX_INFLIGHT = 2;

type BatchWriter = (fds: Int32Array, bufs: (Buffer | PipeSource)[], positions: Float64Array, status: Int32Array, done: () => void, overlapping: boolean) => void;

/**
 * The batch writer: the addon's one writer-thread job per batch (which writes in
 * array order), or without it the same contract in JS, one pool request per
 * write: all at once when they are disjoint, else one after another.
 */
const writeBatch: BatchWriter = fileio?.writeBatch ?? ((fds, bufs, positions, status, done, overlapping) => {
  const one = (i: number) => pwriteFull(fds[i], bufs[i] as Buffer, positions[i]).then(
    () => { status[i] = 0; },
    (e: NodeJS.ErrnoException) => { status[i] = e.errno ?? -5; },
  );
  if (!overlapping) {
    void Promise.all(bufs.map((_, i) => one(i))).then(done);
    return;
  }
  const next = (i: number): void => {
    if (i === bufs.length) done();
    else void one(i).then(() => next(i + 1));
  };
  next(0);
});

interface Slot {
  fds: Int32Array;
  positions: Float64Array;
  status: Int32Array;
  /** Exactly the batch's pieces (its length is the batch's). */
  bufs: (Buffer | PipeSource)[];
}

const byFileAndPosition = (a: Pending, b: Pending) => a.fd - b.fd || a.pos - b.pos;

/** Already sorted (sequential writes arrive so): no copy and sort needed. */
function inOrder(ws: Pending[]): boolean {
  for (let i = 1; i < ws.length; i++) if (byFileAndPosition(ws[i - 1], ws[i]) > 0) return false;
  return true;
}

export class WriteQueue {
  private waiting: Pending[] = [];
  /** The ranges of each batch with the pool. */
  private inflight: Ranges[] = [];

  /** Argument arrays for batches, reused (one set per batch with the pool). */
  private slots: Slot[] = [];

  private slot(n: number): Slot {
    const s = this.slots.pop();
    if (s && s.fds.length >= n) return s;
    const c = Math.max(n, 64);
    return { fds: new Int32Array(c), positions: new Float64Array(c), status: new Int32Array(c), bufs: [] };
  }

  private kickQueued = false;
  private readonly kick = () => {
    this.kickQueued = false;
    this.submit();
  };

  /**
   * Write all of data at pos of fd (which must stay open until done is
   * called). Submission waits for the end of the current callback (a
   * microtask), so that the writes of all requests that arrived together
   * leave as one batch rather than the first alone.
   */
  write(fd: number, data: Buffer | PipeSource, pos: number, done: WriteDone): void {
    this.waiting.push({ fd, pos, end: pos + data.length, data, done });
    if (!this.kickQueued) {
      this.kickQueued = true;
      queueMicrotask(this.kick);
    }
  }

  /**
   * Overlapping writes land in the order they were issued: a write that
   * overlaps one still with the pool (two batches run on two threads, in
   * either order), or one held back for that reason, waits for the next
   * batch; within a batch the writes keep their issue order unless sorting
   * them by file and position reorders no overlap. (An inode index update
   * rewrites entries a concurrent update may also write; the later one must
   * win.)
   */
  private submit(): void {
    if (this.waiting.length === 0 || this.inflight.length >= MAX_INFLIGHT) return;
    let batch: Pending[] = this.waiting;
    let held: Pending[] = [];
    if (this.inflight.length) {
      batch = [];
      let heldRanges: Ranges | undefined;
      for (const w of this.waiting) {
        if (this.inflight.some((r) => overlaps(r, w)) || (heldRanges && overlaps(heldRanges, w))) {
          held.push(w);
          heldRanges ??= new Map();
          const list = heldRanges.get(w.fd);
          if (list) list.push({ pos: w.pos, end: w.end });
          else heldRanges.set(w.fd, [{ pos: w.pos, end: w.end }]);
        } else batch.push(w);
      }
      if (batch.length === 0) return; // submitted again when a batch is done
    }
    this.waiting = held;

    const sorted = inOrder(batch) ? batch : [...batch].sort(byFileAndPosition);
    const ranges: Ranges = new Map();
    let overlap = false;
    for (const w of sorted) if (addRange(ranges, w)) overlap = true;
    if (!overlap) batch = sorted;
    this.inflight.push(ranges);

    const n = batch.length;
    const slot = this.slot(n);
    const { fds, positions, status, bufs } = slot;
    for (let i = 0; i < n; i++) {
      fds[i] = batch[i].fd;
      positions[i] = batch[i].pos;
      status[i] = 0;
      bufs.push(batch[i].data);
    }
    writeBatch(fds, bufs, positions, status, () => {
      this.inflight.splice(this.inflight.indexOf(ranges), 1);
      bufs.length = 0;
      this.slots.push(slot);
      for (let i = 0; i < n; i++) batch[i].done(status[i] === 0 ? null : errnoError(-status[i]));
      this.submit();
    }, overlap);
  }
}

/** Add w's range to r, which is ascending and disjoint per file (w must not start before its file's last range); true if it overlapped. */
function addRange(r: Ranges, w: Pending): boolean {
  const list = r.get(w.fd);
  if (!list) {
    r.set(w.fd, [{ pos: w.pos, end: w.end }]);
    return false;
  }
  const last = list[list.length - 1];
  if (w.pos < last.end && w.end > last.pos) {
    last.pos = Math.min(last.pos, w.pos);
    last.end = Math.max(last.end, w.end);
    return true;
  }
  if (w.pos === last.end) last.end = w.end;
  else list.push({ pos: w.pos, end: w.end });
  return false;
}

function overlaps(r: Ranges, w: Pending): boolean {
  const list = r.get(w.fd);
  if (!list) return false;
  for (const x of list) if (w.pos < x.end && w.end > x.pos) return true;
  return false;
}

function errnoError(errno: number): NodeJS.ErrnoException {
  const code = getSystemErrorName(-errno);
  const e: NodeJS.ErrnoException = new Error(`${code}: write failed (errno ${errno})`);
  e.code = code;
  e.errno = -errno;
  e.syscall = 'pwritev';
  return e;
}
