// stdin/stdout helpers: exact-size reads from stdin, writes that respect
// back-pressure, and dog's yes/no confirmation.

export class StdinReader {
  private chunks: Buffer[] = [];
  private len = 0;
  private ended = false;
  private iter?: AsyncIterator<Buffer>;
  constructor(private readonly stream: NodeJS.ReadableStream = process.stdin) {}

  private async fill(n: number): Promise<void> {
    this.iter ??= (this.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    while (this.len < n && !this.ended) {
      const r = await this.iter.next();
      if (r.done) {
        this.ended = true;
        break;
      }
      const b = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
      this.chunks.push(b);
      this.len += b.length;
    }
  }

  /** Up to n bytes; fewer only at end of input (like xread). */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const take = Math.min(n, this.len);
    const out = Buffer.allocUnsafe(take);
    let got = 0;
    while (got < take) {
      const c = this.chunks[0];
      const want = Math.min(c.length, take - got);
      c.copy(out, got, 0, want);
      got += want;
      if (want === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(want);
    }
    this.len -= take;
    return out;
  }

  /** One line without its newline, or null at end of input. */
  async readLine(max = 4096): Promise<string | null> {
    for (;;) {
      const all = Buffer.concat(this.chunks);
      const nl = all.indexOf(0x0a);
      if (nl >= 0 || this.ended || all.length >= max) {
        if (all.length === 0 && this.ended) return null;
        const end = nl >= 0 ? nl : all.length;
        this.chunks = [all.subarray(Math.min(all.length, end + 1))];
        this.len = this.chunks[0].length;
        return all.toString('utf8', 0, end);
      }
      await this.fill(all.length + 1);
    }
  }
}

let stdinReader: StdinReader | undefined;
export const stdin = (): StdinReader => (stdinReader ??= new StdinReader());

/** Write to stdout, waiting for 'drain' when the pipe is full. */
export async function writeStdout(b: Buffer | string): Promise<void> {
  if (!process.stdout.write(b)) {
    await new Promise<void>((resolve) => process.stdout.once('drain', resolve));
  }
}
