/**
 * The runtime's options: their zod schemas (validated at the edge: `Runtime.start`,
 * `startInstance`, `whenStatus`), their public types, and the built-in channel names.
 *
 * @packageDocumentation
 */
import { availableParallelism } from 'node:os';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SHARE_ENV, type ResourceLimits } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { z } from 'zod';
import { clusterOptionsSchema, type ClusterDeclaration, type ClusterOptions } from '../cluster/options.js';
import type { InstanceHandle } from '../instance/handle.js';
import { INSTANCE_STATUSES } from '../instance/state-machine.js';
import { backoffOptionsSchema, type BackoffOptions } from '../supervisor/backoff.js';
import { loggerSchema } from '../validate.js';
import { resourceLimitsSchema } from '../worker/schemas.js';
import { MAX_TIMER_MS } from '../wire/timers.js';

/** Where the runtime's own worker entry points live, from `src/` (tests) or `dist/src/` (package). */
export function builtinUrl(path: string): URL {
  const here = import.meta.url;
  return here.endsWith('.ts') ? new URL(`../../dist/workers/${path}`, here) : new URL(`../../workers/${path}`, here);
}

/** Built-in channels, usable by name as `channel`. */
export const BUILTIN_CHANNELS: Readonly<Record<string, URL>> = Object.freeze({ loopback: builtinUrl('channels/loopback.js') });

const positive = z.number().positive();
/** A timer budget, ms. */
const budget = positive.max(MAX_TIMER_MS);
const ms = z.number().int().min(0).max(MAX_TIMER_MS);

/**
 * The largest `queueCapacity`. A queue holds its messages on the main thread, so the bound is a
 * memory bound: ten million pending sends is already gigabytes; a larger bound is a mistake.
 */
export const MAX_QUEUE_CAPACITY = 10_000_000;

/** The largest `placement.instancesPerWorker`. */
export const MAX_INSTANCES_PER_WORKER = 1000;
/** The largest `standby.workers`. */
export const MAX_STANDBY_WORKERS = 64;
const queueCapacitySchema = z.number().int().min(1).max(MAX_QUEUE_CAPACITY);

/** piscina's own options type (the checks below use plain shapes: its inner types are not exported). */
export type PoolOptions = NonNullable<ConstructorParameters<typeof Piscina>[0]>;
const threadCount = z.number().int().min(1).max(1024);
/** piscina's options (`rt.pool`), checked here: piscina itself would throw only on first use. */
const poolSchema = z
  .strictObject({
    filename: z.string().min(1).nullable().optional(),
    name: z.string().min(1).optional(),
    minThreads: z.number().int().min(0).max(1024).optional(),
    maxThreads: threadCount.optional(),
    idleTimeout: z.number().min(0).optional(),
    maxQueue: z.union([z.number().int().min(0), z.literal(Infinity), z.literal('auto')]).optional(),
    concurrentTasksPerWorker: threadCount.optional(),
    atomics: z.enum(['sync', 'async', 'disabled']).optional(),
    resourceLimits: resourceLimitsSchema.optional(),
    argv: z.array(z.string()).optional(),
    execArgv: z.array(z.string()).optional(),
    env: z.union([z.custom<typeof SHARE_ENV>((v) => v === SHARE_ENV), z.record(z.string(), z.string())]).optional(),
    workerData: z.unknown().optional(),
    taskQueue: z.custom<object>((v) => typeof v === 'object' && v !== null, 'expected a task queue object').optional(),
    niceIncrement: z.number().int().optional(),
    trackUnmanagedFds: z.boolean().optional(),
    closeTimeout: z.number().min(0).optional(),
    recordTiming: z.boolean().optional(),
    stricterFIFO: z.boolean().optional(),
    loadBalancer: z.custom<(...args: never[]) => unknown>((v) => typeof v === 'function', 'expected a function').optional(),
    workerHistogram: z.boolean().optional(),
  })
  .refine((p) => p.minThreads === undefined || p.minThreads <= (p.maxThreads ?? availableParallelism()), {
    message: `minThreads must be <= maxThreads (default: the CPU count, ${availableParallelism()})`,
    path: ['minThreads'],
  });

