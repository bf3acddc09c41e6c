#!/usr/bin/env node
// CommonJS on purpose (sheep/bin/package.json): Node sizes libuv's pool on
// its first use, and loading an ES module entry point already uses it, so
// the size must be set here, before any ES module is loaded.
//
// The pool serves the reads the page cache cannot serve inline
// (store/fileio.ts), and disk writes when the native addon is not there
// (with it, writes run on its own writer threads); syncs run on their own
// worker threads (store/syncpool.ts). More threads than cores mostly
// adds contention: on 2 cores, when every cached 4K NBD read still went
// through the pool, they ran at 21k IOPS with 4 threads, 32k with 2.
'use strict';
const { availableParallelism } = require('node:os');
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(2, availableParallelism()));
Promise.all([import('@sheepdog/common'), import('../dist/main.js')]).then(async ([{ setProcessTitle }, { main }]) => {
  const args = process.argv.slice(2);
  setProcessTitle('sheep', args.filter((a) => a !== '--daemon-child'));
  const code = await main(process.argv.slice(2));
  if (code >= 0) process.exit(code);
});
