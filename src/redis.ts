/**
 * Redis for threadvisor: `import { RedisStorage } from 'threadvisor/redis'`. ioredis is an
 * optional peer dependency: only this entry (and cluster mode, `Runtime.start({ cluster })`)
 * loads it; the main entry never does.
 *
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import { z } from 'zod';
import { CorruptCheckpointError, RevisionConflictError } from './errors.js';
import { checkpointSchema } from './manager/file-storage.js';
import { CHECKPOINT_VERSION, describeKey, makeCheckpoint, type Checkpoint, type CheckpointData, type CheckpointKey, type Storage, type WriteOptions } from './manager/storage.js';
import { describeIssues, parseConfig } from './validate.js';

const sha256 = (data: string): string => createHash('sha256').update(data).digest('hex');

// Compare-and-set of one checkpoint. KEYS: the checkpoint's hash. ARGV: expected revision ('' =
// unconditional), payload, its sha256. Returns { revision written } or { -1, current } (conflict)
// or { -2, current } (the stored checkpoint is corrupt: never overwritten).
const PUT = `
local exists = redis.call('EXISTS', KEYS[1]) == 1
local rev = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0') or -1
if exists then
  local p = redis.call('HGET', KEYS[1], 'payload')
  if rev < 1 or not p or redis.sha1hex(p) ~= redis.call('HGET', KEYS[1], 'sha1') then return { -2, rev } end
end
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= rev then return { -1, rev } end
rev = rev + 1
redis.call('HSET', KEYS[1], 'rev', rev, 'payload', ARGV[2], 'sha256', ARGV[3], 'sha1', redis.sha1hex(ARGV[2]))
return { rev, rev }
`;

// Compare-and-delete. KEYS: the hash. ARGV: expected revision ('' = unconditional). Returns 1
// (deleted), 0 (none), or -1 with the current revision (conflict).
const DELETE = `
local rev = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0') or 0
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= rev then return { -1, rev } end
return { redis.call('DEL', KEYS[1]), rev }
`;

/** Options of {@link RedisStorage}. */
export interface RedisStorageOptions {
  /** A `redis://` URL, ioredis options, or an ioredis client (not closed by `close()`). */
  redis: string | RedisOptions | Redis;
  /** Key prefix (default `threadvisor`): the checkpoints are `{<namespace>}:ckpt:…` hashes. */
  namespace?: string;
}

const optionsSchema = z
  .object({
    redis: z.union([z.string().regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL'), z.instanceof(Redis), z.record(z.string(), z.unknown())]),
    namespace: z
      .string()
      .min(1)
      .max(100)
      .regex(/^[\w.-]+$/, 'letters, digits, _ . - only')
      .default('threadvisor'),
  })
  .strict();

type Scripted = Redis & {
  tvPut(key: string, expected: string, payload: string, sum: string): Promise<[number, number]>;
  tvDelete(key: string, expected: string): Promise<[number, number]>;
};

/**
 * Checkpoint storage of an `InstanceManager` in Redis: agents hibernated on one node thaw on
 * another. Each checkpoint is a hash (revision, payload, sha256); a write is one Lua script, a
 * compare-and-set on the revision (`expectedRevision`: a stale writer gets
 * `RevisionConflictError`, `revision_conflict`, and nothing changes). As `FileStorage`, a read
 * fails closed: a payload that does not match its checksum, is not JSON or not a checkpoint
 * rejects with `CorruptCheckpointError` (`corrupt_checkpoint`), and a write never replaces a
 * checkpoint that cannot be read.
 */
export class RedisStorage implements Storage {
  readonly #redis: Scripted;
  readonly #owns: boolean;
  readonly #prefix: string;

  constructor(options: RedisStorageOptions) {
    const o = parseConfig('RedisStorage options', optionsSchema, options);
    const quick: RedisOptions = { enableOfflineQueue: true, maxRetriesPerRequest: 2, connectTimeout: 2000 };
    const r = o.redis;
    const client = r instanceof Redis ? r : typeof r === 'string' ? new Redis(r, quick) : new Redis({ ...quick, ...(r as RedisOptions) });
    this.#owns = !(r instanceof Redis);
    if (this.#owns) client.on('error', () => undefined);
    client.defineCommand('tvPut', { numberOfKeys: 1, lua: PUT });
    client.defineCommand('tvDelete', { numberOfKeys: 1, lua: DELETE });
    this.#redis = client as Scripted;
    this.#prefix = `{${o.namespace}}:ckpt:`;
  }

  #key(key: CheckpointKey): string {
    return `${this.#prefix}${sha256(key.manager).slice(0, 16)}:${createHash('sha256').update(key.key).digest('base64url')}`;
  }

  /** {@inheritDoc Storage.get} */
  async get(key: CheckpointKey): Promise<Checkpoint | undefined> {
    const h = await this.#redis.hgetall(this.#key(key));
    if (Object.keys(h).length === 0) return undefined;
    const where = `${describeKey(key)} (redis)`;
    const { payload, sha256: sum, rev } = h;
    if (payload === undefined || sum === undefined || rev === undefined) throw new CorruptCheckpointError(where, 'incomplete record');
    if (sha256(payload) !== sum) throw new CorruptCheckpointError(where, 'checksum mismatch');
    let raw: unknown;
    try {
      raw = JSON.parse(payload);
    } catch (err) {
      throw new CorruptCheckpointError(where, 'unreadable payload', { cause: err });
    }
    const parsed = checkpointSchema.safeParse({ ...(raw as object), revision: Number(rev) });
    if (!parsed.success) throw new CorruptCheckpointError(where, `bad shape: ${describeIssues(parsed.error.issues)}`);
    const cp = parsed.data as Checkpoint;
    if (cp.manager !== key.manager || cp.key !== key.key) throw new CorruptCheckpointError(where, `holds ${cp.manager}/${cp.key}`);
    if (cp.version > CHECKPOINT_VERSION) throw new CorruptCheckpointError(where, `unsupported checkpoint version ${cp.version}`);
    return cp;
  }

  /** {@inheritDoc Storage.put} */
  async put(key: CheckpointKey, data: CheckpointData, options?: WriteOptions): Promise<Checkpoint> {
    const body = makeCheckpoint(key, data, 1);
    const { revision: _r, ...rest } = body;
    const payload = JSON.stringify(rest);
    const expected = options?.expectedRevision === undefined ? '' : String(options.expectedRevision);
    const [written, current] = await this.#redis.tvPut(this.#key(key), expected, payload, sha256(payload));
    if (written === -1) throw new RevisionConflictError(describeKey(key), options?.expectedRevision ?? 0, current);
    if (written === -2) throw new CorruptCheckpointError(`${describeKey(key)} (redis)`, 'the stored checkpoint cannot be read: not overwritten');
    return makeCheckpoint(key, data, written);
  }

  /** {@inheritDoc Storage.delete} */
  async delete(key: CheckpointKey, options?: WriteOptions): Promise<boolean> {
    const expected = options?.expectedRevision === undefined ? '' : String(options.expectedRevision);
    const [deleted, current] = await this.#redis.tvDelete(this.#key(key), expected);
    if (deleted === -1) throw new RevisionConflictError(describeKey(key), options?.expectedRevision ?? 0, current);
    return deleted === 1;
  }

  /** Closes a client made here (one passed in stays open). */
  async close(): Promise<void> {
    if (!this.#owns) return;
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }
}
