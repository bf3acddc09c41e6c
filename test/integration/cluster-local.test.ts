// The shared multi-node scenarios with the embedded local driver.
import { clusterScenarios } from '../helpers/cluster-scenarios.js';
import { uniqueClusterId } from '../helpers/cluster.js';

clusterScenarios('local driver', async () => `local:${uniqueClusterId()}`);
