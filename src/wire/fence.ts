/**
 * The lease deadline a cluster node shares with its instance workers (cluster mode): one float in
 * a `SharedArrayBuffer`, a time in ms on the process's monotonic clock (`clock.ts`, the same scale
 * in every thread). The main thread moves it forward at each
 * lease renewal and sets it to 0 when it fences itself. A worker checks it before every poll and
 * every send: past it, the instance neither polls nor sends, so a process resumed after a pause
 * (`SIGSTOP`) does not act on a lease that may have passed to another node, whatever its threads
 * run first.
 *
 * Part of the wire layer: no dependencies.
 *
 * @packageDocumentation
 */
import { monotonicMs } from './clock.js';

/** Now, on the deadline's scale. */
export const fenceNow: () => number = monotonicMs;

/** `at`, a time on this thread's `performance.now()` scale, on the deadline's scale. */
export function fenceTime(at: number): number {
  return monotonicMs() + (at - performance.now());
}

/** A view of a fence buffer. */
export function fenceView(buffer: SharedArrayBuffer): Float64Array {
  return new Float64Array(buffer, 0, 1);
}

/** Whether the deadline in `view` has passed. */
export function isFenced(view: Float64Array): boolean {
  return fenceNow() > (view[0] as number);
}
