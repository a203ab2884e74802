/**
 * A channel error's `retryAfterMs` (e.g. a 429's `Retry-After`) crosses the worker → main
 * boundary and is a floor on the next try: the send queue's retry and the worker's reconnect
 * after a failed connect or poll. REAL worker threads running the `rate-limited` fixture channel
 * (compiled: run `npx tsc -p tsconfig.build.json` first). Only lower bounds on delays.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ChannelError, InvalidConfigError } from '../src/errors.js';
import { Runtime } from '../src/index.js';
import type { RateLimitedReceipt } from './fixtures/channels/rate-limited.js';
import { fixtureUrl } from './helpers/fixtures.js';

const channel = fixtureUrl('channels/rate-limited');
const AFTER = 300;
const runtimes: Runtime[] = [];

afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
});

async function start(): Promise<Runtime> {
  const rt = await Runtime.start({
    // Backoffs far below the retry-after, so only the retry-after can explain the wait.
    delivery: { maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 10, jitter: 0 },
    reconnect: { maxAttempts: 3, baseMs: 5, maxMs: 10, jitter: 0 },
  });
  runtimes.push(rt);
  return rt;
}

const spec = (settings: Record<string, number>) => ({ name: 'rl', channelType: 'rate-limited', channel, settings });

describe('retry-after', { timeout: 20_000 }, () => {
  it('ChannelError takes a non-negative finite retryAfterMs, else InvalidConfigError', () => {
    const err = new ChannelError('slow down', { class: 'recoverable', code: 'rate_limited', retryAfterMs: 250 });
    expect(err).toMatchObject({ retryAfterMs: 250, details: { class: 'recoverable', channelCode: 'rate_limited', retryAfterMs: 250 } });
    expect(new ChannelError('x', { class: 'fatal' }).retryAfterMs).toBeUndefined();
    for (const bad of [-1, Number.NaN, Infinity, '5' as unknown as number]) {
      expect(() => new ChannelError('x', { class: 'recoverable', retryAfterMs: bad })).toThrow(InvalidConfigError);
    }
  });

  it('a failed send with retryAfterMs is retried no sooner, and delivery:retry reports it', async () => {
    const rt = await start();
    const retries: Array<Record<string, unknown>> = [];
    rt.on('delivery:retry', (e: Record<string, unknown>) => retries.push(e));
    const h = await rt.startInstance(spec({ sendRetryAfterMs: AFTER }), { waitFor: 'connected' });
    const receipt = (await rt.send(h.instanceId, { n: 1 })) as RateLimitedReceipt;
    expect(receipt.sendFailedAt).toBeTypeOf('number');
    expect(receipt.at - (receipt.sendFailedAt as number)).toBeGreaterThanOrEqual(AFTER);
    expect(retries).toHaveLength(1);
    expect(retries[0]).toMatchObject({ code: 'rate_limited', class: 'recoverable', retryAfterMs: AFTER, delayMs: AFTER, attempt: 1, nextAttempt: 2 });
    expect(h.status().status).toBe('connected');
  });

  it('a failed connect with retryAfterMs reconnects no sooner', async () => {
    const rt = await start();
    const reconnects: Array<Record<string, unknown>> = [];
    rt.on('instance:reconnect', (e: Record<string, unknown>) => reconnects.push(e));
    const h = await rt.startInstance(spec({ connectRetryAfterMs: AFTER }), { waitFor: 'connected' });
    const receipt = (await rt.send(h.instanceId, { n: 1 })) as RateLimitedReceipt;
    expect(receipt.connects).toBe(1);
    expect(receipt.connectedAt - (receipt.connectFailedAt as number)).toBeGreaterThanOrEqual(AFTER);
    expect(reconnects.find((e) => e['phase'] === 'scheduled')).toMatchObject({ delayMs: AFTER });
  });

  it('a failed poll with retryAfterMs reconnects no sooner', async () => {
    const rt = await start();
    const h = await rt.startInstance(spec({ pollRetryAfterMs: AFTER }), { waitFor: 'connected' });
    // The first poll fails at once: the instance reconnects, then connects a second time.
    const end = Date.now() + 10_000;
    let receipt: RateLimitedReceipt;
    do {
      receipt = (await rt.send(h.instanceId, { n: 1 })) as RateLimitedReceipt;
      if (receipt.connects >= 2) break;
      await new Promise((r) => setTimeout(r, 50));
    } while (Date.now() < end);
    expect(receipt.connects).toBe(2);
    expect(receipt.connectedAt - (receipt.pollFailedAt as number)).toBeGreaterThanOrEqual(AFTER);
  });
});
