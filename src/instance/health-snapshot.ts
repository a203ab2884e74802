/**
 * The read-only views of an instance server's state: the status map and the health snapshot
 * (credential-free), and the sender queue depth reported in health.
 *
 * @packageDocumentation
 */
import { renderReason, scrubValue } from './record.js';
import type { ServerState } from './server-state.js';
import type { HealthExtra, HealthSnapshot, InstanceStatusInfo, WorkerHealth } from './server-types.js';

/** The status map of {@link InstanceServer.status}. */
export function buildStatusInfo(state: ServerState): InstanceStatusInfo {
  return {
    status: state.status,
    instanceId: state.instance.id,
    channelType: state.instance.channelType,
    name: state.instance.name,
    restartCount: state.restartCount,
    reconnectAttempt: state.reconnectAttempt,
    consecutiveFailures: state.consecutiveFailures,
    connectedAt: state.connectedAt,
    lastError: state.lastError,
    lastRestartClass: state.lastRestartClass,
    lastRestartReason: state.lastRestartReason,
    startedAt: state.startedAt,
    invalidTransitions: state.invalidTransitions,
    stopped: state.stoppedEmitted,
    ignoredAfterStop: state.ignoredAfterStop,
  };
}

/** The health snapshot of {@link InstanceServer.healthSnapshot}; the `worker` section is a scrubbed copy. */
export function buildHealthSnapshot(state: ServerState, extra: HealthExtra): HealthSnapshot {
  return {
    status: state.status,
    instanceId: state.instance.id,
    channelType: state.instance.channelType,
    name: state.instance.name,
    uptimeMs: Math.max(0, Date.now() - state.startedAt),
    connectedAt: state.connectedAt,
    lastError: state.lastError,
    consecutiveFailures: state.consecutiveFailures,
    senderQueueDepth: senderQueueDepth(state),
    reconnectAttempt: state.reconnectAttempt,
    restartCount: state.restartCount,
    lastRestartClass: state.lastRestartClass,
    lastRestartReason: state.lastRestartReason,
    lastProbe: state.lastProbe,
    invalidTransitions: state.invalidTransitions,
    stopped: state.stoppedEmitted,
    quarantined: state.quarantined,
    worker: extra.worker ? (scrubValue({ ...extra.worker }, state.secrets) as WorkerHealth) : null,
  };
}

/** The `queueDepth` option's answer; 0 when absent, not a finite non-negative number, or when it throws. */
export function senderQueueDepth(state: ServerState): number {
  if (!state.queueDepth) return 0;
  try {
    const n = state.queueDepth();
    return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? n : 0;
  } catch (err) {
    state.log.debug({ err: renderReason(err, state.secrets) }, 'queueDepth threw; reporting 0');
    return 0;
  }
}
