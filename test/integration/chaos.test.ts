// A short, fixed-seed run of the churn simulator (test/chaos): real sheep,
// real kill -9, whole-cluster crashes, pauses, joins and leaves under
// writers and readers, every read checked against the model of every
// acknowledged write, and at the end every VDI, byte, object placement and
// epoch history checked. Long runs: npm run chaos -- --seed N --minutes M.
import { it, expect } from 'vitest';
import { rm } from 'node:fs/promises';
import { runChaos } from '../chaos/sim.js';

it('churn simulator, seed 20261206, 2 minutes: no finding', async () => {
  const r = await runChaos({ seed: 20261206, minutes: 2, driver: 'local' });
  if (r.findings.length) console.log(`findings (operation log ${r.logFile}):\n${r.findings.join('\n')}`);
  expect(r.findings).toEqual([]);
  // it did something: failures happened and I/O went on through them
  expect(Object.values(r.faults).reduce((a, b) => a + b, 0)).toBeGreaterThan(10);
  expect(r.acked).toBeGreaterThan(500);
  expect(r.reads).toBeGreaterThan(100);
  // a clean run's node directories are of no further use (a failing one keeps them for a look)
  await rm(r.outDir, { recursive: true, force: true });
}, 600_000);
