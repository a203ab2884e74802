/**
 * Backoff math shared by both threads: the supervisor's restart delays and an instance's
 * reconnect delays (the reconnect policy travels in the boot message and the worker applies it
 * with {@link backoffDelay}). Part of the wire layer: no dependencies.
 *
 * @packageDocumentation
 */

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

/** Resolved backoff policy. */
export type BackoffPolicy = Required<BackoffOptions>;

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

