import { it, expect } from 'vitest';
import { Wire } from './test/helpers/wire.js';
it('dbg2', async () => {
  const w = new Wire(18100);
  const vid = await w.vid('Alice');
  const b = await w.readVdi(vid, 0, 8 << 20);
  console.log('read ok', b.length);
}, 60000);
