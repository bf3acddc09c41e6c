// A short fixed-seed run of the fuzzer (fuzz/fuzz.mjs): mutated requests of
// every opcode and NBD command against a sheep with a small budget, valid
// requests checked alongside. It must end with no crash, no hang, no wrong
// answer, and the daemon's memory within its budget.
import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { ROOT } from '../helpers/cluster.js';

describe('fuzzer, fixed seed', () => {
  it('finds no crash, no hang and no memory beyond the budget in 30 seconds', async () => {
    const p = spawn(process.execPath, [path.join(ROOT, 'fuzz/fuzz.mjs'), '--seconds', '30', '--seed', '16', '--conns', '6', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b) => (out += b));
    p.stderr.on('data', (b) => (err += b));
    const code = await new Promise<number | null>((r) => p.once('exit', r));
    const line = out.trim().split('\n').pop() ?? '';
    const r = JSON.parse(line);
    // the summary says why, when the exit code says something failed
    expect({ code, err, summary: code === 0 ? undefined : r }).toEqual({ code: 0, err: '', summary: undefined });
    expect(r.internalErrors).toBe(0);
    expect(r.systemErrors).toBe(0);
    expect(r.crashes).toBe(0);
    expect(r.hangs).toBe(0);
    expect(r.wrongAnswers).toBe(0);
    expect(r.withinBudget).toBe(true);
    expect(r.sheepRequests).toBeGreaterThan(2000);
    expect(r.nbdRequests).toBeGreaterThan(500);
    expect(r.checks).toBeGreaterThan(10); // valid requests checked byte for byte (40 on a machine at load 11)
  }, 120_000);
});
