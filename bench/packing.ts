/**
 * Placement: several instances per worker thread (`placement.instancesPerWorker`), each figure
 * next to a baseline measured in the same run:
 * - scale: 5,000 idle `loopback` instances at 50 per worker (1,000 with `--quick`), started all
 *   at once (`startInstance(…, { waitFor: 'connected' })` in parallel), vs 200 dedicated instances
 *   (one worker each) started the same way: start → all `connected` per instance (info); the
 *   process RSS added per instance (target <= 0.15x the dedicated one, and <= 1 MiB absolute);
 *   the workers' heartbeat round trip p99 while idle (info) and the process CPU then (info: an
 *   idle `loopback` instance still polls every `pollIdleMs`); `rt.stop()` per instance (info); and
 *   no worker thread left after `stop()` (counted on the `worker_threads` diagnostics channel; the
 *   script fails when one is). RSS is the delta from before `Runtime.start` to all connected,
 *   each after a forced GC (run with `--expose-gc`). The packed runtime runs first: memory it
 *   frees and the allocator keeps can only lower the dedicated baseline's delta, so the ratio errs
 *   on the high side;
 * - send throughput at saturation (a closed loop of 1000 outstanding `rt.send`, as bench/send.ts)
 *   to one instance of a full shared worker (50 instances, the others idle) vs a dedicated
 *   instance of the same runtime, rounds interleaved, median (target >= 0.9x);
 * - a crash loop in one group: 4 groups of 10 instances; one instance's worker is ended
 *   (`{ fault: 'exit' }`) each time the instance is connected again; status changes of the
 *   instances in the other groups (target 0, beside those of the crashing group), and how many
 *   of the crashes restarted the whole group (info).
 */
import diagnostics_channel from 'node:diagnostics_channel';
import os from 'node:os';
import type { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { Runtime, type RuntimeOptions } from '../src/index.js';
import { compare, pct, quick, report, summary, type Comparison } from './lib.js';

const logger = pino({ level: 'silent' });
const PACKED = quick ? 1000 : 5000;
const PER_WORKER = 50;
const DEDICATED = 200;
/** Idle window over which heartbeat round trips are collected. */
const IDLE_MS = quick ? 2000 : 4000;
const heartbeat = { intervalMs: 500, maxMissed: 20 };
const restart = { maxRestarts: 1_000_000, periodMs: 1000, backoff: { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 } };
const base: RuntimeOptions = { logger, heartbeat, restart, readyTimeoutMs: 60_000 };

const gc = (globalThis as { gc?: () => void }).gc;
const settle = async (): Promise<number> => {
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((r) => setTimeout(r, 100));
  }
  return process.memoryUsage().rss;
};
const r2 = (x: number): number => Math.round(x * 100) / 100;
const MiB = 2 ** 20;

/** Every Worker this thread creates (the `worker_threads` diagnostics channel) until it exits. */
function trackWorkers(): { live: () => number; created: () => number; dispose: () => void } {
  const live = new Set<Worker>();
  let created = 0;
  const onWorker = (message: unknown): void => {
    const worker = (message as { worker: Worker }).worker;
    created++;
    live.add(worker);
    worker.once('exit', () => live.delete(worker));
  };
  diagnostics_channel.subscribe('worker_threads', onWorker);
  return { live: () => live.size, created: () => created, dispose: () => diagnostics_channel.unsubscribe('worker_threads', onWorker) };
}

/** Heartbeat round trips of every worker host of the process while `fn` runs. */
async function heartbeatRtts(fn: () => Promise<void>): Promise<number[]> {
  const rtts: number[] = [];
  const onBeat = (m: unknown): void => {
    const rtt = (m as { rttMs: number }).rttMs;
    if (Number.isFinite(rtt)) rtts.push(rtt);
  };
  diagnostics_channel.subscribe('threadvisor:worker:heartbeat', onBeat);
  try {
    await fn();
  } finally {
    diagnostics_channel.unsubscribe('threadvisor:worker:heartbeat', onBeat);
  }
  return rtts;
}

interface ScaleResult {
  n: number;
  workers: number;
  startMs: number;
  rssBytes: number;
  rttP99: number;
  rttSamples: number;
  /** Process CPU (every thread) over the idle window, in cores. */
  idleCores: number;
  stopMs: number;
  /** Worker threads still alive right after `stop()` resolved, and after a grace of up to 5 s. */
  leftAtStop: number;
  left: number;
  /** Distinct worker threads hosting the instances once all were connected, and restarts seen meanwhile. */
  threads: number;
  restarts: number;
}

