// The shared multi-node scenarios with the embedded local driver, and a
// gateway-only node.
import { clusterScenarios } from '../helpers/cluster-scenarios.js';
import { uniqueClusterId } from '../helpers/cluster.js';
import { describe, it, expect, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Op, vidToDataOid, vidToVdiOid } from '@sheepdog/common';
import { startCluster, stopAll, waitFor } from '../helpers/cluster.js';
import { formatCluster, nodeList, settle } from '../helpers/cluster-scenarios.js';
import { Wire } from '../helpers/wire.js';

clusterScenarios('local driver', async () => `local:${uniqueClusterId()}`);

describe('gateway-only node (-g)', () => {
  afterAll(() => stopAll());
  it('serves clients and stores nothing', async () => {
    const c = await startCluster(4, { args: (i) => (i === 3 ? ['-g', '-z', '3'] : ['-z', String(i)]) });
    const gw = c.nodes[3];
    await waitFor(async () => (await nodeList(gw.port)).length === 4, 10_000, '4 members');
    const list = await nodeList(gw.port);
    expect(list.find((n) => n.port === gw.port)?.nrVnodes).toBe(0);
    await formatCluster(gw.port, 3);
    const w = new Wire(gw.port);
    try {
      const vid = (await w.newVdi('ViaGateway', 64n << 20n)).rsp.vdi.vdiId;
      const data = randomBytes(12 << 20);
      await w.writeVdi(vid, 0, data);
      expect((await w.readVdi(vid, 0, data.length)).equals(data)).toBe(true);
      const ss = await w.send({ opcode: Op.STAT_SHEEP });
      expect(ss.rsp.node.storeSize).toBe(0n);
      const files = (await fsp.readdir(path.join(gw.dir, 'obj'))).filter((f) => /^[0-9a-f]{16}$/.test(f));
      expect(files).toEqual([]);
      await settle(c.nodes.slice(0, 3), [vidToVdiOid(vid), vidToDataOid(vid, 0), vidToDataOid(vid, 1), vidToDataOid(vid, 2)], 3, 1);
    } finally {
      w.close();
    }
  });
});
