// A sheep's Prometheus metrics (sheep --metrics) as the tests read them.
import { expect } from 'vitest';

/** A node's metrics, as exposition text. */
export async function scrape(port: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(r.status).toBe(200);
  return r.text();
}

/** The value of one series in exposition text (undefined: absent). */
export function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** The value of one series a node exports now (an error if it exports none). */
export async function metric(port: number, series: string): Promise<number> {
  const v = sample(await scrape(port), series);
  if (v === undefined) throw new Error(`no ${series} in the metrics of port ${port}`);
  return v;
}
