// ListBuckets, ListObjects (V1, which s3cmd and rclone use) and
// ListObjectsV2: prefix, delimiter, max-keys, markers and continuation
// tokens, over the bucket's sorted key list.
import { Ctx, sendXml, intParam, isoTime, quoteEtag } from './context.js';
import { S3Error } from './errors.js';
import { compareKeys } from './bucket.js';
import { encodeKey } from './objects.js';

const OWNER = { ID: 'sheepdog', DisplayName: 'sheepdog' };

export async function listBuckets(c: Ctx): Promise<void> {
  const bs = await c.store.listBuckets();
  sendXml(c, 'ListAllMyBucketsResult', {
    Owner: OWNER,
    Buckets: { Bucket: bs.map((b) => ({ Name: b.name, CreationDate: isoTime(b.created) })) },
  });
}

interface Page {
  contents: string[];
  prefixes: string[];
  truncated: boolean;
  /** The last key or common prefix given out. */
  last?: string;
}

/** The first string after every string that starts with p (p not empty). */
function pastPrefix(p: string): string {
  return p.slice(0, -1) + String.fromCharCode(p.charCodeAt(p.length - 1) + 1);
}

/** Keys after `after` (skipping a common prefix it names), grouped by delimiter. */
function page(keys: readonly string[], keyIndex: (k: string) => number, startAt: number, prefix: string, delimiter: string, max: number, after: string | undefined): Page {
  const out: Page = { contents: [], prefixes: [], truncated: false };
  let i = startAt;
  while (i < keys.length) {
    const k = keys[i];
    if (!k.startsWith(prefix)) {
      if (compareKeys(k, prefix) > 0) break;
      i++;
      continue;
    }
    if (after !== undefined && (compareKeys(k, after) <= 0 || (delimiter && after.endsWith(delimiter) && k.startsWith(after)))) {
      i++;
      continue;
    }
    let item = k;
    let isPrefix = false;
    if (delimiter) {
      const d = k.indexOf(delimiter, prefix.length);
      if (d >= 0) {
        item = k.slice(0, d + delimiter.length);
        isPrefix = true;
      }
    }
    if (out.contents.length + out.prefixes.length >= max) {
      out.truncated = true;
      break;
    }
    if (isPrefix) {
      out.prefixes.push(item);
      // skip every key under this common prefix (a search, not a walk: there may be millions)
      i = Math.max(i + 1, keyIndex(pastPrefix(item)));
    } else {
      out.contents.push(k);
      i++;
    }
    out.last = item;
  }
  return out;
}

export async function listObjects(c: Ctx, v2: boolean): Promise<void> {
  const b = await c.store.bucket(c.bucket);
  const q = c.query;
  const prefix = q.get('prefix') ?? '';
  const delimiter = q.get('delimiter') ?? '';
  const max = Math.min(intParam(q.get('max-keys'), 'max-keys') ?? 1000, 1000);
  const urlEnc = q.get('encoding-type') === 'url';
  if (q.has('encoding-type') && !urlEnc) throw new S3Error('InvalidArgument', 'Invalid Encoding Method specified in Request');
  const enc = (s: string) => (urlEnc ? encodeKey(s) : s);
  let after: string | undefined;
  const token = q.get('continuation-token');
  if (v2) {
    if (token !== undefined) {
      const t = Buffer.from(token, 'base64url').toString('utf8');
      if (!t.startsWith('k:')) throw new S3Error('InvalidArgument', 'The continuation token provided is incorrect');
      after = t.slice(2);
    } else if (q.get('start-after')) after = q.get('start-after');
  } else if (q.get('marker')) after = q.get('marker');
  let from = b.keyIndex(after !== undefined && compareKeys(after, prefix) > 0 ? after : prefix);
  if (after && delimiter && after.endsWith(delimiter)) from = Math.max(from, b.keyIndex(pastPrefix(after)));
  const p = max === 0 ? { contents: [], prefixes: [], truncated: false } as Page : page(b.keys, (k) => b.keyIndex(k), from, prefix, delimiter, max, after);
  const contents = p.contents.map((k) => {
    const o = b.objects.get(k)!;
    return { Key: enc(k), LastModified: isoTime(o.mtime), ETag: quoteEtag(o.etag), Size: o.size, ...(v2 ? {} : { Owner: OWNER }), StorageClass: 'STANDARD' };
  });
  const common = { CommonPrefixes: p.prefixes.map((x) => ({ Prefix: enc(x) })) };
  if (v2) {
    sendXml(c, 'ListBucketResult', {
      Name: c.bucket, Prefix: enc(prefix), ...(delimiter ? { Delimiter: enc(delimiter) } : {}), MaxKeys: max,
      KeyCount: contents.length + p.prefixes.length, IsTruncated: p.truncated,
      ...(token !== undefined ? { ContinuationToken: token } : {}),
      ...(p.truncated && p.last !== undefined ? { NextContinuationToken: Buffer.from('k:' + p.last).toString('base64url') } : {}),
      ...(q.has('start-after') ? { StartAfter: enc(q.get('start-after')!) } : {}),
      ...(urlEnc ? { EncodingType: 'url' } : {}),
      Contents: contents, ...common,
    });
  } else {
    sendXml(c, 'ListBucketResult', {
      Name: c.bucket, Prefix: enc(prefix), Marker: enc(q.get('marker') ?? ''), ...(delimiter ? { Delimiter: enc(delimiter) } : {}), MaxKeys: max,
      IsTruncated: p.truncated, ...(p.truncated && p.last !== undefined ? { NextMarker: enc(p.last) } : {}),
      ...(urlEnc ? { EncodingType: 'url' } : {}),
      Contents: contents, ...common,
    });
  }
}
