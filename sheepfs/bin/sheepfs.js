#!/usr/bin/env node
const { setProcessTitle } = await import('@sheepdog/common');
setProcessTitle('sheepfs', process.argv.slice(2));
const { main } = await import('../dist/main.js');
const code = await main(process.argv.slice(2));
if (code >= 0) process.exit(code);
