import { z } from 'zod';

/**
 * Restart delay policy: bounded exponential backoff with symmetric jitter.
 *
 * For restart attempt `n` (0 for the first restart after a run that lasted):
 *
 * ```
 * raw   = min(maxDelayMs, initialDelayMs × 2^n)
 * delay = clamp(raw × (1 + jitter × (2u − 1)), floor, maxDelayMs)     u ∈ [0, 1) from `random`
 * floor = initialDelayMs × (1 − jitter)
 * ```
 *
 * So a delay never exceeds `maxDelayMs` and never goes below `initialDelayMs × (1 − jitter)`
 * (with `initialDelayMs: 0`, restarts are immediate as in OTP).
 */
export interface BackoffOptions {
  /** Delay before the first restart, ms. Default 100. `0` restarts at once (OTP behaviour). */
  initialDelayMs?: number;
  /** Upper bound of any delay, ms. Default 5000. */
  maxDelayMs?: number;
  /** Jitter ratio in [0, 1]: each delay is spread ±jitter around its nominal value. Default 0.2. */
  jitter?: number;
  /** Random source returning [0, 1); default `Math.random`. Pass a seeded one in tests. */
  random?: () => number;
}

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

/** Resolved backoff policy. */
export type BackoffPolicy = Required<BackoffOptions>;

/** Fills defaults (validated input assumed). */
export function resolveBackoff(opts: z.output<typeof backoffOptionsSchema>): BackoffPolicy {
  return { ...opts, random: opts.random ?? Math.random };
}

/** The lowest delay the policy can produce. */
export function backoffFloor(p: Pick<BackoffPolicy, 'initialDelayMs' | 'jitter'>): number {
  return p.initialDelayMs * (1 - p.jitter);
}

/** Delay in ms before restart attempt `attempt` (0-based). See {@link BackoffOptions}. */
export function backoffDelay(p: BackoffPolicy, attempt: number): number {
  if (p.initialDelayMs === 0) return 0;
  // 2^attempt overflows to Infinity past ~1024; min() keeps it bounded.
  const raw = Math.min(p.maxDelayMs, p.initialDelayMs * 2 ** Math.max(0, attempt));
  const u = p.random();
  const jittered = raw * (1 + p.jitter * (2 * u - 1));
  return Math.min(p.maxDelayMs, Math.max(backoffFloor(p), jittered));
}

/**
 * Deterministic PRNG (mulberry32) for seeded tests and reproducible benchmarks.
 * Returns a function yielding numbers in [0, 1).
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
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
