// A bare cluster-driver member for driver conformance tests. Usage:
//   node driver-node.mjs SPEC PORT
// Prints one JSON line per delivered event on stdout:
//   {"type":"join","node":PORT,"members":[PORTS]} / leave / {"type":"message","from":PORT,"msg":{...}}
// Reads commands on stdin, one per line: "notify <json>", "leave", "exit".
import * as readline from 'node:readline';
import { makeNode } from '@sheepdog/common';
import { createDriver } from '../../sheep/dist/cluster/index.js';

const [spec, port] = process.argv.slice(2);
const self = makeNode('127.0.0.1', Number(port));
const driver = await createDriver(spec);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
await driver.start(self, { t: 'hello', port: Number(port) }, async (e) => {
  if (e.type === 'message') out({ type: 'message', from: e.from.port, msg: e.msg });
  else out({ type: e.type, node: e.node.port, members: e.members.map((m) => m.port) });
});
out({ type: 'started' });
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const [cmd, ...rest] = line.split(' ');
  if (cmd === 'notify') await driver.notify(JSON.parse(rest.join(' ')));
  else if (cmd === 'leave') { await driver.leave(); out({ type: 'left' }); }
  else if (cmd === 'exit') process.exit(0);
});
