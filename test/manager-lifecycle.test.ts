/**
 * InstanceManager lifecycle: attach/detach, idle timeout → hibernate → thaw, passivation while
 * callers wait, failed saves, maxResident eviction, close and supervisor shutdown. Timers are
 * faked (setTimeout and Date only; immediates stay real so `flush` works).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { InstanceManager } from '../src/manager/manager.js';
import type { AgentEventName } from '../src/events.js';
import { MemoryStorage } from '../src/manager/storage.js';
import type { InstanceManagerOptions } from '../src/manager/types.js';
import { Supervisor } from '../src/supervisor/supervisor.js';
import { FlakyStorage, flush, gate, makeCounter, silent } from './manager-fixtures.js';

vi.setConfig({ testTimeout: 15_000, hookTimeout: 15_000 });

const managers: InstanceManager[] = [];
async function start<C extends InstanceManagerOptions['agent']>(opts: InstanceManagerOptions<C>): Promise<InstanceManager<C>> {
  const m = await InstanceManager.start({ logger: silent, ...opts });
  managers.push(m as unknown as InstanceManager);
  return m;
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
});
afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(managers.splice(0).map((m) => m.close({ discardUnsaved: true })));
});

/** Advances fake time and lets the resulting saves settle. */
async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
  await flush();
}

function recorder(m: InstanceManager, events: AgentEventName[]): string[] {
  const log: string[] = [];
  for (const ev of events) m.on(`agent:${ev}`, (e: { key: string; reason?: unknown }) => log.push(`${ev}:${e.key}${e.reason ? `:${e.reason}` : ''}`));
  return log;
}

