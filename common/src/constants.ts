// Numbers from the Sheepdog v1.0 wire protocol (see sheepdog-protocol.md §3–§6).

export const SD_PROTO_VER = 0x02;
export const SD_SHEEP_PROTO_VER = 0x0a;
export const SD_LISTEN_PORT = 7000;

export const SD_REQ_HEADER_SIZE = 48;
export const SD_RSP_HEADER_SIZE = 48;
/** Largest data_length a request or reply may carry: an object of shift 31 is 2 GiB. */
export const MAX_PAYLOAD = 2 ** 31;

export const Op = {
  CREATE_AND_WRITE_OBJ: 0x01,
  READ_OBJ: 0x02,
  WRITE_OBJ: 0x03,
  REMOVE_OBJ: 0x04,
  DISCARD_OBJ: 0x05,
  NEW_VDI: 0x11,
  LOCK_VDI: 0x12,
  RELEASE_VDI: 0x13,
  GET_VDI_INFO: 0x14,
  READ_VDIS: 0x15,
  FLUSH_VDI: 0x16,
  DEL_VDI: 0x17,
  GET_CLUSTER_DEFAULT: 0x18,

  GET_NODE_LIST: 0x82,
  MAKE_FS: 0x84,
  SHUTDOWN: 0x85,
  STAT_SHEEP: 0x86,
  STAT_CLUSTER: 0x87,
  GET_VDI_ATTR: 0x89,
  FORCE_RECOVER: 0x8a,
  GET_STORE_LIST: 0x90,
  SNAPSHOT: 0x91,
  RESTORE: 0x92,
  GET_SNAP_FILE: 0x93,
  CLEANUP: 0x94,
  TRACE_STATUS: 0x95,
  TRACE_READ_BUF: 0x96,
  STAT_RECOVERY: 0x97,
  FLUSH_DEL_CACHE: 0x98,
  NOTIFY_VDI_DEL: 0x99,
  KILL_NODE: 0x9a,
  TRACE_ENABLE: 0x9b,
  TRACE_DISABLE: 0x9c,
  GET_OBJ_LIST: 0xa1,
  GET_EPOCH: 0xa2,
  CREATE_AND_WRITE_PEER: 0xa3,
  READ_PEER: 0xa4,
  WRITE_PEER: 0xa5,
  REMOVE_PEER: 0xa6,
  SET_CACHE_SIZE: 0xa7,
  ENABLE_RECOVER: 0xa8,
  DISABLE_RECOVER: 0xa9,
  GET_VDI_COPIES: 0xab,
  COMPLETE_RECOVERY: 0xac,
  FLUSH_NODES: 0xad,
  FLUSH_PEER: 0xae,
  NOTIFY_VDI_ADD: 0xaf,
  DELETE_CACHE: 0xb0,
  MD_INFO: 0xb1,
  MD_PLUG: 0xb2,
  MD_UNPLUG: 0xb3,
  GET_HASH: 0xb4,
  REWEIGHT: 0xb5,
  GET_CACHE_INFO: 0xb6,
  CACHE_PURGE: 0xb7,
  STAT: 0xb8,
  GET_LOGLEVEL: 0xb9,
  SET_LOGLEVEL: 0xba,
  NFS_CREATE: 0xbb,
  NFS_DELETE: 0xbc,
  EXIST: 0xbd,
  CLUSTER_INFO: 0xbe,
  ALTER_CLUSTER_COPY: 0xbf,
  ALTER_VDI_COPY: 0xc0,
  DECREF_OBJ: 0xc1,
  DECREF_PEER: 0xc2,
  PREVENT_INODE_UPDATE: 0xc3,
  ALLOW_INODE_UPDATE: 0xc4,
  REPAIR_REPLICA: 0xc5,
  OIDS_EXIST: 0xc6,
  VDI_STATE_CHECKPOINT_CTL: 0xc7,
  INODE_COHERENCE: 0xc8,
  READ_DEL_VDIS: 0xc9,
  GET_RECOVERY: 0xca,
  SET_RECOVERY: 0xcb,
  SET_VNODES: 0xcc,
  GET_VNODES: 0xcd,

  // Peer operations of this implementation (upstream uses nothing above
  // 0xcd): recovery compares object versions across nodes.
  /** Every copy a node holds (live and set aside) with its version; reply: ObjectCopies. */
  OBJ_COPIES: 0xe0,
  /** A whole copy and its version; reply: 8-byte copy header, then the object's bytes. */
  FETCH_OBJ: 0xe1,
  /** Which of the (oid, version) records in the payload this node holds as current copies, at that version or newer. */
  CHECK_HELD: 0xe2,
  /** Start a scrub of this node's copies: obj.oid = a VDI id (0: all), obj.offset = MB/s (0: the default). */
  SCRUB: 0xe4,
  /** This node's scrub status, as JSON (ScrubStatus, common/src/scrub.ts). */
  SCRUB_STATUS: 0xe5,
  /** Farm store: this node's snapshot objects into its repository; payload: tag[256], time (u64 seconds). */
  FARM_SAVE: 0xe6,
  /** Farm store: a content file of this node's repository by its SHA-1 (obj.oid, obj.cow_oid, obj.offset: 8+8+4 bytes, LE; all zeros: the log). */
  FARM_READ: 0xe7,
  /** Farm store: remove a snapshot from this node's repository; payload: tag[256]. */
  FARM_DELETE: 0xe8,
  /** Farm store: this node's repository in figures, as JSON (FarmStat in common/src/farm.ts). */
  FARM_STAT: 0xe9,
  /** The deleted VDIs whose objects are not all reclaimed yet, and this node's progress on them; reply: ReclaimStatus (reclaim.ts). */
  RECLAIM_STATUS: 0xea,
  /** A copy's SHA-1 per 128 KiB slice, with its version; reply: see common/src/slices.ts (WILDCARD as FETCH_OBJ). */
  SLICE_HASHES: 0xeb,
  /** The erasure-code strip files a node holds (live only), with versions; reply: StripRecords (common/src/ec-strips.ts). */
  EC_STRIPS: 0xf0,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

const opNames = new Map<number, string>(Object.entries(Op).map(([k, v]) => [v, k]));
export function opName(op: number): string {
  return opNames.get(op) ?? `UNKNOWN(0x${op.toString(16)})`;
}

export const Flag = {
  CMD_WRITE: 0x0001,
  CMD_COW: 0x0002,
  CMD_CACHE: 0x0004,
  CMD_DIRECT: 0x0008,
  CMD_PIGGYBACK: 0x0010,
  CMD_TGT: 0x0020,
  CMD_FWD: 0x0040,
  CMD_RECOVERY: 0x0080,
  CMD_WILDCARD: 0x0100,
  CMD_CREAT: 0x0100,
  CMD_EXCL: 0x0200,
  CMD_DEL: 0x0400,
} as const;

export const ClusterFlag = {
  STRICT: 0x0001,
  DISKMODE: 0x0002,
  AUTO_VNODES: 0x0004,
  USE_LOCK: 0x0008,
  RECYCLE_VID: 0x0010,
  AVOID_DISKFULL: 0x0020,
  /**
   * Not upstream's (it uses bits 0-5): erasure-coded writes may go on with
   * fewer zones than D+P, storing as many strips as there are zones (data
   * first, then parity). Without it such writes are refused with HALT.
   */
  EC_FEW_ZONES: 0x8000,
} as const;

export const Res = {
  SUCCESS: 0x00,
  UNKNOWN: 0x01,
  NO_OBJ: 0x02,
  EIO: 0x03,
  VDI_EXIST: 0x04,
  INVALID_PARMS: 0x05,
  SYSTEM_ERROR: 0x06,
  VDI_LOCKED: 0x07,
  NO_VDI: 0x08,
  NO_BASE_VDI: 0x09,
  VDI_READ: 0x0a,
  VDI_WRITE: 0x0b,
  BASE_VDI_READ: 0x0c,
  BASE_VDI_WRITE: 0x0d,
  NO_TAG: 0x0e,
  STARTUP: 0x0f,
  VDI_NOT_LOCKED: 0x10,
  SHUTDOWN: 0x11,
  NO_MEM: 0x12,
  FULL_VDI: 0x13,
  VER_MISMATCH: 0x14,
  NO_SPACE: 0x15,
  WAIT_FOR_FORMAT: 0x16,
  WAIT_FOR_JOIN: 0x17,
  JOIN_FAILED: 0x18,
  HALT: 0x19,
  READONLY: 0x1a,
  INODE_INVALIDATED: 0x1d,
  OLD_NODE_VER: 0x81,
  NEW_NODE_VER: 0x82,
  NOT_FORMATTED: 0x83,
  INVALID_CTIME: 0x84,
  INVALID_EPOCH: 0x85,
  NETWORK_ERROR: 0x86,
  NO_CACHE: 0x87,
  BUFFER_SMALL: 0x88,
  FORCE_RECOVER: 0x89,
  NO_STORE: 0x8a,
  NO_SUPPORT: 0x8b,
  NODE_IN_RECOVERY: 0x8c,
  KILLED: 0x8d,
  OID_EXIST: 0x8e,
  AGAIN: 0x8f,
  STALE_OBJ: 0x90,
  CLUSTER_ERROR: 0x91,
  VDI_NOT_EMPTY: 0x92,
  NOT_FOUND: 0x93,
  INCOMPLETE: 0x94,
  COLLECTING_CINFO: 0x95,
  GATEWAY_MODE: 0x97,
  INVALID_VNODES_STRATEGY: 0x98,
  NO_CHECKPOINT_ENTRY: 0x99,
  /** Not upstream's: a restricted opcode from an address that is neither a member nor allowed (sheep --admin-allow). */
  NOT_PERMITTED: 0xa0,
} as const;
export type ResultCode = (typeof Res)[keyof typeof Res];

// The English texts upstream dog prints for each result (sd_strerror).
const resultMessages: Record<number, string> = {
  [Res.SUCCESS]: 'Success',
  [Res.UNKNOWN]: 'Unknown error',
  [Res.NO_OBJ]: 'No object found',
  [Res.EIO]: 'I/O error',
  [Res.VDI_EXIST]: 'VDI exists already',
  [Res.INVALID_PARMS]: 'Invalid parameters',
  [Res.SYSTEM_ERROR]: 'System error',
  [Res.VDI_LOCKED]: 'VDI is already locked',
  [Res.NO_VDI]: 'No VDI found',
  [Res.NO_BASE_VDI]: 'No base VDI found',
  [Res.VDI_READ]: 'Failed to read from requested VDI',
  [Res.VDI_WRITE]: 'Failed to write to requested VDI',
  [Res.BASE_VDI_READ]: 'Failed to read from base VDI',
  [Res.BASE_VDI_WRITE]: 'Failed to write to base VDI',
  [Res.NO_TAG]: 'Failed to find requested tag',
  [Res.STARTUP]: 'System is still booting',
  [Res.VDI_NOT_LOCKED]: 'VDI is not locked',
  [Res.SHUTDOWN]: 'System is shutting down',
  [Res.NO_MEM]: 'Out of memory on server',
  [Res.FULL_VDI]: 'Maximum number of VDIs reached',
  [Res.VER_MISMATCH]: 'Protocol version mismatch',
  [Res.NO_SPACE]: 'Server has no space for new objects',
  [Res.WAIT_FOR_FORMAT]: 'Waiting for cluster to be formatted',
  [Res.WAIT_FOR_JOIN]: 'Waiting for other nodes to join cluster',
  [Res.JOIN_FAILED]: 'Node has failed to join cluster',
  [Res.HALT]: 'IO has halted as there are not enough living nodes',
  [Res.READONLY]: 'Object is read-only',
  [Res.INODE_INVALIDATED]: 'Inode object is invalidated',
  [Res.OLD_NODE_VER]: 'Request has an old epoch',
  [Res.NEW_NODE_VER]: 'Request has a new epoch',
  [Res.NOT_FORMATTED]: 'Cluster has not been formatted',
  [Res.INVALID_CTIME]: 'Creation times differ',
  [Res.INVALID_EPOCH]: 'Invalid epoch',
  [Res.NETWORK_ERROR]: 'Network error between sheep',
  [Res.NO_CACHE]: 'No cache object found',
  [Res.BUFFER_SMALL]: 'The buffer is too small',
  [Res.FORCE_RECOVER]: 'Cluster is running/halted and cannot be force recovered',
  [Res.NO_STORE]: 'Targeted backend store is not found',
  [Res.NO_SUPPORT]: 'Operation is not supported by backend store',
  [Res.NODE_IN_RECOVERY]: 'Targeted node is in recovery',
  [Res.KILLED]: 'Node is killed',
  [Res.OID_EXIST]: 'Object ID exists already',
  [Res.AGAIN]: 'Ask to try again',
  [Res.STALE_OBJ]: 'Object may be stale',
  [Res.CLUSTER_ERROR]: 'Cluster driver error',
  [Res.VDI_NOT_EMPTY]: 'VDI is not empty',
  [Res.NOT_FOUND]: 'Cannot found target',
  [Res.INCOMPLETE]: 'Object (in kv) is incomplete uploading',
  [Res.COLLECTING_CINFO]: 'sheep is collecting cluster wide status of VDI',
  [Res.GATEWAY_MODE]: 'Targeted node is gateway mode',
  [Res.INVALID_VNODES_STRATEGY]: 'Invalid cluster vnodes strategy',
  [Res.NO_CHECKPOINT_ENTRY]: 'Checkpoint entry is not found',
  [Res.NOT_PERMITTED]: 'Operation not permitted from this address (not a cluster member, nor in sheep --admin-allow)',
};

export function resultMessage(code: number): string {
  return resultMessages[code] ?? `Invalid error code ${code.toString(16)}`;
}

export function resultName(code: number): string {
  for (const [k, v] of Object.entries(Res)) if (v === code) return k;
  return `0x${code.toString(16)}`;
}

// Cluster status as carried in cluster_info.status.
export const ClusterStatus = { OK: 1, WAIT: 2, SHUTDOWN: 3, KILLED: 4 } as const;

export const SD_MAX_COPIES = 31;
export const SD_DEFAULT_COPIES = 3;
export const SD_DEFAULT_VNODES = 128;
export const SD_DEFAULT_BLOCK_SIZE_SHIFT = 22;
export const SD_DATA_OBJ_SIZE = 1 << 22;
export const SD_MAX_NODES = 6144;
export const SD_MAX_VDI_LEN = 256;
export const SD_MAX_VDI_TAG_LEN = 256;
export const SD_MAX_VDI_ATTR_KEY_LEN = 256;
export const SD_MAX_VDI_ATTR_VALUE_LEN = 65536;
export const SD_NR_VDIS = 1 << 24;
export const SD_VDI_BITMAP_SIZE = SD_NR_VDIS / 8; // 2,097,152 bytes
export const MAX_DATA_OBJS = 1 << 20;
export const SD_INODE_HEADER_SIZE = 4664;
export const SD_INODE_DATA_INDEX_SIZE = 4 * MAX_DATA_OBJS; // 4,194,304
export const SD_INODE_QEMU_SIZE = SD_INODE_HEADER_SIZE + SD_INODE_DATA_INDEX_SIZE; // 4,198,968
export const SD_INODE_GREF_OFFSET = SD_INODE_QEMU_SIZE;
export const SD_INODE_SIZE = SD_INODE_QEMU_SIZE + 8 * MAX_DATA_OBJS; // 12,587,576
export const SD_ATTR_OBJ_SIZE = 66320;
export const SD_LEDGER_OBJ_SIZE = 4 * MAX_DATA_OBJS;
export const SD_BTREE_OBJ_SIZE = 4 * MAX_DATA_OBJS;
export const SD_NODE_SIZE = 80;
export const SD_NODE_ID_SIZE = 40;
export const SD_EPOCH_LOG_HEADER_SIZE = 48;
export const SD_CLUSTER_INFO_SIZE = 48 + SD_MAX_NODES * SD_NODE_SIZE; // 491,568
export const SD_VDI_STATE_SIZE = 1428;
export const SD_RECOVERY_STATE_SIZE = 24;
export const SD_RECOVERY_THROTTLING_SIZE = 24;
// Bounds of the recovery throttle (SET_RECOVERY, `node recovery
// set-throttle`): objects recovered at once, and the pause after each object.
// Larger values would mean as many concurrent workers, or a pause a timer
// cannot hold; 0 means "no throttle" for both.
export const RECOVERY_MAX_EXEC_COUNT_LIMIT = 1000;
export const RECOVERY_INTERVAL_LIMIT_MS = 60_000;
export const SD_STAT_SIZE = 120;
export const SD_MD_INFO_SIZE = 263688;
export const SD_MAX_VDI_SIZE_HYPER = 2 ** 54;
export const SD_STORE_LIST_LEN = 512;

// Largest request payload or reply buffer we accept; anything larger is
// refused before allocating (an inode read by dog is the biggest legitimate one).
export const SD_MAX_REQUEST_DATA = 1 << 31;
