// One S3 request as the handlers see it: who signed it, the bucket and
// key it names, its query, and helpers to answer.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { S3Error } from './errors.js';
import type { AuthResult } from './auth.js';
import type { S3Store } from './store.js';
import { xmlDoc } from './xml.js';

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  store: S3Store;
  auth: AuthResult;
  bucket: string;
  key: string;
  query: Map<string, string>;
  requestId: string;
}

export function sendXml(c: Ctx, root: string, body: Record<string, unknown>, status = 200): void {
  const x = Buffer.from(xmlDoc(root, body));
  c.res.writeHead(status, { 'content-type': 'application/xml', 'content-length': x.length });
  c.res.end(x);
}

export function sendEmpty(c: Ctx, status: number, headers: Record<string, string | number> = {}): void {
  c.res.writeHead(status, { ...headers, 'content-length': 0 });
  c.res.end();
}

/** A non-negative integer header or query value, or undefined when absent. */
export function intParam(v: string | undefined, name: string, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,16}$/.test(v) || Number(v) > max) throw new S3Error('InvalidArgument', `${name} must be an integer between 0 and ${max}`);
  return Number(v);
}

export function header(c: Ctx, name: string): string | undefined {
  const v = c.req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export const isoTime = (ms: number) => new Date(ms).toISOString();
export const quoteEtag = (e: string) => `"${e}"`;
