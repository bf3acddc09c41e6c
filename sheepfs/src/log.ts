// Logging without ever blocking the event loop: the FUSE requests of this
// very process would deadlock behind a synchronous write to our own mount.
import * as fs from 'node:fs';

export type Level = 'debug' | 'info' | 'warn' | 'error';

let debugOn = false;
let stream: fs.WriteStream | undefined;

// stderr of a Node process is written synchronously when it is a pipe or a
// terminal: a reader that stops reading would stall the event loop, and with
// it every FUSE request. Pipes and terminals are switched to non-blocking
// libuv writes (Node keeps one handle per fd, so it must be process.stderr's
// own); anything else (a file) is written through the thread pool, one write
// at a time, in order. Both keep a bounded backlog.
const MAX_BACKLOG = 1 << 20;
let pipe: NodeJS.WriteStream | undefined;
{
  const h = (process.stderr as unknown as { _handle?: { setBlocking?: (b: boolean) => number } })._handle;
  if (h && typeof h.setBlocking === 'function' && h.setBlocking(false) === 0) {
    pipe = process.stderr;
    pipe.on('error', () => (pipe = undefined));
  }
}
const backlog: string[] = [];
let backlogBytes = 0;
let writing = false;
let dropped = 0;
function pump(): void {
  if (writing || !backlog.length) return;
  writing = true;
  const chunk = backlog.splice(0, backlog.length).join('');
  backlogBytes = 0;
  fs.write(2, chunk, () => {
    writing = false;
    pump();
  });
}
function stderrSink(line: string): void {
  const queued = pipe ? pipe.writableLength : backlogBytes;
  if (queued > MAX_BACKLOG) {
    dropped++;
    return;
  }
  if (dropped) {
    line = `(${dropped} log lines dropped: stderr is not being read)\n` + line;
    dropped = 0;
  }
  if (pipe) {
    pipe.write(line);
    return;
  }
  backlog.push(line);
  backlogBytes += line.length;
  pump();
}
/** A log write is stuck in the thread pool (exiting would wait for it). */
export const stderrStuck = (): boolean => writing;
let sink: (line: string) => void = stderrSink;

export function setDebug(on: boolean): void {
  debugOn = on;
}
export const isDebug = (): boolean => debugOn;

/** Send log lines to a file (async stream) instead of stderr. */
export function logToFile(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = fs.createWriteStream(path, { flags: 'a' });
    s.once('open', () => {
      stream = s;
      sink = (line) => void s.write(line);
      s.on('error', () => undefined);
      resolve();
    });
    s.once('error', reject);
  });
}

export function closeLog(): Promise<void> {
  if (stream) return new Promise((resolve) => stream!.end(resolve));
  // let queued stderr lines out (bounded wait)
  return new Promise((resolve) => {
    const end = Date.now() + 2000;
    const check = () => {
      const idle = pipe ? pipe.writableLength === 0 : !writing && !backlog.length;
      if (idle || Date.now() > end) resolve();
      else setTimeout(check, 10);
    };
    check();
  });
}

function stamp(): string {
  const d = new Date();
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export function log(level: Level, msg: string): void {
  if (level === 'debug' && !debugOn) return;
  sink(`${stamp()} ${level.toUpperCase().padEnd(5)} ${msg}\n`);
}

export const debug = (m: string): void => log('debug', m);
export const info = (m: string): void => log('info', m);
export const warn = (m: string): void => log('warn', m);
export const error = (m: string): void => log('error', m);
