/**
 * The main thread's zod checks of what an instance worker posts on its data port: lifecycle,
 * data and log notices, and acks in their `results` form (the run form is the hot path and is
 * checked by hand, see `src/wire/validate.ts`). The messages themselves are defined by the wire
 * layer (`src/wire/protocol.ts`); these schemas must accept exactly those types (checked below at
 * compile time). A malformed message is classified, logged and counted, never a crash.
 */
import { z } from 'zod';
import type { AckResult, LifecycleBody } from '../wire/protocol.js';

const failureClass = z.enum(['recoverable', 'fatal', 'degraded']);
const reason = z.string().max(4096);
const seqSchema = z.number().int().min(0);

/** Zod schema of one {@link AckResult} as it crosses the thread boundary. */
export const ackResultSchema = z.union([
  z.object({ seq: seqSchema, ok: z.literal(true), receipt: z.unknown() }),
  z.object({ seq: seqSchema, ok: z.literal(false), unsent: z.literal(true) }),
  z.object({
    seq: seqSchema,
    ok: z.literal(false),
    error: z.object({ class: failureClass, code: z.string().max(256).optional(), reason, retryAfterMs: z.number().finite().min(0).optional() }),
  }),
]);

/**
 * Zod schema of one notice from an instance worker (everything but acks). Its instance number
 * `i` is checked before (see the runtime's port listener), then stripped.
 */
export const noticeSchema = z.discriminatedUnion('t', [
  z.object({
    t: z.literal('status'),
    status: z.enum(['connecting', 'connected', 'disconnected']),
    reason: reason.optional(),
    meta: z.record(z.string(), z.unknown()).optional(),
  }),
  z.object({
    t: z.literal('reconnect'),
    phase: z.enum(['scheduled', 'attempt', 'failed', 'exhausted']),
    attempt: z.number().int().min(0),
    reason: reason.optional(),
    delayMs: z.number().min(0).optional(),
    class: failureClass.optional(),
  }),
  z.object({
    t: z.literal('probe'),
    outcome: z.enum(['ok', 'degraded', 'failed']),
    latencyMs: z.number().min(0),
    reason: reason.optional(),
    class: failureClass.optional(),
  }),
  z.object({ t: z.literal('failure'), op: z.string(), reason, class: failureClass }),
  z.object({ t: z.literal('success'), op: z.string() }),
  z.object({ t: z.literal('fatal'), reason, code: z.string().optional() }),
  z.object({ t: z.literal('fault'), reason, origin: z.enum(['uncaught', 'rejection']) }),
  z.object({ t: z.literal('inbound'), messages: z.array(z.unknown()), n: z.number().int().min(0).optional(), cursor: z.unknown().optional() }),
  z.object({
    t: z.literal('log'),
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error']),
    msg: z.string(),
    obj: z.record(z.string(), z.unknown()).optional(),
  }),
]);

/** Zod schema of the `results` form of an acks message. */
export const acksSchema = z.object({ t: z.literal('acks'), results: z.array(ackResultSchema) });

// The schemas and the wire types must not drift apart: each must accept what the other describes.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const noticesMatch: Same<z.infer<typeof noticeSchema>, LifecycleBody> = true;
const acksMatch: Same<z.infer<typeof ackResultSchema>, AckResult> = true;
void noticesMatch;
void acksMatch;
