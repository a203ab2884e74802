/**
 * The one-shot timers a {@link WorkerHost} holds (ready deadline, call deadlines, shutdown budget,
 * exit grace), kept in one set so the host can count them and clear them all when its worker is
 * down. Every timer is unref'd: a host never keeps the process alive.
 *
 * @packageDocumentation
 */

/** A set of unref'd one-shot timers, each removed from the set when it fires or is disarmed. */
export class HostTimers {
  readonly #timers = new Set<NodeJS.Timeout>();

  /** Timers currently held. */
  get size(): number {
    return this.#timers.size;
  }

  /** Runs `fn` after `ms` milliseconds; the timer leaves the set before `fn` runs. */
  arm(fn: () => void, ms: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    timer.unref();
    this.#timers.add(timer);
    return timer;
  }

  /** Cancels `timer` (nothing when undefined). */
  disarm(timer: NodeJS.Timeout | undefined): void {
    if (!timer) return;
    clearTimeout(timer);
    this.#timers.delete(timer);
  }

  /** Cancels every timer held. */
  clear(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }
}