describe('attach and the idle timeout', { timeout: 15_000 }, () => {
  it('[6.9] attach prevents the idle timeout; the last detach starts it', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 200 });
    const log = recorder(m, ['idle', 'hibernated', 'stopped']);
    const lease = await m.attach('k');
    const lease2 = await m.attach('k');
    expect(lease.ref).toBe(lease2.ref);
    await advance(300);
    expect(lease.ref.status).toBe('running');
    lease.detach();
    lease.detach(); // harmless
    await advance(300);
    expect(lease2.ref.status).toBe('running'); // still one lease
    lease2.detach();
    expect(m.stats().attached).toBe(0);
    await advance(199);
    expect(log).toEqual([]);
    await advance(1);
    expect(log).toEqual(['idle:k', 'hibernated:k:idle', 'stopped:k:idle']);
    expect(lease2.detached).toBe(true);
  });

  it('a new unattached agent starts its countdown at once; get counts as activity', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 1000 });
    const log = recorder(m, ['stopped']);
    await m.get('k');
    await advance(600);
    await m.get('k');
    await advance(600);
    expect(log).toEqual([]);
    await advance(400);
    expect(log).toEqual(['stopped:k:idle']);
  });

  it('[6.10] aborting the signal releases the lease; an aborted signal rejects without starting', async () => {
    const { Counter, world } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 100 });
    const log = recorder(m, ['stopped']);
    const ac = new AbortController();
    const lease = await m.attach('k', { signal: ac.signal });
    await advance(500);
    expect(log).toEqual([]);
    ac.abort();
    expect(lease.detached).toBe(true);
    await advance(100);
    expect(log).toEqual(['stopped:k:idle']);

    const dead = AbortSignal.abort(new Error('gone'));
    await expect(m.attach('z', { signal: dead })).rejects.toThrow('gone');
    expect(world.inits.filter((i) => i.key === 'z')).toHaveLength(0);
  });

  it('a signal aborted while the agent starts rejects and leaves no lease', async () => {
    const { Counter } = makeCounter();
    const storage = new FlakyStorage();
    const g = gate();
    storage.getGate = g.promise;
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 100, storage });
    const ac = new AbortController();
    const p = m.attach('k', { signal: ac.signal });
    await flush();
    ac.abort(new Error('caller left'));
    g.open();
    await expect(p).rejects.toThrow('caller left');
    expect(m.stats()).toMatchObject({ count: 1, attached: 0 });
    await advance(100);
    expect(m.stats().count).toBe(0);
  });

  it('`using` releases the lease at the end of the block', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 100 });
    {
      using lease = await m.attach('k');
      await lease.ref.call({ type: 'inc' });
      expect(m.stats().attached).toBe(1);
    }
    expect(m.stats().attached).toBe(0);
    await advance(100);
    expect(m.stats().count).toBe(0);
  });

  it('[6.11] touch (and each call, with touchOnCall) keeps it alive; then it idles out', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 200 });
    const ref = await m.get('k');
    for (let i = 0; i < 3; i++) {
      await advance(100);
      ref.touch();
    }
    for (let i = 0; i < 3; i++) {
      await advance(150);
      await ref.call({ type: 'inc' });
    }
    expect(ref.status).toBe('running');
    await advance(200);
    expect(ref.status).toBe('stopped');
    ref.touch(); // no effect once stopped

    const n = await start({ name: 'n', agent: Counter, idleTimeoutMs: 200, touchOnCall: false });
    const r2 = await n.get('k');
    await advance(150);
    await r2.call({ type: 'inc' });
    await advance(50);
    expect(r2.status).toBe('stopped');
  });

  it('[6.13] idle → hibernate → get thaws the identical state into a new activation', async () => {
    const storage = new MemoryStorage();
    const { Counter, world } = makeCounter();
    const m = await start({ name: 'sessions', agent: Counter, idleTimeoutMs: 50, storage, partitions: 3 });
    const ref = await m.get('u', { initialState: { count: 99 } });
    const nested = { a: [1, 'two', { three: null, four: true }], 'ключ': 'é', n: -0.5 };
    await ref.call({ type: 'set', key: 'nested', value: nested });
    await Promise.all(['v', 'w', 'x'].map((k) => m.get(k)));
    await advance(50);
    expect(m.stats().count).toBe(0);
    const cp = await storage.get({ manager: 'sessions', key: 'u' });
    expect(cp?.state).toEqual({ count: 99, nested });
    const again = await m.get('u');
    expect(again).not.toBe(ref);
    expect(again.incarnation).toBeGreaterThan(ref.incarnation);
    expect(await again.call({ type: 'get' })).toBe(99);
    const thawed = world.inits.at(-1);
    expect(thawed?.state).toEqual({ count: 99, nested });
    expect(thawed?.info).toMatchObject({ thawed: true, revision: 1 });
  });
});

describe('passivation while callers wait', { timeout: 15_000 }, () => {
  it('get during hibernation waits and returns the fresh agent, never the dying one', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 100, storage });
    const old = await m.get('k', { initialState: { count: 5 } });
    const g = gate();
    storage.putGate = g.promise;
    await advance(100);
    expect(old.status).toBe('hibernating');
    expect(m.stats()).toMatchObject({ count: 1, hibernating: 1, resident: 0 });
    const waiting = m.get('k');
    const looking = m.lookup('k');
    let settled = false;
    void waiting.then(() => (settled = true));
    await flush();
    expect(settled).toBe(false);
    storage.putGate = undefined;
    g.open();
    const fresh = await waiting;
    expect(fresh).not.toBe(old);
    expect(old.status).toBe('stopped');
    expect(await fresh.call({ type: 'get' })).toBe(5);
    expect(await looking).toBe(fresh); // the concurrent get started it; lookup only waited

    // with nobody starting it again, a lookup that waited on the hibernation finds nothing
    const g2 = gate();
    storage.putGate = g2.promise;
    await advance(100);
    expect(fresh.status).toBe('hibernating');
    const looking2 = m.lookup('k');
    storage.putGate = undefined;
    g2.open();
    expect(await looking2).toBeUndefined();
    expect(m.stats().count).toBe(0);
  });

  it('calls on a passivated ref follow the key to its next activation, in order', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 100, storage });
    const ref = await m.get('k');
    await ref.call({ type: 'inc' });
    const g = gate();
    storage.putGate = g.promise;
    await advance(100);
    expect(ref.status).toBe('hibernating');
    const during = [ref.call({ type: 'inc' }), ref.call({ type: 'inc' })]; // queued behind the save
    storage.putGate = undefined;
    g.open();
    expect(await Promise.all(during)).toEqual([2, 3]);
    expect(ref.status).toBe('stopped');
    const after = await Promise.all([ref.call({ type: 'inc' }), ref.call({ type: 'get' })]);
    expect(after).toEqual([4, 4]);
    expect(m.stats().count).toBe(1);
  });

  it('stop during an idle hibernation resolves once it is gone', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 100, storage });
    await m.get('k');
    const g = gate();
    storage.putGate = g.promise;
    await advance(100);
    const stopping = m.stop('k');
    storage.putGate = undefined;
    g.open();
    await stopping;
    expect(m.stats().count).toBe(0);
    await expect(m.stop('k')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('stop ignores leases; the lease reads detached afterwards', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 100 });
    const lease = await m.attach('k');
    await m.stop('k');
    expect(lease.detached).toBe(true);
    lease.detach();
    await expect(lease.ref.call({ type: 'get' })).rejects.toMatchObject({ code: 'stopped' });
  });
});

