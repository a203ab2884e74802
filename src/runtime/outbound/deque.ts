/**
 * A ring-buffer double-ended queue, the storage of the outbound queue's queue, waiters and
 * in-flight window.
 *
 * @packageDocumentation
 */

/**
 * Array-backed double-ended queue (ring buffer, power-of-two capacity, grows by doubling):
 * O(1) `push`, `unshift`, `shift` and indexed access, where `Array.prototype.shift` is O(n).
 */
export class Deque<T> {
  #buf: (T | undefined)[];
  #mask: number;
  #head = 0;
  #len = 0;

  /** @param initialCapacity Slots allocated up front (rounded up to a power of two). */
  constructor(initialCapacity = 16) {
    let cap = 4;
    while (cap < initialCapacity) cap *= 2;
    this.#buf = new Array<T | undefined>(cap);
    this.#mask = cap - 1;
  }

  /** Number of items. */
  get length(): number {
    return this.#len;
  }

  /** Appends at the back. */
  push(v: T): void {
    if (this.#len === this.#buf.length) this.#grow();
    this.#buf[(this.#head + this.#len) & this.#mask] = v;
    this.#len++;
  }

  /** Prepends at the front. */
  unshift(v: T): void {
    if (this.#len === this.#buf.length) this.#grow();
    this.#head = (this.#head - 1) & this.#mask;
    this.#buf[this.#head] = v;
    this.#len++;
  }

  /** Removes and returns the front item (`undefined` when empty). */
  shift(): T | undefined {
    if (this.#len === 0) return undefined;
    const v = this.#buf[this.#head];
    this.#buf[this.#head] = undefined;
    this.#head = (this.#head + 1) & this.#mask;
    this.#len--;
    return v;
  }

  /** The front item without removing it (`undefined` when empty). */
  peek(): T | undefined {
    return this.#len === 0 ? undefined : this.#buf[this.#head];
  }

  /** The item at `i` from the front (`undefined` out of range). */
  get(i: number): T | undefined {
    return i >= 0 && i < this.#len ? this.#buf[(this.#head + i) & this.#mask] : undefined;
  }

  /** Replaces the item at `i` from the front (ignored out of range). */
  set(i: number, v: T): void {
    if (i >= 0 && i < this.#len) this.#buf[(this.#head + i) & this.#mask] = v;
  }

  /** Removes every item (the storage shrinks back to its initial size). */
  clear(): void {
    this.#buf = new Array<T | undefined>(16);
    this.#mask = 15;
    this.#head = 0;
    this.#len = 0;
  }

  #grow(): void {
    const old = this.#buf;
    const next = new Array<T | undefined>(old.length * 2);
    for (let i = 0; i < this.#len; i++) next[i] = old[(this.#head + i) & this.#mask];
    this.#buf = next;
    this.#mask = next.length - 1;
    this.#head = 0;
  }
}
