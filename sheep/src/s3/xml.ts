// S3's XML in and out (fast-xml-parser): responses are built from plain
// objects, request bodies parsed with repeated elements always as arrays.
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { S3Error } from './errors.js';

export const S3_NS = 'http://s3.amazonaws.com/doc/2006-03-01/';

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@', suppressEmptyNode: false, processEntities: true });
const parser = new XMLParser({
  ignoreAttributes: true, parseTagValue: false, trimValues: true, processEntities: true, htmlEntities: true, removeNSPrefix: true,
  isArray: (name) => name === 'Object' || name === 'Part',
});

/** <?xml ...?><root xmlns=S3>body</root> */
export function xmlDoc(root: string, body: Record<string, unknown>): string {
  return '<?xml version="1.0" encoding="UTF-8"?>\n' + builder.build({ [root]: { '@xmlns': S3_NS, ...body } });
}

export function errorXml(code: string, message: string, resource: string, requestId: string): string {
  return '<?xml version="1.0" encoding="UTF-8"?>\n' + builder.build({ Error: { Code: code, Message: message, Resource: resource, RequestId: requestId } });
}

/** Parse a request body; MalformedXML if it is not XML with the expected root. */
export function parseXml(body: Buffer, root: string): Record<string, unknown> {
  let doc: Record<string, unknown>;
  try {
    doc = parser.parse(body.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new S3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema');
  }
  const r = doc?.[root];
  if (r === undefined) throw new S3Error('MalformedXML', `The XML you provided has no ${root} element`);
  return (typeof r === 'object' && r !== null ? r : {}) as Record<string, unknown>;
}
