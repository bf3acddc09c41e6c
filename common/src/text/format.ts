// Pure formatters for every table dog prints (spec §15 and the transcript).
// Fed with decoded structures; collie prints them, sheepfs serves them as
// files, so both show the same bytes. Unit tests call them directly.
import type { InodeHeader } from '../inode.js';
import type { SdNode } from '../node.js';
import type { EpochLog } from '../cluster.js';
import type { SdStat, RecoveryState, MdDisk } from '../structs.js';
import { addrToString } from '../node.js';
import {
  strnumber, printfFixed, rpad, lpad, hex, escapeName, localTime, localDate, localClock, ctime, redundancy,
} from './output.js';

export const VDI_LIST_HEADER =
  '  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n';

const nodeAddr = (n: Pick<SdNode, 'addr' | 'port'>) => `${addrToString(n.addr)}:${n.port}`;

export interface VdiListEntry {
  vid: number;
  header: InodeHeader;
  /** objects owned by this VDI / shared from other VDIs */
  mine: number;
  cow: number;
}

/** One line of `vdi list` (print_vdi_list). */
export function vdiListLine(e: VdiListEntry, raw: boolean): string {
  const h = e.header;
  const snapshot = h.snapCtime !== 0n;
  const clone = !snapshot && h.snapId === 1 && h.parentVdiId !== 0;
  const snapid = snapshot ? h.snapId : 0;
  const os = 2n ** BigInt(h.blockSizeShift || 22);
  const used = BigInt(e.mine) * os;
  const shared = BigInt(e.cow) * os;
  const sec = Number(h.createTime >> 32n);
  const red = redundancy(h.nrCopies, h.copyPolicy);
  if (raw) {
    const flag = snapshot ? 's' : clone ? 'c' : '=';
    return `${flag} ${escapeName(h.name)} ${snapid} ${h.vdiSize} ${used} ${shared} ${sec} ${hex(e.vid)} ${red} ${h.tag} ${h.blockSizeShift}\n`;
  }
  const flag = snapshot ? 's' : clone ? 'c' : ' ';
  return `${flag} ${lpad(h.name, 8)} ${rpad(snapid, 5)} ${rpad(strnumber(h.vdiSize), 7)} ${rpad(strnumber(used), 7)} ` +
    `${rpad(strnumber(shared), 7)} ${localTime(sec)}  ${rpad(hex(e.vid), 7)} ${rpad(red, 6)} ${rpad(h.tag, 13)} ${rpad(h.blockSizeShift, 3)}\n`;
}

export const NODE_LIST_HEADER = '  Id   Host:Port         V-Nodes       Zone\n';

export function nodeListText(nodes: SdNode[], raw: boolean): string {
  let s = raw ? '' : NODE_LIST_HEADER;
  nodes.forEach((n, i) => {
    const zone = n.zone >>> 0;
    s += raw ? `${i} ${nodeAddr(n)} ${n.nrVnodes} ${zone}\n` : `${rpad(i, 4)}   ${lpad(nodeAddr(n), 20)}\t${rpad(n.nrVnodes, 2)}${rpad(zone, 11)}\n`;
  });
  return s;
}

export interface NodeSpace {
  size: bigint;
  free: bigint;
}

const ratio = (used: bigint, size: bigint): number => (size === 0n ? 0 : Math.trunc((Number(used) / Number(size)) * 100));

export const NODE_INFO_HEADER = 'Id\tSize\tUsed\tAvail\tUse%\n';

export function nodeInfoLine(i: number, sp: NodeSpace, raw: boolean): string {
  const used = sp.size - sp.free;
  const r = ratio(used, sp.size);
  return raw
    ? `${i} ${strnumber(sp.size, true)} ${strnumber(used, true)} ${strnumber(sp.free, true)} ${r}%\n`
    : `${rpad(i, 2)}\t${strnumber(sp.size)}\t${strnumber(used)}\t${strnumber(sp.free)}\t${rpad(r, 3)}%\n`;
}

export function nodeInfoTotal(totalSize: bigint, totalFree: bigint, totalVdi: bigint, raw: boolean): string {
  const used = totalSize - totalFree;
  const r = ratio(used, totalSize);
  return raw
    ? `Total ${totalSize} ${used} ${totalFree} ${r}% ${totalVdi}\n`
    : `Total\t${strnumber(totalSize)}\t${strnumber(used)}\t${strnumber(totalFree)}\t${rpad(r, 3)}%\n\nTotal virtual image size\t${strnumber(totalVdi)}\n`;
}

export const RECOVERY_HEADER = 'Nodes In Recovery:\n  Id   Host:Port         V-Nodes       Zone       Progress\n';

export function recoveryLine(i: number, n: SdNode, st: RecoveryState, raw: boolean): string {
  if (raw) return `${i} ${nodeAddr(n)} ${n.nrVnodes} ${n.zone | 0} ${st.nrFinished} ${st.nrTotal}\n`;
  const pct = st.nrTotal === 0n ? 0 : Math.fround((100 * Math.fround(Number(st.nrFinished))) / Number(st.nrTotal));
  return `${rpad(i, 4)}   ${lpad(nodeAddr(n), 20)}${rpad(n.nrVnodes, 5)}${rpad(n.zone | 0, 11)}${rpad(printfFixed(pct, 1), 11)}%\n`;
}

