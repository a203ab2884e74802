/**
 * The main-thread side of a worker child: {@link WorkerHost} spawns one `node:worker_threads`
 * Worker, waits for it to report ready, watches it with heartbeats, classifies its death, and gives
 * typed, deadline-bounded calls into it over comlink. {@link workerChild} wraps it as a child spec.
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MessageChannel,
  Worker,
  type MessagePort,
  type ResourceLimits,
  type SHARE_ENV,
  type TransferListItem,
} from 'node:worker_threads';
import type { Readable } from 'node:stream';
import * as Comlink from 'comlink';
import type { Logger } from 'pino';
import { InvalidConfigError, NotFoundError, StartFailureError, TimeoutError, WorkerExitedError } from '../errors.js';
import type { ChildExit, ChildSpec, ExitClass, RestartType, RunningChild, Shutdown, StartContext } from '../supervisor/types.js';
import { defaultLogger, publish } from '../telemetry.js';
import type { EmitterEvent, EmitterListener, WorkerEvents } from '../events.js';
import { PROTOCOL_VERSION, nodeEndpoint, type PongMessage, type SupervisedWorkerData } from '../wire/host.js';
import {
  flattenIssues,
  parseConfig,
  shutdownSchema,
  workerHeartbeatMessageSchema,
  workerHostOptionsSchema,
} from './schemas.js';
import { MAX_TIMER_MS } from '../wire/timers.js';

/** Default heartbeat interval. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 1000;
/** Default number of consecutive unanswered pings before a worker is declared hung. */
export const DEFAULT_HEARTBEAT_MAX_MISSED = 3;
/** Default time a worker has to call `serve()`. */
export const DEFAULT_READY_TIMEOUT_MS = 10_000;
/** Default deadline of {@link WorkerHost.call}. */
export const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** Default shutdown budget of a worker child. */
export const DEFAULT_WORKER_SHUTDOWN: Shutdown = 5000;
/**
 * Safety net around death detection: how long the host waits for the Worker's `exit` after a port
 * closed (then it terminates the thread: a worker without its ports is of no use), and for the
 * ports to close after `exit` (then it closes them itself). Neither normally happens.
 */
const EXIT_GRACE_MS = 2000;

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

export type { HeartbeatEvent, HeartbeatMissedEvent, WorkerExitEvent } from '../events.js';

type AnyMethod = (...args: never[]) => unknown;

/** The keys of `API` whose values are functions: the methods {@link WorkerHost.call} accepts. */
export type MethodName<API> = {
  [K in keyof API]-?: API[K] extends AnyMethod ? K : never;
}[keyof API] &
  string;

/** Parameters of method `K` of `API`. */
export type CallArgs<API, K extends keyof API> = API[K] extends (...args: infer A) => unknown ? A : never;

/** Settled result of method `K` of `API` once it has crossed the thread boundary. */
export type CallResult<API, K extends keyof API> = API[K] extends (...args: never[]) => infer R ? Awaited<R> : never;

/** The comlink-side view of what `serve()` exposes; calls are made by name, so it is kept loose. */
interface RemoteRoot {
  api: Comlink.ProxyMarked & Record<string, (...args: unknown[]) => Promise<unknown>>;
  control: Comlink.ProxyMarked & { stop(): Promise<void> };
}

