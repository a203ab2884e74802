/**
 * Zod schemas of the outbound queue's options and of the send options, and the cheap hot-path
 * check of send options.
 *
 * @packageDocumentation
 */
import { z } from 'zod';
import { DeliveryFeed } from './feed.js';
import type { EnqueueOptions } from './types.js';

const retrySchema = z
  .object({
    maxAttempts: z.number().int().min(1).default(5),
    initialDelayMs: z.number().finite().min(0).default(100),
    maxDelayMs: z.number().finite().min(0).default(5000),
    jitter: z.number().min(0).max(1).default(0.2),
    random: z.custom<() => number>((v) => typeof v === 'function', 'expected a function').optional(),
  })
  .strict()
  .refine((r) => r.maxDelayMs >= r.initialDelayMs, { message: 'maxDelayMs must be >= initialDelayMs', path: ['maxDelayMs'] });

const ratio = z.number().gt(0).max(1);

const pressureSchema = z
  .object({
    warn: ratio.default(0.7),
    degraded: ratio.default(0.85),
    shed: ratio.default(0.95),
    hysteresis: z.number().min(0).max(0.5).default(0.05),
  })
  .strict()
  .refine((p) => p.warn < p.degraded && p.degraded < p.shed, { message: 'thresholds must increase: warn < degraded < shed', path: ['degraded'] })
  .refine((p) => p.hysteresis < p.warn, { message: 'hysteresis must be below warn', path: ['hysteresis'] });

const fn = <T>() => z.custom<T>((v) => typeof v === 'function', 'expected a function');

/** Zod schema of {@link OutboundQueueOptions}. */
export const outboundQueueOptionsSchema = z
  .object({
    instanceId: z.string().min(1),
    capacity: z.number().int().min(1).default(1000),
    dedupeCacheSize: z.number().int().min(0).default(1000),
    retry: retrySchema.default({ maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.2 }),
    maxCrashes: z.union([z.number().int().min(1), z.literal(Infinity)]).default(3),
    pressure: pressureSchema.default({ warn: 0.7, degraded: 0.85, shed: 0.95, hysteresis: 0.05 }),
    onReady: fn<() => void>().optional(),
    now: fn<() => number>().optional(),
    redact: fn<(text: string) => string>().optional(),
    feed: z.instanceof(DeliveryFeed).optional(),
  })
  .strict();

const keySchema = z.union([z.string().min(1).max(1024), z.number().finite(), z.null()]);

/** Zod schema of {@link EnqueueOptions}. Unknown keys are refused (they are usually typos). */
export const enqueueOptionsSchema = z.strictObject({
  idempotencyKey: keySchema.optional(),
  signal: z.instanceof(AbortSignal).optional(),
  waitForCapacity: z.boolean().optional(),
});

/**
 * Zod schema of {@link EnqueueManyOptions} (`idempotencyKey` is refused: each message takes its
 * own). Unknown keys are refused too.
 */
export const enqueueManyOptionsSchema = z.strictObject({
  idempotencyKey: z.never({ error: 'not an option of a batch: each message takes its own key (its id)' }).optional(),
  signal: z.instanceof(AbortSignal).optional(),
  waitForCapacity: z.boolean().optional(),
});

/** The cheap check of the hot path; anything it does not accept goes through the zod schema. */
export function quickValid(o: unknown): o is EnqueueOptions {
  if (typeof o !== 'object' || o === null) return false;
  for (const key in o) if (key !== 'idempotencyKey' && key !== 'signal' && key !== 'waitForCapacity') return false;
  const { idempotencyKey: k, signal, waitForCapacity: w } = o as EnqueueOptions;
  return (
    (k === undefined || k === null || (typeof k === 'string' && k.length > 0 && k.length <= 1024) || (typeof k === 'number' && Number.isFinite(k))) &&
    (signal === undefined || signal instanceof AbortSignal) &&
    (w === undefined || typeof w === 'boolean')
  );
}