export const restartSchema = z
  .object({
    maxRestarts: z.number().int().min(0).default(5),
    periodMs: positive.default(30_000),
    backoff: backoffOptionsSchema.default({ initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.2 }),
    recoverAfterMs: z.union([z.number().min(0), z.literal(Infinity)]).default(60_000),
  })
  .strict();

/** Per-instance supervision policy (see {@link RuntimeOptions.restart}). */
export interface RestartPolicy {
  /** More worker restarts than this within `periodMs` puts the instance in `error`. Default 5. */
  maxRestarts?: number;
  /** Intensity window, ms. Default 30000. */
  periodMs?: number;
  /** Delay before a worker restart. Default `{ initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.2 }`. */
  backoff?: BackoffOptions;
  /** Fresh start this long after the intensity was exceeded; `Infinity` = never. Default 60000. */
  recoverAfterMs?: number;
}

export const runtimeOptionsSchema = z
  .object({
    logger: loggerSchema.optional(),
    restart: restartSchema.default({ maxRestarts: 5, periodMs: 30_000, backoff: { initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.2 }, recoverAfterMs: 60_000 }),
    // One backoff shape (initialDelayMs, maxDelayMs, jitter); `baseMs` / `maxMs` are the old names.
    reconnect: z
      .object({
        maxAttempts: z.number().int().min(0).default(5),
        initialDelayMs: ms.optional(),
        maxDelayMs: ms.optional(),
        baseMs: ms.optional(),
        maxMs: ms.optional(),
        jitter: z.number().min(0).max(1).default(0.2),
        resetAfterMs: ms.default(5000),
      })
      .strict()
      .superRefine((r, ctx) => {
        if (r.baseMs !== undefined && r.initialDelayMs !== undefined) ctx.addIssue({ code: 'custom', path: ['baseMs'], message: 'the old name of initialDelayMs: give one of them' });
        if (r.maxMs !== undefined && r.maxDelayMs !== undefined) ctx.addIssue({ code: 'custom', path: ['maxMs'], message: 'the old name of maxDelayMs: give one of them' });
      })
      .transform(({ baseMs, maxMs, initialDelayMs, maxDelayMs, ...r }) => ({ ...r, initialDelayMs: initialDelayMs ?? baseMs ?? 250, maxDelayMs: maxDelayMs ?? maxMs ?? 5000 }))
      .refine((r) => r.maxDelayMs >= r.initialDelayMs, { message: 'maxDelayMs must be >= initialDelayMs', path: ['maxDelayMs'] })
      .default({ maxAttempts: 5, initialDelayMs: 250, maxDelayMs: 5000, jitter: 0.2, resetAfterMs: 5000 }),
    heartbeat: z
      .object({ intervalMs: ms.default(1000), maxMissed: z.number().int().min(1).default(3) })
      .strict()
      .default({ intervalMs: 1000, maxMissed: 3 }),
    probe: z
      .object({ intervalMs: ms.default(30_000), timeoutMs: budget.default(5000) })
      .strict()
      .default({ intervalMs: 30_000, timeoutMs: 5000 }),
    timeouts: z
      .object({
        connectMs: budget.default(10_000),
        disconnectMs: budget.default(5000),
        sendMs: budget.default(10_000),
        pollMs: budget.default(30_000),
      })
      .strict()
      .default({ connectMs: 10_000, disconnectMs: 5000, sendMs: 10_000, pollMs: 30_000 }),
    pollIdleMs: ms.default(50),
    maxConsecutiveFailures: z.number().int().min(1).default(10),
    queueCapacity: queueCapacitySchema.default(1000),
    dedupeCacheSize: z.number().int().min(0).default(1000),
    delivery: z
      .object({
        maxAttempts: z.number().int().min(1).default(5),
        initialDelayMs: ms.default(100),
        maxDelayMs: ms.default(5000),
        jitter: z.number().min(0).max(1).default(0.2),
      })
      .strict()
      .default({ maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.2 }),
    sendWindow: z.number().int().min(1).max(4096).default(1024),
    shutdownMs: ms.default(5000),
    readyTimeoutMs: budget.default(10_000),
    resourceLimits: resourceLimitsSchema.optional(),
    placement: z
      .object({
        instancesPerWorker: z.number().int().min(1).max(MAX_INSTANCES_PER_WORKER).default(1),
        quarantine: z
          .object({ afterCrashes: z.number().int().min(1).max(1000).default(2), periodMs: budget.default(60_000) })
          .strict()
          .default({ afterCrashes: 2, periodMs: 60_000 }),
      })
      .strict()
      .default({ instancesPerWorker: 1, quarantine: { afterCrashes: 2, periodMs: 60_000 } }),
    standby: z
      .object({ workers: z.number().int().min(0).max(MAX_STANDBY_WORKERS).default(0) })
      .strict()
      .default({ workers: 0 }),
    onMessage: z.custom<OnMessage>((v) => typeof v === 'function', 'expected a function').optional(),
    pool: poolSchema.optional(),
    cluster: clusterOptionsSchema.optional(),
  })
  .strict();

