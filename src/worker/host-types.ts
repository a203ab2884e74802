/**
 * The public types of a {@link WorkerHost}: the options it starts with, its lifecycle state, its
 * health and stats snapshots, and the typing of its calls by method name. `host.ts` re-exports
 * them.
 *
 * @packageDocumentation
 */
import type { ResourceLimits, SHARE_ENV, TransferListItem } from 'node:worker_threads';
import type { Logger } from 'pino';

/** Heartbeat settings. `intervalMs: 0` disables heartbeats. */
export interface HeartbeatOptions {
  /** Milliseconds between pings (default 1000; 0 disables). */
  intervalMs?: number;
  /** Consecutive unanswered pings after which the worker counts as hung and is terminated (default 3). */
  maxMissed?: number;
}

/** Options of {@link WorkerHost.start}. Validated at the edge; unknown keys are rejected. */
export interface WorkerHostOptions {
  /** The worker script: an absolute path, a path relative to the cwd starting with `./`, or a `file:` URL. */
  filename: string | URL;
  /** The user's own `workerData`; the worker reads it as `workerData` from `threadvisor/worker`. */
  workerData?: unknown;
  /**
   * Transferables inside `workerData`. They can be transferred only once, so a child that is
   * restarted must build fresh ones per start (pass a function to {@link workerChild}).
   */
  transferList?: readonly TransferListItem[];
  /** V8 heap limits of the worker, passed through to `new Worker`. */
  resourceLimits?: ResourceLimits;
  /** Heartbeat settings, or `false` to disable heartbeats. */
  heartbeat?: HeartbeatOptions | false;
  /** Milliseconds the worker has to call `serve()` before the start fails (default 10000). */
  readyTimeoutMs?: number;
  /** Default deadline of {@link WorkerHost.call} in milliseconds (default 5000). */
  callTimeoutMs?: number;
  /** Thread name (shown in diagnostics); also the child id when no start context gives one. */
  name?: string;
  /** Logger; a child logger bound to `childId` and `threadId` is derived from it. */
  logger?: Logger;
  /** Environment of the worker, or `SHARE_ENV` to share the main thread's. */
  env?: Record<string, string> | typeof SHARE_ENV;
  /** Node CLI options of the worker (V8 flags are refused by Node). */
  execArgv?: string[];
  /** When true, the worker's stdout is not piped to the process' stdout; read it from {@link WorkerHost.stdout}. */
  stdout?: boolean;
  /** When true, the worker's stderr is not piped to the process' stderr; read it from {@link WorkerHost.stderr}. */
  stderr?: boolean;
}

/** Lifecycle state of a {@link WorkerHost}. */
export type WorkerState = 'starting' | 'up' | 'stopping' | 'down';

/** A snapshot of a worker's liveness, from {@link WorkerHost.health}. */
export interface WorkerHealth {
  /** Lifecycle state. */
  readonly state: WorkerState;
  /** The worker's thread id. */
  readonly threadId: number;
  /** Epoch milliseconds of the last pong, or null before the first one. */
  readonly lastPongAt: number | null;
  /** Milliseconds since the last pong, or null before the first one. */
  readonly lastPongAgeMs: number | null;
  /** Consecutive unanswered heartbeat ticks right now. */
  readonly missedBeats: number;
  /** Event-loop utilisation (0..1) reported in the last pong. */
  readonly elu: number | null;
  /** V8 heap bytes in use reported in the last pong. */
  readonly heapUsed: number | null;
}

/** Counters of a {@link WorkerHost}, from {@link WorkerHost.stats}. */
export interface WorkerHostStats {
  /** Pings sent. */
  readonly pings: number;
  /** Valid pongs received. */
  readonly pongs: number;
  /** Heartbeat ticks that found the previous ping unanswered (all time). */
  readonly missedBeats: number;
  /**
   * Times the watchdog fired more than an interval late because this (supervising) thread was
   * stalled, and gave the worker one more interval instead of judging it on stale silence.
   */
  readonly supervisorStalls: number;
  /** Messages from the worker that failed their schema (logged, counted, otherwise ignored). */
  readonly malformedMessages: number;
  /** Calls issued. */
  readonly calls: number;
  /** Calls rejected by their deadline. */
  readonly callTimeouts: number;
  /** Calls rejected because the worker died while they were in flight. */
  readonly callsRejectedOnExit: number;
  /** Calls currently in flight. */
  readonly pendingCalls: number;
  /** Timers the host currently holds (0 once the worker is down). */
  readonly timers: number;
}

/** Any function: what a worker API method is at the least. */
export type AnyMethod = (...args: never[]) => unknown;

/** The keys of `API` whose values are functions: the methods {@link WorkerHost.call} accepts. */
export type MethodName<API> = {
  [K in keyof API]-?: API[K] extends AnyMethod ? K : never;
}[keyof API] &
  string;

/** Parameters of method `K` of `API`. */
export type CallArgs<API, K extends keyof API> = API[K] extends (...args: infer A) => unknown ? A : never;

/** Settled result of method `K` of `API` once it has crossed the thread boundary. */
export type CallResult<API, K extends keyof API> = API[K] extends (...args: never[]) => infer R ? Awaited<R> : never;
