/**
 * The data plane with real workers: at-least-once delivery across worker deaths (exactly once at
 * an idempotent sink), order, backpressure, pressure levels, retries and dedupe.
 */
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { OutboundQueue } from '../src/runtime/outbound/queue.js';
import { Runtime, type RuntimeOptions } from '../src/runtime/runtime.js';
import { fixtureUrl, waitFor } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const runtimes: Runtime[] = [];
async function start(opts: RuntimeOptions = {}): Promise<Runtime> {
  const rt = await Runtime.start({
    logger: silent,
    heartbeat: { intervalMs: 100, maxMissed: 5 },
    restart: { maxRestarts: 10, periodMs: 30_000, backoff: { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 }, recoverAfterMs: Infinity },
    reconnect: { maxAttempts: 5, baseMs: 10, maxMs: 40, jitter: 0 },
    ...opts,
  });
  runtimes.push(rt);
  return rt;
}
let cleanupProto: (() => void) | undefined;
afterEach(async () => {
  cleanupProto?.();
  cleanupProto = undefined;
  await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
});
const tmp = mkdtempSync(join(tmpdir(), 'threadvisor-dp-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const keys = (n: number) => Array.from({ length: n }, (_, i) => `k-${String(i).padStart(4, '0')}`);
const sinkLines = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean);

describe('data plane', { timeout: 90_000 }, () => {
  for (const fault of ['crash', 'exit', 'hang', 'oom'] as const) {
    it(`a worker killed by ${fault} with 500 queued and 64 in flight: every message delivered exactly once at an idempotent sink, in order`, async () => {
      const sinkFile = join(tmp, `sink-${fault}.log`);
      const rt = await start({ sendWindow: 64, resourceLimits: { maxOldGenerationSizeMb: 48 } });
      const server = await rt.startInstance({
        name: fault,
        channelType: 'sink',
        channel: fixtureUrl('runtime-sink'),
        settings: { sinkFile, idempotent: true, latencyMs: 1 },
      });
      await waitFor(() => server.currentStatus === 'connected');
      const all = keys(564);
      // The 41st message kills the worker on its first attempt, with the rest queued or in flight.
      const sends = all.map((key, i) => rt.send(server.instanceId, i === 40 ? { key, fault } : { key }));
      const health = await rt.health(server.instanceId);
      expect(health.senderQueueDepth + health.inFlight).toBeGreaterThan(500);
      const receipts = await Promise.all(sends);
      expect(receipts).toEqual(all.map((key) => ({ externalId: `sink-${key}` })));
      expect(sinkLines(sinkFile)).toEqual(all);
      expect(server.restartCount).toBeGreaterThanOrEqual(1);
      const after = await rt.health(server.instanceId);
      expect(after).toMatchObject({ senderQueueDepth: 0, inFlight: 0 });
      expect(after.delivery.requeued).toBeGreaterThan(0);
    });
  }

  it('sendMany across a worker crash: one outcome per message, each delivered exactly once at an idempotent sink, in order', async () => {
    const sinkFile = join(tmp, 'sink-many.log');
    const rt = await start({ sendWindow: 64 });
    const server = await rt.startInstance({ name: 'many', channelType: 'sink', channel: fixtureUrl('runtime-sink'), settings: { sinkFile, idempotent: true, latencyMs: 1 } });
    await waitFor(() => server.currentStatus === 'connected');
    const all = keys(400);
    const batches = [all.slice(0, 200), all.slice(200)].map((ks) => ks.map((key) => (key === all[50] ? { key, fault: 'crash' as const } : { key })));
    const outcomes = (await Promise.all(batches.map((b) => rt.sendMany(server.instanceId, b, { waitForCapacity: true })))).flat();
    expect(outcomes).toEqual(all.map((key) => ({ ok: true, receipt: { externalId: `sink-${key}` } })));
    expect(sinkLines(sinkFile)).toEqual(all);
    expect(server.restartCount).toBeGreaterThanOrEqual(1);
    await expect(rt.sendMany('nope', [{ key: 'x' }])).rejects.toMatchObject({ code: 'not_found' });
    await expect(rt.sendMany(server.instanceId, 'nope' as never)).rejects.toMatchObject({ code: 'invalid_config' });
  });

  it('a retried message is not overtaken by batches that were on their way to the worker when it failed', async () => {
    const sinkFile = join(tmp, 'sink-epoch.log');
    const rt = await start({ delivery: { maxAttempts: 5, initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } });
    const server = await rt.startInstance({ name: 'epoch', channelType: 'sink', channel: fixtureUrl('runtime-sink'), queueCapacity: 10_000, settings: { sinkFile } });
    await waitFor(() => server.currentStatus === 'connected');
    // The full window (1024, in batches of 256) is in flight when message 1500 fails once.
    const all = keys(4000);
    await Promise.all(all.map((key, i) => rt.send(server.instanceId, i === 1500 ? { key, fail: 'recoverable', failTimes: 1 } : { key })));
    expect(sinkLines(sinkFile)).toEqual(all);
    expect((await rt.health(server.instanceId)).delivery).toMatchObject({ retried: 1, delivered: 4000 });
  });

  it('a non-idempotent sink gets every message at least once, first deliveries in order', async () => {
    const sinkFile = join(tmp, 'sink-plain.log');
    const rt = await start();
    const server = await rt.startInstance({ name: 'plain', channelType: 'sink', channel: fixtureUrl('runtime-sink'), settings: { sinkFile, latencyMs: 1 } });
    await waitFor(() => server.currentStatus === 'connected');
    const all = keys(300);
    await Promise.all(all.map((key, i) => rt.send(server.instanceId, i === 100 ? { key, fault: 'crash' } : { key })));
    const lines = sinkLines(sinkFile);
    const first = [...new Set(lines)];
    expect(first).toEqual(all);
    expect(lines.length).toBeGreaterThanOrEqual(all.length);
  });

  it('a send past its budget fails, the rest are handed back and delivered in order; its late settling is ignored', async () => {
    const sinkFile = join(tmp, 'sink-stall.log');
    const rt = await start({ timeouts: { sendMs: 150 }, delivery: { maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 10, jitter: 0 } });
    const retries: unknown[] = [];
    rt.on('delivery:retry', (e: unknown) => retries.push(e));
    const server = await rt.startInstance({ name: 'stall', channelType: 'sink', channel: fixtureUrl('runtime-sink'), settings: { sinkFile, idempotent: true } });
    await waitFor(() => server.currentStatus === 'connected');
    const all = keys(40);
    const receipts = await Promise.all(all.map((key, i) => rt.send(server.instanceId, i === 5 ? { key, stallMs: 600 } : { key })));
    expect(receipts).toEqual(all.map((key) => ({ externalId: `sink-${key}` })));
    expect(retries).toEqual([expect.objectContaining({ attempt: 1, code: 'timeout', class: 'recoverable' })]);
    await new Promise((r) => setTimeout(r, 700)); // the stalled first try settles now, in the channel
    expect(sinkLines(sinkFile)).toEqual(all); // in order, once: the retry wrote it, the late try was a duplicate
    const health = await rt.health(server.instanceId);
    expect(health.delivery).toMatchObject({ delivered: 40, retried: 1, staleAcks: 0 });
    expect(health.worker).toMatchObject({ state: 'up' });
    expect(await rt.send(server.instanceId, { key: 'after' })).toEqual({ externalId: 'sink-after' });
  });

  it('a full queue rejects with queue_full; waiting with an aborted signal rejects with aborted; pressure rises and falls', async () => {
    const rt = await start({ reconnect: { maxAttempts: 1000, baseMs: 20, maxMs: 20, jitter: 0 } });
    const levels: string[] = [];
    rt.on('instance:pressure', (e: { level: string }) => levels.push(e.level));
    // never connects: sends wait in the queue
    const server = await rt.startInstance({ name: 'full', channelType: 'loopback', channel: 'loopback', queueCapacity: 10, settings: { connectFailures: 1_000_000 } });
    const id = server.instanceId;
    const accepted = Array.from({ length: 10 }, (_, i) => rt.send(id, { n: i }));
    for (const p of accepted) p.catch(() => undefined);
    await waitFor(() => levels.length >= 3);
    expect(levels).toEqual(['warn', 'degraded', 'shed']);
    const h = await rt.health(id);
    expect(h.pressure).toBe('shed');
    expect(h.senderQueueDepth + h.inFlight).toBe(10);
    await expect(rt.send(id, { n: 11 })).rejects.toMatchObject({ code: 'queue_full' });
    const aborted = AbortSignal.abort(new Error('caller gave up'));
    await expect(rt.send(id, { n: 12 }, { waitForCapacity: true, signal: aborted })).rejects.toMatchObject({ code: 'aborted' });
    const controller = new AbortController();
    const waiting = rt.send(id, { n: 13 }, { waitForCapacity: true, signal: controller.signal });
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'aborted' });
    // Stopping settles every accepted send.
    await rt.stopInstance(id);
    const settled = await Promise.allSettled(accepted);
    expect(settled.every((r) => r.status === 'rejected' && (r.reason as { code: string }).code === 'stopped')).toBe(true);
  });

  it('pressure steps back down as the queue drains', async () => {
    const sinkFile = join(tmp, 'sink-pressure.log');
    const rt = await start();
    const levels: string[] = [];
    rt.on('instance:pressure', (e: { level: string }) => levels.push(e.level));
    const server = await rt.startInstance({ name: 'p', channelType: 'sink', channel: fixtureUrl('runtime-sink'), queueCapacity: 200, settings: { sinkFile, latencyMs: 1 } });
    await waitFor(() => server.currentStatus === 'connected');
    await Promise.all(keys(200).map((key) => rt.send(server.instanceId, { key })));
    expect(levels[0]).toBe('warn');
    expect(levels.at(-1)).toBe('normal');
    expect((await rt.health(server.instanceId)).pressure).toBe('normal');
  });

  it('fatal send failures fail at once; a delivered key is not sent again', async () => {
    const sinkFile = join(tmp, 'sink-dedupe.log');
    const rt = await start();
    const server = await rt.startInstance({ name: 'd', channelType: 'sink', channel: fixtureUrl('runtime-sink'), settings: { sinkFile } });
    await waitFor(() => server.currentStatus === 'connected');
    const id = server.instanceId;
    await expect(rt.send(id, { key: 'bad', fail: 'fatal' })).rejects.toMatchObject({ code: 'delivery_failed', reason: 'fatal', attempts: 1 });
    const first = await rt.send(id, { key: 'once' }, { idempotencyKey: 'order-1' });
    const again = await rt.send(id, { key: 'once' }, { idempotencyKey: 'order-1' });
    expect(again).toEqual(first);
    const retried = await rt.send(id, { key: 'flaky', fail: 'recoverable', failTimes: 2 });
    expect(retried).toEqual({ externalId: 'sink-flaky' });
    expect(sinkLines(sinkFile)).toEqual(['once', 'flaky']);
    const h = await rt.health(id);
    expect(h.delivery).toMatchObject({ duplicatesSkipped: 1, retried: 2, gaveUp: 1 });
  });

  it('delivery events reach runtime listeners', async () => {
    const sinkFile = join(tmp, 'sink-events.log');
    const rt = await start();
    const seen: string[] = [];
    for (const e of ['delivery:queued', 'delivery:attempt', 'delivery:delivered'] as const) rt.on(e, () => seen.push(e));
    const server = await rt.startInstance({ name: 'e', channelType: 'sink', channel: fixtureUrl('runtime-sink'), settings: { sinkFile } });
    await waitFor(() => server.currentStatus === 'connected');
    await rt.send(server.instanceId, { key: 'x' });
    expect(seen).toEqual(['delivery:queued', 'delivery:attempt', 'delivery:delivered']);
  });

  it('delivery events are forwarded only while someone listens on the runtime, once each', async () => {
    const rt = await start();
    const server = await rt.startInstance({ name: 'f', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
    // What the instance's queue emits (it builds a payload only when it emits).
    let queueEmits = 0;
    const proto = OutboundQueue.prototype as unknown as { emit: (event: string | symbol, ...args: unknown[]) => boolean };
    proto.emit = function (this: EventEmitter, event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'delivery:delivered') queueEmits++;
      return EventEmitter.prototype.emit.call(this, event, ...args);
    };
    cleanupProto = () => delete (proto as { emit?: unknown }).emit;
    let first = 0;
    let second = 0;
    const one = (): void => {
      first++;
    };
    rt.on('delivery:delivered', one);
    await rt.send(server.instanceId, { text: 'a' });
    rt.off('delivery:delivered', one);
    await rt.send(server.instanceId, { text: 'b' });
    rt.on('delivery:delivered', () => second++);
    await rt.send(server.instanceId, { text: 'c' });
    rt.removeAllListeners('delivery:delivered');
    await rt.send(server.instanceId, { text: 'd' });
    expect([first, second]).toEqual([1, 1]);
    expect(queueEmits).toBe(2); // 'a' and 'c': none while nobody listened
  });

  it('delivery events reach a listener added after removeAllListeners() took every listener off', async () => {
    const rt = await start();
    const server = await rt.startInstance({ name: 'g', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
    rt.on('delivery:delivered', () => undefined);
    rt.removeAllListeners();
    let seen = 0;
    rt.on('delivery:delivered', () => seen++);
    // An instance started after it gets the relay too.
    const later = await rt.startInstance({ name: 'h', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
    await rt.send(server.instanceId, { text: 'a' });
    await rt.send(later.instanceId, { text: 'b' });
    expect(seen).toBe(2);
  });
});
