/**
 * `InstanceServer`: the main-thread, authoritative lifecycle record of one channel instance (the
 * Elixir `Jido.Messaging.InstanceServer`). It owns the live status, the counters and the lifecycle
 * events; it outlives the instance's worker threads, so counters (`restartCount`, …) survive worker
 * restarts. It runs no timers and starts no threads: the runtime drives it with `notify*` calls.
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { z } from 'zod';
import { InvalidConfigError } from '../errors.js';
import { defaultLogger, publishUnchecked } from '../telemetry.js';
import { loggerSchema, parseOrThrow } from '../validate.js';
import { classifyError, isFailureClass, type FailureClass } from '../wire/classify.js';
import {
  collectSecrets,
  instanceSchema,
  parseInstance,
  redactInstance,
  renderReason,
  scrubValue,
  type Instance,
  type InstanceInput,
  type RedactedInstance,
} from './record.js';
import { transitionKind, type InstanceStatus, type TransitionKind } from './state-machine.js';
import { MAX_TIMER_MS } from '../wire/timers.js';
import type { EmitArgs, InstanceEventBase, InstanceHandleEvents } from '../events.js';

export { INSTANCE_EVENTS } from '../events.js';
export type { InstanceEmitName, InstanceEventName } from '../events.js';

/** Class of a restart marker (never `degraded`: a degraded failure does not restart anything). */
export type RestartClass = 'recoverable' | 'fatal';

/**
 * Why an instance restarts; open-ended, the listed kinds are the runtime's own. `group`: the
 * shared worker it was in died (the reason says how: `worker crash: …`, `worker hang: …`).
 */
export type RestartKind =
  | 'crash'
  | 'exit'
  | 'oom'
  | 'hang'
  | 'reconnect_exhausted'
  | 'start_failure'
  | 'intensity_exceeded'
  | 'fatal'
  | 'manual'
  | 'group'
  | (string & {});

/** Optional details of a restart marker, copied into the `restart` event. */
export interface RestartDetails {
  /** How the worker died. */
  readonly kind?: RestartKind;
  /** The restart attempt number (from the supervisor). */
  readonly attempt?: number;
  /** The backoff delay before the restart, in ms. */
  readonly delayMs?: number;
}

/** Phase of a reconnect loop, reported in the `reconnect` event. */
export type ReconnectPhase = 'scheduled' | 'attempt' | 'failed' | 'exhausted';

/** Outcome of a health probe. */
export type ProbeOutcome = 'ok' | 'degraded' | 'failed';

/** The last probe, as shown in health. */
export interface ProbeRecord {
  readonly outcome: ProbeOutcome;
  /** When the probe result was recorded (ms epoch). */
  readonly at: number;
  readonly latencyMs: number;
  /** The failure reason (credential-free), null for `ok` or when none was given. */
  readonly reason: string | null;
}

/** State of the worker thread behind an instance, as reported by the runtime. */
export type WorkerState = 'up' | 'down' | 'restarting';

/** The `worker` section of a health snapshot, supplied by the runtime. */
export interface WorkerHealth {
  readonly state: WorkerState;
  /** Age of the last heartbeat in ms, or null before the first. */
  readonly lastHeartbeatAgeMs: number | null;
  /** Event-loop utilisation of the worker (0..1), or null when unknown. */
  readonly elu: number | null;
  /** `heapUsed` of the worker in bytes, or null when unknown. */
  readonly heapUsed: number | null;
  /** The worker's thread id, or null while the instance has no worker. */
  readonly threadId?: number | null;
  /** How many instances share the worker (1 for a dedicated one, 0 while it has none). */
  readonly instances?: number;
}

/** What the runtime adds to {@link InstanceServer.healthSnapshot}. */
export interface HealthExtra {
  /** The worker section; `null` in the snapshot when omitted. */
  readonly worker?: WorkerHealth;
}

