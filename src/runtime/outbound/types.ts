/**
 * The public types of the outbound queue: pressure levels, queue and send options, send
 * outcomes, counters and stats (the batch handed to the dispatcher is in `batch.ts`).
 *
 * @packageDocumentation
 */
import type { DeliveryFeed } from './feed.js';
import type { IdempotencyKey } from './idempotency.js';

/** Pressure levels, in increasing order. */
export const PRESSURE_LEVELS = ['normal', 'warn', 'degraded', 'shed'] as const;

/** An instance's pressure level: `normal` → `warn` → `degraded` → `shed`. */
export type PressureLevel = (typeof PRESSURE_LEVELS)[number];

/** Retry policy of recoverable delivery failures: bounded exponential backoff with ± jitter. */
export interface RetryOptions {
  /** Attempts per message, the first included. Default 5. */
  maxAttempts?: number;
  /** Delay before the first retry, ms. Default 100. `0` retries at once. */
  initialDelayMs?: number;
  /** Upper bound of a retry delay, ms. Default 5000. */
  maxDelayMs?: number;
  /** Jitter ratio in [0, 1]. Default 0.2. */
  jitter?: number;
  /** Random source in [0, 1); default `Math.random`. Pass `seededRandom(n)` in tests. */
  random?: () => number;
}

/** Pressure thresholds as fractions of `capacity`. */
export interface PressureOptions {
  /** `depth / capacity` at which `warn` starts. Default 0.70. */
  warn?: number;
  /** … `degraded` starts. Default 0.85. */
  degraded?: number;
  /** … `shed` starts. Default 0.95. */
  shed?: number;
  /** A level is left only below its threshold minus this. Default 0.05. */
  hysteresis?: number;
}

/** Options of an {@link OutboundQueue}. */
export interface OutboundQueueOptions {
  /** The instance this queue belongs to (in events and errors). */
  instanceId: string;
  /** Maximum queued messages before `enqueue` rejects (or waits). Default 1000. */
  capacity?: number;
  /** Delivered idempotency keys remembered (LRU). Default 1000; `0` disables the cache. */
  dedupeCacheSize?: number;
  /** Retry policy of recoverable failures. */
  retry?: RetryOptions;
  /**
   * Worker deaths charged to one message (the oldest unacknowledged one at each crash) before
   * it is failed as a suspected poison message. Default 3; `Infinity` never fails one.
   */
  maxCrashes?: number;
  /** Pressure thresholds. */
  pressure?: PressureOptions;
  /** The dispatcher's pull signal (see {@link OutboundQueue.onReady}). */
  onReady?: () => void;
  /** Monotonic clock, ms. Default `performance.now()`. */
  now?: () => number;
  /**
   * Scrubs secrets out of failure text before it goes into an error or an event: the worker's
   * failure reasons and codes, the reasons given to {@link OutboundQueue.requeueInFlight} and
   * {@link OutboundQueue.close}. So the `DeliveryFailedError` (message, stack, cause, details) and
   * the `delivery:retry` / `delivery:gave_up` / `delivery:requeued` payloads carry only scrubbed
   * text. Called on failures only. Default: text unchanged.
   */
  redact?: (text: string) => string;
  /**
   * Internal (the runtime's, for threadvisor/prometheus): taps called once per run of acks with
   * the sends delivered and their accepted → receipt times, whether or not anyone listens to
   * `delivery:delivered`.
   */
  feed?: DeliveryFeed;
}

/** Options of one `rt.send` (one {@link OutboundQueue.enqueue}). */
export interface EnqueueOptions {
  /**
   * Deduplication key. Default: the message's `id` when the message is an object whose `id` is
   * a string or a finite number. `null` disables deduplication for this message.
   */
  idempotencyKey?: IdempotencyKey | null;
  /** Aborts the send while it is not yet accepted (see the module notes). */
  signal?: AbortSignal;
  /** When the queue is full, wait (FIFO) for room instead of rejecting with `QueueFullError`. */
  waitForCapacity?: boolean;
}

/** Options of one `rt.sendMany` ({@link OutboundQueue.enqueueMany}): every message takes its default key. */
export type EnqueueManyOptions = Omit<EnqueueOptions, 'idempotencyKey'>;

/**
 * The outcome of one message of `rt.sendMany` ({@link OutboundQueue.enqueueMany}): its receipt,
 * or the error its own `send` would have rejected with.
 */
export type SendOutcome<R = unknown> = { ok: true; receipt: R } | { ok: false; error: Error };

export type { AckResult } from '../../wire/protocol.js';
export type { WireError } from '../../wire/errors.js';

/** Counters of an {@link OutboundQueue} since construction. */
export interface OutboundCounters {
  /** Messages accepted into the queue (waiters count once admitted). */
  enqueued: number;
  /** Messages delivered (promise resolved with a receipt from the channel). */
  delivered: number;
  /** Retries scheduled after recoverable failures. */
  retried: number;
  /** Messages failed with {@link DeliveryFailedError}. */
  gaveUp: number;
  /** Sends answered from the dedupe cache or joined to a pending send with the same key. */
  duplicatesSkipped: number;
  /** Sends rejected with {@link QueueFullError}. */
  rejectedFull: number;
  /** Sends rejected with {@link AbortedError}. */
  aborted: number;
  /** In-flight messages put back by `requeueInFlight`. */
  requeued: number;
  /** Messages returned `unsent` by a worker. */
  unsent: number;
  /** Acks naming no in-flight dispatch (late, duplicate or unknown): ignored. */
  staleAcks: number;
  /** Sends rejected with {@link StoppedError} by `close` or after it. */
  stopped: number;
}

/** A point-in-time view of an instance's outbound queue: `delivery` in its health snapshot. */
export interface OutboundStats extends OutboundCounters {
  instanceId: string;
  /** Queued messages (including those waiting out a retry backoff). */
  depth: number;
  /** Dispatched, unacknowledged messages. */
  inFlight: number;
  /** Sends waiting for capacity. */
  waiting: number;
  capacity: number;
  pressure: PressureLevel;
  /** Delivered keys currently cached. */
  dedupeCacheSize: number;
}
