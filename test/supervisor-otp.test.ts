/**
 * The supervisor against OTP's `supervisor_SUITE` semantics: `restart_child` / `delete_child` of
 * a restarting child, `ignore` from a child's start, junk from a start, strict child specs.
 * Pure logic, with in-process children; the worker variant is in supervisor-workers.test.ts.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ChildRestartingError, StartFailureError } from '../src/errors.js';
import { Supervisor } from '../src/supervisor/supervisor.js';
import type { ChildSpec, RunningChild } from '../src/supervisor/types.js';
import { FakeWorld, until } from './helpers/fake-child.js';

const silent = pino({ level: 'silent' });
const fast = { initialDelayMs: 1, maxDelayMs: 5, jitter: 0 };
/** A restart delay long enough to act while the restart is pending, short enough to wait out. */
const pending = { initialDelayMs: 150, maxDelayMs: 150, jitter: 0 };
const sups: Supervisor[] = [];
async function start(opts: Parameters<typeof Supervisor.start>[0]): Promise<Supervisor> {
  const s = await Supervisor.start({ logger: silent, backoff: fast, ...opts });
  sups.push(s);
  return s;
}
afterEach(async () => {
  await Promise.all(sups.splice(0).map((s) => s.stop()));
});

const statusOf = (s: Supervisor, id: string) => s.whichChildren().find((c) => c.id === id)?.status;

/**
 * A spec whose start resolves `undefined` (ignore) while `ignoring()` holds, and a fake child
 * otherwise.
 */
function ignorable(w: FakeWorld, id: string, ignoring: () => boolean, extra: Partial<ChildSpec> = {}): ChildSpec<RunningChild | undefined> {
  const real = w.spec(id);
  return {
    id,
    start: async (ctx) => {
      if (!ignoring()) return real.start(ctx);
      w.log.push(`ignore:${id}`);
      return undefined;
    },
    ...extra,
  };
}

/** A spec whose start resolves `value`, which is not a RunningChild. */
function junk(id: string, value: unknown): ChildSpec {
  return { id, start: async () => value as RunningChild };
}

