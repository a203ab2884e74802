/**
 * Sibling disturbance: one instance's send throughput and heartbeat round trip while another
 * instance crash-loops (its worker crashes right after every connect and is restarted with a
 * 100 ms → 1 s backoff, never escalating), vs the same instance alone, in the same run.
 * Target: >= 0.9x throughput.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { pino } from 'pino';
import { Runtime } from '../src/index.js';
import { compare, pct, quick, report } from './lib.js';

const phaseMs = quick ? 3000 : 8000;
const rt = await Runtime.start({
  logger: pino({ level: 'silent' }),
  heartbeat: { intervalMs: 100, maxMissed: 10 },
  // A crash loop that never escalates, restarting at least once a second (backoff 100 ms → 1 s):
  // what an instance with a persistent bug does under a lenient policy.
  restart: { maxRestarts: 1_000_000, periodMs: 1000, backoff: { initialDelayMs: 100, maxDelayMs: 1000, jitter: 0.2 } },
});
const sibling = await rt.startInstance({ name: 'sibling', channelType: 'loopback', channel: 'loopback' });
await new Promise<void>((resolve) => {
  const check = () => (sibling.currentStatus === 'connected' ? resolve() : setTimeout(check, 10));
  check();
});

// Heartbeat round trips of the sibling's worker, told apart by thread id.
const rtts = new Map<number, number[]>();
const onBeat = (m: unknown) => {
  const e = m as { threadId: number; rttMs: number };
  if (!Number.isFinite(e.rttMs)) return;
  let xs = rtts.get(e.threadId);
  if (!xs) rtts.set(e.threadId, (xs = []));
  xs.push(e.rttMs);
};
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

await pump(); // warm-up
// Alternate the phases so drift on a noisy machine hits both alike.
const alone: number[] = [];
const disturbed: number[] = [];
const rttAlone: number[] = [];
const rttDisturbed: number[] = [];
let crashes = 0;
rt.on('instance:restart', (e: { instanceId: string }) => {
  if (e.instanceId !== sibling.instanceId) crashes++;
});
const siblingThreads = new Set<number>();
for (let round = 0; round < 2; round++) {
  rtts.clear();
  alone.push(await pump());
  for (const [t, xs] of rtts) {
    siblingThreads.add(t);
    rttAlone.push(...xs);
  }
  rtts.clear();
  const looper = await rt.startInstance({ name: `looper-${round}`, channelType: 'crasher', channel: new URL('./crash-channel.js', import.meta.url) });
  disturbed.push(await pump());
  for (const t of siblingThreads) rttDisturbed.push(...(rtts.get(t) ?? []));
  await rt.stopInstance(looper.instanceId);
}
diagnostics_channel.unsubscribe('threadvisor:worker:heartbeat', onBeat);
const siblingRestarts = sibling.restartCount;
await rt.stop();

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const p99a = Math.round(pct(rttAlone, 99) * 100) / 100;
const p99d = Math.round(pct(rttDisturbed, 99) * 100) / 100;
report(
  'siblings',
  [
    compare('sibling send throughput while a neighbour crash-loops', 'msgs/s', Math.round(mean(disturbed)), 'same sibling alone', Math.round(mean(alone)), { min: 0.95 }),
    compare('sibling heartbeat RTT p99 while a neighbour crash-loops', 'ms', p99d, 'same sibling alone', p99a, { max: 3 }),
  ],
  { neighbourRestarts: crashes, siblingRestarts, phaseMs, throughput: { alone: alone.map(Math.round), disturbed: disturbed.map(Math.round) }, heartbeatSamples: { alone: rttAlone.length, disturbed: rttDisturbed.length } },
);
if (siblingRestarts > 0) {
  console.error(`the sibling was restarted ${siblingRestarts} time(s)`);
  process.exitCode = 1;
}
