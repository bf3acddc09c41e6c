// Who may send restricted opcodes (peer I/O, recovery and cluster-internal
// messages, format, shutdown, kill): the cluster's members, and the
// addresses the operator lists with --admin-allow (default: loopback, so
// that dog on the node itself works). Sheep has no authentication; this is
// the line between "can reach the port" and "can run the cluster".
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { addrToString, type SdNode } from '@sheepdog/common';

/** The address as sheep compares it: IPv4-mapped IPv6 as plain IPv4. */
export function plainAddress(a: string | undefined): string {
  if (!a) return '';
  return a.startsWith('::ffff:') && isIPv4(a.slice(7)) ? a.slice(7) : a;
}

export class AdminAllow {
  private constructor(private readonly list: BlockList, readonly text: string) {}

  static readonly DEFAULT = 'loopback';

  /**
   * "CIDR,CIDR,..." (a bare address is /32 or /128), "loopback" for
   * 127.0.0.0/8 and ::1, or "none": members only. Throws on anything else.
   */
  static parse(spec: string): AdminAllow {
    const list = new BlockList();
    const items = spec.split(',').map((x) => x.trim()).filter((x) => x !== '');
    if (!items.length) throw new Error(`invalid --admin-allow '${spec}' (expected CIDR[,CIDR]..., loopback or none)`);
    for (const it of items) {
      if (it === 'none') continue;
      if (it === 'loopback') {
        list.addSubnet('127.0.0.0', 8, 'ipv4');
        list.addAddress('::1', 'ipv6');
        continue;
      }
      const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(it);
      const ip = m?.[1] ?? '';
      const v4 = isIPv4(ip);
      if (!m || (!v4 && !isIPv6(ip))) throw new Error(`invalid --admin-allow entry '${it}' (expected an address or CIDR)`);
      const max = v4 ? 32 : 128;
      const prefix = m[2] === undefined ? max : Number(m[2]);
      if (prefix > max) throw new Error(`invalid --admin-allow entry '${it}' (prefix longer than ${max})`);
      list.addSubnet(ip, prefix, v4 ? 'ipv4' : 'ipv6');
    }
    return new AdminAllow(list, items.join(','));
  }

  allows(addr: string): boolean {
    if (isIPv4(addr)) return this.list.check(addr, 'ipv4');
    if (isIPv6(addr)) return this.list.check(addr, 'ipv6');
    return false;
  }
}

/** The addresses of the cluster's members, rebuilt when membership changes. */
export class MemberAddresses {
  private key?: unknown;
  private epoch = -1;
  private set = new Set<string>();

  constructor(private readonly source: () => { epoch: number; lists: SdNode[][] }) {}

  has(addr: string): boolean {
    const { epoch, lists } = this.source();
    if (epoch !== this.epoch || lists[0] !== this.key) {
      this.epoch = epoch;
      this.key = lists[0];
      this.set = new Set();
      for (const l of lists) {
        for (const n of l) {
          this.set.add(addrToString(n.addr));
          if (n.ioAddr) this.set.add(addrToString(n.ioAddr));
        }
      }
    }
    return this.set.has(addr);
  }
}
