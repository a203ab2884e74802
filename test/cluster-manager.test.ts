/**
 * InstanceManager in cluster mode against a real redis-server (two managers in this process as
 * two nodes): one activation per key; `get` on the other node gives a handle whose calls run on
 * the owner (through Redis, in order, with a timeout), `attach` there rejects with not_owner
 * naming the owner; once the agent is saved and gone (stop / close) the other node thaws it from the shared
 * RedisStorage; a node that stops renewing loses its keys after leaseMs.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotOwnerError } from '../src/errors.js';
import { InstanceManager } from '../src/manager/manager.js';
import { RedisStorage } from '../src/redis.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

const silent = pino({ level: 'silent' });
let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});

class Counter {
  n = 0;
  constructor(readonly key: string) {}
  init(state?: { n: number }): void {
    this.n = state?.n ?? 0;
  }
  async handle(add: number | { slow: number } | { fail: true }): Promise<number> {
    if (typeof add === 'object' && 'slow' in add) {
      await new Promise((r) => setTimeout(r, add.slow));
      return this.n;
    }
    if (typeof add === 'object') throw new Error('asked to fail');
    this.n += add;
    return this.n;
  }
  snapshot(): { n: number } {
    return { n: this.n };
  }
}

/** Retries `fn` while it rejects with not_owner (a claim being released), at most 5 s. */
async function eventually<T>(fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof NotOwnerError) || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

const start = (nodeId: string, leaseMs = 1000) =>
  InstanceManager.start({ name: 'counters', agent: Counter, storage: new RedisStorage({ redis: redis.url, namespace: 'cm' }), cluster: { redis: redis.url, nodeId, leaseMs, namespace: 'cm' } });

describe('InstanceManager in cluster mode', { timeout: 30_000 }, () => {
  it('one activation per key across nodes; the other node takes the key once it is saved and gone', async () => {
    const a = await start('a');
    const b = await start('b');
    expect(a.nodeId).toBe('a');
    expect(await (await a.get('k1')).call(5)).toBe(5);
    const err = await b.attach('k1').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NotOwnerError);
    expect((err as NotOwnerError).owner).toBe('a');
    // b runs its own keys meanwhile.
    expect(await (await b.get('k2')).call(1)).toBe(1);
    await expect(a.attach('k2')).rejects.toMatchObject({ code: 'not_owner', owner: 'b' });
    // a saves and stops k1 (its claim goes right after): b thaws it with its state.
    await a.stop('k1');
    expect(await (await eventually(() => b.get('k1'))).call(1)).toBe(6);
    await a.close();
    await b.close();
  });

  it('get on a node that does not own the key: its calls run on the owner, in order, with a timeout and typed errors', async () => {
    const a = await InstanceManager.start({ name: 'counters', agent: Counter, logger: silent, cluster: { redis: redis.url, nodeId: 'ra', leaseMs: 1000, namespace: 'rc' } });
    const b = await InstanceManager.start({ name: 'counters', agent: Counter, logger: silent, remoteCallTimeoutMs: 300, cluster: { redis: redis.url, nodeId: 'rb', leaseMs: 1000, namespace: 'rc' } });
    const here = await a.get('r1');
    expect(await here.call(1)).toBe(1);
    const there = await b.get('r1');
    expect(there.key).toBe('r1');
    expect(there.status).toBe('running');
    // 50 calls from b without waiting: one at a time, in order, on a's agent.
    const answers = await Promise.all(Array.from({ length: 50 }, () => there.call(1)));
    expect(answers).toEqual(Array.from({ length: 50 }, (_, i) => i + 2));
    expect(await here.call(0)).toBe(51);
    expect(b.stats().resident).toBe(0);
    // Errors keep their code; a message that is not JSON is refused before it travels.
    await expect(there.call({ fail: true } as never)).rejects.toMatchObject({ code: 'agent_crashed' });
    await expect(there.call(new Map() as never)).rejects.toMatchObject({ code: 'invalid_message' });
    // Longer than remoteCallTimeoutMs: a typed timeout.
    await expect(there.call({ slow: 1500 } as never)).rejects.toMatchObject({ code: 'timeout' });
    // The key moves to b (a stops it): the same handle now runs it here.
    await new Promise((r) => setTimeout(r, 1600));
    await a.stop('r1');
    expect(await eventually(() => there.call(1))).toBeGreaterThanOrEqual(1);
    expect(b.stats().resident).toBe(1);
    await a.close();
    await b.close();
  });

  it('close() saves every agent and gives its keys up at once', async () => {
    const a = await start('a2', 600);
    const b = await start('b2', 600);
    await (await a.get('x')).call(1);
    await a.close(); // saved and released at once
    expect(await (await b.get('x')).call(1)).toBe(2);
    await b.close();
  });
});
