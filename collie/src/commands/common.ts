// Helpers shared by the command modules.
import type { Ctx } from '../conn.js';
import { CliError, EXIT_SUCCESS } from '../exitcodes.js';
import { stdin } from '../io.js';

/** dog's confirm(): print the question, anything but "yes" exits 0. */
export async function confirm(ctx: Ctx, message: string): Promise<void> {
  ctx.out(message);
  const line = await stdin().readLine(8);
  if (line === null || !/^yes/i.test(line)) throw new CliError(EXIT_SUCCESS);
}
