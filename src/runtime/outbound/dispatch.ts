/**
 * Dispatch and acks of an outbound queue: taking batches for the worker within its credit,
 * settling acks and receipts, retrying failures after a backoff (floored by the channel's
 * `retryAfterMs`), giving up, and putting messages back in their place after an `unsent` or a
 * worker death. The public contract of each operation is on {@link OutboundQueue}.
 *
 * @packageDocumentation
 */
import { ChannelError, DeliveryFailedError, type DeliveryFailureReason, type FailureClass } from '../../errors.js';
import { backoffDelay } from '../../supervisor/backoff.js';
import type { WireError } from '../../wire/errors.js';
import type { AckResult } from '../../wire/protocol.js';
import { timerDelay } from '../../wire/timers.js';
import { admitWaiters } from './admission.js';
import { EMPTY_BATCH, NO_DETAILS, TakenBatch, type Batch } from './batch.js';
import { announceAttempts, announceDelivered, announceGaveUp, announceRequeued, announceRetry, attemptsWanted, deliveriesWanted } from './delivery-events.js';
import { DONE, IN_FLIGHT, QUEUED, settleError, settleOk, type Entry } from './entry.js';
import type { IdempotencyKey } from './idempotency.js';
import type { OutboundState } from './state.js';

/** {@link OutboundQueue.take}: up to `max` messages, in queue order, moved in flight. */
export function take<M, R>(s: OutboundState<M, R>, max: number): Batch<M> {
  if (s.closed || s.depth === 0 || !(max >= 1)) return EMPTY_BATCH;
  const q = s.queue;
  const now = s.now();
  const epoch = s.epoch;
  const first = s.nextSeq;
  const messages: M[] = [];
  // Built only once a message differs from the default (then filled in for those before it).
  let attempts: number[] | undefined;
  let redelivered: boolean[] | undefined;
  let keys: (IdempotencyKey | undefined)[] | undefined;
  // Only when someone listens: the entries whose attempt events go out after the bookkeeping.
  const announce: Entry<M, R>[] | undefined = attemptsWanted(s.owner) ? [] : undefined;
  let n = 0;
  while (n < max) {
    const e = q.peek();
    if (e === undefined) break;
    if (e.notBefore !== 0) {
      if (e.notBefore > now) {
        s.armTimer(e.notBefore, now);
        break;
      }
      e.notBefore = 0;
    }
    if (e.firstDispatchAt >= 0 && s.overtakenBy(e)) break;
    q.shift();
    e.seq = s.nextSeq++;
    e.state = IN_FLIGHT;
    const attempt = e.attempts + 1;
    if (attempts !== undefined) attempts.push(attempt);
    else if (attempt !== 1) (attempts = new Array<number>(n).fill(1)).push(attempt);
    if (e.firstDispatchAt >= 0) {
      (redelivered ??= new Array<boolean>(n).fill(false)).push(true);
    } else {
      redelivered?.push(false);
      e.firstDispatchAt = now;
    }
    if (keys !== undefined) keys.push(e.key);
    else if (e.key !== undefined) (keys = new Array<undefined>(n).fill(undefined) as (IdempotencyKey | undefined)[]).push(e.key);
    s.flight.push(e);
    messages.push(e.message as M);
    announce?.push(e);
    n++;
  }
  if (n === 0) return EMPTY_BATCH;
  s.depth -= n;
  s.inFlight += n;
  if (s.depth < s.gauge.lower) s.repressure();
  if (announce !== undefined) announceAttempts(s.owner, announce, now);
  if (s.waiters.length > 0) admitWaiters(s);
  const sparse = attempts === undefined && redelivered === undefined && keys === undefined ? NO_DETAILS : { attempts, redelivered, keys };
  return new TakenBatch(n, epoch, first, messages, sparse);
}

