// The text of every read-only file. The collie-equivalent files are built
// with the formatters collie prints with (@sheepdog/common/text), so
// `cat MOUNT/vdi/list` and `collie vdi list` print the same bytes.
import { resultMessage, SdNode, InodeHeader, addrToString, statDataObjs, isSnapshot, libvirtDiskXml } from '@sheepdog/common';
import {
  clusterInfoText, VDI_LIST_HEADER, vdiListLine, nodeListText, NODE_INFO_HEADER, nodeInfoLine, nodeInfoTotal, statText,
  strnumber, localTime, hex, redundancy, printfFixed,
} from '@sheepdog/common/text';
import type { Cluster, ScannedVdi } from './sheep.js';
import * as log from './log.js';

/** `collie cluster info` */
export async function clusterInfo(c: Cluster): Promise<string> {
  const { result, logs } = await c.clusterLogs();
  return clusterInfoText({ result, resultText: resultMessage(result), logs, verbose: false, raw: false, diff: false });
}

/** `collie vdi list` */
export async function vdiList(c: Cluster): Promise<string> {
  let s = VDI_LIST_HEADER;
  for (const v of await c.vdis(true)) {
    const { mine, cow } = statDataObjs(v.vid, v.index!);
    s += vdiListLine({ vid: v.vid, header: v.header, mine, cow }, false);
  }
  return s;
}

/** `collie node list` */
export async function nodeList(c: Cluster): Promise<string> {
  return nodeListText((await c.nodes()).nodes, false);
}

/** `collie node info` */
export async function nodeInfo(c: Cluster): Promise<string> {
  const { nodes } = await c.nodes();
  const spaces = await Promise.all(nodes.map((n) => c.statSheep(n).catch((e: Error) => {
    log.warn(`node ${addrToString(n.addr)}:${n.port}: STAT_SHEEP failed: ${e.message}`);
    return undefined;
  })));
  let s = NODE_INFO_HEADER;
  let totalSize = 0n, totalFree = 0n, ok = 0;
  spaces.forEach((sp, i) => {
    if (!sp) return;
    s += nodeInfoLine(i, sp, false);
    totalSize += sp.size;
    totalFree += sp.free;
    ok++;
  });
  if (!ok) throw new Error('Cannot get information from any nodes');
  let totalVdi = 0n;
  for (const v of await c.vdis(false)) if (!isSnapshot(v.header)) totalVdi += v.header.vdiSize;
  return s + nodeInfoTotal(totalSize, totalFree, totalVdi, false);
}

const bytes = (n: bigint) => `${strnumber(n)} (${n} bytes)`;

/** vdi/NAME/info: the working VDI (or the newest snapshot if only snapshots remain). */
export function vdiInfo(name: string, all: ScannedVdi[]): string {
  const mine = all.filter((v) => v.header.name === name);
  const snaps = mine.filter((v) => isSnapshot(v.header)).sort((a, b) => a.header.snapId - b.header.snapId);
  const cur = mine.find((v) => !isSnapshot(v.header)) ?? snaps[snaps.length - 1];
  if (!cur) return '';
  const h = cur.header;
  const os = 2n ** BigInt(h.blockSizeShift || 22);
  const { mine: own, cow } = cur.index ? statDataObjs(cur.vid, cur.index) : { mine: 0, cow: 0 };
  const byVid = new Map(all.map((v) => [v.vid, v.header]));
  const parent = (p: number): string => {
    if (!p) return 'none';
    const ph = byVid.get(p);
    if (!ph) return `${hex(p)} (deleted)`;
    return isSnapshot(ph) ? `${ph.name} snapshot ${ph.snapId}${ph.tag ? ` (${ph.tag})` : ''}, VDI id ${hex(p)}` : `${ph.name}, VDI id ${hex(p)}`;
  };
  let s = '';
  s += `Name: ${h.name}\n`;
  s += `State: ${isSnapshot(h) ? 'snapshot only (no working VDI)' : !isSnapshot(h) && h.snapId === 1 && h.parentVdiId ? 'clone' : 'working'}\n`;
  s += `VDI id: ${hex(cur.vid)}\n`;
  s += `Size: ${bytes(h.vdiSize)}\n`;
  s += `Used: ${bytes(BigInt(own) * os)}\n`;
  s += `Shared: ${bytes(BigInt(cow) * os)}\n`;
  s += `Copies: ${redundancy(h.nrCopies, h.copyPolicy)}\n`;
  s += `Block size: ${bytes(os)} (shift ${h.blockSizeShift || 22})\n`;
  s += `Store: ${h.storePolicy ? 'hyper (B-tree index)' : 'flat index'}\n`;
  s += `Parent: ${parent(h.parentVdiId)}\n`;
  s += `Created: ${localTime(Number(h.createTime >> 32n), true)}\n`;
  s += `Snapshots: ${snaps.length}\n`;
  for (const sv of snaps) {
    const sh = sv.header;
    s += `  ${sh.snapId}${sh.tag ? ` ${sh.tag}` : ''}  ${localTime(Number(sh.snapCtime >> 32n), true)}  VDI id ${hex(sv.vid)}\n`;
  }
  return s;
}

