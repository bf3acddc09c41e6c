// Scrub: read every copy this node holds, at a bounded rate, so that damage
// is found before a client needs the bytes (a copy that fails its block
// checksums is repaired from another replica, as on any read), and compare
// each object across its replicas: the node the placement names first asks
// the others for their version and hash, and a replica that is older, or
// differs at the same version (a split left by a crash), takes the first
// one's copy (REPAIR_REPLICA). Runs on demand (collie cluster scrub) and
// every --scrub-interval seconds.
import {
  Op, Res, SheepdogError, oidToVid, isVdiObj, isDataObj, nodeToString, sameNode, oidToHex, ScrubStatus,
} from '@sheepdog/common';
import type { Sheep } from './sheep.js';
import { log } from './log.js';
import { sleep } from './util.js';


export const DEFAULT_SCRUB_RATE = 32; // MB/s

export class Scrubber {
  status: ScrubStatus = { running: false, started: 0, finished: 0, checked: 0, total: 0, bytes: 0, damaged: 0, divergent: 0, vid: 0, rateMBs: DEFAULT_SCRUB_RATE };
  private cancelled = false;
  private timer?: NodeJS.Timeout;

  constructor(private readonly s: Sheep) {}

  /** Scrub every intervalSec seconds (0: only on demand). */
  every(intervalSec: number, rateMBs: number): void {
    if (this.timer) clearInterval(this.timer);
    if (!intervalSec) return;
    this.timer = setInterval(() => { if (this.s.status === 'ok') this.start(rateMBs, 0); }, intervalSec * 1000);
    this.timer.unref();
  }

  /** Start a scrub (of one VDI's objects, or all); false if one is running. */
  start(rateMBs: number, vid: number): boolean {
    if (this.status.running) return false;
    this.cancelled = false;
    this.status = {
      running: true, started: Date.now(), finished: 0, checked: 0, total: 0, bytes: 0, damaged: 0, divergent: 0, vid,
      rateMBs: rateMBs > 0 ? rateMBs : DEFAULT_SCRUB_RATE,
    };
    void this.run().catch((e) => log.warn(`scrub stopped: ${(e as Error).message}`)).finally(() => {
      this.status.running = false;
      this.status.finished = Date.now();
    });
    return true;
  }

  stop(): void {
    this.cancelled = true;
    if (this.timer) clearInterval(this.timer);
  }

  private async run(): Promise<void> {
    const s = this.s;
    const st = this.status;
    if (s.selfNode.nrVnodes === 0) return;
    const oids = (await s.store.copies()).filter((c) => !c.stale && (!st.vid || oidToVid(c.oid) === st.vid)).map((c) => c.oid);
    st.total = oids.length;
    log.info(`scrub: ${oids.length} object(s) at ${st.rateMBs} MB/s${st.vid ? ` (VDI ${st.vid.toString(16)})` : ''}`);
    const t0 = Date.now();
    for (const oid of oids) {
      if (this.cancelled || s.status !== 'ok') return;
      const size = s.gw.sizeOf(oid);
      let sound = true;
      try {
        await s.store.read(oid, 0, size, undefined, 'scrub');
      } catch (e) {
        // a damaged copy is reported, and repaired, by the store; anything else (removed meanwhile) is not ours to judge
        sound = false;
        if (e instanceof SheepdogError && e.result === Res.EIO) st.damaged++;
      }
      // only a copy that checked out is the one others are compared with
      if (sound) await this.compare(oid).catch((e) => log.debug(`scrub: comparing ${oidToHex(oid)}: ${(e as Error).message}`));
      st.checked++;
      st.bytes += size;
      // at most rateMBs: sleep off what the bytes so far were ahead of it
      const due = (st.bytes / (st.rateMBs * 1e6)) * 1000 - (Date.now() - t0);
      if (due > 0) await sleep(due);
    }
    log.info(`scrub done: ${st.checked} object(s), ${st.damaged} damaged, ${st.divergent} replica(s) that differed, in ${Date.now() - t0} ms`);
  }

  /** On the first holder the placement names: bring replicas that are older or differ to this copy. */
  private async compare(oid: bigint): Promise<void> {
    const s = this.s;
    if (!isDataObj(oid) && !isVdiObj(oid)) return;
    const targets = s.ring.placeOid(oid, s.copiesOf(oid));
    if (!targets.length || !sameNode(targets[0], s.selfNode) || s.recovery.pendingFor(oid)) return;
    const mine = await s.store.versionOf(oid);
    if (mine === undefined) return;
    const myHash = await s.store.sha1(oid, 'scrub');
    for (const n of targets.slice(1)) {
      const r = await s.peers.call(n, { opcode: Op.GET_HASH, epoch: s.epochNr, dataLength: 8, obj: { oid, tgtEpoch: s.epochNr } }, undefined, [Res.NO_OBJ]);
      if (r.rsp.result === Res.NO_OBJ) continue; // recovery's to bring, not ours
      const theirs = r.data.length >= 4 ? r.data.readUInt32LE(0) : 0;
      if (theirs > mine) continue; // newer there: this copy is the one behind, and recovery or its next read says so
      if (theirs === mine && r.rsp.hash.equals(myHash)) continue;
      this.status.divergent++;
      log.warn(`scrub: ${oidToHex(oid)} on ${nodeToString(n)} (version ${theirs}) differs from ours (version ${mine}): it takes our copy`);
      const rr = await s.peers.call(n, { opcode: Op.REPAIR_REPLICA, epoch: s.epochNr, forw: { oid, addr: s.selfNode.addr, port: s.selfNode.port } });
      if (rr.rsp.result !== Res.SUCCESS) log.warn(`scrub: ${nodeToString(n)} could not take our copy of ${oidToHex(oid)}`);
    }
  }
}
