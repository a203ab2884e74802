/**
 * The outbound queue of one instance: pure main-thread logic, no threads.
 *
 * An {@link OutboundQueue} owns every message accepted by `send` until the channel acknowledged
 * it, across worker deaths: a worker only ever holds *copies* of in-flight messages. The runtime
 * plugs itself in as the dispatcher:
 *
 * ```
 * enqueue ─▶ queue (FIFO ring) ─take(credit)─▶ in flight ─ack(results)─▶ resolved / retried / failed
 *                    ▲                              │
 *                    └──── requeueInFlight(reason) ◀┘   (worker died, hung, restarted)
 * ```
 *
 * Decisions:
 *
 * - **Strict order.** Messages are dispatched in enqueue order, and a message that goes back to
 *   the queue (retry, crash requeue, `unsent`) is put back *in its original place*, ahead of
 *   every message accepted after it. A message that went back blocks the messages behind it
 *   (head-of-line blocking) until its retry backoff has passed *and* no message accepted after
 *   it is still in flight. Messages already dispatched behind a failed one cannot be recalled:
 *   to keep *delivery* strictly ordered, the worker stops at the first failure and returns as
 *   `unsent` every item it holds or later receives whose {@link Batch.epoch} is not newer than
 *   the failed item's (a newer epoch means the batch was taken after the queue learned of the
 *   failure, and it starts with the retried message). A worker that delivers them anyway gets
 *   at-least-once in a slightly different order, never a loss.
 * - **A crash is not an attempt.** `requeueInFlight` keeps each message's attempt count, so a
 *   worker death never eats into `maxAttempts`. To stop a poison message from killing worker
 *   after worker forever, each requeue after a crash charges the *oldest* unacknowledged
 *   message (the one the worker was most likely working on, as workers deliver in order); at
 *   `maxCrashes` charges (default 3) it fails with {@link DeliveryFailedError} reason `crashed`.
 *   Planned restarts pass `{ crashed: false }` and charge nobody.
 * - **Degraded is final for the message.** A `degraded` failure (unsupported, policy denied)
 *   cannot succeed on retry, so it fails the message at once like `fatal`
 *   ({@link DeliveryFailedError} reason `degraded`); the queue keeps going with the next one.
 * - **Capacity bounds admission.** `capacity` bounds the queued messages (`depth`, including
 *   those waiting out a retry backoff; in-flight ones are bounded by the runtime's credit
 *   window). Messages coming back from in flight are always readmitted, so `depth` may exceed
 *   `capacity` after a requeue: nothing accepted is dropped.
 * - **Pressure with hysteresis.** Level = the highest threshold `depth / capacity` reached
 *   (0.70 warn, 0.85 degraded, 0.95 shed; levels may be skipped); it steps down only once the
 *   ratio falls below the current level's threshold minus `hysteresis` (0.05), to the highest
 *   level whose threshold minus `hysteresis` is still reached. Pressure is a signal: the queue
 *   itself only rejects when full.
 * - **Signals guard admission only.** `signal` aborts a send that is not yet accepted (already
 *   aborted, or waiting for capacity). Once accepted, a message is owned by the queue until it
 *   settles; it may already be in flight, so it is not recalled.
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import {
  AbortedError,
  ChannelError,
  DeliveryFailedError,
  InvalidConfigError,
  QueueFullError,
  StoppedError,
  type DeliveryFailureReason,
  type FailureClass,
} from '../../errors.js';
import { backoffDelay, resolveBackoff, type BackoffPolicy } from '../../supervisor/backoff.js';
import { parseConfig, parseOrThrow } from '../../validate.js';
import type { WireError } from '../../wire/errors.js';
import type { AckResult } from '../../wire/protocol.js';
import { timerDelay } from '../../wire/timers.js';
import { LruCache } from '../lru.js';
import { EMPTY_BATCH, NO_DETAILS, TakenBatch, type Batch } from './batch.js';
import {
  announceAttempts,
  announceDelivered,
  announceDuplicate,
  announceGaveUp,
  announcePressure,
  announceQueued,
  announceRequeued,
  announceRetry,
  attemptsWanted,
  deliveriesWanted,
} from './delivery-events.js';
import { Deque } from './deque.js';
import { DONE, Entry, Group, IN_FLIGHT, QUEUED, promiseOf, settleError, settleOk } from './entry.js';
import { defaultIdempotencyKey, type IdempotencyKey } from './idempotency.js';
import { enqueueManyOptionsSchema, enqueueOptionsSchema, outboundQueueOptionsSchema, quickValid } from './schemas.js';
import { PressureGauge } from './pressure.js';
import { PRESSURE_LEVELS, type EnqueueManyOptions, type EnqueueOptions, type OutboundCounters, type OutboundQueueOptions, type OutboundStats, type PressureLevel, type SendOutcome } from './types.js';
import { WaitList } from './waiters.js';

const defaultNow = (): number => performance.now();
const identity = (text: string): string => text;
const RESOLVED = Promise.resolve();
/** Rethrows an error nothing can handle as an uncaught exception. */
const crashLater = (err: unknown): void => {
  process.nextTick(() => {
    throw err;
  });
};