/** Starts `n` idle loopback instances at once, measures them, stops the runtime. */
async function scale(n: number, opts: RuntimeOptions, prefix: string): Promise<ScaleResult> {
  const tracker = trackWorkers();
  const rss0 = await settle();
  const rt = await Runtime.start({ ...base, ...opts });
  let restarts = 0;
  rt.on('instance:restart', () => restarts++);
  const ids = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  const t0 = performance.now();
  await Promise.all(ids.map((id) => rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected', timeoutMs: 120_000 })));
  const startMs = performance.now() - t0;
  const rssBytes = (await settle()) - rss0;
  const threads = new Set((await rt.listHealth()).map((h) => h.worker?.threadId)).size;
  const cpu0 = process.cpuUsage();
  const i0 = performance.now();
  const rtts = await heartbeatRtts(() => new Promise((r) => setTimeout(r, IDLE_MS)));
  const cpu = process.cpuUsage(cpu0);
  const idleCores = Math.round(((cpu.user + cpu.system) / 1000 / (performance.now() - i0)) * 1000) / 1000;
  const health = await rt.listHealth();
  const notConnected = health.filter((h) => h.status !== 'connected').length;
  if (notConnected > 0) throw new Error(`${notConnected} of ${n} instances not connected after the idle window`);
  const t1 = performance.now();
  await rt.stop();
  const stopMs = performance.now() - t1;
  const leftAtStop = tracker.live();
  const deadline = Date.now() + 5000;
  while (tracker.live() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const result = { n, workers: tracker.created(), startMs, rssBytes, rttP99: r2(pct(rtts, 99)), rttSamples: rtts.length, idleCores, stopMs, leftAtStop, left: tracker.live(), threads, restarts };
  tracker.dispose();
  return result;
}

// ─────────────────────────────────────────────────────────── send throughput

const SEND_N = quick ? 50_000 : 200_000;
const SEND_ROUNDS = quick ? 3 : 9;
const OUTSTANDING = 1000;
const messages = Array.from({ length: SEND_N }, (_, n) => ({ room: 'r1', text: `hello ${n}`, n }));

/** A closed loop: `OUTSTANDING` sends in flight to `id`, the next sent as each settles; msgs/s. */
async function closedLoop(rt: Runtime, id: string): Promise<number> {
  let failed = 0;
  let firstError: unknown;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let settled = 0;
    let next = 0;
    const done = (): void => {
      if (++settled === messages.length) resolve();
      else if (next < messages.length) sendNext();
    };
    const sendNext = (): void => {
      rt.send(id, messages[next++]).then(done, (err: unknown) => {
        failed++;
        firstError ??= err;
        done();
      });
    };
    for (let i = 0; i < OUTSTANDING && next < messages.length; i++) sendNext();
  });
  const dt = performance.now() - t0;
  if (failed > 0) throw new Error(`${failed} of ${messages.length} sends failed; first: ${String(firstError)}`);
  return messages.length / (dt / 1000);
}

async function sendThroughput(): Promise<{ shared: number[]; dedicated: number[] }> {
  const rt = await Runtime.start({ ...base, placement: { instancesPerWorker: PER_WORKER } });
  const ids = Array.from({ length: PER_WORKER }, (_, i) => `full-${i}`);
  await Promise.all(ids.map((id) => rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' })));
  await rt.startInstance({ id: 'own', name: 'own', channelType: 'loopback', channel: 'loopback', isolation: 'dedicated' }, { waitFor: 'connected' });
  const target = ids[0] as string;
  const h = await rt.health(target);
  if (h.worker?.instances !== PER_WORKER) throw new Error(`the shared worker hosts ${h.worker?.instances} instances, not ${PER_WORKER}`);
  await closedLoop(rt, target); // warm-up
  await closedLoop(rt, 'own');
  const shared: number[] = [];
  const dedicated: number[] = [];
  // Interleave the two so drift on a noisy machine hits both alike.
  for (let i = 0; i < SEND_ROUNDS; i++) {
    await settle();
    dedicated.push(await closedLoop(rt, 'own'));
    await settle();
    shared.push(await closedLoop(rt, target));
  }
  await rt.stop();
  return { shared, dedicated };
}

// ─────────────────────────────────────────────────────────── crash loop

const GROUPS = 4;
const GROUP_SIZE = 10;
/** At most this many crashes; the loop ends once the culprit is alone in a worker of its own. */
const MAX_CRASHES = 16;
const STATUS_EVENTS = ['instance:disconnected', 'instance:connecting', 'instance:connected', 'instance:restart', 'instance:error'] as const;

interface CrashLoopResult {
  crashes: number;
  /** Crashes until the culprit was alone in a worker of its own (quarantined), or null if it never was. */
  untilAlone: number | null;
  /** Shared workers split on the way. */
  splits: number;
  /** Crashes after which every instance of the culprit's group was restarted. */
  wholeGroupRestarts: number;
  /** Status changes of instances in the culprit's group (it included) and in the other groups. */
  culpritGroupChanges: number;
  otherGroupChanges: number;
  otherGroupRestarts: number;
  crashToConnectedMs: number[];
}

/**
 * Keeps ending the culprit's worker (`{ fault: 'exit' }`, which no instance can be charged with,
 * each time it is connected again) until quarantine has put it alone in a worker of its own, and
 * counts what the other instances saw.
 */
async function crashLoop(): Promise<CrashLoopResult> {
  const rt = await Runtime.start({ ...base, placement: { instancesPerWorker: GROUP_SIZE } });
  const ids = Array.from({ length: GROUPS * GROUP_SIZE }, (_, i) => `g${Math.floor(i / GROUP_SIZE)}-${i % GROUP_SIZE}`);
  // One at a time, so that each group is filled before the next opens.
  for (const id of ids) await rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback', settings: { faults: true } }, { waitFor: 'connected' });
  const culprit = ids[0] as string;
  const threadOf = new Map((await rt.listHealth()).map((h) => [h.instanceId, h.worker?.threadId]));
  const culpritThread = threadOf.get(culprit);
  const mates = new Set(ids.filter((id) => threadOf.get(id) === culpritThread));
  if (mates.size !== GROUP_SIZE || new Set(threadOf.values()).size !== GROUPS) throw new Error(`unexpected placement: ${mates.size} in the culprit's worker, ${new Set(threadOf.values()).size} workers`);

  const events: { event: string; instanceId: string; kind?: unknown }[] = [];
  const listeners = STATUS_EVENTS.map((event) => {
    const on = (p: { instanceId: string; kind?: unknown }): void => {
      events.push({ event, instanceId: p.instanceId, kind: p.kind });
    };
    rt.on(event, on);
    return () => rt.off(event, on);
  });

  let splits = 0;
  const onSplit = (): void => void splits++;
  rt.on('worker:split', onSplit);
  const alone = async (): Promise<boolean> => {
    const h = await rt.health(culprit);
    return h.quarantined && h.worker?.instances === 1;
  };
  let wholeGroupRestarts = 0;
  let crashes = 0;
  const crashToConnectedMs: number[] = [];
  while (crashes < MAX_CRASHES && !(await alone())) {
    crashes++;
    await rt.whenStatus(culprit, 'connected', { timeoutMs: 30_000 });
    const from = events.length;
    const disconnected = new Promise<void>((resolve) => {
      const on = (p: { instanceId: string }): void => {
        if (p.instanceId !== culprit) return;
        rt.off('instance:disconnected', on);
        resolve();
      };
      rt.on('instance:disconnected', on);
    });
    const t0 = performance.now();
    void rt.send(culprit, { fault: 'exit' }).catch(() => undefined);
    await disconnected;
    await rt.whenStatus(culprit, 'connected', { timeoutMs: 30_000 });
    crashToConnectedMs.push(performance.now() - t0);
    // Its worker-mates restarted with it when every one of them has a restart marker since the fault.
    await Promise.all([...mates].map((id) => rt.whenStatus(id, 'connected', { timeoutMs: 30_000 })));
    await new Promise((r) => setTimeout(r, 50)); // the culprit's health settles in its new worker
    const restarted = new Set(events.slice(from).filter((e) => e.event === 'instance:restart').map((e) => e.instanceId));
    if ([...mates].every((id) => restarted.has(id))) wholeGroupRestarts++;
  }
  await Promise.all(ids.map((id) => rt.whenStatus(id, 'connected', { timeoutMs: 30_000 })));
  await new Promise((r) => setTimeout(r, 200)); // late events
  for (const off of listeners) off();
  rt.off('worker:split', onSplit);
  const isAlone = await alone();
  await rt.stop();

  const others = events.filter((e) => !mates.has(e.instanceId));
  return {
    crashes,
    untilAlone: isAlone ? crashes : null,
    splits,
    wholeGroupRestarts,
    culpritGroupChanges: events.length - others.length,
    otherGroupChanges: others.length,
    otherGroupRestarts: others.filter((e) => e.event === 'instance:restart').length,
    crashToConnectedMs: crashToConnectedMs.map(r2),
  };
}

// ─────────────────────────────────────────────────────────── main

const tScript = performance.now();
const loadBefore = os.loadavg();
const packed = await scale(PACKED, { placement: { instancesPerWorker: PER_WORKER } }, 'p');
const dedicated = await scale(DEDICATED, {}, 'd');
const send = await sendThroughput();
const crash = await crashLoop();

const perMs = (x: ScaleResult, ms: number): number => r2(ms / x.n);
const perMiB = (x: ScaleResult): number => Math.round((x.rssBytes / x.n / MiB) * 1000) / 1000;
const sendShared = summary(send.shared);
const sendDedicated = summary(send.dedicated);
const rows: Comparison[] = [
  compare(`(info) start → all connected, per instance (${packed.n} at ${PER_WORKER}/worker)`, 'ms', perMs(packed, packed.startMs), `${dedicated.n} dedicated, per instance`, perMs(dedicated, dedicated.startMs)),
  compare(`RSS per idle connected instance (${packed.n} at ${PER_WORKER}/worker)`, 'MiB', perMiB(packed), `${dedicated.n} dedicated, per instance`, perMiB(dedicated), { max: 0.15 }),
  compare(`RSS per idle connected instance (${packed.n} at ${PER_WORKER}/worker)`, 'MiB', perMiB(packed), 'target', 1, { max: 1 }),
  compare(`(info) heartbeat RTT p99, idle (${packed.workers} workers of ${PER_WORKER})`, 'ms', packed.rttP99, `${dedicated.workers} dedicated workers`, dedicated.rttP99),
  compare(`(info) process CPU while idle, per 1000 instances (${packed.n} at ${PER_WORKER}/worker)`, 'cores', r2((packed.idleCores / packed.n) * 1000), `${dedicated.n} dedicated, per 1000 instances`, r2((dedicated.idleCores / dedicated.n) * 1000)),
  compare(`(info) stop(), per instance (${packed.n} at ${PER_WORKER}/worker)`, 'ms', r2(packed.stopMs / packed.n), `${dedicated.n} dedicated, per instance`, r2(dedicated.stopMs / dedicated.n)),
  compare('worker threads left after stop()', 'threads', packed.left, 'worker threads created', packed.workers, { max: 0 }),
  compare(`send throughput at saturation, one instance of a full shared worker (${PER_WORKER}, median)`, 'msgs/s', Math.round(sendShared.median), 'dedicated instance, same runtime', Math.round(sendDedicated.median), { min: 0.9 }),
  compare(`status changes of the other ${GROUPS - 1} groups' instances, ${crash.crashes} crashes in one group`, 'events', crash.otherGroupChanges, "crashing group's status changes", crash.culpritGroupChanges, { max: 0 }),
  compare(
    `crashes until the culprit is alone in its own worker (group of ${GROUP_SIZE}, quarantine after 2)`,
    'crashes',
    crash.untilAlone ?? Infinity,
    'target ⌈log2(group)⌉ + 2',
    Math.ceil(Math.log2(GROUP_SIZE)) + 2,
    { max: 1 },
  ),
  compare(`(info) crashes that restarted the culprit's whole shared group (${GROUP_SIZE} instances)`, 'crashes', crash.wholeGroupRestarts, 'crashes', crash.crashes),
];
report('packing', rows, {
  scale: {
    packed: { ...packed, startMs: Math.round(packed.startMs), stopMs: Math.round(packed.stopMs), rssMiB: r2(packed.rssBytes / MiB) },
    dedicated: { ...dedicated, startMs: Math.round(dedicated.startMs), stopMs: Math.round(dedicated.stopMs), rssMiB: r2(dedicated.rssBytes / MiB) },
    heartbeat,
    idleMs: IDLE_MS,
  },
  send: { messagesPerRound: SEND_N, rounds: SEND_ROUNDS, outstanding: OUTSTANDING, shared: sendShared, dedicated: sendDedicated },
  crashLoop: { groups: GROUPS, groupSize: GROUP_SIZE, ...crash },
  totalSeconds: Math.round((performance.now() - tScript) / 100) / 10,
  // The 1-minute load average before and after: other processes on the machine skew every figure.
  loadAverage: { before: loadBefore.map(r2), after: os.loadavg().map(r2) },
});
console.log(`worker threads left after stop(): ${packed.left} of ${packed.workers} (packed; ${packed.leftAtStop} when stop() resolved), ${dedicated.left} of ${dedicated.workers} (dedicated; ${dedicated.leftAtStop} when stop() resolved)`);
if (packed.left > 0 || dedicated.left > 0) {
  console.error('worker threads outlived stop()');
  process.exitCode = 1;
}
