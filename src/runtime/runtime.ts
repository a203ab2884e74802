import { EventEmitter } from 'node:events';
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { ResourceLimits } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { z } from 'zod';
import {
  AbortedError,
  AlreadyStartedError,
  ChannelInvalidError,
  InstanceNotFoundError,
  InvalidConfigError,
  InvalidMessageError,
  StartFailureError,
  StoppedError,
  TimeoutError,
} from '../errors.js';
import { collectSecrets, parseInstance, scrubWith } from '../instance/record.js';
import { InstanceServer, type InstanceStatusInfo } from '../instance/server.js';
import type { InstanceHandle } from '../instance/handle.js';
import type { InstanceStatus } from '../instance/state-machine.js';
import type { ChildSpec } from '../supervisor/types.js';
import { defaultLogger } from '../telemetry.js';
import { EVENTS, type EmitterEvent, type EmitterListener, type RuntimeEvents } from '../events.js';
import { parseConfig } from '../validate.js';
import type { EnqueueManyOptions, EnqueueOptions, SendOutcome } from './outbound/types.js';
import { findNonCloneable } from './cloneable.js';
import { channelSettingsSchema, checkSettings, knownSettingsSchema } from './channel-settings.js';
import type { RuntimeChild, RuntimeChildOptions } from './child.js';
import { ClusterMode } from './cluster-mode.js';
import { Notices } from './notices.js';
import { runtimeChildSpec, type RuntimeAccess } from './child-spec.js';
import {
  resolveChannel,
  restartSchema,
  runtimeOptionsSchema,
  startInstanceSchema,
  statusesSchema,
  waitSchema,
  type PoolOptions,
  type Resolved,
  type RuntimeMode,
  type RuntimeOptions,
  type StartedInstance,
  type StartInstanceOptions,
  type StartWaitOptions,
  type WhenStatusOptions,
} from './options.js';

export { BUILTIN_CHANNELS, MAX_INSTANCES_PER_WORKER, MAX_QUEUE_CAPACITY } from './options.js';
export type {
  OnMessage,
  PlacementOptions,
  StandbyOptions,
  RestartPolicy,
  RuntimeMode,
  RuntimeOptions,
  StartedInstance,
  StartInstanceOptions,
  StartWaitOptions,
  WhenStatusOptions,
} from './options.js';
import { Placement } from './placement.js';
import { InstanceLifecycle } from './lifecycle.js';
import { startStandby, type StandbyPool, type StandbyStats } from './standby.js';
import { whenStatus } from './when-status.js';
import { resolveCluster, type ClusterOptions, type ClusterView } from '../cluster/options.js';
import { DataPlane, type RuntimeCounters } from './data-plane.js';
import { DeliveryRelay } from './delivery-relay.js';
import { instanceHealth, newEntry, type Entry, type InstanceHealth, type RuntimeStats } from './entry.js';

export type { InstanceHealth, RuntimeStats } from './entry.js';

/** Options of `rt.send`: those of the queue, plus `ack` in cluster mode with durable sends. */
export interface SendOptions extends EnqueueOptions {
  /**
   * Cluster mode with `durability: 'redis'`: `'delivered'` (default) resolves with the channel's
   * receipt once the owner delivered it; `'accepted'` resolves as soon as Redis holds the send,
   * with `{ accepted: true, entryId }`. Refused elsewhere.
   */
  ack?: 'delivered' | 'accepted';
}

/** Typed `on` / `once` / `off` (declaration merging: types only, the class stays a plain `EventEmitter`). */
// eslint-disable-next-line @typescript-eslint/no-unused-vars -- merging needs the class's own type parameters
export interface Runtime<M extends RuntimeMode = 'local'> {
  on<K extends keyof RuntimeEvents>(event: K, fn: (payload: RuntimeEvents[K]) => void): this;
  on(event: EmitterEvent, fn: EmitterListener): this;
  once<K extends keyof RuntimeEvents>(event: K, fn: (payload: RuntimeEvents[K]) => void): this;
  once(event: EmitterEvent, fn: EmitterListener): this;
  off<K extends keyof RuntimeEvents>(event: K, fn: (payload: RuntimeEvents[K]) => void): this;
  off(event: EmitterEvent, fn: EmitterListener): this;
}

