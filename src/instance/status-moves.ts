/**
 * Applying a status request to an instance server's state through the transition table
 * (`./state-machine.ts`): a real transition, a same-state no-op, or a rejection that is counted,
 * logged and published; and the entry into `error`.
 *
 * @packageDocumentation
 */
import { transitionKind, type InstanceStatus, type TransitionKind } from './state-machine.js';
import { publishInstanceEvent } from './server-events.js';
import type { ServerState } from './server-state.js';

/** Applies a status request; on `invalid` counts, logs and emits, and leaves the state alone. */
export function moveStatus(state: ServerState, to: InstanceStatus, via: string, reason: string | null = null): TransitionKind {
  const from = state.status;
  const kind = transitionKind(from, to);
  if (kind === 'invalid') {
    state.invalidTransitions += 1;
    state.log.warn({ from, to, via, reason }, 'invalid instance status transition rejected');
    publishInstanceEvent(state, 'invalid_transition', () => ({ from, to, via, reason }));
    return kind;
  }
  if (kind === 'transition') {
    state.status = to;
    state.log.debug({ from, to, via }, 'instance status transition');
  }
  return kind;
}

/** Moves to `error`, then logs and emits `error` with its trigger (and `class: 'fatal'` for a fatal one). */
export function enterError(
  state: ServerState,
  why: string | null,
  trigger: 'fatal' | 'max_consecutive_failures',
  via: string,
): void {
  const from = state.status;
  moveStatus(state, 'error', via, why);
  state.log.warn({ from, reason: why, trigger, consecutiveFailures: state.consecutiveFailures }, 'instance entered error');
  publishInstanceEvent(state, 'error', () => ({
    from,
    reason: why,
    consecutiveFailures: state.consecutiveFailures,
    trigger,
    ...(trigger === 'fatal' ? { class: 'fatal' } : {}),
  }));
}
