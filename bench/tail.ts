/**
 * The tail of `rt.send` against the code a user would write instead (bench/handrolled.ts), at the
 * same steady rate: half of the hand-rolled baseline's saturation rate, measured first in the same
 * run (its closed loop, 1000 sends outstanding, the median of a few rounds).
 *
 * Each round sends at that rate for a few seconds (1 ms timer pacing, catch-up; see
 * bench/paced.ts) and records each message's send → receipt time, once through the hand-rolled
 * baseline and once through `rt.send` to one `loopback` instance, interleaved round by round.
 * Figures:
 * - p99 of `rt.send` (the median of the rounds' p99s) vs the hand-rolled p99 at the same rate:
 *   target <= 1.5x;
 * - the worst round's p99 vs the median round's, for `rt.send`: target <= 3x (no round whose tail
 *   a GC-bound backlog blows up);
 * - informational: p50 of both, the pooled p99, the main thread's GC pauses during each round.
 *
 * Run: `npm run build && node --expose-gc dist/bench/tail.js [--quick]`.
 */
import { pino } from 'pino';
import { Runtime } from '../src/index.js';
import { HandRolled, handRolledClosed } from './handrolled.js';
import { compare, pct, quick, report, summary } from './lib.js';
import { maxOf, paced, round3, withGcPauses, type Paced } from './paced.js';

const logger = pino({ level: 'silent' });
const SAT_N = quick ? 20_000 : 200_000;
const SAT_ROUNDS = quick ? 2 : 3;
const ROUNDS = quick ? 3 : 10;
const ROUND_MS = quick ? 1000 : 2500;
const WARM_MS = quick ? 300 : 3000;

const gc = (globalThis as { gc?: () => void }).gc;
const settle = async (): Promise<void> => {
  gc?.();
  await new Promise((r) => setTimeout(r, 20));
};

type Msg = { room: string; text: string; n: number };
const msg = (n: number): Msg => ({ room: 'r1', text: `hello ${n}`, n });

/** `rt.send` at `rate` for `ms`: each message's send → receipt time. */
function rtPaced(rt: Runtime, id: string, rate: number, ms: number): Promise<Paced> {
  return paced(rate, ms, (i, record) => {
    const t = performance.now();
    rt.send(id, msg(i)).then(
      () => record(performance.now() - t),
      () => record(Number.NaN),
    );
  });
}

/** The hand-rolled baseline at `rate` for `ms`: each message's send → receipt time. */
function handPaced(h: HandRolled, rate: number, ms: number): Promise<Paced> {
  return paced(rate, ms, (i, record) => {
    const t = performance.now();
    void h.send(msg(i)).then(() => record(performance.now() - t));
  });
}

async function main(): Promise<void> {
  const hand = await HandRolled.start();
  const rt = await Runtime.start({ logger });
  // A bound never reached: a machine that falls behind shows as latency, not as queue_full.
  await rt.startInstance({ id: 't0', name: 't0', channelType: 'loopback', channel: 'loopback', queueCapacity: 1_000_000 }, { waitFor: 'connected' });

  // The baseline's saturation rate, in this run.
  const satMsgs = Array.from({ length: SAT_N }, (_, n) => msg(n));
  await handRolledClosed(hand, satMsgs.slice(0, 5000));
  const sat: number[] = [];
  for (let r = 0; r < SAT_ROUNDS; r++) {
    await settle();
    sat.push(Math.round(await handRolledClosed(hand, satMsgs)));
  }
  const saturation = summary(sat).median;
  const rate = Math.max(1, Math.round(saturation / 2));

  // Warm-up at that rate (the young generation grown to it), not recorded.
  await handPaced(hand, rate, WARM_MS);
  await rtPaced(rt, 't0', rate, WARM_MS);

  const rounds: { hand: Paced; rt: Paced; gc: { count: number; totalMs: number; maxMs: number } }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    await settle();
    const h = await handPaced(hand, rate, ROUND_MS);
    await settle();
    const { result, gc: g } = await withGcPauses(() => rtPaced(rt, 't0', rate, ROUND_MS));
    rounds.push({ hand: h, rt: result, gc: g });
  }
  await rt.stop();
  await hand.terminate();

  const p99s = (k: 'hand' | 'rt'): number[] => rounds.map((r) => round3(pct(r[k].latencies, 99)));
  const p50s = (k: 'hand' | 'rt'): number[] => rounds.map((r) => round3(pct(r[k].latencies, 50)));
  const pooled = (k: 'hand' | 'rt'): number => round3(pct(rounds.flatMap((r) => r[k].latencies), 99));
  const median = (xs: number[]): number => round3(pct(xs, 50));
  const rtP99 = p99s('rt');
  const handP99 = p99s('hand');
  const handName = 'hand-rolled (promise per message, batches of 256, awaited async send per message, receipts per batch)';
  const rows = [
    compare(`send latency p99 at half the hand-rolled saturation (${rate} msgs/s), median of ${ROUNDS} rounds`, 'ms', median(rtP99), `${handName}, same rate`, median(handP99), { max: 1.5 }),
    compare(`worst round's p99 of rt.send vs the median round (${ROUNDS} rounds)`, 'ms', maxOf(rtP99), 'median round p99', median(rtP99), { max: 3 }),
    compare(`(info) send latency p50 at ${rate} msgs/s, median of rounds`, 'ms', median(p50s('rt')), 'hand-rolled p50', median(p50s('hand'))),
    compare(`(info) send latency p99 at ${rate} msgs/s, rounds pooled`, 'ms', pooled('rt'), 'hand-rolled pooled p99', pooled('hand')),
    compare(`(info) hand-rolled worst round's p99 vs its median round`, 'ms', maxOf(handP99), 'hand-rolled median round p99', median(handP99)),
  ];
  console.log(`hand-rolled saturation ${sat.join('/')} msgs/s; paced at ${rate} msgs/s`);
  console.log(`achieved: rt ${rounds.map((r) => r.rt.rate).join('/')} hand-rolled ${rounds.map((r) => r.hand.rate).join('/')}`);
  console.log(`p99 per round: rt ${rtP99.join('/')} hand-rolled ${handP99.join('/')} ms`);
  console.log(`main-thread GC during rt rounds: ${rounds.map((r) => `${r.gc.count} pauses, ${r.gc.totalMs} ms, max ${r.gc.maxMs} ms`).join('; ')}`);
  report('tail', rows, {
    saturation: { runs: sat, median: saturation },
    rate,
    rounds: ROUNDS,
    roundMs: ROUND_MS,
    perRound: { rtP99, handP99, rtP50: p50s('rt'), handP50: p50s('hand'), achieved: rounds.map((r) => ({ rt: r.rt.rate, hand: r.hand.rate })), rtGc: rounds.map((r) => r.gc) },
  });
}

await main();