describe('failed saves never lose state', { timeout: 15_000 }, () => {
  it('a failed idle save keeps the agent resident, emits hibernate_failed and retries with backoff', async () => {
    const storage = new FlakyStorage();
    storage.failPuts = 2;
    const { Counter } = makeCounter();
    const m = await start({
      name: 's',
      agent: Counter,
      idleTimeoutMs: 100,
      storage,
      hibernateRetry: { initialDelayMs: 1000, maxDelayMs: 1500, jitter: 0 },
    });
    const failures: Array<{ attempt: number; reason: string }> = [];
    m.on('agent:hibernate_failed', (e: { attempt: number; reason: string }) => failures.push(e));
    const ref = await m.get('k');
    await ref.call({ type: 'inc', by: 7 });
    await advance(100);
    expect(failures).toMatchObject([{ attempt: 0, reason: 'idle' }]);
    expect(ref.status).toBe('running');
    expect(await m.lookup('k')).toBe(ref);
    expect(await ref.call({ type: 'get' })).toBe(7); // still serving, state intact
    // the call above was activity: the retry was cancelled and the idle countdown re-armed
    await advance(100);
    expect(failures).toHaveLength(2);
    expect(failures[1]).toMatchObject({ attempt: 1 });
    // second failure: attempt 1 → 1000 × 2 = 2000, capped at maxDelayMs 1500
    await advance(1499);
    expect(ref.status).toBe('running');
    await advance(1);
    expect(ref.status).toBe('stopped');
    expect((await storage.get({ manager: 's', key: 'k' }))?.state).toEqual({ count: 7 });
  });

  it('the retry delay grows and stays bounded', async () => {
    const storage = new FlakyStorage();
    storage.failPuts = Infinity;
    const { Counter } = makeCounter();
    const m = await start({
      name: 's',
      agent: Counter,
      idleTimeoutMs: 10,
      storage,
      hibernateRetry: { initialDelayMs: 100, maxDelayMs: 400, jitter: 0 },
    });
    const at: number[] = [];
    m.on('agent:hibernate_failed', () => at.push(Date.now()));
    await m.get('k');
    await advance(10);
    for (let i = 0; i < 5; i++) await advance(400);
    const gaps = at.slice(1).map((t, i) => t - (at[i] as number));
    expect(gaps.slice(0, 3)).toEqual([100, 200, 400]);
    expect(Math.max(...gaps)).toBe(400);
    expect(m.stats().resident).toBe(1);
    storage.failPuts = 0;
    await advance(400);
    expect(m.stats().count).toBe(0);
  });

  it('an attach during the retry wait cancels the retry', async () => {
    const storage = new FlakyStorage();
    storage.failPuts = 1;
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 10, storage, hibernateRetry: { initialDelayMs: 50, maxDelayMs: 50, jitter: 0 } });
    await m.get('k');
    await advance(10);
    const lease = await m.attach('k');
    await advance(500);
    expect(lease.ref.status).toBe('running');
    lease.detach();
    await advance(10);
    expect(lease.ref.status).toBe('stopped');
  });

  it('a revision conflict (another writer) fails the save instead of overwriting', async () => {
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    const ref = await m.get('k');
    await ref.call({ type: 'inc' });
    // someone else writes this key behind the manager's back
    await storage.put({ manager: 's', key: 'k' }, { version: 1, stateVersion: 1, agent: 'other', savedAt: 0, state: { count: 1000 } });
    await expect(m.stop('k')).rejects.toMatchObject({ code: 'hibernate_failed', message: expect.stringMatching(/revision_conflict/) });
    expect(ref.status).toBe('running');
    expect((await storage.get({ manager: 's', key: 'k' }))?.state).toEqual({ count: 1000 });
    await m.stop('k', { discardUnsaved: true });
    expect(ref.status).toBe('stopped');
  });
});

