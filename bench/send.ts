/**
 * End-to-end send throughput and latency of the Runtime (`rt.send` → outbound queue → data port
 * → instance worker → loopback channel `send` → batched acks → promise resolved), each next to a
 * baseline measured in the same run against a bare echo worker (bench/raw-echo-worker.ts) that
 * acknowledges the same message objects with no runtime in between:
 * - raw single: one `postMessage` per message, one ack per message;
 * - raw batched: arrays of 256 messages, one ack array per batch.
 *
 * Figures:
 * - saturation throughput (msgs/s), the target figure: a producer per instance keeps as many
 *   sends outstanding as the default `queueCapacity` (1000) admits and sends the next message
 *   as each one settles (a closed loop, the way a gateway saturates the library as designed),
 *   200 000 messages a round (the steady state: a short round mostly measures the ramp after the
 *   forced GC between rounds), for 1, 2 and 4 instances, vs raw batched (target >= 0.5x) and raw
 *   single (informational); the same with `rt.sendMany` in batches of 250 (1 and 2 instances);
 * - informational: the floor of a one-promise-per-send API (the same closed loop over the bare
 *   echo worker: one promise per message, batched posts, nothing else); a burst (50 000 messages
 *   enqueued at once into a queue big enough to take them, so that 50 000 pending sends and their
 *   promises live at once); and the default capacity with `waitForCapacity`;
 * - latency (ms): at half the measured 1-instance saturation rate, send at a steady rate
 *   (1 ms timer pacing, catch-up) for a few seconds and record each message's enqueue →
 *   resolve time; p50 and p99 (the rounds pooled), next to the same rate
 *   over raw batched (each tick's messages as one array) and raw single (one post per message;
 *   it saturates near this rate, so its tail is informational only), with the main thread's GC
 *   pauses during the runtime's rounds; the same at a fixed 50 000 msgs/s (informational). The
 *   tail's targets, against the hand-rolled baseline at half its saturation, are bench/tail.ts's.
 *
 * - the fair baseline (targets 1.0x, sendMany 1.3x): what a user would write by hand instead
 *   (see {@link HandRolled} and bench/handrolled-worker.ts), in the same closed loop and burst.
 *
 * Baselines and subjects run interleaved, round by round, so drift on a noisy machine hits both
 * alike.
 */
import { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { Runtime } from '../src/index.js';
import { HandRolled, handRolledBurst, handRolledClosed } from './handrolled.js';
import { compare, pct, quick, report, summary } from './lib.js';
import { closedLoop, maxOf, paced, round3, withGcPauses, type Paced } from './paced.js';

const logger = pino({ level: 'silent' });
/** Messages per saturation round: long enough (about half a second) to measure the steady state, not the ramp. */
const N = quick ? 20_000 : 200_000;
/** Messages of the burst rows (all enqueued at once). */
const BURST_N = quick ? 10_000 : 50_000;
const ROUNDS = quick ? 3 : 5;
const BATCH = 256;
const MULTI = [2, 4] as const;
const LAT_MS = quick ? 1500 : 3000;
const LAT_ROUNDS = quick ? 1 : 3;
const LAT_WARM_MS = quick ? 300 : 1000;
/** A fixed, moderate rate for an informational latency figure (a busy gateway, far from saturation). */
const MODERATE_RATE = 50_000;
const DEFAULT_CAPACITY = 1000;
const MANY_BATCH = 250;
const rawWorker = new URL('./raw-echo-worker.js', import.meta.url);

type Msg = { room: string; text: string; n: number };
type Ack = { n: number; ok: true };

const gc = (globalThis as { gc?: () => void }).gc;
const settle = async (): Promise<void> => {
  gc?.();
  await new Promise((r) => setTimeout(r, 20));
};

const messages: Msg[] = Array.from({ length: N }, (_, n) => ({ room: 'r1', text: `hello ${n}`, n }));
const burst = messages.slice(0, BURST_N);

// ─────────────────────────────────────────────────────────── baselines

async function startRaw(): Promise<Worker> {
  const w = new Worker(rawWorker);
  await new Promise((r) => w.once('message', r));
  return w;
}

/** One postMessage per message, one ack per message; msgs/s. */
async function rawSingle(w: Worker, msgs: readonly Msg[]): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let got = 0;
    const on = (): void => {
      if (++got === msgs.length) {
        w.off('message', on);
        resolve();
      }
    };
    w.on('message', on);
    for (const m of msgs) w.postMessage(m);
  });
  return msgs.length / ((performance.now() - t0) / 1000);
}