/**
 * Deleted VDIs whose objects are still being reclaimed in the background
 * (this implementation's; not in dog): a section after `node recovery`'s
 * table, printed only while there are some.
 */
export const RECLAIM_HEADER = '\nDeleted VDIs Being Reclaimed:\n  VDI id   Node                  Progress  Objects left\n';

/** One VDI being reclaimed (node: host:port of the node reclaiming it, undefined while it waits its turn). */
export function reclaimLine(e: { vid: number; objectsDone: number; objectsTotal: number }, node: string | undefined): string {
  if (!node) return `  ${hex(e.vid).padEnd(8)} ${'(waiting)'.padEnd(20)}${'-'.padStart(10)}${'-'.padStart(14)}\n`;
  const pct = e.objectsTotal === 0 ? 100 : (100 * e.objectsDone) / e.objectsTotal;
  return `  ${hex(e.vid).padEnd(8)} ${node.padEnd(20)}${`${printfFixed(pct, 1)}%`.padStart(10)}${String(Math.max(0, e.objectsTotal - e.objectsDone)).padStart(14)}\n`;
}

export const STAT_HEADER = 'Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD\n';

export function statText(s: SdStat, raw: boolean, header = true): string {
  const row = (name: string, v: bigint[], wr: bigint, rd: bigint) =>
    raw ? `${name} ${v.join(' ')} ${wr} ${rd}\n` : `${name}\t${v.join('\t')}\t${strnumber(wr)}\t${strnumber(rd)}\n`;
  return (header && !raw ? STAT_HEADER : '') +
    row('Client', [s.gwActive, s.gwTotal, s.gwWrite, s.gwRead, s.gwRemove, s.gwFlush], s.gwBytesIn, s.gwBytesOut) +
    row('Peer', [s.peerActive, s.peerTotal, s.peerWrite, s.peerRead, s.peerRemove, 0n], s.peerBytesIn, s.peerBytesOut);
}

/** Status text of STAT_CLUSTER's result (SUCCESS = running). */
export interface ClusterInfoInput {
  result: number;
  resultText: string;
  logs: EpochLog[];
  verbose: boolean;
  raw: boolean;
  diff?: boolean;
}

export function clusterInfoText(ci: ClusterInfoInput): string {
  const first = ci.logs[0];
  let s = ci.raw ? '' : 'Cluster status: ';
  s += ci.result === 0 ? `running, auto-recovery ${first?.disableRecovery ? 'disabled' : 'enabled'}\n` : `${ci.resultText}\n`;
  if (ci.verbose) {
    if (!ci.raw) s += 'Cluster store: ';
    s += ci.result === 0 && first ? `${first.drvName} with ${redundancy(first.nrCopies, first.copyPolicy)} redundancy policy\n` : `${ci.resultText}\n`;
    if (!ci.raw) s += 'Cluster vnodes strategy: ';
    s += first && first.flags & 0x4 ? 'auto\n' : 'fixed\n';
    if (!ci.raw) s += 'Cluster vnode mode: ';
    s += first && first.flags & 0x2 ? 'disk\n' : 'node\n';
  } else {
    s += '\n';
  }
  if (!ci.raw && ci.logs.length > 0) {
    s += `Cluster created at ${ctime(Number(first.ctime >> 32n))}\n`;
    s += 'Epoch Time           Version [Host:Port:V-Nodes,,,]\n';
  }
  ci.logs.forEach((log, i) => {
    const t = ci.raw ? String(log.time) : localTime(Number(log.time), true);
    s += ci.raw ? `${t} ${log.epoch}` : `${t} ${rpad(log.epoch, 6)}`;
    let members: string[];
    if (ci.diff) {
      const prev = ci.logs[i + 1];
      if (!prev) members = ['formated'];
      else {
        const key = (n: SdNode) => nodeAddr(n);
        const before = new Set(prev.nodes.map(key));
        const after = new Set(log.nodes.map(key));
        members = [...log.nodes.filter((n) => !before.has(key(n))).map((n) => `+${key(n)}`),
          ...prev.nodes.filter((n) => !after.has(key(n))).map((n) => `-${key(n)}`)];
      }
    } else {
      members = log.nodes.map((n) => `${nodeAddr(n)}:${n.nrVnodes}`);
    }
    s += ` [${members.join(', ')}]\n`;
  });
  return s;
}

// ---- vdi tree (treeview.c) -------------------------------------------------

interface TreeNode {
  name: string;
  label: string;
  vid: number;
  pvid: number;
  highlight: boolean;
  children: TreeNode[];
}

export interface TreeInput {
  vid: number;
  header: InodeHeader;
}

export const TEXT_BOLD = '\x1b[1m';
export const TEXT_NORMAL = '\x1b[0m';

