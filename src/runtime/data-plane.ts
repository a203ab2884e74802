/**
 * The runtime's data plane: moves sends from each instance's outbound queue to its worker in
 * credit-windowed batches, applies the worker's acks, and hands inbound batches to `onMessage`
 * with their cursor and credit. One per runtime; everything it needs comes in its context.
 */
import type { EventEmitter } from 'node:events';
import type { MessagePort } from 'node:worker_threads';
import { publish } from '../telemetry.js';
import type { AckResult, InboundAck, SendBatch } from '../wire/protocol.js';
import { isAckRun, readAckRun } from '../wire/validate.js';
import type { Batch } from './outbound/batch.js';
import type { DeliveryFeed } from './outbound/feed.js';
import { OutboundQueue } from './outbound/queue.js';
import type { Entry } from './entry.js';
import type { Resolved } from './options.js';
import { acksSchema } from './protocol.js';

/** Inbound batches a worker may post before `onMessage` has handled the earlier ones. */
export const INBOUND_WINDOW = 8;
/** At most this many sends per batch posted to a worker. */
const MAX_BATCH = 256;

/** The runtime's counters the data plane (and the rest of the runtime) adds to. */
export interface RuntimeCounters {
  /** Messages from workers that failed their schema (logged, counted, dropped). */
  malformed: number;
  /** Inbound messages delivered to `onMessage`. */
  delivered: number;
  /** `onMessage` calls that threw or rejected. */
  handlerErrors: number;
}

/** What the data plane gets from its runtime. */
export interface DataPlaneContext {
  readonly opts: Resolved;
  /** The runtime: queue events are forwarded to it, `message:failed` published on it. */
  readonly emitter: EventEmitter;
  /**
   * `delivery:*` events someone listens to on the runtime, each with the one function that
   * forwards it from every queue (removed from them all once nobody listens any more).
   */
  readonly deliveryForwarded: ReadonlyMap<string, (payload: unknown) => void>;
  /** The runtime's per-batch delivery feed, given to every queue (see outbound/feed.ts). */
  readonly feed: DeliveryFeed;
  readonly counters: RuntimeCounters;
  /** The instance goes to `error` (see the runtime's `#toError`). */
  toError(entry: Entry, reason: string, recover: boolean): void;
  /** Cluster mode: the instance's inbound cursor is committed for the next owner. */
  commitCursor(id: string, cursor: unknown): void;
}

export class DataPlane {
  readonly #ctx: DataPlaneContext;
  readonly #opts: Resolved;
  readonly #counters: RuntimeCounters;

  constructor(ctx: DataPlaneContext) {
    this.#ctx = ctx;
    this.#opts = ctx.opts;
    this.#counters = ctx.counters;
  }