describe('maxResident', { timeout: 15_000 }, () => {
  it('hibernates the least recently used unattached agent past the cap', async () => {
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, maxResident: 2, storage, partitions: 2 });
    const log = recorder(m, ['hibernated']);
    const a = await m.get('a');
    await advance(1);
    const b = await m.get('b');
    await advance(1);
    await a.call({ type: 'inc' }); // a is now more recent than b
    await advance(1);
    await m.get('c');
    await flush();
    expect(log).toEqual(['hibernated:b:evicted']);
    expect([...m.stats().keys].sort()).toEqual(['a', 'c']);
    expect(b.status).toBe('stopped');
    // attached agents are never evicted
    const lease = await m.attach('a');
    await advance(1);
    await m.get('d');
    await flush();
    expect(log).toEqual(['hibernated:b:evicted', 'hibernated:c:evicted']);
    // a call on an evicted ref wakes it (and evicts the next LRU: d)
    expect(await b.call({ type: 'inc' })).toBe(1);
    await flush();
    expect([...m.stats().keys].sort()).toEqual(['a', 'b']);
    lease.detach();
  });

  it('is a soft cap when everything else is attached', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, maxResident: 1 });
    const l1 = await m.attach('a');
    const l2 = await m.attach('b');
    expect(m.stats().resident).toBe(2);
    l1.detach(); // now a can go
    await flush();
    expect(m.stats().keys).toEqual(['b']);
    l2.detach();
    await flush();
    expect(m.stats().keys).toEqual(['b']);
  });
});