/**
 * The instance runtime: a registry of channel instances, each running its channel's poller and
 * sender in its own worker thread under its own supervisor. The runtime's {@link InstanceServer}s
 * are the single source of truth for status, counters and lifecycle events.
 *
 * Events (each also on diagnostics_channel `threadvisor:<event>`): `EVENTS.runtime`, with the
 * payloads of {@link RuntimeEvents} (events.ts): `instance:*`, `delivery:*`, `message:failed` when
 * `onMessage` throws, `worker:split`, and in cluster mode `cluster:*` and `durable:malformed`.
 */
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- the interface above only types on/once/off
export class Runtime<M extends RuntimeMode = 'local'> extends EventEmitter {
  readonly #opts: Resolved;
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  /** The user's logger (or the default); `#log` is its `component: runtime` child. */
  readonly #root: Logger;
  #state: 'running' | 'stopping' | 'stopped' = 'running';
  #stopping: Promise<void> | undefined;
  /** The `delivery:*` events relayed from the queues while someone listens here, and the delivery feed. */
  readonly #relay: DeliveryRelay;
  #pool: Piscina | undefined;
  /** The last instance number given out on the wire. */
  #lastIid = 0;
  readonly #counters: RuntimeCounters = { malformed: 0, delivered: 0, handlerErrors: 0 };
  /** The send pump, acks and inbound delivery of every instance. */
  readonly #data: DataPlane;
  /** Routes what the workers post on their data ports. */
  readonly #notices: Notices;
  /** Cluster mode: this node, its options and durable sends (undefined in local mode). */
  #cluster: ClusterMode | undefined;
  /** Warm standby workers (`standby.workers` > 0). */
  readonly #standby: StandbyPool | undefined;
  /** Where instances run: the worker groups. */
  readonly #placement: Placement;
  /** Decides each instance's state transitions; serialises its operations. */
  readonly #lifecycle: InstanceLifecycle;

