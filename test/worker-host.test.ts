/**
 * WorkerHost against REAL worker threads (the compiled fixture `test/fixtures/behave.ts`).
 * Build first: `npx tsc -p tsconfig.build.json`.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import {
  InvalidConfigError,
  StartFailureError,
  ThreadvisorError,
  TimeoutError,
  WorkerExitedError,
} from '../src/errors.js';
import type { StartContext } from '../src/supervisor/types.js';
import {
  WorkerHost,
  workerChild,
  type HeartbeatEvent,
  type HeartbeatMissedEvent,
  type WorkerExitEvent,
  type WorkerHostOptions,
} from '../src/worker/host.js';
import { nodeEndpoint } from '../src/wire/host.js';
import { flattenIssues, workerHostOptionsSchema } from '../src/worker/schemas.js';
import type { BehaveApi, BehaveData } from './fixtures/behave.js';
import { activeResources, fixtureUrl, resourceGrowth, trackWorkers, waitFor, type WorkerTracker } from './helpers/fixtures.js';

const behave = fixtureUrl('behave');

/** Every host started here, so `afterEach` can make sure none outlives its test. */
const hosts = new Set<WorkerHost<BehaveApi>>();

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
  return { logger, lines };
}

const quiet = pino({ level: 'silent' });

async function start(
  data: BehaveData,
  options: Partial<WorkerHostOptions> = {},
  ctx?: Partial<StartContext>,
): Promise<WorkerHost<BehaveApi>> {
  const host = await WorkerHost.start<BehaveApi>({ filename: behave, workerData: data, logger: quiet, ...options }, ctx);
  hosts.add(host);
  return host;
}

function flags(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(8));
}

async function expectRejection<E extends Error>(promise: Promise<unknown>, type: new (...args: never[]) => E): Promise<E> {
  const err = await promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(type);
  return err as E;
}

let tracker: WorkerTracker;
let resourcesBefore: Record<string, number>;

beforeAll(() => {
  if (!existsSync(fileURLToPath(behave))) {
    throw new Error(`missing ${fileURLToPath(behave)}: run \`npx tsc -p tsconfig.build.json\` first`);
  }
  resourcesBefore = activeResources();
  tracker = trackWorkers();
});

afterEach(async () => {
  await Promise.all([...hosts].map((host) => host.shutdown('brutal_kill')));
  for (const host of hosts) expect(host.stats().timers).toBe(0);
  hosts.clear();
});

afterAll(() => {
  tracker.dispose();
});

