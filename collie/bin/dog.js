#!/usr/bin/env node
// The same program under its upstream name (messages say "dog").
const { main } = await import('../dist/main.js');
await main();
