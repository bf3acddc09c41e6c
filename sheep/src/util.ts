// Small async and stream helpers.
import type { Readable } from 'node:stream';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Newline-delimited text: onLine for each complete, non-empty line (an unfinished last line is dropped). */
export function lineReader(stream: Readable, onLine: (s: string) => void): void {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line) onLine(line);
    }
  });
}

/** Long work on the event loop (recovery planning) gives it back after this many ms. */
export const PLAN_SLICE_MS = 10;
