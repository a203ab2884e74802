/**
 * The main-thread side of a worker child: {@link WorkerHost} spawns one `node:worker_threads`
 * Worker, waits for it to report ready, watches it with heartbeats, classifies its death, and gives
 * typed, deadline-bounded calls into it over comlink. {@link workerChild} wraps it as a child spec.
 *
 * This module holds the facade and the lifecycle (ready, stop, the order of events at a thread's
 * death). The spawn is in `spawn-worker.ts`, the heartbeat in `heartbeat.ts`, the control calls in
 * `control-calls.ts`, the exit classification in `exit-classification.ts`, the public types in
 * `host-types.ts`, {@link workerChild} in `worker-child.ts`.
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import type { MessagePort, Worker } from 'node:worker_threads';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { InvalidConfigError, StartFailureError, WorkerExitedError } from '../errors.js';
import type { ChildExit, RunningChild, Shutdown, StartContext } from '../supervisor/types.js';
import { publish } from '../telemetry.js';
import type { EmitterEvent, EmitterListener, WorkerEvents } from '../events.js';
import { PROTOCOL_VERSION } from '../wire/host.js';
import { ControlCalls } from './control-calls.js';
import { classifyExit, errorCode, noExitFacts, provisionalExit, scrubbedError, type ExitFacts, type ForcedReason, type ProvisionalExit } from './exit-classification.js';
import { HeartbeatMonitor } from './heartbeat.js';
import type { AnyMethod, CallArgs, CallResult, MethodName, WorkerHealth, WorkerHostOptions, WorkerHostStats, WorkerState } from './host-types.js';
import { HostTimers } from './host-timers.js';
import { describeIssues, parseConfig, shutdownSchema, workerHeartbeatMessageSchema, workerHostOptionsSchema } from './schemas.js';
import { defaultChildId, hostLogger, spawnWorker, type ParsedOptions } from './spawn-worker.js';

export { workerChild, type WorkerChildOptions } from './worker-child.js';
export type { CallArgs, CallResult, HeartbeatOptions, MethodName, WorkerHealth, WorkerHostOptions, WorkerHostStats, WorkerState } from './host-types.js';

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

export type { HeartbeatEvent, HeartbeatMissedEvent, WorkerExitEvent } from '../events.js';

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
  /**
   * Resolves exactly once, as soon as the worker's end is certain: when its thread threw an
   * uncaught exception that nothing handles (told by `serve()`'s `dying` message, else by the
   * `error` event: the thread is ending, its `exit` comes a few milliseconds later), with the exit
   * it is classified with but no `code`; otherwise together with {@link WorkerHost.exited}, with
   * the same record. A worker that is starting, stopping or
   * being terminated is not doomed by an error: its end is told by `exited`. Every message the
   * thread posted before it was doomed is already queued on its ports (`receiveMessageOnPort`
   * drains them). Never rejects.
   */
  readonly doomed: Promise<ChildExit>;
  /** The child id (from the start context, else `name`, else the script's base name). */
  readonly childId: string;
  /** The worker's thread id. */
  readonly threadId: number;

  readonly #worker: Worker;
  readonly #controlPort: MessagePort;
  readonly #heartbeatPort: MessagePort;
  /** The comlink proxies and the calls in flight (see {@link WorkerHost.#release}). */
  readonly #control: ControlCalls;
  readonly #heartbeat: HeartbeatMonitor;
  readonly #log: Logger;
  readonly #callTimeoutMs: number;

  #state: WorkerState = 'starting';
  #dying = false;
  /** The thread threw an uncaught exception while up: it is ending (see {@link WorkerHost.doomed}). */
  #doomed = false;
  /** The exit {@link WorkerHost.doomed} resolved with before the thread was gone. */
  #doomedExit: ChildExit | undefined;
  #resolveDoomed!: (exit: ChildExit) => void;
  /** Scrubs secrets out of error messages before they are logged or become exit reasons. */
  #redact: (text: string) => string = (text) => text;
  #exit: ChildExit | undefined;
  #resolveExited!: (exit: ChildExit) => void;
  readonly #ready: Promise<void>;
  #resolveReady!: () => void;
  #rejectReady!: (err: Error) => void;

  /** What is known of how the worker ended: read by the exit classification. */
  readonly #facts: ExitFacts = noExitFacts();
  #readyTimedOut = false;
  #startFailReason: string | undefined;
  #exitCode: number | undefined;
  #controlClosed = false;
  #heartbeatClosed = false;

  readonly #timers = new HostTimers();
  #readyTimer: NodeJS.Timeout | undefined;

  #malformed = 0;

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
    const intervalMs = heartbeat.intervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    const maxMissed = heartbeat.maxMissed ?? DEFAULT_HEARTBEAT_MAX_MISSED;
    this.#callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.exited = new Promise<ChildExit>((resolve) => {
      this.#resolveExited = resolve;
    });
    this.doomed = new Promise<ChildExit>((resolve) => {
      this.#resolveDoomed = resolve;
    });
    this.#ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });

    const { worker, controlPort, heartbeatPort } = spawnWorker(opts, this.childId, ctx);
    this.#worker = worker;
    this.threadId = worker.threadId;
    this.#controlPort = controlPort;
    this.#heartbeatPort = heartbeatPort;

    this.#redact = ctx?.redact ?? ((text: string) => text);
    this.#log = hostLogger(opts, ctx, this.childId, this.threadId);
    this.#heartbeat = new HeartbeatMonitor({
      emitter: this,
      childId: this.childId,
      threadId: this.threadId,
      port: this.#heartbeatPort,
      log: this.#log,
      intervalMs,
      maxMissed,
      isWatched: () => this.#state === 'up' && !this.#dying && !this.#doomed,
      onHang: () => this.#onHang(),
      onMalformed: (reason) => this.#onMalformed('heartbeat', reason),
    });

    const redact = ctx?.redact;
    worker.on('error', (err: Error) => {
      // Kept scrubbed: it becomes `exit.error`, which the `exit` event publishes.
      this.#facts.error ??= redact ? scrubbedError(err, redact) : err;
      this.#log.debug({ reason: this.#redact(err.message), errorName: err.name }, 'worker error');
      if (this.#facts.error) this.#doom(this.#facts.error);
    });
    worker.on('exit', (code: number) => this.#onExit(code));
    this.#controlPort.on('close', () => this.#onControlClose());
    this.#heartbeatPort.on('close', () => this.#onHeartbeatClose());
    this.#heartbeatPort.on('message', (message: unknown) => this.#onHeartbeatMessage(message));
    this.#heartbeatPort.on('messageerror', (err: Error) => this.#onMalformed('heartbeat', err.message));
    this.#controlPort.on('messageerror', (err: Error) => this.#onMalformed('control', err.message));
    this.#control = new ControlCalls(this.#controlPort, this.#timers);

    this.#readyTimer = this.#timers.arm(() => {
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

  /**
   * Whether the worker is doomed (see {@link WorkerHost.doomed}): its thread threw an uncaught
   * exception and is ending, though `state` may still read `up` until it is gone.
   */
  get isDoomed(): boolean {
    return this.#doomed;
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
    return { state: this.#state, threadId: this.threadId, ...this.#heartbeat.health() };
  }

  /** Counters since the start. */
  stats(): WorkerHostStats {
    return {
      ...this.#heartbeat.counters(),
      malformedMessages: this.#malformed,
      ...this.#control.counters(),
      timers: this.#timers.size + this.#heartbeat.timerCount,
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
    if (this.#dying || this.#doomed) return Promise.reject(new WorkerExitedError(`call ${method}`, this.#provisionalExit()));
    return this.#control.call(timeoutMs, method, args as unknown[]) as Promise<CallResult<API, K>>;
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
    if (this.#doomed) {
      // Ending on its own: a brutal kill only hurries it.
      if (parsed === 'brutal_kill') this.#kill();
      return this.exited;
    }
    if (!this.#facts.stopRequested) {
      this.#facts.stopRequested = true;
      this.#state = 'stopping';
      this.#heartbeat.stop();
      this.#log.debug({ budget: parsed }, 'stopping worker');
      if (parsed === 'brutal_kill') {
        this.#force('brutal_kill');
      } else {
        this.#control.stop()
          .catch((err: unknown) => this.#log.warn({ reason: this.#redact(err instanceof Error ? err.message : String(err)) }, 'worker onStop hook failed'));
        if (parsed !== 'infinity') this.#timers.arm(() => this.#force('shutdown_timeout'), parsed);
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
    if (this.#dying || this.#doomed || this.#facts.stopRequested || this.#facts.terminated !== undefined) return this.exited;
    this.#facts.terminated = this.#redact(reason) || 'terminated';
    this.#heartbeat.stop();
    this.#log.debug({ reason: this.#facts.terminated }, 'terminating worker');
    this.#kill();
    return this.exited;
  }

  // ---- ready and heartbeats ---------------------------------------------------------------------

  #onHeartbeatMessage(message: unknown): void {
    const parsed = workerHeartbeatMessageSchema.safeParse(message);
    if (!parsed.success) {
      this.#onMalformed('heartbeat', describeIssues(parsed.error.issues));
      return;
    }
    const msg = parsed.data;
    if (msg.type === 'dying') {
      const err = Object.assign(new Error(msg.message), { name: msg.name, stack: msg.stack });
      this.#doom(scrubbedError(err, this.#redact));
      return;
    }
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
        this.#timers.disarm(this.#readyTimer);
        this.#readyTimer = undefined;
        this.#resolveReady();
        return;
      }
      this.#onReady();
      return;
    }
    this.#heartbeat.onPong(msg);
  }

  #onReady(): void {
    this.#state = 'up';
    this.#timers.disarm(this.#readyTimer);
    this.#readyTimer = undefined;
    this.#heartbeat.start();
    this.#log.debug('worker ready');
    this.#resolveReady();
  }

  /** The heartbeat's verdict: no pong for `maxMissed` intervals. */
  #onHang(): void {
    this.#facts.hangDetected = true;
    this.#log.warn(
      { missed: this.#heartbeat.missed, maxMissed: this.#heartbeat.maxMissed, intervalMs: this.#heartbeat.intervalMs },
      'worker missed its heartbeats; terminating',
    );
    this.#heartbeat.stop();
    this.#kill();
  }

  #onMalformed(channel: string, reason: string): void {
    this.#malformed++;
    this.#log.warn({ channel, reason, malformedMessages: this.#malformed }, 'malformed message from worker');
  }

  // ---- death ------------------------------------------------------------------------------------

  /**
   * The thread threw an uncaught exception that nothing handles: its `dying` message, else the
   * Worker's `error` event (Node posts it after everything the thread posted, and ends the thread).
   * While it is up and nobody is ending it, it is doomed now, of `err`. New calls are refused and
   * heartbeats stop; calls in flight settle as before, by their replies or when the control port
   * closes. Should its `exit` not follow, it is terminated.
   */
  #doom(err: Error): void {
    if (this.#doomed || this.#exit || this.#state !== 'up') return;
    const f = this.#facts;
    if (f.stopRequested || f.terminated !== undefined || f.hangDetected) return;
    this.#doomed = true;
    this.#heartbeat.stop();
    if (!this.#dying) {
      this.#timers.arm(() => {
        this.#log.warn('worker threw but did not exit; terminating');
        this.#kill();
      }, EXIT_GRACE_MS);
    }
    const cls = errorCode(err) === 'ERR_WORKER_OUT_OF_MEMORY' ? 'oom' : 'crash';
    this.#log.debug({ exitClass: cls }, 'worker doomed');
    this.#doomedExit = { class: cls, reason: this.#redact(err.message), error: err };
    this.#resolveDoomed(this.#doomedExit);
  }

  #kill(): void {
    this.#worker.terminate().catch(() => undefined);
  }

  #force(reason: ForcedReason): void {
    if (this.#facts.forced || this.#exit) return;
    this.#facts.forced = reason;
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
    this.#heartbeat.stop();
    this.#timers.disarm(this.#readyTimer);
    this.#readyTimer = undefined;
    if (source !== 'exit') {
      // A port closed: the thread is ending. Should its `exit` not follow, make sure it does.
      this.#timers.arm(() => {
        this.#facts.lostPort = source;
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
    if (this.#control.pendingCount > 0) this.#control.rejectAll(this.#provisionalExit());
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
      this.#timers.arm(() => {
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
    this.#timers.clear();
    const wasStarting = this.#state === 'starting';
    const underlying = classifyExit(this.#facts, code, this.#redact);
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
    this.#resolveDoomed(exit); // no-op when it was doomed already
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
    this.#control.releaseProxies();
    this.#controlPort.removeAllListeners();
    this.#heartbeatPort.removeAllListeners();
  }

  /**
   * The exit as far as it is known, for {@link WorkerExitedError}: ports close a little before
   * `exit` tells the code, so the class may still be `unknown`.
   */
  #provisionalExit(): ProvisionalExit {
    const doomed = this.#exit === undefined && this.#exitCode === undefined ? this.#doomedExit : undefined;
    if (doomed) return { class: doomed.class, reason: doomed.reason };
    return provisionalExit(this.#facts, this.#exit, this.#exitCode, this.#state === 'starting', this.#redact);
  }
}
