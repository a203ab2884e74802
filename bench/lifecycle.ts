/**
 * Lifecycle costs, each next to a baseline measured in the same run:
 * - spawn-to-ready of a WorkerHost vs a bare `new Worker` spawn-to-first-message;
 * - crash-to-running-again (restart delay 0) of a WorkerHost vs the same bare spawn;
 * - an **instance** (its worker with the instance runtime, the `loopback` channel, `connect`):
 *   `startInstance` → `connected`, and a crash (a real uncaught throw in its worker) →
 *   `connected` again with restart delay 0, both vs the same bare spawn; beside them the number
 *   of modules the instance worker loads (a static walk of its compiled imports);
 * - memory: the process RSS an idle connected `loopback` instance adds (its worker, its runtime
 *   state), next to what an idle bare `new Worker` adds, both measured over a group of them
 *   after a forced GC (run with `--expose-gc`);
 * - hang detection time vs its nominal `heartbeat.intervalMs × maxMissed`.
 */
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { Runtime, Supervisor, WorkerHost, workerChild } from '../src/index.js';
import { compare, quick, report, summary } from './lib.js';
import { moduleGraph } from './module-graph.js';
import { bareSpawn, connectedOn } from './spawn.js';

const logger = pino({ level: 'silent' });
const echo = new URL('./echo-worker.js', import.meta.url);
const bare = new URL('./bare-worker.js', import.meta.url);
const runs = quick ? 8 : 25;

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

// An instance: start → connected, then crash → connected again (restart delay 0).
const rt = await Runtime.start({
  logger,
  restart: { maxRestarts: 1_000_000, periodMs: 1000, backoff: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } },
});
async function instanceStart(n: number): Promise<number> {
  const id = `start-${n}`;
  const t0 = performance.now();
  const back = connectedOn(rt, id);
  await rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback' });
  const dt = (await back) - t0;
  await rt.stopInstance(id);
  return dt;
}
await instanceStart(-1); // warm-up: module loading
const instT: number[] = [];
const bareT3: number[] = [];
for (let i = 0; i < runs; i++) {
  bareT3.push(await bareSpawn());
  instT.push(await instanceStart(i));
}
const crashy = await rt.startInstance({ id: 'crashy', name: 'crashy', channelType: 'loopback', channel: 'loopback', settings: { faults: true } });
await new Promise((r) => setTimeout(r, 50));
const instCrashT: number[] = [];
const bareT4: number[] = [];
for (let i = 0; i < runs; i++) {
  bareT4.push(await bareSpawn());
  const back = connectedOn(rt, crashy.instanceId);
  const t0 = performance.now();
  void rt.send(crashy.instanceId, { fault: 'crash' }).catch(() => undefined);
  instCrashT.push((await back) - t0);
}
await rt.stopInstance(crashy.instanceId);

// The same with a warm standby worker: start → connected and crash → connected again take a
// booted worker (each waits until a replacement is ready, so every sample takes one).
const rtStandby = await Runtime.start({
  logger,
  standby: { workers: 1 },
  restart: { maxRestarts: 1_000_000, periodMs: 1000, backoff: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } },
});
const spareReady = async (): Promise<void> => {
  while (rtStandby.standby?.ready !== 1) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 20)); // let the replacement's boot settle
};
const standbyStartT: number[] = [];
const bareT5: number[] = [];
for (let i = -1; i < runs; i++) {
  const id = `standby-start-${i}`;
  await spareReady();
  const b = await bareSpawn();
  await spareReady();
  const t0 = performance.now();
  const back = connectedOn(rtStandby, id);
  await rtStandby.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback' });
  const dt = (await back) - t0;
  await rtStandby.stopInstance(id);
  if (i >= 0) {
    standbyStartT.push(dt);
    bareT5.push(b);
  }
}
const crashy2 = await rtStandby.startInstance({ id: 'crashy2', name: 'crashy2', channelType: 'loopback', channel: 'loopback', settings: { faults: true } });
const standbyCrashT: number[] = [];
const bareT6: number[] = [];
for (let i = 0; i < runs; i++) {
  await spareReady();
  bareT6.push(await bareSpawn());
  await spareReady();
  const back = connectedOn(rtStandby, crashy2.instanceId);
  const t0 = performance.now();
  void rtStandby.send(crashy2.instanceId, { fault: 'crash' }).catch(() => undefined);
  standbyCrashT.push((await back) - t0);
}
await rtStandby.stopInstance(crashy2.instanceId);
await rtStandby.stop();

