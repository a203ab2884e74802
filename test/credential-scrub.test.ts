/**
 * Credentials never leave the main thread in any form: literal, upper/lower-cased, URI-encoded,
 * JSON-escaped, base64 (standard and url-safe) or inside a `Basic` authorization header. Checked
 * on the send path (rejections, `delivery:*` events on the runtime and on diagnostics_channel,
 * logs), on a worker crash (`threadvisor:worker:exit`) and on the `InstanceServer` handed out by
 * `startInstance` / `whereis`.
 */
import { Buffer } from 'node:buffer';
import diagnostics_channel from 'node:diagnostics_channel';
import { Writable } from 'node:stream';
import { inspect } from 'node:util';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DeliveryFailedError } from '../src/errors.js';
import { REDACTED, collectSecrets, scrubSecrets, scrubValue, scrubWith } from '../src/instance/record.js';
import * as serverModule from '../src/instance/server.js';
import { OutboundQueue } from '../src/runtime/outbound/queue.js';
import { Runtime, type RuntimeOptions } from '../src/runtime/runtime.js';
import { fixtureUrl, waitFor } from './helpers/fixtures.js';

const USER = 'svc-robot';
/** Mixed case, and characters that URI-encoding and JSON-escaping change. */
const TOKEN = 'sk_Live/Tok+en"42=Zz-9';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const b64url = (s: string): string => Buffer.from(s).toString('base64url');

/** Every form of the token a leak could take. */
const FORMS: readonly string[] = [
  TOKEN,
  TOKEN.toUpperCase(),
  TOKEN.toLowerCase(),
  encodeURIComponent(TOKEN),
  JSON.stringify(TOKEN).slice(1, -1),
  b64(TOKEN),
  b64(TOKEN).replace(/=+$/, ''),
  b64url(TOKEN),
  b64(`${USER}:${TOKEN}`),
  b64url(`${USER}:${TOKEN}`),
];

/** The forms of the token found in `text` (case-insensitively, also as they look once JSON-escaped). */
function leaks(text: string): string[] {
  const hay = text.toLowerCase();
  const found = new Set<string>();
  for (const f of FORMS) {
    for (const form of [f, JSON.stringify(f).slice(1, -1)]) if (hay.includes(form.toLowerCase())) found.add(f);
  }
  return [...found];
}

/** JSON of anything, errors included with their message, stack, cause and own properties. */
function dump(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v instanceof Error) return { ...v, name: v.name, message: v.message, stack: v.stack, cause: v.cause };
    if (typeof v === 'bigint') return String(v);
    return v;
  });
}

/** `dump` plus `util.inspect`, which walks an error's cause chain and own properties its own way. */
function everything(value: unknown): string {
  return `${dump(value)}\n${inspect(value, { depth: 12, showHidden: true })}`;
}

describe('credential scrubbing: the scrubber', () => {
  const creds = { user: USER, token: TOKEN };

  it('removes the literal, case variants, URI-encoded, JSON-escaped and base64 forms of every value', () => {
    const secrets = collectSecrets(creds);
    for (const form of FORMS) {
      const out = scrubWith(`before ${form} after`, secrets);
      expect(out, form).toBe(`before ${REDACTED} after`);
    }
    expect(scrubSecrets(`x ${TOKEN.toUpperCase()} y ${TOKEN.toLowerCase()} z`, creds)).toBe(`x ${REDACTED} y ${REDACTED} z`);
  });

  it('removes a token base64-encoded inside longer data, whatever user or text surrounds it', () => {
    const secrets = collectSecrets({ token: TOKEN });
    for (const prefix of ['', 'a', 'ab', 'abc', 'api:', 'someone-else:', 'Bearer ']) {
      for (const suffix of ['', '!', '?x', ':rest-of-it']) {
        const encoded = b64(`${prefix}${TOKEN}${suffix}`);
        const out = scrubWith(`Authorization: Basic ${encoded}`, secrets);
        expect(leaks(out), `${prefix}|${suffix}`).toEqual([]);
        expect(out).toContain(REDACTED);
      }
    }
  });

  it('finds nested values and pairs users with secrets for Basic auth', () => {
    const secrets = collectSecrets({ oauth: { clientId: 'client-77', clientSecret: 'cs-abcdef' }, list: ['deep-value-1'] });
    expect(scrubWith(`Basic ${b64('client-77:cs-abcdef')}`, secrets)).toBe(`Basic ${REDACTED}`);
    expect(scrubWith('v=DEEP-VALUE-1', secrets)).toBe(`v=${REDACTED}`);
  });

  it('leaves short values and ordinary text alone, and replaces in one pass', () => {
    const secrets = collectSecrets({ pin: '123', token: 'tokn' });
    expect(scrubWith('pin 123 stays, TOKN goes', secrets)).toBe(`pin 123 stays, ${REDACTED} goes`);
    expect(scrubWith('nothing here', collectSecrets({}))).toBe('nothing here');
    // the marker itself is never scrubbed again, even by a secret it contains
    expect(scrubWith('dact', collectSecrets({ t: 'dact' }))).toBe(REDACTED);
  });

  it('scrubValue scrubs error codes too', () => {
    const secrets = collectSecrets(creds);
    const err = Object.assign(new Error(`bad ${TOKEN}`), { code: `E_${TOKEN}` });
    expect(leaks(dump(scrubValue({ err }, secrets)))).toEqual([]);
  });
});

