// sheep --s3: an S3-compatible HTTP endpoint (path-style requests,
// http://HOST:PORT/BUCKET/KEY) over this node's gateway. Every request
// must carry an AWS Signature V4 of a key in s3/.users. A failure becomes
// S3's error XML; nothing a client sends can take the daemon down.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { SheepdogError, validBucketName } from '@sheepdog/common';
import { log } from '../log.js';
import { S3Error } from './errors.js';
import { parseQuery, verifyRequest } from './auth.js';
import type { S3Store } from './store.js';
import { Ctx, sendEmpty, sendXml } from './context.js';
import { errorXml } from './xml.js';
import { listBuckets, listObjects } from './listing.js';
import { putObject, getObject, deleteObject, deleteObjects, copyObject } from './objects.js';
import { createUpload, uploadPart, completeUpload, abortUpload, listParts, listUploads } from './multipart.js';
import { smallBody } from './stream.js';

/** A connection that moves no byte for this long is closed (a stalled upload or download). */
const IDLE_MS = 120_000;
const MAX_CONNECTIONS = 1024;

export class S3Server {
  private servers: http.Server[] = [];

  constructor(private readonly store: S3Store) {}

  async listen(host: string | undefined, port: number): Promise<void> {
    const srv = http.createServer({ requestTimeout: 0, headersTimeout: 30_000, maxHeaderSize: 16384 }, (req, res) => void this.handle(req, res));
    srv.maxConnections = MAX_CONNECTIONS;
    srv.setTimeout(IDLE_MS, (s) => s.destroy());
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => { srv.off('error', reject); resolve(); });
    });
    srv.on('clientError', (_e, sock) => { if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'); else sock.destroy(); });
    this.servers.push(srv);
    const a = srv.address() as AddressInfo;
    log.notice(`S3 gateway serving ${a.address}:${a.port}`);
  }

  get port(): number {
    return (this.servers[0]?.address() as AddressInfo | null)?.port ?? 0;
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => { s.close(() => r()); s.closeAllConnections(); })));
    this.servers = [];
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // a client that goes away mid-request surfaces as a failed read or
    // write in the handler; as an event it must not be unhandled
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    const requestId = randomBytes(8).toString('hex').toUpperCase();
    res.setHeader('x-amz-request-id', requestId);
    res.setHeader('server', 'sheepdog-s3');
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const rawPath = qi < 0 ? url : url.slice(0, qi);
    let resource = rawPath;
    try {
      if (!rawPath.startsWith('/')) throw new S3Error('InvalidRequest', 'only path-style requests (/BUCKET/KEY) are served');
      const query = parseQuery(qi < 0 ? '' : url.slice(qi + 1));
      let path: string;
      try {
        path = decodeURIComponent(rawPath);
      } catch {
        throw new S3Error('InvalidArgument', 'malformed percent-encoding in the request path');
      }
      resource = path;
      const slash = path.indexOf('/', 1);
      const bucket = slash < 0 ? path.slice(1) : path.slice(1, slash);
      const key = slash < 0 ? '' : path.slice(slash + 1);
      const auth = await verifyRequest(req, rawPath, query, (ak) => this.store.secretOf(ak));
      const c: Ctx = { req, res, store: this.store, auth, bucket, key, query: new Map(query), requestId };
      if (bucket && !validBucketName(bucket)) throw new S3Error(key ? 'NoSuchBucket' : 'InvalidBucketName', 'The specified bucket is not valid.');
      await this.route(c);
    } catch (e) {
      this.fail(req, res, e, resource, requestId);
    }
  }

  private async route(c: Ctx): Promise<void> {
    const m = c.req.method;
    const q = c.query;
    if (!c.bucket) {
      if (m === 'GET') return listBuckets(c);
      throw new S3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.');
    }
    if (!c.key) {
      switch (m) {
        case 'GET':
          if (q.has('location')) { await c.store.bucket(c.bucket); return sendXml(c, 'LocationConstraint', {}); }
          if (q.has('versioning')) { await c.store.bucket(c.bucket); return sendXml(c, 'VersioningConfiguration', {}); }
          if (q.has('uploads')) return listUploads(c);
          if (q.has('acl')) { await c.store.bucket(c.bucket); return sendXml(c, 'AccessControlPolicy', { Owner: { ID: 'sheepdog' }, AccessControlList: { Grant: { Permission: 'FULL_CONTROL' } } }); }
          for (const sub of ['policy', 'cors', 'lifecycle', 'tagging', 'website', 'replication', 'encryption', 'object-lock', 'logging', 'notification']) {
            if (q.has(sub)) throw new S3Error('NotImplemented', `the bucket subresource '${sub}' is not implemented`);
          }
          return listObjects(c, q.get('list-type') === '2');
        case 'HEAD':
          await c.store.bucket(c.bucket);
          return sendEmpty(c, 200);
        case 'PUT':
          if ([...q.keys()].length) throw new S3Error('NotImplemented', `bucket configuration '${[...q.keys()][0]}' is not implemented`);
          await smallBody(c.req, c.auth, 64 << 10); // CreateBucketConfiguration: the region is ours whatever it says
          await c.store.createBucket(c.bucket);
          return sendEmpty(c, 200, { location: `/${c.bucket}` });
        case 'DELETE':
          await c.store.deleteBucket(c.bucket);
          return sendEmpty(c, 204);
        case 'POST':
          if (q.has('delete')) return deleteObjects(c);
          break;
      }
      throw new S3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.');
    }
    switch (m) {
      case 'GET':
        if (q.has('uploadId')) return listParts(c);
        if (q.has('acl') || q.has('tagging')) throw new S3Error('NotImplemented', 'object ACLs and tags are not implemented');
        return getObject(c, false);
      case 'HEAD':
        return getObject(c, true);
      case 'PUT':
        if (q.has('uploadId') || q.has('partNumber')) return uploadPart(c);
        if (q.has('acl') || q.has('tagging')) throw new S3Error('NotImplemented', 'object ACLs and tags are not implemented');
        if (c.req.headers['x-amz-copy-source'] !== undefined) return copyObject(c);
        return putObject(c);
      case 'DELETE':
        if (q.has('uploadId')) return abortUpload(c);
        return deleteObject(c);
      case 'POST':
        if (q.has('uploads')) return createUpload(c);
        if (q.has('uploadId')) return completeUpload(c);
        break;
    }
    throw new S3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.');
  }

  private fail(req: http.IncomingMessage, res: http.ServerResponse, e: unknown, resource: string, requestId: string): void {
    if (req.destroyed && !(e instanceof S3Error)) {
      // the client left: nobody to answer
      log.debug(`s3: ${req.method} ${resource}: client went away (${(e as Error)?.message})`);
      res.destroy();
      return;
    }
    let err: S3Error;
    if (e instanceof S3Error) err = e;
    else {
      const msg = e instanceof SheepdogError ? `cluster error: ${e.message}` : (e as Error)?.message ?? String(e);
      log.err(`s3: ${req.method} ${resource}: ${e instanceof SheepdogError ? msg : (e as Error)?.stack ?? msg}`);
      err = new S3Error(e instanceof SheepdogError ? 'ServiceUnavailable' : 'InternalError', msg);
    }
    if (res.headersSent) {
      // mid-body: only closing the connection tells the client
      res.destroy();
      return;
    }
    // a body we did not read is not worth reading: close after the answer
    const unread = !req.complete;
    if (unread) res.setHeader('connection', 'close');
    const body = req.method === 'HEAD' ? undefined : Buffer.from(errorXml(err.code, err.message, resource, requestId));
    res.writeHead(err.status, { 'content-type': 'application/xml', 'content-length': body?.length ?? 0 });
    res.end(body);
    if (unread) res.once('finish', () => req.destroy());
  }
}
