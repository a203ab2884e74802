/**
 * The public types of a {@link Supervisor}: its restart strategy, its options, its lifecycle
 * state and the rows and counts of its children. `supervisor.ts` re-exports them.
 *
 * @packageDocumentation
 */
import type { Logger } from 'pino';
import type { BackoffOptions } from './backoff.js';
import type { ChildExit, ChildSpec, ChildType, RestartType, RunningChild } from './types.js';

/** Which children a supervisor restarts when one of them dies. */
export type Strategy = 'one_for_one' | 'one_for_all' | 'rest_for_one';

/** Options of {@link Supervisor.start}. Every field is optional; defaults follow Elixir's `Supervisor`. */
export interface SupervisorOptions {
  /** Name used in events and logs. Default `supervisor`. */
  name?: string;
  /**
   * `one_for_one` (default): restart only the dead child. `one_for_all`: stop every other child
   * (reverse start order), then restart all. `rest_for_one`: stop the children started after the
   * dead one, then restart it and them, in start order.
   */
  strategy?: Strategy;
  /** Restart intensity: more than `maxRestarts` restarts within `periodMs` escalates. Default 3. */
  maxRestarts?: number;
  /** Intensity window in ms. Default 5000. */
  periodMs?: number;
  /** Delay between a death and its restart. See {@link BackoffOptions}. */
  backoff?: BackoffOptions;
  /**
   * A child that ran at least this long before dying restarts from backoff attempt 0.
   * Default: `periodMs`.
   */
  backoffResetMs?: number;
  /** Children started in order by {@link Supervisor.start}. A child whose `start` resolves `undefined` is ignored (see {@link ChildSpec.start}). */
  children?: Array<ChildSpec<RunningChild | undefined>>;
  /** pino logger; each child gets a child logger bound to `supervisor` and `childId`. */
  logger?: Logger;
  /**
   * Scrubs secrets out of free text (exit reasons, error messages) before it reaches a log line or
   * an event. Passed on to children in their start context. Default: none.
   */
  redact?: (text: string) => string;
}

/** Lifecycle state of a supervisor. */
export type SupervisorState = 'running' | 'stopping' | 'stopped' | 'escalated';

/** Status of one child in {@link Supervisor.whichChildren}. */
export type ChildStatus = 'starting' | 'running' | 'restarting' | 'terminated';

/** One row of {@link Supervisor.whichChildren}. */
export interface ChildInfo {
  readonly id: string;
  readonly type: ChildType;
  readonly restart: RestartType;
  readonly status: ChildStatus;
  /** The running child (e.g. a `WorkerHost` or a nested `Supervisor`), when running. */
  readonly child: RunningChild | undefined;
  /** How many times this child was restarted by the supervisor. */
  readonly restarts: number;
  /** The last end of this child, if any. */
  readonly lastExit: ChildExit | undefined;
}

/** Counts returned by {@link Supervisor.countChildren} (OTP `count_children`). */
export interface ChildCounts {
  readonly specs: number;
  readonly active: number;
  readonly supervisors: number;
  readonly workers: number;
}
