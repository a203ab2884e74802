/**
 * Placement with real workers: several instances per worker thread, dedicated isolation, a shared
 * worker's death restarting its group once with nothing lost, an instance's own failure restarting
 * it in place, option checks, and no worker, timer or port left after stop.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ChannelInvalidError, InvalidConfigError, StartFailureError } from '../src/errors.js';
import type { InstanceHandle } from '../src/instance/handle.js';
import { Runtime, type RuntimeOptions } from '../src/runtime/runtime.js';
import type { RuntimeEvents } from '../src/events.js';
import { activeResources, fixtureUrl, resourceGrowth, trackWorkers, waitFor } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const fastRestart = { maxRestarts: 5, periodMs: 30_000, backoff: { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 }, recoverAfterMs: Infinity };
const fastReconnect = { maxAttempts: 1, baseMs: 10, maxMs: 40, jitter: 0 };
const heartbeat = { intervalMs: 250, maxMissed: 8 };

const runtimes: Runtime[] = [];
async function start(opts: RuntimeOptions = {}): Promise<Runtime> {
  const rt = await Runtime.start({ logger: silent, restart: fastRestart, reconnect: fastReconnect, heartbeat, ...opts });
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

async function threadOf(rt: Runtime, id: string): Promise<number | null | undefined> {
  return (await rt.health(id)).worker?.threadId;
}

describe('placement', { timeout: 120_000 }, () => {
  it('packs instances into shared workers, gives a dedicated one its own, and ends a worker left empty', async () => {
    const tracker = trackWorkers();
    const before = activeResources();
    const rt = await start({ placement: { instancesPerWorker: 4 } });
    const shared: InstanceHandle[] = [];
    for (let i = 0; i < 8; i++) shared.push(await rt.startInstance({ id: `s${i}`, name: `s${i}`, channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' }));
    const own = await rt.startInstance({ id: 'own', name: 'own', channelType: 'loopback', channel: 'loopback', isolation: 'dedicated' }, { waitFor: 'connected' });
    expect(tracker.created()).toBe(3);

    const health = await rt.listHealth();
    const threads = new Map<number, string[]>();
    for (const h of health) {
      expect(h.worker?.state).toBe('up');
      const t = h.worker?.threadId as number;
      threads.set(t, [...(threads.get(t) ?? []), h.instanceId]);
    }
    expect([...threads.values()].map((ids) => ids.sort().join(',')).sort()).toEqual(['own', 's0,s1,s2,s3', 's4,s5,s6,s7']);
    expect((await rt.health('s0')).worker?.instances).toBe(4);
    expect((await rt.health('own')).worker?.instances).toBe(1);

    // Every instance sends through its shared worker's data port, addressed by its number.
    const receipts = await Promise.all([...shared, own].map((h) => rt.send(h.instanceId, { text: `to ${h.instanceId}` })));
    expect(receipts).toHaveLength(9);

    // A stopped instance leaves its worker-mates running in the same thread.
    const t0 = await threadOf(rt, 's1');
    const connectedAt = shared[1]?.health().connectedAt;
    await rt.stopInstance('s0');
    expect(await threadOf(rt, 's1')).toBe(t0);
    expect((await rt.health('s1')).worker?.instances).toBe(3);
    expect(shared[1]?.health().connectedAt).toBe(connectedAt);
    expect(await rt.send('s1', { text: 'still here' })).toBeDefined();
    // The next instance fills the room it left (the least-loaded worker with room).
    await rt.startInstance({ id: 's8', name: 's8', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
    expect(await threadOf(rt, 's8')).toBe(t0);
    expect(tracker.created()).toBe(3);

    // The last instance of a worker ends it.
    for (const id of ['s4', 's5', 's6', 's7']) await rt.stopInstance(id);
    await waitFor(() => tracker.live() === 2);

    await rt.stop();
    await waitFor(() => tracker.live() === 0);
    tracker.dispose();
    await waitFor(() => Object.keys(resourceGrowth(before, activeResources())).length === 0);
  });

  it("a shared worker's death restarts every instance in it once, loses nothing, and leaves other workers alone", async () => {
    const rt = await start({ placement: { instancesPerWorker: 3 } });
    const ids = ['a0', 'a1', 'a2', 'b0', 'b1', 'b2'];
    for (const id of ids) await rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback', settings: { faults: true } }, { waitFor: 'connected' });
    const oldA = await threadOf(rt, 'a0');
    expect(await threadOf(rt, 'a2')).toBe(oldA);
    const bConnectedAt = await Promise.all(['b0', 'b1', 'b2'].map(async (id) => (await rt.health(id)).connectedAt));
    const events = collect(rt, 'instance:restart', 'instance:disconnected', 'instance:connected', 'instance:started');

    // Sends queued and in flight to every instance of group A, and a fault that ends its worker.
    const sends: Promise<unknown>[] = [];
    for (const id of ['a0', 'a1', 'a2']) for (let i = 0; i < 200; i++) sends.push(rt.send(id, { n: i }));
    sends.push(rt.send('a1', { fault: 'exit' }));
    for (const id of ['a0', 'a1', 'a2']) for (let i = 200; i < 400; i++) sends.push(rt.send(id, { n: i }));
    const settled = await Promise.allSettled(sends);
    expect(settled.filter((s) => s.status === 'rejected')).toEqual([]);

    await waitFor(() => ['a0', 'a1', 'a2'].every((id) => rt.whereis(id)?.currentStatus === 'connected'));
    const restarts = events.filter((e) => e.event === 'instance:restart');
    expect(restarts.map((e) => e.instanceId).sort()).toEqual(['a0', 'a1', 'a2']);
    expect(restarts.every((e) => e.kind === 'group' && e.class === 'recoverable')).toBe(true);
    for (const id of ['a0', 'a1', 'a2']) expect((await rt.status(id)).restartCount).toBe(1);
    const newA = await threadOf(rt, 'a0');
    expect(newA).not.toBe(oldA);
    expect(await threadOf(rt, 'a1')).toBe(newA);
    // Group B saw nothing.
    expect(events.filter((e) => e.instanceId.startsWith('b'))).toEqual([]);
    expect(await Promise.all(['b0', 'b1', 'b2'].map(async (id) => (await rt.health(id)).connectedAt))).toEqual(bConnectedAt);
    for (const id of ['b0', 'b1', 'b2']) expect((await rt.status(id)).restartCount).toBe(0);
  });

  for (const escape of ['throw', 'reject'] as const) {
    it(`an error that escapes one packed instance's callback (${escape}) restarts only that instance, in place`, async () => {
      const rt = await start({ placement: { instancesPerWorker: 3 } });
      const channel = fixtureUrl('channels/escape');
      const handles: InstanceHandle[] = [];
      for (const id of ['x0', 'x1', 'x2']) handles.push(await rt.startInstance({ id, name: id, channelType: 'escape', channel }, { waitFor: 'connected' }));
      const thread = await threadOf(rt, 'x0');
      const connectedAt = handles.map((h) => h.health().connectedAt);
      const events = collect(rt, 'instance:restart', 'instance:disconnected', 'instance:connected');
      // Sends around the fault, to the culprit and its mates: none is lost.
      const sends: Promise<unknown>[] = [];
      for (let i = 0; i < 50; i++) for (const id of ['x0', 'x1', 'x2']) sends.push(rt.send(id, { n: i }));
      sends.push(rt.send('x1', { escape }));
      for (let i = 50; i < 100; i++) for (const id of ['x0', 'x1', 'x2']) sends.push(rt.send(id, { n: i }));
      const settled = await Promise.allSettled(sends);
      expect(settled.filter((r) => r.status === 'rejected')).toEqual([]);
      await waitFor(() => events.some((e) => e.event === 'instance:connected' && e.instanceId === 'x1'));
      const restarts = events.filter((e) => e.event === 'instance:restart');
      expect(restarts).toHaveLength(1);
      expect(restarts[0]).toMatchObject({ instanceId: 'x1', kind: 'crash', class: 'recoverable', attempt: 1 });
      expect(String(restarts[0]?.reason)).toContain(escape === 'throw' ? 'thrown from a timer' : 'rejected with no handler');
      expect(events.filter((e) => e.instanceId !== 'x1')).toEqual([]);
      // The same worker thread; the mates kept their connection.
      for (const id of ['x0', 'x1', 'x2']) expect(await threadOf(rt, id)).toBe(thread);
      expect(handles[0]?.health().connectedAt).toBe(connectedAt[0]);
      expect(handles[2]?.health().connectedAt).toBe(connectedAt[2]);
      expect(handles[1]?.health().restartCount).toBe(1);
    });
  }

  it('an error that belongs to no instance (a queueMicrotask throw) ends the shared worker: its group restarts', async () => {
    const rt = await start({ placement: { instancesPerWorker: 3 } });
    const channel = fixtureUrl('channels/escape');
    for (const id of ['y0', 'y1']) await rt.startInstance({ id, name: id, channelType: 'escape', channel }, { waitFor: 'connected' });
    const thread = await threadOf(rt, 'y0');
    const events = collect(rt, 'instance:restart');
    await rt.send('y0', { escape: 'microtask' });
    await waitFor(() => events.length === 2);
    expect(events.map((e) => [e.instanceId, e.kind]).sort()).toEqual([
      ['y0', 'group'],
      ['y1', 'group'],
    ]);
    await rt.whenStatus('y0', 'connected', { timeoutMs: 20_000 });
    await rt.whenStatus('y1', 'connected', { timeoutMs: 20_000 });
    expect(await threadOf(rt, 'y0')).not.toBe(thread);
  });

  it('an instance that spends its reconnect attempts in a shared worker starts over in place; its worker-mates go on', async () => {
    const rt = await start({ placement: { instancesPerWorker: 4 } });
    const mate = await rt.startInstance({ id: 'mate', name: 'mate', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
    const thread = await threadOf(rt, 'mate');
    const connectedAt = mate.health().connectedAt;
    const events = collect(rt, 'instance:restart', 'instance:reconnect');
    // Two refused connects spend its attempts (1 reconnect); the third connect succeeds.
    const flaky = await rt.startInstance({ id: 'flaky', name: 'flaky', channelType: 'loopback', channel: 'loopback', settings: { connectFailures: 2 } });
    await rt.whenStatus('flaky', 'connected', { timeoutMs: 20_000 });
    expect(events.some((e) => e.instanceId === 'flaky' && e.event === 'instance:reconnect' && e.phase === 'exhausted')).toBe(true);
    const restart = events.find((e) => e.event === 'instance:restart');
    expect(restart).toMatchObject({ instanceId: 'flaky', kind: 'reconnect_exhausted', attempt: 1 });
    expect(flaky.health().restartCount).toBe(1);
    expect(await threadOf(rt, 'flaky')).toBe(thread);
    expect(mate.health().connectedAt).toBe(connectedAt);
    expect(events.filter((e) => e.instanceId === 'mate')).toEqual([]);
  });

  it('an instance that keeps failing in a shared worker ends in error by its own restart intensity', async () => {
    const rt = await start({ placement: { instancesPerWorker: 4 }, restart: { ...fastRestart, maxRestarts: 2 } });
    const mate = await rt.startInstance({ id: 'mate', name: 'mate', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
    const events = collect(rt, 'instance:restart');
    await rt.startInstance({ id: 'doomed', name: 'doomed', channelType: 'loopback', channel: 'loopback', settings: { connectFailures: 1000 } });
    await rt.whenStatus('doomed', 'error', { timeoutMs: 20_000 });
    expect(events.map((e) => e.kind)).toEqual(['reconnect_exhausted', 'reconnect_exhausted', 'intensity_exceeded']);
    expect(mate.currentStatus).toBe('connected');
    // Out of its worker once stopped there (the worker goes on with its mate).
    await waitFor(() => rt.whereis('mate')?.health() !== undefined && rt.whereis('doomed')?.currentStatus === 'error');
    await expect.poll(async () => (await rt.health('mate')).worker?.instances).toBe(1);
    await expect(rt.send('doomed', { text: 'x' })).rejects.toMatchObject({ code: 'not_running' });
    expect(await rt.send('mate', { text: 'x' })).toBeDefined();
  });

  it('a channel that cannot load fails its own start only; its worker-mates go on', async () => {
    const rt = await start({ placement: { instancesPerWorker: 4 } });
    const mate = await rt.startInstance({ id: 'mate', name: 'mate', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
    const err = await rt.startInstance({ id: 'bad', name: 'bad', channelType: 'loopback', channel: fixtureUrl('channels/no-send') }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StartFailureError);
    expect((err as Error).cause).toBeInstanceOf(ChannelInvalidError);
    expect(rt.whereis('bad')).toBeUndefined();
    expect(mate.currentStatus).toBe('connected');
    expect((await rt.health('mate')).worker?.instances).toBe(1);
  });

  it('a channel in factory form keeps state per instance in a shared worker; a bad create fails only that start', async () => {
    const rt = await start({ placement: { instancesPerWorker: 4 } });
    const channel = fixtureUrl('channels/factory');
    for (const id of ['f0', 'f1']) await rt.startInstance({ id, name: id, channelType: 'factory', channel }, { waitFor: 'connected' });
    expect(await threadOf(rt, 'f0')).toBe(await threadOf(rt, 'f1'));
    const r0 = [await rt.send('f0', { a: 1 }), await rt.send('f0', { a: 2 })];
    const r1 = await rt.send('f1', { a: 3 });
    expect(r0).toMatchObject([
      { instance: 'f0', n: 1, made: 2 },
      { instance: 'f0', n: 2, made: 2 },
    ]);
    expect(r1).toMatchObject({ instance: 'f1', n: 1, made: 2 });
    for (const [settings, mention] of [
      [{ createThrows: true }, 'create threw: factory: create refused'],
      [{ createInvalid: true }, 'send: expected send to be a function'],
    ] as const) {
      const err = await rt.startInstance({ name: 'bad', channelType: 'factory', channel, settings }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StartFailureError);
      expect((err as Error).message).toContain(mention);
    }
    expect(rt.countInstances()).toBe(2);
    expect(await rt.send('f1', { a: 4 })).toMatchObject({ instance: 'f1', n: 2 });
  });

  it('1,000 instances in 20 workers start, connect and stop with no worker, timer or port left', async () => {
    const tracker = trackWorkers();
    const before = activeResources();
    const rt = await start({ placement: { instancesPerWorker: 50 } });
    const ids = Array.from({ length: 1000 }, (_, i) => `i${i}`);
    await Promise.all(ids.map((id) => rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected', timeoutMs: 60_000 })));
    expect(tracker.created()).toBe(20);
    const health = await rt.listHealth();
    expect(new Set(health.map((h) => h.worker?.threadId)).size).toBe(20);
    expect(health.every((h) => h.status === 'connected' && h.worker?.instances === 50)).toBe(true);
    const stopped = collect(rt, 'instance:stopped');
    await rt.stop();
    expect(stopped).toHaveLength(1000);
    await waitFor(() => tracker.live() === 0, 30_000);
    tracker.dispose();
    await waitFor(() => Object.keys(resourceGrowth(before, activeResources())).length === 0);
  });

  it('bad placement and isolation values are refused, naming the field', async () => {
    for (const instancesPerWorker of [0, -1, 1.5, 'many', 1_000_000]) {
      const err = await Runtime.start({ logger: silent, placement: { instancesPerWorker: instancesPerWorker as number } }).then(
        async (rt) => {
          await rt.stop();
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(err, String(instancesPerWorker)).toBeInstanceOf(InvalidConfigError);
      expect((err as InvalidConfigError).message).toContain('placement.instancesPerWorker');
    }
    await expect(start({ placement: { bogus: 1 } as never })).rejects.toBeInstanceOf(InvalidConfigError);
    const rt = await start({ placement: { instancesPerWorker: 2 } });
    const err = await rt.startInstance({ name: 'x', channelType: 'loopback', channel: 'loopback', isolation: 'alone' as never }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InvalidConfigError);
    expect((err as InvalidConfigError).message).toContain('isolation');
    expect(rt.countInstances()).toBe(0);
  });
});
