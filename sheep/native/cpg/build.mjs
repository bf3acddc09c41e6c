#!/usr/bin/env node
// Builds the optional corosync CPG addon (build/Release/cpg.node) with
// node-gyp against the local Node headers. Run by the root `npm run build`
// (and `npm run build:native -w @sheepdog/sheep`).
//
// Optional by design: on a machine without corosync's headers it prints one
// line and exits 0, and sheep runs with its other cluster drivers. With the
// headers present a failed build is reported but does not fail the caller,
// unless SHEEP_REQUIRE_CPG=1 (then it exits non-zero). The build is skipped
// when cpg.node is newer than its sources; FORCE=1 rebuilds.
import { existsSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const header = process.env.CPG_HEADER ?? '/usr/include/corosync/cpg.h';
const out = join(here, 'build', 'Release', 'cpg.node');
const required = process.env.SHEEP_REQUIRE_CPG === '1';
const say = (s) => process.stderr.write(`sheep native/cpg: ${s}\n`);

if (!existsSync(header)) {
  say(`${header} not found (install libcpg-dev to build the corosync driver); skipping`);
  process.exit(required ? 1 : 0);
}

const sources = [join(here, 'binding.gyp'), join(here, 'src', 'cpg.c'), header];
if (!process.env.FORCE && existsSync(out)) {
  const built = statSync(out).mtimeMs;
  if (sources.every((s) => statSync(s).mtimeMs <= built)) process.exit(0);
}

// node-gyp: the one npm ships (npm exports its path to scripts), else a local one.
function findNodeGyp() {
  const cands = [process.env.npm_config_node_gyp];
  const npmDir = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm');
  cands.push(join(npmDir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  cands.push(join(here, '..', '..', '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  cands.push('/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
  return cands.find((c) => c && existsSync(c));
}

const gyp = findNodeGyp();
if (!gyp) {
  say('node-gyp not found (it ships with npm); cannot build the corosync addon');
  process.exit(required ? 1 : 0);
}

// Build against the headers of the Node that runs us, never downloading any.
const args = [gyp, 'rebuild', '--loglevel=warn'];
let nodedir = process.env.npm_config_nodedir;
if (!nodedir) {
  const prefix = join(dirname(process.execPath), '..');
  if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) nodedir = prefix;
}
if (nodedir) args.push(`--nodedir=${nodedir}`);
say(`building with ${gyp}${nodedir ? ` (nodedir ${nodedir})` : ''}`);
const r = spawnSync(process.execPath, args, { cwd: here, stdio: ['ignore', 'ignore', 'inherit'] });
if (r.status !== 0 || !existsSync(out)) {
  say(`build failed (exit ${r.status}); sheep -c corosync will be unavailable`);
  process.exit(required ? 1 : 0);
}
say(`built ${out}`);
