import diagnostics_channel from 'node:diagnostics_channel';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Supervisor } from '../src/supervisor/supervisor.js';
import type { ChildSpec } from '../src/supervisor/types.js';
import { FakeWorld, until } from './helpers/fake-child.js';

const silent = pino({ level: 'silent' });
const fast = { initialDelayMs: 1, maxDelayMs: 5, jitter: 0 };
const sups: Supervisor[] = [];
async function start(opts: Parameters<typeof Supervisor.start>[0]): Promise<Supervisor> {
  const s = await Supervisor.start({ logger: silent, backoff: fast, ...opts });
  sups.push(s);
  return s;
}
afterEach(async () => {
  await Promise.all(sups.splice(0).map((s) => s.stop()));
});

describe('Supervisor (pure logic, in-process children)', () => {
  it('starts children in order and stops them in reverse order', async () => {
    const w = new FakeWorld();
    const s = await start({ children: ['a', 'b', 'c'].map((id) => w.spec(id)) });
    expect(w.log).toEqual(['start:a', 'start:b', 'start:c']);
    expect(s.countChildren()).toEqual({ specs: 3, active: 3, supervisors: 0, workers: 3 });
    await s.stop();
    expect(w.log.slice(3)).toEqual(['exit:c:shutdown', 'exit:b:shutdown', 'exit:a:shutdown']);
    expect(s.state).toBe('stopped');
    expect(await s.exited).toEqual({ class: 'shutdown', reason: 'shutdown' });
    await s.stop(); // idempotent
  });

  it('one_for_one restarts only the dead child', async () => {
    const w = new FakeWorld();
    const s = await start({ children: ['a', 'b', 'c'].map((id) => w.spec(id)) });
    w.get('b').die();
    await until(() => w.starts.get('b') === 2);
    expect(w.starts.get('a')).toBe(1);
    expect(w.starts.get('c')).toBe(1);
    expect(s.whichChildren().map((c) => [c.id, c.status, c.restarts])).toEqual([
      ['a', 'running', 0],
      ['b', 'running', 1],
      ['c', 'running', 0],
    ]);
  });

  it('one_for_all stops the others in reverse order, then restarts all in order', async () => {
    const w = new FakeWorld();
    await start({ strategy: 'one_for_all', children: ['a', 'b', 'c'].map((id) => w.spec(id)) });
    w.log.length = 0;
    w.get('b').die();
    await until(() => w.log.length >= 6);
    expect(w.log).toEqual(['exit:b:crash', 'exit:c:shutdown', 'exit:a:shutdown', 'start:a', 'start:b', 'start:c']);
  });

  it('rest_for_one restarts the dead child and those started after it', async () => {
    const w = new FakeWorld();
    await start({ strategy: 'rest_for_one', children: ['a', 'b', 'c', 'd'].map((id) => w.spec(id)) });
    w.log.length = 0;
    w.get('b').die();
    await until(() => w.log.length >= 6);
    expect(w.log).toEqual(['exit:b:crash', 'exit:d:shutdown', 'exit:c:shutdown', 'start:b', 'start:c', 'start:d']);
    expect(w.starts.get('a')).toBe(1);
  });

  it('restart types: transient only after an abnormal end, temporary never (and removed)', async () => {
    const w = new FakeWorld();
    const s = await start({
      children: [w.spec('perm'), w.spec('trans', { restart: 'transient' }), w.spec('temp', { restart: 'temporary' })],
    });
    w.get('trans').die({ class: 'normal', reason: 'done' });
    w.get('temp').die({ class: 'crash', reason: 'x' });
    w.get('perm').die({ class: 'normal', reason: 'done' });
    await until(() => w.starts.get('perm') === 2);
    await new Promise((r) => setTimeout(r, 30));
    expect(w.starts.get('trans')).toBe(1);
    expect(s.whichChildren().map((c) => [c.id, c.status])).toEqual([
      ['perm', 'running'],
      ['trans', 'terminated'],
    ]);
    // an abnormal end restarts a transient child
    await s.restartChild('trans');
    w.get('trans').die({ class: 'exit', reason: 'exit(2)', code: 2 });
    await until(() => w.starts.get('trans') === 3);
  });

  it('one_for_all does not restart a temporary sibling it stopped', async () => {
    const w = new FakeWorld();
    const s = await start({ strategy: 'one_for_all', children: [w.spec('a'), w.spec('t', { restart: 'temporary' })] });
    w.get('a').die();
    await until(() => w.starts.get('a') === 2);
    expect(s.whichChildren().map((c) => c.id)).toEqual(['a']);
  });

  it('escalates when intensity is exceeded: stops all children in reverse order, never throws', async () => {
    const w = new FakeWorld();
    const events: string[] = [];
    const onEsc = (m: unknown) => events.push(`dc:${(m as { supervisor: string }).supervisor}`);
    diagnostics_channel.subscribe('threadvisor:supervisor:escalated', onEsc);
    try {
      const s = await start({ name: 'root', maxRestarts: 2, periodMs: 10_000, children: [w.spec('a'), w.spec('b')] });
      s.on('escalated', (e: { reason: string }) => events.push(`ev:${e.reason.slice(0, 26)}`));
      for (let i = 1; i <= 3; i++) {
        await until(() => w.starts.get('b') === i);
        w.get('b').die();
      }
      const exit = await s.exited;
      expect(exit.class).toBe('escalated');
      expect(s.state).toBe('escalated');
      expect(w.log.slice(-2)).toEqual(['exit:b:crash', 'exit:a:shutdown']);
      expect(events).toEqual(['dc:root', 'ev:restart intensity exceeded']);
      await expect(s.startChild(w.spec('z'))).rejects.toMatchObject({ code: 'stopped' });
    } finally {
      diagnostics_channel.unsubscribe('threadvisor:supervisor:escalated', onEsc);
    }
  });

  it('a nested supervisor escalates to its parent, which restarts it', async () => {
    const w = new FakeWorld();
    const parent = await start({
      name: 'parent',
      children: [w.spec('p1'), Supervisor.childSpec('sub', { maxRestarts: 0, backoff: fast, children: [w.spec('x')] })],
    });
    const restarted: unknown[] = [];
    parent.on('child_restarted', (e) => restarted.push(e));
    const sub1 = parent.child('sub') as Supervisor;
    expect(sub1.name).toBe('parent/sub');
    w.get('x').die();
    await until(() => restarted.length === 1);
    expect(restarted[0]).toMatchObject({ childId: 'sub', class: 'escalated' });
    const sub2 = parent.child('sub') as Supervisor;
    expect(sub2).not.toBe(sub1);
    expect(sub2.state).toBe('running');
    expect(w.starts.get('x')).toBe(2);
    expect(w.starts.get('p1')).toBe(1);
    expect(parent.countChildren()).toMatchObject({ supervisors: 1, workers: 1, active: 2 });
  });

  it('dynamic children: startChild, terminateChild, restartChild, deleteChild with OTP errors', async () => {
    const w = new FakeWorld();
    const s = await start({});
    await s.startChild(w.spec('a'));
    await expect(s.startChild(w.spec('a'))).rejects.toMatchObject({ code: 'already_started' });
    await s.terminateChild('a');
    expect(s.whichChildren()[0]).toMatchObject({ id: 'a', status: 'terminated' });
    await expect(s.startChild(w.spec('a'))).rejects.toMatchObject({ code: 'already_present' });
    await s.restartChild('a');
    expect(w.starts.get('a')).toBe(2);
    await expect(s.deleteChild('a')).rejects.toMatchObject({ code: 'running' });
    await s.restartChild('a'); // running: stopped then started again
    expect(w.starts.get('a')).toBe(3);
    await s.terminateChild('a');
    await s.deleteChild('a');
    expect(s.countChildren().specs).toBe(0);
    for (const op of [() => s.terminateChild('nope'), () => s.restartChild('nope'), () => s.deleteChild('nope')]) {
      await expect(op()).rejects.toMatchObject({ code: 'not_found' });
    }
    w.failStarts.set('b', 1);
    await expect(s.startChild(w.spec('b'))).rejects.toMatchObject({ code: 'start_failure' });
    expect(s.countChildren().specs).toBe(0);
    await s.startChild(w.spec('t', { restart: 'temporary' }));
    await s.terminateChild('t');
    expect(s.countChildren().specs).toBe(0);
  });

  it('a failed start during init stops the started children and rejects', async () => {
    const w = new FakeWorld();
    w.failStarts.set('b', 1);
    await expect(Supervisor.start({ logger: silent, children: [w.spec('a'), w.spec('b')] })).rejects.toMatchObject({
      code: 'start_failure',
    });
    expect(w.log).toEqual(['start:a', 'startfail:b', 'exit:a:shutdown']);
  });

  it('a failed restart counts toward intensity and is retried', async () => {
    const w = new FakeWorld();
    const s = await start({ maxRestarts: 5, children: [w.spec('a')] });
    w.failStarts.set('a', 2);
    w.get('a').die();
    await until(() => w.starts.get('a') === 2);
    expect(w.log.filter((l) => l === 'startfail:a')).toHaveLength(2);
    expect(s.whichChildren()[0]).toMatchObject({ status: 'running' });
  });

  it('failed restarts count toward intensity and escalate', async () => {
    const w = new FakeWorld();
    const s = await start({ maxRestarts: 1, children: [w.spec('a')] });
    w.failStarts.set('a', 5);
    w.get('a').die();
    expect((await s.exited).class).toBe('escalated');
    expect(w.log.filter((l) => l === 'startfail:a')).toHaveLength(1); // death (1 restart), failed start (2nd): escalate
  });

  it('backoff keeps growing through a loop of failed starts, even after a long stable run', async () => {
    const w = new FakeWorld();
    const s = await start({
      maxRestarts: 100,
      backoff: { initialDelayMs: 5, maxDelayMs: 1000, jitter: 0 },
      backoffResetMs: 50,
      children: [w.spec('a')],
    });
    const delays: number[] = [];
    s.on('child_restarting', (e: { delayMs: number }) => delays.push(e.delayMs));
    await new Promise((r) => setTimeout(r, 80)); // a stable run: the next death starts from attempt 0
    w.failStarts.set('a', 3);
    w.get('a').die();
    await until(() => w.starts.get('a') === 2);
    expect(delays).toEqual([5, 10, 20, 40]);
  });

  it('stop() during a one_for_all restart leaves no restart timer behind', async () => {
    const w = new FakeWorld();
    const s = await start({ strategy: 'one_for_all', backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000, jitter: 0 }, children: [w.spec('a'), w.spec('b')] });
    w.get('b').slowMs = 50;
    const restarting: unknown[] = [];
    s.on('child_restarting', (e) => restarting.push(e));
    const timersBefore = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    w.get('a').die(); // handling waits for b's slow shutdown
    await new Promise((r) => setTimeout(r, 10));
    await s.stop();
    await new Promise((r) => setTimeout(r, 80));
    expect(restarting).toEqual([]);
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length).toBeLessThanOrEqual(timersBefore);
  });

  it('a restart still pending when the supervisor stops is cancelled', async () => {
    const w = new FakeWorld();
    const s = await start({ backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000, jitter: 0 }, children: [w.spec('a')] });
    w.get('a').die();
    await until(() => s.whichChildren()[0]!.status === 'restarting');
    await s.stop();
    expect(w.starts.get('a')).toBe(1);
  });

  it('terminateChild cancels a pending restart of that child', async () => {
    const w = new FakeWorld();
    const s = await start({ backoff: { initialDelayMs: 50, maxDelayMs: 50, jitter: 0 }, children: [w.spec('a')] });
    w.get('a').die();
    await until(() => s.whichChildren()[0]!.status === 'restarting');
    await s.terminateChild('a');
    await new Promise((r) => setTimeout(r, 120));
    expect(w.starts.get('a')).toBe(1);
  });

  it('shutdown with a numeric budget kills children that ignore the graceful stop', async () => {
    const w = new FakeWorld();
    const s = await start({ children: [w.spec('a'), w.spec('b', { shutdown: 'infinity' })] });
    w.get('b').stubborn = true;
    const exit = await s.shutdown(50);
    expect(exit.class).toBe('shutdown');
    expect(w.get('b').budgets).toEqual(['infinity', 'brutal_kill']);
    expect(w.get('a').ended).toBe(true);
  });

  it('a tighter budget given while already stopping still applies', async () => {
    const w = new FakeWorld();
    const s = await start({ children: [w.spec('a', { shutdown: 'infinity' })] });
    w.get('a').stubborn = true;
    const first = s.stop(); // no deadline: would wait forever
    const second = s.shutdown(30);
    expect((await second).class).toBe('shutdown');
    await first;
    expect(w.get('a').budgets).toEqual(['infinity', 'brutal_kill']);
  });

  it('shutdown brutal_kill kills every child', async () => {
    const w = new FakeWorld();
    const s = await start({ children: [w.spec('a'), w.spec('b')] });
    await s.shutdown('brutal_kill');
    expect(w.get('a').budgets).toEqual(['brutal_kill']);
    expect(w.get('b').budgets).toEqual(['brutal_kill']);
  });

  it('emits child_started, child_exited, child_restarted and stopped on the object', async () => {
    const w = new FakeWorld();
    const s = await Supervisor.start({ logger: silent, backoff: fast });
    const seen: string[] = [];
    for (const ev of ['child_started', 'child_exited', 'child_restarting', 'child_restarted', 'stopped'] as const)
      s.on(ev, (p: { childId?: string; class?: string; at: number }) => {
        expect(typeof p.at).toBe('number');
        seen.push(`${ev}:${p.childId ?? ''}:${p.class ?? ''}`);
      });
    await s.startChild(w.spec('a'));
    w.get('a').die();
    await until(() => seen.includes('child_restarted:a:crash'));
    await s.stop();
    expect(seen).toEqual([
      'child_started:a:',
      'child_exited:a:crash',
      'child_restarting:a:crash',
      'child_started:a:',
      'child_restarted:a:crash',
      'child_exited:a:shutdown',
      'stopped::',
    ]);
  });

  it('validates options and child specs, listing bad paths', async () => {
    await expect(Supervisor.start({ strategy: 'all' as never, maxRestarts: -1 })).rejects.toMatchObject({
      code: 'invalid_config',
      issues: expect.arrayContaining([expect.objectContaining({ path: 'strategy' }), expect.objectContaining({ path: 'maxRestarts' })]),
    });
    await expect(Supervisor.start({ children: [{ id: '', start: 1 } as unknown as ChildSpec] })).rejects.toMatchObject({
      code: 'invalid_config',
    });
    const w = new FakeWorld();
    await expect(Supervisor.start({ logger: silent, children: [w.spec('a'), w.spec('a')] })).rejects.toMatchObject({
      code: 'invalid_config',
    });
  });

  it('backoff grows for a child that keeps dying quickly and resets after a stable run', async () => {
    const w = new FakeWorld();
    const s = await start({
      maxRestarts: 100,
      backoff: { initialDelayMs: 2, maxDelayMs: 1000, jitter: 0 },
      backoffResetMs: 10_000,
      children: [w.spec('a')],
    });
    const delays: number[] = [];
    s.on('child_restarted', (e: { delayMs: number }) => delays.push(e.delayMs));
    for (let i = 1; i <= 4; i++) {
      await until(() => w.starts.get('a') === i);
      w.get('a').die();
    }
    await until(() => delays.length === 4);
    expect(delays).toEqual([2, 4, 8, 16]);
  });
});
