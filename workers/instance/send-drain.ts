/**
 * The send drain of one hosted instance (the data plane).
 *
 * The runtime posts batches of sends on the data port (a `seq` and parallel arrays: no wrapper
 * object per message to clone); they are delivered one at a time, in order, once the channel is
 * connected (until then they wait here, in flight from the runtime's view: if this thread dies
 * the runtime puts them back at the head of its queue). Results go back batched, flushed once
 * per event-loop turn: a run of successes as `{ seq, receipts }` (in columns when they are flat
 * objects of one shape), anything else as `results`. The loop yields a turn every few sends so a
 * long batch never starves the heartbeat port.
 *
 * One watchdog timer, not a timer per send, enforces `sendMs`: it looks at the send in progress
 * and, past its budget, aborts its signal, fails it, hands back what its epoch holds and starts
 * a fresh loop (the old one, stuck awaiting a send that may never settle, is abandoned).
 *
 * A failed send hands back, unsent, every held message of its epoch or older: the runtime resends
 * them after the failed one, so nothing overtakes it.
 *
 * @packageDocumentation
 */
import { monotonicMs } from '../../src/wire/clock.js';
import type { ChannelContext, SendInfo } from '../../src/channel.js';
import { TimeoutError } from '../../src/errors.js';
import { ColumnEncoder } from '../../src/wire/columns.js';
import { retryAfterOf, wireError } from '../../src/wire/errors.js';
import type { SendResult } from '../../src/wire/protocol.js';
import type { ReadBatch } from '../../src/wire/validate.js';
import type { Connection, InstanceContext } from './context.js';
import { cloneable, codeOf, crash, nextTurn, reasonOf, sleep } from './util.js';
import { runAs } from './fault.js';

/** A batch from the runtime, held until every message in it is sent or handed back. */
interface HeldBatch extends ReadBatch {
  /** Index of the next message to send. */
  next: number;
}

/** The `SendInfo` of the common case, shared: first attempt, no key, not a redelivery. */
const FIRST_ATTEMPT: SendInfo = Object.freeze({ attempt: 1, redelivery: false });
/** How often a fenced send drain looks at the lease deadline again, ms. */
const FENCE_WAIT_MS = 10;

/** The sends of one instance: held batches, the drain loop, its watchdog and the batched acks. */
export class SendDrain {
  readonly #ctx: InstanceContext;
  readonly #held: HeldBatch[] = [];
  #draining = false;
  /** Bumped when the watchdog abandons a drain loop: the loop of an older generation stops. */
  #gen = 0;
  #connectedWaiters: Array<() => void> = [];
  /** The send in progress (seq -1: none), judged by the watchdog. */
  #curSeq = -1;
  #curEpoch = 0;
  #curStartedAt = 0;
  #timer: NodeJS.Timeout | undefined;
  /**
   * The newest epoch handed back. A batch of that epoch or older that arrives later was posted
   * before the runtime learnt of the failure: it goes back unsent as well, or its messages would
   * overtake the one that failed.
   */
  #returnedEpoch = -1;
  // Acks: a run of consecutive successes, or a list of other results; one or the other is
  // pending at a time, so their order on the port is the order they happened in.
  #runSeq = 0;
  #runReceipts: unknown[] = [];
  #results: SendResult[] = [];
  #ackScheduled = false;
  readonly #receiptColumns = new ColumnEncoder();
  /**
   * The sends' own context: one AbortController per connection "lane", child of the connection's
   * signal, replaced only after a send's budget aborted it. Sends run one at a time, so the
   * aborted lane is exactly the timed-out send's; the hot path allocates no controller per send.
   */
  #lane: { conn: Connection; controller: AbortController; ctx: ChannelContext; unlink: () => void } | undefined;

  constructor(ctx: InstanceContext) {
    this.#ctx = ctx;
  }

  /** Takes a batch from the runtime. */
  hold(batch: ReadBatch): void {
    if (batch.epoch <= this.#returnedEpoch) {
      for (let i = 0; i < batch.messages.length; i++) this.#ackResult({ seq: batch.seq + i, ok: false, unsent: true });
      return;
    }
    this.#held.push({ ...batch, next: 0 });
    if (!this.#draining) this.#startDrain();
  }

  /** The connection is open: a drain waiting for it goes on. */
  wake(): void {
    const waiters = this.#connectedWaiters;
    this.#connectedWaiters = [];
    for (const w of waiters) w();
  }

  /** Graceful stop: the watchdog ends. */
  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  // ---- acks -------------------------------------------------------------------------------------

  #flushAcks(): void {
    this.#ackScheduled = false;
    this.#flushRun();
    this.#flushResults();
  }

