// The shared multi-node scenarios with a real ZooKeeper as the membership engine.
import { beforeAll, afterAll } from 'vitest';
import { clusterScenarios } from '../helpers/cluster-scenarios.js';
import { uniqueClusterId } from '../helpers/cluster.js';
import { startZooKeeper, ZooKeeperServer } from '../helpers/zookeeper.js';

let zk: ZooKeeperServer;
beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await zk?.stop();
});

clusterScenarios('zookeeper driver', async () => `zookeeper:${zk.hostPort}/${uniqueClusterId()},timeout=1000`);