/** Arrays of {@link BATCH} messages, one ack array per batch; msgs/s. */
async function rawBatched(w: Worker, msgs: readonly Msg[]): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let got = 0;
    const on = (acks: Ack[]): void => {
      got += acks.length;
      if (got >= msgs.length) {
        w.off('message', on);
        resolve();
      }
    };
    w.on('message', on);
    for (let i = 0; i < msgs.length; i += BATCH) w.postMessage(msgs.slice(i, i + BATCH));
  });
  return msgs.length / ((performance.now() - t0) / 1000);
}

/**
 * The floor of a one-promise-per-send API over the same transport, measured the way the subject
 * is: a closed loop keeping `outstanding` sends in flight, each send a promise resolved by its
 * ack, queued sends posted in batches of up to {@link BATCH} once per microtask turn, to the
 * bare echo worker (no runtime, no channel, no bookkeeping beyond an array of resolvers); msgs/s.
 */
async function rawClosedPromises(w: Worker, msgs: readonly Msg[], outstanding = DEFAULT_CAPACITY): Promise<number> {
  const resolvers = new Array<(() => void) | undefined>(msgs.length);
  let queued: Msg[] = [];
  let scheduled = false;
  const pump = (): void => {
    scheduled = false;
    for (let i = 0; i < queued.length; i += BATCH) w.postMessage(queued.slice(i, i + BATCH));
    queued = [];
  };
  const send = (m: Msg): Promise<void> =>
    new Promise<void>((resolve) => {
      resolvers[m.n] = resolve;
      queued.push(m);
      if (!scheduled) {
        scheduled = true;
        queueMicrotask(pump);
      }
    });
  const on = (acks: Ack[]): void => {
    for (const a of acks) {
      const r = resolvers[a.n];
      resolvers[a.n] = undefined;
      r?.();
    }
  };
  w.on('message', on);
  try {
    return await closedLoop(msgs, send, outstanding);
  } finally {
    w.off('message', on);
  }
}

// ─────────────────────────────────────────────────────────── subject

/** Enqueues every message at once (round-robin over `ids`) and awaits them all; msgs/s. */
async function rtBurst(rt: Runtime, ids: readonly string[], msgs: readonly Msg[], waitForCapacity = false): Promise<number> {
  let failed = 0;
  let firstError: unknown;
  const opts = waitForCapacity ? { waitForCapacity: true } : undefined;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let settled = 0;
    const done = (): void => {
      if (++settled === msgs.length) resolve();
    };
    const fail = (err: unknown): void => {
      failed++;
      firstError ??= err;
      done();
    };
    const k = ids.length;
    for (let i = 0; i < msgs.length; i++) rt.send(ids[i % k] as string, msgs[i], opts).then(done, fail);
  });
  const dt = performance.now() - t0;
  if (failed > 0) throw new Error(`${failed} of ${msgs.length} sends failed; first: ${String(firstError)}`);
  return msgs.length / (dt / 1000);
}

/**
 * A closed loop per instance: `outstanding` sends in flight per instance, the next message sent
 * as each settles, until every message was sent (spread evenly over `ids`); msgs/s.
 */
async function rtClosed(rt: Runtime, ids: readonly string[], msgs: readonly Msg[], outstanding = DEFAULT_CAPACITY): Promise<number> {
  let failed = 0;
  let firstError: unknown;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let settled = 0;
    let next = 0;
    const k = ids.length;
    const sendNext = (id: string): void => {
      const m = msgs[next++] as Msg;
      rt.send(id, m).then(
        () => done(id),
        (err: unknown) => {
          failed++;
          firstError ??= err;
          done(id);
        },
      );
    };
    const done = (id: string): void => {
      if (++settled === msgs.length) resolve();
      else if (next < msgs.length) sendNext(id);
    };
    for (let i = 0; i < outstanding * k && next < msgs.length; i++) sendNext(ids[i % k] as string);
  });
  const dt = performance.now() - t0;
  if (failed > 0) throw new Error(`${failed} of ${msgs.length} sends failed; first: ${String(firstError)}`);
  return msgs.length / (dt / 1000);
}

/**
 * The closed loop with `rt.sendMany`: batches of `batch` messages, `outstanding` messages in
 * flight per instance, the next batch sent as each settles; msgs/s.
 */
