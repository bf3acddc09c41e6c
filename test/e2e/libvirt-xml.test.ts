// collie vdi libvirt-xml and sheepfs vdi/NAME/libvirt.xml: a libvirt network
// <disk> that libvirt's own schema accepts (virt-xml-validate, Debian's
// libvirt-clients, inside a minimal domain), that parses back to what was
// asked, and that names a disk QEMU can really open over NBD.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseLibvirtDiskXml } from '@sheepdog/common';
import { startFormatted, runCollie, stopAll, freePort, SheepProc, run, ROOT } from '../helpers/cluster.js';
import { tool, have } from '../helpers/nbd.js';
import { fuseUnavailable, mountSheepfs } from '../helpers/sheepfs.js';
import { requirePrereq } from '../helpers/prereq.js';

requirePrereq(!have('virt-xml-validate') ? "virt-xml-validate is not installed (apt-get install libvirt-clients libxml2-utils)"
  : !have('xmllint') ? 'xmllint is not installed (apt-get install libxml2-utils)' : await fuseUnavailable());

const ODD = `a&b<"c'`; // XML's special characters in a VDI name

describe('libvirt <disk> XML', () => {
  let s: SheepProc;
  let nbdPort: number;
  let tmp: string;
  const dog = (args: string[], input?: Buffer) => runCollie(args, { port: s.port, input });

  /** virt-xml-validate on the disk inside a minimal domain: [exit status, output] */
  async function validate(disk: string): Promise<[number | null, string]> {
    const dom = ['<domain type="qemu">', '  <name>sheepdog-test</name>', '  <memory unit="MiB">64</memory>',
      '  <os>', '    <type arch="x86_64">hvm</type>', '  </os>', '  <devices>', disk.trimEnd(), '  </devices>', '</domain>', ''].join('\n');
    const f = path.join(tmp, `dom-${Math.random().toString(36).slice(2)}.xml`);
    await fsp.writeFile(f, dom);
    const r = await tool('virt-xml-validate', [f, 'domain']);
    return [r.code, r.stdout + r.stderr];
  }

  beforeAll(async () => {
    nbdPort = await freePort();
    s = await startFormatted(1, ['--nbd', `127.0.0.1:${nbdPort}`]);
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'sheep-libvirt-'));
    expect((await dog(['vdi', 'create', 'vm1', '16M'])).code).toBe(0);
    expect((await dog(['vdi', 'write', 'vm1', '0', '4096'], Buffer.alloc(4096, 0x5a))).code).toBe(0);
    expect((await dog(['vdi', 'snapshot', '-s', 'snap1', 'vm1'])).code).toBe(0);
    expect((await dog(['vdi', 'write', 'vm1', '0', '4096'], Buffer.alloc(4096, 0xa5))).code).toBe(0);
    expect((await dog(['vdi', 'create', ODD, '4M'])).code).toBe(0);
  });
  afterAll(async () => {
    await stopAll();
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('sheepdog protocol (old QEMU): valid, and names this sheep', async () => {
    const r = await dog(['vdi', 'libvirt-xml', 'vm1']);
    expect(r.code, r.stderr).toBe(0);
    const [code, out] = await validate(r.stdout);
    expect(code, out).toBe(0);
    expect(out).toMatch(/validates/);
    const d = parseLibvirtDiskXml(r.stdout);
    const vid = (await dog(['vdi', 'list', '-r', 'vm1'])).stdout.split('\n').find((l) => l.startsWith('='))!.split(' ')[7];
    expect(d).toEqual({ name: 'vm1', snapshot: undefined, protocol: 'sheepdog', host: '127.0.0.1', port: s.port, target: 'vda', bus: 'virtio', vdiId: parseInt(vid, 16), readonly: false });
  });

  it('nbd protocol: valid, and QEMU reads the VDI through what it names', async () => {
    const r = await dog(['vdi', 'libvirt-xml', 'vm1', '--nbd', `127.0.0.1:${nbdPort}`, '-t', 'vdb']);
    expect(r.code, r.stderr).toBe(0);
    const [code, out] = await validate(r.stdout);
    expect(code, out).toBe(0);
    const d = parseLibvirtDiskXml(r.stdout);
    expect(d).toMatchObject({ name: 'vm1', protocol: 'nbd', host: '127.0.0.1', port: nbdPort, target: 'vdb', readonly: false });
    const io = await tool('qemu-io', ['-f', 'raw', '-c', 'read -P 0xa5 0 4k', `nbd://${d.host}:${d.port}/${d.name}`]);
    expect(io.code, io.stderr).toBe(0);
    expect(io.stdout).not.toMatch(/fail/i);
  });

  it('a snapshot is a read-only disk whose source is NAME:TAG', async () => {
    const r = await dog(['vdi', 'libvirt-xml', 'vm1', '-s', 'snap1', '--nbd', `127.0.0.1:${nbdPort}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/<readonly\/>/);
    expect((await validate(r.stdout))[0]).toBe(0);
    const d = parseLibvirtDiskXml(r.stdout);
    expect(d).toMatchObject({ name: 'vm1', snapshot: 'snap1', readonly: true });
    const io = await tool('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x5a 0 4k', `nbd://${d.host}:${d.port}/${d.name}:${d.snapshot}`]);
    expect(io.code, io.stderr).toBe(0);
    expect(io.stdout).not.toMatch(/fail/i);
  });

  it('names with XML special characters are escaped and read back unchanged', async () => {
    const r = await dog(['vdi', 'libvirt-xml', ODD]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('name="a&amp;b&lt;&quot;c&apos;"');
    expect((await validate(r.stdout))[0]).toBe(0);
    expect(parseLibvirtDiskXml(r.stdout).name).toBe(ODD);
  });

  it('the validator is not a formality: a wrong protocol fails it', async () => {
    const r = await dog(['vdi', 'libvirt-xml', 'vm1']);
    const [code, out] = await validate(r.stdout.replace('protocol="sheepdog"', 'protocol="sheepdogg"'));
    expect(code).not.toBe(0);
    expect(out).toMatch(/fails to validate/);
  });

  it('errors: a missing VDI, a bad --nbd, a bad target', async () => {
    const miss = await dog(['vdi', 'libvirt-xml', 'nosuch']);
    expect(miss.code).not.toBe(0);
    expect(miss.stdout).toBe('');
    expect(miss.stderr).toMatch(/nosuch/);
    const bad = await dog(['vdi', 'libvirt-xml', 'vm1', '--nbd', 'localhost']);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toBe("Invalid NBD address 'localhost' (expected HOST:PORT)\n");
    expect((await dog(['vdi', 'libvirt-xml', 'vm1', '-t', '../x'])).code).toBe(64);
    const fsBad = await run(path.join(ROOT, 'sheepfs/bin/sheepfs.js'), ['--nbd', 'nohost', '-f', tmp]);
    expect(fsBad.code).toBe(64);
    expect(fsBad.stderr).toContain("sheepfs: Invalid NBD address 'nohost' (expected HOST:PORT)");
  });

  it('sheepfs vdi/NAME/libvirt.xml shows what collie prints', async () => {
    const plain = await mountSheepfs(s.port);
    try {
      expect(await fsp.readFile(plain.p('vdi/vm1/libvirt.xml'), 'utf8')).toBe((await dog(['vdi', 'libvirt-xml', 'vm1'])).stdout);
    } finally {
      expect(await plain.stop()).toBe(0);
    }
    const viaNbd = await mountSheepfs(s.port, ['--nbd', `127.0.0.1:${nbdPort}`]);
    try {
      const x = await fsp.readFile(viaNbd.p('vdi/vm1/libvirt.xml'), 'utf8');
      expect(x).toBe((await dog(['vdi', 'libvirt-xml', 'vm1', '--nbd', `127.0.0.1:${nbdPort}`])).stdout);
      expect((await validate(x))[0]).toBe(0);
    } finally {
      expect(await viaNbd.stop(), viaNbd.output()).toBe(0);
    }
  });
});
