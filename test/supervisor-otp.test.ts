/**
 * The supervisor against OTP's `supervisor_SUITE` semantics: `restart_child` / `delete_child` of
 * a restarting child.
 * Pure logic, with in-process children; the worker variant is in supervisor-workers.test.ts.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ChildRestartingError } from '../src/errors.js';
import { Supervisor } from '../src/supervisor/supervisor.js';
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
});
