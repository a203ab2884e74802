/**
 * A bounded least-recently-used map: reading or writing a key makes it the most recent; adding
 * a key past `capacity` evicts the least recently used one. Keys compare with SameValueZero, as
 * in `Map` (`1` and `'1'` are different keys).
 *
 * Every operation is O(1) and allocation-free once warm: a `Map` from key to slot, and the
 * recency order as a doubly linked list over slot indices held in plain arrays. (The usual
 * "`Map` insertion order + `map.keys().next()` to evict" trick is not O(1) in V8: deleted
 * entries stay as holes at the front of the table until it is rehashed, and every fresh
 * iterator walks over them, so eviction costs grow with the capacity.)
 */
export class LruCache<K, V> {
  readonly #index = new Map<K, number>();
  readonly #keys: (K | undefined)[] = [];
  readonly #vals: (V | undefined)[] = [];
  readonly #prev: number[] = [];
  readonly #next: number[] = [];
  /** Free slots (after `delete`). */
  readonly #free: number[] = [];
  /** Least recently used slot, -1 when empty. */
  #head = -1;
  /** Most recently used slot, -1 when empty. */
  #tail = -1;
  /** Evictions since construction. */
  evictions = 0;

  /** @param capacity Maximum number of keys kept; `0` keeps nothing (every `set` is dropped). */
  constructor(readonly capacity: number) {}

  /** Number of keys held. */
  get size(): number {
    return this.#index.size;
  }

  /** Whether `key` is held (does not change its recency). */
  has(key: K): boolean {
    return this.#index.has(key);
  }

  /** The value of `key` (making it the most recently used), or `undefined` when absent. */
  get(key: K): V | undefined {
    const i = this.#index.get(key);
    if (i === undefined) return undefined;
    this.#touch(i);
    return this.#vals[i];
  }

  /** Stores `key` as the most recently used, evicting the least recently used key when full. */
  set(key: K, value: V): void {
    if (this.capacity === 0) return;
    const index = this.#index;
    let i = index.get(key);
    if (i !== undefined) {
      this.#vals[i] = value;
      this.#touch(i);
      return;
    }
    if (index.size >= this.capacity) {
      i = this.#head;
      index.delete(this.#keys[i] as K);
      this.#unlink(i);
      this.evictions++;
    } else {
      i = this.#free.length > 0 ? (this.#free.pop() as number) : this.#keys.length;
    }
    this.#keys[i] = key;
    this.#vals[i] = value;
    index.set(key, i);
    this.#append(i);
  }

  /** Forgets `key`; returns whether it was held. */
  delete(key: K): boolean {
    const i = this.#index.get(key);
    if (i === undefined) return false;
    this.#index.delete(key);
    this.#unlink(i);
    this.#keys[i] = undefined;
    this.#vals[i] = undefined;
    this.#free.push(i);
    return true;
  }

  /** Forgets every key. */
  clear(): void {
    this.#index.clear();
    this.#keys.length = 0;
    this.#vals.length = 0;
    this.#prev.length = 0;
    this.#next.length = 0;
    this.#free.length = 0;
    this.#head = -1;
    this.#tail = -1;
  }

  /** Keys from least to most recently used. */
  *keys(): IterableIterator<K> {
    for (let i = this.#head; i !== -1; i = this.#next[i] as number) yield this.#keys[i] as K;
  }

  /** Makes slot `i` the most recently used. */
  #touch(i: number): void {
    if (i === this.#tail) return;
    this.#unlink(i);
    this.#append(i);
  }

  #unlink(i: number): void {
    const p = this.#prev[i] as number;
    const n = this.#next[i] as number;
    if (p === -1) this.#head = n;
    else this.#next[p] = n;
    if (n === -1) this.#tail = p;
    else this.#prev[n] = p;
  }

  #append(i: number): void {
    this.#prev[i] = this.#tail;
    this.#next[i] = -1;
    if (this.#tail === -1) this.#head = i;
    else this.#next[this.#tail] = i;
    this.#tail = i;
  }
}
