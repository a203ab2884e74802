/**
 * Inbound data of one hosted instance: the `poll` loop or the `listen` stream, and the flow
 * control of what they produce.
 *
 * Inbound batches are posted from the poll loop (the next poll runs on the next `setImmediate`
 * turn), or, for `listen` channels, `ctx.emit` queues messages and one `inbound` notice per
 * event-loop turn carries them (at most `INBOUND_CHUNK` per notice). No data work runs in a
 * message handler, so heartbeats always get through. A batch that cannot be cloned is sent with
 * functions and symbols dropped (and a `warn` log notice).
 *
 * Batches are numbered; the runtime acknowledges each once `onMessage` handled it
 * (`inbound_ack`), and the instance keeps at most `inboundWindow` batches unacknowledged, so a
 * channel that produces faster than the main thread consumes waits in the worker instead of
 * filling the main thread's port queue (it polls again only when there is credit).
 *
 * @packageDocumentation
 */
import { retryAfterOf } from '../../src/wire/errors.js';
import { INBOUND_CHUNK, type Notice } from '../../src/wire/protocol.js';
import type { AnyChannel, Connection, InstanceContext } from './context.js';
import { cloneable, describe, nextTurn, reasonOf, sleep } from './util.js';

/** The inbound side of one instance: credit, the `emit` outbox, and posting batches. */
export class Inbound {
  readonly #ctx: InstanceContext;
  readonly #window: number;
  #sent = 0;
  #acked = 0;
  #creditWaiters: Array<() => void> = [];
  readonly #outbox: unknown[] = [];
  #outboxCursor: unknown;
  #flushScheduled = false;
  /** Where the channel resumes on (re)connect: the cursor of the last batch handed to the runtime. */
  resumeCursor: unknown;

  constructor(ctx: InstanceContext, window: number, cursor: unknown) {
    this.#ctx = ctx;
    this.#window = window;
    this.resumeCursor = cursor;
  }

  /** `ctx.emit` of a `listen` channel: queues a message for the next flush. */
  readonly emit = (message: unknown, cursor?: unknown): void => {
    if (this.#ctx.stopped) return;
    this.#outbox.push(message);
    if (cursor !== undefined) this.#outboxCursor = cursor;
    this.#scheduleFlush();
  };

  #hasCredit(): boolean {
    return this.#window <= 0 || this.#sent - this.#acked < this.#window;
  }

