import { RevisionConflictError } from '../errors.js';
import type { JsonValue } from './json.js';

/**
 * Format version of the checkpoint envelope ({@link CheckpointData}) written by this release.
 * A reader refuses a checkpoint with a higher version instead of guessing at it.
 */
export const CHECKPOINT_VERSION = 1;

/**
 * Where a checkpoint lives: the manager's name and the agent's key. Keys are scoped by manager,
 * so several managers can share one storage without their checkpoints colliding.
 */
export interface CheckpointKey {
  /** The owning `InstanceManager`'s name. */
  readonly manager: string;
  /** The agent's key within that manager (any string). */
  readonly key: string;
}

/** What a manager hands to {@link Storage.put}: the saved state and its envelope. */
export interface CheckpointData {
  /** Envelope format version ({@link CHECKPOINT_VERSION}). */
  readonly version: number;
  /** The agent class's own state version (`static stateVersion`, default 1), for migrations. */
  readonly stateVersion: number;
  /** The agent class's name, for operators; never checked. */
  readonly agent: string;
  /** When the snapshot was taken (ms since the epoch). */
  readonly savedAt: number;
  /** The agent's `snapshot()`: plain JSON. */
  readonly state: JsonValue;
}

/** A stored checkpoint: the data plus its identity and revision. */
export interface Checkpoint extends CheckpointData {
  readonly manager: string;
  readonly key: string;
  /**
   * Monotonic write counter of this (manager, key), assigned by the storage: 1 for the first
   * write, then +1 per write. Conditional writes compare it ({@link WriteOptions}).
   */
  readonly revision: number;
}

/** Options of {@link Storage.put} and {@link Storage.delete}. */
export interface WriteOptions {
  /**
   * Optimistic concurrency: the revision the caller last saw; `0` means "no checkpoint must
   * exist". When the stored revision differs, the write rejects with `RevisionConflictError`
   * (`revision_conflict`) and nothing changes. Omitted: unconditional.
   */
  readonly expectedRevision?: number;
}

/**
 * Pluggable checkpoint storage of an `InstanceManager`. Implementations must:
 * - resolve `get` with `undefined` when there is no checkpoint, and reject (never resolve
 *   `undefined`) when one exists but cannot be read or verified;
 * - assign revisions (current + 1, starting at 1) and enforce `expectedRevision` atomically
 *   with respect to other writes through the same storage object;
 * - never leave a half-written checkpoint readable, and never overwrite a checkpoint they
 *   cannot read (a `put` over a corrupt checkpoint rejects; `delete` may remove it).
 */
export interface Storage {
  /** The checkpoint of `key`, or `undefined` when none exists. */
  get(key: CheckpointKey): Promise<Checkpoint | undefined>;
  /** Writes a checkpoint, resolving with it and its new revision. */
  put(key: CheckpointKey, data: CheckpointData, options?: WriteOptions): Promise<Checkpoint>;
  /** Removes the checkpoint of `key`; resolves `true` if one existed. Idempotent. */
  delete(key: CheckpointKey, options?: WriteOptions): Promise<boolean>;
}

/** Builds the stored checkpoint object (shared by the built-in storages). */
export function makeCheckpoint(key: CheckpointKey, data: CheckpointData, revision: number): Checkpoint {
  return {
    manager: key.manager,
    key: key.key,
    revision,
    version: data.version,
    stateVersion: data.stateVersion,
    agent: data.agent,
    savedAt: data.savedAt,
    state: data.state,
  };
}

/** Human-readable name of a checkpoint key, for errors and logs. */
export function describeKey(key: CheckpointKey): string {
  return `${key.manager}/${key.key}`;
}

/** Throws `RevisionConflictError` when `expected` is given and differs from `actual`. */
export function checkRevision(key: CheckpointKey, options: WriteOptions | undefined, actual: number): void {
  const expected = options?.expectedRevision;
  if (expected !== undefined && expected !== actual) throw new RevisionConflictError(describeKey(key), expected, actual);
}

/**
 * In-memory {@link Storage}: checkpoints survive hibernation within the process, not a restart.
 * Each checkpoint is kept serialized (a JSON string), so a stored checkpoint is isolated from
 * later changes to the agent's live state, and memory per hibernated agent is its JSON size.
 * The default storage of a manager that is given none.
 */
export class MemoryStorage implements Storage {
  readonly #data = new Map<string, { revision: number; json: string }>();

  #id(key: CheckpointKey): string {
    return JSON.stringify([key.manager, key.key]);
  }

  /** {@inheritDoc Storage.get} */
  async get(key: CheckpointKey): Promise<Checkpoint | undefined> {
    const entry = this.#data.get(this.#id(key));
    return entry ? (JSON.parse(entry.json) as Checkpoint) : undefined;
  }

  /** {@inheritDoc Storage.put} */
  async put(key: CheckpointKey, data: CheckpointData, options?: WriteOptions): Promise<Checkpoint> {
    const id = this.#id(key);
    const current = this.#data.get(id)?.revision ?? 0;
    checkRevision(key, options, current);
    const cp = makeCheckpoint(key, data, current + 1);
    const json = JSON.stringify(cp);
    this.#data.set(id, { revision: cp.revision, json });
    return JSON.parse(json) as Checkpoint;
  }

  /** {@inheritDoc Storage.delete} */
  async delete(key: CheckpointKey, options?: WriteOptions): Promise<boolean> {
    const id = this.#id(key);
    checkRevision(key, options, this.#data.get(id)?.revision ?? 0);
    return this.#data.delete(id);
  }

  /** How many checkpoints are stored (all managers). */
  get size(): number {
    return this.#data.size;
  }
}
