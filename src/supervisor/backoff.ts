import { z } from 'zod';

import type { BackoffPolicy } from '../wire/backoff.js';

export { backoffDelay, backoffFloor, seededRandom } from '../wire/backoff.js';
export type { BackoffOptions, BackoffPolicy } from '../wire/backoff.js';

/** Zod schema of {@link BackoffOptions}. */
export const backoffOptionsSchema = z
  .object({
    initialDelayMs: z.number().finite().min(0).default(100),
    maxDelayMs: z.number().finite().min(0).default(5000),
    jitter: z.number().min(0).max(1).default(0.2),
    random: z.custom<() => number>((v) => typeof v === 'function', 'expected a function').optional(),
  })
  .strict()
  .refine((o) => o.maxDelayMs >= o.initialDelayMs, {
    message: 'maxDelayMs must be >= initialDelayMs',
    path: ['maxDelayMs'],
  });

/** Fills defaults (validated input assumed). */
export function resolveBackoff(opts: z.output<typeof backoffOptionsSchema>): BackoffPolicy {
  return { ...opts, random: opts.random ?? Math.random };
}

/**
 * Restart intensity window (OTP `intensity`/`period`): records restarts and says when more
 * than `maxRestarts` happened within the last `periodMs`.
 */
export class IntensityWindow {
  readonly #stamps: number[] = [];
  constructor(
    readonly maxRestarts: number,
    readonly periodMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records one restart; returns true when the limit is now exceeded. */
  record(): boolean {
    const t = this.now();
    this.#stamps.push(t);
    this.#prune(t);
    return this.#stamps.length > this.maxRestarts;
  }

  /** Restarts counted in the current window. */
  count(): number {
    this.#prune(this.now());
    return this.#stamps.length;
  }

  /** Forgets every recorded restart. */
  reset(): void {
    this.#stamps.length = 0;
  }

  #prune(t: number): void {
    while (this.#stamps.length > 0 && t - (this.#stamps[0] as number) >= this.periodMs) this.#stamps.shift();
  }
}
