// A progress bar on stderr, shown only for long transfers on a terminal.

export const PROGRESS_MIN_BYTES = 4 * 1024 * 1024;

export class Progress {
  private last = -1;
  private readonly enabled: boolean;
  constructor(
    private readonly total: bigint,
    opts: { force?: boolean; stream?: NodeJS.WriteStream } = {},
  ) {
    this.stream = opts.stream ?? process.stderr;
    this.enabled = opts.force ?? (Boolean(this.stream.isTTY) && total > BigInt(PROGRESS_MIN_BYTES));
  }
  private readonly stream: NodeJS.WriteStream;

  /** Render "  NN.N % [=====>     ] done/total" when the tenth of a percent changes. */
  update(done: bigint): void {
    if (!this.enabled || this.total === 0n) return;
    const permille = Number((done * 1000n) / this.total);
    if (permille === this.last) return;
    this.last = permille;
    this.stream.write('\r' + renderBar(done, this.total, this.stream.columns ?? 80));
  }

  finish(): void {
    if (!this.enabled) return;
    this.update(this.total);
    this.stream.write('\n');
  }
}

export function renderBar(done: bigint, total: bigint, columns = 80): string {
  const pct = total === 0n ? 100 : Number((done * 1000n) / total) / 10;
  const width = Math.max(10, Math.min(50, columns - 40));
  const filled = Math.min(width, Math.floor((pct / 100) * width));
  const bar = '='.repeat(filled) + (filled < width ? '>' + ' '.repeat(width - filled - 1) : '');
  const mb = (b: bigint) => (Number(b) / 1048576).toFixed(1);
  return `${pct.toFixed(1).padStart(5)} % [${bar}] ${mb(done)}/${mb(total)} MB`;
}
