/**
 * zod schemas at the edges of the worker host: the options a user passes to
 * {@link WorkerHost.start}, and the heartbeat messages a worker sends back to the main thread.
 * Messages from a worker are untrusted input: they are parsed with `safeParse` and a bad one is
 * counted, never thrown.
 *
 * @packageDocumentation
 */
import { SHARE_ENV } from 'node:worker_threads';
import { z } from 'zod';
import { loggerSchema } from '../validate.js';
import type { WorkerHeartbeatMessage } from '../wire/host.js';
import { MAX_TIMER_MS } from '../wire/timers.js';

const nonNegativeInt = z.number().int().nonnegative().max(MAX_TIMER_MS);
const positiveInt = z.number().int().positive().max(MAX_TIMER_MS);
const sizeMb = z.number().positive().finite();

/** Schema of `resourceLimits` (passed through to `new Worker`). */
export const resourceLimitsSchema = z.strictObject({
  maxOldGenerationSizeMb: sizeMb.optional(),
  maxYoungGenerationSizeMb: sizeMb.optional(),
  codeRangeSizeMb: sizeMb.optional(),
  stackSizeMb: sizeMb.optional(),
});

/** Schema of the `heartbeat` option: `false`, or interval and tolerance. */
export const heartbeatOptionsSchema = z.union([
  z.literal(false),
  z.strictObject({
    intervalMs: nonNegativeInt.optional(),
    maxMissed: positiveInt.optional(),
  }),
]);


const filenameSchema = z.union([z.string().min(1), z.instanceof(URL)], {
  error: 'expected a non-empty path or a URL',
});

const envSchema = z.union([
  z.custom<typeof SHARE_ENV>((value) => value === SHARE_ENV),
  z.record(z.string(), z.string()),
]);

/** Schema of {@link WorkerHostOptions}. Unknown keys are rejected (they are usually typos). */
export const workerHostOptionsSchema = z.strictObject({
  filename: filenameSchema,
  workerData: z.unknown().optional(),
  transferList: z.array(z.unknown()).optional(),
  resourceLimits: resourceLimitsSchema.optional(),
  heartbeat: heartbeatOptionsSchema.optional(),
  readyTimeoutMs: positiveInt.optional(),
  callTimeoutMs: positiveInt.optional(),
  name: z.string().min(1).optional(),
  logger: loggerSchema.optional(),
  env: envSchema.optional(),
  execArgv: z.array(z.string()).optional(),
  stdout: z.boolean().optional(),
  stderr: z.boolean().optional(),
});

/** Schema of a shutdown budget (`Shutdown` in `src/supervisor/types.ts`). */
export const shutdownSchema = z.union([nonNegativeInt, z.literal('brutal_kill'), z.literal('infinity')], {
  error: "expected a non-negative integer of milliseconds, 'brutal_kill' or 'infinity'",
});

/** Schema of a `ready` message from a worker. */
export const readyMessageSchema = z.strictObject({
  type: z.literal('ready'),
  version: positiveInt,
});

/** Schema of a `pong` message from a worker. */
export const pongMessageSchema = z.strictObject({
  type: z.literal('pong'),
  seq: positiveInt,
  elu: z.number().min(0).max(1),
  heapUsed: z.number().nonnegative().finite(),
});

/** Schema of a `dying` message from a worker. */
export const dyingMessageSchema = z.strictObject({
  type: z.literal('dying'),
  name: z.string().max(200),
  message: z.string().max(8192),
  stack: z.string().max(16384),
});

/** Schema of every message a worker may send on the heartbeat port. */
export const workerHeartbeatMessageSchema = z.discriminatedUnion('type', [readyMessageSchema, pongMessageSchema, dyingMessageSchema]);

// The schemas and the protocol's hand-written types must agree.
type _PongAgrees = z.infer<typeof workerHeartbeatMessageSchema> extends WorkerHeartbeatMessage ? true : never;
const _pongAgrees: _PongAgrees = true;
void _pongAgrees;

export { describeIssues, flattenIssues, parseConfig, type ConfigIssue } from '../validate.js';
