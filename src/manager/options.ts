/**
 * The option schemas of an instance manager and of its methods (`get`, `attach`, `stop`,
 * `close`): what the facade validates its arguments with.
 *
 * @packageDocumentation
 */
import { z } from 'zod';
import { clusterOptionsSchema } from '../cluster/options.js';
import { backoffOptionsSchema } from '../supervisor/backoff.js';
import { loggerSchema } from '../validate.js';
import { MAX_TIMER_MS } from '../wire/timers.js';
import type { Storage } from './storage.js';
import type { AgentClass } from './types.js';

const isAgentClass = (v: unknown): boolean => {
  if (typeof v !== 'function') return false;
  const proto = (v as { prototype?: Record<string, unknown> }).prototype;
  return typeof proto?.handle === 'function' && typeof proto.snapshot === 'function';
};

const isStorage = (v: unknown): boolean =>
  v === null ||
  (typeof v === 'object' &&
    typeof (v as Storage).get === 'function' &&
    typeof (v as Storage).put === 'function' &&
    typeof (v as Storage).delete === 'function');

export const optionsSchema = z
  .object({
    name: z.string().min(1).max(200),
    agent: z.custom<AgentClass>(isAgentClass, 'expected an agent class with handle() and snapshot() methods'),
    idleTimeoutMs: z.number().positive().or(z.literal(Infinity)).default(Infinity),
    touchOnCall: z.boolean().default(true),
    storage: z.custom<Storage | null>(isStorage, 'expected a Storage (get, put, delete) or null').optional(),
    partitions: z.number().int().min(1).max(1024).default(1),
    maxResident: z.number().int().min(1).or(z.literal(Infinity)).default(Infinity),
    agentOptions: z.unknown().optional(),
    restartIntensity: z
      .object({
        maxRestarts: z.number().int().min(0).default(3),
        periodMs: z.number().positive().default(5000),
        quarantineMs: z.number().min(0).default(30_000),
      })
      .strict()
      .default({ maxRestarts: 3, periodMs: 5000, quarantineMs: 30_000 }),
    hibernateRetry: backoffOptionsSchema.default({ initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.2 }),
    logger: loggerSchema.optional(),
    cluster: clusterOptionsSchema.optional(),
    remoteCallTimeoutMs: z.number().int().min(1).max(MAX_TIMER_MS).default(5000),
  })
  .strict();

/** The manager's options once validated (defaults filled in). */
export type ParsedOptions = z.output<typeof optionsSchema>;

export const getOptionsSchema = z.object({ initialState: z.unknown().optional() }).strict();
export const attachOptionsSchema = z
  .object({
    initialState: z.unknown().optional(),
    signal: z.custom<AbortSignal>((v) => v instanceof AbortSignal, 'expected an AbortSignal').optional(),
  })
  .strict();
export const stopOptionsSchema = z.object({ discardUnsaved: z.boolean().default(false) }).strict();
