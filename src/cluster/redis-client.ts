/**
 * Helpers the cluster's Redis users share: a client made from the cluster's `redis` option, and
 * the grouping of one turn's commands by key.
 *
 * This module imports ioredis: only cluster mode loads it.
 *
 * @packageDocumentation
 */
import { Redis, type RedisOptions } from 'ioredis';

/** Fails fast while Redis is unreachable (no offline queue, one retry), connects on demand. */
const QUICK: RedisOptions = { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true, connectTimeout: 2000 };

/**
 * A client of its own from the cluster's `redis` option (a URL, options, or a client to
 * duplicate), with `extra` on top; its `error` events are swallowed (each caller handles the
 * failed commands).
 */
export function clusterClient(redis: string | RedisOptions | Redis, extra: RedisOptions): Redis {
  const client = redis instanceof Redis ? redis.duplicate(extra) : typeof redis === 'string' ? new Redis(redis, { ...QUICK, ...extra }) : new Redis({ ...QUICK, ...redis, ...extra });
  client.on('error', () => undefined);
  return client;
}

/**
 * Items of one turn grouped by key: `add` queues one; on the next turn (`setImmediate`) `flush`
 * gets each key's items, in order, in slices of at most `size`.
 */
export class TurnBatches<T> {
  readonly #groups = new Map<string, T[]>();
  #scheduled = false;
  constructor(
    readonly size: number,
    readonly flush: (key: string, batch: T[]) => void,
  ) {}

  add(key: string, item: T): void {
    const list = this.#groups.get(key);
    if (list) list.push(item);
    else this.#groups.set(key, [item]);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      for (const [k, all] of this.#groups) {
        this.#groups.delete(k);
        for (let i = 0; i < all.length; i += this.size) this.flush(k, all.slice(i, i + this.size));
      }
    });
  }
}
