// Text output helpers. The pure formatters live in @sheepdog/common/text
// (shared with sheepfs); re-exported here for collie's modules.
export {
  strnumber, printfFixed, rpad, lpad, hex, hex16, escapeName, localTime, localDate, localClock, ctime, redundancy,
} from '@sheepdog/common/text';

/** Where output goes; commands write through this so tests can capture it. */
export interface Sink {
  out(s: string | Buffer): void;
  err(s: string): void;
}

export const processSink: Sink = {
  out: (s) => void process.stdout.write(s),
  err: (s) => void process.stderr.write(s),
};

export class BufferSink implements Sink {
  stdout = '';
  stderr = '';
  out(s: string | Buffer): void {
    this.stdout += s.toString();
  }
  err(s: string): void {
    this.stderr += s;
  }
}
