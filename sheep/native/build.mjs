#!/usr/bin/env node
// Builds sheep's optional native addons with node-gyp against the local
// Node headers. Run by the root `npm run build` (and `npm run build:native
// -w @sheepdog/sheep`).
//
//   fileio  page-cache hits read on the event loop (preadv2 RWF_NOWAIT) and
//           batched writes (store/fileio.ts, store/writequeue.ts); needs only
//           a C compiler and Node's headers.
//   cpg     corosync's CPG for `-c corosync` (cluster/corosync.ts); needs
//           libcpg-dev.
//
// Both are optional: sheep works without them (every read through libuv's
// pool; no corosync driver). A missing prerequisite prints one line; a
// failed build is reported without failing the caller, unless
// SHEEP_REQUIRE_NATIVE=1 (or, for cpg, the older SHEEP_REQUIRE_CPG=1). An
// addon newer than its sources is not rebuilt; FORCE=1 rebuilds.
import { existsSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const requireAll = process.env.SHEEP_REQUIRE_NATIVE === '1';
const cpgHeader = process.env.CPG_HEADER ?? '/usr/include/corosync/cpg.h';

const ADDONS = [
  { name: 'fileio', sources: ['binding.gyp', 'src/fileio.c', 'src/hugebuf.c', 'src/xattr.c'], prereq: [], without: 'every disk read and write is its own thread-pool request' },
  {
    name: 'cpg', sources: ['binding.gyp', 'src/cpg.c'], prereq: [cpgHeader], without: 'sheep -c corosync will be unavailable',
    missing: `${cpgHeader} not found (install libcpg-dev to build the corosync driver)`, required: process.env.SHEEP_REQUIRE_CPG === '1',
  },
];

// node-gyp: the one npm ships (npm exports its path to scripts), else a local one.
function findNodeGyp() {
  const cands = [process.env.npm_config_node_gyp];
  const npmDir = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm');
  cands.push(join(npmDir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  cands.push(join(here, '..', '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  cands.push('/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
  return cands.find((c) => c && existsSync(c));
}

// Build against the headers of the Node that runs us, never downloading any.
function gypArgs(gyp) {
  const args = [gyp, 'rebuild', '--loglevel=warn'];
  let nodedir = process.env.npm_config_nodedir;
  if (!nodedir) {
    const prefix = join(dirname(process.execPath), '..');
    if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) nodedir = prefix;
  }
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  return args;
}

let failed = false;
for (const a of ADDONS) {
  const dir = join(here, a.name);
  const say = (s) => process.stderr.write(`sheep native/${a.name}: ${s}\n`);
  const must = requireAll || a.required;
  const absent = a.prereq.find((p) => !existsSync(p));
  if (absent) {
    say(`${a.missing ?? `${absent} not found`}; skipping (${a.without})`);
    failed ||= must;
    continue;
  }
  const out = join(dir, 'build', 'Release', `${a.name}.node`);
  const sources = [...a.sources.map((s) => join(dir, s)), ...a.prereq];
  if (!process.env.FORCE && existsSync(out)) {
    const built = statSync(out).mtimeMs;
    if (sources.every((s) => statSync(s).mtimeMs <= built)) continue;
  }
  const gyp = findNodeGyp();
  if (!gyp) {
    say(`node-gyp not found (it ships with npm); cannot build (${a.without})`);
    failed ||= must;
    continue;
  }
  const args = gypArgs(gyp);
  const nodedir = args.find((x) => x.startsWith('--nodedir'));
  say(`building with ${gyp}${nodedir ? ` (${nodedir})` : ''}`);
  const r = spawnSync(process.execPath, args, { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0 || !existsSync(out)) {
    say(`build failed (exit ${r.status}); ${a.without}`);
    failed ||= must;
    continue;
  }
  say(`built ${out}`);
}
process.exit(failed ? 1 : 0);
