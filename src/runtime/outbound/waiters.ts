/**
 * The sends of an outbound queue waiting for room (`waitForCapacity`), FIFO, each guarded by
 * its `AbortSignal` with one `abort` listener per signal.
 *
 * @packageDocumentation
 */
import { Deque } from './deque.js';
import { DONE, WAITING, type Entry, type SignalGuard } from './entry.js';

/** The waiting sends of one queue. An aborted send leaves a tombstone, compacted now and then. */
export class WaitList<M, R> {
  readonly #waiters = new Deque<Entry<M, R>>();
  /** The waiting entries each signal guards, with its one `abort` listener (see `#guard`). */
  readonly #guards = new WeakMap<AbortSignal, SignalGuard<M, R>>();
  #waiting = 0;
  #tombstones = 0;
  readonly #aborted: (e: Entry<M, R>) => void;

  /** @param aborted Called once per waiting send whose signal aborted, after it left the list (state `DONE`). */
  constructor(aborted: (e: Entry<M, R>) => void) {
    this.#aborted = aborted;
  }

  /** Sends waiting. */
  get length(): number {
    return this.#waiting;
  }

  /** Appends an entry (state `WAITING`), guarded by its signal if it has one. */
  push(e: Entry<M, R>): void {
    e.state = WAITING;
    this.#waiters.push(e);
    this.#waiting++;
    if (e.signal !== undefined) this.#guard(e.signal, e);
  }

  /** Removes and returns the oldest waiting entry, off its signal's guard (call only when `length > 0`). */
  shift(): Entry<M, R> {
    for (;;) {
      const e = this.#waiters.shift() as Entry<M, R>;
      if (e.state !== WAITING) {
        this.#tombstones--;
        continue;
      }
      this.#waiting--;
      this.#unguard(e);
      return e;
    }
  }

  /** Moves every waiting entry, off its guard, onto `out` and empties the list (for `close`). */
  drainInto(out: Entry<M, R>[]): void {
    for (let e = this.#waiters.shift(); e !== undefined; e = this.#waiters.shift()) {
      if (e.state !== WAITING) continue;
      this.#unguard(e);
      out.push(e);
    }
    this.#waiters.clear();
    this.#waiting = 0;
    this.#tombstones = 0;
  }

  /**
   * Registers a waiting entry with its signal. One `abort` listener per signal and queue, however
   * many sends share the signal (a listener per send would trip Node's
   * `MaxListenersExceededWarning` past 10 and cost a closure each); it is removed once the
   * signal guards no waiting entry any more.
   */
  #guard(signal: AbortSignal, e: Entry<M, R>): void {
    let g = this.#guards.get(signal);
    if (g === undefined) {
      const guard: SignalGuard<M, R> = { entries: new Set(), listener: () => this.#onAbort(signal, guard) };
      g = guard;
      this.#guards.set(signal, g);
      signal.addEventListener('abort', g.listener, { once: true });
    }
    g.entries.add(e);
  }

  /** Takes a waiting entry off its signal's guard (admitted or closed); the last one removes the listener. */
  #unguard(e: Entry<M, R>): void {
    const signal = e.signal;
    if (signal === undefined) return;
    const g = this.#guards.get(signal);
    if (g === undefined || !g.entries.delete(e) || g.entries.size > 0) return;
    this.#guards.delete(signal);
    signal.removeEventListener('abort', g.listener);
  }

  /** The signal aborted: every send it still guards gives up waiting. */
  #onAbort(signal: AbortSignal, g: SignalGuard<M, R>): void {
    if (this.#guards.get(signal) === g) this.#guards.delete(signal);
    for (const e of g.entries) if (e.state === WAITING) this.#abortWaiter(e);
    g.entries.clear();
  }

  /** Called once at most per entry, from its signal's guard. */
  #abortWaiter(e: Entry<M, R>): void {
    e.state = DONE;
    this.#waiting--;
    this.#tombstones++;
    if (this.#waiting === 0) {
      this.#waiters.clear();
      this.#tombstones = 0;
    } else if (this.#tombstones > 64 && this.#tombstones > this.#waiting) {
      const n = this.#waiters.length;
      for (let i = 0; i < n; i++) {
        const w = this.#waiters.shift() as Entry<M, R>;
        if (w.state === WAITING) this.#waiters.push(w);
      }
      this.#tombstones = 0;
    }
    this.#aborted(e);
  }
}