async function rtClosedMany(rt: Runtime, ids: readonly string[], msgs: readonly Msg[], batch = MANY_BATCH, outstanding = DEFAULT_CAPACITY): Promise<number> {
  let failed = 0;
  let firstError: unknown;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let settled = 0;
    let next = 0;
    const k = ids.length;
    const sendNext = (id: string): void => {
      const part = msgs.slice(next, next + batch);
      next += part.length;
      rt.sendMany(id, part).then(
        (outcomes) => {
          for (const o of outcomes) {
            if (!o.ok) {
              failed++;
              firstError ??= o.error;
            }
          }
          done(id, outcomes.length);
        },
        (err: unknown) => {
          failed += part.length;
          firstError ??= err;
          done(id, part.length);
        },
      );
    };
    const done = (id: string, n: number): void => {
      settled += n;
      if (settled === msgs.length) resolve();
      else if (next < msgs.length) sendNext(id);
    };
    for (let i = 0; i < (outstanding / batch) * k && next < msgs.length; i++) sendNext(ids[i % k] as string);
  });
  const dt = performance.now() - t0;
  if (failed > 0) throw new Error(`${failed} of ${msgs.length} sends failed; first: ${String(firstError)}`);
  return msgs.length / (dt / 1000);
}

// ─────────────────────────────────────────────────────────── latency

async function rtLatency(rt: Runtime, id: string, rate: number, ms = LAT_MS): Promise<Paced> {
  let failed = 0;
  let firstError: unknown;
  const res = await paced(rate, ms, (i, record) => {
    const t = performance.now();
    rt.send(id, { room: 'r1', text: `hello ${i}`, n: i }).then(
      () => record(performance.now() - t),
      (err: unknown) => {
        failed++;
        firstError ??= err;
        record(Number.NaN);
      },
    );
  });
  // An open-loop producer past what the main thread sustains fills the queue: that is a result
  // (the backlog, then queue_full backpressure), not a crash of the bench. Latencies are of the
  // sends that were delivered.
  if (failed > 0) console.log(`  ${failed} of ${res.sent} paced sends refused at ${rate} msgs/s; first: ${String(firstError)}`);
  return res;
}

async function rawLatency(w: Worker, rate: number, ms = LAT_MS): Promise<Paced> {
  const t0 = new Float64Array(Math.ceil((rate * ms) / 1000) + 16);
  let rec: ((latencyMs: number) => void) | undefined;
  const on = (a: Ack): void => rec?.(performance.now() - (t0[a.n] as number));
  w.on('message', on);
  try {
    return await paced(rate, ms, (i, record) => {
      rec = record;
      t0[i] = performance.now();
      w.postMessage({ room: 'r1', text: `hello ${i}`, n: i } satisfies Msg);
    });
  } finally {
    w.off('message', on);
  }
}

/** Raw batched at a steady rate: what each tick makes due goes as one array (one ack array back). */
async function rawBatchedLatency(w: Worker, rate: number, ms = LAT_MS): Promise<Paced> {
  const t0 = new Float64Array(Math.ceil((rate * ms) / 1000) + 16);
  let rec: ((latencyMs: number) => void) | undefined;
  let due: Msg[] = [];
  const on = (acks: Ack[]): void => {
    const now = performance.now();
    for (const a of acks) rec?.(now - (t0[a.n] as number));
  };
  w.on('message', on);
  try {
    return await paced(
      rate,
      ms,
      (i, record) => {
        rec = record;
        t0[i] = performance.now();
        due.push({ room: 'r1', text: `hello ${i}`, n: i });
      },
      () => {
        for (let i = 0; i < due.length; i += BATCH) w.postMessage(due.slice(i, i + BATCH));
        due = [];
      },
    );
  } finally {
    w.off('message', on);
  }
}

interface LatencySet {
  rate: number;
  rounds: number;
  rt: { p50: number; p99: number; max: number; n: number };
  rawSingle: { p50: number; p99: number; max: number; n: number };
  rawBatched: { p50: number; p99: number; max: number; n: number };
  perRound: { rtP99: number[]; rawSingleP99: number[]; rawBatchedP99: number[] };
  achievedRate: { rt: number[]; rawSingle: number[]; rawBatched: number[] };
  /** Main-thread GC pauses during the runtime's rounds. */
  rtGc: { count: number; totalMs: number; maxMs: number }[];
}

/**
 * Latency at `rate`: `rounds` rounds of raw single, raw batched and the runtime, interleaved,
 * after a warm-up of each at that rate; the rounds' samples pooled for the percentiles.
 */
