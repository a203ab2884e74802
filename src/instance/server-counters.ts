/**
 * The counters of an instance server that need more than an increment: notifications ignored
 * after stop, and consecutive failures (which start over after a stable connection).
 *
 * @packageDocumentation
 */
import type { ServerState } from './server-state.js';

/** True (and counted and logged) when the server is stopped and the notification `via` must be ignored. */
export function ignoredIfStopped(state: ServerState, via: string): boolean {
  if (!state.stoppedEmitted) return false;
  state.ignoredAfterStop += 1;
  state.log.debug({ via }, 'notification after stop ignored');
  return true;
}

/**
 * Counts one failure with reason `why`: after a stable period (connected for `stableAfterMs`
 * since the connection opened and since the last failure) the count starts over first; then
 * consecutiveFailures += 1 and lastError = `why`.
 */
export function countFailure(state: ServerState, why: string | null): void {
  const now = Date.now();
  if (state.status === 'connected' && state.connectedAt !== null && now - Math.max(state.connectedAt, state.lastFailureAt ?? 0) >= state.stableAfterMs) {
    state.consecutiveFailures = 0;
  }
  state.lastFailureAt = now;
  state.consecutiveFailures += 1;
  state.lastError = why;
}
