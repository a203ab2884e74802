/**
 * The one error hierarchy of threadvisor. Every error the library throws or rejects with is a
 * {@link ThreadvisorError} with a stable, machine-readable `code`; match on `code` (or use
 * `instanceof` on the subclass), never on the message text.
 *
 * @packageDocumentation
 */

import type { FailureClass } from './wire/errors.js';

/** Stable error codes. New codes may be added; existing ones never change meaning. */
export type ErrorCode =
  | 'invalid_config'
  | 'not_found'
  | 'already_started'
  | 'already_present'
  | 'running'
  | 'restarting'
  | 'not_running'
  | 'timeout'
  | 'worker_exited'
  | 'start_failure'
  | 'stopped'
  | 'invalid_message'
  | 'channel_error'
  | 'channel_invalid'
  | 'thaw_failed'
  | 'agent_crashed'
  | 'hibernate_failed'
  | 'revision_conflict'
  | 'corrupt_checkpoint'
  | 'queue_full'
  | 'aborted'
  | 'delivery_failed'
  | 'not_owner'
  | 'unavailable';

/** Base class of every threadvisor error. */
export class ThreadvisorError extends Error {
  /** Stable machine-readable code. */
  readonly code: ErrorCode;
  /** Extra structured context (never credentials). */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** An option or argument failed validation. `issues` lists every bad field path. */
export class InvalidConfigError extends ThreadvisorError {
  /** One entry per bad field: its dotted path and what is wrong with it. */
  readonly issues: ReadonlyArray<{ path: string; message: string }>;
  constructor(what: string, issues: Array<{ path: string; message: string }>) {
    const list = issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; ');
    super('invalid_config', `invalid ${what}: ${list}`, { what, issues });
    this.issues = issues;
  }
}

/** A child, instance or key that does not exist. */
export class NotFoundError extends ThreadvisorError {
  constructor(what: string, id: string) {
    super('not_found', `${what} not found: ${id}`, { what, id });
  }
}

/** An instance id the runtime does not know. */
export class InstanceNotFoundError extends NotFoundError {
  constructor(id: string) {
    super('instance', id);
  }
}

/**
 * A channel module that cannot serve: it failed to load, has no default export, misses a
 * member (`send`, ...), or its `type` differs from the instance's `channelType`. Fatal: the
 * instance goes to `error` without a restart loop; its sends reject with this error.
 */
export class ChannelInvalidError extends ThreadvisorError {
  constructor(instanceId: string, reason: string) {
    super('channel_invalid', `channel of instance ${instanceId} is invalid: ${reason}`, { instanceId, reason });
  }
}

/** `startChild` with an id that is already running (OTP `already_started`). */
export class AlreadyStartedError extends ThreadvisorError {
  constructor(id: string) {
    super('already_started', `child already started: ${id}`, { id });
  }
}

/** `startChild` with an id whose spec is kept but not running (OTP `already_present`). */
export class AlreadyPresentError extends ThreadvisorError {
  constructor(id: string) {
    super('already_present', `child spec already present: ${id}`, { id });
  }
}

/** `deleteChild` on a running child (OTP `running`). */
export class ChildRunningError extends ThreadvisorError {
  constructor(id: string) {
    super('running', `child is running: ${id}`, { id });
  }
}

/**
 * `restartChild` or `deleteChild` on a child whose restart is pending (OTP `restarting`): the
 * supervisor keeps retrying it; try again once it runs, or `terminateChild` it first.
 */
export class ChildRestartingError extends ThreadvisorError {
  constructor(id: string) {
    super('restarting', `child is restarting: ${id}`, { id });
  }
}

/** The target exists but cannot take work now (no live worker: restarting, stopped or in error). */
export class NotRunningError extends ThreadvisorError {
  constructor(what: string) {
    super('not_running', `${what} is not running`, { what });
  }
}

/** A call did not settle within its deadline. */
export class TimeoutError extends ThreadvisorError {
  constructor(what: string, timeoutMs: number) {
    super('timeout', `${what} timed out after ${timeoutMs} ms`, { what, timeoutMs });
  }
}

/** The worker thread behind a call or child has ended. */
export class WorkerExitedError extends ThreadvisorError {
  constructor(what: string, exit: { class: string; reason: string; code?: number }) {
    super('worker_exited', `${what}: worker exited (${exit.class}: ${exit.reason})`, { ...exit });
  }
}

/** A child failed to start (its start function threw, or its worker died before it was ready). */
export class StartFailureError extends ThreadvisorError {
  constructor(id: string, reason: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super('start_failure', `child ${id} failed to start: ${reason}`, { id, reason, ...options?.details }, options);
  }
}

/** The supervisor (or runtime) is stopped or stopping and takes no new work. */
export class StoppedError extends ThreadvisorError {
  constructor(what: string) {
    super('stopped', `${what} is stopped`, { what });
  }
}

/**
 * A message crossing a thread boundary failed its schema, or cannot cross it at all: `rt.send`
 * of `undefined`, or of a value structured clone refuses (a function, a symbol, a `WeakMap`, ...).
 * `details.path` (`$.a[2].b`) names the offending value when there is one; the value itself is
 * never part of the error.
 */
export class InvalidMessageError extends ThreadvisorError {
  constructor(channel: string, reason: string, options?: { path?: string }) {
    const at = options?.path === undefined ? '' : ` at ${options.path}`;
    super('invalid_message', `invalid message on ${channel}${at}: ${reason}`, options?.path === undefined ? { channel, reason } : { channel, reason, path: options.path });
  }
}

/** How a failure should be handled (see `src/wire/errors.ts`). */
export type { FailureClass } from './wire/errors.js';

/**
 * An error a channel raises with an explicit {@link FailureClass}. The class always wins over
 * the built-in classification table. `code` is `channel_error`; the channel's own code (e.g.
 * `rate_limited`) is kept in `channelCode` and in `details.channelCode`.
 */
export class ChannelError extends ThreadvisorError {
  /** The failure class chosen by the channel. */
  readonly class: FailureClass;
  /** The channel's own error code, if it gave one. */
  readonly channelCode: string | undefined;
  /**
   * How long the platform asked to wait before the next try, ms (e.g. a 429's `Retry-After`).
   * A failed send is retried no sooner, and a failed connect or poll reconnects no sooner.
   */
  readonly retryAfterMs: number | undefined;
  /**
   * @param options.retryAfterMs - a non-negative finite number of ms, else `InvalidConfigError`.
   */
  constructor(message: string, options: { class: FailureClass; code?: string | undefined; cause?: unknown; retryAfterMs?: number | undefined }) {
    const details: Record<string, unknown> = { class: options.class };
    if (options.code !== undefined) details.channelCode = options.code;
    const after = options.retryAfterMs;
    if (after !== undefined) {
      if (typeof after !== 'number' || !Number.isFinite(after) || after < 0) {
        throw new InvalidConfigError('ChannelError options', [{ path: 'retryAfterMs', message: 'expected a non-negative finite number of ms' }]);
      }
      details.retryAfterMs = after;
    }
    super('channel_error', message, details, 'cause' in options ? { cause: options.cause } : undefined);
    this.class = options.class;
    this.channelCode = options.code;
    this.retryAfterMs = after;
  }
}

/**
 * An `InstanceManager` could not bring a key's checkpoint back: storage failed to read it, it is
 * corrupt, its state version cannot be migrated, or the agent's `init` rejected it. Nothing is
 * started and nothing is overwritten (fail closed): the checkpoint stays as it was.
 */
export class ThawFailedError extends ThreadvisorError {
  constructor(manager: string, key: string, reason: string, options?: { cause?: unknown }) {
    super('thaw_failed', `thaw of ${manager}/${key} failed: ${reason}`, { manager, key, reason }, options);
  }
}

/**
 * A managed agent's `handle` threw (or its restart failed). The call that crashed it and every
 * call still queued behind it reject with this error. `details.reason` is `crashed` (this call
 * crashed it), `pending` (queued behind the crash), `quarantined` (the key exceeded its restart
 * intensity and takes no work until its quarantine ends) or `restart_failed`.
 */
export class AgentCrashedError extends ThreadvisorError {
  constructor(
    manager: string,
    key: string,
    reason: 'crashed' | 'pending' | 'quarantined' | 'restart_failed',
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super('agent_crashed', `agent ${manager}/${key}: ${reason}`, { manager, key, reason, ...options?.details }, options);
  }
}

/**
 * A managed agent's state could not be saved (its `snapshot` threw or was not plain JSON, or
 * storage rejected the write). The agent stays resident with its state; nothing is dropped.
 * `details.keys` lists every key concerned.
 */
export class HibernateFailedError extends ThreadvisorError {
  constructor(manager: string, keys: readonly string[], reason: string, options?: { cause?: unknown }) {
    super('hibernate_failed', `hibernate of ${manager} [${keys.join(', ')}] failed: ${reason}`, { manager, keys: [...keys], reason }, options);
  }
}

/** A conditional checkpoint write or delete found another revision than the one it expected. */
export class RevisionConflictError extends ThreadvisorError {
  constructor(what: string, expected: number, actual: number) {
    super('revision_conflict', `revision conflict on ${what}: expected ${expected}, found ${actual}`, { what, expected, actual });
  }
}

/** A stored checkpoint failed its integrity checks (header, checksum, JSON, shape). It is left untouched. */
export class CorruptCheckpointError extends ThreadvisorError {
  constructor(where: string, reason: string, options?: { cause?: unknown }) {
    super('corrupt_checkpoint', `corrupt checkpoint ${where}: ${reason}`, { where, reason }, options);
  }
}

/** A bounded queue is full and the caller did not ask to wait for room: nothing was enqueued. */
export class QueueFullError extends ThreadvisorError {
  constructor(what: string, capacity: number) {
    super('queue_full', `${what} is full (capacity ${capacity})`, { what, capacity });
  }
}

/** In cluster mode: the instance runs on another node (`owner`, or null while none runs it). */
export class NotOwnerError extends ThreadvisorError {
  /** The node that runs it now, or null. */
  readonly owner: string | null;
  constructor(id: string, owner: string | null) {
    super('not_owner', `instance ${id} is not run by this node (${owner === null ? 'no node runs it now' : `owner: ${owner}`})`, { id, owner });
    this.owner = owner;
  }
}

/** In cluster mode: the cluster's store (Redis) cannot be reached; nothing was changed. */
export class UnavailableError extends ThreadvisorError {
  constructor(what: string, options?: { cause?: unknown }) {
    super('unavailable', `${what}: the cluster store is unavailable`, { what }, options);
  }
}

/**
 * An operation was given up because its `AbortSignal` aborted (before it started, or while it
 * was waiting). The signal's `reason` is the `cause`.
 */
export class AbortedError extends ThreadvisorError {
  constructor(what: string, options?: { cause?: unknown }) {
    super('aborted', `${what} was aborted`, { what }, options);
  }
}

/**
 * Why a delivery was given up: `max_attempts` (every allowed attempt failed with a recoverable
 * error), `fatal` or `degraded` (the channel classified the failure so; no retry can help) or
 * `crashed` (its worker died while delivering it too many times: a suspected poison message).
 */
export type DeliveryFailureReason = 'max_attempts' | 'fatal' | 'degraded' | 'crashed';

/**
 * A message accepted for delivery could not be delivered. `lastError` is the last failure the
 * channel reported (a {@link ChannelError} carrying its `class` and `channelCode`), `attempts`
 * the number of delivery attempts that ended in a failure, `reason` why it was given up.
 */
export class DeliveryFailedError extends ThreadvisorError {
  /** Delivery attempts that ended in a failure. */
  readonly attempts: number;
  /** Why the delivery was given up. */
  readonly reason: DeliveryFailureReason;
  /** The last failure reported for this message. */
  readonly lastError: ChannelError;
  constructor(what: string, messageId: string | number, attempts: number, reason: DeliveryFailureReason, lastError: ChannelError) {
    super(
      'delivery_failed',
      `delivery of ${String(messageId)} on ${what} failed after ${attempts} attempt(s) (${reason}): ${lastError.message}`,
      { what, messageId, attempts, reason, class: lastError.class, channelCode: lastError.channelCode },
      { cause: lastError },
    );
    this.attempts = attempts;
    this.reason = reason;
    this.lastError = lastError;
  }
}
