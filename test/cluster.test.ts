/**
 * Cluster mode with a real redis-server and real node processes (forked): every declared instance
 * runs on exactly one node; a joining node gets its share; a node killed with SIGKILL is replaced
 * within leaseMs + spawn time + 1 s; credentials never reach Redis; sends on a node that does not
 * run the instance are refused with not_owner; stopInstance stops it everywhere; bad options and
 * an unreachable Redis fail clearly.
 */
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { InvalidConfigError, UnavailableError } from '../src/errors.js';
import { Runtime } from '../src/runtime/runtime.js';
import { NodeProc } from './helpers/cluster-node.js';
import { waitFor } from './helpers/fixtures.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

const LEASE_MS = 1000;

let redis: TestRedis;
const nodes: NodeProc[] = [];
async function node(id: string, durability?: 'redis' | 'memory'): Promise<NodeProc> {
  const n = new NodeProc(id, redis.url, LEASE_MS, durability);
  nodes.push(n);
  await n.ready;
  return n;
}

beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  const gone = nodes.splice(0).map((n) => {
    n.kill('SIGKILL');
    return n.exited;
  });
  await Promise.all(gone);
  await redis.flush();
});
afterAll(async () => {
  await redis.stop();
});

const spec = (id: string) => ({ id, name: id, channelType: 'loopback', channel: 'loopback', settings: { latencyMs: 0 } });

/** Fails when two nodes ran one instance at the same time (from their connected / stopped reports; a killed node's copy ends when it was killed). */
function overlaps(procs: NodeProc[], killedAt: Map<string, number>): string[] {
  const spans = new Map<string, { node: string; from: number; to: number }[]>();
  for (const p of procs) {
    const open = new Map<string, number>();
    for (const e of p.events) {
      if (!e.instanceId) continue;
      if (e.event === 'instance:connected') open.set(e.instanceId, e.at);
      if (e.event === 'instance:stopped' && open.has(e.instanceId)) {
        spans.set(e.instanceId, [...(spans.get(e.instanceId) ?? []), { node: p.id, from: open.get(e.instanceId) as number, to: e.at }]);
        open.delete(e.instanceId);
      }
    }
    for (const [id, from] of open) spans.set(id, [...(spans.get(id) ?? []), { node: p.id, from, to: killedAt.get(p.id) ?? Infinity }]);
  }
  const bad: string[] = [];
  for (const [id, list] of spans) {
    for (const a of list) for (const b of list) if (a !== b && a.node !== b.node && a.from < b.to && b.from < a.to) bad.push(`${id}: ${a.node} and ${b.node}`);
  }
  return bad;
}