describe('WorkerHost: start and calls', { timeout: 20_000 }, () => {
  it('starts, reports ready and answers typed calls', async () => {
    const host = await start({ mode: 'serve', payload: { hello: 'world' } }, { heartbeat: { intervalMs: 50 } });
    expect(host.state).toBe('up');
    expect(host.childId).toBe('behave');
    expect(await host.call('echo', 'hi')).toBe('hi');
    expect(await host.call('add', 2, 3)).toBe(5);
    expect(await host.call('pid')).toEqual({ threadId: host.threadId, pid: process.pid });
    expect(await host.call('data')).toEqual({ hello: 'world' });
    expect(await host.callWithTimeout(1000, 'echo', [1, { a: 2 }])).toEqual([1, { a: 2 }]);
    expect(await host.callWithTimeout(Infinity, 'add', 1, 1)).toBe(2);
    // Calls are typed from the API the worker serves (checked by tsc; never invoked).
    const typeChecks = (): void => {
      expectTypeOf(host.call('add', 1, 2)).resolves.toBeNumber();
      expectTypeOf(host.call('slow', 1)).resolves.toBeNumber();
      expectTypeOf(host.call('pid')).resolves.toEqualTypeOf<{ threadId: number; pid: number }>();
      // @ts-expect-error: wrong argument type
      void host.call('add', 1, 'two');
      // @ts-expect-error: not a method of the API
      void host.call('nope');
    };
    void typeChecks;

    const beats: HeartbeatEvent[] = [];
    host.on('heartbeat', (event: HeartbeatEvent) => beats.push(event));
    await waitFor(() => beats.length >= 2);
    expect(beats[1]!.seq).toBeGreaterThan(beats[0]!.seq);
    expect(beats[0]).toMatchObject({ childId: 'behave', threadId: host.threadId });
    expect(beats[0]!.elu).toBeGreaterThanOrEqual(0);
    expect(beats[0]!.elu).toBeLessThanOrEqual(1);
    expect(beats[0]!.heapUsed).toBeGreaterThan(0);

    const health = host.health();
    expect(health).toMatchObject({ state: 'up', threadId: host.threadId, missedBeats: 0 });
    expect(health.lastPongAt).not.toBeNull();
    expect(health.lastPongAgeMs).toBeGreaterThanOrEqual(0);
    expect(health.heapUsed).toBeGreaterThan(0);
    const stats = host.stats();
    expect(stats.pongs).toBeGreaterThanOrEqual(2);
    expect(stats.calls).toBe(6);
    expect(stats.pendingCalls).toBe(0);
    expect(stats.malformedMessages).toBe(0);
  });

  it('passes errors thrown by the worker method through', async () => {
    const host = await start({ mode: 'serve' });
    const err = await expectRejection(host.call('fail', 'nope'), Error);
    expect(err.message).toBe('nope');
    expect(await host.call('echo', 'still up')).toBe('still up');
  });

  it('rejects a call with TimeoutError after its deadline, and stays usable', async () => {
    const host = await start({ mode: 'serve' }, { callTimeoutMs: 100 });
    const late = await expectRejection(host.call('slow', 3000), TimeoutError);
    expect(late.code).toBe('timeout');
    expect(late.details).toMatchObject({ timeoutMs: 100 });
    const explicit = await expectRejection(host.callWithTimeout(50, 'busy', 300), TimeoutError);
    expect(explicit.code).toBe('timeout');
    expect(await host.callWithTimeout(2000, 'echo', 'ok')).toBe('ok');
    expect(host.stats().callTimeouts).toBe(2);
    expect(host.stats().pendingCalls).toBe(0);
  });

  it('refuses an invalid call deadline', async () => {
    const host = await start({ mode: 'serve' });
    const err = await expectRejection(host.callWithTimeout(0, 'echo', 1), InvalidConfigError);
    expect(err.issues.map((i) => i.path)).toEqual(['timeoutMs']);
  });

  it('rejects a call whose arguments cannot be cloned, and stays usable', async () => {
    const host = await start({ mode: 'serve' });
    await expectRejection(host.call('echo', (() => 1) as unknown as number), Error);
    expect(host.stats().pendingCalls).toBe(0);
    expect(await host.call('echo', 2)).toBe(2);
  });

  it('works without any logger given', async () => {
    const host = await WorkerHost.start<BehaveApi>({ filename: behave.href.replace('file://', ''), workerData: { mode: 'serve' } });
    hosts.add(host);
    expect(host.childId).toBe('behave');
    expect(await host.shutdown(2000)).toMatchObject({ class: 'shutdown', reason: 'shutdown' });
  });

  it('logs through a child logger bound to childId and threadId', async () => {
    const { logger, lines } = captureLogger();
    const host = await start({ mode: 'serve' }, { logger, name: 'named' });
    expect(host.childId).toBe('named');
    await host.shutdown(2000);
    const exitLine = lines.find((l) => l.msg === 'worker exited');
    expect(exitLine).toMatchObject({ childId: 'named', threadId: host.threadId, exitClass: 'shutdown' });
  });

  it('takes childId and logger from the start context', async () => {
    const { logger, lines } = captureLogger();
    const ctxLogger = logger.child({ supervisor: 'root', childId: 'ctx-child' });
    const host = await WorkerHost.start<BehaveApi>(
      { filename: behave, workerData: { mode: 'serve' } },
      { childId: 'ctx-child', supervisor: 'root', attempt: 0, logger: ctxLogger },
    );
    hosts.add(host);
    expect(host.childId).toBe('ctx-child');
    await host.shutdown('brutal_kill');
    const exitLine = lines.find((l) => l.msg === 'worker exited');
    expect(exitLine).toMatchObject({ supervisor: 'root', childId: 'ctx-child', threadId: host.threadId });
  });

  it('gives the worker stdout when asked for it', async () => {
    const host = await start({ mode: 'serve' }, { stdout: true, stderr: true });
    expect(typeof host.stdout.on).toBe('function');
    expect(typeof host.stderr.on).toBe('function');
  });

  it('runs without heartbeats when they are disabled', async () => {
    const off = await start({ mode: 'serve' }, { heartbeat: false });
    const zero = await start({ mode: 'serve' }, { heartbeat: { intervalMs: 0 } });
    await new Promise((resolve) => setTimeout(resolve, 150));
    for (const host of [off, zero]) {
      expect(host.stats().pings).toBe(0);
      expect(host.health().lastPongAt).toBeNull();
      expect(await host.call('echo', 1)).toBe(1);
    }
  });
});

