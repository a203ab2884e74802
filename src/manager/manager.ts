import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { z } from 'zod';
import {
  AgentCrashedError,
  HibernateFailedError,
  InvalidConfigError,
  InvalidMessageError,
  NotFoundError,
  NotOwnerError,
  RevisionConflictError,
  StartFailureError,
  StoppedError,
  ThawFailedError,
  TimeoutError,
  UnavailableError,
  type ThreadvisorError,
} from '../errors.js';
import { clusterOptionsSchema, resolveCluster, safeRedisUrl, type ResolvedCluster } from '../cluster/options.js';
import type { ClusterNode } from '../cluster/node.js';
import type { RemoteCalls } from '../cluster/remote-calls.js';
import { RemoteRef } from './remote-ref.js';
import { IntensityWindow, backoffDelay, backoffOptionsSchema, resolveBackoff, type BackoffPolicy } from '../supervisor/backoff.js';
import type { ChildExit, ChildSpec, RestartType, Shutdown } from '../supervisor/types.js';
import { defaultLogger, publishUnchecked } from '../telemetry.js';
import { loggerSchema, parseOrThrow } from '../validate.js';
import { findNonJson } from './json.js';
import { CHECKPOINT_VERSION, MemoryStorage, type Checkpoint, type CheckpointKey, type Storage } from './storage.js';
import type {
  AgentClass,
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
} from './types.js';
import { MAX_TIMER_MS } from '../wire/timers.js';
import type { AgentEvents, EmitArgs, EmitterEvent, EmitterListener, ManagerEvents } from '../events.js';

// --- option schemas ------------------------------------------------------------------------

const isAgentClass = (v: unknown): boolean => {
  if (typeof v !== 'function') return false;
  const proto = (v as { prototype?: Record<string, unknown> }).prototype;
  return typeof proto?.handle === 'function' && typeof proto.snapshot === 'function';
};

const isStorage = (v: unknown): boolean =>
  v === null ||
  (typeof v === 'object' &&
    typeof (v as Storage).get === 'function' &&
    typeof (v as Storage).put === 'function' &&
    typeof (v as Storage).delete === 'function');

const optionsSchema = z
  .object({
    name: z.string().min(1).max(200),
    agent: z.custom<AgentClass>(isAgentClass, 'expected an agent class with handle() and snapshot() methods'),
    idleTimeoutMs: z.number().positive().or(z.literal(Infinity)).default(Infinity),
    touchOnCall: z.boolean().default(true),
    storage: z.custom<Storage | null>(isStorage, 'expected a Storage (get, put, delete) or null').optional(),
    partitions: z.number().int().min(1).max(1024).default(1),
    maxResident: z.number().int().min(1).or(z.literal(Infinity)).default(Infinity),
    agentOptions: z.unknown().optional(),
    restartIntensity: z
      .object({
        maxRestarts: z.number().int().min(0).default(3),
        periodMs: z.number().positive().default(5000),
        quarantineMs: z.number().min(0).default(30_000),
      })
      .strict()
      .default({ maxRestarts: 3, periodMs: 5000, quarantineMs: 30_000 }),
    hibernateRetry: backoffOptionsSchema.default({ initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.2 }),
    logger: loggerSchema.optional(),
    cluster: clusterOptionsSchema.optional(),
    remoteCallTimeoutMs: z.number().int().min(1).max(MAX_TIMER_MS).default(5000),
  })
  .strict();

const getOptionsSchema = z.object({ initialState: z.unknown().optional() }).strict();
const attachOptionsSchema = z
  .object({
    initialState: z.unknown().optional(),
    signal: z.custom<AbortSignal>((v) => v instanceof AbortSignal, 'expected an AbortSignal').optional(),
  })
  .strict();
const stopOptionsSchema = z.object({ discardUnsaved: z.boolean().default(false) }).strict();

/** Options of `manager.stop` and `manager.close`. */
export interface StopOptions {
  /**
   * When saving fails, stop anyway and drop the unsaved state (loudly: `agent:hibernate_failed`
   * and an error log per agent). Default false: the save failure rejects and the agent stays
   * resident with its state.
   */
  discardUnsaved?: boolean;
}

/** Child-spec settings of {@link InstanceManager.childSpec}. */
export interface InstanceManagerChildOptions {
  /** Child id. Default `manager:<name>`. */
  id?: string;
  /** Default `transient`: a manager only ends by being closed, and that is final. */
  restart?: RestartType;
  /** Budget to hibernate everything on shutdown, retrying failed saves until it expires. Default 30 000 ms. */
  shutdown?: Shutdown;
}

// --- internals -----------------------------------------------------------------------------

type SlotState = 'starting' | 'running' | 'hibernating' | 'stopped';

interface CallJob {
  readonly kind: 'call';
  readonly message: unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: unknown) => void;
}

interface ControlJob {
  readonly kind: 'end' | 'checkpoint';
  /** `end` only: why it stops. */
  readonly reason: AgentStopReason;
  /** `end` only: save first (false: drop the state: `forget`, or no storage). */
  readonly save: boolean;
  /** `end` only: stop even if the save fails. */
  readonly force: boolean;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: unknown) => void;
}

type Job = CallJob | ControlJob;

/** One registry shard. */
class Partition {
  /** Every key in memory: starting, running or hibernating. */
  readonly slots = new Map<string, Slot>();
  /**
   * Unattached running agents, in the order they entered (oldest first). Activity does not
   * reorder it (that would cost two Map operations per `get`/`call`); it only bumps the slot's
   * `stamp`. The sweep and eviction look at the head, and move a head whose `stamp` changed
   * since it entered to the tail ({@link InstanceManager} `#idleHead`). A head that was not
   * touched since it entered is the least recently used of all: every entry behind it entered
   * later, and stamps only grow.
   */
  readonly idle = new Map<string, Slot>();
  readonly quarantine = new Map<string, { until: number; timer: NodeJS.Timeout | undefined }>();
  sweepTimer: NodeJS.Timeout | undefined;
  constructor(
    readonly index: number,
    /** The owning manager's functions, for refs and leases (one per partition, not per agent). */
    readonly core: Core,
  ) {}
}

/** The rarely needed part of a slot, allocated on first use (keeps a resident agent small). */
class SlotExtra {
  initialState: unknown;
  restarts = 0;
  intensity: IntensityWindow | undefined;
  retryTimer: NodeJS.Timeout | undefined;
  hibernateAttempt = 0;
  settled: Promise<void> | undefined;
  resolveSettled: (() => void) | undefined;
  activeControl: ControlJob | undefined;
  endReason: AgentStopReason | undefined;
  endError: (() => Error) | undefined;
}

/**
 * The per-key state of one activation. Hot fields live on the object; the rest (crash, retry
 * and shutdown bookkeeping) in a {@link SlotExtra} allocated on first write, behind accessors.
 */
