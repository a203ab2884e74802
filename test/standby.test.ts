/**
 * Warm standby workers (`standby: { workers }`), with real worker threads and real crashes: a
 * new instance and a crashed one take a booted standby worker (its thread id was waiting in the
 * pool), a replacement boots in the background, a standby worker that dies while it waits is
 * replaced, other `resourceLimits` spawn as before, shared workers take standby workers too, and
 * `rt.stop()` leaves no thread, port or timer. No timing asserts beyond liveness bounds.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import type { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidConfigError, Runtime } from '../src/index.js';
import { activeResources, resourceGrowth, trackWorkers, waitFor } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const heartbeat = { intervalMs: 250, maxMissed: 8 };
const fastRestart = { maxRestarts: 20, periodMs: 10_000, backoff: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } };

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function runtime(options: Parameters<typeof Runtime.start>[0] = {}): Promise<Runtime> {
  const rt = await Runtime.start({ logger: silent, heartbeat, restart: fastRestart, ...options });
  cleanups.push(() => rt.stop());
  return rt;
}

async function threadOf(rt: Runtime, id: string): Promise<number | null> {
  return (await rt.health(id)).worker?.threadId ?? null;
}

describe('standby workers', { timeout: 60_000 }, () => {
  it('a new instance and a crashed one take a waiting standby worker; replacements boot in the background', async () => {
    const rt = await runtime({ standby: { workers: 2 } });
    await waitFor(() => rt.standby?.ready === 2, 20_000);
    const waiting = [...(rt.standby?.threadIds ?? [])];
    expect(waiting).toHaveLength(2);

    const inst = await rt.startInstance({ id: 'a', name: 'a', channelType: 'loopback', channel: 'loopback', settings: { faults: true } }, { waitFor: 'connected', timeoutMs: 20_000 });
    const first = await threadOf(rt, 'a');
    expect(waiting).toContain(first);
    expect(rt.standby?.taken).toBe(1);
    // The pool boots a replacement: two wait again, and the instance's thread is not among them.
    await waitFor(() => rt.standby?.ready === 2, 20_000);
    expect(rt.standby?.threadIds).not.toContain(first);

    // A real crash: the restart takes a standby worker, not a fresh spawn.
    const before = [...(rt.standby?.threadIds ?? [])];
    void rt.send('a', { fault: 'crash' }).catch(() => undefined);
    await waitFor(() => inst.restartCount >= 1 && inst.currentStatus === 'connected', 20_000);
    const second = await threadOf(rt, 'a');
    expect(second).not.toBe(first);
    expect(before).toContain(second);
    expect(rt.standby?.taken).toBe(2);
    // The instance works in its new worker.
    await expect(rt.send('a', { text: 'after the crash' })).resolves.toBeDefined();
    await waitFor(() => rt.standby?.ready === 2, 20_000);
  });

  it('shared workers take standby workers too; an instance with its own resourceLimits spawns as before', async () => {
    const rt = await runtime({ standby: { workers: 1 }, placement: { instancesPerWorker: 4 } });
    await waitFor(() => rt.standby?.ready === 1, 20_000);
    const waiting = rt.standby?.threadIds[0];
    await Promise.all(['s1', 's2', 's3'].map((id) => rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected', timeoutMs: 20_000 })));
    const threads = await Promise.all(['s1', 's2', 's3'].map((id) => threadOf(rt, id)));
    expect(new Set(threads)).toEqual(new Set([waiting]));
    for (const id of ['s1', 's2', 's3']) await expect(rt.send(id, { text: id })).resolves.toBeDefined();

    await waitFor(() => rt.standby?.ready === 1, 20_000);
    const taken = rt.standby?.taken;
    const spare = rt.standby?.threadIds[0];
    await rt.startInstance(
      { id: 'own', name: 'own', channelType: 'loopback', channel: 'loopback', resourceLimits: { maxOldGenerationSizeMb: 96 } },
      { waitFor: 'connected', timeoutMs: 20_000 },
    );
    expect(rt.standby?.taken).toBe(taken);
    expect(rt.standby?.threadIds).toEqual([spare]);
    expect(await threadOf(rt, 'own')).not.toBe(spare);
  });

  it('a channel module that cannot be used is answered as without standby, and the worker is not kept', async () => {
    const rt = await runtime({ standby: { workers: 1 } });
    await waitFor(() => rt.standby?.ready === 1, 20_000);
    const missing = new URL('./fixtures/no-such-channel.js', import.meta.url);
    await expect(rt.startInstance({ id: 'bad', name: 'bad', channelType: 'x', channel: missing }, { waitFor: 'connected', timeoutMs: 20_000 })).rejects.toMatchObject({
      code: expect.stringMatching(/channel_invalid|start_failure/),
    });
    // A good instance after it still starts (in a fresh standby worker).
    await waitFor(() => rt.standby?.ready === 1, 20_000);
    await rt.startInstance({ id: 'good', name: 'good', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected', timeoutMs: 20_000 });
    await expect(rt.send('good', { text: 'hi' })).resolves.toBeDefined();
  });

  it('a standby worker that dies while it waits is replaced', async () => {
    const workers = new Map<number, Worker>();
    const onWorker = (message: unknown): void => {
      const w = (message as { worker: Worker }).worker;
      workers.set(w.threadId, w);
    };
    diagnostics_channel.subscribe('worker_threads', onWorker);
    try {
      const rt = await runtime({ standby: { workers: 1 } });
      await waitFor(() => rt.standby?.ready === 1, 20_000);
      const doomed = rt.standby?.threadIds[0] ?? -1;
      // A real death of the waiting thread (not through the runtime).
      await workers.get(doomed)?.terminate();
      await waitFor(() => rt.standby?.ready === 1 && rt.standby.threadIds[0] !== doomed, 20_000);
      expect(rt.standby?.booted).toBe(2);
      expect(rt.standby?.taken).toBe(0);
      await rt.startInstance({ id: 'after', name: 'after', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected', timeoutMs: 20_000 });
      expect(rt.standby?.taken).toBe(1);
    } finally {
      diagnostics_channel.unsubscribe('worker_threads', onWorker);
    }
  });

  it('rt.stop() leaves no worker thread, timer or port behind, standby workers included', async () => {
    const tracker = trackWorkers();
    const before = activeResources();
    const rt = await Runtime.start({ logger: silent, heartbeat, restart: fastRestart, standby: { workers: 2 } });
    await waitFor(() => rt.standby?.ready === 2, 20_000);
    await rt.startInstance({ id: 'x', name: 'x', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected', timeoutMs: 20_000 });
    // Stopped while a replacement may be booting.
    await rt.stop();
    tracker.dispose();
    expect(tracker.live()).toBe(0);
    await new Promise((r) => setTimeout(r, 50));
    expect(resourceGrowth(before, activeResources())).toEqual({});
    expect(rt.standby?.ready).toBe(0);
  });

  it('validates standby options, naming the field', async () => {
    for (const standby of [{ workers: -1 }, { workers: 1.5 }, { workers: 65 }, { workers: 'two' }, { spare: 1 }]) {
      const err = await Runtime.start({ logger: silent, standby: standby as never }).catch((e: unknown) => e);
      expect(err, JSON.stringify(standby)).toBeInstanceOf(InvalidConfigError);
      expect(JSON.stringify((err as InvalidConfigError).issues)).toContain('standby');
    }
    const rt = await runtime();
    expect(rt.standby).toBeNull();
  });
});
