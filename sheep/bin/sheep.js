#!/usr/bin/env node
// Many disk requests run in parallel; give libuv's pool room before first use.
process.env.UV_THREADPOOL_SIZE ??= '32';
const { main } = await import('../dist/main.js');
const code = await main(process.argv.slice(2));
if (code >= 0) process.exit(code);
