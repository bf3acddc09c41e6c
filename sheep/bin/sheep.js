#!/usr/bin/env node
// libuv's pool serves our disk I/O. More threads than cores mostly adds
// contention (measured: 4K reads/s fall from ~80k to ~29k going from 4 to
// 32 threads on 2 cores), so size it to the machine unless told otherwise.
import { availableParallelism } from 'node:os';
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, availableParallelism()));
const { main } = await import('../dist/main.js');
const code = await main(process.argv.slice(2));
if (code >= 0) process.exit(code);
