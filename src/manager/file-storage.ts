import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { CorruptCheckpointError } from '../errors.js';
import { describeIssues, parseConfig } from '../validate.js';
import {
  CHECKPOINT_VERSION,
  checkRevision,
  describeKey,
  makeCheckpoint,
  type Checkpoint,
  type CheckpointData,
  type CheckpointKey,
  type Storage,
  type WriteOptions,
} from './storage.js';

/** Options of {@link FileStorage}. */
export interface FileStorageOptions {
  /** Root directory; created on first write. */
  dir: string;
  /**
   * fsync each checkpoint file before its rename and the directory after it, so a completed
   * `put` survives a power loss. Default true. `false` is faster and still atomic (a reader sees
   * the old or the new checkpoint, never a torn one), but the last writes may be lost on a crash
   * of the machine.
   */
  fsync?: boolean;
  /** At most this many file operations at once (keeps a mass hibernation below the fd limit). Default 64. */
  maxConcurrentIo?: number;
}

const optionsSchema = z
  .object({
    dir: z.string().min(1),
    fsync: z.boolean().default(true),
    maxConcurrentIo: z.number().int().min(1).max(4096).default(64),
  })
  .strict();

/** First line of every checkpoint file. */
interface FileHeader {
  format: 'threadvisor-checkpoint';
  version: number;
  /** Hex sha256 of the payload bytes (everything after the header line). */
  sha256: string;
  /** Byte length of the payload. */
  bytes: number;
}

const FORMAT = 'threadvisor-checkpoint';

/** Zod schema of a stored {@link Checkpoint} (checked after the checksum, on every read). */
export const checkpointSchema = z.object({
  manager: z.string(),
  key: z.string(),
  revision: z.number().int().min(1),
  version: z.number().int().min(1),
  stateVersion: z.number().int().min(0),
  agent: z.string(),
  savedAt: z.number(),
  state: z.unknown().refine((v) => v !== undefined, 'state is missing'),
});

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

/**
 * Checkpoints as files, one per (manager, key):
 *
 * ```text
 * <dir>/<manager-slug>-<sha256(manager):16>/<base64url(sha256(key))>.ckpt
 * ```
 *
 * Keys are arbitrary strings (user ids, room names, `../..`), so file names are hashes: no key
 * can escape the directory or collide with another after case folding, and no key text (possibly
 * personal data) appears in a file name. The readable slug only helps operators find a manager.
 *
 * A file is one JSON header line `{"format":"threadvisor-checkpoint","version":1,"sha256":…,
 * "bytes":…}` followed by the payload, the {@link Checkpoint} as JSON. A read checks the header,
 * the length, the sha256 of the payload, the JSON and the checkpoint's own manager and key; any
 * failure rejects with `CorruptCheckpointError` (`corrupt_checkpoint`) and the file is left as it
 * is (fail closed). Other read errors (permissions, I/O) reject as they are.
 *
 * Writes are atomic: the checkpoint goes to a temporary file in the same directory, which is
 * fsynced, renamed over the old one, and the directory fsynced. A `put` over a checkpoint that
 * cannot be read rejects instead of replacing it; `delete` removes even a corrupt one.
 *
 * Revisions and `expectedRevision` are enforced per file under an in-process lock, so they are
 * exact for every writer going through this `FileStorage` object. Share one object between the
 * managers of a process; separate objects or processes on one directory get atomic files but
 * last-writer-wins revisions.
 */
export class FileStorage implements Storage {
  /** The root directory, as given. */
  readonly dir: string;
  readonly #fsync: boolean;
  readonly #maxIo: number;
  #activeIo = 0;
  readonly #ioWaiters: Array<() => void> = [];
  /** Per-file write chains: a put/delete runs after the previous one on that file. */
  readonly #locks = new Map<string, Promise<unknown>>();
  readonly #dirsMade = new Set<string>();

  constructor(options: FileStorageOptions) {
    const o = parseConfig('FileStorage options', optionsSchema, options);
    this.dir = o.dir;
    this.#fsync = o.fsync;
    this.#maxIo = o.maxConcurrentIo;
  }

