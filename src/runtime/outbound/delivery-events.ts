/**
 * The events an outbound queue publishes (`delivery:*` and `instance:pressure`, typed in
 * src/events.ts), each on its emitter and its diagnostics channel, the payload built only when
 * someone listens.
 *
 * @packageDocumentation
 */
import type { EventEmitter } from 'node:events';
import type { ChannelError, DeliveryFailureReason } from '../../errors.js';
import { channelOf, publish, publishOn } from '../../telemetry.js';
import type { WireError } from '../../wire/errors.js';
import type { Entry } from './entry.js';
import type { IdempotencyKey } from './idempotency.js';
import { PRESSURE_LEVELS, type PressureLevel } from './types.js';

/** The queue as the events see it. */
type Source = EventEmitter & { readonly instanceId: string; readonly capacity: number };

const CH_QUEUED = channelOf('delivery:queued');
const CH_ATTEMPT = channelOf('delivery:attempt');
const CH_RETRY = channelOf('delivery:retry');
const CH_DELIVERED = channelOf('delivery:delivered');
const CH_GAVE_UP = channelOf('delivery:gave_up');
const CH_DUPLICATE = channelOf('delivery:skipped_duplicate');
const CH_REQUEUED = channelOf('delivery:requeued');

/** Whether anyone listens to `delivery:attempt` (checked once per batch taken). */
export function attemptsWanted(q: Source): boolean {
  return CH_ATTEMPT.hasSubscribers || q.listenerCount('delivery:attempt') > 0;
}

/** Whether anyone listens to `delivery:delivered` (checked once per batch of acks). */
export function deliveriesWanted(q: Source): boolean {
  return CH_DELIVERED.hasSubscribers || q.listenerCount('delivery:delivered') > 0;
}

/** `delivery:skipped_duplicate`: a send answered from the dedupe cache or joined to a pending one. */
export function announceDuplicate(q: Source, key: IdempotencyKey, state: 'delivered' | 'pending'): void {
  if (CH_DUPLICATE.hasSubscribers || q.listenerCount('delivery:skipped_duplicate') > 0) {
    publish(q, 'delivery:skipped_duplicate', () => ({ instanceId: q.instanceId, messageId: key, attempt: 0, state }));
  }
}

/** `delivery:queued`: an entry was admitted, the queue now `depth` deep. */
export function announceQueued<M, R>(q: Source, e: Entry<M, R>, depth: number): void {
  if (CH_QUEUED.hasSubscribers || q.listenerCount('delivery:queued') > 0) {
    publish(q, 'delivery:queued', () => ({ instanceId: q.instanceId, messageId: e.messageId, attempt: 0, depth }));
  }
}

/** `delivery:attempt` for each entry of a batch just taken (after the bookkeeping). */
export function announceAttempts<M, R>(q: Source, entries: readonly Entry<M, R>[], now: number): void {
  for (const e of entries) {
    const attempt = e.attempts + 1;
    const seq = e.seq;
    publish(
      q,
      'delivery:attempt',
      () => ({ instanceId: q.instanceId, messageId: e.messageId, seq, attempt, queuedMs: now - e.enqueuedAt }),
    );
  }
}

/** `delivery:delivered` (the caller checked {@link deliveriesWanted}). */
export function announceDelivered<M, R>(q: Source, e: Entry<M, R>, now: number): void {
  publishOn(
    CH_DELIVERED,
    q,
    'delivery:delivered',
    () => ({
      instanceId: q.instanceId,
      messageId: e.messageId,
      seq: e.seq,
      attempt: e.attempts + 1,
      queuedMs: e.firstDispatchAt - e.enqueuedAt,
      totalMs: now - e.enqueuedAt,
    }),
  );
}

/** `delivery:retry`: a recoverable failure, retried after `delayMs`. `err` is already scrubbed. */
export function announceRetry<M, R>(
  q: Source,
  e: Entry<M, R>,
  delayMs: number,
  retryAfterMs: number | undefined,
  err: { class: WireError['class']; code: string | undefined; reason: string },
  now: number,
): void {
  if (CH_RETRY.hasSubscribers || q.listenerCount('delivery:retry') > 0) {
    publish(
      q,
      'delivery:retry',
      () => ({
        instanceId: q.instanceId,
        messageId: e.messageId,
        seq: e.seq,
        attempt: e.attempts,
        nextAttempt: e.attempts + 1,
        delayMs,
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
        class: err.class,
        code: err.code,
        reason: err.reason,
        totalMs: now - e.enqueuedAt,
      }),
    );
  }
}

/** `delivery:gave_up`: the entry failed for good with `why`, `last` its last failure. */
export function announceGaveUp<M, R>(q: Source, e: Entry<M, R>, why: DeliveryFailureReason, last: ChannelError, now: number): void {
  if (CH_GAVE_UP.hasSubscribers || q.listenerCount('delivery:gave_up') > 0) {
    publish(
      q,
      'delivery:gave_up',
      () => ({
        instanceId: q.instanceId,
        messageId: e.messageId,
        attempt: e.attempts,
        reason: why,
        class: last.class,
        code: last.channelCode,
        error: last.message,
        totalMs: now - e.enqueuedAt,
      }),
    );
  }
}

/** `delivery:requeued`: `count` in-flight messages went back (`reason` already scrubbed). */
export function announceRequeued(q: Source, count: number, reason: string, crashed: boolean): void {
  if (CH_REQUEUED.hasSubscribers || q.listenerCount('delivery:requeued') > 0) {
    publish(q, 'delivery:requeued', () => ({ instanceId: q.instanceId, count, reason, crashed }));
  }
}

/** `instance:pressure`: the level went from `previous` to `level` at depth `depth`. */
export function announcePressure(q: Source, level: number, previous: number, depth: number): void {
  publish(
    q,
    'instance:pressure',
    () => ({
      instanceId: q.instanceId,
      level: PRESSURE_LEVELS[level] as PressureLevel,
      previous: PRESSURE_LEVELS[previous] as PressureLevel,
      depth,
      capacity: q.capacity,
    }),
  );
}
