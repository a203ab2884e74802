/**
 * Admission to an outbound queue: accepting a send (options checked, capacity and
 * `queue_full`, idempotency keys answered from the dedupe cache or joined to a pending send),
 * parking sends that wait for room, and admitting them as room frees up. The public contract
 * of each send is on {@link OutboundQueue}.
 *
 * @packageDocumentation
 */
import { AbortedError, InvalidConfigError, QueueFullError } from '../../errors.js';
import { parseConfig } from '../../validate.js';
import { announceDuplicate, announceQueued } from './delivery-events.js';
import { Entry, Group, QUEUED, promiseOf, settleError } from './entry.js';
import { defaultIdempotencyKey, type IdempotencyKey } from './idempotency.js';
import { enqueueManyOptionsSchema, enqueueOptionsSchema, quickValid } from './schemas.js';
import type { OutboundState } from './state.js';
import type { EnqueueManyOptions, EnqueueOptions, SendOutcome } from './types.js';

/** {@link OutboundQueue.enqueue}: accepts `message`, or rejects as documented there. */
export function enqueue<M, R>(s: OutboundState<M, R>, message: M, options?: EnqueueOptions): Promise<R> {
  if (s.closed) {
    s.counters.stopped++;
    return Promise.reject(s.stoppedError('closed'));
  }
  let key: IdempotencyKey | null | undefined;
  let signal: AbortSignal | undefined;
  let wait = false;
  try {
    if (options !== undefined) {
      const o = quickValid(options) ? options : parseConfig('send options', enqueueOptionsSchema, options);
      key = o.idempotencyKey;
      signal = o.signal;
      wait = o.waitForCapacity === true;
    }
    if (key === undefined) key = defaultIdempotencyKey(message);
  } catch (err) {
    return Promise.reject(err);
  }
  if (key === null) key = undefined;
  if (signal?.aborted) {
    s.counters.aborted++;
    return Promise.reject(new AbortedError(`send on instance ${s.instanceId}`, { cause: signal.reason }));
  }
  if (key !== undefined) {
    const dup = duplicate(s, key);
    if (dup !== undefined) return dup;
  }
  if (s.depth >= s.capacity || s.waiters.length > 0) {
    if (!wait) {
      s.counters.rejectedFull++;
      return Promise.reject(new QueueFullError(`outbound queue of instance ${s.instanceId}`, s.capacity));
    }
    return waitForRoom(s, message, key, signal);
  }
  const e = new Entry<M, R>(message, key, s.now(), undefined);
  if (key !== undefined) s.pending.set(key, e);
  admit(s, e);
  return e.promise as Promise<R>;
}

/** {@link OutboundQueue.enqueueRedelivery}: a message another owner took from a durable log. */
export function enqueueRedelivery<M, R>(s: OutboundState<M, R>, message: M, key: IdempotencyKey | undefined): Promise<R> {
  if (s.closed || s.depth >= s.capacity || s.waiters.length > 0) return enqueue(s, message, { idempotencyKey: key ?? null, waitForCapacity: true });
  if (key !== undefined) {
    const dup = duplicate(s, key);
    if (dup !== undefined) return dup;
  }
  const e = new Entry<M, R>(message, key, s.now(), undefined);
  e.firstDispatchAt = e.enqueuedAt;
  if (key !== undefined) s.pending.set(key, e);
  admit(s, e);
  return e.promise as Promise<R>;
}

/** The answer to a send whose key was delivered (cached receipt) or is pending (its promise). */
function duplicate<M, R>(s: OutboundState<M, R>, key: IdempotencyKey): Promise<R> | undefined {
  const cache = s.delivered;
  if (cache.size > 0 && cache.has(key)) {
    const receipt = cache.get(key) as R;
    s.counters.duplicatesSkipped++;
    announceDuplicate(s.owner, key, 'delivered');
    s.feed?.event(s.instanceId, 'delivery:skipped_duplicate');
    return Promise.resolve(receipt);
  }
  const pending = s.pending.get(key);
  if (pending === undefined) return undefined;
  s.counters.duplicatesSkipped++;
  announceDuplicate(s.owner, key, 'pending');
  s.feed?.event(s.instanceId, 'delivery:skipped_duplicate');
  return promiseOf(pending);
}

