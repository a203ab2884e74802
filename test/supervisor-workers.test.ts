/**
 * The supervisor with real worker children: strategies, fault classes, escalation, orphans.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Supervisor } from '../src/supervisor/supervisor.js';
import type { ChildSpec } from '../src/supervisor/types.js';
import type { WorkerHost} from '../src/worker/host.js';
import { workerChild } from '../src/worker/host.js';
import type { BehaveApi, BehaveData } from './fixtures/behave.js';
import { activeResources, fixtureUrl, resourceGrowth, trackWorkers, waitFor } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const fast = { initialDelayMs: 10, maxDelayMs: 50, jitter: 0.2 };
// Generous enough that a loaded 2-core machine never mistakes a slow worker for a hung one;
// the hang test gives its spinner a tight heartbeat of its own.
const heartbeat = { intervalMs: 250, maxMissed: 4 };
const tightHeartbeat = { intervalMs: 100, maxMissed: 3 };
const behave = fixtureUrl('behave');

/** A worker child running the `behave` fixture; `data` may depend on the restart attempt. */
function child(
  id: string,
  data: BehaveData | ((attempt: number) => BehaveData) = { mode: 'serve' },
  extra: Partial<ChildSpec> = {},
  beat: { intervalMs: number; maxMissed: number } = heartbeat,
): ChildSpec {
  return {
    ...workerChild<BehaveApi>(id, (ctx) => ({
      filename: behave,
      heartbeat: beat,
      workerData: typeof data === 'function' ? data(ctx.attempt) : data,
      resourceLimits: { maxOldGenerationSizeMb: 24 },
    })),
    ...extra,
  };
}

const host = (s: Supervisor, id: string) => s.child(id) as WorkerHost<BehaveApi>;
const threadOf = (s: Supervisor, id: string) => host(s, id).health().threadId;

const sups: Supervisor[] = [];
async function start(opts: Parameters<typeof Supervisor.start>[0]): Promise<Supervisor> {
  const s = await Supervisor.start({ logger: silent, backoff: fast, ...opts });
  sups.push(s);
  return s;
}
afterEach(async () => {
  await Promise.all(sups.splice(0).map((s) => s.stop()));
});

function record(s: Supervisor): string[] {
  const log: string[] = [];
  s.on('child_exited', (e: { childId: string; class: string }) => log.push(`exit:${e.childId}:${e.class}`));
  s.on('child_started', (e: { childId: string }) => log.push(`start:${e.childId}`));
  return log;
}

