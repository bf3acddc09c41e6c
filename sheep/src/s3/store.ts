// The gateway's view of the cluster: bucket VDIs found, created and deleted
// through the op table (as a client's requests would be), opened over the
// in-process gateway; and the access keys of s3/.users.
import {
  Op, Flag, Res, SheepdogError, RequestHeader, encodeRequest, encodeFixedString, VdiIO, VdiBackend, vidToVdiOid,
  decodeInodeHeader, S3_BUCKET_PREFIX, S3_USERS_VDI, S3_BUCKET_VDI_SIZE, S3User, decodeS3Users, s3UsersLength,
  encodeBucketSuper, S3_DATA_START,
} from '@sheepdog/common';
import type { Sheep } from '../sheep.js';
import { execute } from '../ops.js';
import { Bucket } from './bucket.js';
import { S3Error } from './errors.js';

/** Unknown access keys make us re-read s3/.users at most this often. */
const USERS_MISS_INTERVAL_MS = 1000;
/** A bucket's superblock is compared with the VDI's at most this often (other gateways' writes). */
const REFRESH_MS = 1000;
/** Known keys are trusted for this long (a deleted key stops working after it). */
const USERS_TTL_MS = 5000;

export class S3Store {
  private buckets = new Map<string, Promise<Bucket>>();
  /** What each VDI id is (a VDI's name and creation time never change): a bucket, or null for any other VDI. */
  private names = new Map<number, { name: string; created: number } | null>();
  private users = new Map<string, S3User>();
  private usersAt = 0;
  private usersLoading?: Promise<void>;

  constructor(private readonly sheep: Sheep, private readonly backendFor: () => VdiBackend) {}

  private async exec(fields: Parameters<typeof encodeRequest>[0], payload: Buffer): Promise<number> {
    const h = new RequestHeader(encodeRequest({ ...fields, dataLength: payload.length }));
    const r = await execute(this.sheep, h, payload);
    if ((r.result ?? Res.SUCCESS) !== Res.SUCCESS) throw new SheepdogError(r.result!);
    return r.vdi?.vdiId ?? 0;
  }

  private lookup(vdiName: string): Promise<number> {
    return this.exec({ opcode: Op.GET_VDI_INFO, protoVer: 1, flags: Flag.CMD_WRITE }, Buffer.concat([encodeFixedString(vdiName, 256), encodeFixedString('', 256)]));
  }

  /** The bucket, loaded once per gateway; NoSuchBucket if its VDI does not exist. */
  bucket(name: string): Promise<Bucket> {
    let p = this.buckets.get(name);
    if (!p) {
      p = (async () => {
        let vid: number;
        try {
          vid = await this.lookup(S3_BUCKET_PREFIX + name);
        } catch (e) {
          if (e instanceof SheepdogError && e.result === Res.NO_VDI) throw new S3Error('NoSuchBucket', 'The specified bucket does not exist');
          throw e;
        }
        const open = () => VdiIO.open(this.backendFor(), vid);
        return Bucket.load(name, await open(), open);
      })();
      this.buckets.set(name, p);
      p.catch(() => this.buckets.delete(name));
      return p;
    }
    return p.then(async (b) => {
      await b.refresh(REFRESH_MS);
      return b;
    });
  }

  /**
   * The bucket, for a request that changes it: only one gateway writes a
   * bucket at a time (the first to, until its node leaves the cluster);
   * the others answer such requests with 503 and say which node writes it.
   */
  async bucketForWrite(name: string): Promise<Bucket> {
    const b = await this.bucket(name);
    const w = await this.sheep.claimS3Writer(b.io.vid);
    if (!w.self) {
      throw new S3Error('ServiceUnavailable', `bucket ${name} is written through the S3 gateway of node ${w.writer ?? '(unknown)'}: send requests that change it there`);
    }
    if (w.fresh) await b.refresh(0);
    return b;
  }

  async createBucket(name: string): Promise<void> {
    let vid: number;
    try {
      vid = await this.exec({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, vdi: { vdiSize: BigInt(S3_BUCKET_VDI_SIZE), blockSizeShift: 22 } }, encodeFixedString(S3_BUCKET_PREFIX + name, 256));
    } catch (e) {
      if (e instanceof SheepdogError && e.result === Res.VDI_EXIST) throw new S3Error('BucketAlreadyOwnedByYou', 'Your previous request to create the named bucket succeeded and you already own it.');
      throw e;
    }
    // the superblock makes it a bucket; one written later by Bucket.load does as well
    const io = await VdiIO.open(this.backendFor(), vid);
    await io.write(0, encodeBucketSuper({ logLen: 0, dataEnd: S3_DATA_START, created: Date.now() }));
  }

  async deleteBucket(name: string): Promise<void> {
    const b = await this.bucketForWrite(name);
    if (b.objects.size > 0) throw new S3Error('BucketNotEmpty', 'The bucket you tried to delete is not empty');
    this.buckets.delete(name);
    await this.exec({ opcode: Op.DEL_VDI, flags: Flag.CMD_WRITE }, Buffer.concat([encodeFixedString(S3_BUCKET_PREFIX + name, 256), encodeFixedString('', 256)]));
  }

  /** Every bucket VDI of the cluster (working VDIs named s3/...). */
  async listBuckets(): Promise<{ name: string; created: number }[]> {
    const out: { name: string; created: number }[] = [];
    for (const st of this.sheep.vdis.states.values()) {
      if (st.deleted || st.snapshot) continue;
      let b = this.names.get(st.vid);
      if (b === undefined) {
        try {
          const h = decodeInodeHeader(await this.sheep.gw.read(vidToVdiOid(st.vid), 0, 572));
          const isBucket = h.snapCtime === 0n && h.name.startsWith(S3_BUCKET_PREFIX) && h.name !== S3_USERS_VDI;
          b = isBucket ? { name: h.name.slice(S3_BUCKET_PREFIX.length), created: Number(h.createTime >> 32n) * 1000 } : null;
          this.names.set(st.vid, b);
        } catch { continue; /* deleted meanwhile */ }
      }
      if (b) out.push(b);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** The secret of an access key, from s3/.users (re-read when stale or when the key is unknown). */
  async secretOf(accessKey: string): Promise<string | undefined> {
    const now = Date.now();
    const stale = now - this.usersAt > USERS_TTL_MS;
    if (stale || (!this.users.has(accessKey) && now - this.usersAt > USERS_MISS_INTERVAL_MS)) await this.loadUsers();
    return this.users.get(accessKey)?.secretKey;
  }

  private loadUsers(): Promise<void> {
    if (!this.usersLoading) {
      this.usersLoading = (async () => {
        const m = new Map<string, S3User>();
        try {
          const vid = await this.lookup(S3_USERS_VDI);
          const io = await VdiIO.open(this.backendFor(), vid);
          const head = await io.read(0, 16);
          const len = s3UsersLength(head);
          for (const u of decodeS3Users(len ? await io.read(0, 16 + len) : head)) m.set(u.accessKey, u);
        } catch (e) {
          if (!(e instanceof SheepdogError && e.result === Res.NO_VDI)) throw e;
        }
        this.users = m;
        this.usersAt = Date.now();
      })().finally(() => { this.usersLoading = undefined; });
    }
    return this.usersLoading;
  }
}