  #flushRun(): void {
    const n = this.#runReceipts.length;
    if (n === 0) return;
    const receipts = this.#runReceipts;
    this.#runReceipts = [];
    const i = this.#ctx.iid;
    const seq = this.#runSeq;
    // Receipts of one flat shape (the common case) go in columns: see src/wire/columns.ts.
    const cols = this.#receiptColumns.encode(receipts);
    if (cols !== undefined) {
      this.#ctx.postRaw({ t: 'acks', i, seq, n, fields: cols.fields, columns: cols.columns });
      return;
    }
    try {
      this.#ctx.postRaw({ t: 'acks', i, seq, receipts });
    } catch {
      this.#ctx.postRaw({ t: 'acks', i, seq, receipts: receipts.map((r) => cloneable(r) ?? null) });
    }
  }

  #flushResults(): void {
    if (this.#results.length === 0) return;
    const list = this.#results;
    this.#results = [];
    const i = this.#ctx.iid;
    try {
      this.#ctx.postRaw({ t: 'acks', i, results: list });
    } catch {
      this.#ctx.postRaw({ t: 'acks', i, results: list.map((r) => (r.ok ? { ...r, receipt: cloneable(r.receipt) ?? null } : r)) });
    }
  }

  #scheduleAcks(): void {
    if (!this.#ackScheduled) {
      this.#ackScheduled = true;
      setImmediate(() => this.#flushAcks());
    }
  }

  #ackOk(seq: number, receipt: unknown): void {
    if (this.#results.length > 0) this.#flushResults();
    else if (this.#runReceipts.length > 0 && seq !== this.#runSeq + this.#runReceipts.length) this.#flushRun();
    if (this.#runReceipts.length === 0) this.#runSeq = seq;
    this.#runReceipts.push(receipt);
    this.#scheduleAcks();
  }

  #ackResult(result: SendResult): void {
    this.#flushRun();
    this.#results.push(result);
    this.#scheduleAcks();
  }

  #failure(seq: number, err: unknown): SendResult {
    return { seq, ok: false, error: wireError(this.#ctx.classify(err), codeOf(err) ?? 'error', reasonOf('send', err), retryAfterOf(err)) };
  }

  // ---- drain ------------------------------------------------------------------------------------

  /** Resolves with the live connection, waiting for one; undefined once stopping. */
  async #whenConnected(): Promise<Connection | undefined> {
    const ctx = this.#ctx;
    for (;;) {
      if (ctx.stopped) return undefined;
      const conn = ctx.live;
      if (conn && !conn.controller.signal.aborted) return conn;
      await new Promise<void>((resolve) => {
        // Re-check every 50 ms (`live` also changes where no waiter is woken); a waiter that timed
        // out leaves the list, so it does not grow while the channel stays down.
        const timer = setTimeout(() => {
          const i = this.#connectedWaiters.indexOf(wake);
          if (i >= 0) this.#connectedWaiters.splice(i, 1);
          resolve();
        }, 50);
        timer.unref();
        const wake = (): void => {
          clearTimeout(timer);
          resolve();
        };
        this.#connectedWaiters.push(wake);
      });
    }
  }

  /** After a failed send: hand back, unsent, the held messages the runtime will resend after it. */
  #returnHeld(epoch: number): void {
    if (epoch > this.#returnedEpoch) this.#returnedEpoch = epoch;
    const held = this.#held;
    let kept = 0;
    for (const b of held) {
      if (b.epoch <= epoch) {
        for (let i = b.next; i < b.messages.length; i++) this.#ackResult({ seq: b.seq + i, ok: false, unsent: true });
      } else held[kept++] = b;
    }
    held.length = kept;
  }

  #laneFor(conn: Connection): { conn: Connection; controller: AbortController; ctx: ChannelContext } {
    const lane = this.#lane;
    if (lane && lane.conn === conn && !lane.controller.signal.aborted) return lane;
    lane?.unlink(); // the replaced lane no longer listens to its connection
    const controller = new AbortController();
    const parent = conn.controller.signal;
    const onAbort = (): void => controller.abort(parent.reason);
    if (parent.aborted) controller.abort(parent.reason);
    else parent.addEventListener('abort', onAbort, { once: true });
    const next = { conn, controller, ctx: this.#ctx.contextFor(controller.signal), unlink: () => parent.removeEventListener('abort', onAbort) };
    this.#lane = next;
    return next;
  }

  /** The watchdog: fails the send in progress once it is past `sendMs`. */
  #onTimer(): void {
    this.#timer = undefined;
    if (this.#curSeq < 0 || this.#ctx.stopped) return; // idle: the next send arms it again
    const ms = this.#ctx.config.timeouts.sendMs;
    const elapsed = monotonicMs() - this.#curStartedAt;
    if (elapsed < ms) {
      this.#timer = setTimeout(() => this.#onTimer(), Math.ceil(ms - elapsed));
      return;
    }
    const err = new TimeoutError('send', ms);
    this.#lane?.controller.abort(err);
    this.#gen++;
    this.#draining = false;
    const seq = this.#curSeq;
    this.#curSeq = -1;
    this.#ackResult(this.#failure(seq, err));
    this.#returnHeld(this.#curEpoch);
    if (this.#held.length > 0) this.#startDrain();
  }

  /** Starts the drain on behalf of this instance: what `send` schedules carries its number (fault attribution). */
  #startDrain(): void {
    runAs(this.#ctx.iid, () => void this.#drain().catch(crash));
  }

  async #drain(): Promise<void> {
    this.#draining = true;
    const gen = this.#gen;
    const ctx = this.#ctx;
    const ms = ctx.config.timeouts.sendMs;
    const held = this.#held;
    let sinceYield = 0;
    let lastYield = monotonicMs();
    while (held.length > 0) {
      const b = held[0] as HeldBatch;
      if (b.next >= b.messages.length) {
        held.shift();
        continue;
      }
      const current = ctx.live;
      const conn = current && !current.controller.signal.aborted ? current : await this.#whenConnected();
      if (gen !== this.#gen) return;
      const channel = ctx.channel;
      if (!conn || !channel) break;
      if (b !== held[0]) continue; // handed back while waiting for a connection
      if (ctx.fenced()) {
        // Cluster mode: the lease may have passed to another node: no send until it is renewed
        // (or the main thread stops the instance and takes back what is held).
        await sleep(FENCE_WAIT_MS);
        if (gen !== this.#gen) return;
        continue;
      }
      const i = b.next++;
      const seq = b.seq + i;
      const attempt = b.attempts?.[i] ?? 1;
      const key = b.keys?.[i] ?? undefined;
      const redelivery = b.redelivered?.[i] === true;
      const info: SendInfo =
        attempt === 1 && key === undefined && !redelivery ? FIRST_ATTEMPT : key === undefined ? { attempt, redelivery } : { idempotencyKey: key, attempt, redelivery };
      const now = monotonicMs();
      this.#curSeq = seq;
      this.#curEpoch = b.epoch;
      this.#curStartedAt = now;
      this.#timer ??= setTimeout(() => this.#onTimer(), ms);
      let receipt: unknown;
      let error: unknown;
      let failed = false;
      try {
        const r = channel.send(this.#laneFor(conn).ctx, b.messages[i], info);
        receipt = r !== null && typeof (r as { then?: unknown } | undefined)?.then === 'function' ? await r : r;
      } catch (err) {
        failed = true;
        error = err;
      }
      if (gen !== this.#gen) return; // abandoned by the watchdog: this send was already failed
      this.#curSeq = -1;
      if (failed) {
        this.#ackResult(this.#failure(seq, error));
        this.#returnHeld(b.epoch);
      } else this.#ackOk(seq, receipt);
      // Yield a turn every 128 sends or 2 ms, whichever first: acks go out, heartbeats get through.
      if (++sinceYield >= 128 || now - lastYield >= 2) {
        sinceYield = 0;
        await nextTurn();
        if (gen !== this.#gen) return;
        lastYield = monotonicMs();
      }
    }
    this.#draining = false;
  }
}
