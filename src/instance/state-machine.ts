/**
 * The instance status machine: the five statuses of the Elixir original and an explicit transition
 * table. The Elixir `InstanceServer` draws a diagram but enforces nothing (any notification applies
 * from any state); threadvisor enforces the table below. A request outside the table is rejected by
 * `InstanceServer` (state unchanged, counted, logged and emitted as `instance:invalid_transition`),
 * never thrown.
 *
 * ```text
 *   starting ──► connecting ──► connected
 *                    │   ▲          ▲ │
 *                    │   │          │ ▼
 *                    └───┴──► disconnected
 *   any ──► error             error ──► starting (explicit fresh start only)
 *   any ──► starting (fresh start after a worker restart / restartInstance)
 * ```
 *
 * @packageDocumentation
 */

/** Every instance status, in lifecycle order. */
export const INSTANCE_STATUSES = ['starting', 'connecting', 'connected', 'disconnected', 'error'] as const;

/**
 * Lifecycle status of an instance.
 *
 * - `starting`: the instance (or a fresh run of it after a restart) is being brought up.
 * - `connecting`: the channel is (re)connecting to its platform.
 * - `connected`: the channel is up.
 * - `disconnected`: the connection was lost (or degraded); a reconnect may follow.
 * - `error`: too many consecutive failures or a fatal error; sticky until a fresh start.
 */
export type InstanceStatus = (typeof INSTANCE_STATUSES)[number];

/**
 * The transition table: from-status → the statuses it may move to. Same-state requests are not
 * listed: they are accepted as no-ops (see {@link transitionKind}).
 *
 * Edges and the reasoning behind the non-obvious ones:
 * - `starting → connecting`: the channel begins to connect. There is deliberately **no**
 *   `starting → connected` nor `starting → disconnected`: the runtime reports `connecting` first,
 *   so every connection attempt is observable (one `connecting` event per attempt series).
 * - `connecting → connected | disconnected`: the attempt succeeded or failed.
 * - `connected → disconnected`: the connection was lost (probe failure, socket close).
 *   There is deliberately **no** `connected → connecting`: a lost connection must be reported as
 *   `disconnected` first, so every outage produces a `disconnected` event and `connectedAt` stays
 *   meaningful; the reconnect loop then goes `disconnected → connecting`.
 * - `disconnected → connecting`: a reconnect attempt starts.
 * - `disconnected → connected`: the channel recovered by itself (e.g. a successful probe while
 *   degraded) — the `⇄` of the original diagram.
 * - `* → error`: any live status may fail (max consecutive failures, fatal error).
 * - `connecting | connected | disconnected → starting`: a fresh start after the worker was
 *   restarted (crash, reconnect exhaustion, `restartInstance`). A worker restart while connected
 *   goes back through `starting`, never straight to `connecting`.
 * - `error → starting` is the **only** way out of `error`: an explicit fresh start (restart after
 *   `recoverAfterMs`, or `restartInstance`). Unlike the Elixir original, a stray `connected` or
 *   `disconnected` does not silently leave `error`.
 */
export const TRANSITIONS: Readonly<Record<InstanceStatus, readonly InstanceStatus[]>> = Object.freeze({
  starting: Object.freeze(['connecting', 'error'] as const),
  connecting: Object.freeze(['connected', 'disconnected', 'error', 'starting'] as const),
  connected: Object.freeze(['disconnected', 'error', 'starting'] as const),
  disconnected: Object.freeze(['connecting', 'connected', 'error', 'starting'] as const),
  error: Object.freeze(['starting'] as const),
});

/**
 * What a status request from `from` to `to` amounts to:
 * - `transition`: an edge of {@link TRANSITIONS}; the status changes and an event is emitted.
 * - `noop`: `from === to` (e.g. `connected → connected` when a probe re-notifies). Not an error:
 *   the status stays, the notification's counter effects still apply, no status event fires.
 * - `invalid`: not in the table; rejected.
 */
export type TransitionKind = 'transition' | 'noop' | 'invalid';

/** True when `value` is one of the {@link INSTANCE_STATUSES}. */
export function isInstanceStatus(value: unknown): value is InstanceStatus {
  return typeof value === 'string' && (INSTANCE_STATUSES as readonly string[]).includes(value);
}

/** Classifies a status request; see {@link TransitionKind}. */
export function transitionKind(from: InstanceStatus, to: InstanceStatus): TransitionKind {
  if (from === to) return 'noop';
  return TRANSITIONS[from].includes(to) ? 'transition' : 'invalid';
}

/**
 * True when a request from `from` to `to` is accepted: an edge of {@link TRANSITIONS}, or a
 * same-state no-op.
 */
export function canTransition(from: InstanceStatus, to: InstanceStatus): boolean {
  return transitionKind(from, to) !== 'invalid';
}
