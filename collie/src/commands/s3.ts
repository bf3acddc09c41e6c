// collie s3 user add|list|delete: the access keys of the S3 gateway
// (sheep --s3), kept in the cluster in the VDI s3/.users (see
// common/src/s3.ts), so every gateway of the cluster knows them.
import { randomBytes } from 'node:crypto';
import {
  SheepClient, openVdi, lookupVdi, Op, Flag, Res, resultMessage, SheepdogError, encodeFixedString, VdiIO,
  S3_USERS_VDI, S3_USERS_VDI_SIZE, S3User, decodeS3Users, encodeS3Users, s3UsersLength,
} from '@sheepdog/common';
import type { Ctx } from '../conn.js';
import type { SubCommand } from '../cli.js';
import { CliError, EXIT_SUCCESS, EXIT_FAILURE, EXIT_USAGE } from '../exitcodes.js';
import { printJson } from '../json.js';

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

function accessKey(): string {
  const b = randomBytes(20);
  return 'SD' + [...b.subarray(0, 18)].map((x) => ALNUM[x % ALNUM.length]).join('');
}

async function withUsers<T>(ctx: Ctx, create: boolean, fn: (users: S3User[], io?: VdiIO) => Promise<T>): Promise<T> {
  const c = new SheepClient({ host: ctx.local.host, port: ctx.local.port, timeout: 30_000 });
  try {
    try {
      await lookupVdi(c, S3_USERS_VDI);
    } catch (e) {
      if (!(e instanceof SheepdogError && e.result === Res.NO_VDI)) throw e;
      if (!create) return fn([]);
      const r = await c.send({ opcode: Op.NEW_VDI, flags: Flag.CMD_WRITE, dataLength: 256, vdi: { vdiSize: BigInt(S3_USERS_VDI_SIZE) } }, encodeFixedString(S3_USERS_VDI, 256));
      if (r.rsp.result !== Res.SUCCESS && r.rsp.result !== Res.VDI_EXIST) throw new CliError(EXIT_FAILURE, `Failed to create ${S3_USERS_VDI}: ${resultMessage(r.rsp.result)}`);
    }
    const io = await openVdi(c, S3_USERS_VDI, { cacheFlags: Flag.CMD_DIRECT });
    const head = await io.read(0, 16);
    const len = s3UsersLength(head);
    return await fn(decodeS3Users(len ? await io.read(0, 16 + len) : head), io);
  } catch (e) {
    if (e instanceof SheepdogError) throw new CliError(EXIT_FAILURE, `Failed to access the S3 users: ${resultMessage(e.result)}`);
    throw e;
  } finally {
    c.close();
  }
}

async function save(io: VdiIO, users: S3User[]): Promise<void> {
  const b = encodeS3Users(users);
  // zero what a longer list left, so that nothing stale follows
  const old = s3UsersLength(await io.read(0, 16));
  const out = Buffer.alloc(Math.max(b.length, 16 + old));
  b.copy(out);
  await io.write(0, out);
}

/** collie s3 user add NAME [ACCESS_KEY SECRET_KEY] */
async function userAdd(ctx: Ctx, args: string[]): Promise<number> {
  const [name, ak, sk] = args;
  if (!name || !/^[A-Za-z0-9_.@+=,-]{1,64}$/.test(name)) throw new CliError(EXIT_USAGE, `Invalid user name '${name ?? ''}' (1-64 letters, digits or _.@+=,-)`);
  if ((ak === undefined) !== (sk === undefined)) throw new CliError(EXIT_USAGE, 'Give both ACCESS_KEY and SECRET_KEY, or neither');
  if (ak !== undefined && (!/^[A-Za-z0-9]{16,128}$/.test(ak) || !/^[\x21-\x7e]{16,128}$/.test(sk!))) {
    throw new CliError(EXIT_USAGE, 'ACCESS_KEY must be 16-128 letters or digits, SECRET_KEY 16-128 printable characters');
  }
  return withUsers(ctx, true, async (users, io) => {
    if (users.some((u) => u.name === name)) throw new CliError(EXIT_FAILURE, `S3 user ${name} already exists`);
    const u: S3User = { name, accessKey: ak ?? accessKey(), secretKey: sk ?? randomBytes(30).toString('base64'), created: Date.now() };
    if (users.some((x) => x.accessKey === u.accessKey)) throw new CliError(EXIT_FAILURE, `access key ${u.accessKey} is already in use`);
    await save(io!, [...users, u]);
    if (ctx.json) printJson(ctx, { name: u.name, access_key: u.accessKey, secret_key: u.secretKey });
    else ctx.out(`Name: ${u.name}\nAccess key: ${u.accessKey}\nSecret key: ${u.secretKey}\n`);
    return EXIT_SUCCESS;
  });
}

async function userList(ctx: Ctx): Promise<number> {
  return withUsers(ctx, false, async (users) => {
    if (ctx.json) {
      printJson(ctx, { users: users.map((u) => ({ name: u.name, access_key: u.accessKey, created: new Date(u.created).toISOString() })) });
      return EXIT_SUCCESS;
    }
    if (!ctx.raw) ctx.out('  Name                 Access key               Created\n');
    for (const u of users) {
      const t = new Date(u.created).toISOString();
      ctx.out(ctx.raw ? `${u.name} ${u.accessKey} ${Math.floor(u.created / 1000)}\n` : `  ${u.name.padEnd(21)}${u.accessKey.padEnd(25)}${t}\n`);
    }
    return EXIT_SUCCESS;
  });
}

/** collie s3 user delete NAME|ACCESS_KEY */
async function userDelete(ctx: Ctx, args: string[]): Promise<number> {
  const who = args[0];
  if (!who) throw new CliError(EXIT_USAGE);
  return withUsers(ctx, false, async (users, io) => {
    const keep = users.filter((u) => u.name !== who && u.accessKey !== who);
    if (keep.length === users.length || !io) throw new CliError(EXIT_FAILURE, `S3 user ${who} not found`);
    await save(io, keep);
    return EXIT_SUCCESS;
  });
}

export const s3Commands: SubCommand[] = [
  {
    name: 'user', opts: 'aprh', desc: 'manage the access keys of the S3 gateway', needArg: true,
    sub: [
      { name: 'add', desc: 'add a user: NAME [ACCESS_KEY SECRET_KEY] (keys are generated if not given)', needArg: true, run: (c, a) => userAdd(c, a), json: true },
      { name: 'list', desc: 'list the users and their access keys', run: (c) => userList(c), json: true },
      { name: 'delete', desc: 'delete a user: NAME or ACCESS_KEY', needArg: true, run: (c, a) => userDelete(c, a) },
    ],
  },
];
