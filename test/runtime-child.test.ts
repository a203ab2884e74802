/**
 * `Runtime.childSpec` with real workers: a runtime and a plain worker child side by side under one
 * supervisor. A crash of the worker child restarts it alone (the runtime's instance is untouched);
 * the supervisor's stop stops the runtime gracefully, and a runtime stopped by itself ends its
 * child with a normal exit.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Runtime } from '../src/runtime/runtime.js';
import type { RuntimeChild } from '../src/runtime/child.js';
import { Supervisor } from '../src/supervisor/supervisor.js';
import { WorkerHost, workerChild } from '../src/worker/host.js';
import type { BehaveApi } from './fixtures/behave.js';
import { fixtureUrl, trackWorkers, waitFor, type WorkerTracker } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const heartbeat = { intervalMs: 250, maxMissed: 4 };
const fast = { initialDelayMs: 10, maxDelayMs: 50, jitter: 0.2 };
const runtimeOptions = { logger: silent, heartbeat, shutdownMs: 2000 };

let tracker: WorkerTracker | undefined;
let sup: Supervisor | undefined;

afterEach(async () => {
  await sup?.stop();
  sup = undefined;
  tracker?.dispose();
  tracker = undefined;
});

function runtimeOf(s: Supervisor, id = 'runtime'): Runtime {
  const child = s.child(id) as RuntimeChild | undefined;
  if (!child) throw new Error(`${id} is not running`);
  return child.runtime;
}

describe('Runtime.childSpec', { timeout: 30_000 }, () => {
  it('runs beside a worker child: a crash restarts the worker alone; sup.stop() stops the runtime gracefully', async () => {
    tracker = trackWorkers();
    const s = await Supervisor.start({
      name: 'app',
      logger: silent,
      backoff: fast,
      children: [
        Runtime.childSpec(runtimeOptions, { instances: [{ id: 'bot', name: 'bot', channelType: 'loopback', channel: 'loopback' }] }),
        workerChild<BehaveApi>('worker', { filename: fixtureUrl('behave'), heartbeat, workerData: { mode: 'serve' } }),
      ],
    });
    sup = s;
    const rt = runtimeOf(s);
    expect(rt).toBeInstanceOf(Runtime);
    await rt.whenStatus('bot', 'connected', { timeoutMs: 10_000 });
    const events: string[] = [];
    for (const name of ['instance:started', 'instance:restart', 'instance:disconnected', 'instance:stopped'] as const) rt.on(name, () => events.push(name));
    const receipt = await rt.send('bot', { text: 'before' });
    const bot = rt.whereis('bot');
    const botStarted = (await rt.status('bot')).startedAt;

    // A real crash (an uncaught throw in the worker thread), restarted by the supervisor alone.
    const first = s.child('worker');
    expect(first).toBeInstanceOf(WorkerHost);
    const restarted = new Promise<{ childId: string; class: string }>((resolve) => s.once('child_restarted', resolve));
    await (first as WorkerHost<BehaveApi>).call('crash', 'boom');
    const e = await restarted;
    expect(e).toMatchObject({ childId: 'worker', class: 'crash' });
    const second = s.child('worker');
    expect(second).toBeInstanceOf(WorkerHost);
    expect(second).not.toBe(first);
    expect(await (second as WorkerHost<BehaveApi>).call('add', 2, 3)).toBe(5);

    // The runtime and its instance never noticed.
    expect(runtimeOf(s)).toBe(rt);
    expect(rt.whereis('bot')).toBe(bot);
    const status = await rt.status('bot');
    expect(status).toMatchObject({ status: 'connected', restartCount: 0, startedAt: botStarted });
    expect(events).toEqual([]);
    expect(s.whichChildren().find((c) => c.id === 'runtime')).toMatchObject({ status: 'running', restarts: 0 });
    expect(receipt).toMatchObject({ externalId: 'lb-1' });
    expect(await rt.send('bot', { text: 'after' })).toMatchObject({ externalId: 'lb-2' });

    // The supervisor's stop is the runtime's graceful stop.
    const exited = s.whichChildren().find((c) => c.id === 'runtime');
    const child = exited?.child as RuntimeChild;
    await s.stop();
    sup = undefined;
    expect(events).toEqual(['instance:stopped']);
    expect(await child.exited).toMatchObject({ class: 'shutdown' });
    expect(rt.countInstances()).toBe(0);
    await expect(rt.send('bot', { text: 'late' })).rejects.toMatchObject({ code: 'stopped' });
    await waitFor(() => tracker!.live() === 0);
    expect(tracker.created()).toBeGreaterThanOrEqual(3); // the instance worker and two worker children
  });

  it('instances started after the child started stop with it', async () => {
    tracker = trackWorkers();
    const s = await Supervisor.start({ logger: silent, children: [Runtime.childSpec(runtimeOptions, { id: 'gateway' })] });
    sup = s;
    const rt = runtimeOf(s, 'gateway');
    const stopped: string[] = [];
    rt.on('instance:stopped', (e: { instanceId: string }) => stopped.push(e.instanceId));
    await rt.startInstance({ id: 'late', name: 'late', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected', timeoutMs: 10_000 });
    expect(s.countChildren()).toMatchObject({ specs: 1, active: 1, supervisors: 1 });
    await s.stop();
    sup = undefined;
    expect(stopped).toEqual(['late']);
    await waitFor(() => tracker!.live() === 0);
  });

  it('a runtime stopped by itself ends its child normally; a transient child is not restarted', async () => {
    const s = await Supervisor.start({ logger: silent, children: [Runtime.childSpec(runtimeOptions)] });
    sup = s;
    const child = s.child('runtime') as RuntimeChild;
    const exitedEvent = new Promise<{ class: string; reason: string }>((resolve) => s.once('child_exited', resolve));
    await child.runtime.stop();
    expect(await child.exited).toEqual({ class: 'normal', reason: 'runtime stopped' });
    expect(await exitedEvent).toMatchObject({ class: 'normal', reason: 'runtime stopped' });
    await waitFor(() => s.whichChildren()[0]?.status === 'terminated');
    expect(s.child('runtime')).toBeUndefined();
  });

  it('a shutdown budget that expires terminates the instance workers at once', async () => {
    tracker = trackWorkers();
    // `disconnect` never settles: the graceful stop would take the runtime's whole shutdownMs.
    const s = await Supervisor.start({
      logger: silent,
      children: [
        Runtime.childSpec(
          { ...runtimeOptions, shutdownMs: 20_000, timeouts: { disconnectMs: 20_000 } },
          { shutdown: 200, instances: [{ id: 'stuck', name: 'stuck', channelType: 'loopback', channel: 'loopback', settings: { hangOn: 'disconnect' } }] },
        ),
      ],
    });
    sup = s;
    const child = s.child('runtime') as RuntimeChild;
    await child.runtime.whenStatus('stuck', 'connected', { timeoutMs: 10_000 });
    const t0 = Date.now();
    await s.stop();
    sup = undefined;
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await child.exited).toMatchObject({ class: 'shutdown', reason: 'shutdown budget expired' });
    await waitFor(() => tracker!.live() === 0, 5000);
  });

  it('an instance that fails to start fails the child start, leaving no worker', async () => {
    tracker = trackWorkers();
    const start = Supervisor.start({
      logger: silent,
      children: [Runtime.childSpec(runtimeOptions, { instances: [{ name: 'bad', channelType: 'nope', channel: 'loopback' }] })],
    });
    await expect(start).rejects.toMatchObject({ code: 'start_failure' });
    await waitFor(() => tracker!.live() === 0);
  });
});
