// sheep --s3 driven by Debian's real command-line clients: awscli (v2),
// s3cmd and rclone. Each is configured for the local endpoint only, and
// every proxy variable points at a closed local port, so a request to
// anywhere but 127.0.0.1 fails instead of leaving the machine.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { HeadObjectCommand, ListBucketsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { stopAll } from '../helpers/cluster.js';
import { have } from '../helpers/nbd.js';
import { requirePrereq } from '../helpers/prereq.js';
import { startS3Cluster, S3Cluster, cleanEnv, runClient, ACCESS_KEY, SECRET_KEY } from '../helpers/s3.js';

const MiB = 1 << 20;
const missing = ['aws', 's3cmd', 'rclone'].filter((t) => !have(t));
requirePrereq(missing.length > 0 && `${missing.join(', ')} (Debian packages awscli, s3cmd, rclone)`);

const md5file = async (f: string) => createHash('md5').update(await fsp.readFile(f)).digest('hex');

describe('S3 gateway with awscli, s3cmd and rclone', () => {
  let g: S3Cluster;
  let tmp: string;
  let small: string;
  let big: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    g = await startS3Cluster(1, 1);
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 's3-clients-'));
    small = path.join(tmp, 'small.txt');
    big = path.join(tmp, 'big.bin');
    await fsp.writeFile(small, 'hello from a client\n');
    await fsp.writeFile(big, randomBytes(11 * MiB + 17));
    await fsp.mkdir(path.join(tmp, '.aws'));
    await fsp.writeFile(path.join(tmp, '.aws/config'), '[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n  signature_version = s3v4\n');
    env = cleanEnv(tmp, {
      AWS_ACCESS_KEY_ID: ACCESS_KEY, AWS_SECRET_ACCESS_KEY: SECRET_KEY, AWS_DEFAULT_REGION: 'us-east-1', AWS_EC2_METADATA_DISABLED: 'true',
      AWS_PAGER: '', AWS_CONFIG_FILE: path.join(tmp, '.aws/config'), AWS_SHARED_CREDENTIALS_FILE: path.join(tmp, '.aws/none'),
      HTTP_PROXY: 'http://127.0.0.1:9', HTTPS_PROXY: 'http://127.0.0.1:9', http_proxy: 'http://127.0.0.1:9', https_proxy: 'http://127.0.0.1:9',
      NO_PROXY: '127.0.0.1', no_proxy: '127.0.0.1',
    });
  }, 60_000);
  afterAll(async () => {
    await stopAll();
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('awscli: mb, sync (multipart), ls, cp, ranged get-object, metadata, presign, rb', async () => {
    const aws = (...a: string[]) => runClient('aws', ['--endpoint-url', g.endpoint, ...a], env);
    const ok = async (...a: string[]) => {
      const r = await aws(...a);
      expect(r.code, `aws ${a.join(' ')}: ${r.stderr}`).toBe(0);
      return r.stdout;
    };
    // every aws start costs seconds on a loaded machine: few calls, and the SDK checks what they did
    const sdk = g.client();
    expect(await ok('s3', 'mb', 's3://aws-bucket')).toContain('make_bucket: aws-bucket');
    const up = path.join(tmp, 'up');
    await fsp.mkdir(path.join(up, 'docs'), { recursive: true });
    await fsp.copyFile(small, path.join(up, 'docs/small.txt'));
    await fsp.copyFile(big, path.join(up, 'big.bin'));
    await ok('s3', 'sync', '--only-show-errors', up, 's3://aws-bucket'); // big.bin is over 8 MiB: a multipart upload
    const ls = await ok('s3', 'ls', 's3://aws-bucket');
    expect(ls).toMatch(/PRE docs\//);
    expect(ls).toMatch(new RegExp(`${11 * MiB + 17} big.bin`));
    const head = await sdk.send(new HeadObjectCommand({ Bucket: 'aws-bucket', Key: 'big.bin' }));
    expect(head.ContentLength).toBe(11 * MiB + 17);
    expect(head.ETag).toMatch(/^"[0-9a-f]{32}-2"$/);
    const back = path.join(tmp, 'big.back');
    await ok('s3', 'cp', '--only-show-errors', 's3://aws-bucket/big.bin', back);
    expect(await md5file(back)).toBe(await md5file(big));
    const part = path.join(tmp, 'part');
    const gr = JSON.parse(await ok('s3api', 'get-object', '--bucket', 'aws-bucket', '--key', 'docs/small.txt', '--range', 'bytes=6-9', part));
    expect(gr.ContentRange).toBe('bytes 6-9/20');
    expect(await fsp.readFile(part, 'utf8')).toBe('from');
    const pr = JSON.parse(await ok('s3api', 'put-object', '--bucket', 'aws-bucket', '--key', 'meta', '--body', small, '--metadata', 'project=sheep,level=3', '--content-type', 'text/plain'));
    expect(pr.ETag).toBe(`"${await md5file(small)}"`);
    const mh = await sdk.send(new HeadObjectCommand({ Bucket: 'aws-bucket', Key: 'meta' }));
    expect(mh.Metadata).toEqual({ project: 'sheep', level: '3' });
    expect(mh.ContentType).toBe('text/plain');
    const url = (await ok('s3', 'presign', 's3://aws-bucket/docs/small.txt', '--expires-in', '60')).trim();
    expect(url.startsWith(`${g.endpoint}/aws-bucket/docs/small.txt?`)).toBe(true);
    const fetched = await fetch(url);
    const text = await fetched.text();
    expect(fetched.status, `${url}: ${text}`).toBe(200);
    expect(text).toBe('hello from a client\n');
    const rb = await aws('s3', 'rb', 's3://aws-bucket');
    expect(rb.code).not.toBe(0);
    expect(rb.stderr).toContain('BucketNotEmpty');
    await ok('s3', 'rb', '--force', 's3://aws-bucket'); // deletes every object, then the bucket
    expect((await sdk.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name) ?? []).not.toContain('aws-bucket');
    sdk.destroy();
    // a wrong secret is refused
    const bad = await runClient('aws', ['--endpoint-url', g.endpoint, 's3', 'ls'], { ...env, AWS_SECRET_ACCESS_KEY: 'wrong-secret-0123456789' });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('SignatureDoesNotMatch');
  }, 120_000);

  it('s3cmd: mb, put (multipart), ls, get, info, del, rb', async () => {
    const cfg = path.join(tmp, 's3cfg');
    const host = `127.0.0.1:${g.s3Port}`;
    const conf = (secret: string) => [
      '[default]', `access_key = ${ACCESS_KEY}`, `secret_key = ${secret}`, `host_base = ${host}`, `host_bucket = ${host}`,
      'use_https = False', 'signature_v2 = False', 'bucket_location = us-east-1', 'proxy_host =', 'check_ssl_certificate = False', '',
    ].join('\n');
    await fsp.writeFile(cfg, conf(SECRET_KEY));
    const s3cmd = (...a: string[]) => runClient('s3cmd', ['-c', cfg, '--no-progress', ...a], env);
    const ok = async (...a: string[]) => {
      const r = await s3cmd(...a);
      expect(r.code, `s3cmd ${a.join(' ')}: ${r.stderr}`).toBe(0);
      return r.stdout;
    };
    await ok('mb', 's3://cmd-bucket');
    await ok('put', small, 's3://cmd-bucket/dir/small.txt');
    await ok('put', '--multipart-chunk-size-mb=5', big, 's3://cmd-bucket/big.bin');
    // it went up in 3 parts: the ETag says so
    const sdk = g.client();
    expect((await sdk.send(new HeadObjectCommand({ Bucket: 'cmd-bucket', Key: 'big.bin' }))).ETag).toMatch(/^"[0-9a-f]{32}-3"$/);
    const ls = await ok('ls', 's3://cmd-bucket');
    expect(ls).toMatch(/DIR\s+s3:\/\/cmd-bucket\/dir\//);
    expect(ls).toMatch(new RegExp(`${11 * MiB + 17}\\s+s3://cmd-bucket/big.bin`));
    const back = path.join(tmp, 'big.s3cmd');
    await ok('get', '--force', 's3://cmd-bucket/big.bin', back);
    expect(await md5file(back)).toBe(await md5file(big));
    expect(await ok('info', 's3://cmd-bucket/dir/small.txt')).toContain(await md5file(small));
    await ok('del', 's3://cmd-bucket/big.bin');
    expect((await sdk.send(new ListObjectsV2Command({ Bucket: 'cmd-bucket' }))).Contents?.map((o) => o.Key)).toEqual(['dir/small.txt']);
    await ok('rb', '--recursive', 's3://cmd-bucket'); // deletes what is left, then the bucket
    expect((await sdk.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name) ?? []).not.toContain('cmd-bucket');
    sdk.destroy();
    await fsp.writeFile(cfg, conf('wrong-secret-0123456789'));
    const bad = await s3cmd('ls');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr + bad.stdout).toMatch(/SignatureDoesNotMatch|403/);
  }, 120_000);

  it('rclone: mkdir, copy (multipart), check, ls, cat, delete, rmdir', async () => {
    const conf = path.join(tmp, 'rclone.conf');
    await fsp.writeFile(conf, [
      '[sd]', 'type = s3', 'provider = Other', 'env_auth = false', `access_key_id = ${ACCESS_KEY}`, `secret_access_key = ${SECRET_KEY}`,
      `endpoint = ${g.endpoint}`, 'region = us-east-1', 'force_path_style = true', '',
    ].join('\n'));
    const src = path.join(tmp, 'tree');
    await fsp.mkdir(path.join(src, 'sub'), { recursive: true });
    await fsp.copyFile(small, path.join(src, 'sub/small.txt'));
    await fsp.copyFile(big, path.join(src, 'big.bin'));
    const rclone = (...a: string[]) => runClient('rclone', ['--config', conf, '--s3-upload-cutoff', '5M', '--s3-chunk-size', '5M', ...a], env);
    const ok = async (...a: string[]) => {
      const r = await rclone(...a);
      expect(r.code, `rclone ${a.join(' ')}: ${r.stderr}`).toBe(0);
      return r.stdout;
    };
    await ok('mkdir', 'sd:rc-bucket');
    await ok('copy', src, 'sd:rc-bucket/backup');
    const r = await rclone('check', src, 'sd:rc-bucket/backup');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('0 differences found');
    const ls = await ok('ls', 'sd:rc-bucket');
    expect(ls).toMatch(new RegExp(`${11 * MiB + 17} backup/big.bin`));
    expect(ls).toMatch(/20 backup\/sub\/small\.txt/);
    expect(await ok('cat', 'sd:rc-bucket/backup/sub/small.txt')).toBe('hello from a client\n');
    expect(await ok('lsd', 'sd:')).toContain('rc-bucket');
    await ok('delete', 'sd:rc-bucket');
    expect(await ok('ls', 'sd:rc-bucket')).toBe('');
    await ok('rmdir', 'sd:rc-bucket');
    expect(await ok('lsd', 'sd:')).not.toContain('rc-bucket');
  }, 120_000);
});
