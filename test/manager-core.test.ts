/**
 * InstanceManager: keyed singletons, lookup/stop/stats, options, events, mailbox order.
 * Ports the scenarios of section 6 of the Jido notes that do not need timers (numbers in
 * brackets: [6.n]).
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { inspect } from 'node:util';
import { afterEach, describe, expect, expectTypeOf, it, vi } from 'vitest';
import { InstanceManager, type ManagerMessage, type ManagerReply } from '../src/manager/manager.js';
import { MemoryStorage } from '../src/manager/storage.js';
import type { InstanceManagerOptions } from '../src/manager/types.js';
import { FlakyStorage, SyncEcho, flush, gate, makeCounter, silent, type CounterMsg } from './manager-fixtures.js';

vi.setConfig({ testTimeout: 15_000, hookTimeout: 15_000 });

const managers: InstanceManager[] = [];
async function start<C extends InstanceManagerOptions['agent']>(opts: InstanceManagerOptions<C>): Promise<InstanceManager<C>> {
  const m = await InstanceManager.start({ logger: silent, ...opts });
  managers.push(m as unknown as InstanceManager);
  return m;
}
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.close({ discardUnsaved: true })));
});

describe('InstanceManager: keyed singletons', { timeout: 15_000 }, () => {
  it('[6.2] get starts an absent agent; lookup is undefined before and the ref after', async () => {
    const { Counter, world } = makeCounter();
    const m = await start({ name: 'sessions', agent: Counter });
    expect(await m.lookup('u1')).toBeUndefined();
    const ref = await m.get('u1');
    expect(ref.key).toBe('u1');
    expect(ref.manager).toBe('sessions');
    expect(ref.status).toBe('running');
    expect(await m.lookup('u1')).toBe(ref);
    expect(world.constructed).toBe(1);
    expect(world.inits[0]?.info).toEqual({ key: 'u1', thawed: false, revision: 0, restarts: 0 });
  });

  it('[6.3] the same key gives the same ref, different keys different ones', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter });
    const a1 = await m.get('a');
    const a2 = await m.get('a');
    const b = await m.get('b');
    expect(a1).toBe(a2);
    expect(b).not.toBe(a1);
    expect(b.incarnation).not.toBe(a1.incarnation);
  });

  it('a ref serializes and inspects as its public fields only', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: 60_000 });
    const ref = await m.get('k');
    const view = { manager: 's', key: 'k', incarnation: ref.incarnation, status: 'running', restarts: 0 };
    expect(JSON.parse(JSON.stringify(ref))).toEqual(view);
    expect(inspect(ref)).toBe(inspect(view));
    await m.stop('k');
    expect(JSON.parse(JSON.stringify(ref))).toEqual({ ...view, status: 'stopped' });
  });

  it('[6.4] get passes initialState to a fresh agent only', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter });
    const ref = await m.get('k', { initialState: { count: 42 } });
    expect(await ref.call({ type: 'get' })).toBe(42);
    await m.get('k', { initialState: { count: 7 } }); // running: ignored
    expect(await ref.call({ type: 'get' })).toBe(42);
  });

  it('100 concurrent gets of one key start one agent and read storage once', async () => {
    const { Counter, world } = makeCounter();
    const storage = new FlakyStorage();
    const g = gate();
    storage.getGate = g.promise; // hold the thaw read so every get piles up on it
    const m = await start({ name: 's', agent: Counter, storage });
    const started: unknown[] = [];
    m.on('agent:started', (e) => started.push(e));
    const gets = Array.from({ length: 100 }, () => m.get('hot'));
    await flush();
    expect(m.stats()).toMatchObject({ starting: 1, count: 0 });
    g.open();
    const refs = await Promise.all(gets);
    expect(new Set(refs).size).toBe(1);
    expect(world.constructed).toBe(1);
    expect(storage.gets).toBe(1);
    expect(started).toHaveLength(1);
  });

  it('[6.8] stop hibernates and stops; lookup is then undefined; an unknown key is not_found', async () => {
    const { Counter, world } = makeCounter();
    const storage = new MemoryStorage();
    const m = await start({ name: 'sessions', agent: Counter, storage });
    const ref = await m.get('k', { initialState: { count: 41 } });
    await ref.call({ type: 'inc' });
    const stopped: unknown[] = [];
    m.on('agent:stopped', (e) => stopped.push(e));
    await m.stop('k');
    expect(ref.status).toBe('stopped');
    expect(await m.lookup('k')).toBeUndefined();
    expect(stopped).toMatchObject([{ manager: 'sessions', key: 'k', reason: 'stop', persisted: true }]);
    expect(world.terminates).toEqual([{ key: 'k', reason: 'stop' }]);
    // [6.14] the checkpoint is stored under {manager, key}
    expect(await storage.get({ manager: 'sessions', key: 'k' })).toMatchObject({ revision: 1, state: { count: 42 }, version: 1, stateVersion: 1, agent: 'Counter' });
    await expect(ref.call({ type: 'get' })).rejects.toMatchObject({ code: 'stopped' });
    await expect(m.stop('k')).rejects.toMatchObject({ code: 'not_found' });
    await expect(m.stop('never')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('[6.7] agentModule returns the agent class', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter });
    expect(m.agentModule()).toBe(Counter);
  });

  it('[6.12] stats reports count and keys of the agents in memory', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 'st', agent: Counter, partitions: 4 });
    await Promise.all(['a', 'b', 'c'].map((k) => m.get(k)));
    const lease = await m.attach('a');
    const s = m.stats();
    expect(s.count).toBe(3);
    expect([...s.keys].sort()).toEqual(['a', 'b', 'c']);
    expect(s).toMatchObject({ name: 'st', resident: 3, starting: 0, hibernating: 0, attached: 1, quarantined: 0, state: 'open' });
    expect(s.partitions).toHaveLength(4);
    expect(s.partitions.reduce((x, y) => x + y, 0)).toBe(3);
    lease.detach();
  });

  it('[6.29, 6.30] managers are independent; two on one storage keep separate checkpoints of one key', async () => {
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    const a = await start({ name: 'alpha', agent: Counter, storage });
    const b = await start({ name: 'beta', agent: Counter, storage });
    const ra = await a.get('same', { initialState: { count: 1 } });
    const rb = await b.get('same', { initialState: { count: 2 } });
    expect(ra).not.toBe(rb);
    expect(a.stats().count).toBe(1);
    expect(b.stats().count).toBe(1);
    expect(await b.lookup('other')).toBeUndefined();
    await a.stop('same');
    await b.stop('same');
    expect((await storage.get({ manager: 'alpha', key: 'same' }))?.state).toEqual({ count: 1 });
    expect((await storage.get({ manager: 'beta', key: 'same' }))?.state).toEqual({ count: 2 });
    expect(await (await a.get('same')).call({ type: 'get' })).toBe(1);
    expect(await (await b.get('same')).call({ type: 'get' })).toBe(2);
  });

  it('[6.26] storage: null means no restore: state resets after a stop', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage: null });
    const ref = await m.get('k');
    await ref.call({ type: 'inc', by: 5 });
    await m.stop('k');
    expect(await (await m.get('k')).call({ type: 'get' })).toBe(0);
    expect(await m.checkpoint('k')).toBeUndefined();
  });

  it('[6.18] omitted storage: a private MemoryStorage, so a stop/get round-trip keeps state', async () => {
    const { Counter, world } = makeCounter();
    const m = await start({ name: 's', agent: Counter });
    await (await m.get('k')).call({ type: 'inc', by: 3 });
    await m.stop('k');
    expect(await (await m.get('k')).call({ type: 'get' })).toBe(3);
    expect(world.inits[1]?.info).toMatchObject({ thawed: true, revision: 1 });
  });
});

describe('InstanceManager: mailbox', { timeout: 15_000 }, () => {
  it('runs handle one message at a time, in order, async or sync', async () => {
    const { Counter, world } = makeCounter();
    const m = await start({ name: 's', agent: Counter });
    const ref = await m.get('k');
    const replies = await Promise.all([
      ref.call({ type: 'slow', ms: 20 }),
      ref.call({ type: 'inc' }),
      ref.call({ type: 'slow', ms: 1 }),
      ref.call({ type: 'inc', by: 10 }),
    ]);
    expect(replies).toEqual([0, 1, 1, 11]);
    expect(world.log).toEqual(['k:slow', 'k:inc', 'k:slow', 'k:inc']);

    const e = await start({ name: 'echo', agent: SyncEcho });
    const r = await e.get('x');
    expect(await Promise.all([1, 2, 3].map((n) => r.call(n)))).toEqual([1, 3, 6]);
  });

  it('keeps order across a long queue (compaction)', async () => {
    const e = await start({ name: 'echo', agent: SyncEcho });
    const r = await e.get('x');
    const g = gate();
    const { Counter } = makeCounter();
    const m = await start({ name: 'c', agent: Counter });
    const c = await m.get('k');
    const first = c.call({ type: 'wait', gate: g.promise });
    const many = Array.from({ length: 3000 }, () => c.call({ type: 'inc' }));
    g.open();
    await first;
    const out = await Promise.all(many);
    expect(out[0]).toBe(1);
    expect(out[2999]).toBe(3000);
    expect(await r.call(1)).toBe(1);
  });
});

describe('InstanceManager: options and errors', { timeout: 15_000 }, () => {
  it('rejects invalid options with invalid_config listing every path; [6.25] unknown keys too', async () => {
    const { Counter } = makeCounter();
    await expect(InstanceManager.start({ name: '', agent: Counter, partitions: 0, idleTimeoutMs: -1 })).rejects.toMatchObject({
      code: 'invalid_config',
      issues: expect.arrayContaining([
        expect.objectContaining({ path: 'name' }),
        expect.objectContaining({ path: 'partitions' }),
        expect.objectContaining({ path: 'idleTimeoutMs' }),
      ]),
    });
    await expect(InstanceManager.start({ name: 'x', agent: class {} as never })).rejects.toMatchObject({
      code: 'invalid_config',
      issues: [expect.objectContaining({ path: 'agent' })],
    });
    await expect(InstanceManager.start({ name: 'x', agent: Counter, storage: {} as never })).rejects.toMatchObject({ code: 'invalid_config' });
    const legacy = InstanceManager.start({ name: 'x', agent: Counter, persistence: true } as never);
    await expect(legacy).rejects.toThrow(/persistence/);
    class BadVersion extends Counter {
      static stateVersion = 1.5;
    }
    await expect(InstanceManager.start({ name: 'x', agent: BadVersion, logger: silent })).rejects.toMatchObject({ code: 'invalid_config' });
  });

  it('rejects a non-string key and bad per-call options', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, idleTimeoutMs: Infinity, maxResident: Infinity });
    await expect(m.get(42 as never)).rejects.toMatchObject({ code: 'invalid_config' });
    await expect(m.get('k', { bogus: 1 } as never)).rejects.toMatchObject({ code: 'invalid_config' });
    await expect(m.attach('k', { signal: 'no' } as never)).rejects.toMatchObject({ code: 'invalid_config' });
    await expect(m.stop('k', { discardUnsaved: 'yes' } as never)).rejects.toMatchObject({ code: 'invalid_config' });
    await expect(m.close({ nope: 1 } as never)).rejects.toMatchObject({ code: 'invalid_config' });
    await expect(m.lookup(null as never)).rejects.toMatchObject({ code: 'invalid_config' });
  });

  it('a fresh agent whose init throws fails the get with start_failure; nothing stays', async () => {
    const { Counter, world } = makeCounter();
    world.failInit.set('bad', 1);
    const m = await start({ name: 's', agent: Counter });
    const failed: unknown[] = [];
    m.on('agent:start_failed', (e) => failed.push(e));
    const both = [m.get('bad'), m.get('bad')];
    for (const p of both) await expect(p).rejects.toMatchObject({ code: 'start_failure' });
    expect(failed).toHaveLength(1);
    expect(m.stats().count).toBe(0);
    expect(await m.lookup('bad')).toBeUndefined();
    expect(await (await m.get('bad')).call({ type: 'get' })).toBe(0); // next get starts it
  });

  it('get, attach after close reject with stopped; close is idempotent', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter });
    await m.get('k');
    await m.close();
    expect(m.state).toBe('closed');
    await m.close();
    await expect(m.get('k')).rejects.toMatchObject({ code: 'stopped' });
    await expect(m.attach('k')).rejects.toMatchObject({ code: 'stopped' });
    expect(await m.lookup('k')).toBeUndefined();
    expect(await m.exited).toEqual({ class: 'shutdown', reason: 'shutdown' });
  });

  it('checkpoint saves without stopping; unknown key is not_found', async () => {
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    const ref = await m.get('k');
    await ref.call({ type: 'inc', by: 2 });
    const cp = await m.checkpoint('k');
    expect(cp).toMatchObject({ manager: 's', key: 'k', revision: 1, state: { count: 2 } });
    await ref.call({ type: 'inc' });
    expect((await m.checkpoint('k'))?.revision).toBe(2);
    expect(ref.status).toBe('running');
    await expect(m.checkpoint('nope')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('refuses a snapshot that is not plain JSON and keeps the agent', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter });
    const ref = await m.get('k');
    await ref.call({ type: 'set', key: 'when', value: new Date(0) });
    const failed: Array<Record<string, unknown>> = [];
    m.on('agent:hibernate_failed', (e) => failed.push(e));
    await expect(m.stop('k')).rejects.toMatchObject({ code: 'hibernate_failed', message: expect.stringMatching(/\$\.when: Date is not a plain object/) });
    expect(ref.status).toBe('running');
    expect(failed).toMatchObject([{ key: 'k', reason: 'stop' }]);
    await ref.call({ type: 'set', key: 'when', value: 0 });
    await m.stop('k');
  });

  it('forget stops without saving, deletes the checkpoint and reports whether anything existed', async () => {
    const storage = new MemoryStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    await (await m.get('k')).call({ type: 'inc' });
    await m.stop('k');
    const ref = await m.get('k');
    const queued = ref.call({ type: 'slow', ms: 5 });
    expect(await m.forget('k')).toBe(true);
    await queued; // it was already running: forget waits for it
    expect(await storage.get({ manager: 's', key: 'k' })).toBeUndefined();
    expect(await m.forget('k')).toBe(false);
    expect(await (await m.get('k')).call({ type: 'get' })).toBe(0);
  });
});

describe('InstanceManager: events', { timeout: 15_000 }, () => {
  it('publishes on the manager and on diagnostics_channel threadvisor:agent:<event>', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 'ev', agent: Counter });
    const seen: string[] = [];
    const onStarted = (msg: unknown): void => {
      const e = msg as { manager: string; key: string };
      if (e.manager === 'ev') seen.push(`dc:started:${e.key}`);
    };
    diagnostics_channel.subscribe('threadvisor:agent:started', onStarted);
    try {
      for (const ev of ['started', 'thawed', 'hibernated', 'stopped'] as const) m.on(`agent:${ev}`, (e: { key: string }) => seen.push(`${ev}:${e.key}`));
      await m.get('k');
      await m.stop('k');
      await m.get('k');
    } finally {
      diagnostics_channel.unsubscribe('threadvisor:agent:started', onStarted);
    }
    expect(seen).toEqual(['dc:started:k', 'started:k', 'hibernated:k', 'stopped:k', 'thawed:k', 'dc:started:k', 'started:k']);
  });
});

describe('InstanceManager: operations racing a start or a save', { timeout: 15_000 }, () => {
  it('close() while a key is starting waits for it, then saves it; the get rejects with stopped', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    const g = gate();
    storage.getGate = g.promise;
    const getting = m.get('k', { initialState: { count: 4 } });
    await flush();
    const closing = m.close();
    g.open();
    await expect(getting).rejects.toMatchObject({ code: 'stopped' });
    await closing;
    expect((await storage.inner.get({ manager: 's', key: 'k' }))?.state).toEqual({ count: 4 });
  });

  it('close() while an agent is hibernating waits for that save', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    await (await m.get('k')).call({ type: 'inc' });
    const g = gate();
    storage.putGate = g.promise;
    const stopping = m.stop('k');
    await flush();
    const closing = m.close();
    let closed = false;
    void closing.then(() => (closed = true));
    await flush();
    expect(closed).toBe(false);
    storage.putGate = undefined;
    g.open();
    await Promise.all([stopping, closing]);
    expect(storage.puts).toBe(1);
  });

  it('stop, checkpoint and forget wait for a start in progress; stop/checkpoint on a failed start is not_found', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    const g = gate();
    storage.getGate = g.promise;
    const getting = m.get('a');
    await flush();
    const cp = m.checkpoint('a');
    const st = m.stop('a');
    g.open();
    await getting;
    expect((await cp)?.revision).toBe(1);
    await st;
    expect(m.stats().count).toBe(0);

    const g2 = gate();
    storage.getGate = g2.promise;
    storage.failGets = 1;
    const failing = m.get('b');
    await flush();
    const st2 = m.stop('b');
    const cp2 = m.checkpoint('b');
    const fg = m.forget('b');
    g2.open();
    await expect(failing).rejects.toMatchObject({ code: 'thaw_failed' });
    await expect(st2).rejects.toMatchObject({ code: 'not_found' });
    await expect(cp2).rejects.toMatchObject({ code: 'not_found' });
    expect(await fg).toBe(false);
  });

  it('checkpoint and forget wait for a hibernation in progress', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    await m.get('k');
    const g = gate();
    storage.putGate = g.promise;
    const stopping = m.stop('k');
    await flush();
    const cp = m.checkpoint('k');
    const fg = m.forget('k');
    storage.putGate = undefined;
    g.open();
    await stopping;
    await expect(cp).rejects.toMatchObject({ code: 'not_found' });
    expect(await fg).toBe(true); // the checkpoint written by the stop
    expect(await storage.inner.get({ manager: 's', key: 'k' })).toBeUndefined();
  });

  it('a failed checkpoint rejects and changes nothing; a throwing snapshot fails the save; a throwing terminate is only logged', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    const ref = await m.get('k');
    storage.failPuts = 1;
    await expect(m.checkpoint('k')).rejects.toMatchObject({ code: 'hibernate_failed' });
    expect(ref.status).toBe('running');
    expect(await ref.call({ type: 'inc' })).toBe(1);

    class Picky extends Counter {
      broken = true;
      override snapshot() {
        if (this.broken) throw new Error('cannot snapshot');
        return super.snapshot();
      }
      override terminate(): void {
        throw new Error('terminate failed');
      }
    }
    const p = await start({ name: 'p', agent: Picky, storage });
    await p.get('k');
    await expect(p.stop('k')).rejects.toMatchObject({ code: 'hibernate_failed', message: expect.stringMatching(/snapshot threw: cannot snapshot/) });
    await p.stop('k', { discardUnsaved: true }); // terminate throws: logged, stop still resolves
    expect(p.stats().count).toBe(0);
  });

  it('close() lists every key whose save failed', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage });
    await Promise.all(['a', 'b', 'c'].map((k) => m.get(k)));
    storage.failPuts = 2;
    const err = (await m.close().catch((e: unknown) => e)) as { code: string; details: { keys: string[] }; cause: unknown };
    expect(err.code).toBe('hibernate_failed');
    expect(err.details.keys).toHaveLength(2);
    expect(err.cause).toBeInstanceOf(AggregateError);
    await m.close();
  });

  it('a synchronous throw in handle is a crash like any other', async () => {
    const m = await start({ name: 'echo', agent: SyncEcho });
    const r = await m.get('x');
    expect(await r.call(2)).toBe(2);
    await expect(r.call(-1)).rejects.toMatchObject({ code: 'agent_crashed', details: { reason: 'crashed' } });
    expect(await r.call(1)).toBe(1); // restarted from initial state (never checkpointed)
  });

  it('a call on a passivated ref whose key cannot be thawed rejects with thaw_failed', async () => {
    const storage = new FlakyStorage();
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage, maxResident: 1 });
    const a = await m.get('a');
    await m.get('b'); // evicts a
    await flush();
    expect(a.status).toBe('stopped');
    storage.failGets = 1;
    await expect(a.call({ type: 'get' })).rejects.toMatchObject({ code: 'thaw_failed' });
  });
});

describe('InstanceManager: types', () => {
  it('infers message, reply and state types from the agent class', async () => {
    const { Counter } = makeCounter();
    const m = await start({ name: 't', agent: Counter });
    const ref = await m.get('k', { initialState: { count: 1 } });
    expectTypeOf(ref.call).parameter(0).toEqualTypeOf<CounterMsg>();
    expectTypeOf(ref.call).returns.toEqualTypeOf<Promise<number>>();
    expectTypeOf<ManagerMessage<typeof m>>().toEqualTypeOf<CounterMsg>();
    expectTypeOf<ManagerReply<typeof m>>().toEqualTypeOf<number>();
    expectTypeOf(m.agentModule()).toEqualTypeOf<typeof Counter>();
    // @ts-expect-error not a CounterMsg
    void ref.call({ type: 'nope' }).catch(() => undefined);
    // @ts-expect-error initialState must match the snapshot type
    await m.get('k', { initialState: { count: 'x' } }).catch(() => undefined);
  });
});
