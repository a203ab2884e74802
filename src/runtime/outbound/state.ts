/**
 * The mutable state of one outbound queue, shared by its admission (admission.ts) and its
 * dispatch and acks (dispatch.ts), with the signals both raise: the ready pull, the retry
 * timer, the pressure level and the drained waiters.
 *
 * @packageDocumentation
 */
import type { EventEmitter } from 'node:events';
import type { z } from 'zod';
import { StoppedError } from '../../errors.js';
import { resolveBackoff, type BackoffPolicy } from '../../supervisor/backoff.js';
import { LruCache } from '../lru.js';
import { announcePressure } from './delivery-events.js';
import { Deque } from './deque.js';
import type { DeliveryFeed } from './feed.js';
import type { Entry } from './entry.js';
import type { IdempotencyKey } from './idempotency.js';
import { PressureGauge } from './pressure.js';
import type { outboundQueueOptionsSchema } from './schemas.js';
import type { OutboundCounters } from './types.js';
import { WaitList } from './waiters.js';

/** The queue's options as validated (every default filled in). */
export type ParsedQueueOptions = z.output<typeof outboundQueueOptionsSchema>;

/** The queue as its state sees it: the emitter of its events and the dispatcher's pull signal. */
export type QueueOwner = EventEmitter & {
  readonly instanceId: string;
  readonly capacity: number;
  onReady: (() => void) | undefined;
};

const defaultNow = (): number => performance.now();
const identity = (text: string): string => text;
const RESOLVED = Promise.resolve();
/** Rethrows an error nothing can handle as an uncaught exception. */
const crashLater = (err: unknown): void => {
  process.nextTick(() => {
    throw err;
  });
};

/** Everything one queue's parts read and write, in one object of one shape. */
export class OutboundState<M, R> {
  /** The queue: events go out on it, and its `onReady` is the pull signal. */
  readonly owner: QueueOwner;
  readonly instanceId: string;
  readonly capacity: number;
  readonly queue = new Deque<Entry<M, R>>(64);
  /**
   * The newest entry admitted, kept after it settles. V8 holds the hidden classes of entries
   * weakly: a full GC while no entry is alive (after an idle spell) collects them and
   * deoptimizes every function that handles entries, and the next burst then ran unoptimized
   * for 50-100 ms (measured: a backlog of thousands at 284k msgs/s). One live entry keeps them.
   */
  newest: Entry<M, R> | undefined = undefined;
  readonly waiters: WaitList<M, R>;
  /** In-flight window: slot i holds the dispatch with seq `flightBase + i` (undefined once acked). */
  readonly flight = new Deque<Entry<M, R> | undefined>(64);
  flightBase = 0;
  nextSeq = 0;
  nextId = 0;
  depth = 0;
  inFlight = 0;
  epoch = 0;
  closed = false;
  readonly pending = new Map<IdempotencyKey, Entry<M, R>>();
  readonly delivered: LruCache<IdempotencyKey, R>;
  readonly policy: BackoffPolicy;
  readonly maxAttempts: number;
  readonly maxCrashes: number;
  readonly now: () => number;
  readonly redact: (text: string) => string;
  /** The per-batch delivery feed (the runtime's), if any. */
  readonly feed: DeliveryFeed | undefined;
  readonly gauge: PressureGauge;
  timer: ReturnType<typeof setTimeout> | undefined = undefined;
  timerAt = Infinity;
  readyScheduled = false;
  readonly drainers: Array<() => void> = [];
  readonly counters: OutboundCounters = {
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

  /** @param aborted Called for a waiting send whose signal aborted (after it left the waiters). */
  constructor(owner: QueueOwner, o: ParsedQueueOptions, aborted: (s: OutboundState<M, R>, e: Entry<M, R>) => void) {
    this.owner = owner;
    this.instanceId = o.instanceId;
    this.capacity = o.capacity;
    this.waiters = new WaitList<M, R>((e) => aborted(this, e));
    this.delivered = new LruCache(o.dedupeCacheSize);
    this.maxAttempts = o.retry.maxAttempts;
    this.maxCrashes = o.maxCrashes;
    this.policy = resolveBackoff({ initialDelayMs: o.retry.initialDelayMs, maxDelayMs: o.retry.maxDelayMs, jitter: o.retry.jitter, random: o.retry.random });
    this.now = o.now ?? defaultNow;
    this.redact = o.redact ?? identity;
    this.feed = o.feed;
    this.gauge = new PressureGauge(this.capacity, o.pressure);
  }

  /** Whether a take would return at least one message now. */
  isReady(): boolean {
    const head = this.queue.peek();
    if (head === undefined) return false;
    if (head.notBefore !== 0 && head.notBefore > this.now()) return false;
    return head.firstDispatchAt < 0 || !this.overtakenBy(head);
  }

  /**
   * Whether a message accepted after `e` (which went back to the queue) is still in flight: `e`
   * then waits for it to settle (see the notes on strict order in queue.ts). O(in flight),
   * only for messages that went back.
   */
  overtakenBy(e: Entry<M, R>): boolean {
    if (this.inFlight === 0) return false;
    const f = this.flight;
    for (let i = 0; i < f.length; i++) if ((f.get(i)?.id ?? -1) > e.id) return true;
    return false;
  }

  stoppedError(reason: string): StoppedError {
    return new StoppedError(`outbound queue of instance ${this.instanceId} (${reason})`);
  }

  // ─────────────────────────────────────────────────────────── signals

  checkDrained(): void {
    if (this.depth + this.inFlight + this.waiters.length !== 0) return;
    for (const d of this.drainers.splice(0)) d();
  }

  scheduleReady(): void {
    if (this.readyScheduled || this.owner.onReady === undefined) return;
    this.readyScheduled = true;
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
    this.readyScheduled = false;
    if (this.closed) return;
    // A retry timer can fire before the clock reaches the head's retry time (libuv dates timers
    // from the loop's cached time, which lags under load): wait again for the rest, or the
    // head would wait for a wake-up that never comes.
    const head = this.queue.peek();
    if (head !== undefined && head.notBefore !== 0) {
      const now = this.now();
      if (head.notBefore > now) {
        this.armTimer(head.notBefore, now);
        return;
      }
    }
    if (this.isReady()) this.owner.onReady?.();
  }

  armTimer(at: number, now: number): void {
    if (this.timer !== undefined) {
      if (this.timerAt <= at) return;
      clearTimeout(this.timer);
    }
    this.timerAt = at;
    this.timer = setTimeout(this.#onTimer, Math.max(1, Math.ceil(at - now)));
  }

  readonly #onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    this.scheduleReady();
  };

  /** Recomputes the level after `depth` left the gauge's `[lower, upper)`; emits on change. */
  repressure(): void {
    const d = this.depth;
    const previous = this.gauge.update(d);
    if (previous < 0) return;
    const level = this.gauge.level;
    announcePressure(this.owner, level, previous, d);
  }
}
