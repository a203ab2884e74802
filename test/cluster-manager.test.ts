/**
 * InstanceManager in cluster mode against a real redis-server (two managers in this process as
 * two nodes): one activation per key; `get` on the other node rejects with not_owner naming the
 * owner; once the agent is saved and gone (stop / close) the other node thaws it from the shared
 * RedisStorage; a node that stops renewing loses its keys after leaseMs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotOwnerError } from '../src/errors.js';
import { InstanceManager } from '../src/manager/manager.js';
import { RedisStorage } from '../src/redis.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

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
  handle(add: number): number {
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
    const err = await b.get('k1').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NotOwnerError);
    expect((err as NotOwnerError).owner).toBe('a');
    // b runs its own keys meanwhile.
    expect(await (await b.get('k2')).call(1)).toBe(1);
    await expect(a.get('k2')).rejects.toMatchObject({ code: 'not_owner', owner: 'b' });
    // a saves and stops k1 (its claim goes right after): b thaws it with its state.
    await a.stop('k1');
    expect(await (await eventually(() => b.get('k1'))).call(1)).toBe(6);
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