interface PendingCall {
  readonly method: string;
  readonly reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/** The options after validation (zod types the transfer list loosely). */
type ParsedOptions = Omit<WorkerHostOptions, 'transferList'> & { transferList?: readonly unknown[] };

type ForcedReason = 'shutdown_timeout' | 'brutal_kill';

/** An exit record before the `exit` event told the code: the class may not be known yet. */
type ProvisionalExit = { class: ExitClass | 'unknown'; reason: string; code?: number };

let sharedDefaultLogger: Logger | undefined;
function fallbackLogger(): Logger {
  sharedDefaultLogger ??= defaultLogger();
  return sharedDefaultLogger;
}

function defaultChildId(filename: string | URL): string {
  const path = typeof filename === 'string' ? filename : filename.protocol === 'file:' ? fileURLToPath(filename) : filename.href;
  return basename(path).replace(/\.[cm]?js$/, '') || 'worker';
}

/**
 * Whether a call's rejection is comlink failing to apply a method the worker's API does not have
 * (`api[method]` is undefined or not a function): a `TypeError` about `apply` thrown by comlink's
 * own frame, not by the method (a method's own `TypeError` has its own frame on top).
 */
function isMissingMethod(err: unknown): boolean {
  if (!(err instanceof Error) || err.name !== 'TypeError' || !/\bapply\b/.test(err.message)) return false;
  const top = err.stack?.split('\n').find((line) => line.trimStart().startsWith('at '));
  return top !== undefined && /[\\/]comlink[\\/]/.test(top);
}

function errorCode(err: Error | undefined): unknown {
  return err === undefined ? undefined : (err as Error & { code?: unknown }).code;
}

/**
 * A copy of a worker's error with its name, message, stack and code passed through `redact`: the
 * error a worker dies of may quote a secret, and its exit record is published and logged. Other
 * properties are not copied.
 */
function scrubbedError(err: Error, redact: (text: string) => string): Error {
  const copy = new Error(redact(String(err.message)));
  copy.name = redact(String(err.name));
  copy.stack = typeof err.stack === 'string' ? redact(err.stack) : `${copy.name}: ${copy.message}`;
  const code = errorCode(err);
  if (typeof code === 'string') (copy as Error & { code?: unknown }).code = redact(code);
  else if (typeof code === 'number') (copy as Error & { code?: unknown }).code = code;
  return copy;
}

/** Typed `on` / `once` / `off` (declaration merging: types only, the class stays a plain `EventEmitter`). */
// eslint-disable-next-line @typescript-eslint/no-unused-vars -- merging needs the class's own type parameters
export interface WorkerHost<API extends object = Record<string, AnyMethod>> {
  on<K extends keyof WorkerEvents>(event: K, fn: (payload: WorkerEvents[K]) => void): this;
  on(event: EmitterEvent, fn: EmitterListener): this;
  once<K extends keyof WorkerEvents>(event: K, fn: (payload: WorkerEvents[K]) => void): this;
  once(event: EmitterEvent, fn: EmitterListener): this;
  off<K extends keyof WorkerEvents>(event: K, fn: (payload: WorkerEvents[K]) => void): this;
  off(event: EmitterEvent, fn: EmitterListener): this;
}

/**
 * A running worker thread, supervised. Create one with {@link WorkerHost.start}; it resolves once
 * the worker's `serve()` reported ready. Implements {@link RunningChild}.
 *
 * Events (each also published on `node:diagnostics_channel` as `threadvisor:worker:<event>`):
 * - `heartbeat` ({@link HeartbeatEvent}): every pong;
 * - `heartbeat_missed` ({@link HeartbeatMissedEvent}): a tick found the previous ping unanswered;
 * - `exit` ({@link WorkerExitEvent}): the worker ended (same record as {@link WorkerHost.exited}).
 *
 * @typeParam API - the object the worker passes to `serve()`; drives the types of {@link WorkerHost.call}.
 */
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- the interface above only types on/once/off
export class WorkerHost<API extends object = Record<string, AnyMethod>> extends EventEmitter implements RunningChild {
  /**
   * Resolves exactly once with the exit record when the worker has ended: its thread has exited,
   * both ports have closed and every in-flight call has been rejected. Never rejects.
   */
  readonly exited: Promise<ChildExit>;
  /** The child id (from the start context, else `name`, else the script's base name). */
  readonly childId: string;
  /** The worker's thread id. */
  readonly threadId: number;

  readonly #worker: Worker;
  readonly #controlPort: MessagePort;
  readonly #heartbeatPort: MessagePort;
  /** Held for the worker's whole life: a collected root proxy would release the endpoint. */
  readonly #remote: Comlink.Remote<RemoteRoot>;
  /**
   * comlink builds a new proxy on every property access, and each one waits in comlink's
   * FinalizationRegistry (holding the endpoint) until a cleanup task gets to it: the proxies a
   * host needs (`api`, its methods by name, `control.stop`) are made once and released with the
   * host (see {@link WorkerHost.#release}).
   */
  #api: RemoteRoot['api'] | undefined;
  readonly #methods = new Map<string, (...args: unknown[]) => Promise<unknown>>();
  #stop: (() => Promise<void>) | undefined;
  readonly #log: Logger;
  readonly #callTimeoutMs: number;
  readonly #intervalMs: number;
  readonly #maxMissed: number;

  #state: WorkerState = 'starting';
  #dying = false;
  /** Scrubs secrets out of error messages before they are logged or become exit reasons. */
  #redact: (text: string) => string = (text) => text;
  #exit: ChildExit | undefined;
  #resolveExited!: (exit: ChildExit) => void;
  readonly #ready: Promise<void>;
  #resolveReady!: () => void;
  #rejectReady!: (err: Error) => void;

  #error: Error | undefined;
  #hangDetected = false;
  #readyTimedOut = false;
  #startFailReason: string | undefined;
  #stopRequested = false;
  #forced: ForcedReason | undefined;
  /** Why the owner ended the worker with {@link WorkerHost.terminate}. */
  #terminated: string | undefined;
  #lostPort: 'control' | 'heartbeat' | undefined;
  #exitCode: number | undefined;
  #controlClosed = false;
  #heartbeatClosed = false;