/** `'local'`: instances run in this process; `'cluster'`: declared cluster-wide (see {@link RuntimeOptions.cluster}). */
export type RuntimeMode = 'local' | 'cluster';

/** What `startInstance` resolves with: a handle of the local instance, or in cluster mode the declaration. */
export type StartedInstance<M extends RuntimeMode> = M extends 'cluster' ? ClusterDeclaration : InstanceHandle;

/** Warm standby workers (see {@link RuntimeOptions.standby}). */
export interface StandbyOptions {
  /**
   * Instance workers kept booted with no instance (default 0: none), the worker's modules and
   * every channel module seen so far already imported. A worker that starts or restarts (a
   * crash, a hang, a new instance, a quarantine split) takes one instead of spawning, when its
   * `resourceLimits` are the runtime's; a replacement boots in the background, one at a time.
   * Each costs an idle worker's memory (see README) and one heartbeat per interval.
   */
  workers?: number;
}

/** Where instances run (see {@link RuntimeOptions.placement}). */
export interface PlacementOptions {
  /**
   * How many instances one worker thread hosts. Default 1: every instance has a worker of its
   * own, and a worker's death is its instance's (its restart intensity applies). Above 1 a new
   * instance goes to the least-loaded worker with room, a worker left with no instance is ended,
   * and a worker's death restarts every instance in it once (restart kind `group`, counted in
   * each one's `restartCount` but not toward its restart intensity). Instances of different
   * channels may share a worker; each channel module is loaded once per worker.
   */
  instancesPerWorker?: number;
  /**
   * When a shared worker dies `afterCrashes` times (default 2) within `periodMs` (default 60000)
   * from causes no instance can be charged with (exit, hang, out of memory), its instances are
   * split in two halves across fresh workers, and each half is split again at its worker's next
   * death, until the culprit is alone in a worker of its own (`instance:quarantined`, health
   * `quarantined: true`), where its own restart intensity applies. A half that stays up for
   * `periodMs` takes new instances again; an instance left alone that stays up for `periodMs` is
   * released and moved back to a shared worker.
   */
  quarantine?: { afterCrashes?: number; periodMs?: number };
}

/** Receives every inbound message, in order per instance. A throw or rejection is counted and emitted as `message:failed`. */
export type OnMessage = (message: unknown, meta: { instanceId: string; channelType: string }) => void | Promise<void>;