/** {@link OutboundQueue.enqueueMany}: one admission per message, settled together. */
export function enqueueMany<M, R>(s: OutboundState<M, R>, messages: readonly M[], options?: EnqueueManyOptions): Promise<SendOutcome<R>[]> {
  let signal: AbortSignal | undefined;
  let wait = false;
  let keys: (IdempotencyKey | undefined)[];
  try {
    if (!Array.isArray(messages)) throw new InvalidConfigError('messages of a batch send', [{ path: '', message: 'expected an array of messages' }]);
    if (options !== undefined) {
      const o = parseConfig('batch send options', enqueueManyOptionsSchema, options);
      signal = o.signal;
      wait = o.waitForCapacity === true;
    }
    // Every key before any message is taken: a message whose `id` cannot be read (a getter
    // that throws) rejects the batch with nothing taken, never half of it.
    keys = new Array<IdempotencyKey | undefined>(messages.length);
    for (let i = 0; i < messages.length; i++) keys[i] = defaultIdempotencyKey(messages[i]);
  } catch (err) {
    return Promise.reject(err);
  }
  const n = messages.length;
  const group = new Group<R>(n);
  if (n === 0) return group.promise;
  if (s.closed || signal?.aborted) {
    const err = s.closed ? s.stoppedError('closed') : new AbortedError(`send on instance ${s.instanceId}`, { cause: signal?.reason });
    if (s.closed) s.counters.stopped += n;
    else s.counters.aborted += n;
    for (let i = 0; i < n; i++) group.settle(i, { ok: false, error: err });
    return group.promise;
  }
  const now = s.now();
  for (let i = 0; i < n; i++) {
    const message = messages[i] as M;
    const key = keys[i];
    if (key !== undefined) {
      const dup = duplicate(s, key);
      if (dup !== undefined) {
        dup.then(
          (receipt) => group.settle(i, { ok: true, receipt }),
          (error: unknown) => group.settle(i, { ok: false, error: error as Error }),
        );
        continue;
      }
    }
    if (s.depth >= s.capacity || s.waiters.length > 0) {
      if (!wait) {
        s.counters.rejectedFull++;
        group.settle(i, { ok: false, error: new QueueFullError(`outbound queue of instance ${s.instanceId}`, s.capacity) });
        continue;
      }
      const e = new Entry<M, R>(message, key, now, signal, false);
      e.group = group;
      e.index = i;
      park(s, e);
      continue;
    }
    const e = new Entry<M, R>(message, key, now, undefined, false);
    e.group = group;
    e.index = i;
    if (key !== undefined) s.pending.set(key, e);
    admit(s, e);
  }
  return group.promise;
}

/** Appends an accepted entry at the back of the queue. */
function admit<M, R>(s: OutboundState<M, R>, e: Entry<M, R>): void {
  e.id = s.nextId++;
  e.state = QUEUED;
  s.newest = e;
  s.queue.push(e);
  const depth = ++s.depth;
  s.counters.enqueued++;
  if (depth >= s.gauge.upper) s.repressure();
  announceQueued(s.owner, e, depth);
  s.scheduleReady();
}

function waitForRoom<M, R>(s: OutboundState<M, R>, message: M, key: IdempotencyKey | undefined, signal: AbortSignal | undefined): Promise<R> {
  const e = new Entry<M, R>(message, key, s.now(), signal);
  park(s, e);
  return e.promise as Promise<R>;
}

/** Puts an entry among the waiters for room (guarded by its signal, if it has one). */
function park<M, R>(s: OutboundState<M, R>, e: Entry<M, R>): void {
  if (e.key !== undefined) s.pending.set(e.key, e);
  s.waiters.push(e);
}

/** A waiting send whose signal aborted (it already left the waiters). */
export function abortWaiter<M, R>(s: OutboundState<M, R>, e: Entry<M, R>): void {
  if (e.key !== undefined) s.pending.delete(e.key);
  s.counters.aborted++;
  settleError(e, new AbortedError(`send on instance ${s.instanceId}`, { cause: e.signal?.reason }));
}

/** Moves waiters into the queue while there is room, FIFO. */
export function admitWaiters<M, R>(s: OutboundState<M, R>): void {
  while (s.waiters.length > 0 && s.depth < s.capacity) admit(s, s.waiters.shift());
}
