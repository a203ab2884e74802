/**
 * Cluster nodes in this process against a real redis-server: a Redis outage makes a node keep
 * what it runs until its renewal deadline, then fence itself (every local copy stopped, no crash,
 * no unhandled rejection), declarations reject with `unavailable` meanwhile, and once Redis is
 * back the node takes instances again; a node that joins gets its share by graceful hand-off.
 */
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { UnavailableError } from '../src/errors.js';
import { Runtime } from '../src/runtime/runtime.js';
import type { RuntimeEvents } from '../src/events.js';
import { waitFor } from './helpers/fixtures.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

const silent = pino({ level: 'silent' });
let redis: TestRedis;
const runtimes: Runtime<'cluster'>[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (r: unknown): void => void unhandled.push(r);

beforeAll(async () => {
  redis = await startRedis();
  process.on('unhandledRejection', onUnhandled);
});
afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
  await redis.flush().catch(() => undefined);
});
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await redis.stop();
});

async function start(nodeId: string, leaseMs: number, onMessage?: (m: unknown) => void): Promise<Runtime<'cluster'>> {
  const rt = await Runtime.start({
    logger: silent,
    shutdownMs: 300,
    heartbeat: { intervalMs: 250, maxMissed: 8 },
    cluster: { redis: redis.url, nodeId, leaseMs, durability: 'memory' },
    ...(onMessage ? { onMessage } : {}),
  });
  runtimes.push(rt);
  return rt;
}

type Ev = Record<string, unknown> & { event: string };
function collect(rt: Runtime<'cluster'>, ...names: Array<keyof RuntimeEvents>): Ev[] {
  const out: Ev[] = [];
  for (const name of names) rt.on(name, (p) => out.push({ ...p, event: name }));
  return out;
}

describe('cluster in one process', { timeout: 60_000 }, () => {
  it('a node that joins gets its fair share by graceful hand-off, with events on both nodes', async () => {
    const a = await start('a', 1000);
    const ea = collect(a, 'cluster:acquired', 'cluster:released', 'cluster:node_up');
    for (let i = 0; i < 4; i++) await a.startInstance({ id: `h${i}`, name: `h${i}`, channelType: 'loopback', channel: 'loopback' });
    await waitFor(() => a.cluster?.local().length === 4 && a.listInstances().every((s) => s.status === 'connected'), 10_000);
    const b = await start('b', 1000);
    const eb = collect(b, 'cluster:acquired');
    await waitFor(() => a.cluster?.local().length === 2 && b.cluster?.local().length === 2, 10_000);
    expect(ea.filter((e) => e.event === 'cluster:released')).toHaveLength(2);
    expect(ea.some((e) => e.event === 'cluster:node_up' && e.nodeId === 'b')).toBe(true);
    expect(eb.map((e) => e.instanceId).sort()).toEqual(b.cluster?.local().sort());
    expect((await a.cluster?.nodes())?.sort()).toEqual(['a', 'b']);
    const moved = b.cluster?.local()[0] as string;
    expect(await a.cluster?.owner(moved)).toBe('b');
    await expect(a.send(moved, { text: 'x' })).rejects.toMatchObject({ code: 'not_owner', owner: 'b' });
    await waitFor(() => b.whereis(moved)?.currentStatus === 'connected', 10_000);
    expect((await b.health(moved)).fencingToken).toBe(2);
  });

  it('the next owner resumes inbound after the cursor the previous owner committed', async () => {
    const seen = { a: [] as number[], b: [] as number[] };
    const a = await start('a', 1000, (m) => seen.a.push((m as { seq: number }).seq));
    await a.startInstance({ id: 'in', name: 'in', channelType: 'loopback', channel: 'loopback', settings: { inbound: { ratePerSec: 500, batch: 10 } } });
    await waitFor(() => seen.a.length >= 50, 10_000);
    await start('b', 1000, (m) => seen.b.push((m as { seq: number }).seq));
    await a.stop(); // releases at once: b takes the instance at its next tick
    runtimes.splice(runtimes.indexOf(a), 1);
    await waitFor(() => seen.b.length > 0, 10_000);
    const lastA = Math.max(...seen.a);
    // b starts right after what a's onMessage finished (at most the batch in hand again), not from 1.
    expect(Math.min(...seen.b)).toBeGreaterThan(lastA - 10);
    expect(Math.min(...seen.b)).toBeLessThanOrEqual(lastA + 1);
  });

  it('a Redis outage: the node keeps its instances until its deadline, then fences itself; back, it runs them again', async () => {
    const a = await start('a', 900);
    const events = collect(a, 'cluster:degraded', 'cluster:lost', 'cluster:acquired', 'instance:stopped');
    for (let i = 0; i < 3; i++) await a.startInstance({ id: `o${i}`, name: `o${i}`, channelType: 'loopback', channel: 'loopback' });
    await waitFor(() => a.listInstances().length === 3 && a.listInstances().every((s) => s.status === 'connected'), 10_000);
    const t0 = Date.now();
    await redis.kill();
    await waitFor(() => events.filter((e) => e.event === 'instance:stopped').length === 3, 10_000);
    const fencedAfter = Date.now() - t0;
    expect(fencedAfter).toBeLessThan(900); // before the lease (900 ms after the last renewal) could expire
    expect(events.some((e) => e.event === 'cluster:degraded')).toBe(true);
    expect(events.filter((e) => e.event === 'cluster:lost').map((e) => e.reason)).toEqual(['fenced', 'fenced', 'fenced']);
    expect(a.countInstances()).toBe(0);
    await expect(a.startInstance({ id: 'o9', name: 'o9', channelType: 'loopback', channel: 'loopback' })).rejects.toBeInstanceOf(UnavailableError);
    // Redis back (empty: no persistence): declarations are made again and run.
    await redis.restart();
    await waitFor(() => {
      void a.startInstance({ id: 'o0', name: 'o0', channelType: 'loopback', channel: 'loopback' }).catch(() => undefined);
      return a.cluster?.local().includes('o0') === true;
    }, 20_000, 200);
    await a.whenStatus('o0', 'connected', { timeoutMs: 10_000 });
    expect(unhandled).toEqual([]);
  });
});
