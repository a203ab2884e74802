/**
 * What crosses the boundary between the runtime (main thread) and an instance worker, besides
 * the WorkerHost's own heartbeat and control ports: the boot configuration (in `workerData`)
 * and the notices the worker posts on its data port. Notices are validated with zod on the main
 * thread; a malformed one is classified, logged and counted, never a crash.
 */
import type { MessagePort } from 'node:worker_threads';
import { z } from 'zod';
import { ackResultSchema, type AckResult } from './outbound.js';

/** Exit code with which an instance worker ends after its reconnect attempts are exhausted. */
export const EXIT_RECONNECT_EXHAUSTED = 75;

/** Reconnect policy of the worker's connect loop. */
export interface ReconnectPolicy {
  /** Attempts after the first failed connect before the worker gives up (and is restarted). */
  maxAttempts: number;
  /** Delay before the first reconnect attempt, ms. */
  baseMs: number;
  /** Upper bound of a reconnect delay, ms. */
  maxMs: number;
  /** ± jitter ratio. */
  jitter: number;
}

/** Timeout budgets of the channel callbacks, ms. */
export interface CallbackTimeouts {
  connectMs: number;
  disconnectMs: number;
  sendMs: number;
  pollMs: number;
  probeMs: number;
}

/** The boot configuration an instance worker receives in its `workerData`. */
export interface InstanceBoot {
  instance: { id: string; name: string; channelType: string; settings: Record<string, unknown>; credentials: Record<string, unknown> };
  /** URL (href) of the channel module. */
  channel: string;
  reconnect: ReconnectPolicy;
  /** Probe schedule: every `intervalMs` (0 = never), the first right after connect. */
  probe: { intervalMs: number };
  timeouts: CallbackTimeouts;
  /** Pause after an empty poll batch, ms. */
  pollIdleMs: number;
  /** The worker's end of the data channel (notices flow worker → main). */
  data: MessagePort;
  /** The last inbound cursor `onMessage` handled (given to the channel as `ctx.cursor`). */
  cursor?: unknown;
  /** Inbound batches the worker may have posted and not yet seen acknowledged (flow control); 0 or absent = no limit. */
  inboundWindow?: number;
}

/** Main → worker: inbound batches up to `upTo` (their `n`) were handled by `onMessage`. */
export interface InboundAck {
  t: 'inbound_ack';
  upTo: number;
}

const failureClass = z.enum(['recoverable', 'fatal', 'degraded']);
const reason = z.string().max(4096);

/** Zod schema of one notice from an instance worker. */
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
  z.object({ t: z.literal('inbound'), messages: z.array(z.unknown()), n: z.number().int().min(0).optional(), cursor: z.unknown().optional() }),
  z.object({
    t: z.literal('log'),
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error']),
    msg: z.string(),
    obj: z.record(z.string(), z.unknown()).optional(),
  }),
]);

/** One notice from an instance worker. */
export type Notice = z.infer<typeof noticeSchema> | AcksNotice;

/**
 * A batch of sends, posted main → worker on the data port. Parallel arrays rather than an object
 * per message: the messages cross the boundary as they are, with nothing wrapped around them.
 * Message `i` has the delivery sequence number `seq + i` (the ack names it).
 */
export interface SendBatch {
  t: 'send';
  /** The queue's epoch when the batch was taken (see `OutboundQueue`): after a failed send the worker returns, unsent, every held message of an epoch not newer than the failed one's. */
  epoch: number;
  /** Delivery sequence number of the first message. */
  seq: number;
  /** The messages, by structured clone; absent when they go in columns (`n`, `fields`, `columns`). */
  messages?: readonly unknown[];
  /** Number of messages in columns (see `toColumns`: flat objects of one shape, the common case). */
  n?: number;
  /** The messages' keys, when they go in columns. */
  fields?: readonly string[];
  /** One array of values per field, when the messages go in columns. */
  columns?: readonly (readonly unknown[])[];
  /** Attempt of each message (1 for the first); absent when every one is a first attempt. */
  attempts?: readonly number[];
  /** Idempotency key of each message (`null`: none), passed to the channel's `send`; absent when none has one. */
  keys?: readonly (string | null)[];
  /** Whether each message was handed to a worker before (e.g. in flight when one died); absent when none was. */
  redelivered?: readonly boolean[];
}

/** The result of one send, as acknowledged by the worker. */
export type SendResult = AckResult;

/**
 * Acks, batched worker → main on the data port: a run of consecutive successes
 * (`seq`, `seq + 1`, … with their receipts: the hot path; receipts of one flat shape go in
 * columns, see `toColumns`), or a list of results of any kind (failures, messages handed back
 * unsent).
 */
export type AcksNotice =
  | { t: 'acks'; seq: number; receipts: unknown[] }
  | { t: 'acks'; seq: number; n: number; fields: string[]; columns: unknown[][] }
  | { t: 'acks'; results: SendResult[] };

/** Zod schema of the `results` form of an {@link AcksNotice} (the run form is checked by hand: it is the hot path). */
export const acksSchema = z.object({ t: z.literal('acks'), results: z.array(ackResultSchema) });

/** The control-plane API an instance worker serves (through the WorkerHost's comlink port). */
export interface InstanceWorkerApi {
  /**
   * Starts connecting (then the inbound loop) in the background. The channel module was loaded
   * and validated before the worker reported ready; a module that failed was reported as a
   * `fatal` notice, and then this does nothing.
   */
  start(): Promise<void>;
  /** Delivers one message through the channel; resolves with its receipt. */
  send(message: unknown): Promise<unknown>;
}
