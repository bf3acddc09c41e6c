// npm run chaos -- --seed N --minutes M [--driver local|zookeeper] [--replay LOG] [--out DIR] [--quiet]
// Exit status: 0 no finding, 1 findings (the seed and the log are printed), 64 usage.
import { runChaos, running } from './sim.js';

function usage(msg?: string): never {
  if (msg) console.error(`chaos: ${msg}`);
  console.error('usage: npm run chaos -- [--seed N] [--minutes M] [--driver local|zookeeper] [--replay LOG] [--out DIR] [--runs K] [--quiet]');
  process.exit(64);
}

const a = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = a.indexOf(name);
  if (i < 0) return undefined;
  const v = a[i + 1];
  if (v === undefined || v.startsWith('--')) usage(`${name} needs a value`);
  a.splice(i, 2);
  return v;
};
const flag = (name: string): boolean => {
  const i = a.indexOf(name);
  if (i >= 0) a.splice(i, 1);
  return i >= 0;
};
const num = (name: string, dflt: number): number => {
  const v = opt(name);
  if (v === undefined) return dflt;
  if (!/^\d+(\.\d+)?$/.test(v)) usage(`${name}: not a number: ${v}`);
  return Number(v);
};
const seed0 = num('--seed', Math.floor(Math.random() * 1e9));
const minutes = num('--minutes', 3);
const runs = num('--runs', 1);
const driver = opt('--driver') ?? 'local';
const replay = opt('--replay');
const out = opt('--out');
const quiet = flag('--quiet');
if (driver !== 'local' && driver !== 'zookeeper') usage(`unknown driver ${driver}`);
if (a.length) usage(`unexpected ${a.join(' ')}`);

// a stray rejection in the harness is a bug of the harness: say where, do not die
process.on('unhandledRejection', (e) => console.error(`chaos: unhandled rejection: ${(e as Error)?.stack ?? e}`));
process.on('uncaughtException', (e) => console.error(`chaos: uncaught exception: ${(e as Error)?.stack ?? e}`));

// stopped (a batch's timeout, ^C): the cluster goes with us
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.once(sig, () => {
    console.error(`chaos: ${sig}: stopping the cluster`);
    void Promise.all([...running].map((c) => c().catch(() => undefined))).finally(() => process.exit(2));
  });
}

let bad = 0;
for (let k = 0; k < runs; k++) {
  const seed = seed0 + k;
  let r: Awaited<ReturnType<typeof runChaos>>;
  try {
    r = await runChaos({ seed, minutes, driver: driver as 'local' | 'zookeeper', replay, outDir: out && runs > 1 ? `${out}/seed-${seed}` : out, verbose: !quiet });
  } catch (e) {
    // the run could not start or the harness broke: that is no clean run
    console.error(`chaos: seed ${seed}: ${(e as Error)?.stack ?? e}`);
    bad++;
    continue;
  }
  console.log(JSON.stringify({ seed: r.seed, driver: r.driver, nodes: r.nodes, copies: r.copies, zones: r.zones, writes: r.writes, acked: r.acked, reads: r.reads, checkedMiB: Math.round(r.checkedBytes / 1048576), faults: r.faults, admin: r.adminOps, findings: r.findings.length }));
  if (r.findings.length) {
    bad++;
    console.log(`seed ${r.seed}: ${r.findings.length} finding(s):\n  ${r.findings.join('\n  ')}\noperation log: ${r.logFile} (replay: npm run chaos -- --driver ${r.driver} --seed ${r.seed} --replay ${r.logFile})`);
  }
}
process.exit(bad ? 1 : 0);
