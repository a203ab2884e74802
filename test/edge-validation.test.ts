/**
 * Validation at the edge: runtime and instance options, send arguments, messages and
 * credentials that cannot cross to a worker, channel settings checked against the channel's
 * schema, one error code after `rt.stop()`, unknown worker methods, and a signal shared by many
 * sends. Real runtimes with the loopback channel where a runtime is needed.
 */
import { getEventListeners } from 'node:events';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { checkChannelDefinition } from '../src/channel.js';
import { InvalidConfigError, InvalidMessageError, NotFoundError, type ThreadvisorError } from '../src/errors.js';
import { findNonCloneable } from '../src/runtime/cloneable.js';
import { checkSettings } from '../src/runtime/channel-settings.js';
import { OutboundQueue } from '../src/runtime/outbound/queue.js';
import { Runtime, type RuntimeOptions } from '../src/runtime/runtime.js';
import { WorkerHost } from '../src/worker/host.js';
import type { BehaveApi } from './fixtures/behave.js';
import { fixtureUrl, waitFor } from './helpers/fixtures.js';

const TIMEOUT_MS = 60_000;
const silent = pino({ level: 'silent' });
const heartbeat = { intervalMs: 250, maxMissed: 4 };

const runtimes: Runtime[] = [];
async function start(opts: RuntimeOptions = {}): Promise<Runtime> {
  const rt = await Runtime.start({ logger: silent, heartbeat, ...opts });
  runtimes.push(rt);
  return rt;
}
afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
});