describe('Supervisor OTP semantics', { timeout: 20_000 }, () => {
  describe('restartChild / deleteChild of a restarting child (OTP {error, restarting})', () => {
    it('restartChild rejects with code restarting and the pending restart still brings the child back', async () => {
      const w = new FakeWorld();
      const s = await start({ maxRestarts: 10, backoff: pending, children: [w.spec('a')] });
      const events: string[] = [];
      s.on('child_restarting', (e: { childId: string }) => events.push(`restarting:${e.childId}`));
      s.on('child_restarted', (e: { childId: string }) => events.push(`restarted:${e.childId}`));
      w.failStarts.set('a', 1); // the first restart fails: the supervisor retries it
      w.get('a').die();
      await until(() => statusOf(s, 'a') === 'restarting');
      const err: unknown = await s.restartChild('a').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ChildRestartingError);
      expect(err).toMatchObject({ code: 'restarting', details: { id: 'a' } });
      expect(statusOf(s, 'a')).toBe('restarting');
      expect(w.starts.get('a')).toBe(1); // restartChild started nothing
      await until(() => statusOf(s, 'a') === 'running', 10_000, 'a running again');
      expect(w.log.filter((l) => l === 'startfail:a')).toHaveLength(1);
      expect(w.starts.get('a')).toBe(2);
      expect(events).toEqual(['restarting:a', 'restarting:a', 'restarted:a']);
      // Once it runs, restartChild works as before.
      await s.restartChild('a');
      expect(w.starts.get('a')).toBe(3);
    });

    it('restartChild of a sibling waiting in a one_for_all restart rejects too', async () => {
      const w = new FakeWorld();
      const s = await start({ strategy: 'one_for_all', backoff: pending, children: [w.spec('a'), w.spec('b')] });
      w.get('a').die();
      await until(() => statusOf(s, 'b') === 'restarting');
      await expect(s.restartChild('b')).rejects.toMatchObject({ code: 'restarting' });
      await until(() => statusOf(s, 'a') === 'running' && statusOf(s, 'b') === 'running', 10_000, 'both running');
      expect([w.starts.get('a'), w.starts.get('b')]).toEqual([2, 2]);
    });

    it('deleteChild rejects with code restarting and keeps the child, which restarts', async () => {
      const w = new FakeWorld();
      const s = await start({ backoff: pending, children: [w.spec('a'), w.spec('b')] });
      w.get('a').die();
      await until(() => statusOf(s, 'a') === 'restarting');
      await expect(s.deleteChild('a')).rejects.toMatchObject({ code: 'restarting', details: { id: 'a' } });
      expect(s.whichChildren().map((c) => c.id)).toEqual(['a', 'b']);
      await until(() => statusOf(s, 'a') === 'running', 10_000, 'a running again');
      expect(w.starts.get('a')).toBe(2);
      // A stopped child can still be deleted.
      await s.terminateChild('a');
      await s.deleteChild('a');
      expect(s.whichChildren().map((c) => c.id)).toEqual(['b']);
    });
  });

  describe('start() resolving undefined: ignore (OTP ignore)', () => {
    it('at init: the spec is kept, the child is not running, the others start', async () => {
      const w = new FakeWorld();
      let ignoring = true;
      const s = await start({ children: [w.spec('a'), ignorable(w, 'i', () => ignoring), w.spec('c')] });
      expect(w.log).toEqual(['start:a', 'ignore:i', 'start:c']);
      expect(s.whichChildren().map((c) => [c.id, c.status, c.child])).toEqual([
        ['a', 'running', w.get('a')],
        ['i', 'terminated', undefined],
        ['c', 'running', w.get('c')],
      ]);
      expect(s.child('i')).toBeUndefined();
      expect(s.countChildren()).toEqual({ specs: 3, active: 2, supervisors: 0, workers: 3 });
      // restartChild tries it again: ignored once more, then it starts.
      await expect(s.restartChild('i')).resolves.toBeUndefined();
      expect(statusOf(s, 'i')).toBe('terminated');
      ignoring = false;
      const child = await s.restartChild('i');
      expect(child).toBe(w.get('i'));
      expect(statusOf(s, 'i')).toBe('running');
      // Running now, it is supervised like any other child.
      w.get('i').die();
      await until(() => w.starts.get('i') === 2);
    });

    it('startChild: resolves undefined, keeps the spec (already_present), never restarts it', async () => {
      const w = new FakeWorld();
      const s = await start({});
      const restarting: unknown[] = [];
      s.on('child_restarting', (e) => restarting.push(e));
      const started: unknown[] = [];
      s.on('child_started', (e) => started.push(e));
      await expect(s.startChild(ignorable(w, 'i', () => true))).resolves.toBeUndefined();
      expect(s.whichChildren()).toEqual([
        { id: 'i', type: 'worker', restart: 'permanent', status: 'terminated', child: undefined, restarts: 0, lastExit: undefined },
      ]);
      await expect(s.startChild(ignorable(w, 'i', () => true))).rejects.toMatchObject({ code: 'already_present' });
      await new Promise((r) => setTimeout(r, 30));
      expect(restarting).toEqual([]);
      expect(started).toEqual([]);
      await s.deleteChild('i');
      expect(s.countChildren().specs).toBe(0);
    });

    it('a temporary child that ignores is not kept (OTP drops it)', async () => {
      const w = new FakeWorld();
      const s = await start({ children: [ignorable(w, 't0', () => true, { restart: 'temporary' })] });
      expect(s.countChildren().specs).toBe(0);
      await expect(s.startChild(ignorable(w, 't1', () => true, { restart: 'temporary' }))).resolves.toBeUndefined();
      expect(s.countChildren().specs).toBe(0);
    });

    it('a restart that ignores leaves the child down without a retry; restartChild starts it later', async () => {
      const w = new FakeWorld();
      let ignoring = false;
      const s = await start({ children: [ignorable(w, 'a', () => ignoring), w.spec('b')] });
      const restarted: unknown[] = [];
      s.on('child_restarted', (e) => restarted.push(e));
      ignoring = true;
      w.get('a').die();
      await until(() => w.log.includes('ignore:a'));
      await new Promise((r) => setTimeout(r, 30));
      expect(w.log.filter((l) => l === 'ignore:a')).toHaveLength(1);
      expect(s.whichChildren()[0]).toMatchObject({ id: 'a', status: 'terminated', child: undefined, restarts: 1 });
      expect(restarted).toEqual([]);
      expect(s.state).toBe('running');
      ignoring = false;
      await s.restartChild('a');
      expect(statusOf(s, 'a')).toBe('running');
      expect(w.starts.get('b')).toBe(1);
    });

    it('in a one_for_all restart, an ignoring child does not stop its siblings from restarting', async () => {
      const w = new FakeWorld();
      let ignoring = false;
      const s = await start({ strategy: 'one_for_all', children: [w.spec('a'), ignorable(w, 'b', () => ignoring), w.spec('c')] });
      ignoring = true;
      w.get('a').die();
      await until(() => w.starts.get('c') === 2);
      expect(s.whichChildren().map((c) => [c.id, c.status])).toEqual([
        ['a', 'running'],
        ['b', 'terminated'],
        ['c', 'running'],
      ]);
    });
  });

  describe('start() resolving junk: a typed start failure, handled like a start() that throws', () => {
    const cases: Array<[string, unknown, RegExp]> = [
      ['null', null, /resolved with null/],
      ['a number', 42, /resolved with number 42/],
      ['a string', 'up', /resolved with string "up"/],
      ['an object without exited', { shutdown: () => Promise.resolve() }, /resolved with an object without an exited promise/],
      ['an object without shutdown', { exited: new Promise(() => undefined) }, /resolved with an object without a shutdown function/],
      ['an object whose doomed is not a promise', { exited: new Promise(() => undefined), shutdown: () => Promise.resolve(), doomed: 1 }, /resolved with an object whose doomed is not a promise/],
    ];
    for (const [what, value, message] of cases) {
      it(`startChild with ${what}: StartFailureError naming what was returned, spec not kept`, async () => {
        const s = await start({});
        const err: unknown = await s.startChild(junk('j', value)).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(StartFailureError);
        expect(err).not.toBeInstanceOf(TypeError);
        expect(err).toMatchObject({ code: 'start_failure', details: { id: 'j' } });
        expect((err as Error).message).toMatch(/^child j failed to start: start\(\) /);
        expect((err as Error).message).toMatch(message);
        expect(s.countChildren().specs).toBe(0); // as for a start() that throws
        expect(s.state).toBe('running');
      });
    }

    it('at init: the supervisor fails to start with StartFailureError and stops the started children', async () => {
      const w = new FakeWorld();
      await expect(Supervisor.start({ logger: silent, children: [w.spec('a'), junk('j', {})] })).rejects.toMatchObject({
        name: 'StartFailureError',
        code: 'start_failure',
        message: expect.stringMatching(/child j failed to start: start\(\) resolved with an object without/),
      });
      expect(w.log).toEqual(['start:a', 'exit:a:shutdown']);
    });

    it('on restart: counts as a failed restart, is retried, and the child comes back', async () => {
      const w = new FakeWorld();
      const real = w.spec('a');
      let junkLeft = 0;
      const spec: ChildSpec = {
        id: 'a',
        start: async (ctx) => {
          if (junkLeft > 0) {
            junkLeft -= 1;
            w.log.push('junk:a');
            return 'not a child' as unknown as RunningChild;
          }
          return real.start(ctx);
        },
      };
      const s = await start({ maxRestarts: 10, children: [spec] });
      const exits: Array<{ class: string; reason: string }> = [];
      s.on('child_exited', (e: { class: string; reason: string }) => exits.push(e));
      junkLeft = 2;
      w.get('a').die();
      await until(() => w.starts.get('a') === 2, 10_000, 'a restarted');
      expect(w.log.filter((l) => l === 'junk:a')).toHaveLength(2);
      expect(exits.map((e) => e.class)).toEqual(['crash', 'start_failure', 'start_failure']);
      expect(exits[1]!.reason).toMatch(/start\(\) resolved with string "not a child"/);
      expect(s.whichChildren()[0]).toMatchObject({ status: 'running', child: w.get('a') });
    });

    it('on restart: junk every time escalates like a start() that always throws', async () => {
      const w = new FakeWorld();
      let junkNow = false;
      const real = w.spec('a');
      const s = await start({
        maxRestarts: 2,
        children: [{ id: 'a', start: async (ctx) => (junkNow ? (7 as unknown as RunningChild) : real.start(ctx)) }],
      });
      junkNow = true;
      w.get('a').die();
      expect((await s.exited).class).toBe('escalated');
    });
  });

  describe('strict child specs', () => {
    it('an unknown child-spec key is rejected with InvalidConfigError naming it, like an unknown option', async () => {
      const w = new FakeWorld();
      const bad = { ...w.spec('a'), significant: true } as ChildSpec;
      const err: unknown = await Supervisor.start({ logger: silent, children: [w.spec('ok'), bad] }).catch((e: unknown) => e);
      expect(err).toMatchObject({ name: 'InvalidConfigError', code: 'invalid_config' });
      expect((err as Error).message).toMatch(/significant/);
      expect(w.log).toEqual([]); // validated before anything starts
      const s = await start({});
      await expect(s.startChild(bad)).rejects.toMatchObject({ code: 'invalid_config', message: expect.stringMatching(/significant/) });
      expect(s.countChildren().specs).toBe(0);
      // unknown supervisor options were already rejected this way
      await expect(Supervisor.start({ logger: silent, significant: true } as never)).rejects.toMatchObject({
        code: 'invalid_config',
        message: expect.stringMatching(/significant/),
      });
    });

    it('the specs the library builds still pass', async () => {
      const w = new FakeWorld();
      const s = await start({
        children: [w.spec('a', { restart: 'transient', shutdown: 'brutal_kill', type: 'worker' }), Supervisor.childSpec('sub', { backoff: fast })],
      });
      expect(s.countChildren()).toMatchObject({ specs: 2, active: 2 });
    });
  });
});
