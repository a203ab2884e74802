/**
 * The delivery feed: what an in-process collector (threadvisor/prometheus) reads instead of the
 * `delivery:*` events. Internal: not part of the public API.
 *
 * An outbound queue given a feed calls each tap's `delivered` once per run of acks that
 * delivered something, with the instance id, how many sends were delivered and each one's time
 * from accepted to receipt (the `totalMs` of `delivery:delivered`, the same figure); and its
 * `event` where the queue publishes `delivery:gave_up`, `delivery:skipped_duplicate` and
 * `delivery:retry` (whether or not anyone listens to them). No payload is built for a tap, and
 * adding one adds no listener to any emitter (a listener added to or removed from a queue
 * changes the shape of its listener table, which the hot path reads).
 *
 * A runtime owns one feed shared by all its queues; {@link deliveryFeedOf} finds it.
 *
 * @packageDocumentation
 */

/** The `delivery:*` events a tap hears of by name (one call each, no payload). */
export type FedEvent = 'delivery:gave_up' | 'delivery:skipped_duplicate' | 'delivery:retry';

export interface DeliveryTap {
  /**
   * `n` sends of `instanceId` delivered by one run of acks, `totalMs[0..n)` their times from
   * accepted to receipt in ms. `totalMs` is a scratch buffer reused by the next run (it may be
   * longer than `n`): read it, never keep it.
   */
  delivered(instanceId: string, n: number, totalMs: Float64Array): void;
  /** One `event` of a send of `instanceId`, where the queue publishes it. */
  event(instanceId: string, event: FedEvent): void;
}

export class DeliveryFeed {
  /** The taps, in the order added (copied on change: a tap may remove itself while called). */
  taps: readonly DeliveryTap[] = [];
  #scratch = new Float64Array(256);

  /**
   * Adds `tap`; returns what removes it (idempotent). The tap itself is called (no wrapper): the
   * queues' call sites then meet the same methods whichever collector adds one.
   */
  add(tap: DeliveryTap): () => void {
    this.taps = [...this.taps, tap];
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      const i = this.taps.indexOf(tap);
      if (i >= 0) this.taps = [...this.taps.slice(0, i), ...this.taps.slice(i + 1)];
    };
  }

  /** A buffer of at least `n` slots for the times of one run (reused). */
  scratch(n: number): Float64Array {
    if (this.#scratch.length < n) this.#scratch = new Float64Array(Math.max(n, this.#scratch.length * 2));
    return this.#scratch;
  }

  /** `n` sends of `instanceId` delivered, their times in `totalMs[0..n)`. */
  delivered(instanceId: string, n: number, totalMs: Float64Array): void {
    const taps = this.taps;
    for (let i = 0; i < taps.length; i++) (taps[i] as DeliveryTap).delivered(instanceId, n, totalMs);
  }

  /** One `event` of a send of `instanceId`. */
  event(instanceId: string, event: FedEvent): void {
    const taps = this.taps;
    for (let i = 0; i < taps.length; i++) (taps[i] as DeliveryTap).event(instanceId, event);
  }
}

/** The feed of each runtime (set by the runtime; a WeakMap, so nothing public grows). */
const feeds = new WeakMap<object, DeliveryFeed>();

/** Registers `feed` as `owner`'s (the runtime, at construction). */
export function setDeliveryFeed(owner: object, feed: DeliveryFeed): void {
  feeds.set(owner, feed);
}

/** The delivery feed of `owner` (a runtime), or undefined when it has none. */
export function deliveryFeedOf(owner: object): DeliveryFeed | undefined {
  return feeds.get(owner);
}
