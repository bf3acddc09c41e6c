// Helpers for S3 gateway tests: a formatted cluster whose first node serves
// --s3, a user made with collie, SDK clients and a clean environment for the
// command-line clients (only the local endpoint; nothing that points at AWS).
import { spawn } from 'node:child_process';
import { S3Client } from '@aws-sdk/client-s3';
import { Op, Flag, Res, timestamp64, ClusterFlag, SheepClient } from '@sheepdog/common';
import { startCluster, freePort, waitForPort, runCollie, SheepProc, ClusterHandle } from './cluster.js';

export const ACCESS_KEY = 'SDTESTACCESSKEY00001';
export const SECRET_KEY = 'test-secret-key/0123456789+abcdefghij';

export interface S3Cluster {
  c: ClusterHandle;
  nodes: SheepProc[];
  s3Port: number;
  endpoint: string;
  /** The --s3 port of node i (undefined if it has none). */
  s3Ports: (number | undefined)[];
  client: (o?: { accessKey?: string; secretKey?: string; port?: number }) => S3Client;
}

/** n nodes (the first `gateways` with --s3), formatted with `copies`, and one S3 user. */
export async function startS3Cluster(n = 1, copies = 1, extra: string[] = ['-n'], gateways = 1): Promise<S3Cluster> {
  const s3Ports: (number | undefined)[] = [];
  for (let i = 0; i < n; i++) s3Ports.push(i < gateways ? await freePort() : undefined);
  const s3Port = s3Ports[0]!;
  const c = await startCluster(n, { args: (i) => ['-z', String(i), ...extra, ...(s3Ports[i] ? ['--s3', `127.0.0.1:${s3Ports[i]}`] : [])] });
  const cl = new SheepClient({ port: c.nodes[0].port });
  try {
    const r = await cl.send({ opcode: Op.MAKE_FS, flags: Flag.CMD_WRITE, cluster: { copies, ctime: timestamp64(), flags: ClusterFlag.AUTO_VNODES } }, Buffer.from('plain\0'));
    if (r.rsp.result !== Res.SUCCESS) throw new Error(`format failed: ${r.rsp.result}`);
  } finally {
    cl.close();
  }
  await waitForPort(s3Port);
  const add = await runCollie(['s3', 'user', 'add', 'tester', ACCESS_KEY, SECRET_KEY], { port: c.nodes[0].port });
  if (add.code !== 0) throw new Error(`collie s3 user add failed: ${add.stderr}`);
  const endpoint = `http://127.0.0.1:${s3Port}`;
  return {
    c, nodes: c.nodes, s3Port, endpoint, s3Ports,
    client: (o = {}) => new S3Client({
      endpoint: o.port ? `http://127.0.0.1:${o.port}` : endpoint, region: 'us-east-1', forcePathStyle: true, maxAttempts: 1,
      credentials: { accessKeyId: o.accessKey ?? ACCESS_KEY, secretAccessKey: o.secretKey ?? SECRET_KEY },
    }),
  };
}

/** The environment for awscli, s3cmd and rclone: no inherited AWS settings, a private HOME. */
export function cleanEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_') && !k.startsWith('RCLONE_')) env[k] = v;
  return { ...env, HOME: home, ...extra };
}

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a client with exactly `env` (tool() would add ours, AWS_* included) and a time limit. */
export function runClient(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    let err = '';
    p.stdout.on('data', (b) => (out += b));
    p.stderr.on('data', (b) => (err += b));
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`${cmd} ${args.join(' ')} timed out: ${err}`)); }, timeoutMs);
    p.on('error', (e) => { clearTimeout(t); reject(e); });
    p.on('close', (code) => { clearTimeout(t); resolve({ code, stdout: out, stderr: err }); });
  });
}
