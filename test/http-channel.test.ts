/**
 * HTTP channels (`threadvisor/http`) against the platform simulator (`demo/platform-sim.ts`) over
 * real HTTP: the simulator alone (rate limit, 409 on concurrent long-polls, revocation); the
 * helper's option checks and error mapping in this thread; and a real Runtime with REAL worker
 * threads running the telegram-sim channel (`demo/channels/telegram-sim.ts`, compiled: run
 * `npx tsc -p tsconfig.build.json` first): updates in order through the long-poll offset,
 * receipts, 429 with its retry delay, a revoked token (fatal, no restart loop), a hang cut by
 * the send budget, two pollers of one token (conflict). No token ever shows in an event or a log
 * line.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startPlatformSim, type PlatformSim } from '../demo/platform-sim.js';
import { ChannelError, DeliveryFailedError, InvalidConfigError } from '../src/errors.js';
import { httpChannel, type HttpChannelOptions } from '../src/http.js';
import type { ChannelContext, ChannelInstance } from '../src/channel.js';
import { INSTANCE_EVENTS, Runtime, type RuntimeOptions } from '../src/index.js';

const CHANNEL = new URL('../dist/demo/channels/telegram-sim.js', import.meta.url);
const TOKEN = '123456:SECRET-token-abcdef';
const ENCODED = encodeURIComponent(TOKEN);

const sims: PlatformSim[] = [];
const runtimes: Runtime[] = [];

async function sim(options: Parameters<typeof startPlatformSim>[0] = {}): Promise<PlatformSim> {
  const s = await startPlatformSim(options);
  sims.push(s);
  return s;
}

afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
  await Promise.all(sims.splice(0).map((s) => s.stop()));
});

/** Everything the runtime says: every event payload and every log line, as text. */
interface Said {
  text(): string;
  messages: unknown[];
}

async function runtime(opts: RuntimeOptions = {}): Promise<{ rt: Runtime; said: Said }> {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  const messages: unknown[] = [];
  const rt = await Runtime.start({
    logger: pino({ level: 'trace' }, stream),
    onMessage: (m) => void messages.push(m),
    restart: { maxRestarts: 3, periodMs: 30_000, backoff: { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 }, recoverAfterMs: Infinity },
    reconnect: { maxAttempts: 3, baseMs: 10, maxMs: 50, jitter: 0 },
    ...opts,
  });
  runtimes.push(rt);
  const events: string[] = [];
  for (const name of INSTANCE_EVENTS) rt.on(`instance:${name}`, (e: unknown) => events.push(JSON.stringify({ name, e })));
  for (const name of ['retry', 'gave_up', 'delivered', 'attempt'] as const) rt.on(`delivery:${name}`, (e: unknown) => events.push(JSON.stringify({ name, e })));
  return { rt, said: { text: () => [...lines, ...events].join('\n'), messages } };
}

function expectNoToken(text: string): void {
  expect(text).not.toContain(TOKEN);
  expect(text).not.toContain(ENCODED);
  expect(text).not.toContain('SECRET-token');
}

const spec = (s: PlatformSim, token = TOKEN, name = 'tg') => ({ name, channelType: 'telegram-sim', channel: CHANNEL, settings: { baseUrl: s.url }, credentials: { token } });