  /** The runtime handled every batch up to `upTo`. */
  onAck(upTo: number): void {
    if (upTo > this.#acked) this.#acked = upTo;
    const waiters = this.#creditWaiters;
    this.#creditWaiters = [];
    for (const w of waiters) w();
    if (this.#outbox.length > 0) this.#scheduleFlush();
  }

  /** Resolves when another batch may be posted (or the signal aborts). */
  credit(signal: AbortSignal): Promise<void> {
    if (this.#hasCredit() || signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.#creditWaiters.push(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Posts `messages` as numbered batches of at most `INBOUND_CHUNK`; the last one carries `cursor`. */
  post(messages: unknown[], cursor?: unknown): void {
    const ctx = this.#ctx;
    for (let i = 0; i < messages.length; i += INBOUND_CHUNK) {
      const chunk = i === 0 && messages.length <= INBOUND_CHUNK ? messages : messages.slice(i, i + INBOUND_CHUNK);
      const last = i + INBOUND_CHUNK >= messages.length;
      const notice: Notice = { t: 'inbound', i: ctx.iid, messages: chunk, n: ++this.#sent, ...(last && cursor !== undefined ? { cursor } : {}) };
      try {
        ctx.postRaw(notice);
      } catch (err) {
        ctx.log('warn', 'inbound batch not cloneable; functions and symbols dropped', { error: describe(err) });
        ctx.postRaw({ ...notice, messages: chunk.map((m) => cloneable(m) ?? null), ...(notice.cursor !== undefined ? { cursor: cloneable(notice.cursor) } : {}) });
      }
    }
    if (cursor !== undefined) this.resumeCursor = cursor;
  }

  /** Posts what `emit` queued, as far as the credit allows. */
  flush(): void {
    this.#flushScheduled = false;
    if (this.#outbox.length === 0 || !this.#hasCredit()) return; // an ack reschedules the flush
    const batch = this.#outbox.splice(0, INBOUND_CHUNK);
    this.post(batch, this.#outbox.length === 0 ? this.#outboxCursor : undefined);
    if (this.#outbox.length > 0) this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => this.flush());
  }
}

/** Handles an error of `poll` / `listen` on the open connection `conn`. Returns true to go on. */
function inboundError(ctx: InstanceContext, op: 'poll' | 'listen', conn: Connection, err: unknown): boolean {
  if (conn.controller.signal.aborted) return false;
  const cls = ctx.classify(err);
  const reason = reasonOf(op, err);
  if (cls === 'degraded') {
    ctx.report({ t: 'failure', op, reason, class: cls });
    return true;
  }
  if (cls === 'fatal') ctx.enterFatal(reason, `fatal_${op}`, conn);
  else ctx.connectionLost(conn, reason, retryAfterOf(err));
  return false;
}

/** Polls while `conn` is open and there is credit. */
export async function pollLoop(ctx: InstanceContext, channel: AnyChannel, conn: Connection): Promise<void> {
  const poll = channel.poll as NonNullable<AnyChannel['poll']>;
  const signal = conn.controller.signal;
  const { pollMs } = ctx.config.timeouts;
  while (!signal.aborted) {
    await ctx.inbound.credit(signal);
    if (signal.aborted) return;
    if (ctx.fenced()) {
      // Cluster mode: the lease may have passed to another node: no poll until it is renewed.
      await sleep(ctx.config.pollIdleMs, signal);
      continue;
    }
    let batch: unknown;
    let cursor: unknown;
    try {
      batch = await ctx.invoke('poll', pollMs, signal, (c) => poll.call(channel, c));
      if (batch !== null && typeof batch === 'object' && !Array.isArray(batch) && Array.isArray((batch as { messages?: unknown }).messages)) {
        cursor = (batch as { cursor?: unknown }).cursor;
        batch = (batch as { messages: unknown[] }).messages;
      }
      if (batch !== undefined && batch !== null && !Array.isArray(batch)) {
        throw Object.assign(new Error(`poll returned ${typeof batch}, expected an array or { messages, cursor }`), { code: 'invalid_return' });
      }
    } catch (err) {
      if (!inboundError(ctx, 'poll', conn, err)) return;
      await sleep(ctx.config.pollIdleMs, signal);
      continue;
    }
    const messages = (batch ?? []) as unknown[];
    if (messages.length > 0 && ctx.fenced()) {
      // The deadline passed while the poll ran (the process was paused, say): the lease may be
      // another node's by now. The batch is not handed on and its cursor not committed, so the
      // instance's owner polls these messages again from the last committed cursor.
      continue;
    }
    // Messages already fetched are delivered even when the connection ended meanwhile.
    if (messages.length > 0 && !ctx.stopped) {
      ctx.inbound.post(messages, cursor);
      await nextTurn();
    } else {
      await sleep(ctx.config.pollIdleMs, signal);
    }
  }
}

/** Runs `listen` for the open connection `conn`; its end, or its error, ends the connection. */
export function runListen(ctx: InstanceContext, channel: AnyChannel, conn: Connection): void {
  const listen = channel.listen as NonNullable<AnyChannel['listen']>;
  const signal = conn.controller.signal;
  ctx.invoke('listen', Number.POSITIVE_INFINITY, signal, (c) => listen.call(channel, c)).then(
    () => {
      // Returning while its connection is still open means the stream ended: a recoverable loss.
      if (!signal.aborted) ctx.connectionLost(conn, 'listen returned: the stream ended');
    },
    (err: unknown) => {
      if (inboundError(ctx, 'listen', conn, err)) {
        // A degraded listen error still ended the stream.
        ctx.connectionLost(conn, reasonOf('listen', err));
      }
    },
  );
}
