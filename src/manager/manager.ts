/**
 * The `InstanceManager` facade: its public API, validating arguments and delegating to the
 * parts that share its {@link ManagerState} (registry, slot, mailbox, lifecycle, crashes,
 * cluster mode).
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import { NotFoundError, NotOwnerError } from '../errors.js';
import { resolveCluster } from '../cluster/options.js';
import { RemoteRef } from './remote-ref.js';
import { backoffDelay } from '../supervisor/backoff.js';
import type { ChildExit, ChildSpec, RestartType, Shutdown } from '../supervisor/types.js';
import { parseConfig } from '../validate.js';
import type { Checkpoint } from './storage.js';
import type {
  AgentClass,
  AgentRef,
  AttachOptions,
  GetOptions,
  InstanceManagerOptions,
  InstanceManagerStats,
  Lease,
  MessageOf,
  ReplyOf,
} from './types.js';
import { MAX_TIMER_MS } from '../wire/timers.js';
import type { EmitterEvent, EmitterListener, ManagerEvents } from '../events.js';
import { callRemote, joinCluster } from './cluster-mode.js';
import { acquire, doClose, endSlot, forceEndAll, release } from './lifecycle.js';
import { call, enqueue } from './mailbox.js';
import { ManagerState, ckey, noop } from './manager-state.js';
import { attachOptionsSchema, getOptionsSchema, optionsSchema, stopOptionsSchema, type ParsedOptions } from './options.js';
import { checkKey, partitionOf, touch } from './registry.js';
import { LeaseImpl, type Core, type Slot } from './slot.js';

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

  /** The state the manager's parts share (registry, mailbox, lifecycle, crashes, cluster mode). */
  readonly #m: ManagerState;
  readonly #core: Core;
  #closing: Promise<void> | undefined;

  private constructor(opts: ParsedOptions) {
    super();
    this.name = opts.name;
    this.#core = {
      name: this.name,
      call: (slot, message) => call(this.#m, slot, message),
      touch: (slot) => touch(this.#m, slot),
      release: (slot) => release(this.#m, slot),
    };
    const m = new ManagerState(this, opts, this.#core);
    this.#m = m;
    this.exited = new Promise((resolve) => (m.resolveExited = resolve));
  }

  /**
   * Validates the options and resolves with an open manager. Invalid options reject with
   * `InvalidConfigError` (`invalid_config`) listing every bad field path.
   */
  static async start<C extends AgentClass>(options: InstanceManagerOptions<C>): Promise<InstanceManager<C>> {
    const opts = parseConfig('instance manager options', optionsSchema, options);
    const manager = new InstanceManager<C>(opts);
    if (opts.cluster) await joinCluster(manager.#m, resolveCluster(opts.cluster));
    return manager;
  }

  /**
   * Cluster mode: a call through a {@link RemoteRef}: run here when this node has the key or can
   * claim it, else asked of its owner; when the owner changes meanwhile, asked again of the new
   * one, until `remoteCallTimeoutMs` (then `TimeoutError`). One at a time per key, in order.
   */
  callRemote(key: string, message: unknown): Promise<unknown> {
    return callRemote(this.#m, key, message);
  }


  /** Cluster mode: this node's id (undefined otherwise). */
  get nodeId(): string | undefined {
    return this.#m.node?.nodeId;
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
    return this.#m.agent as C;
  }

  /** `open`, `closing` or `closed`. */
  get state(): 'open' | 'closing' | 'closed' {
    return this.#m.state;
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
    const m = this.#m;
    if (m.state === 'open' && typeof key === 'string') {
      const slot = partitionOf(m, key).slots.get(key);
      if (slot !== undefined && slot.state === 'running') {
        touch(m, slot);
        return Promise.resolve(slot as AgentRef<InstanceType<C>>);
      }
    }
    return this.#getSlow(key, options);
  }

  async #getSlow(key: string, options: GetOptions | undefined): Promise<AgentRef<InstanceType<C>>> {
    checkKey(key);
    const opts = options === undefined ? {} : parseConfig('get options', getOptionsSchema, options);
    let slot: Slot;
    try {
      slot = await acquire(this.#m, key, opts.initialState, false);
    } catch (err) {
      // Cluster mode: another node runs the key: a handle whose calls go there.
      if (err instanceof NotOwnerError && err.owner !== null && this.#m.remote) return new RemoteRef(this, key) as unknown as AgentRef<InstanceType<C>>;
      throw err;
    }
    return slot as AgentRef<InstanceType<C>>;
  }

  /**
   * Gets (or thaws, or starts) the agent and attaches to it: while the lease is held it never
   * idles out or gets evicted. `lease.detach()`, leaving a `using` block, or aborting
   * `options.signal` releases it; the last release starts the idle countdown.
   */
  async attach(key: string, options?: AttachOptions<InstanceType<C>>): Promise<Lease<InstanceType<C>>> {
    checkKey(key);
    const opts = options === undefined ? {} : parseConfig('attach options', attachOptionsSchema, options);
    const signal = opts.signal;
    if (signal?.aborted) throw signal.reason;
    const slot = await acquire(this.#m, key, opts.initialState, true);
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
    const p = partitionOf(this.#m, key);
    for (;;) {
      const slot = p.slots.get(key);
      if (slot === undefined) return undefined;
      if (slot.state === 'running') return slot as AgentRef<InstanceType<C>>;
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
    const opts = parseConfig('stop options', stopOptionsSchema, options ?? {});
    const p = partitionOf(this.#m, key);
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
      await endSlot(this.#m, slot, 'stop', { save: this.#m.storage !== null, force: opts.discardUnsaved });
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
    const p = partitionOf(this.#m, key);
    for (;;) {
      const slot = p.slots.get(key);
      if (slot === undefined) throw new NotFoundError('agent', `${this.name}/${key}`);
      if (slot.state === 'running') {
        return new Promise<unknown>((resolve, reject) =>
          enqueue(this.#m, slot, { kind: 'checkpoint', reason: 'stop', save: true, force: false, resolve, reject }),
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
    const p = partitionOf(this.#m, key);
    let existed = this.clearQuarantine(key);
    for (;;) {
      const slot = p.slots.get(key);
      if (slot === undefined) break;
      if (slot.state === 'starting') await (slot.ready as Promise<void>).catch(noop);
      else if (slot.state === 'hibernating') await slot.settled;
      else {
        existed = true;
        await endSlot(this.#m, slot, 'forget', { save: false, force: true });
      }
    }
    if (this.#m.storage && (await this.#m.storage.delete(ckey(this.#m, key)))) existed = true;
    return existed;
  }

  /** Lifts the quarantine of `key` (see `restartIntensity`); returns whether it was quarantined. */
  clearQuarantine(key: string): boolean {
    checkKey(key);
    const p = partitionOf(this.#m, key);
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
    for (const p of this.#m.partitions) {
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
    return { name: this.name, count: keys.length, keys, resident: this.#m.resident, starting, hibernating, attached, quarantined, partitions, state: this.#m.state };
  }

  /**
   * Hibernates every agent in memory (after the calls queued to it), then stops it; new `get`s
   * reject with `StoppedError` from the first moment. Resolves once all are saved and stopped.
   * If some saves fail, those agents stay resident and `close` rejects with
   * `HibernateFailedError` listing their keys (`details.keys`); call `close()` again to retry,
   * or `close({ discardUnsaved: true })` to stop them anyway. Idempotent once closed.
   */
  close(options?: StopOptions): Promise<void> {
    if (this.#m.state === 'closed') return Promise.resolve();
    let opts: { discardUnsaved: boolean };
    try {
      opts = parseConfig('close options', stopOptionsSchema, options ?? {});
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#closing) return this.#closing;
    this.#m.state = 'closing';
    this.#closing = doClose(this.#m, opts.discardUnsaved).finally(() => (this.#closing = undefined));
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
    for (let attempt = 0; this.#m.state !== 'closed'; attempt++) {
      const left = deadline - Date.now();
      if (left <= 0) {
        forceEndAll(this.#m);
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
      const delay = Math.min(backoffDelay(this.#m.retry, attempt), Math.max(0, deadline - Date.now()));
      await new Promise((resolve) => setTimeout(resolve, Math.min(delay, MAX_TIMER_MS)));
    }
    return this.exited;
  }

  /** `await using manager = await InstanceManager.start(…)` closes it at the end of the block. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** The message and reply types of a manager's agents (helpers for callers' own signatures). */
export type ManagerMessage<M extends InstanceManager> = M extends InstanceManager<infer C> ? MessageOf<InstanceType<C>> : never;
/** See {@link ManagerMessage}. */
export type ManagerReply<M extends InstanceManager> = M extends InstanceManager<infer C> ? ReplyOf<InstanceType<C>> : never;