/** Options of {@link Runtime.start}. Every field has a default; see the README's option table. */
export interface RuntimeOptions {
  /** pino logger for the runtime and, forwarded, for every worker. Default: pino at `warn`, redacted. */
  logger?: Logger;
  /** Per-instance supervision: more than `maxRestarts` worker restarts in `periodMs` → `error`. */
  restart?: RestartPolicy;
  /** The worker's reconnect loop after a recoverable connection failure. */
  reconnect?: {
    /** Reconnect attempts after a recoverable connection failure before the instance restarts in a fresh worker. Default 5. */
    maxAttempts?: number;
    /** Delay before the first reconnect attempt, ms (doubling after each). Default 250. */
    initialDelayMs?: number;
    /** Longest delay between attempts, ms. Default 5000. */
    maxDelayMs?: number;
    /** @deprecated The old name of `initialDelayMs` (accepted; not both). */
    baseMs?: number;
    /** @deprecated The old name of `maxDelayMs` (accepted; not both). */
    maxMs?: number;
    /** ± jitter ratio of each delay. Default 0.2. */
    jitter?: number;
    /**
     * A connection that stays up this long is stable: only then do reconnect attempts start over
     * from 1 (and the failures counted toward `maxConsecutiveFailures`). A connection lost sooner
     * continues the count, so a channel whose every connection breaks at once exhausts its
     * attempts instead of reconnecting forever. Default 5000 ms.
     */
    resetAfterMs?: number;
  };
  /** Heartbeats between the runtime and each worker. `intervalMs: 0` disables them. */
  heartbeat?: { intervalMs?: number; maxMissed?: number };
  /** Probe schedule (`intervalMs: 0` = never) and the budget of one probe. */
  probe?: { intervalMs?: number; timeoutMs?: number };
  /** Budgets of the channel callbacks. */
  timeouts?: { connectMs?: number; disconnectMs?: number; sendMs?: number; pollMs?: number };
  /** Pause after an empty poll batch, ms. Default 50. */
  pollIdleMs?: number;
  /** Consecutive failures (sends, probes) that move an instance to `error`. Default 10. */
  maxConsecutiveFailures?: number;
  /** Outbound queue bound per instance (default 1000); `startInstance` may set its own. */
  queueCapacity?: number;
  /** Delivered idempotency keys remembered per instance (LRU). Default 1000. */
  dedupeCacheSize?: number;
  /** Retries of a send that failed recoverably: attempts, backoff and jitter. */
  delivery?: { maxAttempts?: number; initialDelayMs?: number; maxDelayMs?: number; jitter?: number };
  /**
   * Sends in flight to one worker at a time (the credit window), handed out in batches of up to
   * 256. Default 1024: several batches in flight keep both threads busy under load; a worker
   * that dies holds at most this many, which go back to the head of the queue.
   */
  sendWindow?: number;
  /** Graceful stop budget of an instance worker, ms. Default 5000. */
  shutdownMs?: number;
  /** Budget of a worker to report ready, ms. Default 10000. */
  readyTimeoutMs?: number;
  /**
   * Default `resourceLimits` of every instance worker. A worker shared by several instances
   * (`placement.instancesPerWorker` > 1) has these limits for all of them together.
   */
  resourceLimits?: ResourceLimits;
  /** How instances are packed into worker threads. Default: one instance per worker. */
  placement?: PlacementOptions;
  /** Warm standby workers: booted ahead of need, taken by a restart or a new worker. Default: none. */
  standby?: StandbyOptions;
  /** Receives inbound messages. */
  onMessage?: OnMessage;
  /**
   * Options of the shared compute pool `rt.pool` (passed to piscina as they are; default
   * `maxThreads`: the CPU count). The pool is created on first use and destroyed by `rt.stop()`.
   */
  pool?: ConstructorParameters<typeof Piscina>[0];
  /**
   * Cluster mode: one set of instances across several processes and machines, each run by
   * exactly one node, on Redis leases with fencing tokens (ioredis, an optional peer dependency,
   * loads only then). `startInstance` declares an instance cluster-wide and resolves with a
   * {@link ClusterDeclaration}; see the README's Cluster section.
   */
  cluster?: ClusterOptions;
}