describe('credential scrubbing: OutboundQueue redact', () => {
  it('rejects a redact that is not a function', () => {
    expect(() => new OutboundQueue({ instanceId: 'q', redact: 'nope' as unknown as (t: string) => string })).toThrow(/redact/);
  });

  it('scrubs the rejection (message, stack, cause, details) and the retry / gave_up / requeued payloads', async () => {
    const secrets = collectSecrets({ user: USER, token: TOKEN });
    const q = new OutboundQueue({
      instanceId: 'q',
      retry: { maxAttempts: 2, initialDelayMs: 0, maxDelayMs: 0, jitter: 0 },
      maxCrashes: 1,
      redact: (text) => scrubWith(text, secrets),
    });
    const events: unknown[] = [];
    for (const name of ['delivery:retry', 'delivery:gave_up', 'delivery:requeued']) q.on(name, (p: unknown) => events.push(p));
    const reason = `send failed: 401 ${TOKEN.toUpperCase()} Basic ${b64(`${USER}:${TOKEN}`)}`;
    const failed = q.enqueue({ n: 1 }, { idempotencyKey: null }).catch((e: unknown) => e);
    for (let attempt = 0; attempt < 2; attempt++) {
      await waitFor(() => q.ready);
      const b = q.take(1);
      q.ack([{ seq: b.seq, ok: false, error: { class: 'recoverable', code: `E_${TOKEN}`, reason } }]);
    }
    const err = await failed;
    expect(err).toBeInstanceOf(DeliveryFailedError);
    const crashed = q.enqueue({ n: 2 }, { idempotencyKey: null }).catch((e: unknown) => e);
    await waitFor(() => q.ready);
    q.take(1);
    q.requeueInFlight(`worker crash: died with ${b64(TOKEN)}`);
    const err2 = await crashed;
    expect(err2).toMatchObject({ code: 'delivery_failed', reason: 'crashed' });
    q.close(`stopped because of ${TOKEN}`);
    const closed = await q.enqueue({ n: 3 }).catch((e: unknown) => e);
    expect(events.length).toBeGreaterThanOrEqual(3);
    const all = [everything(err), everything(err2), everything(closed), dump(events)].join('\n');
    expect(all).toContain(REDACTED);
    expect(leaks(all)).toEqual([]);
  });
});