export function vdiTreeText(vdis: TreeInput[], highlight = false): string {
  const root: TreeNode = { name: '', label: '', vid: 0, pvid: 0, highlight: false, children: [] };
  const find = (parent: TreeNode, vid: number, name: string): TreeNode | undefined => {
    for (const c of parent.children) {
      if (c.vid === vid && c.name === name) return c;
      const r = find(c, vid, name);
      if (r) return r;
    }
    return undefined;
  };
  for (const v of vdis) {
    const h = v.header;
    const snap = h.snapCtime !== 0n;
    const label = snap ? `[${localTime(Number(h.createTime >> 32n))}]` : '(you are here)';
    const node: TreeNode = { name: h.name, label, vid: v.vid, pvid: h.parentVdiId, highlight: highlight && !snap, children: [] };
    (find(root, h.parentVdiId, h.name) ?? root).children.push(node);
  }
  // compaction: a child added before its parent moves under it.
  const compaction = (parent: TreeNode) => {
    for (const c of [...parent.children]) {
      const np = find(root, c.pvid, c.name);
      if (np && np !== parent) {
        parent.children.splice(parent.children.indexOf(c), 1);
        np.children.push(c);
      }
      compaction(c);
    }
  };
  compaction(root);
  const depth = (n: TreeNode): number => 1 + Math.max(0, ...n.children.map(depth));
  const d = depth(root) + 1;
  const width = new Array<number>(d).fill(0);
  const more = new Array<boolean>(d).fill(false);
  let out = '';
  const indent = (level: number, first: boolean, last: boolean) => {
    if (first) {
      out += last ? '---' : '-+-';
      return;
    }
    for (let lvl = 0; lvl < level - 1; lvl++) {
      out += ' '.repeat(width[lvl] + 1);
      out += more[lvl + 1] ? '| ' : '  ';
    }
    out += ' '.repeat(width[level - 1] + 1);
    out += last ? '`-' : '|-';
  };
  const dump = (cur: TreeNode, level: number, first: boolean, last: boolean) => {
    indent(level, first, last);
    out += cur.highlight ? TEXT_BOLD + cur.label + TEXT_NORMAL : cur.label;
    width[level] = cur.label.length;
    if (cur.children.length === 0) {
      out += '\n';
      return;
    }
    more[level] = !last;
    cur.children.forEach((c, i) => dump(c, level + 1, i === 0, i === cur.children.length - 1));
  };
  for (const v of root.children) {
    out += v.name;
    more[0] = false;
    width[0] = v.name.length;
    dump(v, 1, true, true);
  }
  return out;
}

// ---- vdi graph -------------------------------------------------------------

export const GRAPH_HEADER = 'digraph G {\n  node [shape = "box", fontname = "Courier"];\n\n  "0" [shape = "ellipse", label = "root"];\n\n';
export const GRAPH_FOOTER = '}\n';

export function vdiGraphEntry(vid: number, h: InodeHeader): string {
  const sec = Number(h.createTime >> 32n);
  const snap = h.snapCtime !== 0n;
  const snapid = snap ? h.snapId : 0;
  let s = `  "${hex(h.parentVdiId)}" -> "${hex(vid)}";\n`;
  s += `  "${hex(vid)}" [\n    group = "${h.name}",\n    label = "`;
  s += `Name: ${rpad(h.name, 10)}\\nTag:  ${rpad(hex(snapid), 10)}\\nSize: ${rpad(strnumber(h.vdiSize), 10)}\\n` +
    `Date: ${rpad(localDate(sec), 10)}\\nTime: ${rpad(localClock(sec), 10)}`;
  s += snap ? '"\n  ];\n\n' : '",\n    color="red"\n  ];\n\n';
  return s;
}

// ---- objects ---------------------------------------------------------------

export const OBJECT_MAP_HEADER = 'Index       VID\n';
export const objectMapLine = (idx: number, vid: number): string => `${String(idx).padStart(8, '0')} ${rpad(hex(vid), 8)}\n`;

/** `node md info` rows; raw rows start with the node's HOST:PORT, as dog 1.0 prints them. */
export function mdInfoText(disks: MdDisk[], raw: boolean, node = ''): string {
  let s = '';
  for (const d of disks) {
    const size = d.free + d.used;
    const r = ratio(d.used, size);
    s += raw
      ? `${node ? `${node} ` : ''}${d.idx} ${size} ${d.used} ${d.free} ${r}% ${d.path}\n`
      : `${rpad(d.idx, 2)}\t${strnumber(size)}\t${strnumber(d.used)}\t${strnumber(d.free)}\t${rpad(r, 3)}%\t${d.path}\n`;
  }
  return s;
}
export const MD_INFO_HEADER = 'Id\tSize\tUsed\tAvail\tUse%\tPath\n';

export const LOCK_LIST_HEADER = '  Name         Id  VDI id  Tag            Owner node(s)\n';
export function lockListLine(name: string, snapid: number, vid: number, tag: string, owners: string, raw: boolean): string {
  return raw
    ? `${escapeName(name)} ${snapid} ${hex(vid)} ${tag} ${owners}\n`
    : `  ${lpad(name, 12)} ${rpad(snapid, 2)} ${rpad(hex(vid), 7)}  ${lpad(tag, 13)}  ${owners}\n`;
}
