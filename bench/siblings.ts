/**
 * Sibling disturbance: one instance's send throughput and heartbeat round trip while another
 * instance crash-loops (its worker crashes right after every connect), vs the same instance
 * alone, in the same run. Two crash loops, each the neighbour's own restart policy (the sibling
 * keeps the default one), never escalating:
 * - restart delay 0: a restart at once after every crash (the harshest neighbour);
 * - backoff 100 ms → 1 s: what an instance with a persistent bug does under a lenient policy.
 *
 * A reference phase puts the same CPU load on the machine without the runtime: another process
 * at the lowest priority (nice 19) spinning on one core. It shows what any load on a core costs
 * the sibling's round trip on this machine, whoever causes it.
 *
 * Each of the rounds runs the four phases in turn (alone, delay-0 loop, backoff loop, spinning
 * process), so drift on a noisy machine hits them alike. Throughput: the median over rounds of each phase's msgs/s.
 * RTT: the sibling's heartbeats (every 25 ms, about 160 per phase), the p99 of each phase, and
 * the median of those p99s over the rounds.
 * Targets: throughput ≥ 0.95× alone, RTT p99 ≤ 3× alone.
 *
 * Run: `npm run build && node --expose-gc dist/bench/siblings.js [--quick]`.
 */
import { spawn } from 'node:child_process';
import diagnostics_channel from 'node:diagnostics_channel';
import { pino } from 'pino';
import { Runtime, type RestartPolicy } from '../src/index.js';
import { compare, pct, quick, report } from './lib.js';

const phaseMs = quick ? 2000 : 4000;
const rounds = quick ? 2 : 5;
const HEARTBEAT_MS = 25;
const rt = await Runtime.start({ logger: pino({ level: 'silent' }), heartbeat: { intervalMs: HEARTBEAT_MS, maxMissed: 40 } });
const sibling = await rt.startInstance({ name: 'sibling', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });

/** The neighbours' policies: never escalating (more restarts than this never happen in a phase). */
const loops: Record<'delay0' | 'backoff', RestartPolicy> = {
  delay0: { maxRestarts: 1_000_000, periodMs: 1000, backoff: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } },
  backoff: { maxRestarts: 1_000_000, periodMs: 1000, backoff: { initialDelayMs: 100, maxDelayMs: 1000, jitter: 0.2 } },
};
type Phase = 'alone' | keyof typeof loops | 'spin';

// Heartbeat round trips of the sibling's worker (told apart by thread id; the sibling is never restarted).
let beats: number[] = [];
let siblingThread = -1;
const onBeat = (m: unknown): void => {
  const e = m as { threadId: number; rttMs: number };
  if (e.threadId === siblingThread && Number.isFinite(e.rttMs)) beats.push(e.rttMs);
};
siblingThread = (await rt.health(sibling.instanceId)).worker?.threadId ?? -1;
if (siblingThread < 0) throw new Error('the sibling has no worker thread id in its health');
diagnostics_channel.subscribe('threadvisor:worker:heartbeat', onBeat);

/** Sends in batches of 256 for `phaseMs`; returns msgs/s. */
async function pump(): Promise<number> {
  const end = performance.now() + phaseMs;
  let sent = 0;
  const t0 = performance.now();
  while (performance.now() < end) {
    await Promise.all(Array.from({ length: 256 }, (_, i) => rt.send(sibling.instanceId, { i })));
    sent += 256;
  }
  return sent / ((performance.now() - t0) / 1000);
}

const tput: Record<Phase, number[]> = { alone: [], delay0: [], backoff: [], spin: [] };
const p99: Record<Phase, number[]> = { alone: [], delay0: [], backoff: [], spin: [] };
const restarts: Record<keyof typeof loops, number> = { delay0: 0, backoff: 0 };
let looping: keyof typeof loops | undefined;
rt.on('instance:restart', (e: { instanceId: string }) => {
  if (e.instanceId !== sibling.instanceId && looping !== undefined) restarts[looping]++;
});

async function phase(p: Phase, n: number): Promise<void> {
  let looper: string | undefined;
  const spinner = p === 'spin' ? spawn('nice', ['-n', '19', process.execPath, '-e', 'for (;;) {}'], { stdio: 'ignore' }) : undefined;
  if (spinner !== undefined) await new Promise((r) => setTimeout(r, 100));
  if (p === 'delay0' || p === 'backoff') {
    looping = p;
    looper = (await rt.startInstance({ name: `looper-${p}-${n}`, channelType: 'crasher', channel: new URL('./crash-channel.js', import.meta.url), restart: loops[p] })).instanceId;
  }
  beats = [];
  tput[p].push(await pump());
  p99[p].push(pct(beats, 99));
  if (looper !== undefined) await rt.stopInstance(looper);
  if (spinner !== undefined) {
    const gone = new Promise((r) => spinner.once('exit', r));
    spinner.kill('SIGKILL');
    await gone;
  }
  looping = undefined;
}

await pump(); // warm-up
for (let n = 0; n < rounds; n++) for (const p of ['alone', 'delay0', 'backoff', 'spin'] as const) await phase(p, n);
diagnostics_channel.unsubscribe('threadvisor:worker:heartbeat', onBeat);
const siblingRestarts = sibling.restartCount;
await rt.stop();

const median = (xs: number[]): number => Math.round(pct(xs, 50) * 100) / 100;
const r2 = (xs: number[]): number[] => xs.map((x) => Math.round(x * 100) / 100);
report(
  'siblings',
  [
    compare('sibling send throughput while a neighbour crash-loops, restart delay 0', 'msgs/s', Math.round(median(tput.delay0)), 'same sibling alone', Math.round(median(tput.alone)), { min: 0.95 }),
    compare('sibling heartbeat RTT p99 while a neighbour crash-loops, restart delay 0', 'ms', median(p99.delay0), 'same sibling alone', median(p99.alone), { max: 3 }),
    compare('sibling send throughput while a neighbour crash-loops, backoff 100 ms → 1 s', 'msgs/s', Math.round(median(tput.backoff)), 'same sibling alone', Math.round(median(tput.alone)), { min: 0.95 }),
    compare('sibling heartbeat RTT p99 while a neighbour crash-loops, backoff 100 ms → 1 s', 'ms', median(p99.backoff), 'same sibling alone', median(p99.alone), { max: 3 }),
    compare('(info) sibling heartbeat RTT p99 while another process spins on one core at nice 19', 'ms', median(p99.spin), 'same sibling alone', median(p99.alone)),
    compare('(info) sibling send throughput while another process spins on one core at nice 19', 'msgs/s', Math.round(median(tput.spin)), 'same sibling alone', Math.round(median(tput.alone))),
  ],
  {
    rounds,
    phaseMs,
    heartbeatMs: HEARTBEAT_MS,
    neighbourRestarts: restarts,
    siblingRestarts,
    throughput: { alone: tput.alone.map(Math.round), delay0: tput.delay0.map(Math.round), backoff: tput.backoff.map(Math.round), spin: tput.spin.map(Math.round) },
    rttP99: { alone: r2(p99.alone), delay0: r2(p99.delay0), backoff: r2(p99.backoff), spin: r2(p99.spin) },
  },
);
if (siblingRestarts > 0) {
  console.error(`the sibling was restarted ${siblingRestarts} time(s)`);
  process.exitCode = 1;
}
