/**
 * The public types of an {@link InstanceServer}: restart markers, reconnect phases, probes, the
 * worker section of health, the status map, the health snapshot and the server's options.
 * `server.ts` re-exports them.
 *
 * @packageDocumentation
 */
import type { Logger } from 'pino';
import type { InstanceStatus } from './state-machine.js';

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
