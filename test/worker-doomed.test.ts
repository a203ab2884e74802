/**
 * A worker doomed by an uncaught exception (`WorkerHost.doomed`), against REAL worker threads:
 * the host tells the death before the thread is gone, the supervisor restarts it at once, and a
 * stop still waits until the old thread is gone.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { WorkerExitedError } from '../src/errors.js';
import { Supervisor } from '../src/supervisor/supervisor.js';
import type { ChildExit } from '../src/supervisor/types.js';
import { WorkerHost, workerChild } from '../src/worker/host.js';
import type { BehaveApi, BehaveData } from './fixtures/behave.js';
import { fixtureUrl, trackWorkers } from './helpers/fixtures.js';

const behave = fixtureUrl('behave');
const quiet = pino({ level: 'silent' });
const hosts = new Set<WorkerHost<BehaveApi>>();

async function start(data: BehaveData): Promise<WorkerHost<BehaveApi>> {
  const host = await WorkerHost.start<BehaveApi>({ filename: behave, workerData: data, logger: quiet });
  hosts.add(host);
  return host;
}

/** Which of `doomed` and `exited` resolved first, and with what. */
async function order(host: WorkerHost<BehaveApi>): Promise<{ first: string; doomed: ChildExit; exited: ChildExit }> {
  const seen: string[] = [];
  const doomed = host.doomed.then((e) => (seen.push('doomed'), e));
  const exited = host.exited.then((e) => (seen.push('exited'), e));
  return { doomed: await doomed, exited: await exited, first: seen[0]! };
}

afterEach(async () => {
  await Promise.all([...hosts].map((h) => h.shutdown('brutal_kill')));
  hosts.clear();
});

describe('WorkerHost.doomed', { timeout: 20_000 }, () => {
  it('resolves at an uncaught throw, before the thread is gone, with the crash and no code; calls are refused from then on', async () => {
    const host = await start({ mode: 'serve' });
    const rejected = host.doomed.then(() => host.call('echo', 1).then(() => 'answered', (err: unknown) => err));
    void host.call('crash', 'doomed here').catch(() => undefined);
    const { first, doomed, exited } = await order(host);
    expect(first).toBe('doomed');
    expect(doomed).toMatchObject({ class: 'crash', reason: 'doomed here' });
    expect(doomed.code).toBeUndefined();
    expect(doomed.error).toBeInstanceOf(Error);
    expect(exited).toMatchObject({ class: 'crash', reason: 'doomed here', code: 1 });
    const err = await rejected;
    expect(err).toBeInstanceOf(WorkerExitedError);
    expect((err as WorkerExitedError).details).toMatchObject({ class: 'crash', reason: 'doomed here' });
  });

  it('resolves at an unhandled rejection too', async () => {
    const host = await start({ mode: 'reject_after', ms: 20 });
    const { first, doomed } = await order(host);
    expect(first).toBe('doomed');
    expect(doomed).toMatchObject({ class: 'crash', reason: 'behave: rejected after 20 ms' });
  });

  it('resolves with the exit record itself for an end that is not an uncaught exception', async () => {
    const exiting = await start({ mode: 'exit_after', ms: 20, code: 3 });
    const a = await order(exiting);
    expect(a.doomed).toBe(a.exited);
    expect(a.exited).toMatchObject({ class: 'exit', code: 3 });
    const stopped = await start({ mode: 'serve' });
    const stopping = order(stopped);
    await stopped.shutdown(2000);
    const b = await stopping;
    expect(b.doomed).toBe(b.exited);
    expect(b.exited).toMatchObject({ class: 'shutdown' });
  });
});

describe('Supervisor and a doomed worker', { timeout: 20_000 }, () => {
  it('restarts it at once, and a stop made while its thread is ending waits until it is gone', async () => {
    const tracker = trackWorkers();
    try {
      const sup = await Supervisor.start({
        logger: quiet,
        backoff: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 },
        children: [workerChild('w', { filename: behave, workerData: { mode: 'serve' } satisfies BehaveData })],
      });
      const old = sup.child('w') as WorkerHost<BehaveApi>;
      // child_exited comes at the doom: the old thread is still ending when the stop begins.
      const stopped = new Promise<string>((resolve) =>
        sup.once('child_exited', () => resolve(old.state === 'down' ? 'gone already' : 'ending')),
      ).then(async (when) => {
        await sup.stop();
        return when;
      });
      void old.call('crash', 'boom').catch(() => undefined);
      expect(await stopped).toBe('ending');
      expect(old.state).toBe('down');
      expect(tracker.live()).toBe(0);
    } finally {
      tracker.dispose();
    }
  });
});