/** node/ID/info */
export async function nodeDetail(c: Cluster, i: number, n: SdNode): Promise<string> {
  let s = `Id: ${i}\nHost:Port: ${addrToString(n.addr)}:${n.port}\nV-Nodes: ${n.nrVnodes}\nZone: ${n.zone >>> 0}\n`;
  try {
    const sp = await c.statSheep(n);
    const used = sp.size - sp.free;
    const pct = sp.size === 0n ? 0 : Math.trunc((Number(used) / Number(sp.size)) * 100);
    s += `Size: ${bytes(sp.size)}\nUsed: ${bytes(used)}\nAvail: ${bytes(sp.free)}\nUse%: ${pct}%\n`;
  } catch (e) {
    s += `Space: unavailable (${(e as Error).message})\n`;
  }
  return s;
}

/** node/ID/stat: `collie node stat` against that node. */
export async function nodeStat(c: Cluster, n: SdNode): Promise<string> {
  return statText(await c.stat(n), false);
}

/** node/ID/recovery */
export async function nodeRecovery(c: Cluster, n: SdNode): Promise<string> {
  const st = await c.recovery(n);
  if (!st.inRecovery) return 'Recovery: idle\n';
  const pct = st.nrTotal === 0n ? 0 : (100 * Number(st.nrFinished)) / Number(st.nrTotal);
  return `Recovery: running\nProgress: ${st.nrFinished}/${st.nrTotal} objects (${printfFixed(pct, 1)}%)\n`;
}

/** Snapshots of a name, by snapshot id. */
export function snapshotsOf(name: string, all: ScannedVdi[]): ScannedVdi[] {
  return all.filter((v) => v.header.name === name && isSnapshot(v.header)).sort((a, b) => a.header.snapId - b.header.snapId);
}

export const isSnap = (h: InodeHeader): boolean => isSnapshot(h);

/**
 * vdi/NAME/libvirt.xml: what `collie vdi libvirt-xml NAME` prints: the
 * working VDI, or (when only snapshots remain) the newest snapshot, read-only.
 */
export function libvirtXml(name: string, all: ScannedVdi[], at: { host: string; port: number }, protocol: 'nbd' | 'sheepdog'): string {
  const mine = all.filter((v) => v.header.name === name);
  const working = mine.find((v) => !isSnapshot(v.header));
  const newest = [...mine].sort((a, b) => b.header.snapId - a.header.snapId)[0];
  const v = working ?? newest;
  if (!v) throw new Error(`no VDI named '${name}'`);
  const snapshot = working ? undefined : String(v.header.snapId);
  return libvirtDiskXml({ name, snapshot, vdiId: v.vid, protocol, host: at.host, port: at.port });
}
