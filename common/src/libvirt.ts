// A libvirt <disk> element for a VDI (collie vdi libvirt-xml, sheepfs
// vdi/NAME/libvirt.xml): a network disk, protocol "nbd" through a sheep's
// NBD listener (QEMU 6 and later, which dropped the sheepdog driver) or
// protocol "sheepdog" straight to a sheep (QEMU up to 5.2). Built and parsed
// with fast-xml-parser, so names with XML's special characters come out
// escaped and read back unchanged.
import { XMLBuilder, XMLParser } from 'fast-xml-parser';

export interface LibvirtDisk {
  /** VDI name */
  name: string;
  /** snapshot id or tag; the disk is then read-only */
  snapshot?: string;
  protocol: 'nbd' | 'sheepdog';
  host: string;
  port: number;
  /** guest device name (default vda) */
  target?: string;
  /** guest bus (default virtio) */
  bus?: string;
  /** the VDI id, as the disk's serial (sheepdog-VID in hex): stable for the guest's /dev/disk/by-id */
  vdiId?: number;
}

const ATTR = '@_';

/** The source name: NAME, or NAME:SNAPSHOT (both protocols take a snapshot id or tag after a colon). */
export const libvirtSourceName = (d: Pick<LibvirtDisk, 'name' | 'snapshot'>): string => (d.snapshot ? `${d.name}:${d.snapshot}` : d.name);

/** The <disk> element, indented, ending in a newline. */
export function libvirtDiskXml(d: LibvirtDisk): string {
  const disk: Record<string, unknown> = {
    [`${ATTR}type`]: 'network',
    [`${ATTR}device`]: 'disk',
    driver: { [`${ATTR}name`]: 'qemu', [`${ATTR}type`]: 'raw', [`${ATTR}cache`]: 'none' },
    source: {
      [`${ATTR}protocol`]: d.protocol,
      [`${ATTR}name`]: libvirtSourceName(d),
      host: { [`${ATTR}name`]: d.host, [`${ATTR}port`]: String(d.port) },
    },
    target: { [`${ATTR}dev`]: d.target ?? 'vda', [`${ATTR}bus`]: d.bus ?? 'virtio' },
  };
  if (d.vdiId !== undefined) disk.serial = `sheepdog-${d.vdiId.toString(16)}`;
  if (d.snapshot) disk.readonly = '';
  const b = new XMLBuilder({
    ignoreAttributes: false, attributeNamePrefix: ATTR, format: true, indentBy: '  ', suppressEmptyNode: true,
  });
  return b.build({ disk });
}

/** Read a <disk> element back (the fields libvirtDiskXml writes); throws on anything else. */
export function parseLibvirtDiskXml(xml: string): LibvirtDisk & { readonly: boolean } {
  const p = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: ATTR, parseAttributeValue: false, parseTagValue: false });
  const doc = p.parse(xml, true) as { disk?: Record<string, unknown> };
  const disk = doc.disk as Record<string, Record<string, string> & { host?: Record<string, string> }> | undefined;
  if (!disk || (disk as unknown as Record<string, string>)[`${ATTR}type`] !== 'network') throw new Error('not a network <disk> element');
  const src = disk.source;
  const protocol = src?.[`${ATTR}protocol`];
  if (protocol !== 'nbd' && protocol !== 'sheepdog') throw new Error(`unexpected source protocol '${protocol}'`);
  const full = src[`${ATTR}name`] ?? '';
  const colon = full.lastIndexOf(':');
  const readonly = 'readonly' in disk;
  const serial = (disk as unknown as Record<string, string>).serial;
  return {
    name: readonly && colon > 0 ? full.slice(0, colon) : full,
    snapshot: readonly && colon > 0 ? full.slice(colon + 1) : undefined,
    protocol,
    host: src.host?.[`${ATTR}name`] ?? '',
    port: Number(src.host?.[`${ATTR}port`]),
    target: disk.target?.[`${ATTR}dev`],
    bus: disk.target?.[`${ATTR}bus`],
    vdiId: typeof serial === 'string' && /^sheepdog-[0-9a-f]+$/.test(serial) ? parseInt(serial.slice(9), 16) : undefined,
    readonly,
  };
}
