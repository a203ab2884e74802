/**
 * Lifecycle costs of a supervised worker, each next to a baseline measured in the same run:
 * - spawn-to-ready of a WorkerHost vs a bare `new Worker` spawn-to-first-message;
 * - crash-to-running-again (restart delay 0) vs the same bare spawn;
 * - hang detection time vs its nominal `heartbeat.intervalMs × maxMissed`.
 */
import { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { Supervisor, WorkerHost, workerChild } from '../src/index.js';
import { compare, quick, report, summary } from './lib.js';

const logger = pino({ level: 'silent' });
const echo = new URL('./echo-worker.js', import.meta.url);
const bare = new URL('./bare-worker.js', import.meta.url);
const runs = quick ? 8 : 25;

async function bareSpawn(): Promise<number> {
  const t0 = performance.now();
  const w = new Worker(bare);
  await new Promise((r) => w.once('message', r));
  const dt = performance.now() - t0;
  await w.terminate();
  return dt;
}

async function hostSpawn(): Promise<number> {
  const t0 = performance.now();
  const h = await WorkerHost.start({ filename: echo, logger });
  const dt = performance.now() - t0;
  await h.shutdown('brutal_kill');
  return dt;
}

type Echo = { echo: <T>(v: T) => T; crash: () => void; hang: () => void };

async function crashToRunning(sup: Supervisor): Promise<number> {
  const h = sup.child('w') as WorkerHost<Echo>;
  const back = new Promise<number>((r) => sup.once('child_restarted', () => r(performance.now())));
  const t0 = performance.now();
  void h.call('crash').catch(() => undefined);
  const t1 = await back;
  return t1 - t0;
}

async function hangDetect(sup: Supervisor): Promise<number> {
  const h = sup.child('w') as WorkerHost<Echo>;
  const detected = new Promise<number>((r) => sup.once('child_exited', () => r(performance.now())));
  await h.call('echo', 1);
  const t0 = performance.now();
  void h.call('hang').catch(() => undefined);
  const t1 = await detected;
  await new Promise((r) => sup.once('child_restarted', r));
  return t1 - t0;
}

// Interleave baseline and subject so drift on a noisy machine hits both alike.
const bareT: number[] = [];
const hostT: number[] = [];
await bareSpawn();
await hostSpawn(); // warm-up: module loading
for (let i = 0; i < runs; i++) {
  bareT.push(await bareSpawn());
  hostT.push(await hostSpawn());
}

const crashSup = await Supervisor.start({
  logger,
  maxRestarts: 1000,
  backoff: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 },
  children: [workerChild('w', { filename: echo })],
});
const crashT: number[] = [];
const bareT2: number[] = [];
for (let i = 0; i < runs; i++) {
  bareT2.push(await bareSpawn());
  crashT.push(await crashToRunning(crashSup));
}
await crashSup.stop();

const intervalMs = 100;
const maxMissed = 3;
const hangSup = await Supervisor.start({
  logger,
  maxRestarts: 1000,
  backoff: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 },
  children: [workerChild('w', { filename: echo, heartbeat: { intervalMs, maxMissed } })],
});
const hangT: number[] = [];
for (let i = 0; i < (quick ? 4 : 10); i++) hangT.push(await hangDetect(hangSup));
await hangSup.stop();

const s = { bare: summary(bareT), host: summary(hostT), bare2: summary(bareT2), crash: summary(crashT), hang: summary(hangT) };
report(
  'lifecycle',
  [
    compare('spawn-to-ready (median)', 'ms', s.host.median, 'bare Worker spawn-to-first-message', s.bare.median, { max: 1.5 }),
    compare('crash-to-running-again, delay 0 (median)', 'ms', s.crash.median, 'bare Worker spawn-to-first-message', s.bare2.median, { max: 1.5 }),
    compare('hang detection (median)', 'ms', s.hang.median, `intervalMs × maxMissed (${intervalMs} × ${maxMissed})`, intervalMs * maxMissed, { max: 1.2 }),
    compare('hang detection (p90)', 'ms', s.hang.p90, `intervalMs × maxMissed (${intervalMs} × ${maxMissed})`, intervalMs * maxMissed, { max: 1.2 }),
  ],
  { samples: s },
);
