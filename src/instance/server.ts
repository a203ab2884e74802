/**
 * `InstanceServer`: the main-thread, authoritative lifecycle record of one channel instance (the
 * Elixir `Jido.Messaging.InstanceServer`). It owns the live status, the counters and the lifecycle
 * events; it outlives the instance's worker threads, so counters (`restartCount`, …) survive worker
 * restarts. It runs no timers and starts no threads: the runtime drives it with `notify*` calls.
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import { InvalidConfigError } from '../errors.js';
import { classifyError, isFailureClass, type FailureClass } from '../wire/classify.js';
import {
  instanceSchema,
  redactInstance,
  renderReason,
  scrubValue,
  type Instance,
  type InstanceInput,
  type RedactedInstance,
} from './record.js';
import type { InstanceStatus } from './state-machine.js';
import { createServerState, type ServerState } from './server-state.js';
import { publishInstanceEvent } from './server-events.js';
import { enterError, moveStatus } from './status-moves.js';
import { countFailure, ignoredIfStopped } from './server-counters.js';
import { buildHealthSnapshot, buildStatusInfo } from './health-snapshot.js';
import type {
  HealthExtra,
  HealthSnapshot,
  InstanceServerOptions,
  InstanceStatusInfo,
  ProbeOutcome,
  ReconnectPhase,
  RestartClass,
  RestartDetails,
} from './server-types.js';

export { INSTANCE_EVENTS } from '../events.js';
export type { InstanceEmitName, InstanceEventName } from '../events.js';
export type {
  HealthExtra,
  HealthSnapshot,
  InstanceServerOptions,
  InstanceStatusInfo,
  ProbeOutcome,
  ProbeRecord,
  ReconnectPhase,
  RestartClass,
  RestartDetails,
  RestartKind,
  WorkerHealth,
  WorkerState,
} from './server-types.js';

const RESTART_CLASSES: readonly string[] = ['recoverable', 'fatal'];
const RECONNECT_PHASES: readonly string[] = ['scheduled', 'attempt', 'failed', 'exhausted'];
const PROBE_OUTCOMES: readonly string[] = ['ok', 'degraded', 'failed'];

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
  readonly #state: ServerState;

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
    this.#state = createServerState(this, instance, options);
  }

  // ---------------------------------------------------------------- fields (read-only views)

  /** The instance id. */
  get instanceId(): string {
    return this.#state.instance.id;
  }
  /** The channel type. */
  get channelType(): string {
    return this.#state.instance.channelType;
  }
  /** The instance name. */
  get name(): string {
    return this.#state.instance.name;
  }
  /** The live status (the seed's `status` field; `status()` is the status map). */
  get currentStatus(): InstanceStatus {
    return this.#state.status;
  }
  /** Start of the current connection (ms epoch) or null. */
  get connectedAt(): number | null {
    return this.#state.connectedAt;
  }
  /** Consecutive failures since the last success / connect / fresh start. */
  get consecutiveFailures(): number {
    return this.#state.consecutiveFailures;
  }
  /** The last failure reason (credential-free) or null. */
  get lastError(): string | null {
    return this.#state.lastError;
  }
  /** Class of the last restart marker or null. */
  get lastRestartClass(): RestartClass | null {
    return this.#state.lastRestartClass;
  }
  /** Reason of the last restart marker (credential-free) or null. */
  get lastRestartReason(): string | null {
    return this.#state.lastRestartReason;
  }
  /** The current reconnect attempt number; 0 when not reconnecting. */
  get reconnectAttempt(): number {
    return this.#state.reconnectAttempt;
  }
  /** Restart markers received; monotonic, survives worker restarts. */
  get restartCount(): number {
    return this.#state.restartCount;
  }
  /** When the server was created (ms epoch). */
  get startedAt(): number {
    return this.#state.startedAt;
  }
  /** Whether `stopped` was emitted (it is, exactly once, by the first {@link InstanceServer.stop}). */
  get stoppedEmitted(): boolean {
    return this.#state.stoppedEmitted;
  }
  /** Rejected status requests so far. */
  get invalidTransitions(): number {
    return this.#state.invalidTransitions;
  }
  /** Notifications ignored after stop. */
  get ignoredAfterStop(): number {
    return this.#state.ignoredAfterStop;
  }
  /** The configured failure threshold. */
  get maxConsecutiveFailures(): number {
    return this.#state.maxConsecutiveFailures;
  }

  // ---------------------------------------------------------------- queries

  /** The status map (the original's `status/1`, plus `invalidTransitions`, `stopped`, `ignoredAfterStop`). */
  status(): InstanceStatusInfo {
    return buildStatusInfo(this.#state);
  }

  /**
   * The Instance record with credentials redacted (see `redactInstance`); its `status` is the live
   * status.
   */
  getInstance(): RedactedInstance {
    return { ...redactInstance(this.#state.instance), status: this.#state.status };
  }

  /**
   * A health snapshot: the seed's fields (status, instanceId, channelType, name, uptimeMs,
   * connectedAt, lastError, consecutiveFailures, senderQueueDepth) plus reconnectAttempt,
   * restartCount, lastRestartClass/Reason, lastProbe, invalidTransitions, stopped and the `worker`
   * section supplied by the runtime (`null` when not given).
   */
  healthSnapshot(extra: HealthExtra = {}): HealthSnapshot {
    return buildHealthSnapshot(this.#state, extra);
  }

  /**
   * Renders any reason as a credential-free string (what status, health and events show), or null
   * for null/undefined. For the runtime to scrub worker error messages before logging them.
   */
  redactReason(reason: unknown): string | null {
    return renderReason(reason, this.#state.secrets);
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
    if (this.#state.stoppedEmitted || this.#state.startedEmitted) return false;
    this.#state.startedEmitted = true;
    this.#state.log.debug('instance started');
    publishInstanceEvent(this.#state, 'started', () => ({ fresh: false, from: null, restartCount: this.#state.restartCount }));
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
    if (ignoredIfStopped(this.#state, 'notifyStarting')) return false;
    const from = this.#state.status;
    this.#state.status = 'starting';
    this.#state.connectedAt = null;
    this.#state.consecutiveFailures = 0;
    this.#state.reconnectAttempt = 0;
    const why = this.redactReason(reason);
    this.#state.log.info({ from, reason: why, restartCount: this.#state.restartCount }, 'instance fresh start');
    publishInstanceEvent(this.#state, 'started', () => ({ fresh: true, from, restartCount: this.#state.restartCount, reason: why }));
    return true;
  }

  /** The channel is connecting: → `connecting`; emits `connecting` on a transition. */
  notifyConnecting(): boolean {
    if (ignoredIfStopped(this.#state, 'notifyConnecting')) return false;
    const from = this.#state.status;
    const kind = moveStatus(this.#state, 'connecting', 'notifyConnecting');
    if (kind === 'invalid') return false;
    if (kind === 'transition') publishInstanceEvent(this.#state, 'connecting', () => ({ from }));
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
    if (ignoredIfStopped(this.#state, 'notifyConnected')) return false;
    const from = this.#state.status;
    const kind = moveStatus(this.#state, 'connected', 'notifyConnected');
    if (kind === 'invalid') return false;
    if (kind !== 'transition') this.#state.consecutiveFailures = 0;
    this.#state.reconnectAttempt = 0;
    this.#state.lastError = null;
    if (kind === 'transition') {
      const connectedAt = Date.now();
      this.#state.connectedAt = connectedAt;
      publishInstanceEvent(this.#state, 'connected', () => ({
        ...(scrubValue(meta, this.#state.secrets) as Record<string, unknown>),
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
    if (ignoredIfStopped(this.#state, 'notifyDisconnected')) return false;
    const from = this.#state.status;
    const why = this.redactReason(reason);
    const kind = moveStatus(this.#state, 'disconnected', 'notifyDisconnected', why);
    if (kind === 'invalid') return false;
    this.#state.lastError = why;
    if (kind === 'transition') publishInstanceEvent(this.#state, 'disconnected', () => ({ from, reason: why }));
    return true;
  }

  /**
   * A delivery or operation failed: consecutiveFailures += 1, lastError = reason (after a stable
   * period, connected for `stableAfterMs` since the connection opened and since the last failure,
   * the count starts over first). When the count reaches `maxConsecutiveFailures` the status moves
   * to `error` (emitting `error` with trigger `max_consecutive_failures`, once, on entry).
   */
  notifyFailure(reason: unknown): boolean {
    if (ignoredIfStopped(this.#state, 'notifyFailure')) return false;
    const why = this.redactReason(reason);
    countFailure(this.#state, why);
    if (this.#state.consecutiveFailures >= this.#state.maxConsecutiveFailures && this.#state.status !== 'error') {
      enterError(this.#state, why, 'max_consecutive_failures', 'notifyFailure');
    }
    return true;
  }

  /** An operation succeeded: consecutiveFailures → 0. The status is unchanged (`error` stays). */
  notifySuccess(): boolean {
    if (ignoredIfStopped(this.#state, 'notifySuccess')) return false;
    this.#state.consecutiveFailures = 0;
    return true;
  }

  /**
   * A fatal error: → `error` (allowed from every status), lastError = reason. Emits `error` with
   * `class: 'fatal'` on entry; in `error` already it only updates lastError.
   */
  notifyError(reason: unknown): boolean {
    if (ignoredIfStopped(this.#state, 'notifyError')) return false;
    const why = this.redactReason(reason);
    this.#state.lastError = why;
    if (this.#state.status !== 'error') enterError(this.#state, why, 'fatal', 'notifyError');
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
    if (ignoredIfStopped(this.#state, 'notifyReconnectAttempt')) return false;
    const why = this.redactReason(reason);
    if (attempt === 0) {
      this.#state.reconnectAttempt = 0;
      if (why !== null) this.#state.lastError = why;
      return true;
    }
    const from = this.#state.status;
    const kind = moveStatus(this.#state, 'connecting', 'notifyReconnectAttempt', why);
    if (kind === 'invalid') return false;
    this.#state.reconnectAttempt = attempt;
    if (why !== null) this.#state.lastError = why;
    if (kind === 'transition') publishInstanceEvent(this.#state, 'connecting', () => ({ from }));
    publishInstanceEvent(this.#state, 'reconnect', () => ({ phase: 'attempt', attempt, reason: why, class: 'recoverable' }));
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
    if (ignoredIfStopped(this.#state, 'notifyReconnect')) return false;
    const why = this.redactReason(reason);
    if (phase !== 'scheduled' && why !== null) this.#state.lastError = why;
    const cls: FailureClass =
      phase === 'failed' ? (isFailureClass(failureClass) ? failureClass : classifyError(reason)) : 'recoverable';
    if (phase === 'exhausted') this.#state.log.warn({ attempt, reason: why }, 'reconnect exhausted');
    publishInstanceEvent(this.#state, 'reconnect', () => ({
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
    if (ignoredIfStopped(this.#state, 'notifyQuarantined') || this.#state.quarantined === quarantined) return false;
    this.#state.quarantined = quarantined;
    const why = this.redactReason(reason);
    this.#state.log[quarantined ? 'warn' : 'info']({ reason: why }, quarantined ? 'instance quarantined' : 'instance released from quarantine');
    publishInstanceEvent(this.#state, 'quarantined', () => ({ quarantined, reason: why }));
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
    if (ignoredIfStopped(this.#state, 'notifyRestartMarker')) return false;
    const why = this.redactReason(reason);
    this.#state.restartCount += 1;
    this.#state.lastRestartClass = cls;
    this.#state.lastRestartReason = why;
    const extra: Record<string, unknown> = {};
    if (details.kind !== undefined) extra.kind = details.kind;
    if (details.attempt !== undefined) extra.attempt = details.attempt;
    if (details.delayMs !== undefined) extra.delayMs = details.delayMs;
    this.#state.log.info({ class: cls, reason: why, restartCount: this.#state.restartCount, ...extra }, 'instance restart marker');
    publishInstanceEvent(this.#state, 'restart', () => ({ class: cls, reason: why, restartCount: this.#state.restartCount, ...extra }));
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
    if (ignoredIfStopped(this.#state, 'notifyProbe')) return false;
    const why = outcome === 'ok' ? null : this.redactReason(reason);
    this.#state.lastProbe = { outcome, at: Date.now(), latencyMs, reason: why };
    const cls: FailureClass | undefined =
      outcome === 'ok'
        ? undefined
        : isFailureClass(failureClass)
          ? failureClass
          : outcome === 'degraded'
            ? 'degraded'
            : classifyError(reason);
    publishInstanceEvent(this.#state, 'probe', () => ({ outcome, latencyMs, reason: why, ...(cls ? { class: cls } : {}) }));
    return true;
  }

  /**
   * Stops the server: emits `stopped` exactly once, whatever the path (explicit stop, supervisor
   * shutdown, escalation). Returns true for the call that stopped it, false afterwards. Later
   * notifications are ignored and counted; queries keep working.
   */
  stop(reason?: unknown): boolean {
    if (this.#state.stoppedEmitted) return false;
    this.#state.stoppedEmitted = true;
    const why = this.redactReason(reason);
    const uptimeMs = Math.max(0, Date.now() - this.#state.startedAt);
    this.#state.log.debug({ reason: why }, 'instance stopped');
    publishInstanceEvent(this.#state, 'stopped', () => ({ status: this.#state.status, reason: why, restartCount: this.#state.restartCount, uptimeMs }));
    return true;
  }
}
