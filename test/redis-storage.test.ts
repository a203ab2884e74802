/**
 * RedisStorage (`threadvisor/redis`) against a real redis-server: revisions and compare-and-set,
 * fail-closed reads of a tampered checkpoint (never overwritten), bad options, and an
 * InstanceManager whose agent hibernated by one manager thaws in another.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptCheckpointError, InvalidConfigError, RevisionConflictError } from '../src/errors.js';
import { InstanceManager } from '../src/manager/manager.js';
import { CHECKPOINT_VERSION, type CheckpointData } from '../src/manager/storage.js';
import { RedisStorage } from '../src/redis.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});

const data = (n: number): CheckpointData => ({ version: CHECKPOINT_VERSION, stateVersion: 1, agent: 'Counter', savedAt: 1, state: { n } });

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

describe('RedisStorage', { timeout: 30_000 }, () => {
  it('assigns revisions and enforces expectedRevision on put and delete', async () => {
    const s = new RedisStorage({ redis: redis.url, namespace: 'rev' });
    const key = { manager: 'm', key: 'room/1' };
    expect(await s.get(key)).toBeUndefined();
    expect((await s.put(key, data(1), { expectedRevision: 0 })).revision).toBe(1);
    expect((await s.put(key, data(2))).revision).toBe(2);
    await expect(s.put(key, data(3), { expectedRevision: 1 })).rejects.toBeInstanceOf(RevisionConflictError);
    const got = await s.get(key);
    expect(got).toMatchObject({ manager: 'm', key: 'room/1', revision: 2, state: { n: 2 } });
    await expect(s.delete(key, { expectedRevision: 1 })).rejects.toMatchObject({ code: 'revision_conflict' });
    expect(await s.delete(key, { expectedRevision: 2 })).toBe(true);
    expect(await s.delete(key)).toBe(false);
    await s.close();
  });

  it('fails closed on a tampered checkpoint and never overwrites it', async () => {
    const s = new RedisStorage({ redis: redis.url, namespace: 'tamper' });
    const key = { manager: 'm', key: 'k' };
    await s.put(key, data(1));
    const raw = new Redis(redis.url);
    const [hash] = await raw.keys('{tamper}:ckpt:*');
    await raw.hset(hash as string, 'payload', '{"manager":"m","key":"k","state":{"n":999}}');
    await expect(s.get(key)).rejects.toBeInstanceOf(CorruptCheckpointError);
    await expect(s.put(key, data(2))).rejects.toMatchObject({ code: 'corrupt_checkpoint' });
    expect(await s.delete(key)).toBe(true); // a corrupt checkpoint may be removed
    raw.disconnect();
    await s.close();
  });

  it('bad options are invalid_config naming the field', () => {
    expect(() => new RedisStorage({ redis: 'http://x' })).toThrow(InvalidConfigError);
    expect(() => new RedisStorage({ redis: redis.url, namespace: 'a b' })).toThrow(/namespace/);
  });

  it('an agent hibernated by one manager thaws in another (another node), with its state', async () => {
    const client = new Redis(redis.url);
    const a = await InstanceManager.start({ name: 'counters', agent: Counter, storage: new RedisStorage({ redis: client }) });
    const ref = await a.get('c1');
    expect(await ref.call(5)).toBe(5);
    await a.close(); // saves every agent
    const b = await InstanceManager.start({ name: 'counters', agent: Counter, storage: new RedisStorage({ redis: client }) });
    expect(await (await b.get('c1')).call(1)).toBe(6);
    await b.close();
    client.disconnect();
  });
});
