// The driver conformance suite against the embedded `local` driver.
import { driverConformance } from '../helpers/driver-conformance.js';
import { uniqueClusterId } from '../helpers/cluster.js';

driverConformance(async () => `local:${uniqueClusterId()}`);