/** The rejection of `p` (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<ThreadvisorError> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as ThreadvisorError,
  );
}

function paths(err: ThreadvisorError): string[] {
  return (err as InvalidConfigError).issues.map((i) => i.path);
}

describe('edge validation', { timeout: TIMEOUT_MS }, () => {
  it('Runtime.start refuses bad resourceLimits, pool and queueCapacity with invalid_config naming the field', async () => {
    const cases: Array<[RuntimeOptions, string]> = [
      [{ resourceLimits: { maxOldGenerationSizeMb: -1 } }, 'resourceLimits.maxOldGenerationSizeMb'],
      [{ resourceLimits: { bogus: 1 } as never }, 'resourceLimits.bogus'],
      [{ pool: { bogus: 1 } as never }, 'pool.bogus'],
      [{ pool: { maxThreads: -1 } }, 'pool.maxThreads'],
      [{ pool: { maxThreads: 1.5 } }, 'pool.maxThreads'],
      [{ pool: { minThreads: 4, maxThreads: 2 } }, 'pool.minThreads'],
      [{ queueCapacity: 1e12 }, 'queueCapacity'],
      [{ queueCapacity: 2.5 }, 'queueCapacity'],
    ];
    for (const [opts, path] of cases) {
      const err = await rejection(Runtime.start({ logger: silent, ...opts }));
      expect(err).toBeInstanceOf(InvalidConfigError);
      expect(err.code).toBe('invalid_config');
      expect(paths(err)).toContain(path);
    }
    // The limits themselves are fine.
    const rt = await start({ resourceLimits: { maxOldGenerationSizeMb: 64 }, pool: { minThreads: 1, maxThreads: 2 }, queueCapacity: 10_000_000 });
    expect(rt.countInstances()).toBe(0);
  });

  it('startInstance refuses bad resourceLimits and queueCapacity before spawning anything', async () => {
    const rt = await start();
    const base = { name: 'x', channelType: 'loopback', channel: 'loopback' };
    for (const [opts, path] of [
      [{ resourceLimits: { maxOldGenerationSizeMb: -1 } }, 'resourceLimits.maxOldGenerationSizeMb'],
      [{ resourceLimits: { maxOldGenerationSizeMb: 64, nope: 1 } }, 'resourceLimits.nope'],
      [{ queueCapacity: 1e12 }, 'queueCapacity'],
    ] as const) {
      const err = await rejection(rt.startInstance({ ...base, ...(opts as object) }));
      expect(err.code).toBe('invalid_config');
      expect(paths(err)).toContain(path);
    }
    expect(rt.countInstances()).toBe(0);
  });

  it('send(id, undefined) rejects with invalid_message; unknown send options with invalid_config naming the key', async () => {
    const rt = await start();
    const { instanceId: id } = await rt.startInstance({ name: 'u', channelType: 'loopback', channel: 'loopback' });
    const undef = await rejection(rt.send(id, undefined));
    expect(undef).toBeInstanceOf(InvalidMessageError);
    expect(undef.code).toBe('invalid_message');
    const unknown = await rejection(rt.send(id, { text: 'hi' }, { idempotencyKey: 'k1', bogus: true } as never));
    expect(unknown.code).toBe('invalid_config');
    expect((unknown as InvalidConfigError).issues).toEqual([{ path: 'bogus', message: 'unknown option' }]);
    const batchUnknown = await rejection(rt.sendMany(id, [{ text: 'a' }], { retries: 3 } as never));
    expect(batchUnknown.code).toBe('invalid_config');
    expect(paths(batchUnknown)).toEqual(['retries']);
    const batchUndef = await rejection(rt.sendMany(id, [{ text: 'a' }, undefined]));
    expect(batchUndef.code).toBe('invalid_message');
    expect(batchUndef.details.path).toBe('$[1]');
    // Nothing of the refused calls was queued; good sends still go through.
    expect((await rt.health(id)).delivery.enqueued).toBe(0);
    expect(await rt.send(id, { text: 'hi' }, { idempotencyKey: 'k2' })).toMatchObject({ externalId: expect.any(String) });
  });

  it('a message that cannot be cloned is refused at send time, before it is queued, naming its path', async () => {
    const rt = await start();
    const { instanceId: id } = await rt.startInstance({ name: 'c', channelType: 'loopback', channel: 'loopback' });
    const cases: Array<[unknown, string]> = [
      [{ text: 'hi', onDone: () => undefined }, '$.onDone'],
      [{ a: [1, Symbol('s')] }, '$.a[1]'],
      [{ m: new Map([['k', () => 1]]) }, '$.m'],
      [{ w: new WeakMap() }, '$.w'],
      [() => 1, '$'],
    ];
    for (const [message, path] of cases) {
      const err = await rejection(rt.send(id, message));
      expect(err).toBeInstanceOf(InvalidMessageError);
      expect(err.code).toBe('invalid_message');
      expect(err.details.path).toBe(path);
      expect(err.message).not.toContain('=>'); // never the value (a function's source)
    }
    const many = await rejection(rt.sendMany(id, [{ ok: 1 }, { nested: { f: Math.max } }]));
    expect(many.details.path).toBe('$[1].nested.f');
    expect((await rt.health(id)).delivery.enqueued).toBe(0);
    // Cloneable values that are not plain JSON still go: a class instance with a method on its
    // prototype, a Date, a Map of primitives, a cycle.
    class Point {
      constructor(
        readonly x: number,
        readonly y: number,
      ) {}
      norm(): number {
        return Math.hypot(this.x, this.y);
      }
    }
    const cyclic: Record<string, unknown> = { text: 'c' };
    cyclic.self = cyclic;
    const ok = await rt.sendMany(id, [new Point(1, 2), { at: new Date(0), m: new Map([['a', 1]]) }, cyclic]);
    expect(ok.map((o) => o.ok)).toEqual([true, true, true]);
  });

  it('the clone check walks plain values without structuredClone and clones only suspicious built-ins', () => {
    const spy = vi.spyOn(globalThis, 'structuredClone');
    try {
      expect(findNonCloneable({ id: 1, text: 'hi', ok: true, n: null, big: 1n, u: undefined })).toBeUndefined();
      expect(findNonCloneable({ rooms: ['a', 'b'], nested: { deep: [1, { x: new Date(0) }] }, buf: new Uint8Array(4) })).toBeUndefined();
      expect(spy).not.toHaveBeenCalled();
      expect(findNonCloneable({ s: new Set([1]) })).toBeUndefined();
      expect(spy).toHaveBeenCalledTimes(1);
      expect(findNonCloneable({ get boom(): never { throw new Error('secret') } })).toEqual({ path: '$', problem: 'a property could not be read (Error)' });
    } finally {
      spy.mockRestore();
    }
  });

  it('credentials or settings holding a function reject with invalid_config naming the field, never its value', async () => {
    const rt = await start();
    const secret = 'very-secret-token-42';
    const err = await rejection(
      rt.startInstance({ name: 'f', channelType: 'loopback', channel: 'loopback', credentials: { token: secret, refresh: () => secret } }),
    );
    expect(err).toBeInstanceOf(InvalidConfigError);
    expect((err as InvalidConfigError).issues).toEqual([{ path: 'credentials.refresh', message: 'a function cannot be cloned' }]);
    expect(err.message).not.toContain(secret);
    expect(JSON.stringify(err.details)).not.toContain(secret);
    const settingsErr = await rejection(rt.startInstance({ name: 'f', channelType: 'loopback', channel: 'loopback', settings: { hook: Symbol('x') } }));
    expect(settingsErr.code).toBe('invalid_config');
    expect(paths(settingsErr)).toEqual(['settings.hook']);
    expect(rt.countInstances()).toBe(0);
  });

  it('loopback settings are checked against its settingsSchema at startInstance (invalid_config naming the field)', async () => {
    const rt = await start();
    const base = { name: 's', channelType: 'loopback', channel: 'loopback' };
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ latencyMs: 'slow' }, 'settings.latencyMs'],
      [{ probe: 'maybe' }, 'settings.probe'],
      [{ latncyMs: 5 }, 'settings.latncyMs'],
      [{ inbound: { ratePerSec: 5, rooms: 0 } }, 'settings.inbound.rooms'],
      [{ requireToken: 42 }, 'settings.requireToken'],
    ];
    for (const [settings, path] of cases) {
      const err = await rejection(rt.startInstance({ ...base, settings }));
      expect(err.code).toBe('invalid_config');
      expect(paths(err)).toContain(path);
    }
    expect(rt.countInstances()).toBe(0);
    // Every documented setting is accepted.
    const server = await rt.startInstance({
      ...base,
      settings: { latencyMs: 0, connectFailures: 0, sendFailures: 0, echo: false, probe: 'ok', faults: false, inbound: { ratePerSec: Infinity, rooms: ['a'], batch: 1, limit: 0 } },
    });
    await waitFor(() => server.currentStatus === 'connected');
  });

  it('a channel may declare settingsSchema (any object with safeParse); anything else is an invalid definition', () => {
    const def = { type: 't', connect() {}, disconnect() {}, send() {} };
    expect(checkChannelDefinition({ ...def, settingsSchema: { safeParse: () => ({ success: true }) } })).toEqual([]);
    const bad = checkChannelDefinition({ ...def, settingsSchema: { parse: () => 1 } });
    expect(bad.map((i) => i.path)).toEqual(['settingsSchema']);
    // A schema that is not zod: its issues are named under `settings`.
    const handMade = { safeParse: () => ({ success: false as const, error: { issues: [{ path: ['region'], message: 'expected eu or us' }] } }) };
    const err = (() => {
      try {
        checkSettings(handMade, { region: 'mars' }, 'instance options');
      } catch (e) {
        return e as InvalidConfigError;
      }
      throw new Error('expected a throw');
    })();
    expect(err.issues).toEqual([{ path: 'settings.region', message: 'expected eu or us' }]);
  });

  it('after rt.stop() every method that needs a running runtime rejects with stopped', async () => {
    const rt = await start();
    const { instanceId: id } = await rt.startInstance({ name: 'p', channelType: 'loopback', channel: 'loopback' });
    await rt.stop();
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['startInstance', () => rt.startInstance({ name: 'q', channelType: 'loopback', channel: 'loopback' })],
      ['send', () => rt.send(id, { text: 'hi' })],
      ['sendMany', () => rt.sendMany(id, [{ text: 'hi' }])],
      ['health', () => rt.health(id)],
      ['status', () => rt.status(id)],
      ['restartInstance', () => rt.restartInstance(id)],
      ['stopInstance', () => rt.stopInstance(id)],
      ['status of an unknown id', () => rt.status('nope')],
    ];
    for (const [name, call] of calls) {
      const err = await rejection(call());
      expect({ name, code: err.code }).toEqual({ name, code: 'stopped' });
    }
  });

  it("WorkerHost.call('nosuch') rejects with not_found naming the method; a method's own TypeError passes through", async () => {
    const host = await WorkerHost.start<BehaveApi>({ filename: fixtureUrl('behave'), workerData: { mode: 'serve' }, logger: silent });
    try {
      const err = await rejection(host.call('nosuch' as never));
      expect(err).toBeInstanceOf(NotFoundError);
      expect(err.code).toBe('not_found');
      expect(err.details).toEqual({ what: 'worker method', id: 'nosuch' });
      const own = await rejection(host.call('fail', 'boom'));
      expect(own.message).toBe('boom');
      expect(own).not.toBeInstanceOf(NotFoundError);
      const empty = await rejection(host.call('' as never));
      expect(empty.code).toBe('invalid_config');
      expect(await host.call('add', 2, 3)).toBe(5);
    } finally {
      await host.shutdown(2000);
    }
  });

  it('100 sends sharing one AbortSignal: one listener, no MaxListenersExceededWarning, and the abort rejects all 100', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const rt = await start({ shutdownMs: 200 });
      // Never connects: sends wait on the main thread; capacity 1 makes the rest wait for room.
      const { instanceId: id } = await rt.startInstance({ name: 'a', channelType: 'loopback', channel: 'loopback', queueCapacity: 1, settings: { hangOn: 'connect' } });
      const first = rt.send(id, { text: 'first' });
      first.catch(() => undefined); // settled by rt.stop()
      const ac = new AbortController();
      const sends = Array.from({ length: 100 }, (_, i) => rt.send(id, { text: `m${i}` }, { signal: ac.signal, waitForCapacity: true }));
      const batches = Array.from({ length: 20 }, (_, i) => rt.sendMany(id, [{ text: `b${i}` }], { signal: ac.signal, waitForCapacity: true }));
      expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
      await new Promise((r) => setImmediate(r)); // warnings are emitted on a later tick
      ac.abort(new Error('give up'));
      const results = await Promise.allSettled(sends);
      expect(results.every((r) => r.status === 'rejected' && (r.reason as ThreadvisorError).code === 'aborted')).toBe(true);
      const outcomes = (await Promise.all(batches)).flat();
      expect(outcomes.every((o) => !o.ok && (o.error as ThreadvisorError).code === 'aborted')).toBe(true);
      expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
      expect((await rt.health(id)).delivery.aborted).toBe(120);
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('a shared signal loses its listener once the sends it guards are admitted or closed', async () => {
    const q = new OutboundQueue<{ n: number }, string>({ instanceId: 'q', capacity: 1 });
    const ac = new AbortController();
    const head = q.enqueue({ n: 0 });
    const waiting = [1, 2, 3].map((n) => q.enqueue({ n }, { signal: ac.signal, waitForCapacity: true }));
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    const b = q.take(1);
    q.ack([{ seq: b.seq, ok: true, receipt: 'r0' }]);
    await head;
    expect(q.waiting).toBe(2);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    q.close('done');
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    const settled = await Promise.allSettled(waiting);
    expect(settled.map((s) => (s.status === 'rejected' ? (s.reason as ThreadvisorError).code : 'ok'))).toEqual(['stopped', 'stopped', 'stopped']);
  });
});