  readonly #timers = new Set<NodeJS.Timeout>();
  #readyTimer: NodeJS.Timeout | undefined;
  #heartbeatTimer: NodeJS.Timeout | undefined;
  /** Fires when no pong has arrived for `maxMissed × intervalMs`; refreshed by every pong. */
  #watchdog: NodeJS.Timeout | undefined;
  /** When the watchdog is due (performance.now()), and its current duration. */
  #watchdogDue = 0;
  #watchdogMs = 0;
  /** A stalled main thread already gave the worker one more interval (reset by a pong). */
  #graced = false;
  /** Set between the watchdog firing and its verdict (see {@link WorkerHost.#onWatchdog}). */
  #verdict: NodeJS.Immediate | undefined;
  readonly #pending = new Set<PendingCall>();

  #seq = 0;
  #answeredSeq = 0;
  #lastPingAt = 0;
  #missed = 0;
  #lastPongAt: number | null = null;
  #elu: number | null = null;
  #heapUsed: number | null = null;

  #pings = 0;
  #pongs = 0;
  #stalls = 0;
  #missedTotal = 0;
  #malformed = 0;
  #calls = 0;
  #callTimeouts = 0;
  #rejectedOnExit = 0;

  /**
   * Spawns a worker and resolves once it reported ready.
   *
   * @param options - validated with zod; bad fields throw {@link InvalidConfigError} listing every path.
   * @param ctx - the supervisor's start context: gives the child id and the logger.
   * @throws {@link InvalidConfigError} on bad options (synchronously thrown into the returned promise).
   * @throws {@link StartFailureError} when the worker died before ready or missed `readyTimeoutMs`;
   *   `details.exitClass` tells how it ended (`crash`, `exit`, `oom`, `normal`; `hang` for a ready
   *   timeout), `details.code` its exit code, `cause` the error behind it. When `new Worker` itself
   *   throws, `details.exitClass` is `start_failure` and `details.errorCode` the Node error code.
   */
  static async start<API extends object = Record<string, AnyMethod>>(
    options: WorkerHostOptions,
    ctx?: Partial<StartContext>,
  ): Promise<WorkerHost<API>> {
    const parsed = parseConfig('worker options', workerHostOptionsSchema, options) as ParsedOptions;
    const host = new WorkerHost<API>(parsed, ctx);
    await host.#ready;
    return host;
  }

  private constructor(opts: ParsedOptions, ctx: Partial<StartContext> | undefined) {
    super();
    this.childId = ctx?.childId ?? opts.name ?? defaultChildId(opts.filename);
    const heartbeat = opts.heartbeat === false ? { intervalMs: 0 } : (opts.heartbeat ?? {});
    this.#intervalMs = heartbeat.intervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    this.#maxMissed = heartbeat.maxMissed ?? DEFAULT_HEARTBEAT_MAX_MISSED;
    this.#callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.exited = new Promise<ChildExit>((resolve) => {
      this.#resolveExited = resolve;
    });
    this.#ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });

    const control = new MessageChannel();
    const heartbeatChannel = new MessageChannel();
    const bootstrap: SupervisedWorkerData = {
      threadvisor: { version: PROTOCOL_VERSION, control: control.port2, heartbeat: heartbeatChannel.port2 },
      data: opts.workerData,
    };
    let worker: Worker;
    try {
      worker = new Worker(opts.filename, {
        workerData: bootstrap,
        transferList: [control.port2, heartbeatChannel.port2, ...((opts.transferList ?? []) as TransferListItem[])],
        resourceLimits: opts.resourceLimits,
        name: opts.name ?? this.childId,
        env: opts.env,
        execArgv: opts.execArgv,
        stdout: opts.stdout,
        stderr: opts.stderr,
      });
    } catch (err) {
      for (const port of [control.port1, control.port2, heartbeatChannel.port1, heartbeatChannel.port2]) port.close();
      const reason = (ctx?.redact ?? String)(err instanceof Error ? err.message : String(err));
      throw new StartFailureError(this.childId, reason, {
        cause: err,
        details: { exitClass: 'start_failure', errorCode: errorCode(err instanceof Error ? err : undefined) },
      });
    }
    this.#worker = worker;
    this.threadId = worker.threadId;
    this.#controlPort = control.port1;
    this.#heartbeatPort = heartbeatChannel.port1;

    this.#redact = ctx?.redact ?? ((text: string) => text);
    const base = opts.logger ?? ctx?.logger;
    this.#log = base
      ? base.child(opts.logger || !ctx?.childId ? { childId: this.childId, threadId: this.threadId } : { threadId: this.threadId })
      : fallbackLogger().child({ childId: this.childId, threadId: this.threadId });