/** The status map of {@link InstanceServer.status} (no credentials). */
export interface InstanceStatusInfo {
  readonly status: InstanceStatus;
  readonly instanceId: string;
  readonly channelType: string;
  readonly name: string;
  readonly restartCount: number;
  readonly reconnectAttempt: number;
  readonly consecutiveFailures: number;
  /** Start of the current connection (ms epoch); kept after a disconnect; null until connected. */
  readonly connectedAt: number | null;
  readonly lastError: string | null;
  readonly lastRestartClass: RestartClass | null;
  readonly lastRestartReason: string | null;
  /** When the server was created (ms epoch); not reset by worker restarts. */
  readonly startedAt: number;
  /** Rejected status requests so far. */
  readonly invalidTransitions: number;
  /** Whether {@link InstanceServer.stop} was called. */
  readonly stopped: boolean;
  /** Notifications ignored because they arrived after stop. */
  readonly ignoredAfterStop: number;
}

/** The health snapshot of {@link InstanceServer.healthSnapshot} (no credentials). */
export interface HealthSnapshot {
  readonly status: InstanceStatus;
  readonly instanceId: string;
  readonly channelType: string;
  readonly name: string;
  /** ms since the server was created. */
  readonly uptimeMs: number;
  readonly connectedAt: number | null;
  readonly lastError: string | null;
  readonly consecutiveFailures: number;
  /** From the `queueDepth` option; 0 when absent or when it throws. */
  readonly senderQueueDepth: number;
  readonly reconnectAttempt: number;
  readonly restartCount: number;
  readonly lastRestartClass: RestartClass | null;
  readonly lastRestartReason: string | null;
  readonly lastProbe: ProbeRecord | null;
  readonly invalidTransitions: number;
  readonly stopped: boolean;
  /** Alone in a worker of its own after its shared worker kept dying (see {@link InstanceServer.notifyQuarantined}). */
  readonly quarantined: boolean;
  /** The worker section from the runtime (scrubbed copy), or null. */
  readonly worker: WorkerHealth | null;
}

/** Options of {@link InstanceServer}. */
export interface InstanceServerOptions {
  /** Consecutive failures that move the instance to `error`. Default 10 (as the original). */
  maxConsecutiveFailures?: number;
  /**
   * A connection that has stayed up this long without a failure is stable: only then does the
   * count of consecutive failures start over (a success, or a fresh start, resets it at once). A
   * new connection alone does not: a channel whose every connection fails right away keeps
   * counting until `maxConsecutiveFailures`. Default 5000 ms.
   */
  stableAfterMs?: number;
  /** pino logger; a child bound to `instanceId` and `channelType` is used. Default: the library logger. */
  logger?: Logger;
  /** Reports the sender queue depth for health. */
  queueDepth?: () => number;
}

const optionsSchema = z
  .object({
    maxConsecutiveFailures: z.number().int().min(1).default(10),
    stableAfterMs: z.number().int().min(0).max(MAX_TIMER_MS).default(5000),
    logger: loggerSchema.optional(),
    queueDepth: z.custom<() => number>((v) => typeof v === 'function', 'expected a function').optional(),
  })
  .strict();

const RESTART_CLASSES: readonly string[] = ['recoverable', 'fatal'];
const RECONNECT_PHASES: readonly string[] = ['scheduled', 'attempt', 'failed', 'exhausted'];
const PROBE_OUTCOMES: readonly string[] = ['ok', 'degraded', 'failed'];

let sharedDefaultLogger: Logger | undefined;

function badArgument(what: string, path: string, message: string): InvalidConfigError {
  return new InvalidConfigError(what, [{ path, message }]);
}