describe('Supervisor with real worker children', { timeout: 60_000 }, () => {
  it('one_for_one: only the crashed worker is replaced', async () => {
    const s = await start({ children: [child('a'), child('b'), child('c')] });
    const before = ['a', 'b', 'c'].map((id) => threadOf(s, id));
    const log = record(s);
    void host(s, 'b').call('crash', 'boom').catch(() => undefined);
    await waitFor(() => log.includes('start:b'));
    expect(log).toEqual(['exit:b:crash', 'start:b']);
    const after = ['a', 'b', 'c'].map((id) => threadOf(s, id));
    expect(after[0]).toBe(before[0]);
    expect(after[1]).not.toBe(before[1]);
    expect(after[2]).toBe(before[2]);
    expect(await host(s, 'b').call('add', 2, 3)).toBe(5);
  });

  it('one_for_all: siblings stop in reverse order, then all start in order', async () => {
    const s = await start({ strategy: 'one_for_all', children: [child('a'), child('b'), child('c')] });
    const before = ['a', 'b', 'c'].map((id) => threadOf(s, id));
    const log = record(s);
    void host(s, 'b').call('exit', 4).catch(() => undefined);
    await waitFor(() => log.filter((l) => l.startsWith('start:')).length === 3);
    expect(log).toEqual(['exit:b:exit', 'exit:c:shutdown', 'exit:a:shutdown', 'start:a', 'start:b', 'start:c']);
    const after = ['a', 'b', 'c'].map((id) => threadOf(s, id));
    after.forEach((t, i) => expect(t).not.toBe(before[i]));
  });

  it('rest_for_one: the dead worker and those after it are replaced', async () => {
    const s = await start({ strategy: 'rest_for_one', children: [child('a'), child('b'), child('c'), child('d')] });
    const before = ['a', 'b', 'c', 'd'].map((id) => threadOf(s, id));
    const log = record(s);
    void host(s, 'b').call('crash', 'boom').catch(() => undefined);
    await waitFor(() => log.filter((l) => l.startsWith('start:')).length === 3);
    expect(log).toEqual(['exit:b:crash', 'exit:d:shutdown', 'exit:c:shutdown', 'start:b', 'start:c', 'start:d']);
    expect(threadOf(s, 'a')).toBe(before[0]);
    ['b', 'c', 'd'].forEach((id, i) => expect(threadOf(s, id)).not.toBe(before[i + 1]));
  });

  it('throw, process.exit(3), OOM and a busy loop are each detected, classified and restarted; a sibling keeps beating', async () => {
    const once = (data: BehaveData) => (attempt: number): BehaveData => (attempt === 0 ? data : { mode: 'serve' });
    // Subscribed before the start: a fault may fire before Supervisor.start resolves.
    const exits = new Map<string, { class: string; reason: string; code?: number }>();
    const restarted = new Set<string>();
    const onExit = (m: unknown) => {
      const e = m as { supervisor: string; childId: string; class: string; reason: string; code?: number };
      if (e.supervisor === 'faults') exits.set(e.childId, e);
    };
    const onRestart = (m: unknown) => {
      const e = m as { supervisor: string; childId: string };
      if (e.supervisor === 'faults') restarted.add(e.childId);
    };
    diagnostics_channel.subscribe('threadvisor:supervisor:child_exited', onExit);
    diagnostics_channel.subscribe('threadvisor:supervisor:child_restarted', onRestart);
    const s = await start({
      name: 'faults',
      maxRestarts: 10,
      children: [
        child('sibling'),
        child('thrower', once({ mode: 'throw_after', ms: 200 })),
        child('exiter', once({ mode: 'exit_after', ms: 200, code: 3 })),
        // A heap filling up runs GC back to back; on a loaded machine that can starve pongs for
        // a while before V8 gives up, so the hog gets a patient heartbeat: the OOM must win.
        child('hog', once({ mode: 'oom_after', ms: 200 }), {}, { intervalMs: 500, maxMissed: 20 }),
        child('spinner', once({ mode: 'hang_after', ms: 200 }), {}, tightHeartbeat),
      ],
    });
    const sibling = host(s, 'sibling');

    // Sample the sibling's pong count while the others fail: it must keep rising.
    const samples: number[] = [];
    const sampler = setInterval(() => samples.push(sibling.stats().pongs), 600);
    try {
      await waitFor(() => restarted.size === 4, 30_000);
      await new Promise((r) => setTimeout(r, 700));
    } finally {
      clearInterval(sampler);
      diagnostics_channel.unsubscribe('threadvisor:supervisor:child_exited', onExit);
      diagnostics_channel.unsubscribe('threadvisor:supervisor:child_restarted', onRestart);
    }

    expect(exits.get('thrower')).toMatchObject({ class: 'crash' });
    expect(exits.get('exiter')).toMatchObject({ class: 'exit', code: 3, reason: 'exit(3)' });
    expect(exits.get('hog')).toMatchObject({ class: 'oom' });
    expect(exits.get('spinner')).toMatchObject({ class: 'hang', reason: 'heartbeat_timeout' });
    expect(exits.has('sibling')).toBe(false);
    expect(host(s, 'sibling')).toBe(sibling);
    expect(sibling.health()).toMatchObject({ state: 'up', missedBeats: 0 });
    // strictly increasing between samples taken 600 ms apart (heartbeat every 250 ms)
    for (let i = 1; i < samples.length; i++) expect(samples[i]!).toBeGreaterThan(samples[i - 1]!);
    for (const id of ['thrower', 'exiter', 'hog', 'spinner']) expect(await host(s, id).call('echo', id)).toBe(id);
  });

  it('a crash loop exceeds intensity and escalates to the parent; the root reports it and the process lives', async () => {
    const root = await start({
      name: 'root',
      maxRestarts: 0,
      children: [
        child('steady'),
        Supervisor.childSpec('sub', { maxRestarts: 2, periodMs: 30_000, backoff: fast, children: [child('looper', { mode: 'throw_after', ms: 30 })] }),
      ],
    });
    const steady = host(root, 'steady');
    const subExits: string[] = [];
    root.on('child_exited', (e: { childId: string; class: string }) => subExits.push(`${e.childId}:${e.class}`));
    const escalated: Array<{ supervisor: string }> = [];
    root.on('escalated', (e: { supervisor: string }) => escalated.push(e));
    const exit = await root.exited;
    expect(exit.class).toBe('escalated');
    // the sub escalated first (class escalated), then the root stopped the rest in reverse order
    expect(subExits).toEqual(['sub:escalated', 'steady:shutdown']);
    expect(escalated).toHaveLength(1);
    expect(steady.health().state).toBe('down');
    expect(root.state).toBe('escalated');
  });

  it('restartChild and deleteChild of a crashed worker waiting out its backoff reject with restarting; the restart still happens', async () => {
    const s = await start({ backoff: { initialDelayMs: 300, maxDelayMs: 300, jitter: 0 }, children: [child('a'), child('b')] });
    const before = threadOf(s, 'a');
    const log = record(s);
    void host(s, 'a').call('crash', 'boom').catch(() => undefined);
    await waitFor(() => s.whichChildren()[0]!.status === 'restarting');
    await expect(s.restartChild('a')).rejects.toMatchObject({ name: 'ChildRestartingError', code: 'restarting' });
    await expect(s.deleteChild('a')).rejects.toMatchObject({ code: 'restarting' });
    expect(s.whichChildren().map((c) => [c.id, c.status])).toEqual([
      ['a', 'restarting'],
      ['b', 'running'],
    ]);
    await waitFor(() => log.includes('start:a'));
    expect(log).toEqual(['exit:a:crash', 'start:a']);
    expect(s.whichChildren()[0]).toMatchObject({ status: 'running', restarts: 1 });
    expect(threadOf(s, 'a')).not.toBe(before);
    expect(await host(s, 'a').call('add', 1, 2)).toBe(3);
  });

  it('a control call in flight when its worker dies rejects promptly with worker_exited', async () => {
    const s = await start({ children: [child('a')] });
    const h = host(s, 'a');
    const pending = h.call('slow', 60_000);
    void h.call('crash', 'mid-call').catch(() => undefined);
    await expect(pending).rejects.toMatchObject({ code: 'worker_exited' });
  });

  it('stop() leaves no worker threads, timers or ports behind', async () => {
    const tracker = trackWorkers();
    const before = activeResources();
    const s = await Supervisor.start({
      logger: silent,
      backoff: fast,
      children: [child('a'), child('b'), Supervisor.childSpec('sub', { children: [child('c')] })],
    });
    void host(s, 'a').call('crash', 'x').catch(() => undefined);
    await waitFor(() => s.whichChildren()[0]!.status === 'running' && s.whichChildren()[0]!.restarts === 1);
    expect(tracker.live()).toBe(3);
    await s.stop();
    tracker.dispose();
    expect(tracker.created()).toBe(4);
    expect(tracker.live()).toBe(0);
    await new Promise((r) => setTimeout(r, 50));
    expect(resourceGrowth(before, activeResources())).toEqual({});
  });
});
