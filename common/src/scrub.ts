// A node's scrub status, the reply of SCRUB_STATUS (JSON): written by
// sheep's Scrubber (sheep/src/scrub.ts), read by collie cluster scrub and
// collie node scrub status.
export interface ScrubStatus {
  running: boolean;
  /** When the current (or last) scrub started and finished (ms; 0: never). */
  started: number;
  finished: number;
  checked: number;
  total: number;
  bytes: number;
  /** Copies here that failed their checksums (repaired from another replica). */
  damaged: number;
  /** Replicas elsewhere that were older or differed, and were told to take this node's copy. */
  divergent: number;
  /** The VDI scrubbed (0: all). */
  vid: number;
  rateMBs: number;
}
