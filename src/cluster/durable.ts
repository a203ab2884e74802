/**
 * Durable sends (cluster mode, `durability: 'redis'`): `rt.send` on any node appends the message
 * to its instance's Redis stream, and the node that owns the instance delivers it.
 *
 * - **Accepted means written.** A send is accepted once Redis has its entry (one Lua script:
 *   the instance must be declared, its backlog below its `queueCapacity`, and an idempotency key
 *   already delivered answers with its first receipt instead). When Redis cannot take it the send
 *   rejects with `unavailable`: nothing is accepted and then lost.
 * - **Delivery by the owner.** The owner reads its instances' streams with one consumer group
 *   (`owners`, one consumer per node) in one blocking `XREADGROUP` across all of them, hands each
 *   entry to the instance's local queue (order, retries, pressure and the crash-loop guard as for
 *   any send), and once it settles acknowledges and deletes the entry, remembers a delivered
 *   idempotency key, and answers the sending node, in one script. A stream's length is thus the
 *   instance's backlog.
 * - **Failover.** A node that acquires an instance first claims the previous owner's pending
 *   entries (`XAUTOCLAIM`) and delivers them, in stream order, marked as redeliveries, before any
 *   new one. An entry whose delivery was cut short here (the instance stopped or moved) stays
 *   pending for the next owner.
 * - **Resent appends.** An append whose answer a lost connection took is resent by the client on
 *   the next connection; its script finds the first call's answer kept in Redis and returns it, so
 *   the sends are not appended twice.
 * - **Lost answers.** A read whose answer a lost connection took is not replayed; this node's
 *   pending entries are read again (those it does not hold already) before any new one. A sweep
 *   every few seconds claims pending entries of an owned stream that nobody here holds (left with
 *   another consumer by a read that outlived its stream's move). A settlement Redis could not
 *   take is retried while this node delivers the instance.
 * - **Receipts** travel back on the sending node's reply stream (read with a blocking `XREAD`).
 *
 * Keys (under the cluster's hash tag `{ns}`):
 * - `{ns}:q:<id>` the instance's stream: fields `m` (message JSON), `k` (idempotency key JSON, or
 *   empty), `n` (the node to answer, empty for `ack: 'accepted'`), `c` (the sender's correlation);
 * - `{ns}:r:<nodeId>` a node's reply stream: `c`, `o` (`ok` | `err`), `p` (receipt or error JSON);
 * - `{ns}:dk:<id>:<key>` the first receipt of a delivered idempotency key, for `deliveredKeyTtlMs`.
 * - `{ns}:ans:<nodeId>:<call>` the answer of one append call until it reached the node (a call
 *   resent after a lost connection answers with it instead of appending twice).
 *
 * This module imports ioredis: only cluster mode with durable sends loads it.
 *
 * @packageDocumentation
 */
import type { Redis, RedisOptions } from 'ioredis';
import { DurableAppends, type DurableSendOptions } from './durable-append.js';
import { DurableReads } from './durable-read.js';
import { DurableSettles } from './durable-settle.js';
import type { DurableCounters, DurableHost, DurableOptions, DurableState } from './durable-state.js';
import { clusterClient } from './redis-client.js';

export type { DurableSendOptions } from './durable-append.js';
export type { DurableCounters, DurableHost, DurableOptions } from './durable-state.js';

/**
 * Durable sends of one node (see the module's description). The parts share one
 * {@link DurableState}: {@link DurableAppends} appends and waits for receipts, {@link DurableReads}
 * reads, recovers, sweeps and adopts the owned streams, {@link DurableSettles} settles what was
 * delivered.
 */
export class DurableSends {
  readonly #s: DurableState;
  /** Blocking reads of the owned streams. */
  readonly #reader: Redis;
  /** Blocking reads of this node's replies. */
  readonly #replies: Redis;
  readonly #appends: DurableAppends;
  readonly #reads: DurableReads;
  #loops: Promise<void>[] = [];
  readonly counters: DurableCounters = { appended: 0, settled: 0, claimed: 0, duplicates: 0, recovered: 0, malformed: 0 };

  constructor(options: DurableOptions, readonly host: DurableHost) {
    const prefix = `{${options.namespace}}:`;
    const make = (extra: RedisOptions): Redis => clusterClient(options.redis, extra);
    const cmd = make({ enableAutoPipelining: true });
    this.#s = { o: options, host, prefix, replyKey: `${prefix}r:${options.nodeId}`, cmd, counters: this.counters, closed: false };
    // A read cut by a lost connection is not replayed on the next one: by then this node may no
    // longer own some of the streams it named. The loop reads again with the streams it owns.
    this.#reader = make({ autoResendUnfulfilledCommands: false });
    this.#replies = make({});
    this.#appends = new DurableAppends(this.#s);
    const settles = new DurableSettles(this.#s, (corr, outcome, payload) => this.#appends.answer(corr, outcome, payload));
    this.#reads = new DurableReads(this.#s, this.#reader, settles);
  }

  /** Connects and starts reading replies and owned streams. */
  async start(): Promise<void> {
    const connect = (c: Redis): Promise<void> => (c.status === 'wait' ? c.connect() : Promise.resolve());
    await Promise.all([connect(this.#s.cmd), connect(this.#reader), connect(this.#replies)]);
    await this.#reads.identify();
    this.#loops = [this.#appends.replyLoop(this.#replies), this.#reads.readLoop(), this.#reads.sweepLoop()];
  }

  /**
   * Appends a send to the instance's stream; resolves with the owner's receipt (or, with
   * `ack: 'accepted'`, with `AcceptedSend` once Redis has it).
   */
  send(id: string, message: unknown, options: DurableSendOptions = {}): Promise<unknown> {
    return this.#appends.send(id, message, options);
  }

  /**
   * Starts delivering `id` here (its lease was acquired and its instance started): claims what a
   * previous owner left pending and delivers it first, then reads new entries. Retries while Redis
   * is unreachable, until {@link DurableSends.drop}.
   */
  adopt(id: string): Promise<void> {
    return this.#reads.adopt(id);
  }

  /** Stops reading `id` here (it stops or moves): what was read and is not settled stays pending for the next owner. */
  drop(id: string): void {
    this.#reads.drop(id);
  }

  /** Stops reading any stream (the runtime stops): settlements and replies go on until {@link DurableSends.close}. */
  halt(): void {
    this.#reads.halt();
  }

  /** Ends every loop and connection; waits still open reject with `stopped` (their sends stand). */
  async close(): Promise<void> {
    if (this.#s.closed) return;
    this.#s.closed = true;
    this.halt();
    this.#appends.stopWaiting();
    this.#reads.wakeSweep();
    this.#reader.disconnect();
    this.#replies.disconnect();
    await Promise.allSettled(this.#loops);
    await this.#s.cmd.quit().catch(() => this.#s.cmd.disconnect());
  }

  /** Sends waiting for a receipt. */
  get waiting(): number {
    return this.#appends.waiting;
  }
}
