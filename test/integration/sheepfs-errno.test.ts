// sheepfs's errno choices and argument parsing, without a mount.
import { describe, it, expect } from 'vitest';
import { Res } from '@sheepdog/common';
import { resultErrno, errnoName, parseHostPort } from '../../sheepfs/src/fs.js';
import { parseArgs } from '../../sheepfs/src/main.js';

describe('sheepfs errno', () => {
  it('maps sheep results to errno that mean something', () => {
    const name = (r: number) => errnoName(resultErrno(r));
    expect(name(Res.NO_VDI)).toBe('ENOENT');
    expect(name(Res.NO_TAG)).toBe('ENOENT');
    expect(name(Res.READONLY)).toBe('EROFS');
    expect(name(Res.NO_SPACE)).toBe('ENOSPC');
    expect(name(Res.FULL_VDI)).toBe('ENOSPC');
    expect(name(Res.INVALID_PARMS)).toBe('EINVAL');
    expect(name(Res.VDI_LOCKED)).toBe('EBUSY');
    expect(name(Res.WAIT_FOR_FORMAT)).toBe('EAGAIN');
    expect(name(Res.EIO)).toBe('EIO');
    expect(name(Res.NETWORK_ERROR)).toBe('EIO');
  });

  it('parses sheep_info addresses', () => {
    expect(parseHostPort('10.0.0.2:7001')).toEqual({ host: '10.0.0.2', port: 7001 });
    expect(parseHostPort('node1')).toEqual({ host: 'node1', port: 7000 });
    expect(parseHostPort('[::1]:7002')).toEqual({ host: '::1', port: 7002 });
    expect(() => parseHostPort('a b')).toThrow(/expected HOST:PORT/);
    expect(() => parseHostPort('h:99999')).toThrow(/expected HOST:PORT/);
  });

  it('parses the upstream options', () => {
    const a = parseArgs(['-a', '10.1.1.1', '-p', '7001', '-k', '-o', '-d', 'mnt']);
    expect(a).toMatchObject({ address: '10.1.1.1', port: 7001, pageCache: true, objectCache: true, debug: true, foreground: true, timeout: 60 });
    expect(a.mountpoint).toBe(`${process.cwd()}/mnt`);
    const b = parseArgs(['--address', 'h', '--port', '7', '--foreground', '--pagecache', '--objectcache', '/m']);
    expect(b).toMatchObject({ address: 'h', port: 7, foreground: true, debug: false, pageCache: true, objectCache: true, mountpoint: '/m' });
    expect(parseArgs(['/m'])).toMatchObject({ address: '127.0.0.1', port: 7000, foreground: false, pageCache: false, objectCache: false });
    expect(() => parseArgs(['-p', '0', '/m'])).toThrow(/Invalid port/);
  });
});