describe('WorkerHost: death classification', { timeout: 20_000 }, () => {
  it('classifies an uncaught throw as crash', async () => {
    const host = await start({ mode: 'throw_after', ms: 20 });
    const events: WorkerExitEvent[] = [];
    host.on('exit', (event: WorkerExitEvent) => events.push(event));
    const exit = await host.exited;
    expect(exit).toMatchObject({ class: 'crash', reason: 'behave: thrown after 20 ms', code: 1 });
    expect(exit.error).toBeInstanceOf(Error);
    expect(events).toHaveLength(1);
    expect(events[0]!.exit).toBe(exit);
    expect(host.state).toBe('down');
    expect(host.health().state).toBe('down');
  });

  it('classifies an unhandled rejection as crash', async () => {
    const host = await start({ mode: 'reject_after', ms: 20 });
    expect(await host.exited).toMatchObject({ class: 'crash', reason: 'behave: rejected after 20 ms', code: 1 });
  });

  it('classifies process.exit(3) as exit with code 3', async () => {
    const host = await start({ mode: 'exit_after', ms: 20, code: 3 });
    expect(await host.exited).toEqual({ class: 'exit', reason: 'exit(3)', code: 3 });
  });

  it('classifies process.exit(0) as normal', async () => {
    const host = await start({ mode: 'exit_after', ms: 20, code: 0 });
    expect(await host.exited).toEqual({ class: 'normal', reason: 'normal', code: 0 });
  });

  it('classifies a heap overflow under resourceLimits as oom', async () => {
    const host = await start({ mode: 'oom_after', ms: 20 }, { resourceLimits: { maxOldGenerationSizeMb: 16 } });
    const exit = await host.exited;
    expect(exit.class).toBe('oom');
    expect(exit.code).toBe(1);
    expect((exit.error as Error & { code?: string }).code).toBe('ERR_WORKER_OUT_OF_MEMORY');
  });

  it('publishes the exit on the diagnostics channel', async () => {
    const seen: unknown[] = [];
    const onExit = (message: unknown): void => void seen.push(message);
    diagnostics_channel.subscribe('threadvisor:worker:exit', onExit);
    try {
      const host = await start({ mode: 'exit_after', ms: 10, code: 4 });
      await host.exited;
      expect(seen).toContainEqual(
        expect.objectContaining({ childId: 'behave', threadId: host.threadId, exit: expect.objectContaining({ code: 4 }) }),
      );
    } finally {
      diagnostics_channel.unsubscribe('threadvisor:worker:exit', onExit);
    }
  });

  it('detects a blocked event loop as hang while a sibling keeps answering heartbeats', async () => {
    const sibling = await start({ mode: 'serve' }, { heartbeat: { intervalMs: 100, maxMissed: 10 } });
    const hung = await start({ mode: 'hang_after', ms: 100 }, { heartbeat: { intervalMs: 100, maxMissed: 3 } });
    const missed: HeartbeatMissedEvent[] = [];
    const published: unknown[] = [];
    const onMissed = (message: unknown): void => void published.push(message);
    diagnostics_channel.subscribe('threadvisor:worker:heartbeat_missed', onMissed);
    let siblingPongsAtFirstMiss = -1;
    hung.on('heartbeat_missed', (event: HeartbeatMissedEvent) => {
      if (missed.length === 0) siblingPongsAtFirstMiss = sibling.stats().pongs;
      missed.push(event);
    });
    try {
      const exit = await hung.exited;
      expect(exit).toMatchObject({ class: 'hang', reason: 'heartbeat_timeout' });
      expect(missed.map((m) => m.missed)).toEqual([1, 2, 3]);
      expect(missed[2]).toMatchObject({ maxMissed: 3, childId: 'behave', threadId: hung.threadId });
      expect(published.length).toBeGreaterThanOrEqual(3);
      expect(hung.stats().missedBeats).toBe(3);
      // The sibling kept answering throughout the hang.
      expect(sibling.stats().pongs).toBeGreaterThan(siblingPongsAtFirstMiss);
      expect(sibling.health().missedBeats).toBe(0);
      expect(await sibling.call('echo', 'alive')).toBe('alive');
    } finally {
      diagnostics_channel.unsubscribe('threadvisor:worker:heartbeat_missed', onMissed);
    }
  });

  it('a stalled supervising thread does not mistake a healthy worker for a hung one', async () => {
    const host = await start({ mode: 'serve' }, { heartbeat: { intervalMs: 50, maxMissed: 3 } });
    await waitFor(() => host.stats().pongs >= 2);
    // This thread blocks for 4 deadlines: no pings go out, no pongs are read.
    const until = performance.now() + 600;
    while (performance.now() < until);
    await waitFor(() => host.stats().supervisorStalls >= 1);
    const pongs = host.stats().pongs;
    await waitFor(() => host.stats().pongs > pongs + 2);
    expect(host.state).toBe('up');
    expect(await host.call('echo', 'alive')).toBe('alive');
  });

  it('a hung worker is still detected when the supervising thread stalls too', async () => {
    const host = await start({ mode: 'hang_after', ms: 100 }, { heartbeat: { intervalMs: 50, maxMissed: 3 } });
    await new Promise((r) => setTimeout(r, 150)); // the worker is now in its busy loop
    const until = performance.now() + 600;
    while (performance.now() < until);
    const exit = await host.exited;
    expect(exit).toMatchObject({ class: 'hang', reason: 'heartbeat_timeout' });
    expect(host.stats().supervisorStalls).toBe(1);
  });

  it('rejects an in-flight call promptly with WorkerExitedError when the worker dies', async () => {
    const host = await start({ mode: 'serve' });
    const inFlight = host.callWithTimeout(60_000, 'slow', 30_000);
    const startedAt = Date.now();
    await host.call('crash', 'boom');
    const err = await expectRejection(inFlight, WorkerExitedError);
    expect(Date.now() - startedAt).toBeLessThan(10_000);
    expect(err.code).toBe('worker_exited');
    expect(err).toBeInstanceOf(ThreadvisorError);
    expect(await host.exited).toMatchObject({ class: 'crash', reason: 'boom' });
    expect(host.stats().callsRejectedOnExit).toBe(1);
    // Calls after death reject at once, with the final classification.
    const after = await expectRejection(host.call('echo', 1), WorkerExitedError);
    expect(after.details).toMatchObject({ class: 'crash', reason: 'boom', code: 1 });
  });

  it('rejects in-flight calls when the worker exits on its own', async () => {
    const host = await start({ mode: 'serve' });
    const inFlight = host.call('slow', 30_000);
    await host.call('exit', 0);
    const err = await expectRejection(inFlight, WorkerExitedError);
    expect(err.code).toBe('worker_exited');
    expect(await host.exited).toMatchObject({ class: 'normal', code: 0 });
  });

  it('delivers replies the worker posted just before it died', async () => {
    const host = await start({ mode: 'serve' });
    const echoes = Array.from({ length: 50 }, (_, i) => host.call('echo', i));
    const results = await Promise.all([...echoes, host.call('exit', 0)]);
    expect(results.slice(0, 50)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(await host.exited).toMatchObject({ class: 'normal' });
    expect(host.stats().callsRejectedOnExit).toBe(0);
  });

  it('terminates a worker that closed its heartbeat port but kept running', async () => {
    const host = await start({ mode: 'close_port_after', ms: 20 });
    const exit = await host.exited;
    expect(exit).toMatchObject({ class: 'crash', reason: 'heartbeat port closed without exit' });
    await expectRejection(host.call('echo', 1), WorkerExitedError);
  });

  it('terminate(reason) ends a healthy worker at once with an abnormal exit naming the reason; shutdown after it changes nothing', async () => {
    const host = await start({ mode: 'serve' });
    const exit = await host.terminate('instance gave up');
    expect(exit).toMatchObject({ class: 'exit', reason: 'instance gave up' });
    expect(await host.terminate('again')).toBe(exit);
    expect(await host.shutdown('brutal_kill')).toBe(exit);
  });

  it('terminate after a graceful stop has begun is the stop: the exit stays a shutdown', async () => {
    const host = await start({ mode: 'serve' });
    const stopping = host.shutdown(5000);
    await host.terminate('too late');
    expect(await stopping).toMatchObject({ class: 'shutdown' });
  });

  it('counts malformed heartbeat messages instead of throwing', async () => {
    const { logger, lines } = captureLogger();
    const host = await start({ mode: 'malformed_pong' }, { logger, heartbeat: { intervalMs: 50 } });
    // Three junk messages before ready, one duplicate ready after it.
    await waitFor(() => host.stats().malformedMessages >= 4);
    expect(host.stats().malformedMessages).toBe(4);
    expect(lines.filter((l) => l.msg === 'malformed message from worker')).toHaveLength(4);
    await waitFor(() => host.stats().pongs >= 1);
    expect(await host.call('echo', 'fine')).toBe('fine');
    expect(host.state).toBe('up');
  });
});

describe('WorkerHost: start failures', { timeout: 20_000 }, () => {
  it('rejects with StartFailureError when the worker throws at start', async () => {
    const before = tracker.live();
    const err = await expectRejection(start({ mode: 'throw_at_start' }), StartFailureError);
    expect(err.code).toBe('start_failure');
    expect(err.details).toMatchObject({ id: 'behave', exitClass: 'crash', code: 1, reason: 'behave: thrown at start' });
    expect(err.cause).toBeInstanceOf(Error);
    await waitFor(() => tracker.live() === before);
  });

  it('rejects with StartFailureError when the worker exits before ready', async () => {
    const err = await expectRejection(start({ mode: 'exit_at_start', code: 2 }), StartFailureError);
    expect(err.details).toMatchObject({ exitClass: 'exit', code: 2, reason: 'exit(2)' });
  });

  it('terminates a worker that never reports ready and rejects after readyTimeoutMs', async () => {
    const before = tracker.live();
    const err = await expectRejection(start({ mode: 'never_ready' }, { readyTimeoutMs: 300 }), StartFailureError);
    expect(err.details).toMatchObject({ reason: 'ready_timeout', exitClass: 'hang' });
    // The thread is already gone when start rejects.
    expect(tracker.live()).toBe(before);
  });

  it('rejects a worker that speaks another protocol version', async () => {
    const err = await expectRejection(start({ mode: 'wrong_protocol' }), StartFailureError);
    expect(err.details).toMatchObject({ reason: 'protocol version 99 (host speaks 1)' });
  });

  it('rejects with StartFailureError when the script does not exist', async () => {
    const err = await expectRejection(
      start({ mode: 'serve' }, { filename: new URL('./does-not-exist.js', behave) }),
      StartFailureError,
    );
    expect(err.details).toMatchObject({ exitClass: 'crash' });
  });

  it('rejects with StartFailureError when the Worker constructor throws', async () => {
    const err = await expectRejection(start({ mode: 'serve' }, { execArgv: ['--max-old-space-size=10'] }), StartFailureError);
    expect(err.details).toMatchObject({ exitClass: 'start_failure', errorCode: 'ERR_WORKER_INVALID_EXEC_ARGV' });
  });

  it('rejects invalid options with InvalidConfigError listing every bad path', async () => {
    const bad = {
      filename: 42,
      heartbeat: { intervalMs: -1, bogus: true },
      readyTimeoutMs: 0,
      resourceLimits: { maxOldGenerationSizeMb: 'big' },
      execArgv: [1],
      logger: {},
      typo: true,
    } as unknown as WorkerHostOptions;
    const err = await expectRejection(WorkerHost.start(bad), InvalidConfigError);
    expect(err.code).toBe('invalid_config');
    expect(err.issues.map((i) => i.path).sort()).toEqual(
      [
        'execArgv.0',
        'filename',
        'heartbeat.bogus',
        'heartbeat.intervalMs',
        'logger',
        'readyTimeoutMs',
        'resourceLimits.maxOldGenerationSizeMb',
        'typo',
      ].sort(),
    );
    expect(err.message).toContain('heartbeat.intervalMs');
  });

  it('reports a bad value of a union by the branch that matched', () => {
    const result = workerHostOptionsSchema.safeParse({ filename: '', heartbeat: 'often', env: { A: 1 } });
    expect(result.success).toBe(false);
    const paths = flattenIssues(result.error!.issues).map((i) => i.path);
    expect(paths).toContain('filename');
    expect(paths).toContain('heartbeat');
    expect(paths).toContain('env');
  });
});

describe('WorkerHost: shutdown', { timeout: 20_000 }, () => {
  it('stops gracefully: runs onStop, exits as shutdown, and is idempotent', async () => {
    const f = flags();
    const host = await start({ mode: 'serve', onStop: 'slow', stopDelayMs: 50, flags: f });
    const first = host.shutdown(5000);
    expect(host.state).toBe('stopping');
    expect(host.health().state).toBe('stopping');
    const second = host.shutdown(5000);
    const exit = await first;
    expect(exit).toEqual({ class: 'shutdown', reason: 'shutdown', code: 0 });
    expect(await second).toBe(exit);
    expect(await host.shutdown('brutal_kill')).toBe(exit);
    expect(Atomics.load(f, 0)).toBe(1);
    expect(Atomics.load(f, 1)).toBe(1);
    expect(host.state).toBe('down');
  });

  it("waits without forcing under 'infinity'", async () => {
    const f = flags();
    const host = await start({ mode: 'serve', onStop: 'slow', stopDelayMs: 100, flags: f });
    expect(await host.shutdown('infinity')).toEqual({ class: 'shutdown', reason: 'shutdown', code: 0 });
    expect(Atomics.load(f, 1)).toBe(1);
  });

  it('forces a worker whose onStop never finishes once the budget has passed', async () => {
    const f = flags();
    const host = await start({ mode: 'serve', onStop: 'never', flags: f });
    const exit = await host.shutdown(200);
    expect(exit).toMatchObject({ class: 'shutdown', reason: 'shutdown_timeout' });
    expect(Atomics.load(f, 0)).toBe(1);
    expect(Atomics.load(f, 1)).toBe(0);
  });

  it('forces a worker whose onStop blocks its event loop', async () => {
    const f = flags();
    const host = await start({ mode: 'serve', onStop: 'hang', flags: f });
    expect(await host.shutdown(200)).toMatchObject({ class: 'shutdown', reason: 'shutdown_timeout' });
    expect(Atomics.load(f, 0)).toBe(1);
  });

  it('kills at once with brutal_kill', async () => {
    const f = flags();
    const host = await start({ mode: 'serve', flags: f });
    const exit = await host.shutdown('brutal_kill');
    expect(exit).toEqual({ class: 'shutdown', reason: 'brutal_kill', code: 1 });
    expect(Atomics.load(f, 0)).toBe(0);
  });

  it("escalates a graceful stop in progress to brutal_kill", async () => {
    const host = await start({ mode: 'serve', onStop: 'never' });
    const graceful = host.shutdown('infinity');
    await new Promise((resolve) => setTimeout(resolve, 50));
    const exit = await host.shutdown('brutal_kill');
    expect(exit).toMatchObject({ class: 'shutdown', reason: 'brutal_kill' });
    expect(await graceful).toBe(exit);
  });

  it('still exits as shutdown when onStop throws (code 1, error logged)', async () => {
    const { logger, lines } = captureLogger();
    const host = await start({ mode: 'serve', onStop: 'throw' }, { logger });
    expect(await host.shutdown(5000)).toEqual({ class: 'shutdown', reason: 'shutdown', code: 1 });
    expect(lines.some((l) => l.msg === 'worker onStop hook failed')).toBe(true);
  });

  it('resolves at once with the earlier exit when the worker had already died', async () => {
    const host = await start({ mode: 'exit_after', ms: 10, code: 5 });
    const exit = await host.exited;
    expect(await host.shutdown(1000)).toBe(exit);
    expect(exit.class).toBe('exit');
  });

  it('rejects an invalid budget', async () => {
    const host = await start({ mode: 'serve' });
    const err = await expectRejection(host.shutdown(-5), InvalidConfigError);
    expect(err.code).toBe('invalid_config');
    expect(host.state).toBe('up');
  });
});

describe('workerChild', { timeout: 20_000 }, () => {
  const ctx = (childId: string): StartContext => ({ supervisor: 'sup', childId, attempt: 0, logger: quiet });

  it('builds a worker child spec with defaults', async () => {
    const spec = workerChild<BehaveApi>('echoer', { filename: behave, workerData: { mode: 'serve' } });
    expect(spec).toMatchObject({ id: 'echoer', type: 'worker', restart: 'permanent', shutdown: 5000 });
    const child = await spec.start(ctx('echoer'));
    const host = child as WorkerHost<BehaveApi>;
    hosts.add(host);
    expect(host).toBeInstanceOf(WorkerHost);
    expect(host.childId).toBe('echoer');
    expect(await host.call('echo', 'via spec')).toBe('via spec');
    expect(await child.shutdown(spec.shutdown ?? 5000)).toMatchObject({ class: 'shutdown' });
  });

  it('builds options per start when given a function', async () => {
    const attempts: number[] = [];
    const spec = workerChild<BehaveApi>(
      'dyn',
      (c) => {
        attempts.push(c.attempt);
        return { filename: behave, workerData: { mode: 'serve', payload: c.attempt } };
      },
      { restart: 'transient', shutdown: 'brutal_kill' },
    );
    expect(spec).toMatchObject({ restart: 'transient', shutdown: 'brutal_kill' });
    const host = (await spec.start({ ...ctx('dyn'), attempt: 3 })) as WorkerHost<BehaveApi>;
    hosts.add(host);
    expect(await host.call('data')).toBe(3);
    expect(attempts).toEqual([3]);
  });

  it('validates id, options and child settings up front', () => {
    let caught: unknown;
    try {
      workerChild('', { filename: behave, heartbeat: { maxMissed: 0 } }, {
        restart: 'sometimes' as never,
        shutdown: -1,
      });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidConfigError);
    expect((caught as InvalidConfigError).issues.map((i) => i.path)).toEqual([
      'id',
      'options.heartbeat.maxMissed',
      'restart',
      'shutdown',
    ]);
  });
});

describe('worker runtime outside a supervised worker', () => {
  it('is not supervised and refuses to serve on the main thread', async () => {
    const runtime = await import('../workers/runtime.js');
    expect(runtime.isSupervised()).toBe(false);
    expect(() => runtime.serve({})).toThrow(InvalidConfigError);
  });

  it('adapts a MessagePort to a comlink endpoint', async () => {
    const { MessageChannel } = await import('node:worker_threads');
    const { port1, port2 } = new MessageChannel();
    const endpoint = nodeEndpoint(port1);
    const received: unknown[] = [];
    const handler = { handleEvent: (event: { data: unknown }) => void received.push(event.data) };
    endpoint.addEventListener('message', handler as never);
    port2.postMessage('a');
    await waitFor(() => received.length === 1);
    endpoint.removeEventListener('message', handler as never);
    endpoint.removeEventListener('message', handler as never);
    port1.close();
    expect(received).toEqual(['a']);
  });
});

describe('resources', { timeout: 20_000 }, () => {
  it('leaves no worker threads, ports or timers behind once everything is stopped', async () => {
    const host = await start({ mode: 'serve' }, { heartbeat: { intervalMs: 20 } });
    const pending = expectRejection(host.call('slow', 10_000), WorkerExitedError);
    expect(host.stats().timers).toBeGreaterThanOrEqual(2);
    await host.shutdown(1000);
    await pending;
    expect(host.stats().timers).toBe(0);
    await waitFor(() => tracker.live() === 0);
    expect(tracker.created()).toBeGreaterThan(10);
    // Let closing ports and exiting threads finish releasing their handles.
    await waitFor(() => Object.keys(resourceGrowth(resourcesBefore, activeResources())).length === 0, 5000).catch(
      () => undefined,
    );
    expect(resourceGrowth(resourcesBefore, activeResources())).toEqual({});
  });
});