/** {@link OutboundQueue.ack}: settles dispatches by `seq`, in any order. */
export function ack<M, R>(s: OutboundState<M, R>, results: readonly AckResult<R>[]): void {
  if (s.closed) {
    s.counters.staleAcks += results.length;
    return;
  }
  let now = -1;
  let back: Entry<M, R>[] | undefined;
  const announce = deliveriesWanted(s.owner);
  // The feed's times of this run, when it has a tap (see feed.ts).
  const feed = s.feed !== undefined && s.feed.taps.length > 0 ? s.feed : undefined;
  const times = feed?.scratch(results.length);
  let delivered = 0;
  for (let i = 0; i < results.length; i++) {
    const r = results[i] as AckResult<R>;
    const e = settleFlight(s, r.seq);
    if (e === undefined) {
      s.counters.staleAcks++;
      continue;
    }
    if (now < 0) now = s.now();
    if (r.ok === true) {
      if (times !== undefined) times[delivered++] = now - e.enqueuedAt;
      deliver(s, e, r.receipt, now, announce);
    } else if ('unsent' in r && r.unsent === true) {
      s.counters.unsent++;
      (back ??= []).push(e);
    } else if (fail(s, e, (r as { error?: WireError }).error, now)) {
      (back ??= []).push(e);
    }
  }
  if (feed !== undefined && delivered > 0) feed.delivered(s.instanceId, delivered, times as Float64Array);
  if (back !== undefined) giveBack(s, back, now);
  else afterAcks(s);
}

/** {@link OutboundQueue.ackRun}: settles a run of successes from `seq` on. */
export function ackRun<M, R>(s: OutboundState<M, R>, seq: number, receipts: readonly R[]): void {
  const n = receipts.length;
  if (s.closed) {
    s.counters.staleAcks += n;
    return;
  }
  const now = s.now();
  const announce = deliveriesWanted(s.owner);
  const feed = s.feed;
  if (feed === undefined) {
    for (let i = 0; i < n; i++) {
      const e = settleFlight(s, seq + i);
      if (e === undefined) s.counters.staleAcks++;
      else deliver(s, e, receipts[i] as R, now, announce);
    }
  } else {
    // One call of the feed for the run: its count and each send's accepted → receipt time. The
    // times are gathered whether or not a tap is on (a store per send), so the run's code is the
    // same with a collector and without one.
    const times = feed.scratch(n);
    let delivered = 0;
    for (let i = 0; i < n; i++) {
      const e = settleFlight(s, seq + i);
      if (e === undefined) {
        s.counters.staleAcks++;
        continue;
      }
      times[delivered++] = now - e.enqueuedAt;
      deliver(s, e, receipts[i] as R, now, announce);
    }
    if (delivered > 0) feed.delivered(s.instanceId, delivered, times);
  }
  afterAcks(s);
}

function afterAcks<M, R>(s: OutboundState<M, R>): void {
  // a message that went back may have been waiting for these acks (strict order)
  if (s.depth > 0 && (s.queue.peek() as Entry<M, R>).firstDispatchAt >= 0) s.scheduleReady();
  if (s.drainers.length > 0) s.checkDrained();
}

function settleFlight<M, R>(s: OutboundState<M, R>, seq: number): Entry<M, R> | undefined {
  const i = seq - s.flightBase;
  if (!Number.isInteger(i)) return undefined;
  const f = s.flight;
  const e = f.get(i);
  if (e === undefined) return undefined;
  f.set(i, undefined);
  s.inFlight--;
  while (f.length > 0 && f.peek() === undefined) {
    f.shift();
    s.flightBase++;
  }
  return e;
}

function deliver<M, R>(s: OutboundState<M, R>, e: Entry<M, R>, receipt: R, now: number, announce: boolean): void {
  e.state = DONE;
  if (e.key !== undefined) {
    s.pending.delete(e.key);
    s.delivered.set(e.key, receipt);
  }
  s.counters.delivered++;
  if (announce) announceDelivered(s.owner, e, now);
  settleOk(e, receipt);
}

/** A failed attempt: returns true when the entry is to be retried (caller puts it back). */
function fail<M, R>(s: OutboundState<M, R>, e: Entry<M, R>, error: WireError | undefined, now: number): boolean {
  const err = scrubbed(s, error);
  // A channel's retry-after (e.g. a 429's) is a floor on the retry's delay. The runtime checks
  // acks (zod); this guards a queue driven directly.
  const after = error?.retryAfterMs;
  const retryAfterMs = typeof after === 'number' && Number.isFinite(after) && after >= 0 ? after : undefined;
  e.attempts++;
  if (err.class === 'recoverable' && e.attempts < s.maxAttempts) {
    const backoffMs = backoffDelay(s.policy, e.attempts - 1);
    const delayMs = retryAfterMs === undefined ? backoffMs : timerDelay(Math.max(backoffMs, retryAfterMs));
    e.notBefore = delayMs > 0 ? now + delayMs : 0;
    s.counters.retried++;
    announceRetry(s.owner, e, delayMs, retryAfterMs, err, now);
    s.feed?.event(s.instanceId, 'delivery:retry');
    return true;
  }
  // An unknown class (the runtime validates acks; this is belt and braces) is final.
  const cls: FailureClass = err.class === 'recoverable' || err.class === 'degraded' ? err.class : 'fatal';
  const why: DeliveryFailureReason = cls === 'recoverable' ? 'max_attempts' : cls;
  giveUp(s, e, why, new ChannelError(err.reason, { class: cls, code: err.code, retryAfterMs }), now);
  return false;
}

