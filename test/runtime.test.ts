/**
 * The instance runtime with real workers: lifecycle, reconnect, fatal startup, escalation,
 * isolation, stop paths, orphans and credential redaction.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ChannelInvalidError, InstanceNotFoundError, StartFailureError } from '../src/errors.js';
import { Runtime, type RuntimeOptions } from '../src/runtime/runtime.js';
import type { RuntimeEvents } from '../src/events.js';
import { activeResources, fixtureUrl, resourceGrowth, trackWorkers, waitFor } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const fastRestart = { maxRestarts: 5, periodMs: 30_000, backoff: { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 }, recoverAfterMs: Infinity };
const fastReconnect = { maxAttempts: 5, baseMs: 10, maxMs: 40, jitter: 0 };
// Generous: a loaded 2-core machine must not mistake a slow worker for a hung one. The hang
// test passes a tight heartbeat of its own.
const heartbeat = { intervalMs: 250, maxMissed: 4 };

const runtimes: Runtime[] = [];
async function start(opts: RuntimeOptions = {}): Promise<Runtime> {
  const rt = await Runtime.start({ logger: silent, restart: fastRestart, reconnect: fastReconnect, heartbeat, ...opts });
  runtimes.push(rt);
  return rt;
}
afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
});

const tmp = mkdtempSync(join(tmpdir(), 'threadvisor-rt-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Ev = Record<string, unknown> & { instanceId: string };
function collect(rt: Runtime, ...names: Array<keyof RuntimeEvents>): Array<Ev & { event: string }> {
  const out: Array<Ev & { event: string }> = [];
  for (const name of names) rt.on(name, (p) => out.push({ ...(p as unknown as Ev), event: name }));
  return out;
}

describe('Runtime', { timeout: 60_000 }, () => {
  it('starts an instance that connects and reports healthy', async () => {
    const rt = await start();
    const events = collect(rt, 'instance:started', 'instance:connecting', 'instance:connected');
    const server = await rt.startInstance({ name: 'bot', channelType: 'loopback', channel: 'loopback' });
    const id = server.instanceId;
    expect(id).toMatch(/[0-9a-f-]{36}/);
    await waitFor(() => server.currentStatus === 'connected');
    expect(events.map((e) => e.event)).toEqual(['instance:started', 'instance:connecting', 'instance:connected']);
    expect(events.every((e) => e.instanceId === id && e.channelType === 'loopback' && typeof e.at === 'number')).toBe(true);
    const status = await rt.status(id);
    expect(status).toMatchObject({ status: 'connected', instanceId: id, name: 'bot', restartCount: 0, consecutiveFailures: 0, lastError: null });
    await waitFor(() => server.health().status === 'connected');
    // A heartbeat answered (liveness bound only: a loaded machine may take longer than one interval).
    let health = await rt.health(id);
    for (const deadline = Date.now() + 10_000; health.worker?.lastHeartbeatAgeMs == null && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 50));
      health = await rt.health(id);
    }
    expect(health).toMatchObject({ status: 'connected', instanceId: id, channelType: 'loopback', name: 'bot', restartCount: 0, senderQueueDepth: 0 });
    expect(health.connectedAt).toBeTypeOf('number');
    expect(health.uptimeMs).toBeGreaterThanOrEqual(0);
    expect(health.worker).toMatchObject({ state: 'up' });
    expect(health.worker!.lastHeartbeatAgeMs).toBeTypeOf('number');
    expect(rt.whereis(id)).toBe(server);
    expect(rt.whereis('nope')).toBeUndefined();
    expect(rt.countInstances()).toBe(1);
    expect(rt.listInstances().map((s) => s.name)).toEqual(['bot']);
    expect((await rt.listHealth()).map((h) => h.instanceId)).toEqual([id]);
    expect(await rt.send(id, { text: 'hi' })).toMatchObject({ externalId: expect.any(String) });
  });

  it('unknown ids reject with not_found; duplicate ids with already_started; bad input with the field paths', async () => {
    const rt = await start();
    await expect(rt.status('nope')).rejects.toMatchObject({ code: 'not_found' });
    await expect(rt.status('nope')).rejects.toBeInstanceOf(InstanceNotFoundError);
    await expect(rt.health('nope')).rejects.toMatchObject({ code: 'not_found' });
    await expect(rt.stopInstance('nope')).rejects.toMatchObject({ code: 'not_found' });
    await expect(rt.restartInstance('nope')).rejects.toMatchObject({ code: 'not_found' });
    await expect(rt.send('nope', {})).rejects.toMatchObject({ code: 'not_found' });
    await rt.startInstance({ id: 'a', name: 'a', channelType: 'loopback', channel: 'loopback' });
    await expect(rt.startInstance({ id: 'a', name: 'a2', channelType: 'loopback', channel: 'loopback' })).rejects.toMatchObject({ code: 'already_started' });
    await expect(rt.startInstance({ name: '', channelType: 'loopback' } as never)).rejects.toMatchObject({
      code: 'invalid_config',
      issues: expect.arrayContaining([expect.objectContaining({ path: 'name' }), expect.objectContaining({ path: 'channel' })]),
    });
    await expect(Runtime.start({ heartbeat: { intervalMs: -1 } } as never)).rejects.toMatchObject({ code: 'invalid_config' });
    // A budget past Node's largest timer (2^31 - 1 ms) would fire after 1 ms: refused.
    await expect(Runtime.start({ timeouts: { sendMs: 3e9 } })).rejects.toMatchObject({ code: 'invalid_config', issues: [expect.objectContaining({ path: 'timeouts.sendMs' })] });
    // One backoff shape: reconnect takes initialDelayMs / maxDelayMs; baseMs / maxMs are their old names, not both.
    await expect(Runtime.start({ reconnect: { initialDelayMs: 10, baseMs: 10 } })).rejects.toMatchObject({ code: 'invalid_config', issues: [expect.objectContaining({ path: 'reconnect.baseMs' })] });
    await expect(Runtime.start({ reconnect: { maxDelayMs: 10, maxMs: 10 } })).rejects.toMatchObject({ code: 'invalid_config', issues: [expect.objectContaining({ path: 'reconnect.maxMs' })] });
    await expect(Runtime.start({ reconnect: { initialDelayMs: 100, maxMs: 10 } })).rejects.toMatchObject({ code: 'invalid_config', issues: [expect.objectContaining({ path: 'reconnect.maxDelayMs' })] });
    for (const reconnect of [{ initialDelayMs: 5, maxDelayMs: 50 }, { baseMs: 5, maxMs: 50 }]) {
      const other = await Runtime.start({ logger: silent, reconnect });
      await other.stop();
    }
    const b = await rt.startInstance({ name: 'b', channelType: 'loopback', channel: 'loopback' });
    expect(b.instanceId).not.toBe('a');
    expect(rt.countInstances()).toBe(2);
  });

  it('a recoverable connect failure reconnects with bounded backoff and ends connected with reconnectAttempt 0', async () => {
    const rt = await start();
    const events = collect(rt, 'instance:reconnect', 'instance:connected');
    const server = await rt.startInstance({ name: 'flaky', channelType: 'loopback', channel: 'loopback', settings: { connectFailures: 2 } });
    await waitFor(() => server.currentStatus === 'connected');
    const phases = events.filter((e) => e.event === 'instance:reconnect').map((e) => `${e.phase}:${e.attempt}`);
    expect(phases).toContain('attempt:1');
    expect(phases).toContain('attempt:2');
    expect(phases.some((p) => p.startsWith('scheduled:'))).toBe(true);
    expect(phases.some((p) => p.startsWith('exhausted'))).toBe(false);
    expect(server.reconnectAttempt).toBe(0);
    expect(server.restartCount).toBe(0);
  });

  it('a connection lost while connected goes disconnected, reconnects and connects again', async () => {
    const rt = await start();
    const server = await rt.startInstance({ name: 'drop', channelType: 'loopback', channel: 'loopback', settings: { faults: true, inbound: { ratePerSec: 200, rooms: 1, batch: 1 } } });
    await waitFor(() => server.currentStatus === 'connected');
    const events = collect(rt, 'instance:disconnected', 'instance:connected');
    await rt.send(server.instanceId, { fault: 'disconnect' });
    await waitFor(() => events.some((e) => e.event === 'instance:connected'));
    expect(events.map((e) => e.event)).toEqual(['instance:disconnected', 'instance:connected']);
    expect(server.reconnectAttempt).toBe(0);
    expect(server.restartCount).toBe(0);
  });

  it('reconnect exhaustion ends in a recoverable worker restart, counted by intensity', async () => {
    const rt = await start({ reconnect: { maxAttempts: 1, baseMs: 5, maxMs: 5, jitter: 0 }, restart: { ...fastRestart, maxRestarts: 2 } });
    const restarts = collect(rt, 'instance:restart');
    // Each fresh worker fails 3 connects but gives up after 2: every worker exhausts its reconnects.
    const server = await rt.startInstance({ name: 'down', channelType: 'loopback', channel: 'loopback', settings: { connectFailures: 3 } });
    await waitFor(() => server.currentStatus === 'error', 20_000);
    expect(restarts.map((e) => `${e.class}:${e.kind}`)).toEqual([
      'recoverable:reconnect_exhausted',
      'recoverable:reconnect_exhausted',
      'fatal:intensity_exceeded',
    ]);
    expect(server.restartCount).toBe(3);
  });

  it('a channel whose every connection fails its probe does not reconnect forever: failures count to error', async () => {
    const rt = await start({
      reconnect: { maxAttempts: 2, baseMs: 5, maxMs: 5, jitter: 0 },
      maxConsecutiveFailures: 3,
      probe: { intervalMs: 20, timeoutMs: 1000 },
    });
    const connects = collect(rt, 'instance:connected');
    const server = await rt.startInstance({ name: 'hopeless', channelType: 'loopback', channel: 'loopback', settings: { probe: 'failed' } });
    await waitFor(() => server.currentStatus === 'error', 20_000);
    expect(server.status()).toMatchObject({ status: 'error', consecutiveFailures: 3 });
    // Three connections, each broken by its first probe; not a hundred.
    expect(connects.length).toBeLessThanOrEqual(3);
  });

  it('a fatal connect error ends in error without a restart loop', async () => {
    const rt = await start();
    const s = await rt.startInstance({ name: 'bad-creds', channelType: 'loopback', channel: 'loopback', settings: { fatalConnect: true } });
    await waitFor(() => s.currentStatus === 'error');
    await new Promise((r) => setTimeout(r, 300));
    expect(s.currentStatus).toBe('error');
    expect(s.lastRestartClass).toBe('fatal');
    expect(s.restartCount).toBeLessThanOrEqual(1); // the fatal marker, no restarts
    expect((await rt.health(s.instanceId)).worker?.state).toBe('down');
    await expect(rt.send(s.instanceId, {})).rejects.toMatchObject({ code: 'not_running' });
  });

  it('startInstance rejects with start_failure when the channel cannot load or is invalid; the instance is gone', async () => {
    const rt = await start();
    const cases = [
      { channelType: 'loopback', channel: join(tmp, 'does-not-exist.js'), mention: 'failed to load' },
      { channelType: 'loopback', channel: 'loopbak', mention: 'failed to load' },
      { channelType: 'loopback', channel: fixtureUrl('channels/throws-at-load'), mention: 'broken at load' },
      { channelType: 'loopback', channel: fixtureUrl('channels/no-send'), mention: 'send' },
      { channelType: 'loopback', channel: fixtureUrl('channels/no-default'), mention: 'no default export' },
      { channelType: 'not-loopback', channel: 'loopback', mention: "type 'loopback'" },
    ];
    for (const [i, c] of cases.entries()) {
      const id = `bad-${i}`;
      const err = await rt.startInstance({ id, name: id, channelType: c.channelType, channel: c.channel }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, c.mention).toBeInstanceOf(StartFailureError);
      expect(err).toMatchObject({ code: 'start_failure', message: expect.stringContaining(c.mention) });
      expect((err as Error).cause).toBeInstanceOf(ChannelInvalidError);
      expect(rt.whereis(id)).toBeUndefined();
    }
    // The id is free again: started right, it runs.
    const ok = await rt.startInstance({ id: 'bad-0', name: 'fixed', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
    expect(ok.currentStatus).toBe('connected');
  });

  it('a crash loop exceeds the instance intensity and puts only that instance in error', async () => {
    const rt = await start();
    const sibling = await rt.startInstance({ name: 'steady', channelType: 'loopback', channel: 'loopback' });
    await waitFor(() => sibling.currentStatus === 'connected');
    const siblingThread = (await rt.health(sibling.instanceId)).worker;
    const events = collect(rt, 'instance:restart', 'instance:error', 'instance:disconnected');
    const looper = await rt.startInstance({
      name: 'looper',
      channelType: 'crashy',
      channel: fixtureUrl('runtime-crashy'),
      settings: { counterFile: join(tmp, 'loop.count'), crashTimes: 1000 },
      restart: { maxRestarts: 2 }, // this instance only; the rest comes from the runtime
    });
    await waitFor(() => looper.currentStatus === 'error', 20_000);
    const restarts = events.filter((e) => e.event === 'instance:restart' && e.instanceId === looper.instanceId);
    expect(restarts.filter((e) => e.class === 'recoverable').every((e) => e.kind === 'crash')).toBe(true);
    expect(restarts.at(-1)).toMatchObject({ class: 'fatal', kind: 'intensity_exceeded' });
    expect(restarts).toHaveLength(3); // 2 restarts allowed, the 3rd death escalates
    expect(events.find((e) => e.event === 'instance:error')).toMatchObject({ instanceId: looper.instanceId });
    // the sibling was never touched
    expect(events.filter((e) => e.instanceId === sibling.instanceId)).toEqual([]);
    expect(sibling.currentStatus).toBe('connected');
    expect(sibling.restartCount).toBe(0);
    expect((await rt.health(sibling.instanceId)).worker?.state).toBe(siblingThread?.state);
    expect(await rt.send(sibling.instanceId, { ok: 1 })).toBeTruthy();
  });

  it('recoverAfterMs gives an instance in error a fresh start; restartInstance does so at once', async () => {
    const counterFile = join(tmp, 'recover.count');
    const rt = await start({ restart: { ...fastRestart, maxRestarts: 1, recoverAfterMs: 200 } });
    const started = collect(rt, 'instance:started');
    const server = await rt.startInstance({ name: 'phoenix', channelType: 'crashy', channel: fixtureUrl('runtime-crashy'), settings: { counterFile, crashTimes: 2 } });
    await waitFor(() => started.some((e) => e.fresh === true && String(e.reason).includes('recovering')), 20_000);
    await waitFor(() => server.currentStatus === 'connected', 20_000);
    const before = server.restartCount;
    await rt.restartInstance(server.instanceId);
    await waitFor(() => server.currentStatus === 'connected');
    expect(server.restartCount).toBe(before + 1);
    expect(server.lastRestartReason).toBe('restart requested');
  });

  it('a worker killed by a hang is detected, restarted as recoverable, and connects again', async () => {
    const rt = await start({ heartbeat: { intervalMs: 100, maxMissed: 3 } });
    const events = collect(rt, 'instance:restart');
    const server = await rt.startInstance({ name: 'hang', channelType: 'loopback', channel: 'loopback', settings: { faults: true } });
    await waitFor(() => server.currentStatus === 'connected');
    void rt.send(server.instanceId, { fault: 'hang' }).catch(() => undefined);
    await waitFor(() => events.length >= 1);
    expect(events[0]).toMatchObject({ class: 'recoverable', kind: 'hang', attempt: 1 });
    await waitFor(() => server.currentStatus === 'connected');
    expect(server.restartCount).toBeGreaterThanOrEqual(1);
  });

  it('a hung channel callback times out and is classified recoverable', async () => {
    const rt = await start({
      timeouts: { connectMs: 100, sendMs: 100 },
      reconnect: { maxAttempts: 50, baseMs: 10, maxMs: 20, jitter: 0 },
      delivery: { maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 10, jitter: 0 },
    });
    const events = collect(rt, 'instance:reconnect');
    const a = await rt.startInstance({ name: 'stuck', channelType: 'loopback', channel: 'loopback', settings: { hangOn: 'connect' } });
    await waitFor(() => events.some((e) => e.phase === 'failed'));
    expect(events.find((e) => e.phase === 'failed')).toMatchObject({ class: 'recoverable', reason: expect.stringMatching(/time/i) });
    expect(a.currentStatus).not.toBe('error');
    const b = await rt.startInstance({ name: 'mute', channelType: 'loopback', channel: 'loopback', settings: { hangOn: 'send' } });
    await waitFor(() => b.currentStatus === 'connected');
    await expect(rt.send(b.instanceId, { x: 1 })).rejects.toMatchObject({
      code: 'delivery_failed',
      attempts: 2,
      reason: 'max_attempts',
      lastError: { class: 'recoverable', channelCode: 'timeout' },
    });
    expect(b.consecutiveFailures).toBe(2);
  });

  it('probes run on schedule and their outcome shows in events and health', async () => {
    const rt = await start({ probe: { intervalMs: 50, timeoutMs: 1000 } });
    const probes = collect(rt, 'instance:probe');
    const server = await rt.startInstance({ name: 'p', channelType: 'loopback', channel: 'loopback', settings: { probe: 'degraded' } });
    await waitFor(() => probes.length >= 3);
    expect(probes.every((p) => p.outcome === 'degraded' && typeof p.latencyMs === 'number')).toBe(true);
    const health = await rt.health(server.instanceId);
    expect(health.lastProbe).toMatchObject({ outcome: 'degraded' });
    expect(health.status).toBe('connected'); // degraded keeps running
    await expect(rt.startInstance({ name: 'bad', channelType: 'loopback', channel: 'loopback', restart: { maxRestarts: -1 } })).rejects.toMatchObject({
      code: 'invalid_config',
      issues: [expect.objectContaining({ path: 'maxRestarts' })],
    });
  });

  it('inbound messages reach onMessage in order; handler errors are counted and do not stop the poller', async () => {
    const seen: Array<{ seq: number }> = [];
    let failures = 0;
    const rt = await start({
      onMessage: (m) => {
        const msg = m as { seq: number };
        if (msg.seq === 3) throw new Error('handler failed');
        seen.push(msg);
      },
    });
    rt.on('message:failed', () => failures++);
    const server = await rt.startInstance({ name: 'in', channelType: 'loopback', channel: 'loopback', settings: { inbound: { ratePerSec: 500, rooms: 3, batch: 5 } } });
    await waitFor(() => seen.length >= 40);
    const seqs = seen.map((m) => m.seq);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(seqs).not.toContain(3);
    expect(failures).toBe(1);
    expect(rt.stats()).toMatchObject({ handlerErrors: 1 });
    expect(rt.stats().inboundDelivered).toBeGreaterThanOrEqual(40);
    expect(server.currentStatus).toBe('connected');
  });

  it('the inbound cursor survives a crash: nothing is skipped, little is re-read', async () => {
    const seqs: number[] = [];
    const rt = await start({ onMessage: (m) => void seqs.push((m as { seq: number }).seq) });
    const server = await rt.startInstance({
      name: 'cursor',
      channelType: 'loopback',
      channel: 'loopback',
      settings: { faults: true, inbound: { ratePerSec: 400, rooms: 2, batch: 10 } },
    });
    await waitFor(() => seqs.length >= 60);
    void rt.send(server.instanceId, { fault: 'crash' }).catch(() => undefined);
    await waitFor(() => server.restartCount >= 1 && server.currentStatus === 'connected');
    const atRestart = Math.max(...seqs);
    await waitFor(() => Math.max(...seqs) >= atRestart + 60);
    const unique = [...new Set(seqs)].sort((a, b) => a - b);
    // contiguous from 1: the new worker resumed where onMessage left off
    expect(unique).toEqual(Array.from({ length: unique.length }, (_, i) => i + 1));
    // re-read at most the batches in hand when the worker died (the inbound window)
    expect(seqs.length - unique.length).toBeLessThanOrEqual(8 * 10);
  });

  it('rt.pool runs stateless tasks on a shared piscina pool that rt.stop() destroys', async () => {
    const rt = await Runtime.start({ logger: silent, pool: { maxThreads: 2 } });
    const filename = fixtureUrl('pool-task').href;
    const results = await Promise.all([20, 21, 22].map((n) => rt.pool.run({ n }, { filename })));
    expect(results).toEqual([6765, 10946, 17711]);
    expect(rt.pool).toBe(rt.pool);
    expect(rt.pool.options.maxThreads).toBe(2);
    // The pool's own threads (a worker an earlier test's runtime left restarting is not counted).
    const threads = [...rt.pool.threads];
    expect(threads.length).toBeGreaterThan(0);
    await rt.stop();
    expect(() => rt.pool).toThrow(expect.objectContaining({ code: 'stopped' }));
    await waitFor(() => threads.every((t) => t.threadId === -1), 30_000);
  });

  it('stopped is emitted exactly once on every stop path', async () => {
    const rt = await start({ reconnect: { maxAttempts: 100, baseMs: 50, maxMs: 50, jitter: 0 } });
    const stopped = collect(rt, 'instance:stopped');
    const a = await rt.startInstance({ name: 'a', channelType: 'loopback', channel: 'loopback' });
    const reconnecting = await rt.startInstance({ name: 'r', channelType: 'loopback', channel: 'loopback', settings: { connectFailures: 1000 } });
    const failed = await rt.startInstance({ name: 'f', channelType: 'loopback', channel: 'loopback', settings: { fatalConnect: true } });
    const last = await rt.startInstance({ name: 'z', channelType: 'loopback', channel: 'loopback' });
    await waitFor(() => a.currentStatus === 'connected' && failed.currentStatus === 'error' && reconnecting.reconnectAttempt > 0);
    await rt.stopInstance(a.instanceId); // while connected
    await rt.stopInstance(reconnecting.instanceId); // during reconnect
    await rt.stop(); // error and connected instances
    await rt.stop();
    const ids = stopped.map((e) => e.instanceId).sort();
    expect(ids).toEqual([a.instanceId, reconnecting.instanceId, failed.instanceId, last.instanceId].sort());
    expect(rt.countInstances()).toBe(0);
    await expect(rt.startInstance({ name: 'late', channelType: 'loopback', channel: 'loopback' })).rejects.toMatchObject({ code: 'stopped' });
  });

  it('restartInstance racing stopInstance leaves no worker behind and stops once', async () => {
    const tracker = trackWorkers();
    const rt = await start();
    const stopped = collect(rt, 'instance:stopped');
    const server = await rt.startInstance({ name: 'race', channelType: 'loopback', channel: 'loopback' });
    await waitFor(() => server.currentStatus === 'connected');
    const results = await Promise.allSettled([rt.restartInstance(server.instanceId), rt.stopInstance(server.instanceId)]);
    expect(results[1].status).toBe('fulfilled');
    await waitFor(() => tracker.live() === 0, 30_000);
    tracker.dispose();
    expect(stopped).toHaveLength(1);
    expect(rt.countInstances()).toBe(0);
  });

  it('stop during start: the instance is stopped once and startInstance settles', async () => {
    const rt = await start();
    const stopped = collect(rt, 'instance:stopped');
    const pending = rt.startInstance({ name: 's', channelType: 'loopback', channel: 'loopback' });
    const stopping = rt.stop();
    await Promise.allSettled([pending]);
    await stopping;
    expect(stopped).toHaveLength(1);
  });

  it('rt.stop() leaves no worker threads, timers or ports behind', async () => {
    const tracker = trackWorkers();
    const before = activeResources();
    const rt = await Runtime.start({ logger: silent, restart: fastRestart, reconnect: fastReconnect, heartbeat });
    const servers = await Promise.all(
      ['a', 'b', 'c'].map((name) => rt.startInstance({ name, channelType: 'loopback', channel: 'loopback', settings: { faults: true, inbound: { ratePerSec: 100, rooms: 2, batch: 2 } } })),
    );
    await waitFor(() => servers.every((s) => s.currentStatus === 'connected'));
    void rt.send(servers[0]!.instanceId, { fault: 'crash' }).catch(() => undefined);
    await waitFor(() => servers[0]!.restartCount >= 1 && servers[0]!.currentStatus === 'connected', 20_000);
    await rt.stop();
    tracker.dispose();
    expect(tracker.live()).toBe(0);
    expect(tracker.created()).toBe(3 + servers[0]!.restartCount);
    await new Promise((r) => setTimeout(r, 50));
    expect(resourceGrowth(before, activeResources())).toEqual({});
  });

  it('malformed notices from a worker are counted and logged, never a crash', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const rt = await start({ logger: pino({ level: 'debug' }, sink) });
    const server = await rt.startInstance({ name: 'junk', channelType: 'malformed', channel: fixtureUrl('runtime-malformed'), credentials: { token: 'tok-123456' } });
    await waitFor(() => server.currentStatus === 'connected');
    await waitFor(() => rt.stats().malformedMessages === 12);
    expect(lines.filter((l) => l.includes('names no instance, or another one')).length).toBe(3);
    expect(lines.filter((l) => l.includes('malformed notice')).length).toBe(2);
    expect(lines.filter((l) => l.includes('malformed acks')).length).toBe(7);
    expect((await rt.health(server.instanceId)).delivery.staleAcks).toBe(3); // acks for sends never made
    // the channel's own log line is forwarded, its credential scrubbed
    await waitFor(() => lines.some((l) => l.includes('connected after junk')));
    await waitFor(() => lines.some((l) => l.includes('odd object')));
    expect(lines.join('\n')).not.toContain('tok-123456');
    // one component per line (a child logger of a child logger would repeat the key)
    expect(lines.filter((l) => (l.match(/"component":/g) ?? []).length > 1)).toEqual([]);
    expect(lines.some((l) => l.includes('"component":"instance"'))).toBe(true);
    expect(server.currentStatus).toBe('connected');
    expect(await rt.send(server.instanceId, { a: 1 })).toEqual({ externalId: 'm-1' });
  });

  it('credentials never appear in logs, events, status or health', async () => {
    const token = 'sk-live-SECRET-1234567890';
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const logger = pino({ level: 'trace' }, sink);
    const rt = await start({ logger });
    const events: unknown[] = [];
    for (const name of ['instance:started', 'instance:connecting', 'instance:error', 'instance:restart', 'instance:stopped'] as const) rt.on(name, (e) => events.push(e));
    const server = await rt.startInstance({
      name: 'secret',
      channelType: 'loopback',
      channel: 'loopback',
      credentials: { token },
      settings: { requireToken: 'something-else-entirely' },
    });
    await waitFor(() => server.currentStatus === 'error');
    const outputs = [
      JSON.stringify(await rt.status(server.instanceId)),
      JSON.stringify(await rt.health(server.instanceId)),
      JSON.stringify(server.getInstance()),
      JSON.stringify(events),
    ];
    await rt.stop();
    outputs.push(lines.join('\n'));
    expect(lines.length).toBeGreaterThan(3);
    for (const out of outputs) expect(out).not.toContain(token);
    expect(events.length).toBeGreaterThanOrEqual(4); // started, connecting, error, stopped at least
  });

  it('settings that contain a credential reach the worker intact, and are shown redacted', async () => {
    const token = 'tok-settings-123456';
    const rt = await start();
    const server = await rt.startInstance({
      name: 'right-token',
      channelType: 'loopback',
      channel: 'loopback',
      credentials: { token },
      settings: { requireToken: token },
    });
    await waitFor(() => server.currentStatus === 'connected');
    expect(JSON.stringify(server.getInstance())).not.toContain(token);
  });

  it('a crash whose message carries the token leaks it into no log, event or error', async () => {
    const token = 'sk-live-CRASHY-0987654321';
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const published: unknown[] = [];
    const names = ['child_exited', 'child_restarting', 'child_restarted', 'escalated'].map((e) => `threadvisor:supervisor:${e}`);
    const onEvent = (m: unknown) => published.push(m);
    for (const n of names) diagnostics_channel.subscribe(n, onEvent);
    try {
      const rt = await start({ logger: pino({ level: 'trace' }, sink) });
      const events: unknown[] = [];
      for (const name of ['instance:restart', 'instance:disconnected', 'instance:started'] as const) rt.on(name, (e) => events.push(e));
      const server = await rt.startInstance({
        name: 'leaky',
        channelType: 'crashy',
        channel: fixtureUrl('runtime-crashy'),
        credentials: { token },
        settings: { counterFile: join(tmp, 'leak.count'), crashTimes: 1, leak: true },
      });
      await waitFor(() => server.restartCount === 1 && server.currentStatus === 'connected');
      const all = [lines.join('\n'), JSON.stringify(events), JSON.stringify(published), JSON.stringify(await rt.health(server.instanceId))].join('\n');
      expect(all).toContain('crashy crash #1'); // the reason is there...
      expect(all).not.toContain(token); // ...without the token
      expect(all).toContain('[Redacted]');
    } finally {
      for (const n of names) diagnostics_channel.unsubscribe(n, onEvent);
    }
  });
});
