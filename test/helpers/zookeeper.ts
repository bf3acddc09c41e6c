// A throwaway standalone ZooKeeper server on 127.0.0.1 for tests, from
// Debian's `zookeeper` package (.ci/run installs it).
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { promises as fsp, existsSync } from 'node:fs';
import { dir as tmpDir } from 'tmp-promise';
import { freePort } from './cluster.js';

const JARS = ['/usr/share/java/zookeeper.jar', '/usr/share/java/slf4j-simple.jar'];
// zookeeper.jar's manifest Class-Path names the rest of its dependencies.

export interface ZooKeeperServer {
  port: number;
  /** `HOST:PORT` for a driver spec */
  hostPort: string;
  /** the server's log so far */
  output(): string;
  /** SIGKILL the server (it holds nothing we need) and wait until it is gone. */
  stop(): Promise<void>;
  /** SIGKILL it, wait downMs, and start it again on the same port and data. */
  restart(downMs: number): Promise<void>;
}

/** Send a four-letter word and return the answer ('' if the server is not up). */
function fourLetter(port: number, word: string): Promise<string> {
  return new Promise((resolve) => {
    let out = '';
    const s = net.connect({ host: '127.0.0.1', port });
    s.setTimeout(1000, () => s.destroy());
    s.once('connect', () => s.write(word));
    s.on('data', (b) => (out += b));
    s.once('close', () => resolve(out));
    s.once('error', () => resolve(''));
  });
}

export async function startZooKeeper(opts: { tickTime?: number; minSessionTimeout?: number } = {}): Promise<ZooKeeperServer> {
  for (const j of JARS) {
    if (!existsSync(j)) throw new Error(`${j} is missing: install Debian's zookeeper package (apt-get install zookeeper)`);
  }
  const tmp = await tmpDir({ unsafeCleanup: true, prefix: 'zk-' });
  const port = await freePort();
  const cfg = path.join(tmp.path, 'zoo.cfg');
  await fsp.writeFile(
    cfg,
    [
      `tickTime=${opts.tickTime ?? 200}`,
      `dataDir=${path.join(tmp.path, 'data')}`,
      `clientPort=${port}`,
      'clientPortAddress=127.0.0.1',
      `minSessionTimeout=${opts.minSessionTimeout ?? 400}`,
      'maxSessionTimeout=10000',
      'admin.enableServer=false',
      '4lw.commands.whitelist=ruok,srvr',
      'maxClientCnxns=0',
      '',
    ].join('\n'),
  );
  let out = '';
  let kill = async (): Promise<void> => undefined;
  /** Start the server on cfg and wait until it answers; kill() then stops it. */
  const launch = async (): Promise<void> => {
    const proc = spawn(
      'java',
      ['-Xmx256m', '-XX:+UseSerialGC', '-cp', JARS.join(':'), 'org.apache.zookeeper.server.ZooKeeperServerMain', cfg],
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: tmp.path },
    );
    proc.stdout!.on('data', (b) => (out += b));
    proc.stderr!.on('data', (b) => (out += b));
    // 'close' fires when the process is gone and its pipes are closed, even
    // if nobody has reaped it yet
    const gone = new Promise<void>((resolve) => {
      proc.once('close', () => resolve());
      proc.once('error', (e) => {
        out += `spawn failed: ${e.message}\n`;
        resolve();
      });
    });
    let dead = false;
    void gone.then(() => (dead = true));
    kill = async () => {
      if (!dead && proc.pid !== undefined) {
        try {
          process.kill(proc.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      await gone;
    };
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (dead) {
        await stop();
        throw new Error(`ZooKeeper exited during startup:\n${out}`);
      }
      if ((await fourLetter(port, 'ruok')) === 'imok' && (await fourLetter(port, 'srvr')).includes('Mode: standalone')) break;
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`ZooKeeper did not answer on 127.0.0.1:${port} within 30 s:\n${out}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const stop = async () => {
    await kill();
    await tmp.cleanup().catch(() => undefined);
  };
  // down for downMs, then up again on the same port and data (its sessions are in its log)
  const restart = async (downMs: number) => {
    await kill();
    await new Promise((r) => setTimeout(r, downMs));
    await launch();
  };
  await launch();
  return { port, hostPort: `127.0.0.1:${port}`, output: () => out, stop, restart };
}