describe('credential scrubbing: runtime with real workers', { timeout: 60_000 }, () => {
  const runtimes: Runtime[] = [];
  afterEach(async () => {
    await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
  });

  async function start(opts: RuntimeOptions): Promise<Runtime> {
    const rt = await Runtime.start({
      restart: { maxRestarts: 10, periodMs: 30_000, backoff: { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 }, recoverAfterMs: Infinity },
      reconnect: { maxAttempts: 5, baseMs: 10, maxMs: 40, jitter: 0 },
      heartbeat: { intervalMs: 250, maxMissed: 4 },
      delivery: { maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 10, jitter: 0 },
      ...opts,
    });
    runtimes.push(rt);
    return rt;
  }

  it('a failing send and a crashing worker leak no form of the token into errors, events, diagnostics or logs', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const channelNames = [
      ...['queued', 'attempt', 'retry', 'delivered', 'gave_up', 'requeued'].map((e) => `threadvisor:delivery:${e}`),
      ...['exit', 'heartbeat_missed'].map((e) => `threadvisor:worker:${e}`),
      ...['child_exited', 'child_restarting', 'child_restarted', 'escalated'].map((e) => `threadvisor:supervisor:${e}`),
      ...serverModule.INSTANCE_EVENTS.map((e) => `threadvisor:instance:${e}`),
      'threadvisor:message:failed',
    ];
    const published: Array<{ channel: string; payload: unknown }> = [];
    const onPublish = (payload: unknown, name: string | symbol): void => void published.push({ channel: String(name), payload });
    for (const n of channelNames) diagnostics_channel.subscribe(n, onPublish);
    try {
      const rt = await start({ logger: pino({ level: 'trace' }, sink) });
      const events: Array<{ event: string; payload: unknown }> = [];
      const names = ['delivery:retry', 'delivery:gave_up', 'delivery:requeued', ...serverModule.INSTANCE_EVENTS.map((e) => `instance:${e}` as const)] as const;
      for (const name of names) rt.on(name, (payload: unknown) => events.push({ event: name, payload }));
      const server = await rt.startInstance({
        name: 'leaky',
        channelType: 'leaky',
        channel: fixtureUrl('runtime-leaky'),
        credentials: { user: USER, token: TOKEN },
      });
      await waitFor(() => server.currentStatus === 'connected');

      // a send whose every attempt throws the token around
      const failed = await rt.send(server.instanceId, { n: 1 }).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(DeliveryFailedError);
      expect(failed).toMatchObject({ code: 'delivery_failed', reason: 'max_attempts', attempts: 2 });
      expect(events.some((e) => e.event === 'delivery:retry')).toBe(true);
      expect(events.some((e) => e.event === 'delivery:gave_up')).toBe(true);
      expect(published.some((p) => p.channel === 'threadvisor:delivery:retry')).toBe(true);
      expect(published.some((p) => p.channel === 'threadvisor:delivery:gave_up')).toBe(true);
      expect(server.status().lastError).toContain(REDACTED);

      // a send that crashes its worker, every time it is delivered, with the token in the crash
      const crashed = await rt.send(server.instanceId, { crash: true }).catch((e: unknown) => e);
      expect(crashed).toMatchObject({ code: 'delivery_failed', reason: 'crashed' });
      const exits = published.filter((p) => p.channel === 'threadvisor:worker:exit');
      expect(exits.length).toBeGreaterThanOrEqual(1);
      expect(exits[0]!.payload).toMatchObject({ exit: { class: 'crash', reason: expect.stringContaining(`leaky crash with token ${REDACTED}`) } });
      await waitFor(() => server.currentStatus === 'connected');

      const all = [
        everything(failed),
        everything(crashed),
        dump(events),
        dump(published),
        lines.join(''),
        dump(server.status()),
        dump(await rt.health(server.instanceId)),
      ].join('\n');
      expect(all).toContain('401 for https://api.example/bot'); // the failure text is there...
      expect(all).toContain(REDACTED);
      expect(leaks(all)).toEqual([]); // ...without any form of the token
    } finally {
      for (const n of channelNames) diagnostics_channel.unsubscribe(n, onPublish);
    }
  });

  it('the InstanceServer from startInstance / whereis exposes no accessor that returns the credentials', async () => {
    const rt = await start({ logger: pino({ level: 'silent' }) });
    const server = await rt.startInstance({ name: 'leaky', channelType: 'leaky', channel: fixtureUrl('runtime-leaky'), credentials: { user: USER, token: TOKEN } });
    await waitFor(() => server.currentStatus === 'connected');
    expect(rt.whereis(server.instanceId)).toBe(server);
    const reached: unknown[] = [];
    for (let o: object | null = server; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
      for (const key of [...Object.getOwnPropertyNames(o), ...Object.getOwnPropertySymbols(o)]) {
        if (key === 'constructor') continue;
        let v: unknown;
        try {
          v = (server as unknown as Record<string | symbol, unknown>)[key];
          if (typeof v === 'function' && typeof key === 'symbol') v = (v as () => unknown).call(server);
        } catch {
          continue;
        }
        if (typeof v !== 'function') reached.push(v);
      }
    }
    // nothing symbol-keyed in the server's module either
    expect(Object.values(serverModule).some((v) => typeof v === 'symbol')).toBe(false);
    const all = [dump(reached), everything(server), dump(server), dump(server.getInstance())].join('\n');
    expect(leaks(all)).toEqual([]);
    // the worker still got the credentials: the channel echoed them, scrubbed
    const err = await rt.send(server.instanceId, { n: 1 }).catch((e: unknown) => e);
    expect((err as Error).message).toContain(`bot${REDACTED}/send`);
  });
});