describe('cluster', { timeout: 60_000 }, () => {
  it('runs every declared instance on exactly one node, shares them fairly, and keeps credentials out of Redis', async () => {
    const a = await node('a');
    const declared = await a.call<{ id: string; owner: string | null }>('declare', { spec: spec('c0') });
    expect(declared).toEqual({ id: 'c0', owner: 'a' });
    for (let i = 1; i < 6; i++) await a.call('declare', { spec: spec(`c${i}`) });
    await waitFor(() => a.running().size === 6, 15_000);
    const b = await node('b');
    // b joins: a hands off the excess (3), b takes it.
    await waitFor(() => a.running().size === 3 && b.running().size === 3, 15_000);
    expect(new Set([...a.running(), ...b.running()]).size).toBe(6);
    expect(a.events.filter((e) => e.event === 'cluster:released')).toHaveLength(3);
    expect(a.events.some((e) => e.event === 'cluster:node_up' && e.nodeId === 'a')).toBe(true);
    // Declaring again is idempotent.
    await b.call('declare', { spec: spec('c0') });
    expect(a.running().size + b.running().size).toBe(6);
    // Sends (durable, the default): from the owner and from any other node, delivered by the owner.
    const onA = [...a.running()][0] as string;
    expect(await a.call('send', { id: onA, message: { text: 'hi' } })).toMatchObject({ externalId: expect.any(String) });
    expect(await b.call('send', { id: onA, message: { text: 'hi' } })).toMatchObject({ externalId: expect.any(String) });
    // The fencing token is in health and grows with each acquisition.
    const h = await a.call<{ fencingToken: number }>('health', { id: onA });
    expect(h.fencingToken).toBeGreaterThan(0);
    // No secret anywhere in Redis.
    const dump = JSON.stringify(await redis.dump());
    expect(dump).not.toContain('sekret');
    expect(dump).toContain('c0');
    // stopInstance on b stops c-whatever on a too, and the declaration is gone.
    await b.call('undeclare', { id: onA });
    await waitFor(() => !a.running().has(onA), 10_000);
    expect(overlaps([a, b], new Map())).toEqual([]);
  });

  it('a node killed with SIGKILL is replaced within leaseMs + spawn time + 1 s, with no overlap', async () => {
    const a = await node('a');
    const b = await node('b');
    for (let i = 0; i < 8; i++) await a.call('declare', { spec: spec(`k${i}`) });
    await waitFor(() => a.running().size + b.running().size === 8 && a.running().size > 0 && b.running().size > 0, 15_000);
    const lost = [...a.running()];
    const t0 = Date.now();
    a.kill('SIGKILL');
    await a.exited;
    await waitFor(() => lost.every((id) => b.running().has(id)), 15_000);
    const took = Date.now() - t0;
    expect(took).toBeLessThan(LEASE_MS + 1000 + 2000); // spawn time of a few instances is far below 2 s
    expect(overlaps([a, b], new Map([['a', t0]]))).toEqual([]);
    const tokens = b.events.filter((e) => e.event === 'cluster:acquired' && lost.includes(e.instanceId as string)).map((e) => e.fencingToken as number);
    expect(tokens.every((t) => t >= 2)).toBe(true); // a held them first
  });

  it('a node paused with SIGSTOP past its lease does not act when resumed: its copies stop, the other node keeps them', async () => {
    // Sends kept in memory: a send through a is refused or fails, never delivered by a.
    const a = await node('a', 'memory');
    const b = await node('b', 'memory');
    for (let i = 0; i < 4; i++) await a.call('declare', { spec: spec(`p${i}`) });
    await waitFor(() => a.running().size === 2 && b.running().size === 2, 15_000);
    const paused = [...a.running()];
    a.kill('SIGSTOP');
    await waitFor(() => paused.every((id) => b.running().has(id)), 15_000);
    a.kill('SIGCONT');
    // At once after resuming, a send through a to one of its former instances is never delivered by a.
    const res = await a.call('send', { id: paused[0], message: { text: 'late' } }).then(
      () => 'delivered',
      (e: { code?: string }) => e.code,
    );
    expect(res).not.toBe('delivered');
    await waitFor(() => a.running().size === 0, 15_000);
    expect(a.events.filter((e) => e.event === 'cluster:lost').length).toBeGreaterThanOrEqual(2);
    expect(b.running().size).toBe(4);
  });

  it('stop() releases every lease at once: the other node takes over without waiting for the lease', async () => {
    const a = await node('a');
    const b = await node('b');
    for (let i = 0; i < 4; i++) await a.call('declare', { spec: spec(`s${i}`) });
    await waitFor(() => a.running().size === 2 && b.running().size === 2, 15_000);
    const mine = [...a.running()];
    await a.call('stop');
    await a.exited;
    const t0 = Date.now();
    await waitFor(() => mine.every((id) => b.running().has(id)), 15_000);
    expect(Date.now() - t0).toBeLessThan(LEASE_MS);
    expect(overlaps([a, b], new Map())).toEqual([]);
  });

  it('bad cluster options are invalid_config; an unreachable Redis is unavailable', async () => {
    const silent = pino({ level: 'silent' });
    for (const cluster of [{ redis: redis.url, leaseMs: 10 }, { redis: redis.url, nodeId: 'a b' }, { redis: 'http://x' }, { redis: redis.url, safetyMs: 900, leaseMs: 1000 }, { redis: redis.url, bogus: 1 }]) {
      await expect(Runtime.start({ logger: silent, cluster: cluster as never })).rejects.toBeInstanceOf(InvalidConfigError);
    }
    const err = await Runtime.start({ logger: silent, cluster: { redis: 'redis://user:pw-secret@127.0.0.1:1' } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toContain('cannot be reached');
    expect((err as Error).message).not.toContain('pw-secret');
    // In cluster mode a declaration has an id and no credentials.
    const rt = await Runtime.start({ logger: silent, cluster: { redis: redis.url, leaseMs: LEASE_MS, namespace: 'opts' } });
    await expect(rt.startInstance({ name: 'x', channelType: 'loopback', channel: 'loopback' })).rejects.toMatchObject({ code: 'invalid_config', message: expect.stringContaining('id') });
    await expect(rt.startInstance({ id: 'x', name: 'x', channelType: 'loopback', channel: 'loopback', credentials: { token: 't' } })).rejects.toMatchObject({
      code: 'invalid_config',
      message: expect.stringContaining('credentials'),
    });
    await rt.stop();
  });
});
