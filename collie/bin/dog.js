#!/usr/bin/env node
// The same program under its upstream name (messages say "dog").
const { setProcessTitle } = await import('@sheepdog/common');
setProcessTitle('dog', process.argv.slice(2));
const { main } = await import('../dist/main.js');
await main();
