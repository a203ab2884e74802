/**
 * `InstanceManager`: keyed singletons (one agent per user session, chat room, connection) with
 * attach, idle timeout, and hibernate/thaw through pluggable storage. A port of Jido's
 * `Jido.Agent.InstanceManager` that closes its known gaps.
 *
 * ```ts
 * const sessions = await InstanceManager.start({
 *   name: 'sessions', agent: SessionAgent, idleTimeoutMs: 15 * 60_000,
 *   storage: new FileStorage({ dir: './data' }), maxResident: 50_000,
 * });
 * const agent = await sessions.get('user-123', { initialState: { cart: [] } }); // running, thawed or fresh
 * await agent.call({ type: 'add', item: 'x' });    // handle(), one message at a time, in order
 * using lease = await sessions.attach('user-123'); // no idle timeout while held
 * await sessions.close();                          // saves every agent, then stops it
 * ```
 *
 * ## Lifecycle of a key
 *
 * ```text
 *   (absent) ──get/attach──► starting ──► running ──idle / evicted / stop / close──► hibernating ──► (absent)
 *                  │  storage.get, migrate,   ▲  │ crash: restart from the last        │ save failed:
 *                  │  new Agent(key), init    │  │ checkpoint (same ref)               │ back to running,
 *                  ▼                          │  ▼                                     ▼ retry later
 *          thaw_failed / start_failure      running ◄──────────────────────────── running
 * ```
 *
 * - **One start per key.** The registry entry of a starting key is the in-flight start: every
 *   concurrent `get` awaits it (one storage read, one `init`), and all get the same ref or the
 *   same error.
 * - **No dying handles.** A hibernating key stays in the registry until its save finishes; `get`
 *   waits and returns the next activation (or the same one, if the save failed). Calls on a ref
 *   whose agent hibernated for idleness or eviction follow the key to its next activation, in
 *   order (graceful passivation); calls queued behind the save run after it the same way.
 * - **Activity.** `get`, `attach`, a lease's release, `ref.touch()` and (with `touchOnCall`,
 *   the default) every `call` restart the idle countdown; a fresh unattached agent starts it at
 *   once. Idle expiry and LRU eviction share one ordering per partition, maintained lazily
 *   (a touch is a counter bump, not a Map move), so a resident `get` costs one Map lookup.
 * - **Never lose state silently.** A save that fails (snapshot throws or is not plain JSON,
 *   storage rejects, revision conflict) keeps the agent resident with its state and emits
 *   `agent:hibernate_failed`; idle/eviction saves retry with bounded backoff
 *   (`hibernateRetry`), `stop` rejects, `close` rejects listing the keys. Only an explicit
 *   `discardUnsaved`, `forget`, or an expired supervisor shutdown budget drops state, and each
 *   logs an error.
 *
 * ## Crashes and restart intensity
 *
 * A `handle` that throws (or rejects) crashes only its agent: that call rejects with
 * `AgentCrashedError` (reason `crashed`), the calls queued behind it with reason `pending`
 * (stop/checkpoint requests stay queued), and a new agent is built from the last checkpoint,
 * re-read from storage, or from the key's `initialState` if it was never saved; the ref stays
 * valid. The re-read fails closed: an unreadable checkpoint, or one whose revision is not the one
 * this activation descends from, stops the key (`restart_failed`) instead of starting it empty.
 * More than `maxRestarts` (3) crashes, or failed restarts, within `periodMs` (5 s) quarantine
 * the key: it stops, its queued calls reject with reason `quarantined`, and `get`/`attach`
 * reject the same way until `quarantineMs` (30 s) passes, `clearQuarantine(key)` or `forget(key)`
 * lifts it. Its state is whatever it last saved. Other keys never notice.
 *
 * ## Storage, versions and revisions
 *
 * A checkpoint is `{ manager, key, revision, version, stateVersion, agent, savedAt, state }`.
 * `version` is the envelope format (1); `stateVersion` is the agent class's `static
 * stateVersion`, and an older one is upgraded by its `static migrate(state, from)` on thaw
 * (no migrate, or a newer version: `thaw_failed`). `revision` is assigned by the storage (1,
 * 2, …). Every save is conditional (`expectedRevision` = the revision the activation thawed
 * from, 0 for a fresh key), so a second writer of the same (manager, key) — a misconfigured twin
 * manager, an operator's edit — makes the save fail with `revision_conflict` instead of being
 * overwritten. A delete resets the revision to 0. Checkpoints are keyed by `{ manager, key }`,
 * so managers share a storage safely.
 *
 * `FileStorage` writes `<dir>/<manager-slug>-<sha256(manager):16>/<base64url(sha256(key))>.ckpt`:
 * a JSON header line with the sha256 and byte length of the payload, then the checkpoint as
 * JSON; temp file → fsync → rename → fsync of the directory. A damaged file fails every read
 * (`corrupt_checkpoint`, surfacing as `thaw_failed` from `get`) and every write over it, and
 * is never modified (delete it, or `forget` the key, to start over).
 *
 * ## What partitions buy
 *
 * See {@link InstanceManagerOptions.partitions}: smaller Maps and per-shard sweeps, no
 * throughput (one JavaScript thread), a hash per `get`.
 *
 * ## Limits
 *
 * Agents run on the main thread: a CPU-heavy `handle` blocks everything (use a worker child for
 * that). A `handle` that never settles blocks its key's mailbox (there is no per-call deadline).
 * Single activation is per process: two processes on one directory are protected only by the
 * revision check. In-memory changes since the last save are lost on a crash, by design.
 *
 * @packageDocumentation
 */
export { InstanceManager } from './manager.js';
export type { InstanceManagerChildOptions, ManagerMessage, ManagerReply, StopOptions } from './manager.js';
export { MemoryStorage } from './storage.js';
export type { Checkpoint, CheckpointData, CheckpointKey, Storage, WriteOptions } from './storage.js';
export { FileStorage } from './file-storage.js';
export type { FileStorageOptions } from './file-storage.js';
export type { JsonValue } from './json.js';
export type {
  Agent,
  AgentClass,
  AgentInitInfo,
  AgentRef,
  AgentStopReason,
  AnyAgent,
  AttachOptions,
  GetOptions,
  InstanceManagerOptions,
  InstanceManagerStats,
  Lease,
  MessageOf,
  ReplyOf,
  RestartIntensityOptions,
  StateOf,
} from './types.js';