  /** A fresh outbound queue for an instance; `pump` is called when it has sends to hand out. */
  newQueue(instanceId: string, capacity: number, pump: () => void, redact: (text: string) => string): OutboundQueue {
    const emitter = this.#ctx.emitter;
    const queue = new OutboundQueue({
      instanceId,
      capacity,
      dedupeCacheSize: this.#opts.dedupeCacheSize,
      retry: this.#opts.delivery,
      onReady: pump,
      redact,
      feed: this.#ctx.feed,
    });
    queue.on('instance:pressure', (p: unknown) => emitter.emit('instance:pressure', p));
    for (const [event, forward] of this.#ctx.deliveryForwarded) queue.on(event, forward);
    return queue;
  }

  /** Lets a live worker deliver what is queued, at most `shutdownMs`. */
  async drainOutbound(entry: Entry): Promise<void> {
    if (!entry.dataPort || (entry.queue.depth === 0 && entry.queue.inFlight === 0)) return;
    let timer: NodeJS.Timeout | undefined;
    const budget = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#opts.shutdownMs);
    });
    await Promise.race([entry.queue.drained(), budget]);
    clearTimeout(timer);
  }

  /** Hands the worker as many queued sends as its credit window allows, in one batch. */
  pump(entry: Entry): void {
    const port = entry.dataPort;
    // Sends wait on the main thread until the channel is connected: depth and pressure then tell
    // the truth, and a worker that dies while reconnecting holds nothing.
    // Nor to a doomed worker: acks drained from its port after its doom must not send it more.
    if (!port || entry.server.currentStatus !== 'connected' || entry.host?.isDoomed === true) return;
    const { queue } = entry;
    // Everything the credit window admits goes at once, in batches of at most MAX_BATCH: a burst
    // does not wait a round trip for its second batch.
    for (;;) {
      const room = this.#opts.sendWindow - queue.inFlight;
      if (room <= 0) return;
      const batch = queue.take(Math.min(room, MAX_BATCH));
      if (batch.length === 0) return;
      this.#post(entry, port, batch);
    }
  }

  /** Posts one batch taken from the queue; a batch that cannot be cloned fails (fatal). */
  #post(entry: Entry, port: MessagePort, batch: Batch): void {
    const { queue } = entry;
    const n = batch.length;
    // Flat messages of one shape go in columns (see columns.ts); after a batch that does not fit,
    // the next few go by structured clone at once.
    const cols = entry.columns.encode(batch.messages);
    const { seq, sparse } = batch;
    const msg: SendBatch =
      cols === undefined
        ? { t: 'send', i: entry.iid, epoch: batch.epoch, seq, messages: batch.messages }
        : { t: 'send', i: entry.iid, epoch: batch.epoch, seq, n, fields: cols.fields, columns: cols.columns };
    // The per-message details go along only when they say something.
    if (sparse.attempts !== undefined) msg.attempts = sparse.attempts;
    if (sparse.keys !== undefined) msg.keys = sparse.keys.map((k) => (k === undefined ? null : String(k)));
    if (sparse.redelivered !== undefined) msg.redelivered = sparse.redelivered;
    try {
      port.postMessage(msg);
    } catch (err) {
      // A message that cannot be cloned: those sends fail (fatal), the rest of the queue goes on.
      const reason = entry.server.redactReason(err) ?? 'message could not be cloned';
      queue.ack(batch.seqs.map((s) => ({ seq: s, ok: false as const, error: { class: 'fatal' as const, code: 'DataCloneError', reason } })));
    }
  }

  /** Acks from the worker: settles the sends they name, then hands out more. */
  onAcks(entry: Entry, raw: object): void {
    const { server } = entry;
    // The hot path: a run of successes, checked by hand; anything else goes through zod.
    // A worker never holds more than the credit window, so no honest ack names more sends than
    // that: a longer array (a sparse one crosses the boundary almost free) is refused before any
    // work per element.
    if (isAckRun(raw)) {
      const run = readAckRun(raw, this.#opts.sendWindow);
      if (run === undefined) return this.#onMalformedAcks(entry);
      if (run.receipts.length > 0) server.notifySuccess();
      entry.queue.ackRun(run.seq, run.receipts);
      this.pump(entry);
      return;
    }
    const list = (raw as { results?: unknown }).results;
    if (Array.isArray(list) && list.length > this.#opts.sendWindow) return this.#onMalformedAcks(entry);
    const parsed = acksSchema.safeParse(raw);
    if (!parsed.success) return this.#onMalformedAcks(entry);
    const results = parsed.data.results as AckResult[];
    let ok = false;
    for (const r of results) {
      if (r.ok) ok = true;
      else if ('error' in r) {
        server.notifyFailure(r.error.reason);
        if (server.currentStatus === 'error') this.#ctx.toError(entry, `max consecutive failures: ${r.error.reason}`, true);
      }
    }
    if (ok) server.notifySuccess();
    entry.queue.ack(results);
    this.pump(entry);
  }

  #onMalformedAcks(entry: Entry): void {
    this.#counters.malformed++;
    entry.log.warn({ malformedMessages: this.#counters.malformed }, 'malformed acks from instance worker');
  }

  /** Waits for `onMessage` to finish what was delivered, at most `shutdownMs`. */
  async drainInbound(entry: Entry): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const budget = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#opts.shutdownMs);
    });
    await Promise.race([entry.inbound, budget]);
    clearTimeout(timer);
  }

  /**
   * Hands an inbound batch to `onMessage`, in order per instance. Once the whole batch is handled
   * its cursor becomes the instance's (the next worker resumes after it) and the worker gets
   * its credit back.
   */
  deliver(entry: Entry, port: MessagePort, messages: unknown[], n: number | undefined, cursor: unknown): void {
    const onMessage = this.#opts.onMessage;
    const counters = this.#counters;
    const ctx = this.#ctx;
    const meta = { instanceId: entry.id, channelType: entry.server.channelType };
    entry.inbound = entry.inbound.then(async () => {
      if (onMessage) {
        for (const message of messages) {
          try {
            await onMessage(message, meta);
            counters.delivered++;
          } catch (err) {
            counters.handlerErrors++;
            const reason = entry.server.redactReason(err);
            entry.log.warn({ reason }, 'onMessage failed');
            publish(ctx.emitter, 'message:failed', () => ({ ...meta, reason }));
          }
        }
      }
      if (cursor !== undefined) {
        entry.cursor = cursor;
        // Cluster mode: the next owner resumes after it.
        ctx.commitCursor(entry.id, cursor);
      }
      if (n !== undefined) {
        try {
          port.postMessage({ t: 'inbound_ack', i: entry.iid, upTo: n } satisfies InboundAck);
        } catch {
          // the worker is gone; its successor starts from entry.cursor
        }
      }
    });
  }
}