/**
 * One per instance, on the main thread: the authoritative status, counters and lifecycle events.
 *
 * - Status changes follow `TRANSITIONS` (`./state-machine.ts`). A request outside the table is **rejected**: the
 *   state is unchanged, `invalidTransitions` is incremented, a warning is logged and
 *   `instance:invalid_transition` is emitted; nothing is thrown. A same-state request is a no-op
 *   for the status (no status event), but its counter effects apply.
 * - Status events fire only on real transitions (not on same-state re-notifies).
 * - `started` is emitted by {@link InstanceServer.markStarted} (the runtime calls it once it has
 *   attached its listeners; the constructor cannot, since nobody listens yet) and by every
 *   {@link InstanceServer.notifyStarting} (fresh start).
 * - After {@link InstanceServer.stop} every notification is ignored and counted
 *   (`ignoredAfterStop`); queries keep working.
 * - Credentials never leave the server: it has no accessor for them (the runtime that starts the
 *   worker keeps its own copy); status, health, `getInstance`, events and logs are redacted, and
 *   every reason is scrubbed of credential values in every form (see `collectSecrets`).
 * - Arguments outside their type (an unknown restart class, probe outcome or reconnect phase, a
 *   negative attempt) are programming errors and throw {@link InvalidConfigError}.
 *
 * `notify*` methods return `true` when applied (including a same-state no-op) and `false` when
 * rejected or ignored after stop.
 */
export class InstanceServer extends EventEmitter {
  readonly #instance: Instance;
  readonly #secrets: readonly string[];
  readonly #log: Logger;
  readonly #maxConsecutiveFailures: number;
  readonly #queueDepth: (() => number) | undefined;
  readonly #startedAt: number;
  #status: InstanceStatus = 'starting';
  #connectedAt: number | null = null;
  #consecutiveFailures = 0;
  readonly #stableAfterMs: number;
  /** When the last failure was counted (ms epoch), or null. */
  #lastFailureAt: number | null = null;
  #lastError: string | null = null;
  #lastRestartClass: RestartClass | null = null;
  #lastRestartReason: string | null = null;
  #reconnectAttempt = 0;
  #restartCount = 0;
  #quarantined = false;
  #lastProbe: ProbeRecord | null = null;
  #invalidTransitions = 0;
  #ignoredAfterStop = 0;
  #startedEmitted = false;
  #stoppedEmitted = false;

  /** The zod schema of the Instance record (the original's `schema/0`). */
  static schema(): typeof instanceSchema {
    return instanceSchema;
  }

