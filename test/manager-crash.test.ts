/**
 * InstanceManager crash handling (restart from the last checkpoint, per-key restart intensity,
 * quarantine) and thaw failures (fail closed), including state-version migrations.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AgentCrashedError, ThawFailedError } from '../src/errors.js';
import { InstanceManager } from '../src/manager/manager.js';
import { MemoryStorage } from '../src/manager/storage.js';
import type { InstanceManagerOptions } from '../src/manager/types.js';
import { FlakyStorage, flush, gate, makeCounter, silent } from './manager-fixtures.js';

vi.setConfig({ testTimeout: 15_000, hookTimeout: 15_000 });

const managers: InstanceManager[] = [];
async function start<C extends InstanceManagerOptions['agent']>(opts: InstanceManagerOptions<C>): Promise<InstanceManager<C>> {
  const m = await InstanceManager.start({ logger: silent, ...opts });
  managers.push(m as unknown as InstanceManager);
  return m;
}
afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(managers.splice(0).map((m) => m.close({ discardUnsaved: true })));
});

describe('crashes', { timeout: 15_000 }, () => {
  it('a throwing handle rejects its call and the queued ones, then restarts from the last checkpoint', async () => {
    const { Counter, world } = makeCounter();
    const m = await start({ name: 's', agent: Counter });
    const events: string[] = [];
    for (const ev of ['crashed', 'restarted'] as const) m.on(`agent:${ev}`, (e: { key: string }) => events.push(`${ev}:${e.key}`));
    const ref = await m.get('k');
    await ref.call({ type: 'inc', by: 10 });
    await m.checkpoint('k'); // count 10 is saved
    await ref.call({ type: 'inc', by: 5 }); // 15, not saved
    const g = gate();
    const blocker = ref.call({ type: 'wait', gate: g.promise });
    const crashing = ref.call({ type: 'boom' });
    const queued = [ref.call({ type: 'inc' }), ref.call({ type: 'inc' })];
    g.open();
    await blocker;
    const err = await crashing.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentCrashedError);
    expect(err).toMatchObject({ code: 'agent_crashed', details: { reason: 'crashed', key: 'k' } });
    expect((err as Error).cause).toMatchObject({ message: 'boom in k' });
    for (const q of queued) await expect(q).rejects.toMatchObject({ code: 'agent_crashed', details: { reason: 'pending' } });
    // same ref, restarted from the checkpoint (10), not from the lost in-memory 15
    expect(await ref.call({ type: 'get' })).toBe(10);
    expect(ref.restarts).toBe(1);
    expect(ref.status).toBe('running');
    expect(events).toEqual(['crashed:k', 'restarted:k']);
    expect(world.inits.at(-1)?.info).toMatchObject({ thawed: true, revision: 1, restarts: 1 });
  });

  it('without a checkpoint it restarts from its initialState; an async rejection is a crash too', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter });
    const ref = await m.get('k', { initialState: { count: 10 } });
    await ref.call({ type: 'inc' });
    await expect(ref.call({ type: 'async-boom' })).rejects.toMatchObject({ code: 'agent_crashed' });
    expect(await ref.call({ type: 'get' })).toBe(10);
  });

  it('one bad key never disturbs the others; past its intensity it is quarantined', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, restartIntensity: { maxRestarts: 3, periodMs: 5000, quarantineMs: 10_000 } });
    const quarantined: Array<{ key: string; until: number }> = [];
    m.on('agent:quarantined', (e: { key: string; until: number }) => quarantined.push(e));
    const good = await m.get('good');
    const bad = await m.get('bad');
    for (let i = 0; i < 3; i++) {
      await expect(bad.call({ type: 'boom' })).rejects.toMatchObject({ details: { reason: 'crashed' } });
      expect(await good.call({ type: 'inc' })).toBe(i + 1);
    }
    expect(bad.status).toBe('running');
    await expect(bad.call({ type: 'boom' })).rejects.toMatchObject({ code: 'agent_crashed' });
    expect(bad.status).toBe('stopped');
    expect(quarantined).toMatchObject([{ key: 'bad' }]);
    await expect(bad.call({ type: 'get' })).rejects.toMatchObject({ code: 'agent_crashed', details: { reason: 'quarantined' } });
    await expect(m.get('bad')).rejects.toMatchObject({ code: 'agent_crashed', details: { reason: 'quarantined', until: quarantined[0]?.until } });
    await expect(m.attach('bad')).rejects.toMatchObject({ details: { reason: 'quarantined' } });
    expect(m.stats()).toMatchObject({ quarantined: 1, keys: ['good'] });
    expect(await good.call({ type: 'get' })).toBe(3);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(m.stats().quarantined).toBe(0);
    expect(await (await m.get('bad')).call({ type: 'get' })).toBe(0);
  });

  it('crashes spread wider than the period never quarantine', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, restartIntensity: { maxRestarts: 1, periodMs: 1000 } });
    const ref = await m.get('k');
    for (let i = 0; i < 5; i++) {
      await expect(ref.call({ type: 'boom' })).rejects.toMatchObject({ code: 'agent_crashed' });
      await vi.advanceTimersByTimeAsync(1000);
    }
    expect(ref.restarts).toBe(5);
    expect(ref.status).toBe('running');
  });

  it('clearQuarantine lifts it early; quarantineMs 0 only stops the key; forget lifts it too', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, restartIntensity: { maxRestarts: 0 } });
    const ref = await m.get('k');
    await expect(ref.call({ type: 'boom' })).rejects.toMatchObject({ code: 'agent_crashed' });
    await expect(m.get('k')).rejects.toMatchObject({ details: { reason: 'quarantined' } });
    expect(m.clearQuarantine('k')).toBe(true);
    expect(m.clearQuarantine('k')).toBe(false);
    const again = await m.get('k');
    await expect(again.call({ type: 'boom' })).rejects.toMatchObject({ code: 'agent_crashed' });
    expect(await m.forget('k')).toBe(true);
    await m.get('k');

    const z = await start({ name: 'z', agent: Counter, restartIntensity: { maxRestarts: 0, quarantineMs: 0 } });
    const r = await z.get('k');
    await expect(r.call({ type: 'boom' })).rejects.toMatchObject({ code: 'agent_crashed' });
    expect(r.status).toBe('stopped');
    expect(z.stats().quarantined).toBe(0);
    expect((await z.get('k')).incarnation).not.toBe(r.incarnation);
  });

  it('an init that throws on restart counts as another crash; it retries, then quarantines', async () => {
    const { Counter, world } = makeCounter();
    const m = await start({ name: 's', agent: Counter, restartIntensity: { maxRestarts: 3 } });
    const ref = await m.get('k');
    world.failInit.set('k', 1);
    await expect(ref.call({ type: 'boom' })).rejects.toMatchObject({ code: 'agent_crashed' });
    expect(await ref.call({ type: 'inc' })).toBe(1);
    expect(ref.restarts).toBe(2);

    const crashes: Array<{ quarantined: boolean }> = [];
    m.on('agent:crashed', (e: { quarantined: boolean }) => crashes.push(e));
    const r2 = await m.get('j');
    world.failInit.set('j', Infinity);
    await expect(r2.call({ type: 'boom' })).rejects.toMatchObject({ code: 'agent_crashed' });
    await flush();
    expect(r2.status).toBe('stopped');
    expect(crashes.map((c) => c.quarantined)).toEqual([false, false, false, true]);
    await expect(m.get('j')).rejects.toMatchObject({ details: { reason: 'quarantined' } });
  });

  it('a checkpoint that cannot be re-read after a crash stops the key (restart_failed), failing closed', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    const ref = await m.get('k');
    await ref.call({ type: 'inc' });
    await m.checkpoint('k');
    storage.failGets = 1;
    const g = gate();
    const blocker = ref.call({ type: 'wait', gate: g.promise });
    const crash = ref.call({ type: 'boom' });
    const stopping = m.checkpoint('k'); // a control job queued behind the crash
    g.open();
    await blocker;
    await expect(crash).rejects.toMatchObject({ code: 'agent_crashed' });
    await expect(stopping).rejects.toMatchObject({ code: 'agent_crashed', details: { reason: 'restart_failed' } });
    expect(ref.status).toBe('stopped');
    await expect(ref.call({ type: 'get' })).rejects.toMatchObject({ details: { reason: 'restart_failed' } });
    expect(await (await m.get('k')).call({ type: 'get' })).toBe(1); // storage is back: thaws
  });

  it('a checkpoint rewritten by someone else is not silently adopted on restart', async () => {
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    const ref = await m.get('k');
    await storage.put({ manager: 's', key: 'k' }, { version: 1, stateVersion: 1, agent: 'x', savedAt: 0, state: { count: 500 } });
    await expect(ref.call({ type: 'boom' })).rejects.toMatchObject({ code: 'agent_crashed' });
    await flush();
    expect(ref.status).toBe('stopped');
  });

  it('control jobs survive a crash: a stop queued behind it still saves and stops', async () => {
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    const ref = await m.get('k', { initialState: { count: 3 } });
    const g = gate();
    const blocker = ref.call({ type: 'wait', gate: g.promise });
    const crash = ref.call({ type: 'boom' });
    const stop = m.stop('k');
    g.open();
    await blocker;
    await expect(crash).rejects.toMatchObject({ code: 'agent_crashed' });
    await stop;
    expect(ref.status).toBe('stopped');
    expect((await storage.get({ manager: 's', key: 'k' }))?.state).toEqual({ count: 3 });
  });
});

describe('thaw failures fail closed', { timeout: 15_000 }, () => {
  it('[6.17] storage unavailable: thaw_failed, no agent; a later get works', async () => {
    const storage = new FlakyStorage();
    storage.failGets = 1;
    const { Counter, world } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    const events: unknown[] = [];
    m.on('agent:thaw_failed', (e) => events.push(e));
    const err = await m.get('k').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ThawFailedError);
    expect(err).toMatchObject({ code: 'thaw_failed', details: { manager: 's', key: 'k' } });
    expect(world.constructed).toBe(0);
    expect(m.stats()).toMatchObject({ count: 0, starting: 0 });
    expect(events).toHaveLength(1);
    await m.get('k');
  });

  it('[6.17] init rejecting a thawed checkpoint is a thaw failure; nothing is overwritten', async () => {
    const storage = new MemoryStorage();
    const { Counter, world } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    await (await m.get('k')).call({ type: 'inc' });
    await m.stop('k');
    world.failInit.set('k', 1);
    await expect(m.get('k')).rejects.toMatchObject({ code: 'thaw_failed', message: expect.stringMatching(/init rejected/) });
    expect((await storage.get({ manager: 's', key: 'k' }))?.revision).toBe(1);
  });

  it('[6.36] init runs exactly once per activation', async () => {
    const storage = new FlakyStorage();
    const { Counter, world } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    await Promise.all([m.get('k'), m.get('k'), m.lookup('k')]);
    expect(world.inits).toHaveLength(1);
    expect(storage.gets).toBe(1);
  });

  it('state versions: newer fails, older needs migrate(), migrate() upgrades, a throwing migrate fails', async () => {
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    const put = (key: string, stateVersion: number, state: unknown, version = 1) =>
      storage.put({ manager: 's', key }, { version, stateVersion, agent: 'Counter', savedAt: 0, state: state as never });
    await put('newer', 5, { count: 1 });
    await put('older', 1, { total: 7 });
    await put('boom', 1, { total: 'x' });
    await put('format', 1, { count: 1 }, 99);

    class V2 extends Counter {
      static stateVersion = 2;
    }
    const plain = await start({ name: 's', agent: V2, storage });
    await expect(plain.get('newer')).rejects.toMatchObject({ code: 'thaw_failed', message: expect.stringMatching(/newer/) });
    await expect(plain.get('older')).rejects.toMatchObject({ code: 'thaw_failed', message: expect.stringMatching(/no static migrate/) });
    await expect(plain.get('format')).rejects.toMatchObject({ code: 'thaw_failed', message: expect.stringMatching(/format version 99/) });
    await plain.close();

    class V2m extends Counter {
      static stateVersion = 2;
      static migrate(state: unknown, from: number): unknown {
        const s = state as { total: unknown };
        if (typeof s.total !== 'number') throw new Error(`cannot migrate from ${from}`);
        return { count: s.total };
      }
    }
    const m = await start({ name: 's', agent: V2m, storage });
    expect(await (await m.get('older')).call({ type: 'get' })).toBe(7);
    await expect(m.get('boom')).rejects.toMatchObject({ code: 'thaw_failed', message: expect.stringMatching(/migrate from state version 1 threw/) });
    await m.stop('older');
    expect(await storage.get({ manager: 's', key: 'older' })).toMatchObject({ stateVersion: 2, state: { count: 7 } });
  });
});