  /** The directory holding the checkpoints of `manager`. */
  managerDir(manager: string): string {
    const slug = manager.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 32);
    return path.join(this.dir, `${slug}-${sha256(manager).slice(0, 16)}`);
  }

  /** The file holding the checkpoint of `key` (it may not exist). */
  fileOf(key: CheckpointKey): string {
    const name = createHash('sha256').update(key.key).digest('base64url');
    return path.join(this.managerDir(key.manager), `${name}.ckpt`);
  }

  /** {@inheritDoc Storage.get} */
  get(key: CheckpointKey): Promise<Checkpoint | undefined> {
    return this.#io(() => this.#read(key));
  }

  /** {@inheritDoc Storage.put} */
  put(key: CheckpointKey, data: CheckpointData, options?: WriteOptions): Promise<Checkpoint> {
    const file = this.fileOf(key);
    return this.#locked(file, () =>
      this.#io(async () => {
        const current = await this.#read(key);
        checkRevision(key, options, current?.revision ?? 0);
        const cp = makeCheckpoint(key, data, (current?.revision ?? 0) + 1);
        await this.#writeAtomic(file, encode(cp));
        return cp;
      }),
    );
  }

  /** {@inheritDoc Storage.delete} */
  delete(key: CheckpointKey, options?: WriteOptions): Promise<boolean> {
    const file = this.fileOf(key);
    return this.#locked(file, () =>
      this.#io(async () => {
        if (options?.expectedRevision !== undefined) {
          const current = await this.#read(key);
          checkRevision(key, options, current?.revision ?? 0);
        }
        try {
          await fs.unlink(file);
        } catch (err) {
          if (isEnoent(err)) return false;
          throw err;
        }
        await this.#syncDir(path.dirname(file));
        return true;
      }),
    );
  }

  async #read(key: CheckpointKey): Promise<Checkpoint | undefined> {
    const file = this.fileOf(key);
    let bytes: Buffer;
    try {
      bytes = await fs.readFile(file);
    } catch (err) {
      if (isEnoent(err)) return undefined;
      throw err;
    }
    return decode(bytes, key, file);
  }

  async #writeAtomic(file: string, content: string): Promise<void> {
    const dir = path.dirname(file);
    if (!this.#dirsMade.has(dir)) {
      await fs.mkdir(dir, { recursive: true });
      this.#dirsMade.add(dir);
    }
    const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      const fh = await fs.open(tmp, 'wx', 0o600).catch(async (err: unknown) => {
        if (!isEnoent(err)) throw err;
        await fs.mkdir(dir, { recursive: true }); // the directory was removed under us
        return fs.open(tmp, 'wx', 0o600);
      });
      try {
        await fh.writeFile(content, 'utf8');
        if (this.#fsync) await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, file);
    } catch (err) {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      throw err;
    }
    await this.#syncDir(dir);
  }

  async #syncDir(dir: string): Promise<void> {
    if (!this.#fsync || process.platform === 'win32') return; // directories cannot be fsynced there
    const dh = await fs.open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }

  async #locked<T>(file: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(file) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.#locks.set(file, tail);
    try {
      return await run;
    } finally {
      if (this.#locks.get(file) === tail) this.#locks.delete(file);
    }
  }

  async #io<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#activeIo >= this.#maxIo) await new Promise<void>((resolve) => this.#ioWaiters.push(resolve));
    else this.#activeIo += 1;
    try {
      return await fn();
    } finally {
      const next = this.#ioWaiters.shift();
      if (next) next(); // hand the slot over
      else this.#activeIo -= 1;
    }
  }
}

/** Serializes a checkpoint to the file format (header line + payload). */
function encode(cp: Checkpoint): string {
  const payload = JSON.stringify(cp);
  const header: FileHeader = {
    format: FORMAT,
    version: CHECKPOINT_VERSION,
    sha256: sha256(payload),
    bytes: Buffer.byteLength(payload, 'utf8'),
  };
  return `${JSON.stringify(header)}\n${payload}`;
}

/** Parses and verifies a checkpoint file; throws `CorruptCheckpointError` on any mismatch. */
function decode(bytes: Buffer, key: CheckpointKey, file: string): Checkpoint {
  const where = `${describeKey(key)} (${file})`;
  const nl = bytes.indexOf(0x0a);
  if (nl < 0) throw new CorruptCheckpointError(where, 'no header line');
  let header: Partial<FileHeader>;
  try {
    header = JSON.parse(bytes.subarray(0, nl).toString('utf8')) as Partial<FileHeader>;
  } catch (err) {
    throw new CorruptCheckpointError(where, 'unreadable header', { cause: err });
  }
  if (header === null || typeof header !== 'object' || header.format !== FORMAT) throw new CorruptCheckpointError(where, 'not a threadvisor checkpoint');
  if (typeof header.version !== 'number' || header.version > CHECKPOINT_VERSION) {
    throw new CorruptCheckpointError(where, `unsupported format version ${String(header.version)}`);
  }
  const payload = bytes.subarray(nl + 1);
  if (payload.length !== header.bytes) throw new CorruptCheckpointError(where, `length ${payload.length}, header says ${String(header.bytes)}`);
  if (sha256(payload) !== header.sha256) throw new CorruptCheckpointError(where, 'checksum mismatch');
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    throw new CorruptCheckpointError(where, 'unreadable payload', { cause: err });
  }
  const parsed = checkpointSchema.safeParse(raw);
  if (!parsed.success) throw new CorruptCheckpointError(where, `bad shape: ${describeIssues(parsed.error.issues)}`);
  const cp = parsed.data as Checkpoint;
  if (cp.manager !== key.manager || cp.key !== key.key) throw new CorruptCheckpointError(where, `holds ${cp.manager}/${cp.key}`);
  if (cp.version > CHECKPOINT_VERSION) throw new CorruptCheckpointError(where, `unsupported checkpoint version ${cp.version}`);
  return cp;
}

function isEnoent(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}
