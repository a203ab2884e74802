/**
 * Child specs as a supervisor accepts them: validation with defaults filled in, and the check
 * that a `start` resolved with a {@link RunningChild} (and what it resolved with instead).
 *
 * @packageDocumentation
 */
import { z } from 'zod';
import { parseConfig } from '../validate.js';
import { MAX_TIMER_MS } from '../wire/timers.js';
import type { ChildSpec, ChildType, RestartType, RunningChild, Shutdown } from './types.js';

/** Largest timer delay Node accepts (a larger one fires after 1 ms). */
const shutdownSchema = z.union([z.number().int().min(0).max(MAX_TIMER_MS), z.literal('brutal_kill'), z.literal('infinity')]);

/** A child spec whose `start` may resolve `undefined` (ignore): what the supervisor accepts. */
export type AnyChildSpec = ChildSpec<RunningChild | undefined>;

// Strict, like the supervisor options: an unknown field (a typo, or an OTP key this supervisor
// does not implement, such as `significant`) is an error, not silently dropped.
const childSpecSchema = z
  .object({
    id: z.string().min(1),
    start: z.custom<AnyChildSpec['start']>((v) => typeof v === 'function', 'expected a start function'),
    restart: z.enum(['permanent', 'transient', 'temporary']).default('permanent'),
    shutdown: shutdownSchema.optional(),
    type: z.enum(['worker', 'supervisor']).default('worker'),
  })
  .strict();

/** A validated child spec with defaults filled in. */
export interface ResolvedSpec {
  readonly id: string;
  readonly start: AnyChildSpec['start'];
  readonly restart: RestartType;
  readonly shutdown: Shutdown;
  readonly type: ChildType;
}

/**
 * Validates a child spec (strict: unknown fields are an error) and fills in its defaults; the
 * shutdown budget defaults to `'infinity'` for a supervisor and 5000 ms for a worker.
 *
 * @throws {@link InvalidConfigError} on a bad spec.
 */
export function resolveSpec(input: unknown): ResolvedSpec {
  const id = typeof input === 'object' && input !== null ? (input as { id?: unknown }).id : undefined;
  const s = parseConfig(typeof id === 'string' && id !== '' ? `child spec ${id}` : 'child spec', childSpecSchema, input);
  return {
    id: s.id,
    start: s.start,
    restart: s.restart,
    type: s.type,
    shutdown: s.shutdown ?? (s.type === 'supervisor' ? 'infinity' : 5000),
  };
}

/** True if `value` has the shape of a {@link RunningChild}. */
export function isRunningChild(value: unknown): value is RunningChild {
  if ((typeof value !== 'object' && typeof value !== 'function') || value === null) return false;
  const v = value as { exited?: unknown; shutdown?: unknown; doomed?: unknown };
  const isPromise = (p: unknown): boolean => typeof (p as { then?: unknown } | undefined)?.then === 'function';
  return isPromise(v.exited) && typeof v.shutdown === 'function' && (v.doomed === undefined || isPromise(v.doomed));
}

/** What a `start` resolved with instead of a {@link RunningChild}, for its start failure. */
export function describeNonChild(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object' || typeof value === 'function') {
    const v = value as { exited?: unknown; shutdown?: unknown; doomed?: unknown };
    const missing: string[] = [];
    if (typeof (v.exited as { then?: unknown } | undefined)?.then !== 'function') missing.push('an exited promise');
    if (typeof v.shutdown !== 'function') missing.push('a shutdown function');
    if (missing.length === 0) return `${typeof value === 'function' ? 'a function' : 'an object'} whose doomed is not a promise`;
    return `${typeof value === 'function' ? 'a function' : 'an object'} without ${missing.join(' or ')}`;
  }
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return `${typeof value} ${text.length > 60 ? `${text.slice(0, 60)}...` : text}`;
}
