import type { ClusterOptions } from '../cluster/options.js';
import type { Logger } from 'pino';
import type { BackoffOptions } from '../supervisor/backoff.js';
import type { JsonValue } from './json.js';
import type { Storage } from './storage.js';

/** What an agent's `init` learns about the activation it belongs to. */
export interface AgentInitInfo {
  /** The agent's key. */
  readonly key: string;
  /** True when `state` is a thawed checkpoint; false when it is `initialState` (or `undefined`). */
  readonly thawed: boolean;
  /** Revision of the thawed checkpoint; 0 when none. */
  readonly revision: number;
  /** How many times this activation was restarted after a crash (0 for the first start). */
  readonly restarts: number;
}

/**
 * Why a managed agent stopped: `idle` (idle timeout), `evicted` (`maxResident`), `stop`
 * (`manager.stop`), `close` (`manager.close`), `forget` (`manager.forget`), `quarantined` (its
 * restart intensity was exceeded), `restart_failed` (its checkpoint could not be re-read after a
 * crash).
 */
export type AgentStopReason = 'idle' | 'evicted' | 'stop' | 'close' | 'forget' | 'quarantined' | 'restart_failed';

/**
 * A managed agent: one instance per key, created with `new Agent(key, agentOptions)`. Its
 * methods never run concurrently: `handle` runs one message at a time, in arrival order, and
 * `snapshot` runs between messages.
 *
 * - `init(state, info)`: optional; receives the thawed snapshot, or the caller's `initialState`
 *   for a fresh key (`undefined` if none was given). May be async. A throw fails the start.
 * - `handle(message)`: returns the reply (sync or async). **A throw or rejection is a crash**:
 *   the agent is discarded and restarted from its last checkpoint.
 * - `snapshot()`: its state as plain JSON (no `Date`, `Map`, class instance, `NaN`, cycle: these
 *   are refused at save time rather than silently changed). May be async.
 * - `terminate(reason)`: optional; runs after a clean stop (its state is saved by then).
 */
export interface Agent<State = unknown, Message = never, Reply = unknown> {
  init?(state: State | undefined, info: AgentInitInfo): void | Promise<void>;
  handle(message: Message): Reply | Promise<Reply>;
  snapshot(): State | Promise<State>;
  terminate?(reason: AgentStopReason): void | Promise<void>;
}

/**
 * An agent class. Optional statics version its state: `stateVersion` (default 1) is written in
 * every checkpoint, and `migrate(state, fromVersion)` upgrades an older checkpoint on thaw. An
 * older checkpoint without `migrate`, or a newer one, fails the thaw (`thaw_failed`) instead of
 * feeding the agent a state it does not understand.
 */
export interface AgentClass<A extends AnyAgent = AnyAgent> {
  new (key: string, options?: never): A;
  readonly name: string;
  readonly stateVersion?: number;
  migrate?(state: JsonValue, fromVersion: number): unknown;
}

/** Any agent (the constraint of the generic parameters). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyAgent = Agent<any, any, any>;

/** The message type an agent's `handle` takes. */
export type MessageOf<A extends AnyAgent> = Parameters<A['handle']>[0];
/** The reply type of an agent's `handle`. */
export type ReplyOf<A extends AnyAgent> = Awaited<ReturnType<A['handle']>>;
/** The state type of an agent's `snapshot` (and of `initialState`). */
export type StateOf<A extends AnyAgent> = Awaited<ReturnType<A['snapshot']>>;

/**
 * A reference to one activation of a key: from its start (or thaw) until it stops. A crash
 * restart keeps the reference valid. Calls made after the agent hibernated for idleness or
 * eviction are not lost: they wake the key again (a fresh thaw) and run there, in order. Calls on
 * an agent stopped on purpose (`stop`, `forget`, `close`) reject with `StoppedError`.
 */
export interface AgentRef<A extends AnyAgent = AnyAgent> {
  /** The manager's name. */
  readonly manager: string;
  /** The agent's key. */
  readonly key: string;
  /** Unique (per manager) number of this activation; a thaw after hibernation gets a new one. */
  readonly incarnation: number;
  /** `running`, `hibernating` (saving on its way out) or `stopped`. */
  readonly status: 'running' | 'hibernating' | 'stopped';
  /** Crash restarts of this activation so far. */
  readonly restarts: number;
  /**
   * Runs `handle(message)` after every message queued before it; resolves with the reply.
   * Rejects with `AgentCrashedError` (`agent_crashed`) when this message, or one queued ahead of
   * it, crashed the agent; with `StoppedError` when the agent was stopped on purpose.
   * With `touchOnCall` (the default) each call restarts the idle countdown.
   */
  call(message: MessageOf<A>): Promise<ReplyOf<A>>;
  /** Restarts the idle countdown (no effect while attached or stopped). */
  touch(): void;
}

/**
 * An attachment: while any lease on an agent is held, it never idles out or gets evicted.
 * Release it with `detach()`, by leaving a `using` block, or by aborting the `signal` given to
 * `attach`. Detaching twice is harmless.
 */
export interface Lease<A extends AnyAgent = AnyAgent> extends Disposable {
  /** The attached agent. */
  readonly ref: AgentRef<A>;
  /** True once released (or once the agent stopped on purpose). */
  readonly detached: boolean;
  /** Releases the lease; the last one released starts the idle countdown. */
  detach(): void;
}

