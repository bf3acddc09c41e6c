// Minimal typings for fuse-native 2.x (CommonJS, no bundled types).
declare module 'fuse-native' {
  type Cb0 = (err: number) => void;
  namespace Fuse {
  interface Stat {
    mtime: Date;
    atime: Date;
    ctime: Date;
    size: number;
    mode: number;
    uid: number;
    gid: number;
    nlink?: number;
    blocks?: number;
    blksize?: number;
    ino?: number;
  }
  interface Ops {
    init?(cb: Cb0): void;
    getattr?(path: string, cb: (err: number, st?: Stat) => void): void;
    readdir?(path: string, cb: (err: number, names?: string[], stats?: Stat[]) => void): void;
    open?(path: string, flags: number, cb: (err: number, fd?: number) => void): void;
    create?(path: string, mode: number, cb: (err: number, fd?: number) => void): void;
    release?(path: string, fd: number, cb: Cb0): void;
    read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void): void;
    write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void): void;
    flush?(path: string, fd: number, cb: Cb0): void;
    fsync?(path: string, datasync: number, fd: number, cb: Cb0): void;
    truncate?(path: string, size: number, cb: Cb0): void;
    ftruncate?(path: string, fd: number, size: number, cb: Cb0): void;
    utimens?(path: string, atime: number, mtime: number, cb: Cb0): void;
    chmod?(path: string, mode: number, cb: Cb0): void;
    chown?(path: string, uid: number, gid: number, cb: Cb0): void;
    unlink?(path: string, cb: Cb0): void;
    mkdir?(path: string, mode: number, cb: Cb0): void;
    rmdir?(path: string, cb: Cb0): void;
    rename?(src: string, dest: string, cb: Cb0): void;
    statfs?(path: string, cb: (err: number, st?: Record<string, number>) => void): void;
    access?(path: string, mode: number, cb: Cb0): void;
    getxattr?(path: string, name: string, position: number, cb: (err: number, value?: Buffer | null) => void): void;
    listxattr?(path: string, cb: (err: number, list?: string[]) => void): void;
  }
  interface MountOpts {
    force?: boolean;
    mkdir?: boolean;
    debug?: boolean;
    timeout?: number | false | Record<string, number | false>;
    fsname?: string;
    subtype?: string;
    allowOther?: boolean;
    maxRead?: number;
    attrTimeout?: number;
    entryTimeout?: number;
  }
  }
  class Fuse {
    constructor(mnt: string, ops: Fuse.Ops, opts?: Fuse.MountOpts);
    mnt: string;
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    _fuseOptions(): string;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    static [errno: string]: unknown;
    static ENOENT: number;
    static EIO: number;
    static EROFS: number;
    static ENOSPC: number;
    static EACCES: number;
    static EINVAL: number;
    static EISDIR: number;
    static ENOTDIR: number;
    static EPERM: number;
    static EBUSY: number;
    static ENOTCONN: number;
    static EEXIST: number;
    static ENOTSUP: number;
    static ENOSYS: number;
    static EHOSTUNREACH: number;
    static ETIMEDOUT: number;
    static EAGAIN: number;
    static ENODATA: number;
    static ENXIO: number;
    static EFBIG: number;
  }
  export = Fuse;
}
