/**
 * One worker thread hosting several instances (the worker side of packing), on REAL threads
 * driven through `WorkerHost` (no Runtime): `host` adds an instance to a running worker, each
 * instance speaks on the shared data port under its own number, keeps its own channel state, and
 * what happens to one (a lost connection, exhausted reconnects, a graceful `unhost`) leaves the
 * others and the thread alone. Build first: `npx tsc -p tsconfig.build.json`.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { InstanceBoot, LifecycleBody as Notice } from '../src/wire/protocol.js';
import { trackWorkers, waitFor, type WorkerTracker } from './helpers/fixtures.js';
import { bootConfig, channelFixtureUrl, harnesses, lifecycle, startInstanceWorker, type InstanceHarness } from './helpers/instance.js';

const T = 20_000;
let tracker: WorkerTracker;

beforeAll(() => {
  tracker = trackWorkers();
});

afterEach(async () => {
  for (const h of [...harnesses]) {
    expect(h.invalid, 'every message is about a hosted instance and valid').toEqual([]);
    await h.dispose();
  }
});

afterAll(async () => {
  await waitFor(() => tracker.live() === 0, 5000);
  tracker.dispose();
});

/** Hosts one more instance (number `iid`) in the harness's worker. */
async function hostAnother(h: InstanceHarness, iid: number, overrides: Parameters<typeof bootConfig>[0] = {}): Promise<Notice[]> {
  const notices: Notice[] = [];
  h.others.set(iid, notices);
  const config: Omit<InstanceBoot, 'data'> = { ...bootConfig({ id: `i${iid}`, ...overrides }), iid };
  const result = await h.host.call('host', config);
  expect(result).toEqual({ ok: true });
  return notices;
}

const connected = (ns: readonly Notice[]): number => ns.filter((n) => n.t === 'status' && n.status === 'connected').length;

describe('one worker, several instances', () => {
  it(
    'each hosted instance connects, sends under its own number and keeps its own channel state',
    async () => {
      const h = await startInstanceWorker({ settings: { faults: true } });
      const second = await hostAnother(h, 8, { settings: { faults: true } });
      await waitFor(() => connected(h.notices) === 1 && connected(second) === 1);
      // Per-instance loopback state: each instance's first send is its own lb-1.
      expect(await h.send({ text: 'a' })).toEqual({ externalId: 'lb-1' });
      expect(await h.send({ text: 'b' }, { iid: 8 })).toEqual({ externalId: 'lb-1' });
      expect(await h.send({ text: 'c' }, { iid: 8 })).toEqual({ externalId: 'lb-2' });
      // A lost connection of one instance is its own: the other sees nothing.
      await h.send({ fault: 'disconnect' }, { iid: 8 });
      await waitFor(() => connected(second) === 2);
      expect(lifecycle(second)).toContain('status:disconnected');
      expect(lifecycle(h.notices)).toEqual(['status:connecting', 'status:connected']);
    },
    T,
  );

  it(
    "one instance's exhausted reconnects leave the thread and its worker-mate running",
    async () => {
      const h = await startInstanceWorker();
      const doomed = await hostAnother(h, 9, { settings: { connectFailures: 100 }, reconnect: { maxAttempts: 1 } });
      await waitFor(() => doomed.some((n) => n.t === 'reconnect' && n.phase === 'exhausted'));
      expect(h.host.state).toBe('up');
      await waitFor(() => connected(h.notices) === 1);
      expect(await h.send({ text: 'still here' })).toEqual({ externalId: 'lb-1' });
    },
    T,
  );

  it(
    'unhost stops one instance gracefully (its disconnect runs); the other goes on; its messages are ignored after',
    async () => {
      const h = await startInstanceWorker();
      const leaving = await hostAnother(h, 10);
      await waitFor(() => connected(h.notices) === 1 && connected(leaving) === 1);
      await h.host.call('unhost', 10);
      // The log line comes on the data port, the call's answer on the control port: no order between them.
      await waitFor(() => leaving.some((n) => n.t === 'log' && n.msg === 'loopback disconnected'));
      expect(await h.send({ text: 'x' })).toEqual({ externalId: 'lb-1' });
      // A send for the departed number is not taken by anyone: no ack comes back.
      let settled = false;
      void h.send({ text: 'y' }, { iid: 10 }).then(
        () => (settled = true),
        () => (settled = true),
      );
      await new Promise((r) => setTimeout(r, 200));
      expect(settled).toBe(false);
      await h.host.call('unhost', 12345); // an unknown number: nothing to do
      expect(h.host.state).toBe('up');
    },
    T,
  );

  it(
    'host refuses a number already hosted; a channel module that cannot load fails only its own start',
    async () => {
      const h = await startInstanceWorker();
      const config = { ...bootConfig({ id: 'dup' }), iid: 7 };
      expect(await h.host.call('host', config)).toMatchObject({ ok: false, code: 'channel_invalid', reason: expect.stringContaining('already hosted') });
      const bad = { ...bootConfig({ id: 'bad', channel: channelFixtureUrl('no-send') }), iid: 11 };
      expect(await h.host.call('host', bad)).toMatchObject({ ok: false, code: 'channel_invalid', reason: expect.stringContaining('send') });
      await waitFor(() => connected(h.notices) === 1);
      expect(await h.send({ text: 'fine' })).toEqual({ externalId: 'lb-1' });
    },
    T,
  );
});
