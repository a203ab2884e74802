/**
 * The instance worker (`workers/instance-worker.ts`) with the loopback channel and the test
 * channels of `test/fixtures/channels`, on REAL worker threads driven through `WorkerHost` (no
 * Runtime). Build first: `npx tsc -p tsconfig.build.json`.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { LifecycleBody as Notice } from '../src/wire/protocol.js';
import { trackWorkers, waitFor, type WorkerTracker } from './helpers/fixtures.js';
import {
  channelFixtureUrl,
  harnesses,
  inboundMessages,
  instanceWorkerUrl,
  lifecycle,
  loopbackUrl,
  HARNESS_IID,
  SendFailure,
  startInstanceWorker,
  type InstanceHarness,
} from './helpers/instance.js';

const T = 20_000;

let tracker: WorkerTracker;

beforeAll(() => {
  for (const url of [instanceWorkerUrl, loopbackUrl, channelFixtureUrl('listen')]) {
    if (!existsSync(fileURLToPath(url))) {
      throw new Error(`missing ${fileURLToPath(url)}: run \`npx tsc -p tsconfig.build.json\` first`);
    }
  }
  tracker = trackWorkers();
});

afterEach(async () => {
  for (const h of [...harnesses]) {
    expect(h.invalid, 'every notice matches noticeSchema').toEqual([]);
    await h.dispose();
  }
});

afterAll(async () => {
  await waitFor(() => tracker.live() === 0, 5000);
  tracker.dispose();
});

async function rejection(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err as Error,
  );
}

const isConnected = (n: Notice): boolean => n.t === 'status' && n.status === 'connected';

describe('connect and inbound', () => {
  it(
    'start → connecting, connected (meta from connect), inbound batches in seq order',
    async () => {
      const h = await startInstanceWorker({ settings: { inbound: { ratePerSec: Infinity, batch: 10, limit: 50, rooms: 3 } } });
      await waitFor(() => inboundMessages(h.notices).length >= 50);
      expect(lifecycle(h.notices)).toEqual(['status:connecting', 'status:connected']);
      const connected = h.notices.find(isConnected);
      expect(connected).toMatchObject({ meta: { loopback: true, connects: 1 } });
      const batches = h.notices.filter((n) => n.t === 'inbound');
      for (const b of batches) expect(b.messages.length).toBeLessThanOrEqual(10);
      const messages = inboundMessages(h.notices) as Array<{ id: string; room: string; text: string; seq: number }>;
      expect(messages.map((m) => m.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      expect(new Set(messages.map((m) => m.room))).toEqual(new Set(['room-0', 'room-1', 'room-2']));
      expect(messages[0]).toEqual({ id: 'in-1', room: 'room-0', text: 'message 1', seq: 1 });
      // The connected notice comes before any inbound batch.
      expect(h.notices.findIndex(isConnected)).toBeLessThan(h.notices.findIndex((n) => n.t === 'inbound'));
    },
    T,
  );

  it(
    'start() is idempotent and channel logs are forwarded as log notices',
    async () => {
      const h = await startInstanceWorker();
      await h.host.call('start');
      const line = await h.waitForNotice('log', (n) => n.msg === 'loopback connected');
      expect(line).toEqual({ t: 'log', level: 'info', msg: 'loopback connected', obj: { connects: 1 } });
      expect(lifecycle(h.notices)).toEqual(['status:connecting', 'status:connected']);
    },
    T,
  );

  it(
    'a listen channel: a burst emitted in one turn arrives as one inbound notice',
    async () => {
      const h = await startInstanceWorker({
        channel: channelFixtureUrl('listen'),
        channelType: 'listen',
        settings: { burst: 7, bursts: 3 },
      });
      await waitFor(() => inboundMessages(h.notices).length >= 21);
      const batches = h.notices.filter((n) => n.t === 'inbound');
      expect(batches.map((b) => b.messages.length)).toEqual([7, 7, 7]);
      expect((inboundMessages(h.notices) as Array<{ seq: number }>).map((m) => m.seq)).toEqual(
        Array.from({ length: 21 }, (_, i) => i + 1),
      );
      expect(lifecycle(h.notices)).toEqual(['status:connecting', 'status:connected']);
    },
    T,
  );

  it(
    'a listen that returns on its own is a recoverable loss: disconnected, reconnect, connected',
    async () => {
      const h = await startInstanceWorker({
        channel: channelFixtureUrl('listen'),
        channelType: 'listen',
        settings: { burst: 1, endAfterMs: 50 },
      });
      await waitFor(() => h.notices.filter(isConnected).length >= 2);
      expect(lifecycle(h.notices).slice(0, 6)).toEqual([
        'status:connecting',
        'status:connected',
        'status:disconnected',
        'reconnect:scheduled:1',
        'reconnect:attempt:1',
        'status:connected',
      ]);
      const lost = h.notices.find((n) => n.t === 'status' && n.status === 'disconnected');
      expect(lost).toMatchObject({ reason: expect.stringContaining('listen returned') });
      const reconnected = h.notices.filter(isConnected)[1];
      expect(reconnected).toMatchObject({ meta: { attempts: 1, reason: expect.stringContaining('listen returned') } });
      await h.waitForNotice('log', (n) => n.msg === 'listen disconnected');
    },
    T,
  );

  it(
    'a listen that throws a degraded error: failure notice, then a reconnect',
    async () => {
      const h = await startInstanceWorker({
        channel: channelFixtureUrl('listen'),
        channelType: 'listen',
        settings: { burst: 1, failWith: 'unsupported' },
      });
      await h.waitForNotice('reconnect', (n) => n.phase === 'attempt');
      expect(h.notices.find((n) => n.t === 'failure')).toMatchObject({ op: 'listen', class: 'degraded' });
    },
    T,
  );

  it(
    'messages and log objects that cannot be cloned are sent with their functions dropped',
    async () => {
      const h = await startInstanceWorker({
        channel: channelFixtureUrl('listen'),
        channelType: 'listen',
        settings: { burst: 3, withFunction: true },
      });
      await waitFor(() => inboundMessages(h.notices).length >= 3);
      expect(inboundMessages(h.notices)).toEqual([
        { seq: 1, burst: 0, listen: 1 },
        { seq: 2, burst: 0, listen: 1 },
        { seq: 3, burst: 0, listen: 1 },
      ]);
      expect(await h.waitForNotice('log', (n) => n.msg === 'listen started')).toMatchObject({ obj: { listens: 1 } });
      await h.waitForNotice('log', (n) => n.level === 'warn' && n.msg.includes('not cloneable'));
    },
    T,
  );

  it(
    'an inbound flood does not starve heartbeats',
    async () => {
      // The worker polls as fast as it can (its event loop is saturated) and still answers every
      // ping: the poll loop yields a turn after each batch. Small batches keep the main thread
      // (which has to deserialize them all) ahead of the worker; see the flow-control note in
      // the instance worker's docs.
      const h = await startInstanceWorker(
        { settings: { inbound: { ratePerSec: Infinity, batch: 20, limit: 100_000 } } },
        { host: { heartbeat: { intervalMs: 200, maxMissed: 4 } } },
      );
      const pongs = h.host.stats().pongs;
      await waitFor(() => inboundMessages(h.notices).length >= 100_000, 15_000);
      await waitFor(() => h.host.stats().pongs >= pongs + 2);
      expect(h.host.state).toBe('up');
      expect(h.host.stats().missedBeats).toBeLessThan(4);
    },
    T,
  );

  it(
    'echo: a sent message comes back inbound',
    async () => {
      const h = await startInstanceWorker({ settings: { echo: true } });
      await h.waitForNotice('status', (n) => n.status === 'connected');
      await h.send({ room: 'r1', text: 'hello' });
      await waitFor(() => inboundMessages(h.notices).length >= 1);
      expect(inboundMessages(h.notices)[0]).toMatchObject({ room: 'r1', text: 'hello', seq: 1, echo: { room: 'r1', text: 'hello' } });
    },
    T,
  );
});

describe('reconnect', () => {
  it(
    'connectFailures 2 → failed/disconnected/scheduled/attempt, then connected with reconnect meta',
    async () => {
      const h = await startInstanceWorker({ settings: { connectFailures: 2 } });
      await h.waitForNotice('status', (n) => n.status === 'connected');
      expect(lifecycle(h.notices)).toEqual([
        'status:connecting',
        'reconnect:failed:0:recoverable',
        'status:disconnected',
        'reconnect:scheduled:1',
        'reconnect:attempt:1',
        'reconnect:failed:1:recoverable',
        'status:disconnected',
        'reconnect:scheduled:2',
        'reconnect:attempt:2',
        'status:connected',
      ]);
      const failed = h.notices.find((n) => n.t === 'reconnect' && n.phase === 'failed');
      expect(failed).toMatchObject({ reason: expect.stringContaining('ECONNREFUSED') });
      for (const n of h.notices) {
        if (n.t === 'reconnect' && n.phase === 'scheduled') {
          expect(n.delayMs).toBeGreaterThanOrEqual(8);
          expect(n.delayMs).toBeLessThanOrEqual(50);
        }
      }
      const connected = h.notices.find(isConnected);
      expect(connected).toMatchObject({
        meta: { loopback: true, connects: 3, attempts: 2, reason: expect.stringContaining('ECONNREFUSED'), elapsedMs: expect.any(Number) },
      });
    },
    T,
  );

  it(
    'exhaustion: reconnect exhausted is a notice; the thread stays up and attempts nothing more',
    async () => {
      const h = await startInstanceWorker({ settings: { connectFailures: 100 }, reconnect: { maxAttempts: 2 } });
      await h.waitForNotice('reconnect', (n) => n.phase === 'exhausted');
      // An instance's outcome is not the thread's: it still answers, and stops cleanly when asked.
      await new Promise((r) => setTimeout(r, 100));
      expect(h.host.state).toBe('up');
      expect(h.host.health().state).toBe('up');
      expect(lifecycle(h.notices)).toEqual([
        'status:connecting',
        'reconnect:failed:0:recoverable',
        'status:disconnected',
        'reconnect:scheduled:1',
        'reconnect:attempt:1',
        'reconnect:failed:1:recoverable',
        'status:disconnected',
        'reconnect:scheduled:2',
        'reconnect:attempt:2',
        'reconnect:failed:2:recoverable',
        'status:disconnected',
        'reconnect:exhausted:2:recoverable',
      ]);
      expect(await h.host.shutdown(2000)).toMatchObject({ class: 'shutdown', reason: 'shutdown' });
    },
    T,
  );

  it(
    'a hung connect times out (recoverable) and is retried',
    async () => {
      const h = await startInstanceWorker({
        settings: { hangOn: 'connect' },
        timeouts: { connectMs: 100 },
        reconnect: { maxAttempts: 1 },
      });
      await h.waitForNotice('reconnect', (n) => n.phase === 'exhausted');
      const failed = h.notices.filter((n) => n.t === 'reconnect' && n.phase === 'failed');
      expect(failed).toHaveLength(2);
      for (const f of failed) expect(f).toMatchObject({ class: 'recoverable', reason: 'connect timed out after 100 ms' });
    },
    T,
  );

  it(
    'an injected disconnect (poll throws ECONNRESET) → disconnected, reconnect from attempt 1, connected',
    async () => {
      const h = await startInstanceWorker({ settings: { faults: true } });
      await h.waitForNotice('status', (n) => n.status === 'connected');
      await h.send({ fault: 'disconnect' });
      await waitFor(() => h.notices.filter(isConnected).length >= 2);
      expect(lifecycle(h.notices)).toEqual([
        'status:connecting',
        'status:connected',
        'status:disconnected',
        'reconnect:scheduled:1',
        'reconnect:attempt:1',
        'status:connected',
      ]);
      expect(h.notices.find((n) => n.t === 'status' && n.status === 'disconnected')).toMatchObject({
        reason: expect.stringContaining('ECONNRESET'),
      });
      // The lost connection was closed before reconnecting.
      const logs = h.notices.filter((n) => n.t === 'log').map((n) => (n.t === 'log' ? n.msg : ''));
      expect(logs).toEqual(['loopback connected', 'loopback disconnected', 'loopback connected']);
    },
    T,
  );

  it(
    'a hung poll times out: a recoverable loss',
    async () => {
      const h = await startInstanceWorker({ settings: { hangOn: 'poll' }, timeouts: { pollMs: 100 } });
      const lost = await h.waitForNotice('status', (n) => n.status === 'disconnected');
      expect(lost.reason).toBe('poll timed out after 100 ms');
      await h.waitForNotice('reconnect', (n) => n.phase === 'attempt' && n.attempt === 1);
    },
    T,
  );

  it(
    'a stop during the reconnect wait ends at once, without further notices',
    async () => {
      const h = await startInstanceWorker({ settings: { connectFailures: 100 }, reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
      await h.waitForNotice('reconnect', (n) => n.phase === 'scheduled');
      const count = h.notices.length;
      const exit = await h.host.shutdown(5000);
      expect(exit).toMatchObject({ class: 'shutdown', reason: 'shutdown' });
      expect(lifecycle(h.notices.slice(count))).toEqual([]);
    },
    T,
  );
});

describe('fatal', () => {
  it(
    'fatalConnect → fatal notice, no reconnect; the worker stays up until stopped',
    async () => {
      const h = await startInstanceWorker({ settings: { fatalConnect: true } });
      const fatal = await h.waitForNotice('fatal');
      expect(fatal).toMatchObject({ code: 'fatal_connect', reason: expect.stringContaining('401') });
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(lifecycle(h.notices)).toEqual(['status:connecting', 'reconnect:failed:0:fatal', 'fatal:fatal_connect']);
      expect(h.host.state).toBe('up');
      // A send after a fatal error is held, never delivered (the runtime closes its queue instead).
      let settled = false;
      void h.send({ text: 'x' }).then(
        () => (settled = true),
        () => (settled = true),
      );
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(settled).toBe(false);
      expect(await h.host.shutdown(5000)).toMatchObject({ class: 'shutdown' });
    },
    T,
  );

  it(
    'requireToken with a wrong token → fatal; neither token appears in any notice',
    async () => {
      const expected = 'expected-token-3f9c1a';
      const given = 'given-token-77d2e0';
      const h = await startInstanceWorker({ settings: { requireToken: expected }, credentials: { token: given } });
      const fatal = await h.waitForNotice('fatal');
      expect(fatal.code).toBe('fatal_connect');
      await h.host.shutdown(5000);
      const all = JSON.stringify(h.notices);
      expect(all).not.toContain(expected);
      expect(all).not.toContain(given);
    },
    T,
  );

  it(
    'requireToken with the right token connects',
    async () => {
      const h = await startInstanceWorker({ settings: { requireToken: 'tok-1' }, credentials: { token: 'tok-1' } });
      await h.waitForNotice('status', (n) => n.status === 'connected');
    },
    T,
  );

  it(
    'a fatal poll error (injected) → fatal_poll, the connection is closed, nothing more',
    async () => {
      const h = await startInstanceWorker({ settings: { faults: true } });
      await h.waitForNotice('status', (n) => n.status === 'connected');
      await h.send({ fault: 'fatal' });
      const fatal = await h.waitForNotice('fatal');
      expect(fatal).toMatchObject({ code: 'fatal_poll', reason: expect.stringContaining('revoked') });
      await h.waitForNotice('log', (n) => n.msg === 'loopback disconnected');
      expect(lifecycle(h.notices)).toEqual(['status:connecting', 'status:connected', 'fatal:fatal_poll']);
    },
    T,
  );

  it(
    'a loopback setting of the wrong type is a fatal invalid_config naming it',
    async () => {
      const h = await startInstanceWorker({ settings: { latencyMs: 'slow' } });
      const fatal = await h.waitForNotice('fatal');
      expect(fatal.reason).toContain('latencyMs');
    },
    T,
  );
});

describe('channel module validation', () => {
  const cases: Array<[string, string, string]> = [
    ['no-send', 'loopback', 'send'],
    ['throws-at-load', 'loopback', 'broken at load'],
    ['no-default', 'loopback', 'no default export'],
    ['wrong-type', 'loopback', "type 'other'"],
  ];
  for (const [fixture, channelType, mention] of cases) {
    it(
      `${fixture} → start() answers channel_invalid naming the problem; nothing starts`,
      async () => {
        const h = await startInstanceWorker({ channel: channelFixtureUrl(fixture), channelType }, { start: false });
        const result = await h.host.call('start');
        expect(result).toMatchObject({ ok: false, code: 'channel_invalid', reason: expect.stringContaining(mention) });
        expect(await h.host.call('start')).toEqual(result);
        await new Promise((r) => setTimeout(r, 100));
        expect(lifecycle(h.notices)).toEqual([]);
        expect(h.host.state).toBe('up');
      },
      T,
    );
  }

  it(
    'a channel module slow to import gets one warning from its worker, with the time it took',
    async () => {
      const h = await startInstanceWorker({ channel: channelFixtureUrl('slow-import'), channelType: 'slow' });
      await waitFor(() => h.notices.some((n) => n.t === 'status' && n.status === 'connected'));
      const warnings = h.notices.filter((n) => n.t === 'log' && n.level === 'warn');
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatchObject({ msg: expect.stringContaining('threadvisor/channel') });
      expect((warnings[0] as { obj?: { importMs?: number } }).obj?.importMs).toBeGreaterThanOrEqual(100);
    },
    T,
  );

  it(
    'an instance worker is connected without loading Node\'s perf modules (about 1 ms of every start)',
    async () => {
      const h = await startInstanceWorker({ channel: channelFixtureUrl('builtins'), channelType: 'builtins' });
      await waitFor(() => h.notices.some(isConnected));
      const connected = h.notices.find(isConnected) as { meta?: { perfModules?: string[] } };
      expect(connected.meta?.perfModules).toEqual([]);
      // The heartbeat loads them at its first ping and answers it.
      await waitFor(() => h.host.health().lastPongAt !== null);
      expect(h.host.health().elu).toBeGreaterThanOrEqual(0);
    },
    T,
  );

  it(
    'a missing module → start() answers channel_invalid',
    async () => {
      const h = await startInstanceWorker({ channel: new URL('./does-not-exist.js', loopbackUrl) }, { start: false });
      expect(await h.host.call('start')).toMatchObject({ ok: false, code: 'channel_invalid', reason: expect.stringContaining('failed to load') });
    },
    T,
  );

  it(
    'a malformed boot fails the worker start',
    async () => {
      const err = await rejection(
        startInstanceWorker({}, { host: { workerData: { channel: 'x' }, transferList: [] }, start: false }),
      );
      expect(err).toMatchObject({ code: 'start_failure' });
    },
    T,
  );
});

describe('send (on the data port)', () => {
  it(
    'resolves with the receipt; consecutive successes come back as one run of acks',
    async () => {
      const h = await startInstanceWorker();
      await h.waitForNotice('status', (n) => n.status === 'connected');
      expect(await h.send({ text: 'a' })).toEqual({ externalId: 'lb-1' });
      expect(await h.send({ text: 'b' })).toEqual({ externalId: 'lb-2' });
      expect(h.acks).toEqual([
        { t: 'acks', i: expect.any(Number), seq: 0, receipts: [{ externalId: 'lb-1' }] },
        { t: 'acks', i: expect.any(Number), seq: 1, receipts: [{ externalId: 'lb-2' }] },
      ]);
    },
    T,
  );

  it(
    'before connected a send is held, and delivered once the channel connects',
    async () => {
      const h = await startInstanceWorker({ settings: { connectFailures: 2 } });
      const receipt = h.send({ text: 'a' });
      expect(await receipt).toEqual({ externalId: 'lb-1' });
      // It was held until the third connect succeeded.
      expect(lifecycle(h.notices).filter((l) => l === 'status:connected')).toHaveLength(1);
      expect(lifecycle(h.notices).filter((l) => l.startsWith('reconnect:failed'))).toHaveLength(2);
    },
    T,
  );

  it(
    'a hung send fails with a timeout within sendMs',
    async () => {
      const h = await startInstanceWorker({ settings: { hangOn: 'send' }, timeouts: { sendMs: 200 } });
      await h.waitForNotice('status', (n) => n.status === 'connected');
      const err = await rejection(h.send({ text: 'a' }));
      expect(err).toBeInstanceOf(SendFailure);
      expect((err as SendFailure).error).toEqual({ class: 'recoverable', code: 'timeout', reason: 'send timed out after 200 ms' });
    },
    T,
  );

  it(
    'a failed send fails with its class and code; the next one succeeds',
    async () => {
      const h = await startInstanceWorker({ settings: { sendFailures: 1 } });
      await h.waitForNotice('status', (n) => n.status === 'connected');
      const err = await rejection(h.send({ text: 'a' }));
      expect((err as SendFailure).error).toMatchObject({ class: 'recoverable', code: 'temporary_unavailable' });
      expect(await h.send({ text: 'b' })).toEqual({ externalId: 'lb-2' });
      // A send failure does not touch the connection.
      expect(lifecycle(h.notices)).toEqual(['status:connecting', 'status:connected']);
    },
    T,
  );

  it(
    'a batch of an epoch already handed back comes back unsent, untried',
    async () => {
      const h = await startInstanceWorker({ settings: { sendFailures: 1 } });
      await h.waitForNotice('status', (n) => n.status === 'connected');
      await rejection(h.send({ text: 'a' })); // epoch 0 fails and is handed back
      // A batch of that epoch, posted before the runtime learnt of the failure, is not sent.
      const late = new Promise<unknown>((resolve) => {
        h.port.on('message', (m: { t?: string; results?: Array<{ seq: number; unsent?: boolean }> }) => {
          if (m.t === 'acks' && m.results?.some((r) => r.seq === 99 && r.unsent)) resolve(m);
        });
      });
      h.port.postMessage({ t: 'send', i: HARNESS_IID, epoch: 0, seq: 99, messages: [{ text: 'late' }] });
      await late;
      expect(await h.send({ text: 'b' })).toEqual({ externalId: 'lb-2' });
    },
    T,
  );
});

describe('probes', () => {
  it(
    'ok probes: the first right after connect, then every interval',
    async () => {
      const h = await startInstanceWorker({ probeIntervalMs: 50 });
      await waitFor(() => h.notices.filter((n) => n.t === 'probe').length >= 3);
      const probes = h.notices.filter((n) => n.t === 'probe');
      for (const p of probes) expect(p).toMatchObject({ outcome: 'ok', latencyMs: expect.any(Number) });
      expect(h.notices.findIndex((n) => n.t === 'probe')).toBeGreaterThan(h.notices.findIndex(isConnected));
    },
    T,
  );

  it(
    'the first probe runs right after connect, not one interval later',
    async () => {
      const h = await startInstanceWorker({ probeIntervalMs: 600_000 });
      expect(await h.waitForNotice('probe', undefined, { timeoutMs: 5000 })).toMatchObject({ outcome: 'ok' });
    },
    T,
  );

  it(
    'degraded: only the probe notice',
    async () => {
      const h = await startInstanceWorker({ probeIntervalMs: 30, settings: { probe: 'degraded' } });
      await waitFor(() => h.notices.filter((n) => n.t === 'probe').length >= 3);
      expect(h.notices.find((n) => n.t === 'probe')).toMatchObject({ outcome: 'degraded', class: 'degraded', reason: expect.any(String) });
      expect(lifecycle(h.notices)).toEqual(['status:connecting', 'status:connected']);
    },
    T,
  );

  it(
    'failed: probe notice, disconnected, reconnect',
    async () => {
      const h = await startInstanceWorker({ probeIntervalMs: 10_000, settings: { probe: 'failed' } });
      await waitFor(() => h.notices.filter(isConnected).length >= 2);
      expect(h.notices.find((n) => n.t === 'probe')).toMatchObject({ outcome: 'failed', class: 'recoverable' });
      expect(lifecycle(h.notices).slice(0, 6)).toEqual([
        'status:connecting',
        'status:connected',
        'status:disconnected',
        'reconnect:scheduled:1',
        'reconnect:attempt:1',
        'status:connected',
      ]);
    },
    T,
  );

  it(
    'a hung probe times out: failed, recoverable',
    async () => {
      const h = await startInstanceWorker({ probeIntervalMs: 10_000, settings: { probe: 'hang' }, timeouts: { probeMs: 100 } });
      const probe = await h.waitForNotice('probe');
      expect(probe).toMatchObject({ outcome: 'failed', class: 'recoverable', reason: 'probe timed out after 100 ms' });
      expect(probe.latencyMs).toBeGreaterThanOrEqual(90);
      await h.waitForNotice('status', (n) => n.status === 'disconnected');
    },
    T,
  );

  it(
    'fatal: probe notice, then fatal_probe',
    async () => {
      const h = await startInstanceWorker({ probeIntervalMs: 10_000, settings: { probe: 'fatal' } });
      await h.waitForNotice('fatal');
      expect(h.notices.find((n) => n.t === 'probe')).toMatchObject({ outcome: 'failed', class: 'fatal' });
      expect(lifecycle(h.notices)).toEqual(['status:connecting', 'status:connected', 'fatal:fatal_probe']);
    },
    T,
  );

  it(
    'connections that break at once continue the attempt count and exhaust it (no endless reconnect loop)',
    async () => {
      // Every connect succeeds, every probe fails: each connection breaks right away.
      const h = await startInstanceWorker({ probeIntervalMs: 20, settings: { probe: 'failed' }, reconnect: { maxAttempts: 2, resetAfterMs: 60_000 } });
      await h.waitForNotice('reconnect', (n) => n.phase === 'exhausted');
      expect(lifecycle(h.notices).filter((l) => l.startsWith('status:') || l.startsWith('reconnect:s') || l.startsWith('reconnect:e'))).toEqual([
        'status:connecting',
        'status:connected',
        'status:disconnected',
        'reconnect:scheduled:1',
        'status:connected',
        'status:disconnected',
        'reconnect:scheduled:2',
        'status:connected',
        'status:disconnected',
        'reconnect:exhausted:2:recoverable',
      ]);
    },
    T,
  );

  it(
    'a connection that stayed up for resetAfterMs starts the attempt count over',
    async () => {
      const h = await startInstanceWorker({ settings: { faults: true }, reconnect: { maxAttempts: 1, resetAfterMs: 50 } });
      // Each connection is lost (an injected ECONNRESET) only after it has been up for 100 ms.
      for (let i = 1; i <= 3; i++) {
        await waitFor(() => h.notices.filter(isConnected).length >= i);
        await new Promise((r) => setTimeout(r, 100));
        await h.send({ fault: 'disconnect' });
      }
      await waitFor(() => h.notices.filter(isConnected).length >= 4);
      const scheduled = h.notices.filter((n) => n.t === 'reconnect' && n.phase === 'scheduled').map((n) => (n as { attempt: number }).attempt);
      expect(scheduled.every((a) => a === 1)).toBe(true);
      expect(h.notices.some((n) => n.t === 'reconnect' && n.phase === 'exhausted')).toBe(false);
    },
    T,
  );

  it(
    'maxAttempts 0: a lost connection exhausts at once',
    async () => {
      const h = await startInstanceWorker({ probeIntervalMs: 10_000, settings: { probe: 'failed' }, reconnect: { maxAttempts: 0 } });
      await h.waitForNotice('reconnect', (n) => n.phase === 'exhausted');
      expect(h.host.state).toBe('up');
      expect(lifecycle(h.notices)).toEqual([
        'status:connecting',
        'status:connected',
        'status:disconnected',
        'reconnect:exhausted:0:recoverable',
      ]);
    },
    T,
  );
});

describe('faults and stop', () => {
  async function faulted(fault: string, host: Parameters<typeof startInstanceWorker>[1] = {}): Promise<InstanceHarness> {
    const h = await startInstanceWorker({ settings: { faults: true } }, host);
    await h.waitForNotice('status', (n) => n.status === 'connected');
    // The thread dies before (or soon after) the ack leaves it: nothing to wait for here.
    void h.send({ fault }).catch(() => undefined);
    return h;
  }

  it('crash → exit class crash', async () => {
    const h = await faulted('crash');
    expect(await h.host.exited).toMatchObject({ class: 'crash', reason: 'loopback: injected crash' });
  }, T);

  it('exit → exit class exit, code 3', async () => {
    const h = await faulted('exit');
    expect(await h.host.exited).toMatchObject({ class: 'exit', code: 3 });
  }, T);

  it('hang → exit class hang (heartbeats)', async () => {
    const h = await faulted('hang', { host: { heartbeat: { intervalMs: 200, maxMissed: 3 } } });
    expect(await h.host.exited).toMatchObject({ class: 'hang' });
  }, T);

  it('oom → exit class oom under resourceLimits', async () => {
    const h = await faulted('oom', { host: { resourceLimits: { maxOldGenerationSizeMb: 32 } } });
    expect(await h.host.exited).toMatchObject({ class: 'oom' });
  }, T);

  it('faults off: a fault message is an ordinary send', async () => {
    const h = await startInstanceWorker();
    await h.waitForNotice('status', (n) => n.status === 'connected');
    expect(await h.send({ fault: 'exit' })).toEqual({ externalId: 'lb-1' });
    expect(h.host.state).toBe('up');
  }, T);

  it(
    'graceful shutdown calls disconnect',
    async () => {
      const h = await startInstanceWorker();
      await h.waitForNotice('status', (n) => n.status === 'connected');
      const exit = await h.host.shutdown(5000);
      expect(exit).toMatchObject({ class: 'shutdown', reason: 'shutdown', code: 0 });
      await h.waitForNotice('log', (n) => n.msg === 'loopback disconnected', { timeoutMs: 2000 });
    },
    T,
  );

  it(
    'a hung disconnect is cut by disconnectMs; the stop still completes gracefully',
    async () => {
      const h = await startInstanceWorker({ settings: { hangOn: 'disconnect' }, timeouts: { disconnectMs: 100 } });
      await h.waitForNotice('status', (n) => n.status === 'connected');
      const exit = await h.host.shutdown(5000);
      expect(exit).toMatchObject({ class: 'shutdown', reason: 'shutdown', code: 0 });
      const warn = await h.waitForNotice('log', (n) => n.msg === 'channel disconnect failed', { timeoutMs: 2000 });
      expect(warn).toMatchObject({ level: 'warn', obj: { reason: 'disconnect timed out after 100 ms' } });
    },
    T,
  );

  it(
    'a stop during a connect waits for it and closes the connection it opened',
    async () => {
      const h = await startInstanceWorker({ settings: { latencyMs: 300 } });
      await h.waitForNotice('status', (n) => n.status === 'connecting');
      const exit = await h.host.shutdown(5000);
      expect(exit).toMatchObject({ class: 'shutdown', reason: 'shutdown' });
      // The loopback's latency honours ctx.signal: the aborted connect never opened.
      expect(h.notices.some(isConnected)).toBe(false);
      expect(h.notices.some((n) => n.t === 'log' && n.msg === 'loopback disconnected')).toBe(false);
    },
    T,
  );
});
