/**
 * Quarantine with real workers: an instance that keeps ending its shared worker (`process.exit`)
 * is split out by bisection until it is alone, where its own restart intensity ends it in
 * `error` while its former worker-mates stay connected; and instances left alone that stay up
 * are released back to shared workers.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Runtime, type RuntimeOptions } from '../src/runtime/runtime.js';
import type { RuntimeEvents } from '../src/events.js';
import { trackWorkers, waitFor } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const fastRestart = { maxRestarts: 2, periodMs: 60_000, backoff: { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 }, recoverAfterMs: Infinity };
const heartbeat = { intervalMs: 250, maxMissed: 8 };

const runtimes: Runtime[] = [];
async function start(opts: RuntimeOptions = {}): Promise<Runtime> {
  const rt = await Runtime.start({ logger: silent, restart: fastRestart, heartbeat, ...opts });
  runtimes.push(rt);
  return rt;
}
afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
});

type Ev = Record<string, unknown> & { instanceId: string; event: string };
function collect(rt: Runtime, ...names: Array<keyof RuntimeEvents>): Ev[] {
  const out: Ev[] = [];
  for (const name of names) rt.on(name, (p) => out.push({ ...(p as unknown as Ev), event: name }));
  return out;
}

const ids = Array.from({ length: 8 }, (_, i) => `q${i}`);

async function startEight(rt: Runtime): Promise<void> {
  for (const id of ids) await rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback', settings: { faults: true } }, { waitFor: 'connected' });
}

/** Ends the culprit's worker (`process.exit`) each time it is connected, until `done` holds or it is in error. */
async function crashUntil(rt: Runtime, culprit: string, done: () => Promise<boolean>, max: number): Promise<number> {
  let crashes = 0;
  while (crashes < max && !(await done())) {
    await rt.whenStatus(culprit, ['connected', 'error'], { timeoutMs: 30_000 });
    if (rt.whereis(culprit)?.currentStatus === 'error') break;
    if (await done()) break;
    const restarts = (await rt.status(culprit)).restartCount;
    // Settles once delivered again after the death it causes, or rejects when that death was one too many.
    await rt.send(culprit, { fault: 'exit' }).catch(() => undefined);
    crashes++;
    await waitFor(() => (rt.whereis(culprit)?.health().restartCount ?? 0) > restarts || rt.whereis(culprit)?.currentStatus === 'error', 30_000);
  }
  return crashes;
}

describe('quarantine', { timeout: 120_000 }, () => {
  it('an instance that keeps ending its shared worker is alone within log2(n) + 2 deaths, then ends in error alone', async () => {
    const tracker = trackWorkers();
    const rt = await start({ placement: { instancesPerWorker: 8, quarantine: { afterCrashes: 2, periodMs: 60_000 } } });
    await startEight(rt);
    expect(tracker.created()).toBe(1);
    const events = collect(rt, 'instance:quarantined', 'worker:split', 'instance:error');
    const culprit = 'q5';
    const alone = async (): Promise<boolean> => {
      const h = await rt.health(culprit);
      return h.quarantined && h.worker?.instances === 1 && h.worker.state === 'up';
    };
    const crashes = await crashUntil(rt, culprit, alone, 10);
    expect(await alone()).toBe(true);
    expect(crashes).toBeLessThanOrEqual(Math.ceil(Math.log2(8)) + 2);
    const splits = events.filter((e) => e.event === 'worker:split');
    expect(splits.length).toBe(Math.ceil(Math.log2(8)));
    expect(events.some((e) => e.event === 'instance:quarantined' && e.instanceId === culprit && e.quarantined === true)).toBe(true);

    // Alone, its own restart intensity applies: it ends in error, and only it.
    await crashUntil(rt, culprit, async () => rt.whereis(culprit)?.currentStatus === 'error', 10);
    await rt.whenStatus(culprit, 'error', { timeoutMs: 30_000 });
    expect(events.filter((e) => e.event === 'instance:error').map((e) => e.instanceId)).toEqual([culprit]);
    for (const id of ids.filter((i) => i !== culprit)) {
      await rt.whenStatus(id, 'connected', { timeoutMs: 30_000 });
      expect(await rt.send(id, { text: 'still here' })).toBeDefined();
    }
    await rt.stop();
    await waitFor(() => tracker.live() === 0, 30_000);
    tracker.dispose();
  });

  it('instances left alone by the splits that stay up are released, back in shared workers', async () => {
    const rt = await start({ placement: { instancesPerWorker: 8, quarantine: { afterCrashes: 1, periodMs: 1500 } } });
    await startEight(rt);
    const events = collect(rt, 'instance:quarantined');
    const culprit = 'q2';
    const alone = async (): Promise<boolean> => (await rt.health(culprit)).quarantined;
    await crashUntil(rt, culprit, alone, 10);
    expect(await alone()).toBe(true);
    // Quiet now: every quarantined instance is released and shares a worker again.
    await waitFor(() => events.some((e) => e.quarantined === false), 30_000);
    await expect
      .poll(
        async () => {
          const health = await rt.listHealth();
          return health.every((h) => !h.quarantined && h.status === 'connected' && (h.worker?.instances ?? 0) > 1);
        },
        { timeout: 30_000, interval: 200 },
      )
      .toBe(true);
    const released = events.filter((e) => e.quarantined === false).map((e) => e.instanceId);
    expect(released).toContain(culprit);
  });

  it('bad quarantine values are refused, naming the field', async () => {
    for (const quarantine of [{ afterCrashes: 0 }, { afterCrashes: 1.5 }, { periodMs: 0 }, { periodMs: -5 }, { other: 1 }]) {
      await expect(Runtime.start({ logger: silent, placement: { instancesPerWorker: 4, quarantine: quarantine as never } })).rejects.toMatchObject({
        code: 'invalid_config',
        message: expect.stringContaining('placement.quarantine'),
      });
    }
  });
});
