/**
 * The batch {@link OutboundQueue.take} hands to the dispatcher: the `Batch` view, the class
 * that builds its dense views on demand, and the shared empty batch.
 *
 * @packageDocumentation
 */
import type { IdempotencyKey } from './idempotency.js';

/**
 * Messages handed to the dispatcher by {@link OutboundQueue.take}. Their delivery sequence numbers
 * are consecutive (`seq`, `seq + 1`, …), and the per-message details that are nearly always the
 * default (first attempt, no key, not a redelivery) are kept only when one message differs:
 * `sparse` is what goes on the wire; `seqs`, `attempts`, `redelivered` and `keys` spell every
 * value out, built on demand.
 */
export interface Batch<M = unknown> {
  /** Number of messages. */
  readonly length: number;
  /**
   * The queue's ordering epoch when the batch was taken. It grows every time a dispatched
   * message goes back to the queue; see the module notes on strict order.
   */
  readonly epoch: number;
  /** Delivery sequence number of `messages[0]`; message `i` has `seq + i` (a redelivery gets a new one); acks name them. */
  readonly seq: number;
  /** The messages. */
  readonly messages: readonly M[];
  /** The per-message details, each absent when every message has the default. */
  readonly sparse: {
    /** Attempt number of each dispatch; absent when all are 1. */
    readonly attempts?: readonly number[];
    /** Whether each message was handed to a worker before; absent when none was. */
    readonly redelivered?: readonly boolean[];
    /** Idempotency key of each message (`undefined`: none); absent when none has one. */
    readonly keys?: readonly (IdempotencyKey | undefined)[];
  };
  /** Delivery sequence numbers, one per dispatch. */
  readonly seqs: readonly number[];
  /** Attempt number of each dispatch (1 for the first; a crash requeue keeps the number). */
  readonly attempts: readonly number[];
  /** Per message: it was handed to a worker before (in flight when one died, or returned unsent). */
  readonly redelivered: readonly boolean[];
  /** Idempotency key of each message (`undefined` when it has none), for idempotent channels. */
  readonly keys: readonly (IdempotencyKey | undefined)[];
}
/** A batch as {@link OutboundQueue.take} makes it: the dense views are built when asked for. */
export class TakenBatch<M> implements Batch<M> {
  constructor(
    readonly length: number,
    readonly epoch: number,
    readonly seq: number,
    readonly messages: readonly M[],
    readonly sparse: Batch<M>['sparse'],
  ) {}

  get seqs(): readonly number[] {
    return Array.from({ length: this.length }, (_, i) => this.seq + i);
  }

  get attempts(): readonly number[] {
    return this.sparse.attempts ?? new Array<number>(this.length).fill(1);
  }

  get redelivered(): readonly boolean[] {
    return this.sparse.redelivered ?? new Array<boolean>(this.length).fill(false);
  }

  get keys(): readonly (IdempotencyKey | undefined)[] {
    return this.sparse.keys ?? new Array<undefined>(this.length).fill(undefined);
  }
}

export const NO_DETAILS: Batch['sparse'] = Object.freeze({});

/** The batch returned when nothing can be taken (shared and frozen). */
export const EMPTY_BATCH: Batch<never> = Object.freeze(new TakenBatch<never>(0, 0, 0, Object.freeze([]), NO_DETAILS));
