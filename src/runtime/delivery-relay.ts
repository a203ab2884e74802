/**
 * The runtime's `delivery:*` events and its delivery feed. Delivery events are on the hot path:
 * a queue builds them only while someone listens to that event on the runtime, so the relay
 * puts one forwarder per event on every queue when the runtime's first listener comes and takes
 * it off when the last one goes. The feed (per-batch figures for an in-process collector, see
 * `outbound/feed.ts`) is registered for the runtime here.
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import { DeliveryFeed, setDeliveryFeed } from './outbound/feed.js';
import type { OutboundQueue } from './outbound/queue.js';

export class DeliveryRelay {
  /** `delivery:*` events someone listens to on the runtime, each with its forwarder. */
  readonly forwarded = new Map<string, (payload: unknown) => void>();
  /** Per-batch delivery figures for an in-process collector (threadvisor/prometheus). */
  readonly feed = new DeliveryFeed();

  readonly #emitter: EventEmitter;
  readonly #onNew: (event: string | symbol) => void;
  readonly #onRemove: (event: string | symbol) => void;

  /** Relays for `emitter` (the runtime) from the queues `queues()` gives at the time. */
  constructor(emitter: EventEmitter, queues: () => Iterable<OutboundQueue>) {
    this.#emitter = emitter;
    this.#onNew = (event) => {
      if (typeof event !== 'string' || !event.startsWith('delivery:') || this.forwarded.has(event)) return;
      const forward = (p: unknown): void => {
        emitter.emit(event, p);
      };
      this.forwarded.set(event, forward);
      for (const q of queues()) q.on(event, forward);
    };
    this.#onRemove = (event) => {
      if (typeof event !== 'string') return;
      const forward = this.forwarded.get(event);
      if (forward === undefined || emitter.listenerCount(event) > 0) return;
      this.forwarded.delete(event);
      for (const q of queues()) q.off(event, forward);
    };
    this.install();
    setDeliveryFeed(emitter, this.feed);
  }

  /**
   * Puts the relay's own `newListener` / `removeListener` hooks on the runtime, where they are
   * not (again, after a `removeAllListeners()` took every listener off, the hooks included).
   */
  install(): void {
    // The base class's `on`: the runtime's own is typed to its event table.
    const e = this.#emitter;
    if (!e.listeners('newListener').includes(this.#onNew)) EventEmitter.prototype.on.call(e, 'newListener', this.#onNew);
    if (!e.listeners('removeListener').includes(this.#onRemove)) EventEmitter.prototype.on.call(e, 'removeListener', this.#onRemove);
  }
}
