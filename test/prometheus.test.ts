/**
 * `threadvisor/prometheus`: metrics of a real runtime (built-in `loopback` channel) on a
 * prom-client registry, read from `registry.metrics()`. No timing asserts.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidConfigError } from '../src/errors.js';
import { InstanceManager } from '../src/manager/index.js';
import { collectMetrics } from '../src/prometheus.js';
import { deliveryFeedOf } from '../src/runtime/outbound/feed.js';
import { Runtime } from '../src/runtime/runtime.js';
import { waitFor } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const fastRestart = { maxRestarts: 5, periodMs: 30_000, backoff: { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 }, recoverAfterMs: Infinity };
const fastReconnect = { maxAttempts: 5, baseMs: 10, maxMs: 40, jitter: 0 };
const heartbeat = { intervalMs: 100, maxMissed: 20 };
const SECRET = 'secret-token-123';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function twoInstances(): Promise<{ rt: Runtime; a: string; b: string }> {
  const rt = await Runtime.start({ logger: silent, restart: fastRestart, reconnect: fastReconnect, heartbeat });
  cleanups.push(() => rt.stop());
  const [a, b] = await Promise.all(
    ['alpha', 'beta'].map((name) =>
      rt.startInstance(
        { id: name, name, channelType: 'loopback', channel: 'loopback', credentials: { token: SECRET }, settings: { faults: true } },
        { waitFor: 'connected', timeoutMs: 20_000 },
      ),
    ),
  );
  return { rt, a: a!.instanceId, b: b!.instanceId };
}

/** The value of one sample line `name{labels} value` (labels in prom-client's order), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('collectMetrics', { timeout: 60_000 }, () => {
  it('counts sends, restarts and instances by status, and never shows a credential', async () => {
    const { rt, a, b } = await twoInstances();
    const registry = new Registry();
    const metrics = collectMetrics(rt, { registry });
    cleanups.push(() => metrics.stop());

    await Promise.all([...Array.from({ length: 5 }, (_, i) => rt.send(a, { text: `a${i}` })), ...Array.from({ length: 3 }, (_, i) => rt.send(b, { text: `b${i}` }))]);
    void rt.send(a, { fault: 'crash' }).catch(() => undefined);
    await waitFor(() => rt.whereis(a)!.restartCount >= 1 && rt.whereis(a)!.currentStatus === 'connected', 20_000);
    await rt.send(a, { text: 'after' });

    const text = await registry.metrics();
    expect(sample(text, 'threadvisor_instances{status="connected"}')).toBe(2);
    expect(sample(text, 'threadvisor_instances{status="error"}')).toBe(0);
    expect(sample(text, `threadvisor_instance_restarts_total{instance="${a}",kind="crash",class="recoverable"}`)).toBe(1);
    expect(text).not.toContain(`threadvisor_instance_restarts_total{instance="${b}"`);
    // alpha: 5 + 'after' (+ the fault message itself once delivered or redelivered)
    expect(sample(text, `threadvisor_sends_total{instance="${a}",outcome="ok"}`)).toBeGreaterThanOrEqual(6);
    expect(sample(text, `threadvisor_sends_total{instance="${b}",outcome="ok"}`)).toBe(3);
    expect(sample(text, `threadvisor_queue_depth{instance="${a}"}`)).toBe(0);
    expect(sample(text, `threadvisor_queue_pressure{instance="${b}"}`)).toBe(0);
    expect(sample(text, 'threadvisor_send_duration_seconds_count')).toBeGreaterThanOrEqual(9);
    // The histogram (kept locally, written at scrape) agrees with the counters: one observation
    // per delivered send, cumulative buckets ending at the count, a positive sum.
    const delivered = (sample(text, `threadvisor_sends_total{instance="${a}",outcome="ok"}`) ?? NaN) + (sample(text, `threadvisor_sends_total{instance="${b}",outcome="ok"}`) ?? NaN);
    expect(sample(text, 'threadvisor_send_duration_seconds_count')).toBe(delivered);
    expect(sample(text, 'threadvisor_send_duration_seconds_bucket{le="+Inf"}')).toBe(delivered);
    expect(sample(text, 'threadvisor_send_duration_seconds_sum')).toBeGreaterThan(0);
    const buckets = text.split('\n').filter((l) => l.startsWith('threadvisor_send_duration_seconds_bucket')).map((l) => Number(l.split(' ')[1]));
    expect(buckets).toEqual([...buckets].sort((x, y) => x - y));
    expect(text).toContain('# TYPE threadvisor_send_duration_seconds histogram');
    expect(text).toContain('# TYPE threadvisor_heartbeat_rtt_seconds histogram');
    for (const name of ['threadvisor_reconnect_attempts_total', 'threadvisor_worker_elu', 'threadvisor_worker_heap_bytes', 'threadvisor_heartbeat_age_seconds']) {
      expect(text).toContain(`# TYPE ${name} `);
    }
    expect(text).not.toContain(SECRET);
    expect(registry.contentType).toContain('text/plain');

    // An instance's labelled series go with it.
    await rt.stopInstance(b);
    const after = await registry.metrics();
    expect(after).not.toContain(`instance="${b}"`);
    expect(after).not.toContain(SECRET);
  });

  it('perInstance: false aggregates without the instance label', async () => {
    const { rt, a, b } = await twoInstances();
    const registry = new Registry();
    const metrics = collectMetrics(rt, { registry, perInstance: false });
    cleanups.push(() => metrics.stop());
    await Promise.all([rt.send(a, { text: 'x' }), rt.send(b, { text: 'y' }), rt.send(b, { text: 'z' })]);
    const text = await registry.metrics();
    expect(text).not.toContain('instance=');
    expect(sample(text, 'threadvisor_sends_total{outcome="ok"}')).toBe(3);
    expect(sample(text, 'threadvisor_queue_depth')).toBe(0);
    expect(sample(text, 'threadvisor_instances{status="connected"}')).toBe(2);
    expect(text).not.toContain(SECRET);
  });

  it('stop() removes its listeners and its metrics, and a second collector may register then', async () => {
    const { rt } = await twoInstances();
    const events = ['instance:restart', 'instance:reconnect', 'instance:stopped'];
    // Send outcomes come from the runtime's delivery feed: no delivery:* listener, one tap.
    const deliveryEvents = ['delivery:delivered', 'delivery:gave_up', 'delivery:retry', 'delivery:skipped_duplicate'];
    const feed = deliveryFeedOf(rt)!;
    const before = events.map((e) => rt.listenerCount(e));
    const registry = new Registry();
    const metrics = collectMetrics(rt, { registry });
    expect(events.map((e) => rt.listenerCount(e))).toEqual(before.map((n) => n + 1));
    expect(deliveryEvents.map((e) => rt.listenerCount(e))).toEqual([0, 0, 0, 0]);
    expect(feed.taps.length).toBe(1);
    expect(diagnostics_channel.channel('threadvisor:worker:heartbeat').hasSubscribers).toBe(true);
    expect(registry.getMetricsAsArray().length).toBeGreaterThan(10);
    metrics.stop();
    metrics.stop();
    expect(events.map((e) => rt.listenerCount(e))).toEqual(before);
    expect(feed.taps.length).toBe(0);
    expect(registry.getMetricsAsArray()).toEqual([]);
    expect((await registry.metrics()).trim()).toBe('');
    expect(diagnostics_channel.channel('threadvisor:worker:heartbeat').hasSubscribers).toBe(false);
    // Names free again; a name already taken fails without removing the other collector's metrics.
    const again = collectMetrics(rt, { registry });
    cleanups.push(() => again.stop());
    const count = registry.getMetricsAsArray().length;
    expect(() => collectMetrics(rt, { registry })).toThrow();
    expect(registry.getMetricsAsArray().length).toBe(count);
    expect(events.map((e) => rt.listenerCount(e))).toEqual(before.map((n) => n + 1));
    expect(feed.taps.length).toBe(1);
  });

  it('counts failures, retries and duplicates as the delivery events do, which still reach their listeners', async () => {
    const rt = await Runtime.start({ logger: silent, maxConsecutiveFailures: 100, delivery: { maxAttempts: 2, initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } });
    cleanups.push(() => rt.stop());
    const a = (await rt.startInstance({ id: 'a', name: 'a', channelType: 'loopback', channel: 'loopback', settings: { sendFailures: 3 } }, { waitFor: 'connected', timeoutMs: 20_000 }))!.instanceId;
    const registry = new Registry();
    const metrics = collectMetrics(rt, { registry });
    cleanups.push(() => metrics.stop());
    const seen = { delivered: 0, gaveUp: 0, retry: 0, duplicate: 0, totalMs: 0 };
    rt.on('delivery:delivered', (p) => {
      seen.delivered++;
      seen.totalMs += p.totalMs;
    });
    rt.on('delivery:gave_up', () => seen.gaveUp++);
    rt.on('delivery:retry', () => seen.retry++);
    rt.on('delivery:skipped_duplicate', () => seen.duplicate++);

    // 1st attempt fails, retried, 2nd fails: gave up. 3rd fails, retried, 4th delivered.
    await expect(rt.send(a, { text: 'x' }, { idempotencyKey: 'x' })).rejects.toThrow();
    await rt.send(a, { text: 'y' }, { idempotencyKey: 'y' });
    await rt.send(a, { text: 'y again' }, { idempotencyKey: 'y' }); // answered from the dedupe cache
    await Promise.all(Array.from({ length: 20 }, (_, i) => rt.send(a, { text: `z${i}` })));
    expect(seen).toMatchObject({ delivered: 21, gaveUp: 1, retry: 2, duplicate: 1 });

    const text = await registry.metrics();
    expect(sample(text, `threadvisor_sends_total{instance="${a}",outcome="ok"}`)).toBe(seen.delivered);
    expect(sample(text, `threadvisor_sends_total{instance="${a}",outcome="failed"}`)).toBe(seen.gaveUp);
    expect(sample(text, `threadvisor_sends_total{instance="${a}",outcome="duplicate"}`)).toBe(seen.duplicate);
    expect(sample(text, `threadvisor_send_retries_total{instance="${a}"}`)).toBe(seen.retry);
    // One observation per delivered send, its totalMs in seconds.
    expect(sample(text, 'threadvisor_send_duration_seconds_count')).toBe(seen.delivered);
    expect(sample(text, 'threadvisor_send_duration_seconds_sum')).toBeCloseTo(seen.totalMs / 1000, 6);
  });

  it('validates its options, naming the field', async () => {
    const rt = await Runtime.start({ logger: silent });
    cleanups.push(() => rt.stop());
    const registry = new Registry();
    const bad: Array<[unknown, string]> = [
      [{}, 'registry'],
      [{ registry, perInstance: 'yes' }, 'perInstance'],
      [{ registry, manager: {} }, 'manager'],
      [{ registry, sendDurationBuckets: [1, 0.5] }, 'sendDurationBuckets'],
      [{ registry, bogus: 1 }, 'bogus'],
    ];
    for (const [opts, field] of bad) {
      let err: unknown;
      try {
        collectMetrics(rt, opts as never);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidConfigError);
      expect((err as InvalidConfigError).issues.map((i) => i.path)).toContain(field);
    }
    expect(registry.getMetricsAsArray()).toEqual([]);
  });

  it('counts a manager: resident gauge, hibernations and thaws', async () => {
    class Counter {
      #n = 0;
      constructor(readonly key: string) {}
      init(state?: { n: number }) {
        this.#n = state?.n ?? 0;
      }
      handle() {
        return ++this.#n;
      }
      snapshot() {
        return { n: this.#n };
      }
    }
    const rt = await Runtime.start({ logger: silent });
    cleanups.push(() => rt.stop());
    const manager = await InstanceManager.start({ name: 'counters', agent: Counter, maxResident: 1, logger: silent });
    cleanups.push(() => manager.close());
    const registry = new Registry();
    const metrics = collectMetrics(rt, { registry, manager });
    cleanups.push(() => metrics.stop());
    await (await manager.get('k1')).call(undefined as never);
    await manager.get('k2'); // evicts k1 (hibernated)
    await waitFor(() => manager.stats().resident === 1 && manager.stats().hibernating === 0);
    await manager.get('k1'); // thawed
    await waitFor(() => manager.stats().hibernating === 0);
    const text = await registry.metrics();
    expect(sample(text, 'threadvisor_manager_resident_agents{manager="counters"}')).toBe(1);
    expect(sample(text, 'threadvisor_manager_hibernations_total{manager="counters"}')).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'threadvisor_manager_thaws_total{manager="counters"}')).toBe(1);
    expect(text).toContain('# TYPE threadvisor_manager_thaw_failures_total counter');
    metrics.stop();
    expect(manager.listenerCount('agent:thawed')).toBe(0);
  });
});