  private constructor(opts: Resolved, root: Logger) {
    super();
    this.#opts = opts;
    this.#root = root;
    this.#log = root.child({ component: 'runtime' });
    const entries = this.#entries;
    this.#relay = new DeliveryRelay(this, function* () {
      for (const e of entries.values()) yield e.queue;
    });
    this.#data = new DataPlane({
      opts,
      emitter: this,
      deliveryForwarded: this.#relay.forwarded,
      feed: this.#relay.feed,
      counters: this.#counters,
      toError: (e, reason, recover) => this.#lifecycle.toError(e, reason, recover),
      commitCursor: (id, cursor) => this.#cluster?.node.commitCursor(id, cursor),
    });
    this.#lifecycle = new InstanceLifecycle({
      opts,
      entries: this.#entries,
      data: this.#data,
      running: () => this.#state === 'running',
      place: (e) => this.#placement.place(e),
      fence: () => this.#cluster?.node.fenceBuffer,
    });
    this.#notices = new Notices({
      data: this.#data,
      counters: this.#counters,
      running: (e) => this.#lifecycle.running(e),
      toError: (e, reason, recover) => this.#lifecycle.toError(e, reason, recover),
      restartInPlace: (e, kind, reason, exit) => this.#lifecycle.restartInPlace(e, kind, reason, exit),
      fatal: (e, reason) => this.#lifecycle.fatal(e, reason),
    });
    this.#standby = startStandby(opts, this.#log, (text) => this.#redactAll(text));
    this.#placement = new Placement({
      opts,
      log: this.#log,
      emitter: this,
      counters: this.#counters,
      standby: this.#standby,
      redactAll: (text) => this.#redactAll(text),
      lifecycle: this.#lifecycle,
      message: (e, host, port, raw) => this.#notices.onMessage(e, host, port, raw),
    });
  }

  /**
   * Validates the options and starts an empty runtime. Bad options reject with `invalid_config`.
   * In cluster mode it connects to Redis first: an unreachable one rejects with `unavailable`.
   */
  static async start(options: RuntimeOptions & { cluster: ClusterOptions }): Promise<Runtime<'cluster'>>;
  static async start(options?: RuntimeOptions): Promise<Runtime>;
  static async start(options: RuntimeOptions = {}): Promise<Runtime<RuntimeMode>> {
    const opts = parseConfig('runtime options', runtimeOptionsSchema, options);
    const root = opts.logger ?? defaultLogger();
    // Each instance's supervisor is the top of its own tree: the runtime is their root, and it
    // never restarts an escalated instance tree itself (error, then recoverAfterMs). So no root
    // Supervisor serialises one instance's start or stop behind another's.
    const rt = new Runtime<RuntimeMode>(opts, root);
    if (opts.cluster) {
      rt.#cluster = await ClusterMode.join(resolveCluster(opts.cluster), {
        opts,
        log: rt.#log,
        emitter: rt,
        entries: rt.#entries,
        running: () => rt.#state === 'running',
        refusal: (entry) => rt.#lifecycle.refusal(entry),
        startLocal: (o, w, fencingToken, cursor) => rt.#startLocal(o, w, fencingToken, cursor),
        stopEntry: (entry, reason, fast) => rt.#stopEntry(entry, reason, fast),
      });
    }
    return rt;
  }

  /**
   * Cluster mode: this node's view of the cluster (undefined in local mode). Events on the
   * runtime (and `diagnostics_channel` `threadvisor:cluster:<event>`): `cluster:acquired`,
   * `cluster:released`, `cluster:lost`, `cluster:node_up`, `cluster:node_down`, `cluster:degraded`.
   */
  get cluster(): ClusterView | undefined {
    return this.#cluster?.view();
  }

  /**
   * A child spec that runs a runtime under a `Supervisor`: its start is `Runtime.start(options)`
   * (logging through the supervisor's child logger unless `options` has its own), then
   * `rt.startInstance` for each of `child.instances`. The running child is a
   * {@link RuntimeChild}: `sup.child(id)` gives it, its `runtime` the `Runtime`.
   *
   * The supervisor's stop is `rt.stop()` (every instance stops gracefully, `instance:stopped`
   * once each); when the `shutdown` budget (default 30 000 ms) expires first, or with
   * `'brutal_kill'`, every instance's worker is terminated at once. Exit class `shutdown`. A
   * runtime stopped by anything else (`rt.stop()` called directly) exits `normal`, reason
   * `runtime stopped`, and a `transient` spec (the default) is not restarted.
   */
  static childSpec(options: RuntimeOptions = {}, child: RuntimeChildOptions = {}): ChildSpec<RuntimeChild> {
    return runtimeChildSpec(options, child, Runtime.#childAccess);
  }

  /** What {@link runtimeChildSpec} needs of the class, private state included. */
  static readonly #childAccess: RuntimeAccess = {
    start: (options) => Runtime.start(options),
    stop: Runtime.prototype.stop,
    stopping: (rt) => rt.#stopping !== undefined,
    trees: (rt) => rt.#placement.trees(),
  };

  /**
   * Starts an instance: registers its {@link InstanceServer}, spawns its worker under a per-instance
   * supervisor and resolves with the server once the worker has loaded and validated its channel
   * module (connecting continues in the background), or, with `wait.waitFor: 'connected'`, once the
   * channel is connected. To wait for a status later, see {@link Runtime.whenStatus}.
   *
   * Rejects with `invalid_config` (listing bad fields), `already_started` (the id runs), `stopped`,
   * `aborted` (the wait's signal), or `start_failure`: the channel module cannot be loaded or is
   * invalid (its `cause` is a `ChannelInvalidError` naming the problem), the worker cannot start,
   * or (waiting for `connected`) the instance ended in `error` first or the wait timed out. After
   * any rejection the instance is gone: the same id may be started again.
   */
  async startInstance(options: StartInstanceOptions, wait: StartWaitOptions = {}): Promise<StartedInstance<M>> {
    if (this.#state !== 'running') throw new StoppedError('runtime');
    const w = parseConfig('startInstance wait options', waitSchema, wait);
    const o = parseConfig('instance options', startInstanceSchema, options);
    if (this.#cluster) return (await this.#cluster.declare(o)) as StartedInstance<M>;
    return (await this.#startLocal(o, w, undefined, undefined)) as StartedInstance<M>;
  }

  /** Stops an instance and removes it (see {@link Runtime.stopInstance}); `fast`: the fencing stop of cluster mode (see `ClusterMode`). */
  async #stopEntry(entry: Entry, reason: string, fast: boolean): Promise<void> {
    if (this.#entries.get(entry.id) !== entry) return;
    this.#cluster?.durable?.drop(entry.id);
    this.#lifecycle.stopping(entry);
    this.#entries.delete(entry.id);
    if (fast) {
      entry.queue.close(`instance ${entry.id} stopped: ${reason}`);
      const group = entry.group;
      const budget = Math.max(1, Math.floor((this.#cluster?.options.safetyMs ?? this.#opts.shutdownMs) / 2));
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), budget)));
      const done = await Promise.race([this.#lifecycle.op(entry, () => this.#lifecycle.stopTree(entry)).catch(() => undefined), late]);
      clearTimeout(timer);
      if (done === 'late') await group?.supervisor?.shutdown('brutal_kill');
      await this.#data.drainInbound(entry);
      entry.server.stop(reason);
    } else {
      await this.#lifecycle.stopGracefully(entry, `instance ${entry.id} stopped: ${reason}`, reason);
    }
  }

  /** Starts an instance in this process (validated options; in cluster mode with its fencing token and committed cursor). */
  async #startLocal(o: z.output<typeof startInstanceSchema>, w: z.output<typeof waitSchema>, fencingToken: number | undefined, cursor: unknown): Promise<InstanceHandle> {
    // Credentials and settings go to the worker by structured clone: what cannot cross is a bad
    // option here (named by its path, never by its value), not a start failure later.
    const unclonable = [findNonCloneable(o.credentials, 'credentials'), findNonCloneable(o.settings, 'settings')].filter((b) => b !== undefined);
    if (unclonable.length > 0) throw new InvalidConfigError('instance options', unclonable.map((b) => ({ path: b.path, message: b.problem })));
    const restart = o.restart ? parseConfig('instance options.restart', restartSchema, { ...this.#opts.restart, ...o.restart }) : this.#opts.restart;
    // The channel's settingsSchema, read on the main thread (its module imported once per URL).
    // Known already: checked here, nothing registered. On the first start of a module: checked
    // once it is read, before any worker is spawned (the start then fails like any other).
    const channel = resolveChannel(o.channel);
    const settings = o.settings ?? {};
    const known = knownSettingsSchema(channel);
    if (known?.schema) checkSettings(known.schema, settings, 'instance options');
    const record = parseInstance({ id: o.id, name: o.name, channelType: o.channelType, credentials: o.credentials ?? {}, settings: o.settings ?? {} });
    if (this.#entries.has(record.id)) throw new AlreadyStartedError(record.id);
    const capacity = o.queueCapacity ?? this.#opts.queueCapacity;
    // The queue and the server are built before the entry that ties them together.
    const ref: { entry?: Entry } = {};
    const pump = () => {
      if (ref.entry) this.#data.pump(ref.entry);
    };
    const secrets = collectSecrets(record.credentials);
    const redact = (text: string): string => scrubWith(text, secrets);
    const queue = this.#data.newQueue(record.id, capacity, pump, redact);
    const server = new InstanceServer(record, {
      logger: this.#root, // it adds its own component (instance): one component key per line
      maxConsecutiveFailures: this.#opts.maxConsecutiveFailures,
      stableAfterMs: this.#opts.reconnect.resetAfterMs,
      queueDepth: () => ref.entry?.queue.depth ?? queue.depth,
    });
    for (const name of EVENTS.instance) server.on(name, (payload: unknown) => this.emit(name, payload));
    const entry = newEntry({
      id: record.id,
      iid: ++this.#lastIid,
      server,
      secrets,
      redact,
      credentials: Object.freeze({ ...record.credentials }),
      channel,
      resourceLimits: (o.resourceLimits ?? this.#opts.resourceLimits) as ResourceLimits | undefined,
      restart,
      log: this.#log.child({ instanceId: record.id, channelType: record.channelType }),
      dedicated: o.isolation === 'dedicated' || o.resourceLimits !== undefined || this.#opts.placement.instancesPerWorker === 1,
      capacity,
      cursor,
      fencingToken,
        settings: record.settings,
        queue,
      },
      (e) => this.#lifecycle.phase(e),
    );
    ref.entry = entry;
    this.#entries.set(record.id, entry);
    server.markStarted();
    try {
      await this.#lifecycle.op(entry, async () => {
        if (known === undefined) {
          const schema = await channelSettingsSchema(channel, this.#opts.readyTimeoutMs);
          if (schema) checkSettings(schema, settings, 'instance options');
        }
        return this.#lifecycle.startTree(entry);
      });
    } catch (err) {
      if (this.#entries.get(record.id) === entry) this.#entries.delete(record.id);
      server.stop(server.redactReason(err) ?? 'start failed');
      const invalid = entry.failure;
      throw invalid instanceof ChannelInvalidError ? new StartFailureError(record.id, invalid.message, { cause: invalid }) : err;
    } finally {
      entry.firstStart = false;
    }
    if (w.waitFor === 'connected') {
      try {
        await whenStatus(entry, this.#entries, ['connected'], w.timeoutMs, w.signal);
      } catch (err) {
        if (this.#entries.get(record.id) === entry) await this.stopInstance(record.id).catch(() => undefined);
        if (err instanceof AbortedError || err instanceof StoppedError) throw err;
        const why = err instanceof TimeoutError ? err.message : (server.lastError ?? 'it ended in error before connecting');
        throw new StartFailureError(record.id, `not connected: ${why}`, { cause: err });
      }
    }
    return entry.handle;
  }

  /**
   * Resolves with the instance's status once it is `status` (or one of `status`), at once when it
   * already is. Rejects with `not_running` when it enters `error` first (unless `error` is awaited;
   * `status().lastError` says why), `stopped` when it is stopped or removed, `timeout` after
   * `timeoutMs`, `aborted` on the signal; `not_found` for an unknown id.
   */
  whenStatus(id: string, status: InstanceStatus | readonly InstanceStatus[], opts: WhenStatusOptions = {}): Promise<InstanceStatus> {
    try {
      const wanted = parseConfig('whenStatus status', statusesSchema, status);
      const o = parseConfig('whenStatus options', waitSchema.omit({ waitFor: true }), opts);
      return whenStatus(this.#get(id), this.#entries, typeof wanted === 'string' ? [wanted] : wanted, o.timeoutMs, o.signal);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  /** The status map of an instance. Unknown id: {@link NotFoundError} (`not_found`). */
  async status(id: string): Promise<InstanceStatusInfo> {
    if (this.#state !== 'running') throw new StoppedError('runtime');
    return this.#get(id).server.status();
  }

  /** The health snapshot of an instance, worker liveness included. Unknown id: `not_found`. */
  async health(id: string): Promise<InstanceHealth> {
    if (this.#state !== 'running') throw new StoppedError('runtime');
    const entry = this.#get(id);
    return instanceHealth(entry, this.#lifecycle.phase(entry));
  }

  /** Health snapshots of every instance. */
  async listHealth(): Promise<InstanceHealth[]> {
    return [...this.#entries.values()].map((e) => instanceHealth(e, this.#lifecycle.phase(e)));
  }

  /**
   * Queues one message for the instance's channel; resolves with the channel's receipt once
   * delivered (at least once: what a dying worker did not acknowledge is delivered again by the
   * next one, in order). Options: `idempotencyKey` (default: the message's `id`; a delivered key
   * resolves with its first receipt without sending again), `waitForCapacity` (wait for room
   * instead of rejecting with `queue_full`) and `signal` (abandon the wait: `aborted`). Rejects
   * with `not_found`, `not_running` (the instance is in error with no recovery scheduled),
   * `queue_full`, `aborted`, `delivery_failed` (retries exhausted, or a fatal/degraded failure;
   * `lastError` is a `ChannelError` with the class and code), `channel_invalid` (the instance's
   * channel module is unusable) or `stopped`.
   */
  send(id: string, message: unknown, options?: SendOptions): Promise<unknown> {
    // Not async: the queue's own promise goes back as it is (an async wrapper would add a promise
    // and two microtask turns to every send).
    if (this.#state !== 'running') return Promise.reject(new StoppedError('runtime'));
    if (this.#cluster?.durable) return this.#cluster.sendDurable(id, message, options);
    if (options?.ack !== undefined) {
      if (options.ack === 'accepted') return Promise.reject(new InvalidConfigError('send options', [{ path: 'ack', message: "'accepted' needs cluster mode with durability 'redis'" }]));
      const { ack: _ack, ...rest } = options;
      options = rest;
    }
    const entry = this.#entries.get(id);
    if (entry === undefined) return this.#notHere(id);
    const refused = this.#lifecycle.refusal(entry);
    if (refused) return Promise.reject(refused);
    // Refused before it is queued: a message that cannot cross to the worker (checked cheaply:
    // a flat object of primitives costs a walk over its keys, no clone).
    if (message === undefined) return Promise.reject(new InvalidMessageError(`instance ${id}`, 'the message is undefined'));
    const bad = findNonCloneable(message);
    if (bad !== undefined) return Promise.reject(new InvalidMessageError(`instance ${id}`, bad.problem, { path: bad.path }));
    return entry.queue.enqueue(message, options);
  }

  /**
   * Queues a batch of messages for the instance's channel, in order: the same as one
   * {@link Runtime.send} per message (each takes its default idempotency key, its `id`), settled
   * together and cheaper (one promise for the batch). Resolves once every message settled, with
   * one outcome per message in the batch's order: `{ ok: true, receipt }` or `{ ok: false, error }`
   * (the error that message's own `send` would have rejected with: `queue_full` for those that
   * found no room unless `waitForCapacity`, `delivery_failed`, `aborted`, `stopped`, ...).
   * Rejects only when no message was taken: `not_found`, `not_running`, `invalid_config`.
   */
  sendMany(id: string, messages: readonly unknown[], options?: EnqueueManyOptions): Promise<SendOutcome[]> {
    if (this.#state !== 'running') return Promise.reject(new StoppedError('runtime'));
    if (this.#cluster?.durable) return this.#cluster.sendManyDurable(id, messages, options);
    const entry = this.#entries.get(id);
    if (entry === undefined) return this.#notHere(id);
    const refused = this.#lifecycle.refusal(entry);
    if (refused) return Promise.reject(refused);
    // One bad message refuses the whole batch, nothing taken (as for bad options).
    if (Array.isArray(messages)) {
      for (let i = 0; i < messages.length; i++) {
        const m: unknown = messages[i];
        if (m === undefined) return Promise.reject(new InvalidMessageError(`instance ${id}`, 'the message is undefined', { path: `$[${i}]` }));
        const bad = findNonCloneable(m, `$[${i}]`);
        if (bad !== undefined) return Promise.reject(new InvalidMessageError(`instance ${id}`, bad.problem, { path: bad.path }));
      }
    }
    return entry.queue.enqueueMany(messages, options);
  }

  /** Why a send for an instance not running here is refused: `not_found`, or in cluster mode `not_owner` (naming the owner). */
  async #notHere(id: string): Promise<never> {
    const cluster = this.#cluster;
    if (!cluster) throw new InstanceNotFoundError(id);
    return cluster.notHere(id);
  }

  /**
   * The warm standby workers (see {@link RuntimeOptions.standby}): how many wait now (and their
   * thread ids), how many were taken and booted since the start. `null` without standby.
   */
  get standby(): StandbyStats | null {
    return this.#standby?.stats() ?? null;
  }

  /**
   * The runtime's shared compute pool (piscina) for CPU-heavy stateless work that channels'
   * callers and `onMessage` handlers offload: `await rt.pool.run(data, { filename })`. One pool
   * for the whole runtime, sized from the CPU count, created on first use, destroyed by
   * `rt.stop()`. Instance workers are long-lived and never run in it.
   */
  get pool(): Piscina {
    if (this.#state !== 'running') throw new StoppedError('runtime');
    this.#pool ??= new Piscina({ maxThreads: availableParallelism(), ...this.#opts.pool } as PoolOptions);
    return this.#pool;
  }

  /** `running`, then `stopping` once `stop()` was called, then `stopped`. */
  get state(): 'running' | 'stopping' | 'stopped' {
    return this.#state;
  }

  /** As `EventEmitter`'s; with no `event`, the runtime's own `delivery:*` relay hooks are put back. */
  override removeAllListeners(event?: string | symbol): this {
    if (event === undefined) super.removeAllListeners();
    else super.removeAllListeners(event);
    this.#relay.install();
    return this;
  }

  /** The instance's {@link InstanceServer}, or undefined. */
  whereis(id: string): InstanceHandle | undefined {
    return this.#entries.get(id)?.handle;
  }

  /** Status maps of every instance, in start order. */
  listInstances(): InstanceStatusInfo[] {
    return [...this.#entries.values()].map((e) => e.server.status());
  }

  /** How many instances are registered (running, restarting or in error). */
  countInstances(): number {
    return this.#entries.size;
  }

  /** Runtime counters. */
  stats(): RuntimeStats {
    return { instances: this.#entries.size, malformedMessages: this.#counters.malformed, inboundDelivered: this.#counters.delivered, handlerErrors: this.#counters.handlerErrors };
  }

  /**
   * Gives an instance a fresh start now: a running one is stopped and started again; one in
   * `error` leaves it at once (without waiting for `recoverAfterMs`). Unknown id: `not_found`.
   */
  async restartInstance(id: string): Promise<void> {
    if (this.#state !== 'running') throw new StoppedError('runtime');
    const entry = this.#get(id);
    await this.#lifecycle.restart(entry);
  }

  /** Stops an instance (its worker disconnects within `shutdownMs`) and removes it. Emits `instance:stopped` once. */
  async stopInstance(id: string): Promise<void> {
    if (this.#state !== 'running') throw new StoppedError('runtime');
    if (this.#cluster) {
      // Cluster mode: the declaration goes, and with it the copy on whichever node runs it.
      const removed = await this.#cluster.node.undeclare(id);
      const local = this.#entries.get(id);
      if (local) await this.#stopEntry(local, 'stopped', false);
      if (!removed && !local) throw new InstanceNotFoundError(id);
      return;
    }
    const entry = this.#get(id);
    this.#lifecycle.stopping(entry);
    this.#entries.delete(id);
    await this.#lifecycle.stopGracefully(entry, `instance ${id} stopped`, 'stopped');
  }

  /**
   * Stops every instance (workers disconnect within their budgets), then the runtime. Every
   * instance emits `instance:stopped` exactly once. Leaves no worker, timer or port. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#state = 'stopping';
      // Cluster mode: nothing more is acquired; the leases are released once the copies stopped.
      await this.#cluster?.halt();
      const entries = [...this.#entries.values()];
      this.#entries.clear();
      // Everything stops: a shared worker stops once, with all its instances, not one by one.
      this.#placement.closeAll();
      // Instances are independent: they stop in parallel, each within its own budget.
      await Promise.all(
        entries.map(async (e) => {
          this.#lifecycle.stopping(e);
          await this.#lifecycle.stopGracefully(e, 'runtime stopped', 'runtime stopped', (err) => e.log.warn({ reason: e.server.redactReason(err) }, 'stop failed'));
        }),
      );
      await this.#placement.retired();
      await this.#standby?.close();
      await this.#cluster?.close();
      await this.#pool?.destroy();
      this.#pool = undefined;
      this.#state = 'stopped';
    })();
    return this.#stopping;
  }

  // --- internals -------------------------------------------------------------------------

  #get(id: string): Entry {
    const e = this.#entries.get(id);
    if (!e) throw new InstanceNotFoundError(id);
    return e;
  }

  /** Scrubs every instance's credentials out of a text about a shared worker. */
  #redactAll(text: string): string {
    let out = text;
    for (const e of this.#entries.values()) out = e.redact(out);
    return out;
  }
}