/** Per-key crash policy of {@link InstanceManagerOptions.restartIntensity}. */
export interface RestartIntensityOptions {
  /** More than this many crashes of one activation within `periodMs` quarantines the key. Default 3. */
  maxRestarts?: number;
  /** The window, ms. Default 5000. */
  periodMs?: number;
  /**
   * How long a quarantined key refuses `get`/`attach` (with `AgentCrashedError`, reason
   * `quarantined`), ms. Default 30 000. `0`: the key is stopped but may start again at once.
   * `manager.clearQuarantine(key)` lifts it early.
   */
  quarantineMs?: number;
}

/** Options of `InstanceManager.start`. */
export interface InstanceManagerOptions<C extends AgentClass = AgentClass> {
  /** Name of the manager: scopes its checkpoints in storage, and names it in events and logs. */
  name: string;
  /** The agent class; each key gets `new agent(key, agentOptions)`. */
  agent: C;
  /**
   * An unattached agent with no activity for this long is hibernated (saved, then stopped), ms.
   * Default `Infinity` (never). Activity: `get`, `attach`, a lease's release, `ref.touch()`, and
   * each `call` unless `touchOnCall` is false.
   */
  idleTimeoutMs?: number;
  /** Each `call` restarts the idle countdown. Default true. */
  touchOnCall?: boolean;
  /**
   * Where agents hibernate. Default: a `MemoryStorage` of this manager (survives hibernation,
   * not a restart of the process). `null`: no persistence; an idle agent is stopped and its
   * state dropped, and a crashed one restarts from its `initialState`.
   */
  storage?: Storage | null;
  /**
   * Registry shards (default 1, at most 1024): each key hashes (FNV-1a) to one partition with its
   * own key map, idle order and idle timer. In one JavaScript thread this adds no parallelism
   * and no throughput: a `get` pays the hash of its key (tens of ns, within the noise of
   * `bench/manager.ts`, which reads keys in random order). What it
   * buys: smaller Maps (a rehash when a Map grows copies one shard, not the whole registry, so
   * the longest pause shrinks though the total work does not), idle sweeps that each walk one
   * shard, and per-shard counts in `stats().partitions`. Leave it at 1 unless a very large
   * registry (millions of keys) shows Map-growth pauses.
   */
  partitions?: number;
  /** At most this many running agents; past it the least recently used unattached one hibernates. Default `Infinity`. */
  maxResident?: number;
  /** Second argument of the agent's constructor. */
  agentOptions?: unknown;
  /**
   * Cluster mode: one activation per key across processes and machines, on Redis (ioredis, an
   * optional peer dependency, loads only then). A node claims a key before it starts or thaws its
   * agent; `get` on a node while another runs the key gives a handle whose `call`s travel to the
   * owner through Redis (JSON messages and answers; see `remoteCallTimeoutMs`), and `attach`
   * rejects with `NotOwnerError` (`not_owner`, naming the owner); the claim goes once the agent is saved and gone (idle
   * hibernation, `stop`, `close`), and with a node that dies after `leaseMs`. Use a storage all
   * nodes share (`RedisStorage`) so an agent hibernated on one node thaws on another.
   * `credentials` is not used here.
   */
  cluster?: ClusterOptions;
  /**
   * Cluster mode: how long a `call` through a handle to an agent another node runs may take,
   * there and back, ms. Default 5000. Past it the call rejects with `TimeoutError` (`timeout`);
   * the owner may still run it (a call that arrives there after its deadline is dropped unrun).
   */
  remoteCallTimeoutMs?: number;
  /** Per-key crash policy. */
  restartIntensity?: RestartIntensityOptions;
  /**
   * Delay before retrying a failed idle/eviction hibernation (bounded backoff). Default
   * `{ initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.2 }`.
   */
  hibernateRetry?: BackoffOptions;
  /** pino logger; the manager logs through a child bound to `manager: name`. */
  logger?: Logger;
}

/** Options of `manager.get`. */
export interface GetOptions<A extends AnyAgent = AnyAgent> {
  /**
   * State given to `init` when the key has no checkpoint and is not running. Ignored when the
   * agent is running or thawed, or when another `get` of the key is already starting it.
   */
  initialState?: StateOf<A>;
}

/** Options of `manager.attach`. */
export interface AttachOptions<A extends AnyAgent = AnyAgent> extends GetOptions<A> {
  /** Aborting it releases the lease (an already aborted signal rejects with its reason). */
  signal?: AbortSignal;
}

/** Counters of `manager.stats()`. */
export interface InstanceManagerStats {
  /** The manager's name. */
  readonly name: string;
  /** How many agents are in memory (running or hibernating); the length of `keys`. */
  readonly count: number;
  /** Keys of the agents in memory. */
  readonly keys: string[];
  /** Running agents (what `maxResident` bounds). */
  readonly resident: number;
  /** Keys being started or thawed. */
  readonly starting: number;
  /** Agents saving on their way out. */
  readonly hibernating: number;
  /** Agents with at least one lease. */
  readonly attached: number;
  /** Keys in quarantine. */
  readonly quarantined: number;
  /** Agents in memory per registry partition. */
  readonly partitions: number[];
  /** `open`, `closing` or `closed`. */
  readonly state: 'open' | 'closing' | 'closed';
}