// Memory: RSS added per idle instance vs per idle bare worker (a group of each, after GC).
const group = quick ? 6 : 12;
const settle = async (): Promise<number> => {
  for (let i = 0; i < 3; i++) {
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((r) => setTimeout(r, 100));
  }
  return process.memoryUsage().rss;
};
const rss0 = await settle();
const bares: Worker[] = [];
for (let i = 0; i < group; i++) {
  const w = new Worker(bare);
  await new Promise((r) => w.once('message', r));
  bares.push(w);
}
const rssBare = (await settle()) - rss0;
await Promise.all(bares.map((w) => w.terminate()));
const rss1 = await settle();
for (let i = 0; i < group; i++) await rt.startInstance({ id: `mem-${i}`, name: `mem-${i}`, channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
const rssInstances = (await settle()) - rss1;
const mib = (bytes: number): number => Math.round((bytes / group / 2 ** 20) * 100) / 100;
await rt.stop();
// RSS added per waiting standby worker (a pool of `group`), after GC.
const rss2 = await settle();
const rtMem = await Runtime.start({ logger, standby: { workers: group } });
while (rtMem.standby?.ready !== group) await new Promise((r) => setTimeout(r, 10));
const rssStandby = (await settle()) - rss2;
await rtMem.stop();
const workerGraph = moduleGraph(fileURLToPath(new URL('../workers/instance-worker.js', import.meta.url)), fileURLToPath(new URL('../', import.meta.url)));

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

const s = {
  bare: summary(bareT),
  host: summary(hostT),
  bare2: summary(bareT2),
  crash: summary(crashT),
  bare3: summary(bareT3),
  instance: summary(instT),
  bare4: summary(bareT4),
  instanceCrash: summary(instCrashT),
  bare5: summary(bareT5),
  standbyStart: summary(standbyStartT),
  bare6: summary(bareT6),
  standbyCrash: summary(standbyCrashT),
  hang: summary(hangT),
};
report(
  'lifecycle',
  [
    compare('spawn-to-ready (median)', 'ms', s.host.median, 'bare Worker spawn-to-first-message', s.bare.median, { max: 1.5 }),
    compare('crash-to-running-again, delay 0 (median)', 'ms', s.crash.median, 'bare Worker spawn-to-first-message', s.bare2.median, { max: 1.5 }),
    compare('instance start → connected, loopback (median)', 'ms', s.instance.median, 'bare Worker spawn-to-first-message', s.bare3.median, { max: 1.5 }),
    compare('instance crash → connected again, delay 0, loopback (median)', 'ms', s.instanceCrash.median, 'bare Worker spawn-to-first-message', s.bare4.median, { max: 1.3 }),
    compare('instance start → connected, standby worker waiting, loopback (median)', 'ms', s.standbyStart.median, 'bare Worker spawn-to-first-message', s.bare5.median),
    compare('instance crash → connected again, standby worker waiting, delay 0, loopback (median)', 'ms', s.standbyCrash.median, 'bare Worker spawn-to-first-message', s.bare6.median, { max: 0.25 }),
    compare(`(info) memory per idle connected instance (RSS over ${group}, loopback)`, 'MiB', mib(rssInstances), `idle bare Worker (RSS over ${group})`, mib(rssBare)),
    compare(`(info) memory per waiting standby worker (RSS over ${group})`, 'MiB', mib(rssStandby), `idle bare Worker (RSS over ${group})`, mib(rssBare)),
    compare('hang detection (median)', 'ms', s.hang.median, `intervalMs × maxMissed (${intervalMs} × ${maxMissed})`, intervalMs * maxMissed, { max: 1.2 }),
    compare('hang detection (p90)', 'ms', s.hang.p90, `intervalMs × maxMissed (${intervalMs} × ${maxMissed})`, intervalMs * maxMissed, { max: 1.2 }),
  ],
  { samples: s, instanceWorkerModules: { files: workerGraph.files.length, packages: workerGraph.packages } },
);