/**
 * The main-thread outbound queue of one instance. See the module notes for the ordering,
 * retry, crash, pressure and admission decisions.
 *
 * Events (each also on `node:diagnostics_channel` as `threadvisor:<event>`, payloads built only
 * when someone listens): the `delivery:*` events of `DeliveryEvents` and `instance:pressure`
 * (src/events.ts, the one event table).
 *
 * Wiring it to a worker (sketch; `window` is the credit per worker):
 *
 * ```ts
 * const q = new OutboundQueue({ instanceId, capacity: queueCapacity, onReady: pump });
 * function pump() {
 *   if (!live) return;                                  // no worker: messages wait, owned here
 *   const b = q.take(window - q.inFlight);              // 1 message when idle, a window under load
 *   if (b.length > 0) port.postMessage({ t: 'send', epoch: b.epoch, seq: b.seq, messages: b.messages, ...b.sparse });
 * }
 * port.on('message', (m) => { m.receipts ? q.ackRun(m.seq, m.receipts) : q.ack(validatedAcks(m)); pump(); });  // ackResultSchema
 * onWorkerGone = (reason) => q.requeueInFlight(reason);               // { crashed: false } if planned
 * onWorkerReady = () => pump();
 * stop = async () => { await Promise.race([q.drained(), sleep(graceMs)]); q.close('instance stopped'); };
 * ```
 *
 * If `postMessage` throws (a message that cannot be cloned), ack the batch's items as `fatal`
 * failures (after isolating the culprit, if you like) so their sends settle.
 */
export class OutboundQueue<M = unknown, R = unknown> extends EventEmitter {
  /** The instance this queue belongs to. */
  readonly instanceId: string;
  /** Maximum queued messages before `enqueue` rejects (or waits). */
  readonly capacity: number;
  /**
   * The dispatcher's pull signal: called (in a microtask, so synchronous enqueues coalesce into
   * one batch) when messages become available to {@link take}: after an enqueue, when a retry
   * backoff ends, after a requeue or an `unsent` return, after the acks a returned message was
   * waiting for. Not called for other acks: the dispatcher pulls after handling acks anyway, as
   * its credit came back. It means "take if you have credit"; it must not throw.
   */
  onReady: (() => void) | undefined;

