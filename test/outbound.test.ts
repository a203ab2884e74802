/**
 * The outbound queue of one instance, as pure logic (no threads): FIFO, capacity, waiting,
 * abort, retries and give-up (fake timers, seeded jitter), fatal/degraded, crash requeue,
 * idempotency and its LRU, pressure with hysteresis, close.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AbortedError, ChannelError, DeliveryFailedError, InvalidConfigError, QueueFullError, StoppedError } from '../src/errors.js';
import { LruCache } from '../src/runtime/lru.js';
import { EMPTY_BATCH, type Batch } from '../src/runtime/outbound/batch.js';
import { Deque } from '../src/runtime/outbound/deque.js';
import { DeliveryFeed } from '../src/runtime/outbound/feed.js';
import { defaultIdempotencyKey } from '../src/runtime/outbound/idempotency.js';
import { OutboundQueue } from '../src/runtime/outbound/queue.js';
import type { AckResult, OutboundQueueOptions } from '../src/runtime/outbound/types.js';
import { ackResultSchema } from '../src/runtime/protocol.js';
import { backoffDelay, resolveBackoff, seededRandom } from '../src/supervisor/backoff.js';

type Msg = { id?: string | number; n: number };
type Ev = { event: string } & Record<string, unknown>;

const DELIVERY_EVENTS = ['queued', 'attempt', 'retry', 'delivered', 'gave_up', 'skipped_duplicate', 'requeued'].map((e) => `delivery:${e}`);

function makeQueue(o: Partial<OutboundQueueOptions> = {}): OutboundQueue<Msg, string> {
  return new OutboundQueue<Msg, string>({ instanceId: 'i1', ...o });
}

/** Acks every item of `batch` as delivered with receipt `r:<n>`. */
function okAll(batch: Batch<Msg>): AckResult<string>[] {
  return batch.seqs.map((seq, i) => ({ seq, ok: true as const, receipt: `r:${(batch.messages[i] as Msg).n}` }));
}

function fail(seq: number, cls: 'recoverable' | 'fatal' | 'degraded', code = 'boom', reason = 'it broke'): AckResult<string> {
  return { seq, ok: false, error: { class: cls, code, reason } };
}

type Tracked = { state: 'pending' | 'resolved' | 'rejected'; value: unknown; settles: number };

/** Tracks how a promise settled (and how many times its callbacks ran). */
function track<T>(p: Promise<T>): Tracked {
  const t: Tracked = { state: 'pending', value: undefined, settles: 0 };
  p.then(
    (v) => {
      t.settles++;
      t.state = 'resolved';
      t.value = v;
    },
    (e: unknown) => {
      t.settles++;
      t.state = 'rejected';
      t.value = e;
    },
  );
  return t;
}