class Slot {
  state: SlotState = 'starting';
  agent: AnyAgent | undefined;
  /** Revision of the checkpoint this activation descends from (0: none). */
  revision = 0;
  leases = 0;
  /** Time of the last activity (ms since the epoch; kept only with an idle timeout). */
  lastActive = 0;
  /** Recency: the manager's activity counter at the last activity. */
  stamp = 0;
  /** `stamp` when it entered the idle order (`-1`: not in it). */
  idleStamp = -1;
  queue: Array<Job | undefined> | undefined;
  head = 0;
  /** A pump is scheduled or running (or a restart is in progress). */
  busy = false;
  /** The start in progress (only while `starting`). */
  ready: Promise<void> | undefined;
  readonly ref: AgentRef;
  #x: SlotExtra | undefined;
  constructor(
    readonly key: string,
    readonly partition: Partition,
    readonly incarnation: number,
  ) {
    this.ref = new Ref(this);
  }
  get #extra(): SlotExtra {
    return (this.#x ??= new SlotExtra());
  }
  /** The `initialState` it was started with, until its first save (a crash restart needs it). */
  get initialState(): unknown {
    return this.#x?.initialState;
  }
  set initialState(v: unknown) {
    if (v !== undefined || this.#x) this.#extra.initialState = v;
  }
  /** Crash restarts so far. */
  get restarts(): number {
    return this.#x?.restarts ?? 0;
  }
  set restarts(v: number) {
    this.#extra.restarts = v;
  }
  get intensity(): IntensityWindow | undefined {
    return this.#x?.intensity;
  }
  set intensity(v: IntensityWindow | undefined) {
    this.#extra.intensity = v;
  }
  /** Pending retry of a failed idle/eviction hibernation. */
  get retryTimer(): NodeJS.Timeout | undefined {
    return this.#x?.retryTimer;
  }
  set retryTimer(v: NodeJS.Timeout | undefined) {
    if (v !== undefined || this.#x) this.#extra.retryTimer = v;
  }
  /** Consecutive failed saves (the backoff attempt of the next retry). */
  get hibernateAttempt(): number {
    return this.#x?.hibernateAttempt ?? 0;
  }
  set hibernateAttempt(v: number) {
    if (v !== 0 || this.#x) this.#extra.hibernateAttempt = v;
  }
  /** Resolves when a hibernation ends either way (only while `hibernating`). */
  get settled(): Promise<void> | undefined {
    return this.#x?.settled;
  }
  set settled(v: Promise<void> | undefined) {
    if (v !== undefined || this.#x) this.#extra.settled = v;
  }
  get resolveSettled(): (() => void) | undefined {
    return this.#x?.resolveSettled;
  }
  set resolveSettled(v: (() => void) | undefined) {
    if (v !== undefined || this.#x) this.#extra.resolveSettled = v;
  }
  /** The control job (save or end) being run, so a forced end can settle it. */
  get activeControl(): ControlJob | undefined {
    return this.#x?.activeControl;
  }
  set activeControl(v: ControlJob | undefined) {
    if (v !== undefined || this.#x) this.#extra.activeControl = v;
  }
  get endReason(): AgentStopReason | undefined {
    return this.#x?.endReason;
  }
  set endReason(v: AgentStopReason | undefined) {
    this.#extra.endReason = v;
  }
  /** What calls on this (stopped) activation reject with, when not `StoppedError`. */
  get endError(): (() => Error) | undefined {
    return this.#x?.endError;
  }
  set endError(v: (() => Error) | undefined) {
    if (v !== undefined || this.#x) this.#extra.endError = v;
  }
}

/** What refs and leases need from their manager. */
interface Core {
  readonly name: string;
  call(slot: Slot, message: unknown): Promise<unknown>;
  touch(slot: Slot): void;
  release(slot: Slot): void;
}

class Ref implements AgentRef {
  readonly #slot: Slot;
  constructor(slot: Slot) {
    this.#slot = slot;
  }
  get manager(): string {
    return this.#slot.partition.core.name;
  }
  get key(): string {
    return this.#slot.key;
  }
  get incarnation(): number {
    return this.#slot.incarnation;
  }
  get status(): 'running' | 'hibernating' | 'stopped' {
    const s = this.#slot.state;
    return s === 'starting' ? 'running' : s;
  }
  get restarts(): number {
    return this.#slot.restarts;
  }
  call(message: never): Promise<never> {
    return this.#slot.partition.core.call(this.#slot, message) as Promise<never>;
  }
  touch(): void {
    if (this.#slot.state === 'running') this.#slot.partition.core.touch(this.#slot);
  }
}

class LeaseImpl implements Lease {
  readonly ref: AgentRef;
  readonly #slot: Slot;
  readonly #core: Core;
  #detached = false;
  #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => this.detach();
  constructor(slot: Slot, core: Core, signal: AbortSignal | undefined) {
    this.ref = slot.ref;
    this.#slot = slot;
    this.#core = core;
    if (signal) {
      this.#signal = signal;
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
  }
  get detached(): boolean {
    return this.#detached || this.#slot.state === 'stopped';
  }
  detach(): void {
    if (this.#detached) return;
    this.#detached = true;
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#signal = undefined;
    this.#core.release(this.#slot);
  }
  [Symbol.dispose](): void {
    this.detach();
  }
}


const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as PromiseLike<unknown>).then === 'function';

/**
 * FNV-1a over the UTF-16 code units: a cheap, stable key → partition map. Masked to 31 bits so
 * the caller's `%` stays an integer operation (a `>>> 0` result above 2^31 would make it a
 * floating-point modulo, several times slower).
 */
function hashKey(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h & 0x7fffffff;
}

const errMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

const noop = (): void => undefined;

/** True once a slot has ended (a function, so TypeScript does not narrow it across awaits). */
const ended = (slot: Slot): boolean => slot.state === 'stopped';

// --- the manager ---------------------------------------------------------------------------

/** Typed `on` / `once` / `off` (declaration merging: types only, the class stays a plain `EventEmitter`). */
// eslint-disable-next-line @typescript-eslint/no-unused-vars -- merging needs the class's own type parameters
export interface InstanceManager<C extends AgentClass = AgentClass> {
  on<K extends keyof ManagerEvents>(event: K, fn: (payload: ManagerEvents[K]) => void): this;
  on(event: EmitterEvent, fn: EmitterListener): this;
  once<K extends keyof ManagerEvents>(event: K, fn: (payload: ManagerEvents[K]) => void): this;
  once(event: EmitterEvent, fn: EmitterListener): this;
  off<K extends keyof ManagerEvents>(event: K, fn: (payload: ManagerEvents[K]) => void): this;
  off(event: EmitterEvent, fn: EmitterListener): this;
}

/**
 * Keyed singletons: one agent per key (a user session, a chat room, a connection), started on
 * demand, put to sleep when nobody needs it, and woken with its state. A port of Jido's
 * `InstanceManager` that fixes its weak spots (the module documentation, `src/manager/index.ts`,
 * has the details and the decisions).
 *
 * - `get(key)` returns the running agent, or thaws it from storage, or starts it fresh. Concurrent
 *   `get`s of a key share one start (and one storage read). A `get` never returns an agent that is
 *   saving on its way out: it waits, then returns the fresh one (or the same one, if the save
 *   failed and it stayed).
 * - Agents run in-process; `ref.call(message)` runs `handle` one message at a time, in order.
 * - Idle agents (no lease, no activity for `idleTimeoutMs`) and, past `maxResident`, the least
 *   recently used unattached ones are hibernated: snapshot → `storage.put` (conditional on the
 *   revision they were thawed from) → stop. A failed save keeps the agent resident, emits
 *   `agent:hibernate_failed` and retries with bounded backoff: state is never dropped silently.
 * - A `handle` that throws crashes its agent only: the call and those queued behind it reject
 *   with `AgentCrashedError`, and the agent restarts from its last checkpoint (or its
 *   `initialState`). More than `maxRestarts` crashes within `periodMs` quarantine the key.
 * - `close()` hibernates every resident agent before stopping it.
 *
 * Events, on the manager (`manager.on('agent:started', …)`) and on diagnostics_channel
 * `threadvisor:agent:<event>`, each with `manager`, `key` and `at`: `agent:started`,
 * `agent:thawed`, `agent:start_failed`, `agent:thaw_failed`, `agent:idle`, `agent:hibernated`,
 * `agent:hibernate_failed`, `agent:stopped`, `agent:crashed`, `agent:restarted`,
 * `agent:quarantined`.
 */
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- the interface above only types on/once/off
export class InstanceManager<C extends AgentClass = AgentClass> extends EventEmitter {
  /** The manager's name (scopes its checkpoints). */
  readonly name: string;
  /** Resolves once, when the manager has closed (class `shutdown`). Never rejects. */
  readonly exited: Promise<ChildExit>;

  readonly #agent: C;
  readonly #agentName: string;
  readonly #stateVersion: number;
  readonly #agentOptions: unknown;
  readonly #storage: Storage | null;
  readonly #idleMs: number;
  readonly #touchOnCall: boolean;
  readonly #maxResident: number;
  /** Idle order is kept only when something uses it (an idle timeout or a resident cap). */
  readonly #tracking: boolean;
  readonly #timed: boolean;
  /** Activity counter: each touch takes the next value as the slot's `stamp`. */
  #seq = 0;
  readonly #intensity: { maxRestarts: number; periodMs: number; quarantineMs: number };
  readonly #retry: BackoffPolicy;
  readonly #partitions: Partition[];
  readonly #logger: Logger;
  readonly #core: Core;
  #resident = 0;
  #incarnations = 0;
  #state: 'open' | 'closing' | 'closed' = 'open';
  #closing: Promise<void> | undefined;
  #resolveExited!: (exit: ChildExit) => void;
  /** Cluster mode: this node's claims on keys (single activation across nodes). */
  #node: ClusterNode | undefined;
  /** Cluster mode: calls to agents other nodes run, and this node's answers to theirs. */
  #remote: RemoteCalls | undefined;
  /** Cluster mode: per key, the tail of this node's remote calls (one at a time per key, in order). */
  readonly #remoteChains = new Map<string, Promise<unknown>>();
  readonly #remoteCallTimeoutMs: number;

  private constructor(opts: z.output<typeof optionsSchema>) {
    super();
    this.name = opts.name;
    this.#agent = opts.agent as C;
    this.#agentName = opts.agent.name || 'anonymous';
    const sv = opts.agent.stateVersion ?? 1;
    if (!Number.isInteger(sv) || sv < 0) {
      throw new InvalidConfigError('instance manager options', [{ path: 'agent.stateVersion', message: 'expected a non-negative integer' }]);
    }
    this.#stateVersion = sv;
    this.#agentOptions = opts.agentOptions;
    this.#storage = opts.storage === undefined ? new MemoryStorage() : opts.storage;
    this.#idleMs = opts.idleTimeoutMs;
    this.#remoteCallTimeoutMs = opts.remoteCallTimeoutMs;
    this.#touchOnCall = opts.touchOnCall;
    this.#maxResident = opts.maxResident;
    this.#timed = Number.isFinite(opts.idleTimeoutMs);
    this.#tracking = this.#timed || Number.isFinite(opts.maxResident);
    this.#intensity = opts.restartIntensity;
    this.#retry = resolveBackoff(opts.hibernateRetry);
    this.#logger = (opts.logger ?? defaultLogger()).child({ manager: opts.name });
    this.exited = new Promise((resolve) => (this.#resolveExited = resolve));
    this.#core = {
      name: this.name,
      call: (slot, message) => this.#call(slot, message),
      touch: (slot) => this.#touch(slot),
      release: (slot) => this.#release(slot),
    };
    this.#partitions = Array.from({ length: opts.partitions }, (_, i) => new Partition(i, this.#core));
  }

  /**
   * Validates the options and resolves with an open manager. Invalid options reject with
   * `InvalidConfigError` (`invalid_config`) listing every bad field path.
   */
  static async start<C extends AgentClass>(options: InstanceManagerOptions<C>): Promise<InstanceManager<C>> {
    const opts = parseOrThrow(optionsSchema, options, 'instance manager options');
    const manager = new InstanceManager<C>(opts);
    if (opts.cluster) await manager.#joinCluster(resolveCluster(opts.cluster));
    return manager;
  }

  /**
   * Cluster mode: one activation per key across nodes. This manager's node claims a key (in
   * Redis, namespace `<namespace>.mgr.<name>`) before it starts or thaws its agent, keeps it
   * while the agent is in memory, and gives it up once the agent is saved and gone. A node that
   * could not renew in time (see the runtime's cluster mode) stops its agents without saving.
   */
  async #joinCluster(c: ResolvedCluster): Promise<void> {
    const [{ LeaseStore }, { ClusterNode }] = await Promise.all([import('../cluster/store.js'), import('../cluster/node.js')]);
    const store = new LeaseStore(c.redis as never, { namespace: `${c.namespace}.mgr.${this.name}`, nodeId: c.nodeId, leaseMs: c.leaseMs });
    try {
      await store.connect();
    } catch (err) {
      await store.close();
      throw new UnavailableError(`instance manager ${this.name}: Redis at ${safeRedisUrl(c.redis)} cannot be reached (${err instanceof Error ? err.message : String(err)})`, { cause: err });
    }
    this.#node = new ClusterNode(
      store,
      {
        runLocal: async () => undefined, // nothing is declared: keys are claimed one by one
        stopLocal: async (key) => this.#dropKey(key),
      },
      { nodeId: c.nodeId, leaseMs: c.leaseMs, safetyMs: c.safetyMs, log: this.#logger.child({ nodeId: c.nodeId }), emitter: this, balance: false },
    );
    this.#node.start();
    await this.#node.settled();
    const { RemoteCalls } = await import('../cluster/remote-calls.js');
    const remote = new RemoteCalls({ redis: c.redis, namespace: `${c.namespace}.mgr.${this.name}`, nodeId: c.nodeId, log: this.#logger.child({ nodeId: c.nodeId }) });
    try {
      await remote.start((key, message) => this.#serveRemote(key, message));
    } catch (err) {
      await remote.close();
      await this.#node.close(true);
      throw new UnavailableError(`instance manager ${this.name}: Redis at ${safeRedisUrl(c.redis)} cannot be reached (${err instanceof Error ? err.message : String(err)})`, { cause: err });
    }
    this.#remote = remote;
  }

  /** Cluster mode: runs a call another node asked for, here (`not_owner` when a third node has the key). */
  async #serveRemote(key: string, message: unknown): Promise<unknown> {
    checkKey(key);
    const slot = await this.#acquire(key, undefined, false);
    return (slot.ref as AgentRef).call(message as never);
  }

  /**
   * Cluster mode: a call through a {@link RemoteRef}: run here when this node has the key or can
   * claim it, else asked of its owner; when the owner changes meanwhile, asked again of the new
   * one, until `remoteCallTimeoutMs` (then `TimeoutError`). One at a time per key, in order.
   */
  callRemote(key: string, message: unknown): Promise<unknown> {
    const bad = findNonJson(message);
    if (bad !== undefined) return Promise.reject(new InvalidMessageError(`agent ${this.name}/${key}`, `${bad.problem} (calls to another node travel as JSON)`, { path: bad.path }));
    const prev = this.#remoteChains.get(key) ?? Promise.resolve();
    const run = prev.then(() => this.#remoteOnce(key, message));
    const tail = run.then(noop, noop);
    this.#remoteChains.set(key, tail);
    void tail.then(() => {
      if (this.#remoteChains.get(key) === tail) this.#remoteChains.delete(key);
    });
    return run;
  }

  async #remoteOnce(key: string, message: unknown): Promise<unknown> {
    const timeoutMs = this.#remoteCallTimeoutMs;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let owner: string;
      try {
        const slot = await this.#acquire(key, undefined, false);
        return await (slot.ref as AgentRef).call(message as never);
      } catch (err) {
        if (!(err instanceof NotOwnerError) || err.owner === null) throw err;
        owner = err.owner;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0 || !this.#remote) throw new TimeoutError(`call to agent ${this.name}/${key}`, timeoutMs);
      try {
        return await this.#remote.call(owner, key, message, remaining);
      } catch (err) {
        if ((err as ThreadvisorError).code !== 'not_owner') throw err;
        // The key moved: ask again (its new owner, or here).
        await new Promise((resolve) => setTimeout(resolve, 50));
        if (Date.now() >= deadline) throw new TimeoutError(`call to agent ${this.name}/${key}`, timeoutMs);
      }
    }
  }

  /** Cluster mode: the key is no longer this node's (lost, or fenced): its agent stops without saving. */
  #dropKey(key: string): void {
    const slot = this.#partitionOf(key).slots.get(key);
    if (slot && !ended(slot)) this.#end(slot, 'stop', false);
  }

  /** Cluster mode: this node's id (undefined otherwise). */
  get nodeId(): string | undefined {
    return this.#node?.nodeId;
  }

  /**
   * A child spec that runs a manager under a `Supervisor`. The supervisor's shutdown then
   * hibernates every agent (Jido's loses state there), retrying failed saves within the
   * shutdown budget; the manager logs through the supervisor's child logger unless `options`
   * has its own.
   */
  static childSpec<C extends AgentClass>(options: InstanceManagerOptions<C>, child: InstanceManagerChildOptions = {}): ChildSpec {
    return {
      id: child.id ?? `manager:${options.name}`,
      type: 'worker',
      restart: child.restart ?? 'transient',
      shutdown: child.shutdown ?? 30_000,
      start: (ctx) => InstanceManager.start({ logger: ctx.logger, ...options }),
    };
  }

  /** The agent class this manager runs (Jido's `agent_module`). */
  agentModule(): C {
    return this.#agent;
  }

  /** `open`, `closing` or `closed`. */
  get state(): 'open' | 'closing' | 'closed' {
    return this.#state;
  }

  /**
   * The running agent of `key`; otherwise thaws it from storage or starts it fresh with
   * `options.initialState`. Counts as activity (restarts the idle countdown). Rejects with
   * `ThawFailedError` (`thaw_failed`) when a checkpoint exists but cannot be read, verified,
   * migrated or accepted by `init` (nothing is started or overwritten), `StartFailureError`
   * (`start_failure`) when a fresh agent's constructor or `init` throws, `AgentCrashedError`
   * (reason `quarantined`) while the key is quarantined, `StoppedError` once closing.
   */
  get(key: string, options?: GetOptions<InstanceType<C>>): Promise<AgentRef<InstanceType<C>>> {
    if (this.#state === 'open' && typeof key === 'string') {
      const slot = this.#partitionOf(key).slots.get(key);
      if (slot !== undefined && slot.state === 'running') {
        this.#touch(slot);
        return Promise.resolve(slot.ref as AgentRef<InstanceType<C>>);
      }
    }
    return this.#getSlow(key, options);
  }

  async #getSlow(key: string, options: GetOptions | undefined): Promise<AgentRef<InstanceType<C>>> {
    checkKey(key);
    const opts = options === undefined ? {} : parseOrThrow(getOptionsSchema, options, 'get options');
    let slot: Slot;
    try {
      slot = await this.#acquire(key, opts.initialState, false);
    } catch (err) {
      // Cluster mode: another node runs the key: a handle whose calls go there.
      if (err instanceof NotOwnerError && err.owner !== null && this.#remote) return new RemoteRef(this, key) as unknown as AgentRef<InstanceType<C>>;
      throw err;
    }
    return slot.ref as AgentRef<InstanceType<C>>;
  }

  /**
   * Gets (or thaws, or starts) the agent and attaches to it: while the lease is held it never
   * idles out or gets evicted. `lease.detach()`, leaving a `using` block, or aborting
   * `options.signal` releases it; the last release starts the idle countdown.
   */
  async attach(key: string, options?: AttachOptions<InstanceType<C>>): Promise<Lease<InstanceType<C>>> {
    checkKey(key);
    const opts = options === undefined ? {} : parseOrThrow(attachOptionsSchema, options, 'attach options');
    const signal = opts.signal;
    if (signal?.aborted) throw signal.reason;
    const slot = await this.#acquire(key, opts.initialState, true);
    const lease = new LeaseImpl(slot, this.#core, signal);
    if (signal?.aborted) {
      lease.detach();
      throw signal.reason;
    }
    return lease as Lease<InstanceType<C>>;
  }

  /**
   * The agent of `key` if it is in memory, else `undefined`. Never starts or thaws anything. If
   * the key is starting it waits for the outcome; if it is hibernating it waits, and resolves
   * `undefined` once it is gone (or the agent, if its save failed and it stayed).
   */
  async lookup(key: string): Promise<AgentRef<InstanceType<C>> | undefined> {
    checkKey(key);
    const p = this.#partitionOf(key);
    for (;;) {
      const slot = p.slots.get(key);
      if (slot === undefined) return undefined;
      if (slot.state === 'running') return slot.ref as AgentRef<InstanceType<C>>;
      if (slot.state === 'starting') await (slot.ready as Promise<void>).catch(noop);
      else await slot.settled;
    }
  }

  /**
   * Hibernates the agent of `key` (saves it), then stops it, whatever its leases. Resolves once
   * it is stopped. A key not in memory rejects with `NotFoundError` (`not_found`). A failed save
   * rejects with `HibernateFailedError` and leaves the agent running, unless
   * `options.discardUnsaved`.
   */
  async stop(key: string, options?: StopOptions): Promise<void> {
    checkKey(key);
    const opts = parseOrThrow(stopOptionsSchema, options ?? {}, 'stop options');
    const p = this.#partitionOf(key);
    let seen = false;
    for (;;) {
      const slot = p.slots.get(key);
      if (slot === undefined) {
        if (seen) return; // it was hibernating on its way out: done
        throw new NotFoundError('agent', `${this.name}/${key}`);
      }
      if (slot.state === 'starting') {
        await (slot.ready as Promise<void>).catch(noop);
        continue;
      }
      seen = true;
      if (slot.state === 'hibernating') {
        await slot.settled;
        continue;
      }
      await this.#endSlot(slot, 'stop', { save: this.#storage !== null, force: opts.discardUnsaved });
      return;
    }
  }

  /**
   * Saves the running agent of `key` now, without stopping it (between two messages). Resolves
   * with the checkpoint, or `undefined` when the manager has no storage. `NotFoundError` when
   * the key is not running; `HibernateFailedError` when the save fails (nothing else changes).
   */
  async checkpoint(key: string): Promise<Checkpoint | undefined> {
    checkKey(key);
    const p = this.#partitionOf(key);
    for (;;) {
      const slot = p.slots.get(key);
      if (slot === undefined) throw new NotFoundError('agent', `${this.name}/${key}`);
      if (slot.state === 'running') {
        return new Promise<unknown>((resolve, reject) =>
          this.#enqueue(slot, { kind: 'checkpoint', reason: 'stop', save: true, force: false, resolve, reject }),
        ) as Promise<Checkpoint | undefined>;
      }
      if (slot.state === 'starting') await (slot.ready as Promise<void>).catch(noop);
      else await slot.settled;
    }
  }

  /**
   * Erases `key`: stops its agent if one is in memory (without saving; queued calls reject with
   * `StoppedError`), deletes its checkpoint and lifts a quarantine. Resolves `true` if there was
   * anything to erase.
   */
  async forget(key: string): Promise<boolean> {
    checkKey(key);
    const p = this.#partitionOf(key);
    let existed = this.clearQuarantine(key);
    for (;;) {
      const slot = p.slots.get(key);
      if (slot === undefined) break;
      if (slot.state === 'starting') await (slot.ready as Promise<void>).catch(noop);
      else if (slot.state === 'hibernating') await slot.settled;
      else {
        existed = true;
        await this.#endSlot(slot, 'forget', { save: false, force: true });
      }
    }
    if (this.#storage && (await this.#storage.delete(this.#ckey(key)))) existed = true;
    return existed;
  }

  /** Lifts the quarantine of `key` (see `restartIntensity`); returns whether it was quarantined. */
  clearQuarantine(key: string): boolean {
    checkKey(key);
    const p = this.#partitionOf(key);
    const q = p.quarantine.get(key);
    if (!q) return false;
    clearTimeout(q.timer);
    p.quarantine.delete(key);
    return true;
  }

  /** Counts and keys of the agents in memory (never hibernated keys). O(agents). */
  stats(): InstanceManagerStats {
    const keys: string[] = [];
    let starting = 0;
    let hibernating = 0;
    let attached = 0;
    let quarantined = 0;
    const partitions: number[] = [];
    for (const p of this.#partitions) {
      let n = 0;
      for (const slot of p.slots.values()) {
        if (slot.state === 'starting') {
          starting += 1;
          continue;
        }
        n += 1;
        keys.push(slot.key);
        if (slot.state === 'hibernating') hibernating += 1;
        if (slot.leases > 0) attached += 1;
      }
      partitions.push(n);
      quarantined += p.quarantine.size;
    }
    return { name: this.name, count: keys.length, keys, resident: this.#resident, starting, hibernating, attached, quarantined, partitions, state: this.#state };
  }

  /**
   * Hibernates every agent in memory (after the calls queued to it), then stops it; new `get`s
   * reject with `StoppedError` from the first moment. Resolves once all are saved and stopped.
   * If some saves fail, those agents stay resident and `close` rejects with
   * `HibernateFailedError` listing their keys (`details.keys`); call `close()` again to retry,
   * or `close({ discardUnsaved: true })` to stop them anyway. Idempotent once closed.
   */
  close(options?: StopOptions): Promise<void> {
    if (this.#state === 'closed') return Promise.resolve();
    let opts: { discardUnsaved: boolean };
    try {
      opts = parseOrThrow(stopOptionsSchema, options ?? {}, 'close options');
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#closing) return this.#closing;
    this.#state = 'closing';
    this.#closing = this.#doClose(opts.discardUnsaved).finally(() => (this.#closing = undefined));
    return this.#closing;
  }

  /**
   * `RunningChild.shutdown` (for a `Supervisor`): closes, retrying failed saves with the
   * `hibernateRetry` backoff until `budget` expires (`'infinity'`: until they succeed), then
   * stops whatever is left without its unsaved state (loudly). `'brutal_kill'` stops every
   * agent at once, without saving. Resolves with the exit record.
   */
  async shutdown(budget: Shutdown): Promise<ChildExit> {
    const deadline = budget === 'infinity' ? Infinity : budget === 'brutal_kill' ? 0 : Date.now() + budget;
    for (let attempt = 0; this.#state !== 'closed'; attempt++) {
      const left = deadline - Date.now();
      if (left <= 0) {
        this.#forceEndAll();
        await this.close({ discardUnsaved: true }).catch(noop);
        continue;
      }
      let timer: NodeJS.Timeout | undefined;
      const expired = Number.isFinite(left)
        ? new Promise<'expired'>((resolve) => (timer = setTimeout(() => resolve('expired'), Math.min(left, MAX_TIMER_MS))))
        : new Promise<'expired'>(noop);
      const outcome = await Promise.race([this.close().then(() => 'closed' as const, () => 'failed' as const), expired]);
      clearTimeout(timer);
      if (outcome === 'closed') break;
      if (outcome === 'expired') continue; // the next round forces what is left
      const delay = Math.min(backoffDelay(this.#retry, attempt), Math.max(0, deadline - Date.now()));
      await new Promise((resolve) => setTimeout(resolve, Math.min(delay, MAX_TIMER_MS)));
    }
    return this.exited;
  }

  /** `await using manager = await InstanceManager.start(…)` closes it at the end of the block. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- acquisition -------------------------------------------------------------------------

  /**
   * Resolves with the key's running slot, starting or thawing it if needed; with `attach`, takes
   * a lease in the same synchronous step that finds it running (so nothing can hibernate it in
   * between).
   */
  async #acquire(key: string, initialState: unknown, attach: boolean): Promise<Slot> {
    const p = this.#partitionOf(key);
    for (;;) {
      if (this.#state !== 'open') throw new StoppedError(`instance manager ${this.name}`);
      const q = p.quarantine.get(key);
      if (q) throw new AgentCrashedError(this.name, key, 'quarantined', { details: { until: q.until } });
      if (this.#node && !p.slots.has(key)) {
        // Cluster mode: only the node that owns the key runs its agent (not_owner elsewhere).
        await this.#node.claim(key);
        if (this.#state !== 'open') throw new StoppedError(`instance manager ${this.name}`);
      }
      const slot = p.slots.get(key) ?? this.#startSlot(p, key, initialState);
      if (slot.state === 'running') {
        if (attach) this.#lease(slot);
        else this.#touch(slot);
        return slot;
      }
      if (slot.state === 'starting') await slot.ready;
      else await slot.settled;
    }
  }

  #startSlot(p: Partition, key: string, initialState: unknown): Slot {
    const slot = new Slot(key, p, ++this.#incarnations);
    p.slots.set(key, slot);
    slot.ready = this.#activate(slot, initialState);
    slot.ready.catch(noop); // waiters see the rejection; an unobserved one is not an error
    return slot;
  }

  async #activate(slot: Slot, initialState: unknown): Promise<void> {
    const { key } = slot;
    let cp: Checkpoint | undefined;
    let agent: AnyAgent;
    try {
      cp = await this.#readCheckpoint(key);
      const state = cp ? await this.#migrate(cp) : initialState;
      try {
        agent = await this.#construct(key, state, cp, 0);
      } catch (err) {
        if (cp) throw new ThawFailedError(this.name, key, `init rejected the checkpoint: ${errMessage(err)}`, { cause: err });
        throw new StartFailureError(`${this.name}/${key}`, errMessage(err), { cause: err, details: { manager: this.name, key } });
      }
    } catch (err) {
      const p = slot.partition;
      if (p.slots.get(key) === slot) p.slots.delete(key);
      if (this.#node && !p.slots.has(key)) void this.#node.unclaim(key);
      slot.state = 'stopped';
      slot.endReason = 'restart_failed';
      const event = err instanceof ThawFailedError ? 'thaw_failed' : 'start_failed';
      this.#logger.warn({ key, err }, event === 'thaw_failed' ? 'thaw failed; nothing started or overwritten' : 'agent failed to start');
      this.#emit(event, () => ({ key, incarnation: slot.incarnation, error: err, reason: errMessage(err) }));
      throw err;
    }
    slot.agent = agent;
    slot.ready = undefined;
    slot.revision = cp?.revision ?? 0;
    slot.initialState = cp ? undefined : initialState;
    slot.state = 'running';
    this.#resident += 1;
    if (cp) {
      this.#logger.debug({ key, revision: cp.revision }, 'agent thawed');
      this.#emit('thawed', () => ({ key, incarnation: slot.incarnation, revision: cp.revision }));
    }
    this.#logger.debug({ key, thawed: cp !== undefined }, 'agent started');
    this.#emit('started', () => ({ key, incarnation: slot.incarnation, thawed: cp !== undefined, revision: slot.revision }));
    this.#evict(); // before the new agent joins the idle order, so it is never its own victim
    this.#touch(slot);
  }

  async #readCheckpoint(key: string): Promise<Checkpoint | undefined> {
    if (!this.#storage) return undefined;
    let cp: Checkpoint | undefined;
    try {
      cp = await this.#storage.get(this.#ckey(key));
    } catch (err) {
      throw new ThawFailedError(this.name, key, `storage could not read the checkpoint: ${errMessage(err)}`, { cause: err });
    }
    if (cp !== undefined && cp.version > CHECKPOINT_VERSION) {
      throw new ThawFailedError(this.name, key, `checkpoint format version ${cp.version} is newer than ${CHECKPOINT_VERSION}`);
    }
    return cp;
  }

  async #migrate(cp: Checkpoint): Promise<unknown> {
    const current = this.#stateVersion;
    if (cp.stateVersion === current) return cp.state;
    if (cp.stateVersion > current) {
      throw new ThawFailedError(this.name, cp.key, `checkpoint state version ${cp.stateVersion} is newer than the agent's ${current}`);
    }
    const migrate = this.#agent.migrate;
    if (typeof migrate !== 'function') {
      throw new ThawFailedError(this.name, cp.key, `checkpoint state version ${cp.stateVersion} needs a migration to ${current}; the agent has no static migrate()`);
    }
    try {
      return await migrate.call(this.#agent, cp.state, cp.stateVersion);
    } catch (err) {
      throw new ThawFailedError(this.name, cp.key, `migrate from state version ${cp.stateVersion} threw: ${errMessage(err)}`, { cause: err });
    }
  }

  async #construct(key: string, state: unknown, cp: Checkpoint | undefined, restarts: number): Promise<AnyAgent> {
    const agent = new this.#agent(key, this.#agentOptions as never);
    if (typeof agent.init === 'function') {
      await agent.init(state, { key, thawed: cp !== undefined, revision: cp?.revision ?? 0, restarts });
    }
    return agent;
  }

  // --- activity, leases, idle sweep, eviction ------------------------------------------------

  #touch(slot: Slot): void {
    if (!this.#tracking) return;
    if (this.#timed) slot.lastActive = Date.now();
    slot.stamp = ++this.#seq;
    if (slot.idleStamp >= 0 || slot.leases > 0 || slot.state !== 'running') return; // already in the order: lazy
    if (slot.retryTimer !== undefined) {
      clearTimeout(slot.retryTimer);
      slot.retryTimer = undefined;
    }
    const p = slot.partition;
    slot.idleStamp = slot.stamp;
    p.idle.set(slot.key, slot);
    if (p.sweepTimer === undefined) this.#scheduleSweep(p);
  }

  #leaveIdle(slot: Slot): void {
    if (slot.idleStamp < 0) return;
    slot.idleStamp = -1;
    slot.partition.idle.delete(slot.key);
  }

  /** The least recently used slot of the idle order (see {@link Partition.idle}). */
  #idleHead(p: Partition): Slot | undefined {
    for (;;) {
      const first = p.idle.values().next();
      if (first.done) return undefined;
      const slot = first.value;
      if (slot.stamp === slot.idleStamp) return slot;
      p.idle.delete(slot.key); // touched since it entered: to the tail
      p.idle.set(slot.key, slot);
      slot.idleStamp = slot.stamp;
    }
  }

  #lease(slot: Slot): void {
    slot.leases += 1;
    if (slot.retryTimer !== undefined) {
      clearTimeout(slot.retryTimer);
      slot.retryTimer = undefined;
    }
    if (this.#timed) slot.lastActive = Date.now();
    slot.stamp = ++this.#seq;
    this.#leaveIdle(slot);
  }

  #release(slot: Slot): void {
    if (slot.state === 'stopped' || slot.leases === 0) return;
    slot.leases -= 1;
    if (slot.leases === 0 && slot.state === 'running' && this.#state === 'open') {
      this.#touch(slot);
      this.#evict(); // the cap was exceeded while everything was attached
    }
  }

  #scheduleSweep(p: Partition): void {
    if (!this.#timed || this.#state !== 'open') return;
    const head = this.#idleHead(p);
    if (head === undefined) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, head.lastActive + this.#idleMs - Date.now()));
    p.sweepTimer = setTimeout(() => this.#sweep(p), delay);
  }

  #sweep(p: Partition): void {
    p.sweepTimer = undefined;
    const now = Date.now();
    for (let head = this.#idleHead(p); head !== undefined && head.lastActive + this.#idleMs <= now; head = this.#idleHead(p)) {
      const slot = head;
      this.#logger.debug({ key: slot.key }, 'agent idle');
      this.#emit('idle', () => ({ key: slot.key, incarnation: slot.incarnation, idleMs: now - slot.lastActive }));
      this.#passivate(slot, 'idle'); // leaves the idle order
    }
    this.#scheduleSweep(p);
  }

  /** Hibernates the least recently used unattached agents while more than `maxResident` run. */
  #evict(): void {
    while (this.#resident > this.#maxResident) {
      let victim: Slot | undefined;
      for (const p of this.#partitions) {
        const head = this.#idleHead(p);
        if (head !== undefined && (victim === undefined || head.stamp < victim.stamp)) victim = head;
      }
      if (victim === undefined) return; // everything else is attached or already on its way out
      this.#passivate(victim, 'evicted');
    }
  }

  /** Idle or eviction hibernation of an unattached running agent (no waiter; failures retry). */
  #passivate(slot: Slot, reason: 'idle' | 'evicted'): void {
    this.#leaveIdle(slot);
    if (slot.state !== 'running' || slot.leases > 0) return;
    void this.#endSlot(slot, reason, { save: this.#storage !== null, force: false }).catch(noop);
  }

  // --- the mailbox ---------------------------------------------------------------------------

  #call(slot: Slot, message: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => this.#deliver(slot, { kind: 'call', message, resolve, reject }));
  }

  /** Queues a call on its activation; after a passivation it follows the key to its next one. */
  #deliver(slot: Slot, job: CallJob): void {
    if (slot.state === 'running' || slot.state === 'hibernating') {
      if (this.#touchOnCall && slot.state === 'running') this.#touch(slot);
      this.#enqueue(slot, job);
      return;
    }
    if (this.#reroutes(slot)) {
      this.#acquire(slot.key, undefined, false).then(
        (next) => this.#deliver(next, job),
        (err: unknown) => job.reject(err),
      );
      return;
    }
    job.reject(slot.endError?.() ?? new StoppedError(`agent ${this.name}/${slot.key}`));
  }

  #reroutes(slot: Slot): boolean {
    return this.#state === 'open' && (slot.endReason === 'idle' || slot.endReason === 'evicted');
  }

  #enqueue(slot: Slot, job: Job): void {
    (slot.queue ??= []).push(job);
    if (!slot.busy) {
      slot.busy = true;
      queueMicrotask(() => this.#pump(slot));
    }
  }

  /** Runs queued jobs one at a time. `slot.busy` is true throughout, including async waits. */
  #pump(slot: Slot): void {
    const q = slot.queue;
    if (q === undefined || slot.state === 'stopped') {
      slot.busy = false; // nothing queued, or ended meanwhile (#end settled the queue)
      return;
    }
    while (slot.head < q.length) {
      if (slot.head > 1024 && slot.head * 2 > q.length) {
        q.splice(0, slot.head);
        slot.head = 0;
      }
      const job = q[slot.head] as Job;
      q[slot.head++] = undefined;
      if (job.kind === 'call') {
        let reply: unknown;
        try {
          reply = (slot.agent as AnyAgent).handle(job.message);
        } catch (err) {
          this.#crash(slot, job, err);
          return;
        }
        if (isThenable(reply)) {
          Promise.resolve(reply).then(
            (value) => {
              job.resolve(value);
              this.#pump(slot);
            },
            (err: unknown) => this.#crash(slot, job, err),
          );
          return;
        }
        job.resolve(reply);
      } else {
        void this.#control(slot, job).then(() => this.#pump(slot));
        return;
      }
    }
    slot.queue = undefined; // drained: an idle agent keeps no queue array
    slot.head = 0;
    slot.busy = false;
  }

  async #control(slot: Slot, job: ControlJob): Promise<void> {
    slot.activeControl = job;
    if (job.kind === 'checkpoint') {
      try {
        const cp = this.#storage ? await this.#save(slot) : undefined;
        if (ended(slot)) return; // force-ended meanwhile: #end settled the job
        slot.activeControl = undefined;
        job.resolve(cp);
      } catch (err) {
        if (ended(slot)) return;
        slot.activeControl = undefined;
        this.#saveFailed(slot, 'checkpoint', err);
        job.reject(err);
      }
      return;
    }
    let persisted = false;
    if (job.save) {
      try {
        await this.#save(slot);
        persisted = true;
      } catch (err) {
        if (ended(slot)) return; // force-ended meanwhile (shutdown budget expired)
        this.#saveFailed(slot, job.reason, err);
        if (!job.force) {
          slot.activeControl = undefined;
          this.#leaveHibernating(slot, job.reason);
          job.reject(err);
          return;
        }
      }
      if (ended(slot)) return;
      if (persisted) {
        this.#logger.debug({ key: slot.key, reason: job.reason, revision: slot.revision }, 'agent hibernated');
        this.#emit('hibernated', () => ({ key: slot.key, incarnation: slot.incarnation, reason: job.reason, revision: slot.revision }));
      }
    }
    const agent = slot.agent;
    slot.activeControl = undefined;
    this.#end(slot, job.reason, persisted);
    if (agent && typeof agent.terminate === 'function') {
      try {
        await agent.terminate(job.reason);
      } catch (err) {
        this.#logger.warn({ key: slot.key, err }, 'agent terminate threw');
      }
    }
    job.resolve(undefined);
  }

  /** Snapshot → JSON check → conditional put. Throws `HibernateFailedError`. */
  async #save(slot: Slot): Promise<Checkpoint> {
    const { key } = slot;
    const storage = this.#storage as Storage;
    let state: unknown;
    try {
      state = await (slot.agent as AnyAgent).snapshot();
    } catch (err) {
      throw new HibernateFailedError(this.name, [key], `snapshot threw: ${errMessage(err)}`, { cause: err });
    }
    const bad = findNonJson(state);
    if (bad) throw new HibernateFailedError(this.name, [key], `snapshot is not plain JSON at ${bad.path}: ${bad.problem}`);
    let cp: Checkpoint;
    try {
      cp = await storage.put(
        this.#ckey(key),
        { version: CHECKPOINT_VERSION, stateVersion: this.#stateVersion, agent: this.#agentName, savedAt: Date.now(), state: state as never },
        { expectedRevision: slot.revision },
      );
    } catch (err) {
      const why = err instanceof RevisionConflictError ? 'revision_conflict (another writer changed the checkpoint)' : `storage put failed: ${errMessage(err)}`;
      throw new HibernateFailedError(this.name, [key], why, { cause: err });
    }
    slot.revision = cp.revision;
    slot.initialState = undefined;
    slot.hibernateAttempt = 0;
    return cp;
  }

  #saveFailed(slot: Slot, reason: AgentStopReason | 'checkpoint', err: unknown): void {
    const attempt = slot.hibernateAttempt;
    this.#logger.error({ key: slot.key, reason, attempt, err }, 'agent state could not be saved; it stays resident');
    this.#emit('hibernate_failed', () => ({ key: slot.key, incarnation: slot.incarnation, reason, attempt, error: err }));
  }

  /** Starts an `end` job (the slot turns `hibernating` at once) and resolves when it is done. */
  #endSlot(slot: Slot, reason: AgentStopReason, how: { save: boolean; force: boolean }): Promise<void> {
    if (slot.state === 'running') {
      this.#resident -= 1;
      slot.state = 'hibernating';
      this.#leaveIdle(slot);
      if (slot.retryTimer !== undefined) {
        clearTimeout(slot.retryTimer);
        slot.retryTimer = undefined;
      }
      slot.settled = new Promise((resolve) => (slot.resolveSettled = resolve));
    }
    return new Promise<unknown>((resolve, reject) =>
      this.#enqueue(slot, { kind: 'end', reason, save: how.save, force: how.force, resolve, reject }),
    ).then(noop);
  }

  /** A failed save: back to running, and (idle/eviction) a retry later. */
  #leaveHibernating(slot: Slot, reason: AgentStopReason): void {
    slot.state = 'running';
    this.#resident += 1;
    slot.hibernateAttempt += 1;
    const resolve = slot.resolveSettled;
    slot.settled = undefined;
    slot.resolveSettled = undefined;
    resolve?.();
    if (this.#state !== 'open' || slot.leases > 0) return;
    if (reason === 'idle' || reason === 'evicted') {
      const delay = backoffDelay(this.#retry, slot.hibernateAttempt - 1);
      slot.retryTimer = setTimeout(() => {
        slot.retryTimer = undefined;
        this.#passivate(slot, reason);
      }, Math.min(delay, MAX_TIMER_MS));
    } else {
      this.#touch(slot);
    }
  }

  /** Removes a slot for good, then settles what was queued behind its end. */
  #end(slot: Slot, reason: AgentStopReason, persisted: boolean, error?: () => Error): void {
    if (ended(slot)) return;
    if (slot.state === 'running') this.#resident -= 1;
    slot.state = 'stopped';
    slot.endReason = reason;
    slot.endError = error;
    slot.agent = undefined;
    slot.initialState = undefined;
    const p = slot.partition;
    if (p.slots.get(slot.key) === slot) p.slots.delete(slot.key);
    if (this.#node && !p.slots.has(slot.key)) void this.#node.unclaim(slot.key);
    this.#leaveIdle(slot);
    if (slot.retryTimer !== undefined) clearTimeout(slot.retryTimer);
    slot.retryTimer = undefined;
    const pending = (slot.queue ?? []).slice(slot.head);
    if (slot.activeControl !== undefined) pending.unshift(slot.activeControl);
    slot.activeControl = undefined;
    slot.queue = undefined;
    slot.head = 0;
    slot.busy = false;
    const resolve = slot.resolveSettled;
    slot.settled = undefined;
    slot.resolveSettled = undefined;
    this.#logger.debug({ key: slot.key, reason, persisted }, 'agent stopped');
    this.#emit('stopped', () => ({ key: slot.key, incarnation: slot.incarnation, reason, persisted }));
    for (const job of pending) {
      if (job === undefined) continue;
      if (job.kind === 'call') this.#deliver(slot, job);
      else if (job.kind === 'end') job.resolve(undefined);
      else job.reject(error?.() ?? new StoppedError(`agent ${this.name}/${slot.key}`));
    }
    resolve?.();
  }

  // --- crashes -------------------------------------------------------------------------------

  #crash(slot: Slot, job: CallJob, err: unknown): void {
    const { key } = slot;
    job.reject(new AgentCrashedError(this.name, key, 'crashed', { cause: err, details: { incarnation: slot.incarnation } }));
    this.#rejectPendingCalls(slot, () => new AgentCrashedError(this.name, key, 'pending', { cause: err, details: { incarnation: slot.incarnation } }));
    slot.restarts += 1;
    slot.agent = undefined;
    const window = (slot.intensity ??= new IntensityWindow(this.#intensity.maxRestarts, this.#intensity.periodMs));
    const exceeded = window.record();
    this.#logger.warn({ key, err, restarts: slot.restarts, quarantined: exceeded }, 'agent crashed');
    this.#emit('crashed', () => ({ key, incarnation: slot.incarnation, error: err, restarts: slot.restarts, quarantined: exceeded }));
    if (exceeded) this.#quarantine(slot, err);
    else void this.#restart(slot);
  }

  #rejectPendingCalls(slot: Slot, error: () => Error): void {
    const q = slot.queue as Array<Job | undefined>;
    const kept: Job[] = [];
    for (let i = slot.head; i < q.length; i++) {
      const job = q[i];
      if (job === undefined) continue;
      if (job.kind === 'call') job.reject(error());
      else kept.push(job);
    }
    slot.queue = kept;
    slot.head = 0;
  }

  /** Re-reads the last checkpoint (or the initial state) into a new agent; `slot.busy` stays set. */
  async #restart(slot: Slot): Promise<void> {
    const { key } = slot;
    for (;;) {
      let cp: Checkpoint | undefined;
      let state: unknown;
      try {
        cp = await this.#readCheckpoint(key);
        if ((cp?.revision ?? 0) !== slot.revision) {
          throw new ThawFailedError(this.name, key, `checkpoint revision ${cp?.revision ?? 0} is not ${slot.revision}, the one this agent descends from`);
        }
        state = cp ? await this.#migrate(cp) : slot.initialState;
      } catch (err) {
        if (ended(slot)) return;
        this.#logger.error({ key, err }, 'agent could not be restarted: its checkpoint cannot be read');
        const cause = err;
        this.#end(slot, 'restart_failed', false, () => new AgentCrashedError(this.name, key, 'restart_failed', { cause }));
        return;
      }
      if (ended(slot)) return;
      try {
        slot.agent = await this.#construct(key, state, cp, slot.restarts);
      } catch (err) {
        if (ended(slot)) return;
        slot.restarts += 1;
        const exceeded = (slot.intensity as IntensityWindow).record();
        this.#logger.warn({ key, err, restarts: slot.restarts, quarantined: exceeded }, 'agent restart failed in init');
        this.#emit('crashed', () => ({ key, incarnation: slot.incarnation, error: err, restarts: slot.restarts, quarantined: exceeded }));
        if (exceeded) {
          this.#quarantine(slot, err);
          return;
        }
        continue;
      }
      if (ended(slot)) return;
      this.#emit('restarted', () => ({ key, incarnation: slot.incarnation, restarts: slot.restarts, revision: slot.revision }));
      this.#pump(slot);
      return;
    }
  }

  #quarantine(slot: Slot, err: unknown): void {
    const { key } = slot;
    const p = slot.partition;
    const { quarantineMs, maxRestarts, periodMs } = this.#intensity;
    const until = Date.now() + quarantineMs;
    if (quarantineMs > 0 && this.#state === 'open') {
      const timer = setTimeout(() => {
        if (p.quarantine.get(key)?.until === until) p.quarantine.delete(key);
      }, Math.min(quarantineMs, MAX_TIMER_MS));
      timer.unref();
      p.quarantine.set(key, { until, timer });
    }
    this.#logger.error({ key, err, maxRestarts, periodMs, quarantineMs }, 'agent exceeded its restart intensity; key quarantined');
    this.#emit('quarantined', () => ({ key, incarnation: slot.incarnation, until, maxRestarts, periodMs, error: err }));
    this.#end(slot, 'quarantined', false, () => new AgentCrashedError(this.name, key, 'quarantined', { cause: err, details: { until } }));
  }

  // --- closing -------------------------------------------------------------------------------

  async #doClose(discardUnsaved: boolean): Promise<void> {
    for (const p of this.#partitions) {
      clearTimeout(p.sweepTimer);
      p.sweepTimer = undefined;
      for (const q of p.quarantine.values()) clearTimeout(q.timer);
      p.quarantine.clear();
    }
    const failed = new Set<string>();
    let causes: unknown[] = [];
    // Slots can change state while we wait (starts finish, saves fail): loop until all are settled.
    for (;;) {
      const pending: Array<Promise<unknown>> = [];
      for (const p of this.#partitions) {
        for (const slot of p.slots.values()) {
          if (slot.retryTimer !== undefined) {
            clearTimeout(slot.retryTimer);
            slot.retryTimer = undefined;
          }
          if (slot.state === 'starting') pending.push((slot.ready as Promise<void>).catch(noop));
          else if (slot.state === 'hibernating') pending.push(slot.settled as Promise<void>);
          else if (slot.state === 'running' && !failed.has(slot.key)) {
            pending.push(
              this.#endSlot(slot, 'close', { save: this.#storage !== null, force: discardUnsaved }).catch((err: unknown) => {
                failed.add(slot.key);
                causes.push(err);
              }),
            );
          }
        }
      }
      if (pending.length === 0) break;
      await Promise.all(pending);
    }
    if (failed.size > 0) {
      const cause = causes.length === 1 ? causes[0] : new AggregateError(causes, 'hibernate failures');
      causes = [];
      throw new HibernateFailedError(
        this.name,
        [...failed],
        `close: ${failed.size} agent(s) could not be saved and stay resident; call close() again, or close({ discardUnsaved: true })`,
        { cause },
      );
    }
    // Cluster mode: every agent is saved and gone: the claims go at once (the others need not wait).
    await this.#remote?.close();
    await this.#node?.close(true);
    this.#state = 'closed';
    this.#logger.debug('instance manager closed');
    this.#resolveExited({ class: 'shutdown', reason: 'shutdown' });
  }

  /** Shutdown budget expired (or brutal_kill): every agent in memory stops now without saving, loudly. */
  #forceEndAll(): void {
    const keys: string[] = [];
    for (const p of this.#partitions) {
      for (const slot of [...p.slots.values()]) {
        if (slot.state === 'starting') continue;
        keys.push(slot.key);
        this.#end(slot, 'close', false);
      }
    }
    if (keys.length > 0) {
      this.#logger.error({ count: keys.length, keys: keys.slice(0, 20) }, 'shutdown budget expired: agents stopped without saving their latest state');
    }
  }

  // --- helpers -------------------------------------------------------------------------------

  #partitionOf(key: string): Partition {
    const ps = this.#partitions;
    return ps.length === 1 ? (ps[0] as Partition) : (ps[hashKey(key) % ps.length] as Partition);
  }

  #ckey(key: string): CheckpointKey {
    return { manager: this.name, key };
  }

  #emit(...args: EmitArgs<AgentEvents, 'agent', 'manager' | 'at'>): void {
    const [event, build] = args;
    publishUnchecked(this, `agent:${event}`, () => ({ manager: this.name, ...build() }));
  }
}

function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new InvalidConfigError('key', [{ path: 'key', message: `expected a string, got ${typeof key}` }]);
}

/** The message and reply types of a manager's agents (helpers for callers' own signatures). */
export type ManagerMessage<M extends InstanceManager> = M extends InstanceManager<infer C> ? MessageOf<InstanceType<C>> : never;
/** See {@link ManagerMessage}. */
export type ManagerReply<M extends InstanceManager> = M extends InstanceManager<infer C> ? ReplyOf<InstanceType<C>> : never;
