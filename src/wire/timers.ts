/**
 * Node's largest timer delay: 2^31 − 1 ms (about 24.8 days). A larger delay fires after 1 ms, so
 * every budget option is capped at it and every computed delay is clamped to it. Part of the
 * wire layer (both threads arm timers): no dependencies.
 *
 * @packageDocumentation
 */

/** The largest delay `setTimeout` honours, ms. */
export const MAX_TIMER_MS = 2_147_483_647;

/** `ms` clamped to what `setTimeout` honours (0 … {@link MAX_TIMER_MS}). */
export function timerDelay(ms: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(0, ms));
}
