// Driver registry: `-c NAME[:ARGS]` picks one.
import type { ClusterDriver } from './driver.js';
import { parseDriverSpec } from './driver.js';
import { LocalDriver } from './local.js';

export type DriverFactory = (args: string) => Promise<ClusterDriver>;

const factories = new Map<string, DriverFactory>([
  ['local', async (args) => new LocalDriver(args)],
]);

/** Optional drivers register here (zookeeper, corosync). */
export function registerDriver(name: string, f: DriverFactory): void {
  factories.set(name, f);
}

export const driverNames = (): string[] => [...factories.keys()];

export async function createDriver(spec: string): Promise<ClusterDriver> {
  const { name, args } = parseDriverSpec(spec);
  const f = factories.get(name);
  if (!f) throw new Error(`unknown cluster driver '${name}' (available: ${driverNames().join(', ')})`);
  return f(args);
}

registerDriver('zookeeper', async (args) => new (await import('./zookeeper.js')).ZooKeeperDriver(args));
registerDriver('corosync', async (args) => new (await import('./corosync.js')).CorosyncDriver(args));