describe('close and shutdown', { timeout: 15_000 }, () => {
  it('close() hibernates every resident agent (attached or not), after their queued calls', async () => {
    const storage = new MemoryStorage();
    const { Counter, world } = makeCounter();
    const m = await start({ name: 'sessions', agent: Counter, storage, partitions: 4 });
    const keys = Array.from({ length: 20 }, (_, i) => `user-${i}`);
    for (const [i, k] of keys.entries()) await (await m.get(k)).call({ type: 'inc', by: i });
    const lease = await m.attach('user-3');
    const last = (await m.get('user-0')).call({ type: 'inc', by: 100 }); // queued before close
    await m.close();
    expect(await last).toBe(100);
    expect(lease.detached).toBe(true);
    expect(world.terminates.every((t) => t.reason === 'close')).toBe(true);
    expect(storage.size).toBe(20);
    const m2 = await start({ name: 'sessions', agent: Counter, storage });
    for (const [i, k] of keys.entries()) {
      expect(await (await m2.get(k)).call({ type: 'get' })).toBe(i === 0 ? 100 : i);
    }
  });

  it('close() with a failing save rejects, keeps that agent resident, and a second close() retries', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    await (await m.get('ok')).call({ type: 'inc' });
    await (await m.get('bad')).call({ type: 'inc', by: 9 });
    storage.failPuts = 1;
    const err = await m.close().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'hibernate_failed', details: { keys: [expect.any(String)] } });
    expect(m.state).toBe('closing');
    expect(m.stats().count).toBe(1);
    await expect(m.get('x')).rejects.toMatchObject({ code: 'stopped' });
    await m.close();
    expect(m.state).toBe('closed');
    expect((await storage.get({ manager: 's', key: 'bad' }))?.state).toEqual({ count: 9 });
    expect((await storage.get({ manager: 's', key: 'ok' }))?.state).toEqual({ count: 1 });
  });

  it('close({ discardUnsaved: true }) stops agents whose save fails', async () => {
    const storage = new FlakyStorage();
    storage.failPuts = Infinity;
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    await m.get('k');
    const stopped: Array<{ persisted: boolean }> = [];
    m.on('agent:stopped', (e: { persisted: boolean }) => stopped.push(e));
    await m.close({ discardUnsaved: true });
    expect(stopped).toMatchObject([{ persisted: false }]);
    expect(m.state).toBe('closed');
  });

  it('[6.1] childSpec runs it under a Supervisor, whose stop hibernates every agent', async () => {
    vi.useRealTimers();
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    const spec = InstanceManager.childSpec({ name: 'sessions', agent: Counter, storage });
    expect(spec).toMatchObject({ id: 'manager:sessions', type: 'worker', restart: 'transient', shutdown: 30_000 });
    const sup = await Supervisor.start({ logger: silent, children: [spec] });
    const m = sup.child('manager:sessions') as InstanceManager<typeof Counter>;
    await (await m.get('k')).call({ type: 'inc', by: 3 });
    await sup.stop();
    expect(m.state).toBe('closed');
    expect((await storage.get({ manager: 'sessions', key: 'k' }))?.state).toEqual({ count: 3 });
  });

  it('shutdown retries failed saves within its budget', async () => {
    const storage = new FlakyStorage();
    storage.failPuts = 2;
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage, hibernateRetry: { initialDelayMs: 100, maxDelayMs: 100, jitter: 0 } });
    await (await m.get('k')).call({ type: 'inc' });
    const done = m.shutdown(10_000);
    await advance(100);
    await advance(100);
    expect(await done).toEqual({ class: 'shutdown', reason: 'shutdown' });
    expect((await storage.get({ manager: 's', key: 'k' }))?.state).toEqual({ count: 1 });
  });

  it('shutdown stops what is left when its budget expires, even with a save that never returns', async () => {
    const storage = new FlakyStorage();
    storage.putGate = new Promise(() => undefined); // storage hangs
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    await m.get('k');
    const stopped: Array<{ persisted: boolean }> = [];
    m.on('agent:stopped', (e: { persisted: boolean }) => stopped.push(e));
    const done = m.shutdown(1000);
    await advance(1000);
    expect(await done).toEqual({ class: 'shutdown', reason: 'shutdown' });
    expect(stopped).toMatchObject([{ persisted: false }]);
  });

  it("shutdown('brutal_kill') stops at once without saving; 'infinity' waits for saves", async () => {
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    await (await m.get('k')).call({ type: 'inc' });
    await m.shutdown('brutal_kill');
    expect(m.state).toBe('closed');
    expect(await storage.get({ manager: 's', key: 'k' })).toBeUndefined();

    const n = await start({ name: 'n', agent: Counter, storage });
    await (await n.get('k')).call({ type: 'inc' });
    await n.shutdown('infinity');
    expect((await storage.get({ manager: 'n', key: 'k' }))?.state).toEqual({ count: 1 });
    await n.shutdown('infinity'); // already closed
  });

  it('await using closes the manager', async () => {
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    let outer: InstanceManager | undefined;
    {
      await using m = await InstanceManager.start({ name: 'u', agent: Counter, storage, logger: silent });
      outer = m as unknown as InstanceManager;
      await (await m.get('k')).call({ type: 'inc' });
    }
    expect(outer.state).toBe('closed');
    expect(storage.size).toBe(1);
  });
});
