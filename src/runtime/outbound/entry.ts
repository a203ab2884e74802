/**
 * One send as the outbound queue holds it: its states, the {@link Entry} class, the promise
 * parking that spares a closure per message, the group of an `enqueueMany`, the signal guard
 * of waiting sends, and the helpers that settle an entry.
 *
 * @packageDocumentation
 */
import type { IdempotencyKey } from './idempotency.js';
import type { SendOutcome } from './types.js';

export const WAITING = 0;
export const QUEUED = 1;
export const IN_FLIGHT = 2;
export const DONE = 3;

// One shared promise executor instead of a closure per message: it parks the resolving
// functions here and the Entry constructor picks them up synchronously.
let parkedResolve: ((v: never) => void) | undefined;
let parkedReject: ((e: unknown) => void) | undefined;
function parkResolvers(resolve: (v: never) => void, reject: (e: unknown) => void): void {
  parkedResolve = resolve;
  parkedReject = reject;
}

/** One accepted (or waiting) send. A class so every entry has the same shape. */
export class Entry<M, R> {
  /** Position in the queue's order (assigned on admission; also the message id without key). */
  id = -1;
  state = QUEUED;
  /** Attempts that ended in a failure. */
  attempts = 0;
  /** Crashes charged to this message. */
  crashes = 0;
  /** Not dispatched before this clock value (retry backoff); 0 = at once. */
  notBefore = 0;
  /** Current dispatch seq while in flight. */
  seq = -1;
  firstDispatchAt = -1;
  /** Set for a single send (made at once) or when a duplicate asks for it (see {@link promiseOf}). */
  resolve: ((r: R) => void) | undefined = undefined;
  reject: ((e: unknown) => void) | undefined = undefined;
  promise: Promise<R> | undefined = undefined;
  /** The batch of an `enqueueMany`, and this message's place in it. */
  group: Group<R> | undefined = undefined;
  index = 0;

  constructor(
    /** Released (undefined) once the send settled. */
    public message: M | undefined,
    readonly key: IdempotencyKey | undefined,
    readonly enqueuedAt: number,
    public signal: AbortSignal | undefined,
    withPromise = true,
  ) {
    if (withPromise) {
      this.promise = new Promise<R>(parkResolvers);
      this.resolve = parkedResolve as (r: R) => void;
      this.reject = parkedReject as (e: unknown) => void;
    }
  }

  get messageId(): IdempotencyKey {
    return this.key ?? this.id;
  }
}

/** The waiting sends one `AbortSignal` guards in one queue, and its one `abort` listener. */
export interface SignalGuard<M, R> {
  readonly entries: Set<Entry<M, R>>;
  readonly listener: () => void;
}

/** The outcomes of one `enqueueMany`, resolved once every message settled. */
export class Group<R> {
  readonly outcomes: SendOutcome<R>[];
  remaining: number;
  readonly promise: Promise<SendOutcome<R>[]>;
  readonly #resolve: (o: SendOutcome<R>[]) => void;

  constructor(n: number) {
    this.outcomes = new Array<SendOutcome<R>>(n);
    this.remaining = n;
    this.promise = new Promise<SendOutcome<R>[]>(parkResolvers);
    this.#resolve = parkedResolve as (o: SendOutcome<R>[]) => void;
    if (n === 0) this.#resolve(this.outcomes);
  }

  settle(i: number, outcome: SendOutcome<R>): void {
    this.outcomes[i] = outcome;
    if (--this.remaining === 0) this.#resolve(this.outcomes);
  }
}

export function settleOk<M, R>(e: Entry<M, R>, receipt: R): void {
  e.resolve?.(receipt);
  e.group?.settle(e.index, { ok: true, receipt });
  release(e);
}

export function settleError<M, R>(e: Entry<M, R>, error: Error): void {
  e.reject?.(error);
  e.group?.settle(e.index, { ok: false, error });
  release(e);
}

/** A settled entry lets go of what it carried (an entry can outlive its send: see `OutboundState.newest`). */
function release<M, R>(e: Entry<M, R>): void {
  e.message = undefined;
  e.group = undefined;
  e.signal = undefined;
}

/** The promise of an entry, made on demand for a batch entry that a duplicate send waits on. */
export function promiseOf<M, R>(e: Entry<M, R>): Promise<R> {
  if (e.promise === undefined) {
    e.promise = new Promise<R>(parkResolvers);
    e.resolve = parkedResolve as (r: R) => void;
    e.reject = parkedReject as (err: unknown) => void;
  }
  return e.promise;
}