  readonly #queue = new Deque<Entry<M, R>>(64);
  /**
   * The newest entry admitted, kept after it settles. V8 holds the hidden classes of entries
   * weakly: a full GC while no entry is alive (after an idle spell) collects them and
   * deoptimizes every function that handles entries, and the next burst then ran unoptimized
   * for 50-100 ms (measured: a backlog of thousands at 284k msgs/s). One live entry keeps them.
   */
  // eslint-disable-next-line no-unused-private-class-members -- held, never read: see above
  #newest: Entry<M, R> | undefined = undefined;
  readonly #waiters = new WaitList<M, R>((e) => this.#abortWaiter(e));
  /** In-flight window: slot i holds the dispatch with seq `#flightBase + i` (undefined once acked). */
  readonly #flight = new Deque<Entry<M, R> | undefined>(64);
  #flightBase = 0;
  #nextSeq = 0;
  #nextId = 0;
  #depth = 0;
  #inFlight = 0;
  #epoch = 0;
  #closed = false;
  readonly #pending = new Map<IdempotencyKey, Entry<M, R>>();
  readonly #delivered: LruCache<IdempotencyKey, R>;
  readonly #policy: BackoffPolicy;
  readonly #maxAttempts: number;
  readonly #maxCrashes: number;
  readonly #now: () => number;
  readonly #redact: (text: string) => string;
  readonly #gauge: PressureGauge;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #readyScheduled = false;
  readonly #drainers: Array<() => void> = [];
  readonly #counters: OutboundCounters = {
    enqueued: 0,
    delivered: 0,
    retried: 0,
    gaveUp: 0,
    duplicatesSkipped: 0,
    rejectedFull: 0,
    aborted: 0,
    requeued: 0,
    unsent: 0,
    staleAcks: 0,
    stopped: 0,
  };

  /** @throws {InvalidConfigError} listing every bad option path. */
  constructor(options: OutboundQueueOptions) {
    super();
    const o = parseOrThrow(outboundQueueOptionsSchema, options, 'outbound queue options');
    this.instanceId = o.instanceId;
    this.capacity = o.capacity;
    this.onReady = o.onReady;
    this.#delivered = new LruCache(o.dedupeCacheSize);
    this.#maxAttempts = o.retry.maxAttempts;
    this.#maxCrashes = o.maxCrashes;
    this.#policy = resolveBackoff({ initialDelayMs: o.retry.initialDelayMs, maxDelayMs: o.retry.maxDelayMs, jitter: o.retry.jitter, random: o.retry.random });
    this.#now = o.now ?? defaultNow;
    this.#redact = o.redact ?? identity;
    this.#gauge = new PressureGauge(this.capacity, o.pressure);
  }

  // ─────────────────────────────────────────────────────────── views

  /** Queued messages (including those waiting out a retry backoff). */
  get depth(): number {
    return this.#depth;
  }

  /** Dispatched, unacknowledged messages. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Sends waiting for capacity. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Current pressure level. */
  get pressure(): PressureLevel {
    return PRESSURE_LEVELS[this.#gauge.level] as PressureLevel;
  }

  /** The ordering epoch (see {@link Batch.epoch}). */
  get epoch(): number {
    return this.#epoch;
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether {@link take} would return at least one message now. */
  get ready(): boolean {
    const head = this.#queue.peek();
    if (head === undefined) return false;
    if (head.notBefore !== 0 && head.notBefore > this.#now()) return false;
    return head.firstDispatchAt < 0 || !this.#overtakenBy(head);
  }

  /**
   * Whether a message accepted after `e` (which went back to the queue) is still in flight: `e`
   * then waits for it to settle (see the module notes on strict order). O(in flight), only for
   * messages that went back.
   */
  #overtakenBy(e: Entry<M, R>): boolean {
    if (this.#inFlight === 0) return false;
    const f = this.#flight;
    for (let i = 0; i < f.length; i++) if ((f.get(i)?.id ?? -1) > e.id) return true;
    return false;
  }

  /** A copy of the counters. */
  get counters(): OutboundCounters {
    return { ...this.#counters };
  }

  /** Depth, in flight, pressure and counters in one object (for health). */
  stats(): OutboundStats {
    return {
      instanceId: this.instanceId,
      depth: this.#depth,
      inFlight: this.#inFlight,
      waiting: this.#waiters.length,
      capacity: this.capacity,
      pressure: this.pressure,
      dedupeCacheSize: this.#delivered.size,
      ...this.#counters,
    };
  }

  // ─────────────────────────────────────────────────────────── enqueue

  /**
   * Accepts `message` for delivery. Resolves with the channel's receipt once delivered, or
   * rejects with a typed error:
   * - `QueueFullError` when `depth` reached `capacity` (nothing enqueued), unless
   *   `waitForCapacity`, which waits FIFO for room;
   * - `AbortedError` when `signal` is already aborted, or aborts while waiting for room;
   * - `DeliveryFailedError` after `maxAttempts` recoverable failures, at once on a `fatal` or
   *   `degraded` one, or when charged `maxCrashes` worker deaths;
   * - `StoppedError` when the queue is (or gets) closed before delivery;
   * - `InvalidConfigError` for bad options.
   *
   * A key already delivered (and still cached) resolves at once with the first receipt and is
   * not sent again; a key currently waiting, queued or in flight returns that send's promise
   * (it shares its fate, including its signal).
   */
  enqueue(message: M, options?: EnqueueOptions): Promise<R> {
    if (this.#closed) {
      this.#counters.stopped++;
      return Promise.reject(this.#stoppedError('closed'));
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
      this.#counters.aborted++;
      return Promise.reject(new AbortedError(`send on instance ${this.instanceId}`, { cause: signal.reason }));
    }
    if (key !== undefined) {
      const dup = this.#duplicate(key);
      if (dup !== undefined) return dup;
    }
    if (this.#depth >= this.capacity || this.#waiters.length > 0) {
      if (!wait) {
        this.#counters.rejectedFull++;
        return Promise.reject(new QueueFullError(`outbound queue of instance ${this.instanceId}`, this.capacity));
      }
      return this.#wait(message, key, signal);
    }
    const e = new Entry<M, R>(message, key, this.#now(), undefined);
    if (key !== undefined) this.#pending.set(key, e);
    this.#admit(e);
    return e.promise as Promise<R>;
  }

  /**
   * Accepts a message that another owner had taken from a durable log but not acknowledged
   * (cluster mode, `durability: 'redis'`): as {@link enqueue} with `waitForCapacity`, and marked
   * as a redelivery (`info.redelivery` is true on its first attempt here).
   */
  enqueueRedelivery(message: M, key: IdempotencyKey | undefined): Promise<R> {
    if (this.#closed || this.#depth >= this.capacity || this.#waiters.length > 0) return this.enqueue(message, { idempotencyKey: key ?? null, waitForCapacity: true });
    if (key !== undefined) {
      const dup = this.#duplicate(key);
      if (dup !== undefined) return dup;
    }
    const e = new Entry<M, R>(message, key, this.#now(), undefined);
    e.firstDispatchAt = e.enqueuedAt;
    if (key !== undefined) this.#pending.set(key, e);
    this.#admit(e);
    return e.promise as Promise<R>;
  }

  #duplicate(key: IdempotencyKey): Promise<R> | undefined {
    const cache = this.#delivered;
    if (cache.size > 0 && cache.has(key)) {
      const receipt = cache.get(key) as R;
      this.#counters.duplicatesSkipped++;
      announceDuplicate(this, key, 'delivered');
      return Promise.resolve(receipt);
    }
    const pending = this.#pending.get(key);
    if (pending === undefined) return undefined;
    this.#counters.duplicatesSkipped++;
    announceDuplicate(this, key, 'pending');
    return promiseOf(pending);
  }

  /**
   * Accepts a batch of messages: the same as one {@link enqueue} per message, in order (each
   * takes its default idempotency key, its `id`), settled together. Resolves once every message
   * settled with one {@link SendOutcome} per message, in the batch's order: its receipt, or the
   * error its own `enqueue` would have rejected with (`QueueFullError` for the messages that
   * found no room, unless `waitForCapacity`, `DeliveryFailedError`, `AbortedError`,
   * `StoppedError`). It rejects only for bad arguments (`InvalidConfigError`).
   *
   * Cheaper than a send per message: no promise per message, one for the batch.
   */
  enqueueMany(messages: readonly M[], options?: EnqueueManyOptions): Promise<SendOutcome<R>[]> {
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
    if (this.#closed || signal?.aborted) {
      const err = this.#closed ? this.#stoppedError('closed') : new AbortedError(`send on instance ${this.instanceId}`, { cause: signal?.reason });
      if (this.#closed) this.#counters.stopped += n;
      else this.#counters.aborted += n;
      for (let i = 0; i < n; i++) group.settle(i, { ok: false, error: err });
      return group.promise;
    }
    const now = this.#now();
    for (let i = 0; i < n; i++) {
      const message = messages[i] as M;
      const key = keys[i];
      if (key !== undefined) {
        const dup = this.#duplicate(key);
        if (dup !== undefined) {
          dup.then(
            (receipt) => group.settle(i, { ok: true, receipt }),
            (error: unknown) => group.settle(i, { ok: false, error: error as Error }),
          );
          continue;
        }
      }
      if (this.#depth >= this.capacity || this.#waiters.length > 0) {
        if (!wait) {
          this.#counters.rejectedFull++;
          group.settle(i, { ok: false, error: new QueueFullError(`outbound queue of instance ${this.instanceId}`, this.capacity) });
          continue;
        }
        const e = new Entry<M, R>(message, key, now, signal, false);
        e.group = group;
        e.index = i;
        this.#park(e);
        continue;
      }
      const e = new Entry<M, R>(message, key, now, undefined, false);
      e.group = group;
      e.index = i;
      if (key !== undefined) this.#pending.set(key, e);
      this.#admit(e);
    }
    return group.promise;
  }

  /** Appends an accepted entry at the back of the queue. */
  #admit(e: Entry<M, R>): void {
    e.id = this.#nextId++;
    e.state = QUEUED;
    this.#newest = e;
    this.#queue.push(e);
    const depth = ++this.#depth;
    this.#counters.enqueued++;
    if (depth >= this.#gauge.upper) this.#repressure();
    announceQueued(this, e, depth);
    this.#scheduleReady();
  }

  #wait(message: M, key: IdempotencyKey | undefined, signal: AbortSignal | undefined): Promise<R> {
    const e = new Entry<M, R>(message, key, this.#now(), signal);
    this.#park(e);
    return e.promise as Promise<R>;
  }

  /** Puts an entry among the waiters for room (guarded by its signal, if it has one). */
  #park(e: Entry<M, R>): void {
    if (e.key !== undefined) this.#pending.set(e.key, e);
    this.#waiters.push(e);
  }

  /** A waiting send whose signal aborted (it already left the waiters). */
  #abortWaiter(e: Entry<M, R>): void {
    if (e.key !== undefined) this.#pending.delete(e.key);
    this.#counters.aborted++;
    settleError(e, new AbortedError(`send on instance ${this.instanceId}`, { cause: e.signal?.reason }));
  }

  /** Moves waiters into the queue while there is room, FIFO. */
  #admitWaiters(): void {
    while (this.#waiters.length > 0 && this.#depth < this.capacity) this.#admit(this.#waiters.shift());
  }

  // ─────────────────────────────────────────────────────────── dispatch

  /**
   * Hands up to `max` messages to the dispatcher, in queue order, moving them in flight (each
   * with a new delivery `seq`). Stops early at a message still waiting out its retry backoff
   * (strict order; a timer then calls {@link onReady} when it ends). Returns
   * {@link EMPTY_BATCH} when nothing can be taken (also after `close`, or for `max < 1`).
   *
   * Adaptive batching comes for free: called with the free credit, it returns one message
   * when idle and up to the whole window under load.
   */
  take(max: number): Batch<M> {
    if (this.#closed || this.#depth === 0 || !(max >= 1)) return EMPTY_BATCH;
    const q = this.#queue;
    const now = this.#now();
    const epoch = this.#epoch;
    const first = this.#nextSeq;
    const messages: M[] = [];
    // Built only once a message differs from the default (then filled in for those before it).
    let attempts: number[] | undefined;
    let redelivered: boolean[] | undefined;
    let keys: (IdempotencyKey | undefined)[] | undefined;
    // Only when someone listens: the entries whose attempt events go out after the bookkeeping.
    const announce: Entry<M, R>[] | undefined = attemptsWanted(this) ? [] : undefined;
    let n = 0;
    while (n < max) {
      const e = q.peek();
      if (e === undefined) break;
      if (e.notBefore !== 0) {
        if (e.notBefore > now) {
          this.#armTimer(e.notBefore, now);
          break;
        }
        e.notBefore = 0;
      }
      if (e.firstDispatchAt >= 0 && this.#overtakenBy(e)) break;
      q.shift();
      e.seq = this.#nextSeq++;
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
      this.#flight.push(e);
      messages.push(e.message as M);
      announce?.push(e);
      n++;
    }
    if (n === 0) return EMPTY_BATCH;
    this.#depth -= n;
    this.#inFlight += n;
    if (this.#depth < this.#gauge.lower) this.#repressure();
    if (announce !== undefined) announceAttempts(this, announce, now);
    if (this.#waiters.length > 0) this.#admitWaiters();
    const sparse = attempts === undefined && redelivered === undefined && keys === undefined ? NO_DETAILS : { attempts, redelivered, keys };
    return new TakenBatch(n, epoch, first, messages, sparse);
  }

  /**
   * Settles dispatches by `seq` (acks come in batches, in any order). Success resolves the
   * send and caches its receipt under its key. A `recoverable` failure below `maxAttempts`
   * puts the message back at its place in the queue after a backoff (`delivery:retry`);
   * otherwise (or on `fatal` / `degraded`) it rejects with {@link DeliveryFailedError}
   * (`delivery:gave_up`). `unsent` puts it back without counting an attempt. Acks naming no
   * in-flight dispatch (late acks of a dead worker, duplicates) are ignored and counted in
   * `staleAcks`.
   */
  ack(results: readonly AckResult<R>[]): void {
    if (this.#closed) {
      this.#counters.staleAcks += results.length;
      return;
    }
    let now = -1;
    let back: Entry<M, R>[] | undefined;
    const announce = deliveriesWanted(this);
    for (let i = 0; i < results.length; i++) {
      const r = results[i] as AckResult<R>;
      const e = this.#settleFlight(r.seq);
      if (e === undefined) {
        this.#counters.staleAcks++;
        continue;
      }
      if (now < 0) now = this.#now();
      if (r.ok === true) {
        this.#deliver(e, r.receipt, now, announce);
      } else if ('unsent' in r && r.unsent === true) {
        this.#counters.unsent++;
        (back ??= []).push(e);
      } else if (this.#fail(e, (r as { error?: WireError }).error, now)) {
        (back ??= []).push(e);
      }
    }
    if (back !== undefined) this.#giveBack(back, now);
    else this.#afterAcks();
  }

  /**
   * Settles a run of successes: the dispatches `seq`, `seq + 1`, … delivered with
   * `receipts[0]`, `receipts[1]`, … (the hot path of {@link ack}: what a worker acknowledges
   * in order, without a result object per message). Seqs naming no in-flight dispatch are
   * ignored and counted in `staleAcks`.
   */
  ackRun(seq: number, receipts: readonly R[]): void {
    const n = receipts.length;
    if (this.#closed) {
      this.#counters.staleAcks += n;
      return;
    }
    const now = this.#now();
    const announce = deliveriesWanted(this);
    for (let i = 0; i < n; i++) {
      const e = this.#settleFlight(seq + i);
      if (e === undefined) this.#counters.staleAcks++;
      else this.#deliver(e, receipts[i] as R, now, announce);
    }
    this.#afterAcks();
  }

  #afterAcks(): void {
    // a message that went back may have been waiting for these acks (strict order)
    if (this.#depth > 0 && (this.#queue.peek() as Entry<M, R>).firstDispatchAt >= 0) this.#scheduleReady();
    if (this.#drainers.length > 0) this.#checkDrained();
  }

  #settleFlight(seq: number): Entry<M, R> | undefined {
    const i = seq - this.#flightBase;
    if (!Number.isInteger(i)) return undefined;
    const f = this.#flight;
    const e = f.get(i);
    if (e === undefined) return undefined;
    f.set(i, undefined);
    this.#inFlight--;
    while (f.length > 0 && f.peek() === undefined) {
      f.shift();
      this.#flightBase++;
    }
    return e;
  }

  #deliver(e: Entry<M, R>, receipt: R, now: number, announce: boolean): void {
    e.state = DONE;
    if (e.key !== undefined) {
      this.#pending.delete(e.key);
      this.#delivered.set(e.key, receipt);
    }
    this.#counters.delivered++;
    if (announce) announceDelivered(this, e, now);
    settleOk(e, receipt);
  }

  /** A failed attempt: returns true when the entry is to be retried (caller puts it back). */
  #fail(e: Entry<M, R>, error: WireError | undefined, now: number): boolean {
    const err = this.#scrubbed(error);
    // A channel's retry-after (e.g. a 429's) is a floor on the retry's delay. The runtime checks
    // acks (zod); this guards a queue driven directly.
    const after = error?.retryAfterMs;
    const retryAfterMs = typeof after === 'number' && Number.isFinite(after) && after >= 0 ? after : undefined;
    e.attempts++;
    if (err.class === 'recoverable' && e.attempts < this.#maxAttempts) {
      const backoffMs = backoffDelay(this.#policy, e.attempts - 1);
      const delayMs = retryAfterMs === undefined ? backoffMs : timerDelay(Math.max(backoffMs, retryAfterMs));
      e.notBefore = delayMs > 0 ? now + delayMs : 0;
      this.#counters.retried++;
      announceRetry(this, e, delayMs, retryAfterMs, err, now);
      return true;
    }
    // An unknown class (the runtime validates acks; this is belt and braces) is final.
    const cls: FailureClass = err.class === 'recoverable' || err.class === 'degraded' ? err.class : 'fatal';
    const why: DeliveryFailureReason = cls === 'recoverable' ? 'max_attempts' : cls;
    this.#giveUp(e, why, new ChannelError(err.reason, { class: cls, code: err.code, retryAfterMs }), now);
    return false;
  }

  /**
   * The worker's failure with its reason and code scrubbed, before anything (an error, its stack,
   * an event) is built from them.
   */
  #scrubbed(error: WireError | undefined): { class: WireError['class']; code: string | undefined; reason: string } {
    if (error === undefined) return { class: 'recoverable', code: undefined, reason: 'delivery failed (no error given)' };
    const code = typeof error.code === 'string' ? this.#redact(error.code) : error.code;
    return { class: error.class, code, reason: this.#redact(String(error.reason)) };
  }

  #giveUp(e: Entry<M, R>, why: DeliveryFailureReason, last: ChannelError, now: number): void {
    e.state = DONE;
    if (e.key !== undefined) this.#pending.delete(e.key);
    this.#counters.gaveUp++;
    const error = new DeliveryFailedError(`instance ${this.instanceId}`, e.messageId, e.attempts, why, last);
    announceGaveUp(this, e, why, last, now);
    settleError(e, error);
  }

  /**
   * Puts dispatched entries back at their place (by id) among the front of the queue. Only
   * entries that went back earlier can have a lower id than a returned one (every
   * never-dispatched entry has a higher id than every dispatched one), so the merge touches at
   * most the front of the queue, never the bulk of it.
   */
  #giveBack(entries: Entry<M, R>[], now: number): void {
    if (entries.length > 1) entries.sort((a, b) => a.id - b.id);
    const q = this.#queue;
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
    this.#depth += entries.length;
    this.#epoch++;
    if (this.#depth >= this.#gauge.upper) this.#repressure();
    const head = q.peek() as Entry<M, R>;
    if (head.notBefore === 0 || head.notBefore <= now) this.#scheduleReady();
    else this.#armTimer(head.notBefore, now);
  }

  /**
   * The worker holding the in-flight messages died, hung or was restarted: every
   * unacknowledged dispatch goes back to its place at the head of the queue (before every
   * message accepted after it), keeping its attempt count, so the next worker delivers them
   * first. Late acks of the old dispatches are ignored afterwards (their seqs are retired).
   *
   * With `crashed` (default true) the oldest unacknowledged message is charged one crash and
   * fails with {@link DeliveryFailedError} reason `crashed` at `maxCrashes`; pass
   * `{ crashed: false }` for planned restarts. Returns the number of messages put back.
   */
  requeueInFlight(reason: string, options: { crashed?: boolean } = {}): number {
    if (this.#closed || this.#inFlight === 0) return 0;
    reason = this.#redact(reason);
    const entries: Entry<M, R>[] = [];
    const f = this.#flight;
    while (f.length > 0) {
      const e = f.shift();
      if (e !== undefined) entries.push(e);
    }
    this.#flightBase = this.#nextSeq;
    this.#inFlight = 0;
    const now = this.#now();
    const crashed = options.crashed !== false;
    if (crashed && this.#maxCrashes !== Infinity) {
      const suspect = entries[0] as Entry<M, R>;
      if (++suspect.crashes >= this.#maxCrashes) {
        entries.shift();
        this.#giveUp(
          suspect,
          'crashed',
          new ChannelError(`worker died ${suspect.crashes} time(s) while delivering this message (last: ${reason})`, { class: 'fatal', code: 'worker_crashed' }),
          now,
        );
      }
    }
    const n = entries.length;
    this.#counters.requeued += n;
    announceRequeued(this, n, reason, crashed);
    if (n > 0) this.#giveBack(entries, now);
    if (this.#drainers.length > 0) this.#checkDrained();
    return n;
  }

  // ─────────────────────────────────────────────────────────── stop

  /**
   * Resolves once nothing is queued, in flight or waiting (at once if so already, and at
   * `close`). For graceful stops: `await Promise.race([q.drained(), timeout]); q.close()`.
   */
  drained(): Promise<void> {
    if (this.#depth + this.#inFlight + this.#waiters.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#drainers.push(resolve));
  }

  #checkDrained(): void {
    if (this.#depth + this.#inFlight + this.#waiters.length !== 0) return;
    for (const d of this.#drainers.splice(0)) d();
  }

  /**
   * Stops the queue: every waiting, queued and in-flight send rejects with a
   * `StoppedError` naming `reason` (an in-flight message may still have been delivered by
   * its worker; resend with the same idempotency key if that matters), later sends reject
   * likewise, acks are ignored and the retry timer is cleared. Idempotent. Returns the
   * number of sends it rejected.
   */
  close(reason = 'stopped'): number {
    if (this.#closed) return 0;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const err = this.#stoppedError(this.#redact(reason));
    const doomed: Entry<M, R>[] = [];
    while (this.#flight.length > 0) {
      const e = this.#flight.shift();
      if (e !== undefined) doomed.push(e);
    }
    for (let e = this.#queue.shift(); e !== undefined; e = this.#queue.shift()) doomed.push(e);
    this.#waiters.drainInto(doomed);
    this.#flight.clear();
    this.#queue.clear();
    this.#pending.clear();
    this.#depth = 0;
    this.#inFlight = 0;
    this.#counters.stopped += doomed.length;
    for (const e of doomed) {
      e.state = DONE;
      settleError(e, err);
    }
    this.#repressure();
    this.#checkDrained();
    return doomed.length;
  }

  #stoppedError(reason: string): StoppedError {
    return new StoppedError(`outbound queue of instance ${this.instanceId} (${reason})`);
  }

  // ─────────────────────────────────────────────────────────── signals

  #scheduleReady(): void {
    if (this.#readyScheduled || this.onReady === undefined) return;
    this.#readyScheduled = true;
    // A resolved promise's reaction, not queueMicrotask: Node wraps each queueMicrotask callback
    // in an AsyncResource (an allocation, an async id, and hidden classes that die when idle).
    void RESOLVED.then(this.#fireReady);
  }

  readonly #fireReady = (): void => {
    try {
      this.#readyTurn();
    } catch (err) {
      crashLater(err); // an uncaught exception, as from queueMicrotask, not a rejection nobody sees
    }
  };

  #readyTurn(): void {
    this.#readyScheduled = false;
    if (this.#closed) return;
    // A retry timer can fire before the clock reaches the head's retry time (libuv dates timers
    // from the loop's cached time, which lags under load): wait again for the rest, or the
    // head would wait for a wake-up that never comes.
    const head = this.#queue.peek();
    if (head !== undefined && head.notBefore !== 0) {
      const now = this.#now();
      if (head.notBefore > now) {
        this.#armTimer(head.notBefore, now);
        return;
      }
    }
    if (this.ready) this.onReady?.();
  }

  #armTimer(at: number, now: number): void {
    if (this.#timer !== undefined) {
      if (this.#timerAt <= at) return;
      clearTimeout(this.#timer);
    }
    this.#timerAt = at;
    this.#timer = setTimeout(this.#onTimer, Math.max(1, Math.ceil(at - now)));
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.#scheduleReady();
  };

  /** Recomputes the level after `depth` left the gauge's `[lower, upper)`; emits on change. */
  #repressure(): void {
    const d = this.#depth;
    const previous = this.#gauge.update(d);
    if (previous < 0) return;
    const level = this.#gauge.level;
    announcePressure(this, level, previous, d);
  }
}