async function latencySet(rt: Runtime, id: string, w: Worker, rate: number, rounds: number): Promise<LatencySet> {
  // warm-up of the paced paths (small batches, the young generation grown to the rate), not recorded
  await rawLatency(w, rate, LAT_WARM_MS);
  await rawBatchedLatency(w, rate, LAT_WARM_MS);
  await rtLatency(rt, id, rate, LAT_WARM_MS);
  const pooled = { rt: [] as number[], rawSingle: [] as number[], rawBatched: [] as number[] };
  const perRound = { rtP99: [] as number[], rawSingleP99: [] as number[], rawBatchedP99: [] as number[] };
  const achievedRate = { rt: [] as number[], rawSingle: [] as number[], rawBatched: [] as number[] };
  const rtGc: LatencySet['rtGc'] = [];
  for (let r = 0; r < rounds; r++) {
    await settle();
    const a = await rawLatency(w, rate);
    await settle();
    const b = await rawBatchedLatency(w, rate);
    await settle();
    const { result: c, gc: g } = await withGcPauses(() => rtLatency(rt, id, rate));
    for (const [k, v, p] of [
      ['rawSingle', a, 'rawSingleP99'],
      ['rawBatched', b, 'rawBatchedP99'],
      ['rt', c, 'rtP99'],
    ] as const) {
      for (const x of v.latencies) pooled[k].push(x);
      perRound[p].push(round3(pct(v.latencies, 99)));
      achievedRate[k].push(v.rate);
    }
    rtGc.push(g);
  }
  const stats = (xs: number[]) => ({ p50: round3(pct(xs, 50)), p99: round3(pct(xs, 99)), max: round3(maxOf(xs)), n: xs.length });
  return { rate, rounds, rt: stats(pooled.rt), rawSingle: stats(pooled.rawSingle), rawBatched: stats(pooled.rawBatched), perRound, achievedRate, rtGc };
}

// ─────────────────────────────────────────────────────────── main

