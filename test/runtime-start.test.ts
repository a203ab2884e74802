/**
 * Starting an instance and waiting for a status, on REAL worker threads: `startInstance(spec,
 * { waitFor: 'connected' })`, `rt.whenStatus`, and one behaviour for a channel that throws on
 * connect and one that blocks its thread there (both keep the instance).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { AbortedError, StartFailureError, StoppedError, TimeoutError } from '../src/errors.js';
import { Runtime, type RuntimeOptions } from '../src/index.js';
import { fixtureUrl, waitFor } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const runtimes: Runtime[] = [];

async function start(opts: RuntimeOptions = {}): Promise<Runtime> {
  const rt = await Runtime.start({
    logger: silent,
    restart: { maxRestarts: 2, periodMs: 30_000, backoff: { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 }, recoverAfterMs: Infinity },
    reconnect: { maxAttempts: 2, baseMs: 10, maxMs: 20, jitter: 0 },
    heartbeat: { intervalMs: 250, maxMissed: 4 },
    ...opts,
  });
  runtimes.push(rt);
  return rt;
}

afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
});

describe('startInstance and whenStatus', { timeout: 30_000 }, () => {
  it("waitFor 'connected' resolves once connected: no listener attached after it misses anything", async () => {
    const rt = await start();
    const server = await rt.startInstance({ name: 'a', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
    expect(server.currentStatus).toBe('connected');
    // whenStatus on a status already reached resolves at once.
    expect(await rt.whenStatus(server.instanceId, 'connected')).toBe('connected');
  });

  it('startInstance and whereis hand out one read-only handle: it reads and listens, it changes nothing', async () => {
    const rt = await start();
    const events: string[] = [];
    const h = await rt.startInstance({ name: 'ro', channelType: 'loopback', channel: 'loopback', credentials: { token: 'tok-handle-123456' } }, { waitFor: 'connected' });
    expect(rt.whereis(h.instanceId)).toBe(h);
    const names: string[] = [];
    for (let o: object | null = h; o && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) names.push(...Object.getOwnPropertyNames(o));
    expect(names.filter((n) => /^notify|^mark|^stop$|^emit$|^redact/.test(n))).toEqual([]);
    expect(Object.keys(h)).toEqual([]); // nothing enumerable: the server behind it is private
    expect(h.status()).toMatchObject({ status: 'connected', name: 'ro' });
    expect(h.health()).toMatchObject({ status: 'connected', worker: { state: 'up' } });
    expect(JSON.stringify(h.getInstance())).not.toContain('tok-handle-123456');
    const onDisconnected = (): void => void events.push('disconnected');
    h.on('instance:stopped', () => events.push('stopped')).once('instance:disconnected', onDisconnected).off('instance:disconnected', onDisconnected);
    await rt.stopInstance(h.instanceId);
    expect(events).toEqual(['stopped']);
    expect(h.stopped).toBe(true);
  });

  it('whenStatus waits for a status reached later, or any of several', async () => {
    const rt = await start();
    const server = await rt.startInstance({ name: 'slow', channelType: 'loopback', channel: 'loopback', settings: { connectFailures: 1 } });
    expect(await rt.whenStatus(server.instanceId, ['connected', 'error'], { timeoutMs: 10_000 })).toBe('connected');
  });

  it("waitFor 'connected' rejects with start_failure when the instance ends in error first; the instance is gone", async () => {
    const rt = await start();
    const err = await rt
      .startInstance({ id: 'creds', name: 'creds', channelType: 'loopback', channel: 'loopback', settings: { fatalConnect: true } }, { waitFor: 'connected' })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(StartFailureError);
    expect(err).toMatchObject({ code: 'start_failure', message: expect.stringContaining('401') });
    expect(rt.whereis('creds')).toBeUndefined();
  });

  it("waitFor 'connected' gives up after timeoutMs (start_failure) or on its signal (aborted)", async () => {
    const rt = await start({ timeouts: { connectMs: 60_000 } });
    const spec = { channelType: 'loopback', channel: 'loopback', settings: { hangOn: 'connect' } } as const;
    await expect(rt.startInstance({ id: 't', name: 't', ...spec }, { waitFor: 'connected', timeoutMs: 200 })).rejects.toMatchObject({
      code: 'start_failure',
      cause: expect.any(TimeoutError),
    });
    expect(rt.whereis('t')).toBeUndefined();
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('changed my mind')), 200);
    await expect(rt.startInstance({ id: 'a', name: 'a', ...spec }, { waitFor: 'connected', signal: ac.signal })).rejects.toBeInstanceOf(AbortedError);
    expect(rt.whereis('a')).toBeUndefined();
  });

  it('whenStatus rejects when the instance is stopped, on timeout, and for bad arguments', async () => {
    const rt = await start({ timeouts: { connectMs: 60_000 } });
    const s = await rt.startInstance({ name: 'h', channelType: 'loopback', channel: 'loopback', settings: { hangOn: 'connect' } });
    await expect(rt.whenStatus(s.instanceId, 'connected', { timeoutMs: 100 })).rejects.toBeInstanceOf(TimeoutError);
    const stopped = rt.whenStatus(s.instanceId, 'connected');
    await rt.stopInstance(s.instanceId);
    await expect(stopped).rejects.toBeInstanceOf(StoppedError);
    await expect(rt.whenStatus('nope', 'connected')).rejects.toMatchObject({ code: 'not_found' });
    const t = await rt.startInstance({ name: 'x', channelType: 'loopback', channel: 'loopback' });
    await expect(rt.whenStatus(t.instanceId, 'online' as never)).rejects.toMatchObject({ code: 'invalid_config' });
    await expect(rt.startInstance({ name: 'y', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'ready' as never })).rejects.toMatchObject({
      code: 'invalid_config',
    });
  });

  it('a connect that blocks its thread is like one that throws: startInstance resolves, the worker is found hung and restarted', async () => {
    const rt = await start();
    const restarts: Array<{ kind?: string }> = [];
    rt.on('instance:restart', (e: { kind?: string }) => restarts.push(e));
    const s = await rt.startInstance({ name: 'blocker', channelType: 'blocking', channel: fixtureUrl('runtime-blocking') });
    expect(rt.whereis(s.instanceId)).toBe(s);
    await waitFor(() => restarts.some((r) => r.kind === 'hang'), 20_000);
  });
});