  /**
   * @param instance - an Instance record (re-validated here; `status` in it is ignored: a server
   *   always begins at `starting`).
   * @throws {@link InvalidConfigError} when the record or the options are invalid.
   */
  constructor(instance: Instance | InstanceInput, options: InstanceServerOptions = {}) {
    super();
    const parsed = parseInstance(instance);
    const opts = parseOrThrow(optionsSchema, options, 'instance server options');
    this.#instance = Object.freeze({
      ...parsed,
      credentials: Object.freeze({ ...parsed.credentials }),
      settings: Object.freeze({ ...parsed.settings }),
    });
    this.#secrets = collectSecrets(parsed.credentials);
    this.#maxConsecutiveFailures = opts.maxConsecutiveFailures;
    this.#stableAfterMs = opts.stableAfterMs;
    this.#queueDepth = opts.queueDepth;
    const base = opts.logger ?? (sharedDefaultLogger ??= defaultLogger());
    this.#log = base.child({ component: 'instance', instanceId: parsed.id, channelType: parsed.channelType });
    this.#startedAt = Date.now();
  }

  // ---------------------------------------------------------------- fields (read-only views)

  /** The instance id. */
  get instanceId(): string {
    return this.#instance.id;
  }
  /** The channel type. */
  get channelType(): string {
    return this.#instance.channelType;
  }
  /** The instance name. */
  get name(): string {
    return this.#instance.name;
  }
  /** The live status (the seed's `status` field; `status()` is the status map). */
  get currentStatus(): InstanceStatus {
    return this.#status;
  }
  /** Start of the current connection (ms epoch) or null. */
  get connectedAt(): number | null {
    return this.#connectedAt;
  }
  /** Consecutive failures since the last success / connect / fresh start. */
  get consecutiveFailures(): number {
    return this.#consecutiveFailures;
  }
  /** The last failure reason (credential-free) or null. */
  get lastError(): string | null {
    return this.#lastError;
  }
  /** Class of the last restart marker or null. */
  get lastRestartClass(): RestartClass | null {
    return this.#lastRestartClass;
  }
  /** Reason of the last restart marker (credential-free) or null. */
  get lastRestartReason(): string | null {
    return this.#lastRestartReason;
  }
  /** The current reconnect attempt number; 0 when not reconnecting. */
  get reconnectAttempt(): number {
    return this.#reconnectAttempt;
  }
  /** Restart markers received; monotonic, survives worker restarts. */
  get restartCount(): number {
    return this.#restartCount;
  }
  /** When the server was created (ms epoch). */
  get startedAt(): number {
    return this.#startedAt;
  }
  /** Whether `stopped` was emitted (it is, exactly once, by the first {@link InstanceServer.stop}). */
  get stoppedEmitted(): boolean {
    return this.#stoppedEmitted;
  }
  /** Rejected status requests so far. */
  get invalidTransitions(): number {
    return this.#invalidTransitions;
  }
  /** Notifications ignored after stop. */
  get ignoredAfterStop(): number {
    return this.#ignoredAfterStop;
  }
  /** The configured failure threshold. */
  get maxConsecutiveFailures(): number {
    return this.#maxConsecutiveFailures;
  }

  // ---------------------------------------------------------------- queries

  /** The status map (the original's `status/1`, plus `invalidTransitions`, `stopped`, `ignoredAfterStop`). */
  status(): InstanceStatusInfo {
    return {
      status: this.#status,
      instanceId: this.#instance.id,
      channelType: this.#instance.channelType,
      name: this.#instance.name,
      restartCount: this.#restartCount,
      reconnectAttempt: this.#reconnectAttempt,
      consecutiveFailures: this.#consecutiveFailures,
      connectedAt: this.#connectedAt,
      lastError: this.#lastError,
      lastRestartClass: this.#lastRestartClass,
      lastRestartReason: this.#lastRestartReason,
      startedAt: this.#startedAt,
      invalidTransitions: this.#invalidTransitions,
      stopped: this.#stoppedEmitted,
      ignoredAfterStop: this.#ignoredAfterStop,
    };
  }

  /**
   * The Instance record with credentials redacted (see `redactInstance`); its `status` is the live
   * status.
   */
  getInstance(): RedactedInstance {
    return { ...redactInstance(this.#instance), status: this.#status };
  }

  /**
   * A health snapshot: the seed's fields (status, instanceId, channelType, name, uptimeMs,
   * connectedAt, lastError, consecutiveFailures, senderQueueDepth) plus reconnectAttempt,
   * restartCount, lastRestartClass/Reason, lastProbe, invalidTransitions, stopped and the `worker`
   * section supplied by the runtime (`null` when not given).
   */
  healthSnapshot(extra: HealthExtra = {}): HealthSnapshot {
    return {
      status: this.#status,
      instanceId: this.#instance.id,
      channelType: this.#instance.channelType,
      name: this.#instance.name,
      uptimeMs: Math.max(0, Date.now() - this.#startedAt),
      connectedAt: this.#connectedAt,
      lastError: this.#lastError,
      consecutiveFailures: this.#consecutiveFailures,
      senderQueueDepth: this.#senderQueueDepth(),
      reconnectAttempt: this.#reconnectAttempt,
      restartCount: this.#restartCount,
      lastRestartClass: this.#lastRestartClass,
      lastRestartReason: this.#lastRestartReason,
      lastProbe: this.#lastProbe,
      invalidTransitions: this.#invalidTransitions,
      stopped: this.#stoppedEmitted,
      quarantined: this.#quarantined,
      worker: extra.worker ? (scrubValue({ ...extra.worker }, this.#secrets) as WorkerHealth) : null,
    };
  }

  /**
   * Renders any reason as a credential-free string (what status, health and events show), or null
   * for null/undefined. For the runtime to scrub worker error messages before logging them.
   */
  redactReason(reason: unknown): string | null {
    return renderReason(reason, this.#secrets);
  }

  /** JSON form: the status map (never credentials). */
  toJSON(): InstanceStatusInfo {
    return this.status();
  }

  // ---------------------------------------------------------------- lifecycle notifications

  /**
   * Emits `started` (`fresh: false`) once. Call it after attaching listeners; later calls and calls
   * after stop do nothing and return false.
   */
  markStarted(): boolean {
    if (this.#stoppedEmitted || this.#startedEmitted) return false;
    this.#startedEmitted = true;
    this.#log.debug('instance started');
    this.#emit('started', () => ({ fresh: false, from: null, restartCount: this.#restartCount }));
    return true;
  }

  /**
   * A fresh start after a restart (worker restarted, `recoverAfterMs` elapsed, `restartInstance`):
   * status → `starting` (allowed from every status — the only way out of `error`), connectedAt,
   * consecutiveFailures and reconnectAttempt reset; restartCount, last restart marker, lastError
   * and startedAt kept. Emits `started` with `fresh: true`, even when already `starting` (a start
   * failure followed by another attempt).
   */
  notifyStarting(reason?: unknown): boolean {
    if (this.#ignoredIfStopped('notifyStarting')) return false;
    const from = this.#status;
    this.#status = 'starting';
    this.#connectedAt = null;
    this.#consecutiveFailures = 0;
    this.#reconnectAttempt = 0;
    const why = this.redactReason(reason);
    this.#log.info({ from, reason: why, restartCount: this.#restartCount }, 'instance fresh start');
    this.#emit('started', () => ({ fresh: true, from, restartCount: this.#restartCount, reason: why }));
    return true;
  }

  /** The channel is connecting: → `connecting`; emits `connecting` on a transition. */
  notifyConnecting(): boolean {
    if (this.#ignoredIfStopped('notifyConnecting')) return false;
    const from = this.#status;
    const kind = this.#move('connecting', 'notifyConnecting');
    if (kind === 'invalid') return false;
    if (kind === 'transition') this.#emit('connecting', () => ({ from }));
    return true;
  }

  /**
   * The channel is connected: → `connected`; reconnectAttempt → 0 and lastError → null. On a
   * transition connectedAt = now and `connected` is emitted with `meta` (scrubbed; e.g.
   * `{ attempts, reason, elapsedMs }` after a reconnect) merged in; consecutiveFailures is kept (a
   * new connection is no proof of health: the count starts over once it has been stable for
   * `stableAfterMs`, or on a success). A same-state re-notify (the connection is confirmed
   * healthy) keeps connectedAt, resets consecutiveFailures and emits nothing.
   */
  notifyConnected(meta: Readonly<Record<string, unknown>> = {}): boolean {
    if (this.#ignoredIfStopped('notifyConnected')) return false;
    const from = this.#status;
    const kind = this.#move('connected', 'notifyConnected');
    if (kind === 'invalid') return false;
    if (kind !== 'transition') this.#consecutiveFailures = 0;
    this.#reconnectAttempt = 0;
    this.#lastError = null;
    if (kind === 'transition') {
      const connectedAt = Date.now();
      this.#connectedAt = connectedAt;
      this.#emit('connected', () => ({
        ...(scrubValue(meta, this.#secrets) as Record<string, unknown>),
        from,
        connectedAt,
      }));
    }
    return true;
  }

  /**
   * The connection was lost: → `disconnected`; lastError = reason (connectedAt is kept). Emits
   * `disconnected` on a transition.
   */
  notifyDisconnected(reason: unknown = 'unknown'): boolean {
    if (this.#ignoredIfStopped('notifyDisconnected')) return false;
    const from = this.#status;
    const why = this.redactReason(reason);
    const kind = this.#move('disconnected', 'notifyDisconnected', why);
    if (kind === 'invalid') return false;
    this.#lastError = why;
    if (kind === 'transition') this.#emit('disconnected', () => ({ from, reason: why }));
    return true;
  }

  /**
   * A delivery or operation failed: consecutiveFailures += 1, lastError = reason (after a stable
   * period, connected for `stableAfterMs` since the connection opened and since the last failure,
   * the count starts over first). When the count reaches `maxConsecutiveFailures` the status moves
   * to `error` (emitting `error` with trigger `max_consecutive_failures`, once, on entry).
   */
  notifyFailure(reason: unknown): boolean {
    if (this.#ignoredIfStopped('notifyFailure')) return false;
    const why = this.redactReason(reason);
    const now = Date.now();
    if (this.#status === 'connected' && this.#connectedAt !== null && now - Math.max(this.#connectedAt, this.#lastFailureAt ?? 0) >= this.#stableAfterMs) {
      this.#consecutiveFailures = 0;
    }
    this.#lastFailureAt = now;
    this.#consecutiveFailures += 1;
    this.#lastError = why;
    if (this.#consecutiveFailures >= this.#maxConsecutiveFailures && this.#status !== 'error') {
      this.#enterError(why, 'max_consecutive_failures', 'notifyFailure');
    }
    return true;
  }

  /** An operation succeeded: consecutiveFailures → 0. The status is unchanged (`error` stays). */
  notifySuccess(): boolean {
    if (this.#ignoredIfStopped('notifySuccess')) return false;
    this.#consecutiveFailures = 0;
    return true;
  }

  /**
   * A fatal error: → `error` (allowed from every status), lastError = reason. Emits `error` with
   * `class: 'fatal'` on entry; in `error` already it only updates lastError.
   */
  notifyError(reason: unknown): boolean {
    if (this.#ignoredIfStopped('notifyError')) return false;
    const why = this.redactReason(reason);
    this.#lastError = why;
    if (this.#status !== 'error') this.#enterError(why, 'fatal', 'notifyError');
    return true;
  }

  /**
   * Reconnect progress (the `attempt` phase). `attempt > 0`: → `connecting` (rejected from
   * `connected` and `error`, see the transition table), reconnectAttempt = attempt, lastError = reason when given,
   * emits `reconnect` (`phase: 'attempt'`) and `connecting` on a transition. `attempt === 0`: the
   * loop is over: reconnectAttempt → 0 (status unchanged), lastError = reason when given, no event.
   *
   * @throws {@link InvalidConfigError} when `attempt` is not a non-negative integer.
   */
  notifyReconnectAttempt(attempt: number, reason?: unknown): boolean {
    if (!Number.isInteger(attempt) || attempt < 0) {
      throw badArgument('reconnect attempt', 'attempt', 'expected a non-negative integer');
    }
    if (this.#ignoredIfStopped('notifyReconnectAttempt')) return false;
    const why = this.redactReason(reason);
    if (attempt === 0) {
      this.#reconnectAttempt = 0;
      if (why !== null) this.#lastError = why;
      return true;
    }
    const from = this.#status;
    const kind = this.#move('connecting', 'notifyReconnectAttempt', why);
    if (kind === 'invalid') return false;
    this.#reconnectAttempt = attempt;
    if (why !== null) this.#lastError = why;
    if (kind === 'transition') this.#emit('connecting', () => ({ from }));
    this.#emit('reconnect', () => ({ phase: 'attempt', attempt, reason: why, class: 'recoverable' }));
    return true;
  }

  /**
   * Reports a reconnect-loop phase as a `reconnect` event. `attempt` delegates to
   * {@link InstanceServer.notifyReconnectAttempt}. The other phases change no status:
   * `scheduled` (attempt `attempt` will run after `delayMs`), `failed` (attempt failed; lastError
   * = reason; `class` = `failureClass` or the default classification of `reason`), `exhausted`
   * (budget spent; lastError = reason). `class` is `recoverable` for `scheduled` and `exhausted`.
   *
   * @throws {@link InvalidConfigError} for an unknown phase or a negative / non-integer attempt.
   */
  notifyReconnect(
    phase: ReconnectPhase,
    attempt: number,
    reason?: unknown,
    delayMs?: number,
    failureClass?: FailureClass,
  ): boolean {
    if (!RECONNECT_PHASES.includes(phase)) throw badArgument('reconnect phase', 'phase', `unknown phase ${String(phase)}`);
    if (phase === 'attempt') return this.notifyReconnectAttempt(attempt, reason);
    if (!Number.isInteger(attempt) || attempt < 0) {
      throw badArgument('reconnect attempt', 'attempt', 'expected a non-negative integer');
    }
    if (this.#ignoredIfStopped('notifyReconnect')) return false;
    const why = this.redactReason(reason);
    if (phase !== 'scheduled' && why !== null) this.#lastError = why;
    const cls: FailureClass =
      phase === 'failed' ? (isFailureClass(failureClass) ? failureClass : classifyError(reason)) : 'recoverable';
    if (phase === 'exhausted') this.#log.warn({ attempt, reason: why }, 'reconnect exhausted');
    this.#emit('reconnect', () => ({
      phase,
      attempt,
      reason: why,
      class: cls,
      ...(delayMs !== undefined ? { delayMs } : {}),
    }));
    return true;
  }

  /**
   * Records that the instance was put alone in a worker of its own (`quarantined: true`: its
   * shared worker kept dying and it is a suspect) or released from that (`false`), and emits
   * `quarantined`. No status change. A repeat of the current value does nothing.
   */
  notifyQuarantined(quarantined: boolean, reason?: unknown): boolean {
    if (this.#ignoredIfStopped('notifyQuarantined') || this.#quarantined === quarantined) return false;
    this.#quarantined = quarantined;
    const why = this.redactReason(reason);
    this.#log[quarantined ? 'warn' : 'info']({ reason: why }, quarantined ? 'instance quarantined' : 'instance released from quarantine');
    this.#emit('quarantined', () => ({ quarantined, reason: why }));
    return true;
  }

  /**
   * Records a restart marker, written just before the runtime restarts the worker (or escalates):
   * restartCount += 1 (monotonic, survives restarts), lastRestartClass / lastRestartReason set.
   * Status unchanged. Emits `restart` with `details` (`kind`, `attempt`, `delayMs`) when given.
   *
   * @throws {@link InvalidConfigError} when `cls` is not `recoverable` or `fatal`.
   */
  notifyRestartMarker(cls: RestartClass, reason: unknown, details: RestartDetails = {}): boolean {
    if (!RESTART_CLASSES.includes(cls)) {
      throw badArgument('restart marker', 'class', `expected recoverable or fatal, got ${String(cls)}`);
    }
    if (this.#ignoredIfStopped('notifyRestartMarker')) return false;
    const why = this.redactReason(reason);
    this.#restartCount += 1;
    this.#lastRestartClass = cls;
    this.#lastRestartReason = why;
    const extra: Record<string, unknown> = {};
    if (details.kind !== undefined) extra.kind = details.kind;
    if (details.attempt !== undefined) extra.attempt = details.attempt;
    if (details.delayMs !== undefined) extra.delayMs = details.delayMs;
    this.#log.info({ class: cls, reason: why, restartCount: this.#restartCount, ...extra }, 'instance restart marker');
    this.#emit('restart', () => ({ class: cls, reason: why, restartCount: this.#restartCount, ...extra }));
    return true;
  }

  /**
   * Records a health probe result as `lastProbe` and emits `probe`. No status change: the runtime
   * reports the consequence separately (`notifyConnected`, `notifyDisconnected`, …). For a non-ok
   * outcome `class` is `failureClass`, else `degraded` for `degraded`, else the default
   * classification of `reason`.
   *
   * @throws {@link InvalidConfigError} for an unknown outcome.
   */
  notifyProbe(outcome: ProbeOutcome, latencyMs: number, reason?: unknown, failureClass?: FailureClass): boolean {
    if (!PROBE_OUTCOMES.includes(outcome)) throw badArgument('probe', 'outcome', `unknown outcome ${String(outcome)}`);
    if (this.#ignoredIfStopped('notifyProbe')) return false;
    const why = outcome === 'ok' ? null : this.redactReason(reason);
    this.#lastProbe = { outcome, at: Date.now(), latencyMs, reason: why };
    const cls: FailureClass | undefined =
      outcome === 'ok'
        ? undefined
        : isFailureClass(failureClass)
          ? failureClass
          : outcome === 'degraded'
            ? 'degraded'
            : classifyError(reason);
    this.#emit('probe', () => ({ outcome, latencyMs, reason: why, ...(cls ? { class: cls } : {}) }));
    return true;
  }

  /**
   * Stops the server: emits `stopped` exactly once, whatever the path (explicit stop, supervisor
   * shutdown, escalation). Returns true for the call that stopped it, false afterwards. Later
   * notifications are ignored and counted; queries keep working.
   */
  stop(reason?: unknown): boolean {
    if (this.#stoppedEmitted) return false;
    this.#stoppedEmitted = true;
    const why = this.redactReason(reason);
    const uptimeMs = Math.max(0, Date.now() - this.#startedAt);
    this.#log.debug({ reason: why }, 'instance stopped');
    this.#emit('stopped', () => ({ status: this.#status, reason: why, restartCount: this.#restartCount, uptimeMs }));
    return true;
  }

  // ---------------------------------------------------------------- internals

  #emit(...args: EmitArgs<InstanceHandleEvents, 'instance', keyof InstanceEventBase>): void {
    const [event, build] = args;
    const i = this.#instance;
    publishUnchecked(this, `instance:${event}`, () => ({ ...build(), instanceId: i.id, channelType: i.channelType, name: i.name }));
  }

  #ignoredIfStopped(via: string): boolean {
    if (!this.#stoppedEmitted) return false;
    this.#ignoredAfterStop += 1;
    this.#log.debug({ via }, 'notification after stop ignored');
    return true;
  }

  /** Applies a status request; on `invalid` counts, logs and emits, and leaves the state alone. */
  #move(to: InstanceStatus, via: string, reason: string | null = null): TransitionKind {
    const from = this.#status;
    const kind = transitionKind(from, to);
    if (kind === 'invalid') {
      this.#invalidTransitions += 1;
      this.#log.warn({ from, to, via, reason }, 'invalid instance status transition rejected');
      this.#emit('invalid_transition', () => ({ from, to, via, reason }));
      return kind;
    }
    if (kind === 'transition') {
      this.#status = to;
      this.#log.debug({ from, to, via }, 'instance status transition');
    }
    return kind;
  }

  #enterError(why: string | null, trigger: 'fatal' | 'max_consecutive_failures', via: string): void {
    const from = this.#status;
    this.#move('error', via, why);
    this.#log.warn({ from, reason: why, trigger, consecutiveFailures: this.#consecutiveFailures }, 'instance entered error');
    this.#emit('error', () => ({
      from,
      reason: why,
      consecutiveFailures: this.#consecutiveFailures,
      trigger,
      ...(trigger === 'fatal' ? { class: 'fatal' } : {}),
    }));
  }

  #senderQueueDepth(): number {
    if (!this.#queueDepth) return 0;
    try {
      const n = this.#queueDepth();
      return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? n : 0;
    } catch (err) {
      this.#log.debug({ err: this.redactReason(err) }, 'queueDepth threw; reporting 0');
      return 0;
    }
  }
}