/**
 * The worker's failure with its reason and code scrubbed, before anything (an error, its stack,
 * an event) is built from them.
 */
function scrubbed<M, R>(s: OutboundState<M, R>, error: WireError | undefined): { class: WireError['class']; code: string | undefined; reason: string } {
  if (error === undefined) return { class: 'recoverable', code: undefined, reason: 'delivery failed (no error given)' };
  const code = typeof error.code === 'string' ? s.redact(error.code) : error.code;
  return { class: error.class, code, reason: s.redact(String(error.reason)) };
}

function giveUp<M, R>(s: OutboundState<M, R>, e: Entry<M, R>, why: DeliveryFailureReason, last: ChannelError, now: number): void {
  e.state = DONE;
  if (e.key !== undefined) s.pending.delete(e.key);
  s.counters.gaveUp++;
  const error = new DeliveryFailedError(`instance ${s.instanceId}`, e.messageId, e.attempts, why, last);
  announceGaveUp(s.owner, e, why, last, now);
  s.feed?.event(s.instanceId, 'delivery:gave_up');
  settleError(e, error);
}

/**
 * Puts dispatched entries back at their place (by id) among the front of the queue. Only
 * entries that went back earlier can have a lower id than a returned one (every
 * never-dispatched entry has a higher id than every dispatched one), so the merge touches at
 * most the front of the queue, never the bulk of it.
 */
function giveBack<M, R>(s: OutboundState<M, R>, entries: Entry<M, R>[], now: number): void {
  if (entries.length > 1) entries.sort((a, b) => a.id - b.id);
  const q = s.queue;
  const maxId = (entries[entries.length - 1] as Entry<M, R>).id;
  let front: Entry<M, R>[] | undefined;
  while (q.length > 0 && (q.peek() as Entry<M, R>).id < maxId) (front ??= []).push(q.shift() as Entry<M, R>);
  let i = entries.length - 1;
  let j = front === undefined ? -1 : front.length - 1;
  while (i >= 0) {
    const a = entries[i] as Entry<M, R>;
    const b = j >= 0 ? (front as Entry<M, R>[])[j] : undefined;
    if (b !== undefined && b.id > a.id) {
      q.unshift(b);
      j--;
      continue;
    }
    a.state = QUEUED;
    a.seq = -1;
    q.unshift(a);
    i--;
  }
  for (; j >= 0; j--) q.unshift((front as Entry<M, R>[])[j] as Entry<M, R>);
  s.depth += entries.length;
  s.epoch++;
  if (s.depth >= s.gauge.upper) s.repressure();
  const head = q.peek() as Entry<M, R>;
  if (head.notBefore === 0 || head.notBefore <= now) s.scheduleReady();
  else s.armTimer(head.notBefore, now);
}

/** {@link OutboundQueue.requeueInFlight}: every unacknowledged dispatch goes back to its place. */
export function requeueInFlight<M, R>(s: OutboundState<M, R>, reason: string, options: { crashed?: boolean }): number {
  if (s.closed || s.inFlight === 0) return 0;
  reason = s.redact(reason);
  const entries: Entry<M, R>[] = [];
  const f = s.flight;
  while (f.length > 0) {
    const e = f.shift();
    if (e !== undefined) entries.push(e);
  }
  s.flightBase = s.nextSeq;
  s.inFlight = 0;
  const now = s.now();
  const crashed = options.crashed !== false;
  if (crashed && s.maxCrashes !== Infinity) {
    const suspect = entries[0] as Entry<M, R>;
    if (++suspect.crashes >= s.maxCrashes) {
      entries.shift();
      giveUp(
        s,
        suspect,
        'crashed',
        new ChannelError(`worker died ${suspect.crashes} time(s) while delivering this message (last: ${reason})`, { class: 'fatal', code: 'worker_crashed' }),
        now,
      );
    }
  }
  const n = entries.length;
  s.counters.requeued += n;
  announceRequeued(s.owner, n, reason, crashed);
  if (n > 0) giveBack(s, entries, now);
  if (s.drainers.length > 0) s.checkDrained();
  return n;
}