    const redact = ctx?.redact;
    worker.on('error', (err: Error) => {
      // Kept scrubbed: it becomes `exit.error`, which the `exit` event publishes.
      this.#error ??= redact ? scrubbedError(err, redact) : err;
      this.#log.debug({ reason: this.#redact(err.message), errorName: err.name }, 'worker error');
    });
    worker.on('exit', (code: number) => this.#onExit(code));
    this.#controlPort.on('close', () => this.#onControlClose());
    this.#heartbeatPort.on('close', () => this.#onHeartbeatClose());
    this.#heartbeatPort.on('message', (message: unknown) => this.#onHeartbeatMessage(message));
    this.#heartbeatPort.on('messageerror', (err: Error) => this.#onMalformed('heartbeat', err.message));
    this.#controlPort.on('messageerror', (err: Error) => this.#onMalformed('control', err.message));
    this.#remote = Comlink.wrap<RemoteRoot>(nodeEndpoint(this.#controlPort));

    this.#readyTimer = this.#armTimer(() => {
      this.#readyTimer = undefined;
      this.#readyTimedOut = true;
      this.#log.warn({ readyTimeoutMs: opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS }, 'worker not ready in time');
      this.#kill();
    }, opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
    this.#log.debug({ filename: String(opts.filename) }, 'worker spawned');
  }

  /** Lifecycle state: `starting`, `up`, `stopping` or `down`. */
  get state(): WorkerState {
    return this.#state;
  }

  /** The worker's stdout stream (only meaningful with the `stdout: true` option). */
  get stdout(): Readable {
    return this.#worker.stdout;
  }

  /** The worker's stderr stream (only meaningful with the `stderr: true` option). */
  get stderr(): Readable {
    return this.#worker.stderr;
  }

  /** A liveness snapshot: state, last pong and its age, missed beats, ELU and heap. */
  health(): WorkerHealth {
    return {
      state: this.#state,
      threadId: this.threadId,
      lastPongAt: this.#lastPongAt,
      lastPongAgeMs: this.#lastPongAt === null ? null : Date.now() - this.#lastPongAt,
      missedBeats: this.#missed,
      elu: this.#elu,
      heapUsed: this.#heapUsed,
    };
  }

  /** Counters since the start. */
  stats(): WorkerHostStats {
    return {
      pings: this.#pings,
      pongs: this.#pongs,
      missedBeats: this.#missedTotal,
      supervisorStalls: this.#stalls,
      malformedMessages: this.#malformed,
      calls: this.#calls,
      callTimeouts: this.#callTimeouts,
      callsRejectedOnExit: this.#rejectedOnExit,
      pendingCalls: this.#pending.size,
      timers: this.#timers.size + (this.#heartbeatTimer ? 1 : 0) + (this.#watchdog ? 1 : 0) + (this.#verdict ? 1 : 0),
    };
  }

  /**
   * Calls `method` of the worker's API with the default deadline (`callTimeoutMs`).
   *
   * @throws {@link TimeoutError} after the deadline.
   * @throws {@link WorkerExitedError} at once when the worker dies (or has died).
   * @throws {@link NotFoundError} (`not_found`, `details.what: 'worker method'`) when the worker's
   *   API has no method `method`.
   * Errors thrown by the method itself are passed through as comlink rebuilds them.
   */
  call<K extends MethodName<API>>(method: K, ...args: CallArgs<API, K>): Promise<CallResult<API, K>> {
    return this.callWithTimeout(this.#callTimeoutMs, method, ...args);
  }

  /**
   * Like {@link WorkerHost.call} with an explicit deadline in milliseconds (`Infinity`: none; the
   * call still rejects when the worker dies).
   *
   * @throws {@link InvalidConfigError} when `timeoutMs` is not a positive number.
   */
  callWithTimeout<K extends MethodName<API>>(
    timeoutMs: number,
    method: K,
    ...args: CallArgs<API, K>
  ): Promise<CallResult<API, K>> {
    if (typeof timeoutMs !== 'number' || !(timeoutMs > 0)) {
      return Promise.reject(new InvalidConfigError('call', [{ path: 'timeoutMs', message: 'expected a positive number' }]));
    }
    if (typeof method !== 'string' || method.length === 0) {
      return Promise.reject(new InvalidConfigError('call', [{ path: 'method', message: 'expected a method name' }]));
    }
    const what = `call ${method}`;
    if (this.#dying) return Promise.reject(new WorkerExitedError(what, this.#provisionalExit()));
    this.#calls++;
    return new Promise<CallResult<API, K>>((resolve, reject) => {
      const pending: PendingCall = { method, reject, timer: undefined };
      this.#pending.add(pending);
      if (Number.isFinite(timeoutMs) && timeoutMs <= MAX_TIMER_MS) {
        pending.timer = this.#armTimer(() => {
          pending.timer = undefined;
          if (!this.#pending.delete(pending)) return;
          this.#callTimeouts++;
          reject(new TimeoutError(what, timeoutMs));
        }, timeoutMs);
      }
      const settle = (): boolean => {
        if (!this.#pending.delete(pending)) return false;
        this.#disarmTimer(pending.timer);
        return true;
      };
      let result: Promise<unknown>;
      try {
        result = this.#method(method)(...(args as unknown[]));
      } catch (err) {
        result = Promise.reject(err);
      }
      result.then(
        (value) => {
          if (settle()) resolve(value as CallResult<API, K>);
        },
        (err: unknown) => {
          if (!settle()) return;
          if (isMissingMethod(err)) reject(new NotFoundError('worker method', method));
          else reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
    });
  }

  #method(name: string): (...args: unknown[]) => Promise<unknown> {
    let fn = this.#methods.get(name);
    if (!fn) {
      this.#api ??= this.#remote.api as unknown as RemoteRoot['api'];
      fn = this.#api[name] as (...args: unknown[]) => Promise<unknown>;
      this.#methods.set(name, fn);
    }
    return fn;
  }

  /**
   * Stops the worker. `'brutal_kill'` terminates it now; a number asks `serve()` to run its `onStop`
   * hook and exit, and terminates it after that many milliseconds; `'infinity'` asks and waits.
   * The exit class is `shutdown`, with reason `shutdown`, `shutdown_timeout` (forced after the
   * budget) or `brutal_kill`. Idempotent: later calls return the same exit (a later `'brutal_kill'`
   * still forces a graceful stop in progress). Resolves at once when the worker had already ended.
   *
   * @throws {@link InvalidConfigError} on an invalid budget.
   */
  shutdown(budget: Shutdown): Promise<ChildExit> {
    let parsed: Shutdown;
    try {
      parsed = parseConfig('shutdown budget', shutdownSchema, budget);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (this.#exit) return Promise.resolve(this.#exit);
    if (this.#dying) return this.exited;
    if (!this.#stopRequested) {
      this.#stopRequested = true;
      this.#state = 'stopping';
      this.#stopHeartbeat();
      this.#log.debug({ budget: parsed }, 'stopping worker');
      if (parsed === 'brutal_kill') {
        this.#force('brutal_kill');
      } else {
        this.#stop ??= this.#remote.control.stop as unknown as () => Promise<void>;
        this.#stop()
          .catch((err: unknown) => this.#log.warn({ reason: this.#redact(err instanceof Error ? err.message : String(err)) }, 'worker onStop hook failed'));
        if (parsed !== 'infinity') this.#armTimer(() => this.#force('shutdown_timeout'), parsed);
      }
    } else if (parsed === 'brutal_kill') {
      this.#force('brutal_kill');
    }
    return this.exited;
  }

  /**
   * Ends the worker at once, without a graceful stop, because its owner decided so: not a fault
   * of the thread, but an outcome of what it runs (an instance whose reconnect attempts are
   * exhausted must start over in a fresh worker). The exit is `{ class: 'exit', reason }`, an
   * abnormal exit: a supervisor restarts a `permanent` or `transient` child. Does nothing once
   * the worker is stopping or gone. Resolves with the exit.
   */
  terminate(reason: string): Promise<ChildExit> {
    if (this.#exit) return Promise.resolve(this.#exit);
    if (this.#dying || this.#stopRequested || this.#terminated !== undefined) return this.exited;
    this.#terminated = this.#redact(reason) || 'terminated';
    this.#stopHeartbeat();
    this.#log.debug({ reason: this.#terminated }, 'terminating worker');
    this.#kill();
    return this.exited;
  }

  // ---- heartbeats -------------------------------------------------------------------------------

  #onHeartbeatMessage(message: unknown): void {
    const parsed = workerHeartbeatMessageSchema.safeParse(message);
    if (!parsed.success) {
      const issues = flattenIssues(parsed.error.issues);
      this.#onMalformed('heartbeat', issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; '));
      return;
    }
    const msg = parsed.data;
    if (msg.type === 'ready') {
      if (this.#state !== 'starting') {
        this.#onMalformed('heartbeat', 'unexpected ready');
        return;
      }
      // Too late: the start already failed and the thread is being terminated.
      if (this.#readyTimedOut || this.#startFailReason !== undefined) return;
      if (msg.version !== PROTOCOL_VERSION) {
        this.#startFailReason = `protocol version ${msg.version} (host speaks ${PROTOCOL_VERSION})`;
        this.#log.warn({ version: msg.version }, 'worker speaks another protocol version');
        this.#kill();
        return;
      }
      if (this.#dying) {
        // The worker's exit overtook its ready message (a port's messages may arrive after the
        // Worker's exit event): it was up, so its end is classified by what happened (crash,
        // exit, normal), not as a start failure. No heartbeats for a thread that is gone.
        this.#state = 'up';
        this.#disarmTimer(this.#readyTimer);
        this.#readyTimer = undefined;
        this.#resolveReady();
        return;
      }
      this.#onReady();
      return;
    }
    this.#onPong(msg);
  }

  #onReady(): void {
    this.#state = 'up';
    this.#disarmTimer(this.#readyTimer);
    this.#readyTimer = undefined;
    if (this.#intervalMs > 0) {
      this.#heartbeatTimer = setInterval(() => this.#tick(), this.#intervalMs);
      this.#heartbeatTimer.unref();
      // Hang = no sign of life for maxMissed intervals, measured from the last pong (not from
      // the next tick), so detection takes at most maxMissed × intervalMs after the loop blocks.
      this.#armWatchdog();
    }
    this.#log.debug('worker ready');
    this.#resolveReady();
  }

  #tick(): void {
    if (this.#state !== 'up' || this.#dying) return;
    if (this.#seq > this.#answeredSeq) {
      if (this.#missed < this.#maxMissed) this.#countMissed();
      return;
    }
    this.#ping();
  }

  #ping(): void {
    this.#seq++;
    this.#pings++;
    this.#lastPingAt = performance.now();
    this.#heartbeatPort.postMessage({ type: 'ping', seq: this.#seq });
  }

  /** One more beat missed: counted, and published as `heartbeat_missed`. */
  #countMissed(): void {
    this.#missed++;
    this.#missedTotal++;
    const seq = this.#seq;
    const missed = this.#missed;
    publish(this, 'worker:heartbeat_missed', () => ({
      childId: this.childId,
      threadId: this.threadId,
      seq,
      missed,
      maxMissed: this.#maxMissed,
    }), 'heartbeat_missed');
  }

  /** (Re)arms the watchdog: `ms` from now, by default the full `maxMissed × intervalMs`. */
  #armWatchdog(ms = this.#maxMissed * this.#intervalMs): void {
    this.#watchdogDue = performance.now() + ms;
    if (this.#watchdog !== undefined && ms === this.#watchdogMs) {
      this.#watchdog.refresh();
      return;
    }
    if (this.#watchdog !== undefined) clearTimeout(this.#watchdog);
    this.#watchdogMs = ms;
    this.#watchdog = setTimeout(() => this.#onWatchdog(), ms);
    this.#watchdog.unref();
  }

  #onWatchdog(): void {
    this.#watchdog = undefined;
    if (this.#state !== 'up' || this.#dying) return;
    if (!this.#graced && performance.now() - this.#watchdogDue > this.#intervalMs) {
      // This thread ran more than an interval late (a long synchronous task, a GC pause): it
      // could neither ping nor read pongs meanwhile, so the silence proves nothing. Ping now and
      // give the worker one more interval to answer.
      this.#graced = true;
      this.#stalls++;
      this.#log.debug({ lateMs: Math.round(performance.now() - this.#watchdogDue) }, 'supervising thread stalled; pinging the worker again before judging it');
      this.#ping();
      this.#armWatchdog(this.#intervalMs);
      return;
    }
    // Pongs may wait in the port (timers run before I/O in a loop turn): the verdict waits one
    // turn, after the port is read.
    const pongs = this.#pongs;
    this.#verdict = setImmediate(() => {
      this.#verdict = undefined;
      if (this.#state !== 'up' || this.#dying || this.#pongs !== pongs) return;
      this.#onHang();
    });
  }

  #onHang(): void {
    // No pong for maxMissed intervals: the ticks may lag the watchdog by part of an interval,
    // so the count is brought up to maxMissed here.
    while (this.#missed < this.#maxMissed) this.#countMissed();
    this.#hangDetected = true;
    this.#log.warn(
      { missed: this.#missed, maxMissed: this.#maxMissed, intervalMs: this.#intervalMs },
      'worker missed its heartbeats; terminating',
    );
    this.#stopHeartbeat();
    this.#kill();
  }

  #onPong(msg: PongMessage): void {
    if (msg.seq > this.#seq) {
      this.#onMalformed('heartbeat', `pong for unsent ping ${msg.seq}`);
      return;
    }
    this.#pongs++;
    this.#answeredSeq = Math.max(this.#answeredSeq, msg.seq);
    this.#missed = 0;
    this.#graced = false;
    if (this.#heartbeatTimer !== undefined) this.#armWatchdog();
    this.#lastPongAt = Date.now();
    this.#elu = msg.elu;
    this.#heapUsed = msg.heapUsed;
    const rttMs = msg.seq === this.#seq ? performance.now() - this.#lastPingAt : Number.NaN;
    publish(this, 'worker:heartbeat', () => ({
      childId: this.childId,
      threadId: this.threadId,
      seq: msg.seq,
      elu: msg.elu,
      heapUsed: msg.heapUsed,
      rttMs,
    }), 'heartbeat');
  }

  #onMalformed(channel: string, reason: string): void {
    this.#malformed++;
    this.#log.warn({ channel, reason, malformedMessages: this.#malformed }, 'malformed message from worker');
  }

  #stopHeartbeat(): void {
    if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
    if (this.#watchdog) clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
    if (this.#verdict) clearImmediate(this.#verdict);
    this.#verdict = undefined;
  }

  // ---- death ------------------------------------------------------------------------------------

  #armTimer(fn: () => void, ms: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    timer.unref();
    this.#timers.add(timer);
    return timer;
  }

  #disarmTimer(timer: NodeJS.Timeout | undefined): void {
    if (!timer) return;
    clearTimeout(timer);
    this.#timers.delete(timer);
  }

  #kill(): void {
    this.#worker.terminate().catch(() => undefined);
  }

  #force(reason: ForcedReason): void {
    if (this.#forced || this.#exit) return;
    this.#forced = reason;
    this.#log.debug({ reason }, 'forcing worker down');
    this.#kill();
  }

  /**
   * First of: either port's `close`, the Worker's `exit`. From here on new calls are refused and
   * heartbeats stop. In-flight calls are rejected when the control port closes (see
   * {@link WorkerHost.#onControlClose}).
   */
  #onDeathSignal(source: 'control' | 'heartbeat' | 'exit'): void {
    if (this.#dying) return;
    this.#dying = true;
    this.#stopHeartbeat();
    this.#disarmTimer(this.#readyTimer);
    this.#readyTimer = undefined;
    if (source !== 'exit') {
      // A port closed: the thread is ending. Should its `exit` not follow, make sure it does.
      this.#armTimer(() => {
        this.#lostPort = source;
        this.#log.warn({ port: source }, 'worker closed a port but did not exit; terminating');
        this.#kill();
      }, EXIT_GRACE_MS);
    }
  }

  /**
   * The control port closed. A port's `close` comes after every message the worker sent on it, so
   * any reply already posted has been delivered by now; the worker's `exit` event gives no such
   * guarantee (it can overtake messages on transferred ports). Every call still pending can no
   * longer be answered.
   */
  #onControlClose(): void {
    this.#onDeathSignal('control');
    this.#controlClosed = true;
    if (this.#pending.size > 0) {
      const exit = this.#provisionalExit();
      for (const pending of this.#pending) {
        this.#disarmTimer(pending.timer);
        this.#rejectedOnExit++;
        pending.reject(new WorkerExitedError(`call ${pending.method}`, exit));
      }
      this.#pending.clear();
    }
    this.#maybeFinish();
  }

  #onHeartbeatClose(): void {
    this.#onDeathSignal('heartbeat');
    this.#heartbeatClosed = true;
    this.#maybeFinish();
  }

  #onExit(code: number): void {
    this.#onDeathSignal('exit');
    this.#exitCode = code;
    if (!this.#controlClosed || !this.#heartbeatClosed) {
      // Ports of a dead thread close on their own, just after `exit` at worst; close them if not.
      this.#armTimer(() => {
        this.#controlPort.close();
        this.#heartbeatPort.close();
      }, EXIT_GRACE_MS);
    }
    this.#maybeFinish();
  }

  /** Once the thread has exited and both ports have closed: classify, settle, publish. */
  #maybeFinish(): void {
    const code = this.#exitCode;
    if (code === undefined || !this.#controlClosed || !this.#heartbeatClosed || this.#exit) return;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const wasStarting = this.#state === 'starting';
    const underlying = this.#classify(code);
    const exit: ChildExit = wasStarting
      ? {
          class: 'start_failure',
          reason: this.#startFailReason ?? (this.#readyTimedOut ? 'ready_timeout' : underlying.reason),
          code,
          ...(underlying.error ? { error: underlying.error } : {}),
        }
      : underlying;
    this.#exit = exit;
    this.#state = 'down';
    this.#release();
    this.#resolveExited(exit);

    const level = wasStarting || !(exit.class === 'normal' || exit.class === 'shutdown') ? 'warn' : 'info';
    this.#log[level]({ exitClass: exit.class, reason: exit.reason, code }, 'worker exited');
    publish(this, 'worker:exit', () => ({ childId: this.childId, threadId: this.threadId, exit }), 'exit');
    if (wasStarting) {
      this.#rejectReady(
        new StartFailureError(this.childId, exit.reason, {
          cause: exit.error,
          details: {
            exitClass: this.#readyTimedOut ? 'hang' : underlying.class,
            code,
            threadId: this.threadId,
          },
        }),
      );
    }
  }

  /**
   * Lets go of a dead worker's comlink proxies and port listeners. comlink registers every proxy
   * in a process-wide FinalizationRegistry that holds the endpoint strongly; the endpoint's port
   * listeners reach this host, and this host holds the proxies, so without this no dead host
   * (nor its Worker, ports and loggers) would ever be collected: one per restart. Both ports have
   * closed, so no listener would run again.
   */
  #release(): void {
    const proxies = [...this.#methods.values(), this.#api, this.#stop, this.#remote] as unknown as Array<{ [Comlink.releaseProxy]: () => void } | undefined>;
    this.#methods.clear();
    this.#api = undefined;
    this.#stop = undefined;
    for (const proxy of proxies) {
      try {
        // Unregisters the proxy; the release message it posts to the closed port goes nowhere.
        proxy?.[Comlink.releaseProxy]();
      } catch {
        // already released
      }
    }
    this.#controlPort.removeAllListeners();
    this.#heartbeatPort.removeAllListeners();
  }

  #classify(code: number): ChildExit {
    if (this.#stopRequested) return { class: 'shutdown', reason: this.#forced ?? 'shutdown', code };
    if (this.#terminated !== undefined) return { class: 'exit', reason: this.#terminated, code };
    if (this.#hangDetected) return { class: 'hang', reason: 'heartbeat_timeout', code };
    if (this.#lostPort) return { class: 'crash', reason: `${this.#lostPort} port closed without exit`, code };
    const err = this.#error;
    if (err) {
      const cls: ExitClass = errorCode(err) === 'ERR_WORKER_OUT_OF_MEMORY' ? 'oom' : 'crash';
      return { class: cls, reason: this.#redact(err.message), code, error: err };
    }
    if (code === 0) return { class: 'normal', reason: 'normal', code };
    return { class: 'exit', reason: `exit(${code})`, code };
  }

  /**
   * The exit as far as it is known, for {@link WorkerExitedError}: ports close a little before
   * `exit` tells the code, so the class may still be `unknown`.
   */
  #provisionalExit(): ProvisionalExit {
    const known = this.#exit ?? (this.#exitCode === undefined ? undefined : this.#classify(this.#exitCode));
    if (known) return { class: known.class, reason: known.reason, code: known.code };
    if (this.#state === 'starting') return { class: 'start_failure', reason: 'worker died before ready' };
    if (this.#stopRequested) return { class: 'shutdown', reason: this.#forced ?? 'shutdown' };
    if (this.#terminated !== undefined) return { class: 'exit', reason: this.#terminated };
    if (this.#hangDetected) return { class: 'hang', reason: 'heartbeat_timeout' };
    if (this.#error) {
      return errorCode(this.#error) === 'ERR_WORKER_OUT_OF_MEMORY'
        ? { class: 'oom', reason: this.#redact(this.#error.message) }
        : { class: 'crash', reason: this.#redact(this.#error.message) };
    }
    return { class: 'unknown', reason: 'worker thread ended' };
  }
}

/** Per-child settings of {@link workerChild}. */
export interface WorkerChildOptions {
  /** Restart type (default `permanent`). */
  restart?: RestartType;
  /** Shutdown budget (default 5000 ms). */
  shutdown?: Shutdown;
}

/**
 * A child spec whose child is a {@link WorkerHost}. `options` may be a function of the start
 * context, e.g. to build fresh transferables or per-attempt `workerData` on every restart. Static
 * options are validated now, so a bad spec fails where it is written.
 *
 * @throws {@link InvalidConfigError} on a bad id, options or shutdown budget.
 */
export function workerChild<API extends object = Record<string, AnyMethod>>(
  id: string,
  options: WorkerHostOptions | ((ctx: StartContext) => WorkerHostOptions),
  childOptions: WorkerChildOptions = {},
): ChildSpec {
  const issues = [];
  if (typeof id !== 'string' || id.length === 0) issues.push({ path: 'id', message: 'expected a non-empty string' });
  if (typeof options !== 'function') {
    const result = workerHostOptionsSchema.safeParse(options);
    if (!result.success) issues.push(...flattenIssues(result.error.issues, 'options'));
  }
  const restart = childOptions.restart ?? 'permanent';
  if (!['permanent', 'transient', 'temporary'].includes(restart)) {
    issues.push({ path: 'restart', message: "expected 'permanent', 'transient' or 'temporary'" });
  }
  const shutdown = childOptions.shutdown ?? DEFAULT_WORKER_SHUTDOWN;
  const budget = shutdownSchema.safeParse(shutdown);
  if (!budget.success) issues.push(...flattenIssues(budget.error.issues, 'shutdown'));
  if (issues.length > 0) throw new InvalidConfigError(`worker child ${String(id)}`, issues);
  return {
    id,
    type: 'worker',
    restart,
    shutdown,
    start: (ctx) => WorkerHost.start<API>(typeof options === 'function' ? options(ctx) : options, ctx),
  };
}