async function until(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the platform simulator', { timeout: 15_000 }, () => {
  it('rate-limits per token: 429 with retry_after in the body and Retry-After; requests in the window are over the limit', async () => {
    const s = await sim({ rateLimit: { perSec: 3 } });
    const statuses: number[] = [];
    let last: { body: unknown; retryAfter: string | null } | undefined;
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${s.url}/botA:1/getMe`);
      statuses.push(res.status);
      if (res.status === 429) last = { body: await res.json(), retryAfter: res.headers.get('retry-after') };
      else await res.text();
    }
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    expect(last?.body).toMatchObject({ ok: false, error_code: 429, parameters: { retry_after: 1 } });
    expect(last?.retryAfter).toBe('1');
    // Another token has its own budget.
    expect((await fetch(`${s.url}/botB:2/getMe`)).status).toBe(200);
    expect(s.stats()['A:1']).toMatchObject({ requests: 5, rateLimited: 2, overLimit: 1 });
    expect(s.stats()['B:2']).toMatchObject({ requests: 1, rateLimited: 0, overLimit: 0 });
  });

  it('a second long-poll of one token ends the first with 409; offsets confirm updates; revoke answers 401', async () => {
    const s = await sim();
    const first = fetch(`${s.url}/botC:3/getUpdates?timeout=5`);
    await until(() => s.stats()['C:3']?.requests === 1);
    const second = fetch(`${s.url}/botC:3/getUpdates?timeout=5`);
    const r1 = await first;
    expect(r1.status).toBe(409);
    expect(await r1.json()).toMatchObject({ ok: false, error_code: 409 });
    s.push('C:3', 'hello');
    const r2 = await second;
    expect(await r2.json()).toMatchObject({ ok: true, result: [{ update_id: 1, message: { text: 'hello' } }] });
    s.push('C:3', 'again');
    const r3 = await (await fetch(`${s.url}/botC:3/getUpdates?offset=2&timeout=0`)).json();
    expect(r3).toMatchObject({ ok: true, result: [{ update_id: 2 }] });
    expect(s.stats()['C:3']).toMatchObject({ conflicts: 1, confirmedOffset: 2 });
    s.revoke('C:3');
    expect((await fetch(`${s.url}/botC:3/getMe`)).status).toBe(401);
  });
});

describe('httpChannel', { timeout: 15_000 }, () => {
  const base: HttpChannelOptions = { type: 'x', baseUrl: 'http://127.0.0.1:1', send: { path: '/send', body: (m) => m } };

  it('checks its options: InvalidConfigError naming each bad field', () => {
    const bad = (o: object): InvalidConfigError => {
      try {
        httpChannel({ ...base, ...o } as HttpChannelOptions);
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidConfigError);
        return err as InvalidConfigError;
      }
      throw new Error('no error');
    };
    expect(bad({ poll: { path: '/p', timeoutSec: -1, toMessages: () => ({ messages: [] }) } }).issues.map((i) => i.path)).toEqual(['poll.timeoutSec']);
    expect(bad({ send: { path: 'send', body: 1 } }).issues.map((i) => i.path).sort()).toEqual(['send.body', 'send.path']);
    expect(bad({ baseUrl: 'ftp://x/botSECRET-token' }).message).not.toContain('SECRET-token');
    expect(bad({ connections: 1, poll: { path: '/p', toMessages: () => ({ messages: [] }) } }).issues.map((i) => i.path)).toEqual(['connections']);
    expect(bad({ timeoutMs: 0, extra: true }).issues.map((i) => i.path).sort()).toEqual(['extra', 'timeoutMs']);
    const ok = httpChannel(base);
    expect(ok.type).toBe('x');
    expect(Object.keys(ok.create({ id: 'i', name: 'n', channelType: 'x', settings: {}, credentials: {} })).sort()).toEqual(['connect', 'disconnect', 'send']);
  });

  it('maps statuses to ChannelErrors: 429 rate_limited with retryAfterMs, 5xx recoverable, 401 fatal; no token in messages', async () => {
    const s = await sim({ rateLimit: { perSec: 1 } });
    const ch = (await import('../demo/channels/telegram-sim.js')).default;
    const instance: ChannelInstance<{ baseUrl: string }, { token: string }> = { id: 'i', name: 'n', channelType: 'telegram-sim', settings: { baseUrl: s.url }, credentials: { token: TOKEN } };
    const h = ch.create(instance);
    const ctx = { instance, logger: console, signal: new AbortController().signal, emit: () => undefined, cursor: undefined } as unknown as ChannelContext<{ baseUrl: string }, { token: string }>;
    const info = { attempt: 1, redelivery: false };
    const caught = async (p: unknown): Promise<ChannelError & { status?: number; retryAfterMs?: number }> => {
      try {
        await p;
      } catch (err) {
        expect(err).toBeInstanceOf(ChannelError);
        expectNoToken(`${(err as Error).message} ${(err as Error).stack ?? ''}`);
        return err as ChannelError & { retryAfterMs?: number };
      }
      throw new Error('no error');
    };
    expect(await h.connect(ctx)).toEqual({ username: 'sim_bot' }); // request 1 of this second
    const limited = await caught(h.send(ctx, { chatId: 1, text: 'a' }, info));
    expect(limited).toMatchObject({ class: 'recoverable', channelCode: 'rate_limited', status: 429, retryAfterMs: 1000 });
    expect(limited.message).toContain('retry after 1000 ms');
    await new Promise((r) => setTimeout(r, 1100));
    s.failNext(1, { method: 'sendMessage' });
    expect(await caught(h.send(ctx, { chatId: 1, text: 'b' }, info))).toMatchObject({ class: 'recoverable', channelCode: 'http_500', status: 500 });
    s.revoke(TOKEN);
    expect(await caught(h.send(ctx, { chatId: 1, text: 'c' }, info))).toMatchObject({ class: 'fatal', channelCode: 'unauthorized', status: 401 });
    await h.disconnect(ctx);
    await s.stop();
    const down = await caught(h.connect(ctx));
    expect(down).toMatchObject({ class: 'recoverable', channelCode: 'ECONNREFUSED' });
    await h.disconnect(ctx);
  });
});

describe('telegram-sim on a real Runtime', { timeout: 20_000 }, () => {
  it('connects, receives the updates in order through the offset, sends with receipts', async () => {
    const s = await sim({ updates: { perSec: 100, max: 40 } });
    const { rt, said } = await runtime();
    const h = await rt.startInstance(spec(s), { waitFor: 'connected' });
    const receipts = await Promise.all([1, 2, 3].map((n) => rt.send(h.instanceId, { chatId: 7, text: `out ${n}` })));
    expect(receipts).toEqual([{ messageId: 1 }, { messageId: 2 }, { messageId: 3 }]);
    await until(() => said.messages.length >= 40);
    expect(said.messages.map((m) => (m as { update_id: number }).update_id)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(s.stats()[TOKEN]).toMatchObject({ sent: 3, conflicts: 0, maxConcurrentPolls: 1 });
    // The next poll confirmed the last update.
    await until(() => s.stats()[TOKEN]?.confirmedOffset === 41);
    await rt.stopInstance(h.instanceId);
    expectNoToken(said.text());
  });

  it('a 429 is rate_limited with its retry delay; a revoked token ends the instance in error without a restart loop', async () => {
    const s = await sim({ rateLimit: { perSec: 2 } });
    const { rt, said } = await runtime({ delivery: { maxAttempts: 1 } });
    const h = await rt.startInstance(spec(s), { waitFor: 'connected' });
    // getMe used one request of this second: one more send goes through, the next is limited.
    const outcomes = await Promise.allSettled([1, 2].map((n) => rt.send(h.instanceId, { chatId: 1, text: `m${n}` })));
    const failed = outcomes.find((o) => o.status === 'rejected');
    expect(failed).toBeDefined();
    const err = (failed as PromiseRejectedResult).reason as DeliveryFailedError;
    expect(err).toBeInstanceOf(DeliveryFailedError);
    expect(err.lastError).toMatchObject({ class: 'recoverable', channelCode: 'rate_limited' });
    expect(err.message).toMatch(/retry after \d+ ms/);
    expect(err.lastError).toMatchObject({ message: expect.stringMatching(/retry after \d+ ms/) });
    expect(s.stats()[TOKEN]?.rateLimited).toBeGreaterThanOrEqual(1);

    s.revoke(TOKEN);
    expect(await rt.whenStatus(h.instanceId, 'error', { timeoutMs: 5000 })).toBe('error');
    expect(h.status()).toMatchObject({ status: 'error', lastRestartClass: 'fatal', lastError: expect.stringContaining('unauthorized') });
    const before = s.stats()[TOKEN]?.requests ?? 0;
    const restarts = h.status().restartCount;
    await new Promise((r) => setTimeout(r, 800));
    expect(h.status()).toMatchObject({ status: 'error', restartCount: restarts });
    expect(s.stats()[TOKEN]?.requests).toBe(before);
    expectNoToken(said.text());
    expectNoToken(err.message);
  });

  it("a 429's retry_after is honoured by the send queue: every message delivered, no request over the limit", async () => {
    const s = await sim({ rateLimit: { perSec: 2 } });
    const { rt, said } = await runtime({ delivery: { maxAttempts: 5, initialDelayMs: 10, maxDelayMs: 50, jitter: 0 } });
    const retries: Array<{ code?: string; retryAfterMs?: number; delayMs: number }> = [];
    rt.on('delivery:retry', (e: { code?: string; retryAfterMs?: number; delayMs: number }) => retries.push(e));
    const h = await rt.startInstance(spec(s), { waitFor: 'connected' });
    const receipts = await Promise.all([1, 2, 3, 4, 5].map((n) => rt.send(h.instanceId, { chatId: 1, text: `m${n}` })));
    expect(receipts).toHaveLength(5);
    const stats = s.stats()[TOKEN];
    expect(stats?.rateLimited).toBeGreaterThanOrEqual(1);
    expect(stats?.overLimit).toBe(0);
    expect(stats?.sent).toBe(5);
    expect(retries.length).toBeGreaterThanOrEqual(1);
    for (const r of retries) {
      expect(r).toMatchObject({ code: 'rate_limited', retryAfterMs: expect.any(Number) });
      expect(r.delayMs).toBeGreaterThanOrEqual(r.retryAfterMs as number);
    }
    expectNoToken(said.text());
  });

  it('a hung send is cut by timeouts.sendMs and retried', async () => {
    const s = await sim();
    const { rt, said } = await runtime({ timeouts: { sendMs: 400 }, delivery: { maxAttempts: 2, initialDelayMs: 10, jitter: 0 } });
    const h = await rt.startInstance(spec(s), { waitFor: 'connected' });
    const retries: Array<{ code?: string }> = [];
    rt.on('delivery:retry', (e: { code?: string }) => retries.push(e));
    s.hang(5000, { method: 'sendMessage' });
    const t0 = Date.now();
    expect(await rt.send(h.instanceId, { chatId: 1, text: 'slow' })).toEqual({ messageId: 1 });
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(retries).toMatchObject([{ code: 'timeout' }]);
    expect(h.status().status).toBe('connected');
    expectNoToken(said.text());
  });

  it('two instances long-polling one token: the platform answers 409 and the channel reports a fatal conflict', async () => {
    const s = await sim();
    const { rt, said } = await runtime();
    const a = await rt.startInstance(spec(s, TOKEN, 'a'), { waitFor: 'connected' });
    await until(() => (s.stats()[TOKEN]?.requests ?? 0) >= 2); // getMe, then a's long-poll is held
    const b = await rt.startInstance(spec(s, TOKEN, 'b'), { waitFor: 'connected' });
    expect(await rt.whenStatus(a.instanceId, 'error', { timeoutMs: 5000 })).toBe('error');
    expect(a.status()).toMatchObject({ lastRestartClass: 'fatal', lastError: expect.stringMatching(/conflict: another client polls this token/) });
    expect(s.stats()[TOKEN]?.conflicts).toBeGreaterThanOrEqual(1);
    expect(b.status().status).toBe('connected');
    expectNoToken(said.text());
  });
});
