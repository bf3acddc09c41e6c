// The driver-node helper (test/helpers/driver-node.mjs) reports on stdout,
// one JSON object per line.
import type { Readable } from 'node:stream';

/** Call fn with each JSON object printed on stream, one per line. */
export function onJsonLines(stream: Readable, fn: (o: { type: string } & Record<string, unknown>) => void): void {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line) fn(JSON.parse(line));
    }
  });
}
