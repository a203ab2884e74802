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
 * This module is the public class; admission.ts accepts sends, dispatch.ts hands batches out and
 * settles their acks, and state.ts holds what the two share.
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
import { parseConfig } from '../../validate.js';
import type { AckResult } from '../../wire/protocol.js';
import { abortWaiter, enqueue, enqueueMany, enqueueRedelivery } from './admission.js';
import type { Batch } from './batch.js';
import { ack, ackRun, requeueInFlight, take } from './dispatch.js';
import { DONE, settleError, type Entry } from './entry.js';
import type { IdempotencyKey } from './idempotency.js';
import { outboundQueueOptionsSchema } from './schemas.js';
import { OutboundState } from './state.js';
import { PRESSURE_LEVELS, type EnqueueManyOptions, type EnqueueOptions, type OutboundCounters, type OutboundQueueOptions, type OutboundStats, type PressureLevel, type SendOutcome } from './types.js';

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

  /** Everything admission (admission.ts) and dispatch (dispatch.ts) share. */
  readonly #s: OutboundState<M, R>;

  /** @throws {InvalidConfigError} listing every bad option path. */
  constructor(options: OutboundQueueOptions) {
    super();
    const o = parseConfig('outbound queue options', outboundQueueOptionsSchema, options);
    this.instanceId = o.instanceId;
    this.capacity = o.capacity;
    this.onReady = o.onReady;
    this.#s = new OutboundState<M, R>(this, o, abortWaiter);
  }

  // ─────────────────────────────────────────────────────────── views

  /** Queued messages (including those waiting out a retry backoff). */
  get depth(): number {
    return this.#s.depth;
  }

  /** Dispatched, unacknowledged messages. */
  get inFlight(): number {
    return this.#s.inFlight;
  }

  /** Sends waiting for capacity. */
  get waiting(): number {
    return this.#s.waiters.length;
  }

  /** Current pressure level. */
  get pressure(): PressureLevel {
    return PRESSURE_LEVELS[this.#s.gauge.level] as PressureLevel;
  }

  /** The ordering epoch (see {@link Batch.epoch}). */
  get epoch(): number {
    return this.#s.epoch;
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#s.closed;
  }

  /** Whether {@link take} would return at least one message now. */
  get ready(): boolean {
    return this.#s.isReady();
  }

  /** A copy of the counters. */
  get counters(): OutboundCounters {
    return { ...this.#s.counters };
  }

  /** Depth, in flight, pressure and counters in one object (for health). */
  stats(): OutboundStats {
    const s = this.#s;
    return {
      instanceId: this.instanceId,
      depth: s.depth,
      inFlight: s.inFlight,
      waiting: s.waiters.length,
      capacity: this.capacity,
      pressure: this.pressure,
      dedupeCacheSize: s.delivered.size,
      ...s.counters,
    };
  }

  // ─────────────────────────────────────────────────────────── enqueue (admission.ts)

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
    return enqueue(this.#s, message, options);
  }

  /**
   * Accepts a message that another owner had taken from a durable log but not acknowledged
   * (cluster mode, `durability: 'redis'`): as {@link enqueue} with `waitForCapacity`, and marked
   * as a redelivery (`info.redelivery` is true on its first attempt here).
   */
  enqueueRedelivery(message: M, key: IdempotencyKey | undefined): Promise<R> {
    return enqueueRedelivery(this.#s, message, key);
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
    return enqueueMany(this.#s, messages, options);
  }

  // ─────────────────────────────────────────────────────────── dispatch and acks (dispatch.ts)

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
    return take(this.#s, max);
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
    ack(this.#s, results);
  }

  /**
   * Settles a run of successes: the dispatches `seq`, `seq + 1`, … delivered with
   * `receipts[0]`, `receipts[1]`, … (the hot path of {@link ack}: what a worker acknowledges
   * in order, without a result object per message). Seqs naming no in-flight dispatch are
   * ignored and counted in `staleAcks`.
   */
  ackRun(seq: number, receipts: readonly R[]): void {
    ackRun(this.#s, seq, receipts);
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
    return requeueInFlight(this.#s, reason, options);
  }

  // ─────────────────────────────────────────────────────────── stop

  /**
   * Resolves once nothing is queued, in flight or waiting (at once if so already, and at
   * `close`). For graceful stops: `await Promise.race([q.drained(), timeout]); q.close()`.
   */
  drained(): Promise<void> {
    const s = this.#s;
    if (s.depth + s.inFlight + s.waiters.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => s.drainers.push(resolve));
  }

  /**
   * Stops the queue: every waiting, queued and in-flight send rejects with a
   * `StoppedError` naming `reason` (an in-flight message may still have been delivered by
   * its worker; resend with the same idempotency key if that matters), later sends reject
   * likewise, acks are ignored and the retry timer is cleared. Idempotent. Returns the
   * number of sends it rejected.
   */
  close(reason = 'stopped'): number {
    const s = this.#s;
    if (s.closed) return 0;
    s.closed = true;
    if (s.timer !== undefined) clearTimeout(s.timer);
    s.timer = undefined;
    const err = s.stoppedError(s.redact(reason));
    const doomed: Entry<M, R>[] = [];
    while (s.flight.length > 0) {
      const e = s.flight.shift();
      if (e !== undefined) doomed.push(e);
    }
    for (let e = s.queue.shift(); e !== undefined; e = s.queue.shift()) doomed.push(e);
    s.waiters.drainInto(doomed);
    s.flight.clear();
    s.queue.clear();
    s.pending.clear();
    s.depth = 0;
    s.inFlight = 0;
    s.counters.stopped += doomed.length;
    for (const e of doomed) {
      e.state = DONE;
      settleError(e, err);
    }
    s.repressure();
    s.checkDrained();
    return doomed.length;
  }
}
