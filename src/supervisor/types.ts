import type { Logger } from 'pino';

/**
 * How a child ended. `normal` and `shutdown` are the normal ends (OTP's `normal` / `shutdown`);
 * every other class is abnormal and restarts a `transient` child.
 *
 * - `normal`: the child finished on its own (a worker exiting with code 0).
 * - `shutdown`: the supervisor stopped it (graceful stop, budget expiry or brutal kill).
 * - `crash`: an uncaught exception or unhandled rejection.
 * - `exit`: the child exited on its own with a non-zero code (`process.exit(n)` in a worker).
 * - `oom`: the worker exceeded its `resourceLimits` heap (`ERR_WORKER_OUT_OF_MEMORY`).
 * - `hang`: it stopped answering heartbeats and was terminated.
 * - `start_failure`: it failed before it reported ready.
 * - `escalated`: a child supervisor exceeded its restart intensity.
 */
export type ExitClass = 'normal' | 'shutdown' | 'crash' | 'exit' | 'oom' | 'hang' | 'start_failure' | 'escalated';

/** The record of one child's end. */
export interface ChildExit {
  /** Classification of the end. */
  readonly class: ExitClass;
  /** Human-readable reason, e.g. `heartbeat_timeout`, `exit(3)`, or an error message. */
  readonly reason: string;
  /** Exit code, for worker children. */
  readonly code?: number;
  /** The error behind a `crash`, `oom` or `start_failure`. */
  readonly error?: Error;
}

/** True when a child's end counts as normal (no restart for `transient` children). */
export function isNormalExit(exit: Pick<ChildExit, 'class'>): boolean {
  return exit.class === 'normal' || exit.class === 'shutdown';
}

/**
 * Shutdown budget of a child: milliseconds to finish after a graceful stop request before it is
 * forced, `'brutal_kill'` to force at once, or `'infinity'` to wait as long as it takes.
 */
export type Shutdown = number | 'brutal_kill' | 'infinity';

/**
 * A running child, as returned by a child spec's `start`. The supervisor holds it until it ends.
 * Implementations: {@link WorkerHost} (a worker thread) and {@link Supervisor} (a subtree); any
 * object with this shape works, e.g. an in-process service.
 */
export interface RunningChild {
  /** Resolves exactly once, when the child has ended for any reason. Never rejects. */
  readonly exited: Promise<ChildExit>;
  /**
   * Optional: resolves exactly once, as soon as the child's end is certain, with the exit it ends
   * with (perhaps without its `code`, not known yet), at the latest together with `exited`. A worker
   * whose thread threw an uncaught exception is doomed before it is gone: the supervisor restarts
   * it at once, and waits for its `exited` before it counts itself stopped. Never rejects.
   */
  readonly doomed?: Promise<ChildExit>;
  /**
   * Stops the child: ask it to finish, wait up to `budget`, then force it. Resolves with the
   * exit record once the child has ended (at once if it already had).
   */
  shutdown(budget: Shutdown): Promise<ChildExit>;
}

/** What a child's `start` function receives. */
export interface StartContext {
  /** Name of the supervisor that starts the child. */
  readonly supervisor: string;
  /** The child's id. */
  readonly childId: string;
  /** 0 for the first start, then the restart count of this child. */
  readonly attempt: number;
  /** A child logger bound to `supervisor` and `childId`. */
  readonly logger: Logger;
  /** Scrubs secrets out of free text before it is logged or published (see `SupervisorOptions.redact`). */
  readonly redact?: (text: string) => string;
}

/** Restart type of a child (OTP semantics). */
export type RestartType = 'permanent' | 'transient' | 'temporary';

/** Child type: a plain worker or a nested supervisor. */
export type ChildType = 'worker' | 'supervisor';

/**
 * A child specification (OTP child spec). Unknown fields are rejected with `InvalidConfigError`.
 *
 * `C` is what `start` may resolve with: a {@link RunningChild} (the default), or
 * `RunningChild | undefined` for a child that may decline to run (OTP `ignore`), e.g.
 * `ChildSpec<RunningChild | undefined>`.
 */
export interface ChildSpec<C extends RunningChild | undefined = RunningChild> {
  /** Unique id within its supervisor. */
  readonly id: string;
  /**
   * Starts the child; resolves once it is up. A rejection is a start failure, and so is a value
   * that is not a {@link RunningChild} (a `StartFailureError` saying what was returned).
   *
   * Resolving `undefined` means *ignore* (OTP `ignore`): nothing runs, the spec is kept with
   * status `terminated` (a `temporary` spec is dropped), it is not restarted, and
   * `Supervisor.restartChild` may try it again later. During a restart by the supervisor, an
   * ignoring child stays down and its siblings are restarted as usual.
   */
  readonly start: (ctx: StartContext) => Promise<C>;
  /**
   * `permanent` (default): always restarted. `transient`: restarted only after an abnormal end.
   * `temporary`: never restarted, and removed from the supervisor when it ends.
   */
  readonly restart?: RestartType;
  /** Shutdown budget; default 5000 ms for workers and `'infinity'` for supervisors. */
  readonly shutdown?: Shutdown;
  /** `worker` (default) or `supervisor`. */
  readonly type?: ChildType;
}
