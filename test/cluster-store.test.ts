/**
 * The cluster's Redis state with a real redis-server: one owner per declared instance, fencing
 * tokens that only grow, a fair share per live node, compare-and-delete, expiry by Redis's clock,
 * one round trip per tick whatever the number of instances.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LeaseStore } from '../src/cluster/store.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});

let ns = 0;
async function stores(n: number, leaseMs = 2000): Promise<LeaseStore[]> {
  const namespace = `t${++ns}`;
  const out: LeaseStore[] = [];
  for (let i = 0; i < n; i++) {
    const s = new LeaseStore(redis.url, { namespace, nodeId: `n${i}`, leaseMs });
    await s.connect();
    out.push(s);
  }
  return out;
}

describe('LeaseStore', { timeout: 30_000 }, () => {
  it('gives each declared instance one owner, up to a fair share per live node', async () => {
    const [a, b] = (await stores(2)) as [LeaseStore, LeaseStore];
    for (let i = 0; i < 10; i++) await a.declare(`i${i}`, JSON.stringify({ id: `i${i}` }));
    // a alone: it takes everything (share = 10 / 1).
    const first = await a.tick(0);
    expect(first.acquired).toHaveLength(10);
    expect(first.nodes).toEqual(['n0']);
    // b joins: share 5 each, but nothing is free until a gives some up.
    const joined = await b.tick(3);
    expect(joined.acquired).toHaveLength(0);
    expect(joined.nodes.sort()).toEqual(['n0', 'n1']);
    const again = await a.tick(0);
    expect(again.owned).toHaveLength(10);
    for (const id of again.owned.slice(5)) expect(await a.release(id)).toBe(true);
    const share = await b.tick(3);
    expect(share.acquired).toHaveLength(5);
    const owners = await Promise.all(Array.from({ length: 10 }, (_, i) => a.owner(`i${i}`)));
    expect(owners.filter((o) => o === 'n0')).toHaveLength(5);
    expect(owners.filter((o) => o === 'n1')).toHaveLength(5);
    // b's lease cannot be released by a (compare-and-delete).
    const bs = share.acquired[0]?.id as string;
    expect(await a.release(bs)).toBe(false);
    expect(await a.owner(bs)).toBe('n1');
    await Promise.all([a.close(), b.close()]);
  });

  it('fencing tokens only grow; an undeclared instance is lost at the next tick; leave releases everything', async () => {
    const [a, b] = (await stores(2)) as [LeaseStore, LeaseStore];
    await a.declare('x', '{}');
    const t1 = (await a.tick(0)).acquired[0]?.token as number;
    expect(await a.release('x')).toBe(true);
    const t2 = (await b.tick(0)).acquired[0]?.token as number;
    expect(t2).toBeGreaterThan(t1);
    expect(await b.leave()).toBe(1);
    const t3 = (await a.tick(0)).acquired[0]?.token as number;
    expect(t3).toBeGreaterThan(t2);
    await a.undeclare('x');
    const after = await a.tick(0);
    expect(after.owned).toEqual([]);
    expect(await a.owner('x')).toBeNull();
    await Promise.all([a.close(), b.close()]);
  });

  it('a lease not renewed expires by Redis time and passes to another node', async () => {
    const [a, b] = (await stores(2, 300)) as [LeaseStore, LeaseStore];
    await a.declare('y', '{}');
    expect((await a.tick(0)).acquired).toHaveLength(1);
    expect((await b.tick(0)).acquired).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 450)); // a stops renewing
    const taken = await b.tick(0);
    expect(taken.acquired.map((x) => x.id)).toEqual(['y']);
    expect(taken.nodes).toEqual(['n1']); // a's membership expired too
    expect((await a.tick(0)).owned).toEqual([]);
    await Promise.all([a.close(), b.close()]);
  });

  it('an unreachable Redis fails connect clearly', async () => {
    const s = new LeaseStore('redis://127.0.0.1:1', { namespace: 'x', nodeId: 'n', leaseMs: 1000 });
    await expect(s.connect()).rejects.toThrow(/ECONNREFUSED|connect/i);
    await s.close();
  });
});