async function startRuntime(): Promise<{ rt: Runtime; ids: string[]; burstId: string }> {
  const ids = ['c0', 'c1', 'c2', 'c3'];
  const burstId = 'b0';
  const rt = await Runtime.start({ logger });
  const want = new Set([...ids, burstId]);
  const up = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`instances not connected: ${[...want].join(', ')}`)), 20_000);
    rt.on('instance:connected', (e: { instanceId: string }) => {
      want.delete(e.instanceId);
      if (want.size === 0) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  // Default capacity (1000) for the closed loops and waitForCapacity; a bound never reached for
  // the burst and the paced runs (a machine that falls behind then shows as latency, not as
  // queue_full).
  for (const id of ids) await rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback' });
  await rt.startInstance({ id: burstId, name: burstId, channelType: 'loopback', channel: 'loopback', queueCapacity: 1_000_000 });
  await up;
  return { rt, ids, burstId };
}

async function main(): Promise<void> {
  const w = await startRaw();
  const hand = await HandRolled.start();
  const { rt, ids, burstId } = await startRuntime();
  const c0 = ids.slice(0, 1);

  const tput: Record<string, number[]> = { handClosed: [], handBurst: [], rawSingle: [], rawBatched: [], rawClosedPromises: [], rt1: [], rt1Many: [], rt2Many: [], rt1Burst: [], rt1Wait: [] };
  for (const k of MULTI) tput[`rt${k}`] = [];
  const push = (k: string, v: number): void => void tput[k]?.push(Math.round(v));

  // warm-up (JIT, first-touch allocations), then interleaved rounds
  const warm = messages.slice(0, Math.min(N, 5000));
  await rawSingle(w, warm);
  await rawBatched(w, warm);
  await rawClosedPromises(w, warm);
  await handRolledClosed(hand, warm);
  await handRolledBurst(hand, warm);
  await rtClosed(rt, c0, warm);
  await rtClosed(rt, ids, warm);
  await rtClosedMany(rt, c0, warm);
  await rtClosedMany(rt, ids.slice(0, 2), warm);
  await rtBurst(rt, [burstId], warm);
  await rtBurst(rt, c0, warm, true);
  for (let r = 0; r < ROUNDS; r++) {
    await settle();
    push('rawBatched', await rawBatched(w, messages));
    await settle();
    push('rt1', await rtClosed(rt, c0, messages));
    await settle();
    push('rawSingle', await rawSingle(w, messages));
    for (const k of MULTI) {
      await settle();
      push(`rt${k}`, await rtClosed(rt, ids.slice(0, k), messages));
    }
    await settle();
    push('rt1Many', await rtClosedMany(rt, c0, messages));
    await settle();
    push('rt2Many', await rtClosedMany(rt, ids.slice(0, 2), messages));
    await settle();
    push('rawClosedPromises', await rawClosedPromises(w, messages));
    await settle();
    push('handClosed', await handRolledClosed(hand, messages));
    await settle();
    push('handBurst', await handRolledBurst(hand, burst));
    await settle();
    push('rt1Burst', await rtBurst(rt, [burstId], burst));
    await settle();
    push('rt1Wait', await rtBurst(rt, c0, burst, true));
  }
  const med = (k: string): number => Math.round(summary(tput[k] as number[]).median);

  // latency at half the measured 1-instance saturation rate, and at a fixed moderate rate
  const rate = Math.max(1, Math.round(med('rt1') / 2));
  const half = await latencySet(rt, burstId, w, rate, LAT_ROUNDS);
  const moderate = await latencySet(rt, burstId, w, MODERATE_RATE, 1);
  await rt.stop();
  await w.terminate();
  await hand.terminate();

  const rawB = med('rawBatched');
  const rawBName = `raw batched (${BATCH}) postMessage round trip`;
  const handName = 'hand-rolled (promise per message, batches of 256, awaited async send per message, receipts per batch)';
  const rows = [
    compare('send throughput at saturation, 1 instance (1000 outstanding)', 'msgs/s', med('rt1'), handName, med('handClosed'), { min: 1 }),
    compare(`burst: ${BURST_N} sends at once, 1 instance`, 'msgs/s', med('rt1Burst'), `hand-rolled burst of ${BURST_N}`, med('handBurst'), { min: 1 }),
    compare(`sendMany (batches of ${MANY_BATCH}) at saturation, 1 instance`, 'msgs/s', med('rt1Many'), handName, med('handClosed'), { min: 1.3 }),
    compare('send throughput at saturation, 1 instance', 'msgs/s', med('rt1'), rawBName, rawB, { min: 0.5 }),
    compare('send throughput at saturation, 1 instance', 'msgs/s', med('rt1'), 'raw single postMessage round trip', med('rawSingle'), { min: 0.5 }),
    ...MULTI.map((k) => compare(`send throughput at saturation, ${k} instances`, 'msgs/s', med(`rt${k}`), rawBName, rawB, { min: 0.5 })),
    compare(`sendMany (batches of ${MANY_BATCH}) throughput at saturation, 1 instance`, 'msgs/s', med('rt1Many'), rawBName, rawB, { min: 0.5 }),
    compare(`sendMany (batches of ${MANY_BATCH}) throughput at saturation, 2 instances`, 'msgs/s', med('rt2Many'), rawBName, rawB, { min: 0.5 }),
    compare('(info) floor of a promise per send: raw batched, closed loop, one promise per message', 'msgs/s', med('rawClosedPromises'), rawBName, rawB),
    compare('(info) send throughput at saturation, 1 instance', 'msgs/s', med('rt1'), 'floor of a promise per send', med('rawClosedPromises')),
    compare(`(info) burst: ${BURST_N} sends enqueued at once, 1 instance`, 'msgs/s', med('rt1Burst'), rawBName, rawB),
    compare(`(info) burst into the default capacity with waitForCapacity, 1 instance`, 'msgs/s', med('rt1Wait'), rawBName, rawB),
    compare(`(info) send latency p99 at half load (${rate} msgs/s)`, 'ms', half.rt.p99, 'raw batched p99 at the same rate', half.rawBatched.p99),
    compare(`(info) send latency p99 at half load (${rate} msgs/s)`, 'ms', half.rt.p99, 'raw single p99 at the same rate', half.rawSingle.p99),
    compare(`(info) send latency p99 at ${MODERATE_RATE} msgs/s`, 'ms', moderate.rt.p99, 'raw single p99 at the same rate', moderate.rawSingle.p99),
  ];
  for (const l of [half, moderate]) {
    const r = l.achievedRate;
    console.log(`latency at ${l.rate} msgs/s: achieved rt ${r.rt.join('/')} raw single ${r.rawSingle.join('/')} raw batched ${r.rawBatched.join('/')}`);
    console.log(`  p99 per round: rt ${l.perRound.rtP99.join('/')} raw single ${l.perRound.rawSingleP99.join('/')} raw batched ${l.perRound.rawBatchedP99.join('/')} ms`);
    console.log(`  main-thread GC during rt rounds: ${l.rtGc.map((g) => `${g.count} pauses, ${g.totalMs} ms, max ${g.maxMs} ms`).join('; ')}`);
  }
  report('send', rows, {
    messages: N,
    burstMessages: BURST_N,
    rounds: ROUNDS,
    batch: BATCH,
    sendWindow: 1024,
    outstandingPerInstance: DEFAULT_CAPACITY,
    sendManyBatch: MANY_BATCH,
    latency: { durationMs: LAT_MS, halfLoad: half, moderate },
    throughput: Object.fromEntries(Object.entries(tput).map(([k, v]) => [k, { ...summary(v), runs: v }])),
  });
}

await main();
