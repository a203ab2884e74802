/**
 * The mutable state of one {@link Supervisor}, in one object that the supervisor passes to its
 * helpers: its options resolved, the child entries in start order, pending restart timers,
 * children being shut down, the lifecycle state and the queue that serialises every operation.
 * Also the small operations on that state (serial queue, lookups, timer clearing).
 *
 * @packageDocumentation
 */
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { z } from 'zod';
import { NotFoundError, StoppedError } from '../errors.js';
import { defaultLogger } from '../telemetry.js';
import { loggerSchema } from '../validate.js';
import { IntensityWindow, backoffOptionsSchema, resolveBackoff, type BackoffPolicy } from './backoff.js';
import type { ResolvedSpec } from './child-spec.js';
import type { ChildStatus, Strategy, SupervisorState } from './supervisor-types.js';
import type { ChildExit, RunningChild } from './types.js';

const strategySchema = z.enum(['one_for_one', 'one_for_all', 'rest_for_one']);

export const optionsSchema = z
  .object({
    name: z.string().min(1).default('supervisor'),
    strategy: strategySchema.default('one_for_one'),
    maxRestarts: z.number().int().min(0).default(3),
    periodMs: z.number().positive().default(5000),
    backoff: backoffOptionsSchema.default({ initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.2 }),
    backoffResetMs: z.number().min(0).optional(),
    children: z.array(z.unknown()).default([]),
    logger: loggerSchema.optional(),
    redact: z.custom<(text: string) => string>((v) => typeof v === 'function', 'expected a function').optional(),
  })
  .strict();

/** Supervisor options once validated, with defaults filled in. */
export type ResolvedSupervisorOptions = z.output<typeof optionsSchema>;

/** One child of a supervisor: its spec and what the supervisor knows of it. */
export interface Entry {
  spec: ResolvedSpec;
  status: ChildStatus;
  running: RunningChild | undefined;
  startedAt: number;
  /** Consecutive quick restarts: the backoff attempt of the next restart. */
  attempt: number;
  restarts: number;
  lastExit: ChildExit | undefined;
}

/** Everything a supervisor knows; the supervisor and its helpers read and update it in place. */
export interface SupervisorCore {
  /** The supervisor itself: where events are published. */
  readonly events: EventEmitter;
  readonly name: string;
  readonly strategy: Strategy;
  readonly logger: Logger;
  readonly intensity: IntensityWindow;
  readonly backoff: BackoffPolicy;
  readonly backoffResetMs: number;
  readonly redact: (text: string) => string;
  readonly entries: Entry[];
  /** Pending restarts, each by what cancels it. */
  readonly timers: Set<() => void>;
  /** Children whose shutdown is in progress, so an expired budget can force them. */
  readonly terminating: Set<RunningChild>;
  /** Children handled as dead at their `doomed` whose `exited` has not come: a stop waits for them. */
  readonly dying: Set<RunningChild>;
  state: SupervisorState;
  queue: Promise<unknown>;
  readonly resolveExited: (exit: ChildExit) => void;
  stopping: Promise<ChildExit> | undefined;
  /** Called when a running child's `doomed` (else its `exited`) resolves: the restart decision. */
  readonly onExit: (entry: Entry, child: RunningChild, exit: ChildExit) => void;
}

/** Builds the state of a new supervisor publishing on `events`. */
export function createSupervisorCore(
  events: EventEmitter,
  opts: ResolvedSupervisorOptions,
  resolveExited: (exit: ChildExit) => void,
  onExit: SupervisorCore['onExit'],
): SupervisorCore {
  return {
    events,
    name: opts.name,
    strategy: opts.strategy,
    logger: (opts.logger ?? defaultLogger()).child({ supervisor: opts.name }),
    intensity: new IntensityWindow(opts.maxRestarts, opts.periodMs),
    backoff: resolveBackoff(opts.backoff),
    backoffResetMs: opts.backoffResetMs ?? opts.periodMs,
    redact: opts.redact ?? ((text) => text),
    entries: [],
    timers: new Set<() => void>(),
    terminating: new Set<RunningChild>(),
    dying: new Set<RunningChild>(),
    state: 'running',
    queue: Promise.resolve(),
    resolveExited,
    stopping: undefined,
    onExit,
  };
}

/** A fresh entry for `spec`, not yet started. */
export function newEntry(spec: ResolvedSpec): Entry {
  return { spec, status: 'starting', running: undefined, startedAt: 0, attempt: 0, restarts: 0, lastExit: undefined };
}

/** Runs `fn` after every operation queued before it (whether that one failed or not). */
export function serial<T>(core: SupervisorCore, fn: () => Promise<T>): Promise<T> {
  const run = core.queue.then(fn, fn);
  core.queue = run.catch(() => undefined);
  return run;
}

/** @throws {@link StoppedError} unless the supervisor is running. */
export function assertRunning(core: SupervisorCore): void {
  if (core.state !== 'running') throw new StoppedError(`supervisor ${core.name}`);
}

/** The entry with this child id, or undefined. */
export function findEntry(core: SupervisorCore, id: string): Entry | undefined {
  return core.entries.find((e) => e.spec.id === id);
}

/** @throws {@link NotFoundError} when no child has this id. */
export function getEntry(core: SupervisorCore, id: string): Entry {
  const e = findEntry(core, id);
  if (!e) throw new NotFoundError('child', id);
  return e;
}

/** Removes an entry (and so its spec) from the supervisor. */
export function removeEntry(core: SupervisorCore, entry: Entry): void {
  const i = core.entries.indexOf(entry);
  if (i >= 0) core.entries.splice(i, 1);
}

/** Cancels every pending restart. */
export function clearTimers(core: SupervisorCore): void {
  for (const cancel of core.timers) cancel();
  core.timers.clear();
}