/** Options of {@link Runtime.startInstance}. */
export interface StartInstanceOptions {
  /** Instance id; generated when absent. */
  id?: string;
  /** Human-readable name. */
  name: string;
  /** Channel type; must equal the channel module's `type`. */
  channelType: string;
  /**
   * The channel module: a built-in name (`'loopback'`), a `file:` URL, an absolute path, a path
   * relative to the working directory (`./channels/x.js`), or a package specifier.
   */
  channel: string | URL;
  /** Credentials: sent only to this instance's worker; never in logs, events, status or health. */
  credentials?: Record<string, unknown>;
  /** Channel settings. */
  settings?: Record<string, unknown>;
  /** `resourceLimits` of this instance's worker (default: the runtime's). Given here, the instance gets a dedicated worker. */
  resourceLimits?: ResourceLimits;
  /**
   * `'dedicated'`: a worker of its own whatever the runtime's placement (a tenant whose
   * credentials must not share a thread's memory with others, or a suspect channel).
   * `'shared'` (default): placed as `placement` says.
   */
  isolation?: 'shared' | 'dedicated';
  /** This instance's supervision policy; fields not given come from the runtime's `restart`. */
  restart?: RestartPolicy;
  /** This instance's outbound queue bound (default: the runtime's `queueCapacity`). */
  queueCapacity?: number;
}

/** How long {@link Runtime.startInstance} waits, and what for. */
export interface StartWaitOptions {
  /**
   * `'started'` (default): resolve once the worker has loaded and validated the channel module
   * (connecting goes on in the background). `'connected'`: resolve once the channel is connected;
   * reject with `start_failure` (the instance removed) when it ends in `error` first (a fatal
   * connect, reconnects and restarts exhausted) or `timeoutMs` passes.
   */
  waitFor?: 'started' | 'connected';
  /** With `waitFor: 'connected'`: at most this long, ms. Default: no limit of its own. */
  timeoutMs?: number;
  /** Gives up the wait (the instance is removed): rejects with `aborted`. */
  signal?: AbortSignal;
}

/** Options of {@link Runtime.whenStatus}. */
export interface WhenStatusOptions {
  /** At most this long, ms: then `timeout`. Default: no limit. */
  timeoutMs?: number;
  /** Gives up the wait: rejects with `aborted`. */
  signal?: AbortSignal;
}

export const waitSchema = z
  .object({
    waitFor: z.enum(['started', 'connected']).optional(),
    timeoutMs: z.number().int().min(1).max(MAX_TIMER_MS).optional(),
    signal: z.instanceof(AbortSignal).optional(),
  })
  .strict();

export const statusesSchema = z.union([z.enum(INSTANCE_STATUSES), z.array(z.enum(INSTANCE_STATUSES)).min(1)]);

export const startInstanceSchema = z
  .object({
    id: z.string().min(1).optional(),
    name: z.string().min(1),
    channelType: z.string().min(1),
    channel: z.union([z.string().min(1), z.instanceof(URL)]),
    credentials: z.record(z.string(), z.unknown()).optional(),
    settings: z.record(z.string(), z.unknown()).optional(),
    resourceLimits: resourceLimitsSchema.optional(),
    restart: z.record(z.string(), z.unknown()).optional(),
    queueCapacity: queueCapacitySchema.optional(),
    isolation: z.enum(['shared', 'dedicated']).optional(),
  })
  .strict();

/** Validated runtime options with defaults filled in. */
export type Resolved = z.output<typeof runtimeOptionsSchema>;

/** A channel option as the worker imports it: a built-in name, a URL, a path or a package specifier. */
export function resolveChannel(channel: string | URL): string {
  if (channel instanceof URL) return channel.href;
  const builtin = BUILTIN_CHANNELS[channel];
  if (builtin) return builtin.href;
  if (channel.startsWith('file:')) return channel;
  if (isAbsolute(channel)) return pathToFileURL(channel).href;
  if (channel.startsWith('./') || channel.startsWith('../')) return pathToFileURL(resolvePath(channel)).href;
  return channel; // a package specifier, resolved by the worker
}