/** Lets pending microtasks (promise callbacks, ready notifications) run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function record(q: OutboundQueue<Msg, string>, names: string[] = [...DELIVERY_EVENTS, 'instance:pressure']): Ev[] {
  const out: Ev[] = [];
  for (const name of names) q.on(name, (p: Record<string, unknown>) => out.push({ event: name, ...p }));
  return out;
}

const ns = (b: Batch<Msg>) => b.messages.map((m) => m.n);
const msgs = (from: number, to: number): Msg[] => Array.from({ length: to - from }, (_, i) => ({ n: from + i }));

afterEach(() => {
  vi.useRealTimers();
});

describe('OutboundQueue: options', { timeout: 10_000 }, () => {
  it('applies the defaults', () => {
    const q = makeQueue();
    expect(q.capacity).toBe(1000);
    expect(q.pressure).toBe('normal');
    expect(q.stats()).toMatchObject({ instanceId: 'i1', depth: 0, inFlight: 0, waiting: 0, capacity: 1000, pressure: 'normal', dedupeCacheSize: 0, enqueued: 0 });
  });

  it('rejects bad options with InvalidConfigError listing every path', () => {
    const bad = {
      instanceId: '',
      capacity: 0,
      dedupeCacheSize: -1,
      retry: { maxAttempts: 0, initialDelayMs: 10, maxDelayMs: 5, jitter: 2 },
      maxCrashes: 0,
      pressure: { warn: 0.9, degraded: 0.8, shed: 1.5 },
      onReady: 'nope',
      extra: 1,
    };
    let err: unknown;
    try {
      new OutboundQueue(bad as unknown as OutboundQueueOptions);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidConfigError);
    const paths = (err as InvalidConfigError).issues.map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(['instanceId', 'capacity', 'dedupeCacheSize', 'retry.maxAttempts', 'retry.jitter', 'maxCrashes', 'pressure.shed', 'onReady', 'extra']));
    expect(() => makeQueue({ retry: { initialDelayMs: 10, maxDelayMs: 5 } })).toThrow(/retry.maxDelayMs/);
    expect(() => makeQueue({ pressure: { warn: 0.9, degraded: 0.8 } })).toThrow(/pressure.degraded/);
    expect(() => makeQueue({ pressure: { warn: 0.1, hysteresis: 0.2 } })).toThrow(/pressure.hysteresis/);
    expect(() => makeQueue({ maxCrashes: Infinity })).not.toThrow();
  });

  it('rejects bad send options with InvalidConfigError, enqueueing nothing', async () => {
    const q = makeQueue();
    await expect(q.enqueue({ n: 1 }, { idempotencyKey: {} as unknown as string })).rejects.toBeInstanceOf(InvalidConfigError);
    await expect(q.enqueue({ n: 1 }, { waitForCapacity: 'yes' as unknown as boolean })).rejects.toThrow(/waitForCapacity/);
    await expect(q.enqueue({ n: 1 }, null as unknown as undefined)).rejects.toBeInstanceOf(InvalidConfigError);
    expect(q.depth).toBe(0);
  });

  it('takes the default key from message.id (string or finite number only)', () => {
    expect(defaultIdempotencyKey({ id: 'a' })).toBe('a');
    expect(defaultIdempotencyKey({ id: 7 })).toBe(7);
    expect(defaultIdempotencyKey({ id: '' })).toBeUndefined();
    expect(defaultIdempotencyKey({ id: NaN })).toBeUndefined();
    expect(defaultIdempotencyKey({ id: {} })).toBeUndefined();
    expect(defaultIdempotencyKey('a')).toBeUndefined();
    expect(defaultIdempotencyKey(null)).toBeUndefined();
  });

  it('exports a wire schema for acks', () => {
    expect(ackResultSchema.safeParse({ seq: 1, ok: true, receipt: 'x' }).success).toBe(true);
    expect(ackResultSchema.safeParse({ seq: 1, ok: false, unsent: true }).success).toBe(true);
    expect(ackResultSchema.safeParse({ seq: 1, ok: false, error: { class: 'fatal', reason: 'x' } }).success).toBe(true);
    expect(ackResultSchema.safeParse({ seq: -1, ok: true }).success).toBe(false);
    expect(ackResultSchema.safeParse({ seq: 1, ok: false, error: { class: 'weird', reason: 'x' } }).success).toBe(false);
    expect(ackResultSchema.safeParse({ t: 'status' }).success).toBe(false);
  });
});

describe('OutboundQueue: FIFO dispatch', { timeout: 10_000 }, () => {
  it('an error thrown by onReady goes on as an uncaught exception, not a rejection', async () => {
    const boom = new Error('onReady broke');
    const deferred: Array<() => void> = [];
    const spy = vi.spyOn(process, 'nextTick').mockImplementation(((fn: () => void) => void deferred.push(fn)) as typeof process.nextTick);
    try {
      const q = makeQueue({
        onReady: () => {
          throw boom;
        },
      });
      void q.enqueue({ n: 1 }).catch(() => undefined);
      await flush();
      expect(deferred).toHaveLength(1);
      expect(() => deferred[0]?.()).toThrow(boom);
      q.close();
    } finally {
      spy.mockRestore();
    }
  });

  it('keeps per-message details only once one message differs, filled in for those before it', () => {
    const q = makeQueue({ retry: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } });
    q.enqueue({ n: 0 }, { idempotencyKey: null }).catch(() => undefined);
    q.enqueue({ n: 1 }, { idempotencyKey: 'k1' }).catch(() => undefined);
    q.enqueue({ n: 2 }, { idempotencyKey: null }).catch(() => undefined);
    const b = q.take(10);
    expect(b.sparse).toEqual({ attempts: undefined, redelivered: undefined, keys: [undefined, 'k1', undefined] });
    expect(b.seqs).toEqual([b.seq, b.seq + 1, b.seq + 2]);
    // 1 fails once (attempt 2 next), 2 goes back unsent: a redelivery on its first attempt
    q.ack([{ seq: b.seq, ok: true, receipt: 'r0' }, fail(b.seq + 1, 'recoverable'), { seq: b.seq + 2, ok: false, unsent: true }]);
    q.enqueue({ n: 3 }, { idempotencyKey: null }).catch(() => undefined);
    const again = q.take(10);
    expect(ns(again)).toEqual([1, 2, 3]);
    expect(again.sparse.attempts).toEqual([2, 1, 1]);
    expect(again.sparse.redelivered).toEqual([true, true, false]);
    expect(again.keys).toEqual(['k1', undefined, undefined]);
    q.close();
  });

  it('hands messages out in order, in batches up to the credit, and resolves with receipts', async () => {
    const q = makeQueue();
    const ps = msgs(0, 10).map((m) => track(q.enqueue(m)));
    expect(q.depth).toBe(10);
    const b1 = q.take(3);
    expect(ns(b1)).toEqual([0, 1, 2]);
    expect(b1.attempts).toEqual([1, 1, 1]);
    expect(b1.keys).toEqual([undefined, undefined, undefined]);
    expect(b1.redelivered).toEqual([false, false, false]);
    expect(b1.sparse).toEqual({}); // nothing but defaults: nothing extra goes on the wire
    expect(b1.seq).toBe(0);
    const b2 = q.take(100);
    expect(ns(b2)).toEqual([3, 4, 5, 6, 7, 8, 9]);
    expect([...b1.seqs, ...b2.seqs]).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(q.depth).toBe(0);
    expect(q.inFlight).toBe(10);
    // acks in any order, in batches
    q.ack(okAll(b2).reverse());
    q.ack(okAll(b1));
    await flush();
    expect(ps.map((p) => p.value)).toEqual(msgs(0, 10).map((m) => `r:${m.n}`));
    expect(q.inFlight).toBe(0);
    expect(q.counters).toMatchObject({ enqueued: 10, delivered: 10 });
  });

  it('returns the shared empty batch when nothing can be taken', () => {
    const q = makeQueue();
    expect(q.take(10)).toBe(EMPTY_BATCH);
    void q.enqueue({ n: 1 });
    expect(q.take(0)).toBe(EMPTY_BATCH);
    expect(q.take(Number.NaN)).toBe(EMPTY_BATCH);
    expect(q.take(1).length).toBe(1);
  });

  it('signals readiness once per burst of synchronous enqueues (one batch), one message at once when idle', async () => {
    const q = makeQueue();
    const batches: number[][] = [];
    q.onReady = () => batches.push(ns(q.take(64)));
    void q.enqueue({ n: 1 });
    await flush();
    expect(batches).toEqual([[1]]);
    for (let i = 2; i <= 6; i++) void q.enqueue({ n: i });
    expect(batches).toHaveLength(1);
    await flush();
    expect(batches).toEqual([[1], [2, 3, 4, 5, 6]]);
  });

  it('does not signal readiness when nothing is takeable any more', async () => {
    const onReady = vi.fn();
    const q = makeQueue({ onReady });
    void q.enqueue({ n: 1 });
    q.take(1);
    await flush();
    expect(onReady).not.toHaveBeenCalled();
  });

  it('ignores stale, duplicate and unknown acks', async () => {
    const q = makeQueue();
    const p = track(q.enqueue({ n: 1 }));
    const b = q.take(1);
    q.ack([...okAll(b), ...okAll(b), { seq: 999, ok: true, receipt: 'x' }, { seq: 0.5, ok: true, receipt: 'y' }]);
    await flush();
    expect(p).toMatchObject({ state: 'resolved', value: 'r:1', settles: 1 });
    expect(q.counters.staleAcks).toBe(3);
  });
});

describe('OutboundQueue: capacity', { timeout: 10_000 }, () => {
  it('rejects with QueueFullError at once when full, enqueueing nothing', async () => {
    const q = makeQueue({ capacity: 3 });
    for (let i = 0; i < 3; i++) void q.enqueue({ n: i });
    const err = await q.enqueue({ n: 3 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QueueFullError);
    expect(err).toMatchObject({ code: 'queue_full', details: { capacity: 3 } });
    expect(q.depth).toBe(3);
    expect(q.counters.rejectedFull).toBe(1);
    expect(ns(q.take(10))).toEqual([0, 1, 2]);
  });

  it('waitForCapacity waits FIFO for room, then proceeds; plain sends do not overtake waiters', async () => {
    const q = makeQueue({ capacity: 2 });
    const events = record(q, ['delivery:queued']);
    void q.enqueue({ n: 0 });
    void q.enqueue({ n: 1 });
    const w2 = track(q.enqueue({ n: 2 }, { waitForCapacity: true }));
    const w3 = track(q.enqueue({ n: 3 }, { waitForCapacity: true }));
    expect(q.waiting).toBe(2);
    expect(q.depth).toBe(2);
    const b1 = q.take(1); // room for one: n=2 moves in
    expect(ns(b1)).toEqual([0]);
    expect(q.waiting).toBe(1);
    expect(q.depth).toBe(2);
    // a waiter is still there: a non-waiting send is rejected even though take just freed room
    await expect(q.enqueue({ n: 99 })).rejects.toBeInstanceOf(QueueFullError);
    const b2 = q.take(10);
    expect(ns(b2)).toEqual([1, 2]);
    expect(q.waiting).toBe(0);
    expect(ns(q.take(10))).toEqual([3]);
    q.ack(okAll(b2));
    await flush();
    expect(w2).toMatchObject({ state: 'resolved', value: 'r:2' });
    expect(w3.state).toBe('pending');
    expect(events.map((e) => e.messageId)).toEqual([0, 1, 2, 3]);
    expect(q.counters.enqueued).toBe(4);
  });

  it('an already aborted signal rejects at once with AbortedError, even with room', async () => {
    const q = makeQueue();
    const ac = new AbortController();
    ac.abort(new Error('caller gave up'));
    const err = await q.enqueue({ n: 1 }, { signal: ac.signal, waitForCapacity: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AbortedError);
    expect(err).toMatchObject({ code: 'aborted', cause: ac.signal.reason });
    expect(q.depth).toBe(0);
    expect(q.counters.aborted).toBe(1);
  });

  it('a signal aborting while waiting rejects with AbortedError; later waiters keep their turn', async () => {
    const q = makeQueue({ capacity: 1 });
    void q.enqueue({ n: 0 });
    const ac = new AbortController();
    const w1 = track(q.enqueue({ id: 'k1', n: 1 }, { waitForCapacity: true, signal: ac.signal }));
    const w2 = track(q.enqueue({ n: 2 }, { waitForCapacity: true, signal: new AbortController().signal }));
    ac.abort();
    await flush();
    expect(w1.state).toBe('rejected');
    expect(w1.value).toBeInstanceOf(AbortedError);
    expect(q.waiting).toBe(1);
    expect(ns(q.take(1))).toEqual([0]);
    expect(ns(q.take(1))).toEqual([2]);
    expect(w2.state).toBe('pending');
    // the aborted waiter's key is free again: a new send with it is queued, not joined
    void q.enqueue({ id: 'k1', n: 11 });
    expect(ns(q.take(1))).toEqual([11]);
    ac.abort(); // no effect any more
    expect(q.counters.aborted).toBe(1);
  });

  it('drops aborted waiters lazily and compacts when many abort', async () => {
    const q = makeQueue({ capacity: 1 });
    void q.enqueue({ n: 0 });
    const keep = track(q.enqueue({ n: 1 }, { waitForCapacity: true }));
    const acs = Array.from({ length: 100 }, () => new AbortController());
    const ws = acs.map((ac, i) => track(q.enqueue({ n: 100 + i }, { waitForCapacity: true, signal: ac.signal })));
    const last = track(q.enqueue({ n: 2 }, { waitForCapacity: true }));
    for (const ac of acs) ac.abort();
    await flush();
    expect(ws.every((w) => w.state === 'rejected')).toBe(true);
    expect(q.waiting).toBe(2);
    expect(ns(q.take(1))).toEqual([0]);
    expect(ns(q.take(1))).toEqual([1]);
    expect(ns(q.take(1))).toEqual([2]);
    expect(q.waiting).toBe(0);
    expect([keep.state, last.state]).toEqual(['pending', 'pending']);
    // all waiters aborting empties the waiting line
    const ac = new AbortController();
    void q.enqueue({ n: 3 });
    const w = track(q.enqueue({ n: 4 }, { waitForCapacity: true, signal: ac.signal }));
    ac.abort();
    await flush();
    expect(w.state).toBe('rejected');
    expect(q.waiting).toBe(0);
    void q.take(1);
    expect(q.depth).toBe(0);
  });
});

describe('OutboundQueue: runs of successes', { timeout: 10_000 }, () => {
  it('ackRun settles consecutive seqs with their receipts, counts seqs in flight nowhere as stale', async () => {
    const q = makeQueue();
    const events = record(q, ['delivery:delivered']);
    const ps = [0, 1, 2, 3].map((n) => track(q.enqueue({ n })));
    const b = q.take(4);
    expect(b.seqs).toEqual([b.seqs[0], (b.seqs[0] as number) + 1, (b.seqs[0] as number) + 2, (b.seqs[0] as number) + 3]);
    q.ackRun(b.seqs[1] as number, ['r1', 'r2']); // the middle of the batch first: any order
    q.ackRun(b.seqs[3] as number, ['r3', 'extra']); // one beyond what is in flight
    q.ackRun(b.seqs[0] as number, ['r0']);
    q.ackRun(b.seqs[0] as number, ['again']); // settled already
    await flush();
    expect(ps.map((p) => p.value)).toEqual(['r0', 'r1', 'r2', 'r3']);
    expect(q).toMatchObject({ inFlight: 0, depth: 0 });
    expect(q.counters).toMatchObject({ delivered: 4, staleAcks: 2 });
    expect(events.map((e) => e.seq)).toEqual([b.seqs[1], b.seqs[2], b.seqs[3], b.seqs[0]]);
    q.close();
    q.ackRun(0, ['late', 'late']);
    expect(q.counters.staleAcks).toBe(4);
  });

  it('a run that settles what a returned message waited for lets it go out again', async () => {
    const onReady = vi.fn();
    const q = makeQueue({ onReady, retry: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } });
    const ps = [0, 1].map((n) => track(q.enqueue({ n })));
    const b = q.take(2);
    q.ack([fail(b.seqs[0] as number, 'recoverable')]); // 0 back, due at once
    onReady.mockClear();
    expect(q.take(1).length).toBe(0); // 0 waits: 1, accepted after it, is still in flight
    q.ackRun(b.seqs[1] as number, ['r1']);
    await flush();
    expect(onReady).toHaveBeenCalled();
    const again = q.take(1);
    expect(ns(again)).toEqual([0]);
    q.ackRun(again.seqs[0] as number, ['r0']);
    await flush();
    expect(ps.map((p) => p.value)).toEqual(['r0', 'r1']);
  });
});

describe('OutboundQueue: the delivery feed', { timeout: 10_000 }, () => {
  it('taps hear of each run of deliveries with their times, and of failures, retries and duplicates, without listeners', async () => {
    let t = 1000;
    const feed = new DeliveryFeed();
    const q = makeQueue({ feed, now: () => t, retry: { maxAttempts: 2, initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } });
    const runs: Array<[string, number, number[]]> = [];
    const heard: string[] = [];
    const remove = feed.add({ delivered: (id, n, ms) => runs.push([id, n, Array.from(ms.subarray(0, n))]), event: (id, ev) => heard.push(`${id} ${ev}`) });
    const ps = [0, 1, 2, 3].map((n) => track(q.enqueue({ n }, { idempotencyKey: `k${n}` })));
    t = 1010;
    const b = q.take(4);
    t = 1025;
    q.ackRun(b.seqs[1] as number, ['r1', 'r2']);
    q.ackRun(b.seqs[1] as number, ['again']); // stale: no run
    t = 1030;
    q.ack([{ seq: b.seqs[0] as number, ok: true, receipt: 'r0' }, fail(b.seqs[3] as number, 'recoverable')]);
    const retried = q.take(1);
    q.ack([fail(retried.seqs[0] as number, 'recoverable')]); // its 2nd attempt: gave up
    await flush();
    expect(ps.map((p) => p.state)).toEqual(['resolved', 'resolved', 'resolved', 'rejected']);
    expect(await q.enqueue({ n: 1 }, { idempotencyKey: 'k1' })).toBe('r1');
    expect(runs).toEqual([
      ['i1', 2, [25, 25]],
      ['i1', 1, [30]],
    ]);
    expect(heard).toEqual(['i1 delivery:retry', 'i1 delivery:gave_up', 'i1 delivery:skipped_duplicate']);
    expect(q.listenerCount('delivery:delivered')).toBe(0);
    remove();
    remove();
    expect(feed.taps).toEqual([]);
    q.close();
  });
});

describe('OutboundQueue: enqueueMany', { timeout: 10_000 }, () => {
  it('settles a batch together, one outcome per message in order, as one enqueue per message would', async () => {
    const onReady = vi.fn();
    const q = makeQueue({ capacity: 4, onReady, retry: { maxAttempts: 1 } });
    const many = track(q.enqueueMany([{ n: 0 }, { n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]));
    await flush();
    expect(onReady).toHaveBeenCalledTimes(1); // one pull for the whole batch
    expect(q).toMatchObject({ depth: 4 });
    const b = q.take(10);
    expect(ns(b)).toEqual([0, 1, 2, 3]);
    q.ackRun(b.seqs[0] as number, ['r0', 'r1']);
    q.ack([fail(b.seqs[2] as number, 'fatal', 'forbidden'), { seq: b.seqs[3] as number, ok: true, receipt: 'r3' }]);
    await flush();
    expect(many.state).toBe('resolved');
    const outcomes = many.value as Array<{ ok: boolean; receipt?: string; error?: Error }>;
    expect(outcomes.map((o) => (o.ok ? o.receipt : (o.error as { code?: string }).code))).toEqual(['r0', 'r1', 'delivery_failed', 'r3', 'queue_full']);
    expect(outcomes[4]?.error).toBeInstanceOf(QueueFullError);
    expect(q.counters).toMatchObject({ enqueued: 4, delivered: 3, gaveUp: 1, rejectedFull: 1 });
    await expect(q.enqueueMany([])).resolves.toEqual([]);
  });

  it('dedupes by each message id: against delivered keys, pending ones and its own', async () => {
    const q = makeQueue();
    const first = track(q.enqueue({ id: 'a', n: 0 }));
    const b1 = q.take(1);
    q.ackRun(b1.seqs[0] as number, ['ra']);
    await flush();
    expect(first.value).toBe('ra');
    const pending = track(q.enqueue({ id: 'b', n: 1 }));
    const many = track(q.enqueueMany([{ id: 'a', n: 2 }, { id: 'b', n: 3 }, { id: 'c', n: 4 }, { id: 'c', n: 5 }]));
    const single = track(q.enqueue({ id: 'c', n: 6 })); // joins the batch's pending 'c'
    const b2 = q.take(10);
    expect(ns(b2)).toEqual([1, 4]); // 'a' delivered, 'b' pending, the second 'c' pending in the batch
    q.ackRun(b2.seqs[0] as number, ['rb', 'rc']);
    await flush();
    expect(pending.value).toBe('rb');
    expect(single.value).toBe('rc');
    expect((many.value as Array<{ receipt: string }>).map((o) => o.receipt)).toEqual(['ra', 'rb', 'rc', 'rc']);
    expect(q.counters.duplicatesSkipped).toBe(4);
  });

  it('waits for room with waitForCapacity; one abort listener for the batch aborts what still waits', async () => {
    const q = makeQueue({ capacity: 2 });
    const ac = new AbortController();
    const many = track(q.enqueueMany([{ n: 0 }, { n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }], { waitForCapacity: true, signal: ac.signal }));
    expect(q).toMatchObject({ depth: 2, waiting: 3 });
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    const b = q.take(1); // room for one waiter
    expect(q).toMatchObject({ depth: 2, waiting: 2 });
    ac.abort(new Error('caller gave up'));
    expect(q).toMatchObject({ waiting: 0 });
    q.ackRun(b.seqs[0] as number, ['r0']);
    const rest = q.take(10);
    expect(ns(rest)).toEqual([1, 2]);
    q.ackRun(rest.seqs[0] as number, ['r1', 'r2']);
    await flush();
    const outcomes = many.value as Array<{ ok: boolean; receipt?: string; error?: { code: string; cause?: unknown } }>;
    expect(outcomes.map((o) => (o.ok ? o.receipt : o.error?.code))).toEqual(['r0', 'r1', 'r2', 'aborted', 'aborted']);
    expect((outcomes[3]?.error?.cause as Error).message).toBe('caller gave up');
    expect(q.counters.aborted).toBe(2);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
  });

  it('a closed queue or an aborted signal settles every message at once; bad arguments reject', async () => {
    const q = makeQueue();
    const ac = new AbortController();
    ac.abort();
    const aborted = await q.enqueueMany([{ n: 0 }, { n: 1 }], { signal: ac.signal });
    expect(aborted.map((o) => (o.ok ? 'ok' : (o.error as AbortedError).code))).toEqual(['aborted', 'aborted']);
    await expect(q.enqueueMany({ n: 0 } as unknown as Msg[])).rejects.toBeInstanceOf(InvalidConfigError);
    await expect(q.enqueueMany([{ n: 0 }], { idempotencyKey: 'k' } as never)).rejects.toMatchObject({ code: 'invalid_config', issues: [expect.objectContaining({ path: 'idempotencyKey' })] });
    const unreadable = { n: 1, get id(): string {
      throw new Error('no id here');
    } };
    await expect(q.enqueueMany([{ n: 0 }, unreadable])).rejects.toThrow('no id here');
    expect(q.depth).toBe(0); // nothing taken
    const waiting = track(makeQueue({ capacity: 1 }).enqueueMany([{ n: 0 }], {}));
    await flush();
    expect(waiting.state).toBe('pending');
    const inQueue = q.enqueueMany([{ n: 1 }, { n: 2 }]);
    q.close('instance stopped');
    const stopped = await inQueue;
    expect(stopped.every((o) => !o.ok && (o.error as StoppedError).code === 'stopped')).toBe(true);
    const after = await q.enqueueMany([{ n: 3 }]);
    expect(after[0]).toMatchObject({ ok: false, error: expect.any(StoppedError) });
    expect(q.counters.stopped).toBe(3);
  });
});

describe('OutboundQueue: retries and failures', { timeout: 10_000 }, () => {
  it("a failure's retryAfterMs is a floor on the retry delay, reported by delivery:retry and kept on the final error", async () => {
    let clock = 0;
    const q = makeQueue({ retry: { maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 10, jitter: 0 }, now: () => clock });
    const events = record(q);
    const p = q.enqueue({ n: 1 });
    await flush();
    const b1 = q.take(1);
    q.ack([{ seq: b1.seqs[0] as number, ok: false, error: { class: 'recoverable', code: 'rate_limited', reason: 'slow down', retryAfterMs: 500 } }]);
    expect(events.find((e) => e.event === 'delivery:retry')).toMatchObject({ delayMs: 500, retryAfterMs: 500, code: 'rate_limited' });
    clock = 499;
    expect(q.take(1)).toBe(EMPTY_BATCH);
    clock = 500;
    const b2 = q.take(1);
    expect(b2.attempts).toEqual([2]);
    // The last attempt fails too: the final error keeps its retryAfterMs.
    q.ack([{ seq: b2.seqs[0] as number, ok: false, error: { class: 'recoverable', code: 'rate_limited', reason: 'slow down', retryAfterMs: 3 } }]);
    const err = (await p.then(
      () => undefined,
      (e: unknown) => e,
    )) as DeliveryFailedError;
    expect(err).toBeInstanceOf(DeliveryFailedError);
    expect(err.lastError).toMatchObject({ channelCode: 'rate_limited', retryAfterMs: 3 });
  });

  it('a retry timer that fires before the clock reaches the retry time is armed again, never lost', async () => {
    // libuv dates a timer from the loop's cached time, which lags the clock under load: the
    // timer can fire while `now` is still short of the retry time. The queue must wait again.
    vi.useFakeTimers();
    let clock = 0;
    const onReady = vi.fn();
    const q = makeQueue({ retry: { maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 10, jitter: 0 }, onReady, now: () => clock });
    const p = track(q.enqueue({ n: 1 }));
    await flush();
    const b1 = q.take(1);
    onReady.mockClear();
    q.ack([fail(b1.seqs[0] as number, 'recoverable')]); // due at clock 10
    clock = 6; // the timer fires while the clock is 4 ms short
    await vi.advanceTimersByTimeAsync(10);
    await flush();
    expect(onReady).not.toHaveBeenCalled();
    expect(vi.getTimerCount()).toBe(1); // armed again for the rest
    clock = 10;
    await vi.advanceTimersByTimeAsync(4);
    await flush();
    expect(onReady).toHaveBeenCalledTimes(1);
    const b2 = q.take(1);
    expect(b2.attempts).toEqual([2]);
    q.ack(okAll(b2));
    await flush();
    expect(p.state).toBe('resolved');
  });

  it('retries a recoverable failure after a jittered backoff, the head blocking what is behind it, then gives up at maxAttempts', async () => {
    vi.useFakeTimers();
    const retry = { maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 1000, jitter: 0.2 };
    const expected = resolveBackoff({ ...retry, random: seededRandom(7) });
    const onReady = vi.fn();
    const q = makeQueue({ retry: { ...retry, random: seededRandom(7) }, onReady });
    const events = record(q);
    const a = track(q.enqueue({ id: 'a', n: 1 }));
    const b = track(q.enqueue({ n: 2 }));
    await flush();
    expect(onReady).toHaveBeenCalledTimes(1);

    const b1 = q.take(10);
    expect(ns(b1)).toEqual([1, 2]);
    const epoch0 = b1.epoch;
    // the worker fails `a` and, keeping order, returns `b` unsent
    q.ack([fail(b1.seqs[0] as number, 'recoverable', 'rate_limited'), { seq: b1.seqs[1] as number, ok: false, unsent: true }]);
    const d0 = backoffDelay(expected, 0);
    expect(d0).toBeGreaterThanOrEqual(80);
    expect(d0).toBeLessThanOrEqual(120);
    expect(events.filter((e) => e.event === 'delivery:retry')).toEqual([
      expect.objectContaining({ instanceId: 'i1', messageId: 'a', attempt: 1, nextAttempt: 2, delayMs: d0, class: 'recoverable', code: 'rate_limited' }),
    ]);
    expect(q.depth).toBe(2);
    expect(q.epoch).toBe(epoch0 + 1);
    expect(q.ready).toBe(false);
    expect(q.take(10)).toBe(EMPTY_BATCH); // the retrying head blocks `b` (strict order)
    vi.advanceTimersByTime(Math.floor(d0));
    await flush();
    expect(q.take(10)).toBe(EMPTY_BATCH);
    vi.advanceTimersByTime(1);
    await flush();
    expect(onReady).toHaveBeenCalledTimes(2);
    expect(q.ready).toBe(true);

    const b2 = q.take(10);
    expect(ns(b2)).toEqual([1, 2]);
    expect(b2.attempts).toEqual([2, 1]); // unsent did not count as an attempt
    expect(b2.epoch).toBe(epoch0 + 1);
    q.ack([fail(b2.seqs[0] as number, 'recoverable'), { seq: b2.seqs[1] as number, ok: true, receipt: 'rb' }]);
    await flush();
    expect(b).toMatchObject({ state: 'resolved', value: 'rb' });
    const d1 = backoffDelay(expected, 1);
    expect(d1).toBeGreaterThanOrEqual(160);
    expect(d1).toBeLessThanOrEqual(240);
    vi.advanceTimersByTime(Math.ceil(d1));
    const b3 = q.take(10);
    expect(b3.attempts).toEqual([3]);
    q.ack([fail(b3.seqs[0] as number, 'recoverable', 'rate_limited', 'slow down')]);
    await flush();
    expect(a.state).toBe('rejected');
    const err = a.value as DeliveryFailedError;
    expect(err).toBeInstanceOf(DeliveryFailedError);
    expect(err).toMatchObject({ code: 'delivery_failed', attempts: 3, reason: 'max_attempts' });
    expect(err.lastError).toBeInstanceOf(ChannelError);
    expect(err.lastError).toMatchObject({ class: 'recoverable', channelCode: 'rate_limited', message: 'slow down' });
    expect(err.cause).toBe(err.lastError);

    const seen = events.filter((e) => e.event !== 'delivery:queued' && e.event !== 'instance:pressure');
    expect(seen.map((e) => `${e.event}:${String(e.messageId)}:${String(e.attempt)}`)).toEqual([
      'delivery:attempt:a:1',
      'delivery:attempt:1:1',
      'delivery:retry:a:1',
      'delivery:attempt:a:2',
      'delivery:attempt:1:1',
      'delivery:retry:a:2',
      'delivery:delivered:1:1',
      'delivery:attempt:a:3',
      'delivery:gave_up:a:3',
    ]);
    expect(events.find((e) => e.event === 'delivery:gave_up')).toMatchObject({ reason: 'max_attempts', class: 'recoverable', code: 'rate_limited', error: 'slow down' });
    expect(events.find((e) => e.event === 'delivery:delivered')).toMatchObject({ queuedMs: 0, totalMs: expect.any(Number) });
    expect(q.counters).toMatchObject({ retried: 2, gaveUp: 1, delivered: 1, unsent: 1 });
    // a key that gave up is not cached: it can be sent again
    void q.enqueue({ id: 'a', n: 9 });
    expect(ns(q.take(1))).toEqual([9]);
  });

  it('retries at once with initialDelayMs 0', async () => {
    const q = makeQueue({ retry: { initialDelayMs: 0 } });
    const onReady = vi.fn();
    q.onReady = onReady;
    const p = track(q.enqueue({ n: 1 }));
    await flush();
    q.ack([fail(q.take(1).seqs[0] as number, 'recoverable')]);
    await flush();
    expect(onReady).toHaveBeenCalledTimes(2);
    const b = q.take(1);
    expect(b.attempts).toEqual([2]);
    q.ack(okAll(b));
    await flush();
    expect(p.state).toBe('resolved');
  });

  it('fails at once on fatal and degraded errors; the queue goes on', async () => {
    const q = makeQueue();
    const events = record(q, ['delivery:gave_up', 'delivery:retry']);
    const f = track(q.enqueue({ n: 1 }));
    const d = track(q.enqueue({ n: 2 }));
    const ok = track(q.enqueue({ n: 3 }));
    const b = q.take(10);
    q.ack([fail(b.seqs[0] as number, 'fatal', 'invalid_credentials'), fail(b.seqs[1] as number, 'degraded', 'unsupported'), okAll(b)[2] as AckResult<string>]);
    await flush();
    expect(f.value).toMatchObject({ code: 'delivery_failed', attempts: 1, reason: 'fatal', lastError: { class: 'fatal', channelCode: 'invalid_credentials' } });
    expect(d.value).toMatchObject({ code: 'delivery_failed', attempts: 1, reason: 'degraded', lastError: { class: 'degraded', channelCode: 'unsupported' } });
    expect(ok.value).toBe('r:3');
    expect(events.map((e) => `${e.event}:${String(e.reason)}`)).toEqual(['delivery:gave_up:fatal', 'delivery:gave_up:degraded']);
  });

  it('treats an ack without error as a recoverable failure and an unknown class as fatal', async () => {
    const q = makeQueue({ retry: { maxAttempts: 1 } });
    const a = track(q.enqueue({ n: 1 }));
    const b = track(q.enqueue({ n: 2 }));
    const batch = q.take(2);
    q.ack([
      { seq: batch.seqs[0], ok: false } as unknown as AckResult<string>,
      { seq: batch.seqs[1], ok: false, error: { class: 'weird', reason: 'x' } } as unknown as AckResult<string>,
    ]);
    await flush();
    expect(a.value).toMatchObject({ reason: 'max_attempts', lastError: { class: 'recoverable' } });
    expect(b.value).toMatchObject({ reason: 'fatal', lastError: { class: 'fatal' } });
  });

  it('a retrying message keeps its place among later retries and crash requeues (order by acceptance)', async () => {
    vi.useFakeTimers();
    const q = makeQueue({ retry: { initialDelayMs: 50, jitter: 0 } });
    for (let i = 0; i < 6; i++) void q.enqueue({ n: i });
    const b1 = q.take(3); // 0 1 2
    q.ack([fail(b1.seqs[1] as number, 'recoverable')]); // 1 retries (blocks at the head)
    q.ack([{ seq: b1.seqs[2] as number, ok: false, unsent: true }]); // 2 comes back behind 1
    expect(q.take(10)).toBe(EMPTY_BATCH);
    vi.advanceTimersByTime(50);
    const b2 = q.take(2); // 1 2
    expect(ns(b2)).toEqual([1, 2]);
    expect(q.requeueInFlight('worker exited', { crashed: false })).toBe(3); // 0, 1, 2 in flight
    expect(ns(q.take(10))).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('a message that went back waits until every message accepted after it left flight (strict order)', async () => {
    const onReady = vi.fn();
    const q = makeQueue({ retry: { initialDelayMs: 0 }, onReady });
    for (let i = 0; i < 4; i++) void q.enqueue({ n: i });
    await flush();
    onReady.mockClear();
    const b = q.take(3); // 0 1 2
    q.ack([fail(b.seqs[0] as number, 'recoverable')]); // 0 back, no backoff, but 1 and 2 are in flight
    expect(q.ready).toBe(false);
    expect(q.take(10)).toBe(EMPTY_BATCH);
    q.ack([{ seq: b.seqs[1] as number, ok: false, unsent: true }]);
    expect(q.take(10)).toBe(EMPTY_BATCH);
    await flush();
    onReady.mockClear();
    q.ack([{ seq: b.seqs[2] as number, ok: false, unsent: true }]); // the cooperating worker returns the rest
    await flush();
    expect(onReady).toHaveBeenCalledTimes(1);
    const again = q.take(10);
    expect(ns(again)).toEqual([0, 1, 2, 3]);
    expect(again.attempts).toEqual([2, 1, 1, 1]);
    // a non-cooperating worker delivers what it had: the returned message goes once that is acked
    const q2 = makeQueue({ retry: { initialDelayMs: 0 }, onReady });
    for (let i = 0; i < 3; i++) void q2.enqueue({ n: i });
    const c = q2.take(3);
    q2.ack([fail(c.seqs[0] as number, 'recoverable')]);
    expect(q2.take(10)).toBe(EMPTY_BATCH);
    onReady.mockClear();
    q2.ack(okAll(c).slice(1));
    await flush();
    expect(onReady).toHaveBeenCalledTimes(1);
    expect(ns(q2.take(10))).toEqual([0]);
  });

  it('an earlier message coming back goes before a later one already back, and re-arms the timer earlier', async () => {
    vi.useFakeTimers();
    const rolls = [0.99, 0];
    const onReady = vi.fn();
    const q = makeQueue({ retry: { initialDelayMs: 100, jitter: 0.5, random: () => rolls.shift() ?? 0.5 }, onReady });
    for (let i = 0; i < 4; i++) void q.enqueue({ n: i });
    await flush();
    onReady.mockClear();
    const b = q.take(3); // 0 1 2
    q.ack([fail(b.seqs[2] as number, 'recoverable')]); // 2 back, due in 149 ms
    q.ack([fail(b.seqs[1] as number, 'recoverable')]); // 1 back before it, due in 50 ms: the timer moves up
    expect(q.take(10)).toBe(EMPTY_BATCH);
    vi.advanceTimersByTime(50);
    await flush();
    expect(onReady).toHaveBeenCalledTimes(1);
    const one = q.take(10);
    expect(ns(one)).toEqual([1]); // 2 still waits out its backoff, blocking 3
    vi.advanceTimersByTime(99);
    expect(ns(q.take(10))).toEqual([2, 3]);
    q.ack([{ seq: one.seqs[0] as number, ok: false, unsent: true }]); // 1 back
    // 0, 2 and 3 come back around 1
    expect(q.requeueInFlight('crash', { crashed: false })).toBe(3);
    expect(ns(q.take(10))).toEqual([0, 1, 2, 3]);
  });
});

describe('OutboundQueue: crash requeue', { timeout: 10_000 }, () => {
  it('puts 64 in-flight messages back at the head in order, ahead of 500 newer ones; every promise settles once', async () => {
    const q = makeQueue();
    const events = record(q, ['delivery:requeued']);
    const first = msgs(0, 64).map((m) => track(q.enqueue(m)));
    const inFlight = q.take(64);
    expect(q.inFlight).toBe(64);
    const rest = msgs(64, 564).map((m) => track(q.enqueue(m)));
    expect(q.depth).toBe(500);
    expect(q.requeueInFlight('worker exited (crash)')).toBe(64);
    expect(q.inFlight).toBe(0);
    expect(q.depth).toBe(564);
    expect(events).toEqual([expect.objectContaining({ count: 64, reason: 'worker exited (crash)', crashed: true })]);
    // late acks of the dead worker are ignored
    q.ack(okAll(inFlight));
    expect(q.counters.staleAcks).toBe(64);
    const all = q.take(10_000);
    expect(ns(all)).toEqual(msgs(0, 564).map((m) => m.n));
    expect(all.attempts.every((a) => a === 1)).toBe(true); // a crash is not an attempt
    expect(all.epoch).toBe(inFlight.epoch + 1);
    q.ack(okAll(all));
    await flush();
    const ps = [...first, ...rest];
    expect(ps.every((p) => p.state === 'resolved' && p.settles === 1)).toBe(true);
    expect(ps.map((p) => p.value)).toEqual(msgs(0, 564).map((m) => `r:${m.n}`));
    expect(q.counters).toMatchObject({ enqueued: 564, delivered: 564, requeued: 64 });
  });

  it('requeues only unacknowledged messages, and may exceed capacity (nothing is dropped)', async () => {
    const q = makeQueue({ capacity: 10 });
    for (let i = 0; i < 10; i++) void q.enqueue({ n: i });
    const b = q.take(10);
    for (let i = 10; i < 20; i++) void q.enqueue({ n: i });
    q.ack(okAll(b).slice(0, 4));
    expect(q.requeueInFlight('hang')).toBe(6);
    expect(q.depth).toBe(16);
    expect(q.pressure).toBe('shed');
    expect(ns(q.take(100))).toEqual([4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    expect(q.requeueInFlight('nothing to do', { crashed: false })).toBe(16);
    expect(makeQueue().requeueInFlight('empty')).toBe(0);
  });

  it('charges each crash to the oldest unacknowledged message and fails it at maxCrashes (poison message)', async () => {
    const q = makeQueue({ maxCrashes: 2 });
    const events = record(q, ['delivery:gave_up']);
    const poison = track(q.enqueue({ id: 'poison', n: 0 }));
    const other = track(q.enqueue({ n: 1 }));
    q.take(10);
    q.requeueInFlight('crash 1');
    q.take(10);
    q.requeueInFlight('restart', { crashed: false }); // planned: nobody charged
    q.take(10);
    q.requeueInFlight('crash 2');
    await flush();
    expect(poison.state).toBe('rejected');
    expect(poison.value).toMatchObject({ code: 'delivery_failed', reason: 'crashed', attempts: 0, lastError: { class: 'fatal', channelCode: 'worker_crashed' } });
    expect(String((poison.value as Error).message)).toMatch(/worker died 2 time/);
    expect(events).toEqual([expect.objectContaining({ messageId: 'poison', reason: 'crashed' })]);
    const b = q.take(10);
    expect(ns(b)).toEqual([1]);
    expect(b.attempts).toEqual([1]);
    q.ack(okAll(b));
    await flush();
    expect(other.value).toBe('r:1');
  });

  it('never charges crashes with maxCrashes Infinity', () => {
    const q = makeQueue({ maxCrashes: Infinity });
    void q.enqueue({ n: 0 });
    for (let i = 0; i < 20; i++) {
      q.take(1);
      expect(q.requeueInFlight('crash')).toBe(1);
    }
  });
});

describe('OutboundQueue: idempotency', { timeout: 10_000 }, () => {
  it('a duplicate while queued or in flight shares the promise and is not sent again', async () => {
    const q = makeQueue();
    const events = record(q, ['delivery:skipped_duplicate']);
    const p1 = q.enqueue({ id: 'k', n: 1 });
    const p2 = q.enqueue({ id: 'x', n: 2 }, { idempotencyKey: 'k' });
    expect(p2).toBe(p1);
    expect(q.depth).toBe(1);
    const b = q.take(10);
    expect(b.keys).toEqual(['k']);
    const p3 = q.enqueue({ id: 'k', n: 3 });
    expect(p3).toBe(p1);
    q.ack(okAll(b));
    await expect(p1).resolves.toBe('r:1');
    expect(events.map((e) => e.state)).toEqual(['pending', 'pending']);
    expect(q.counters).toMatchObject({ enqueued: 1, duplicatesSkipped: 2 });
  });

  it('a key already delivered resolves at once with the first receipt, without sending', async () => {
    const q = makeQueue();
    const events = record(q, ['delivery:skipped_duplicate', 'delivery:queued']);
    const p1 = q.enqueue({ id: 42, n: 1 });
    q.ack(okAll(q.take(1)));
    await expect(p1).resolves.toBe('r:1');
    await expect(q.enqueue({ id: 42, n: 2 })).resolves.toBe('r:1');
    expect(q.depth).toBe(0);
    expect(events.map((e) => `${e.event}:${String(e.messageId)}`)).toEqual(['delivery:queued:42', 'delivery:skipped_duplicate:42']);
    expect(events[1]).toMatchObject({ state: 'delivered', attempt: 0 });
    // a different type is a different key; null disables the default key
    void q.enqueue({ id: '42', n: 3 });
    void q.enqueue({ id: 42, n: 4 }, { idempotencyKey: null });
    expect(ns(q.take(10))).toEqual([3, 4]);
  });

  it('caches undefined receipts too', async () => {
    const q = new OutboundQueue<Msg, undefined>({ instanceId: 'i1' });
    const p = q.enqueue({ id: 'u', n: 1 });
    q.ack([{ seq: q.take(1).seqs[0] as number, ok: true, receipt: undefined }]);
    await p;
    await expect(q.enqueue({ id: 'u', n: 2 })).resolves.toBeUndefined();
    expect(q.depth).toBe(0);
  });

  it('evicts the least recently used key at dedupeCacheSize + 1; an evicted key is sent again', async () => {
    const q = makeQueue({ dedupeCacheSize: 2 });
    const deliver = async (id: string, n: number) => {
      const p = q.enqueue({ id, n });
      q.ack(okAll(q.take(10)));
      return p;
    };
    await deliver('k1', 1);
    await deliver('k2', 2);
    await expect(q.enqueue({ id: 'k1', n: 9 })).resolves.toBe('r:1'); // k1 now most recent
    await deliver('k3', 3); // evicts k2, not k1
    expect(q.stats().dedupeCacheSize).toBe(2);
    await expect(q.enqueue({ id: 'k1', n: 9 })).resolves.toBe('r:1');
    expect(q.depth).toBe(0);
    const again = q.enqueue({ id: 'k2', n: 22 });
    expect(q.depth).toBe(1); // sent again
    q.ack(okAll(q.take(10)));
    await expect(again).resolves.toBe('r:22');
  });

  it('dedupeCacheSize 0 disables the cache (keys still join pending sends)', async () => {
    const q = makeQueue({ dedupeCacheSize: 0 });
    const p = q.enqueue({ id: 'k', n: 1 });
    expect(q.enqueue({ id: 'k', n: 1 })).toBe(p);
    q.ack(okAll(q.take(1)));
    await p;
    void q.enqueue({ id: 'k', n: 2 });
    expect(q.depth).toBe(1);
  });

  it('a duplicate of a waiting send joins it', async () => {
    const q = makeQueue({ capacity: 1 });
    void q.enqueue({ n: 0 });
    const w = q.enqueue({ id: 'w', n: 1 }, { waitForCapacity: true });
    expect(q.enqueue({ id: 'w', n: 1 })).toBe(w);
    expect(q.waiting).toBe(1);
  });
});

describe('OutboundQueue: pressure', { timeout: 10_000 }, () => {
  it('moves normal → warn → degraded → shed and back down with hysteresis', () => {
    const q = makeQueue({ capacity: 100 });
    const events = record(q, ['instance:pressure']);
    const levels = () => events.map((e) => `${String(e.previous)}>${String(e.level)}@${String(e.depth)}`);
    for (let i = 0; i < 69; i++) void q.enqueue({ n: i });
    expect(q.pressure).toBe('normal');
    void q.enqueue({ n: 69 });
    expect(q.pressure).toBe('warn');
    // hysteresis: dipping just below 0.70 does not leave warn
    q.take(1);
    void q.enqueue({ n: 70 });
    expect(events).toHaveLength(1);
    for (let i = 71; i <= 95; i++) void q.enqueue({ n: i });
    expect(levels()).toEqual(['normal>warn@70', 'warn>degraded@85', 'degraded>shed@95']);
    q.take(5); // 90: shed holds until below 0.90
    expect(q.pressure).toBe('shed');
    q.take(1); // 89
    expect(q.pressure).toBe('degraded');
    q.take(9); // 80
    expect(q.pressure).toBe('degraded');
    q.take(1); // 79
    expect(q.pressure).toBe('warn');
    q.take(14); // 65
    expect(q.pressure).toBe('warn');
    q.take(1); // 64
    expect(q.pressure).toBe('normal');
    expect(levels()).toEqual(['normal>warn@70', 'warn>degraded@85', 'degraded>shed@95', 'shed>degraded@89', 'degraded>warn@79', 'warn>normal@64']);
    expect(events[0]).toMatchObject({ instanceId: 'i1', capacity: 100, at: expect.any(Number) });
  });

  it('compares thresholds exactly (no floating-point drift at the boundaries)', () => {
    // 0.28 × 25 = 7.000000000000001 and 0.4 − 0.05 = 0.35000000000000003 in floating point
    const q = makeQueue({ capacity: 25, pressure: { warn: 0.28 } });
    for (let i = 0; i < 6; i++) void q.enqueue({ n: i });
    expect(q.pressure).toBe('normal');
    void q.enqueue({ n: 6 }); // 7 / 25 = 0.28
    expect(q.pressure).toBe('warn');
    const r = makeQueue({ capacity: 100, pressure: { warn: 0.4, hysteresis: 0.05 } });
    for (let i = 0; i < 40; i++) void r.enqueue({ n: i });
    expect(r.pressure).toBe('warn');
    r.take(4); // 36
    expect(r.pressure).toBe('warn');
    r.take(1); // 0.35 < 0.35000000000000003
    expect(r.pressure).toBe('normal');
  });

  it('skips levels in one step, both ways', () => {
    const q = makeQueue({ capacity: 100 });
    const events = record(q, ['instance:pressure']);
    for (let i = 0; i < 50; i++) void q.enqueue({ n: i });
    q.take(50);
    for (let i = 50; i < 100; i++) void q.enqueue({ n: i });
    q.requeueInFlight('crash'); // 50 → 100
    expect(q.take(100).length).toBe(100); // 100 → 0
    expect(events.map((e) => `${String(e.previous)}>${String(e.level)}`)).toEqual(['normal>shed', 'shed>normal']);
  });

  it('publishes on diagnostics_channel threadvisor:instance:pressure and threadvisor:delivery:*', () => {
    const got: Array<[string, unknown]> = [];
    const subs = ['threadvisor:instance:pressure', 'threadvisor:delivery:queued', 'threadvisor:delivery:attempt', 'threadvisor:delivery:delivered'].map((name) => {
      const fn = (m: unknown) => got.push([name, m]);
      diagnostics_channel.subscribe(name, fn);
      return () => diagnostics_channel.unsubscribe(name, fn);
    });
    try {
      const q = makeQueue({ instanceId: 'dc', capacity: 2, pressure: { warn: 0.5, degraded: 0.75, shed: 1, hysteresis: 0.1 } });
      void q.enqueue({ n: 1 });
      q.ack(okAll(q.take(1)));
      // the level changes with the depth, before the event of the message that changed it
      expect(got.map(([n]) => n)).toEqual([
        'threadvisor:instance:pressure',
        'threadvisor:delivery:queued',
        'threadvisor:instance:pressure',
        'threadvisor:delivery:attempt',
        'threadvisor:delivery:delivered',
      ]);
      expect(got[0]?.[1]).toMatchObject({ instanceId: 'dc', level: 'warn', previous: 'normal', depth: 1, capacity: 2 });
    } finally {
      for (const unsub of subs) unsub();
    }
  });

  it('builds no payload when nobody listens', () => {
    const q = makeQueue({ capacity: 10 });
    const spy = vi.spyOn(Date, 'now');
    for (let i = 0; i < 10; i++) void q.enqueue({ id: `k${i}`, n: i });
    q.ack(okAll(q.take(10)));
    void q.enqueue({ id: 'k1', n: 1 });
    expect(spy).not.toHaveBeenCalled(); // publish stamps `at` only when it builds a payload
    spy.mockRestore();
  });
});

describe('OutboundQueue: close and drain', { timeout: 10_000 }, () => {
  it('close settles everything queued, in flight and waiting with StoppedError', async () => {
    vi.useFakeTimers();
    const q = makeQueue({ capacity: 3 });
    const ps = [0, 1, 2].map((n) => track(q.enqueue({ n })));
    const b = q.take(2); // 0 and 1 in flight
    q.ack([fail(b.seqs[0] as number, 'recoverable')]); // 0 back, a retry timer is armed
    const admitted = track(q.enqueue({ n: 3 }, { waitForCapacity: true })); // room: queued
    const ac = new AbortController();
    const aborted = track(q.enqueue({ n: 4 }, { waitForCapacity: true, signal: ac.signal }));
    const w = track(q.enqueue({ n: 5 }, { waitForCapacity: true, signal: new AbortController().signal }));
    ac.abort();
    expect(q).toMatchObject({ depth: 3, inFlight: 1, waiting: 1 });
    const drained = track(q.drained());
    expect(q.close('instance stopped')).toBe(5);
    expect(q.close('again')).toBe(0);
    await flush();
    expect(aborted.value).toBeInstanceOf(AbortedError);
    for (const p of [...ps, admitted, w]) {
      expect(p.state).toBe('rejected');
      expect(p.settles).toBe(1);
      expect(p.value).toBeInstanceOf(StoppedError);
    }
    expect((ps[0]?.value as Error).message).toMatch(/instance stopped/);
    expect(drained.state).toBe('resolved');
    expect(vi.getTimerCount()).toBe(0);
    expect(q).toMatchObject({ closed: true, depth: 0, inFlight: 0, waiting: 0, pressure: 'normal' });
    await expect(q.enqueue({ n: 9 })).rejects.toMatchObject({ code: 'stopped' });
    q.ack(okAll(b));
    expect(q.take(10)).toBe(EMPTY_BATCH);
    expect(q.requeueInFlight('x')).toBe(0);
    expect(q.counters).toMatchObject({ stopped: 6, staleAcks: 2 });
    expect(makeQueue().close()).toBe(0);
  });

  it('drained resolves once nothing is queued, in flight or waiting', async () => {
    const q = makeQueue();
    await q.drained();
    void q.enqueue({ n: 1 });
    void q.enqueue({ n: 2 });
    const d = track(q.drained());
    const b = q.take(10);
    q.ack(okAll(b).slice(0, 1));
    await flush();
    expect(d.state).toBe('pending');
    q.requeueInFlight('x');
    q.ack(okAll(q.take(10)));
    await flush();
    expect(d.state).toBe('resolved');
    // a requeue that gives the last message up drains too
    const q2 = makeQueue({ maxCrashes: 1 });
    void q2.enqueue({ n: 1 }).catch(() => undefined);
    q2.take(1);
    const d2 = q2.drained();
    q2.requeueInFlight('crash');
    await d2;
  });
});

describe('Deque', { timeout: 10_000 }, () => {
  it('is a FIFO/LIFO ring that grows and wraps around', () => {
    const d = new Deque<number>(3);
    expect(d.shift()).toBeUndefined();
    expect(d.peek()).toBeUndefined();
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 10; i++) d.push(i);
      d.unshift(-1);
      expect(d.length).toBe(11);
      expect(d.get(0)).toBe(-1);
      expect(d.get(10)).toBe(9);
      expect(d.get(11)).toBeUndefined();
      expect(d.get(-1)).toBeUndefined();
      d.set(1, 100);
      d.set(50, 5);
      const out: number[] = [];
      for (let v = d.shift(); v !== undefined; v = d.shift()) out.push(v);
      expect(out).toEqual([-1, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }
    for (let i = 0; i < 40; i++) d.unshift(i);
    expect(d.peek()).toBe(39);
    d.clear();
    expect(d.length).toBe(0);
  });
});

describe('LruCache', { timeout: 10_000 }, () => {
  it('evicts the least recently used key; reads refresh recency', () => {
    const c = new LruCache<string, number>(2);
    c.set('a', 1);
    c.set('b', 2);
    expect(c.get('a')).toBe(1);
    c.set('c', 3);
    expect([...c.keys()]).toEqual(['a', 'c']);
    expect(c.has('b')).toBe(false);
    expect(c.get('b')).toBeUndefined();
    c.set('a', 10);
    expect([...c.keys()]).toEqual(['c', 'a']);
    expect(c.evictions).toBe(1);
    expect(c.delete('c')).toBe(true);
    expect(c.size).toBe(1);
    c.clear();
    expect(c.size).toBe(0);
    const off = new LruCache<string, number>(0);
    off.set('a', 1);
    expect(off.size).toBe(0);
  });

  it('reuses freed slots and keeps the order through deletes anywhere', () => {
    const c = new LruCache<number, string>(4);
    for (let i = 0; i < 4; i++) c.set(i, `v${i}`);
    expect(c.delete(1)).toBe(true);
    expect(c.delete(1)).toBe(false);
    expect(c.delete(3)).toBe(true); // the most recent
    expect(c.delete(0)).toBe(true); // the least recent
    expect([...c.keys()]).toEqual([2]);
    c.set(5, 'v5');
    c.set(6, 'v6');
    c.set(7, 'v7');
    expect(c.evictions).toBe(0);
    expect(c.get(2)).toBe('v2');
    c.set(8, 'v8'); // full: evicts 5
    expect([...c.keys()]).toEqual([6, 7, 2, 8]);
    expect(c.get(5)).toBeUndefined();
    expect(c.evictions).toBe(1);
    c.set(8, 'v8b'); // already the most recent
    expect(c.get(8)).toBe('v8b');
    // a long run through a small cache keeps exactly the last `capacity` keys
    for (let i = 100; i < 10_100; i++) c.set(i, `v${i}`);
    expect([...c.keys()]).toEqual([10_096, 10_097, 10_098, 10_099]);
    expect(c.size).toBe(4);
  });
});
