#!/usr/bin/env node
const { setProcessTitle } = await import('@sheepdog/common');
setProcessTitle('collie', process.argv.slice(2));
const { main } = await import('../dist/main.js');
await main();
