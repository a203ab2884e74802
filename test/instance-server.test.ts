import diagnostics_channel from 'node:diagnostics_channel';
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import { pino, type Logger } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { InvalidConfigError } from '../src/errors.js';
import * as barrel from '../src/instance/index.js';
import {
  INSTANCE_EVENTS,
  InstanceServer,
  MAX_REASON_LENGTH,
  REDACTED,
  collectSecrets,
  instanceSchema,
  parseInstance,
  redactInstance,
  renderReason,
  scrubSecrets,
  scrubValue,
  type InstanceInput,
} from '../src/instance/index.js';

const silent = pino({ level: 'silent' });

/** A pino logger writing JSON lines into memory. */
function memoryLogger(level = 'trace'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: pino({ level }, { write: (l: string) => void lines.push(l) }), lines };
}

const base: InstanceInput = { name: 'support-bot', channelType: 'telegram' };

function make(input: Partial<InstanceInput> = {}, opts: ConstructorParameters<typeof InstanceServer>[1] = {}): InstanceServer {
  return new InstanceServer({ ...base, ...input }, { logger: silent, ...opts });
}

/** Records every instance event emitted on `s`, in order, as [name, payload]. */
function record(s: InstanceServer): Array<[string, Record<string, unknown>]> {
  const out: Array<[string, Record<string, unknown>]> = [];
  for (const e of INSTANCE_EVENTS) s.on(`instance:${e}`, (p: Record<string, unknown>) => out.push([e, p]));
  return out;
}

const names = (evs: Array<[string, unknown]>): string[] => evs.map(([n]) => n);

afterEach(() => {
  vi.useRealTimers();
});

describe('Instance record', { timeout: 10_000 }, () => {
  it('parses with defaults and a generated UUID id', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_700_000_000_000);
    const a = parseInstance(base);
    const b = parseInstance(base);
    expect(a.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(a.id).not.toBe(b.id);
    expect(a).toMatchObject({ name: 'support-bot', channelType: 'telegram', credentials: {}, settings: {}, status: 'starting', insertedAt: 1_700_000_000_000 });
    // default objects are not shared between records
    expect(a.credentials).not.toBe(b.credentials);
    expect(a.settings).not.toBe(b.settings);
    const c = parseInstance({ ...base, id: 'fixed', credentials: { token: 't' }, settings: { x: 1 }, status: 'connected', insertedAt: 5 });
    expect(c).toEqual({ ...base, id: 'fixed', credentials: { token: 't' }, settings: { x: 1 }, status: 'connected', insertedAt: 5 });
  });

  it('throws InvalidConfigError listing every bad field path', () => {
    let err: unknown;
    try {
      parseInstance({ id: '', name: '', credentials: ['x'], settings: 3, status: 'bogus', insertedAt: -1, extra: true });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidConfigError);
    const e = err as InvalidConfigError;
    expect(e.code).toBe('invalid_config');
    const paths = e.issues.map((i) => i.path).sort();
    expect(paths).toEqual(expect.arrayContaining(['id', 'name', 'channelType', 'credentials', 'settings', 'status', 'insertedAt']));
    expect(e.message).toContain('invalid instance');
    expect(e.message).toContain('extra');
    expect(() => parseInstance(null)).toThrow(InvalidConfigError);
  });

  it('InstanceServer.schema() is the instance schema', () => {
    expect(InstanceServer.schema()).toBe(instanceSchema);
    expect(InstanceServer.schema().safeParse(base).success).toBe(true);
  });

  it('redactInstance keeps credential keys, replaces values and scrubs settings', () => {
    const i = parseInstance({ ...base, credentials: { token: 'abcd-1234', pin: 12 }, settings: { url: 'https://x/botabcd-1234/', n: 1, nested: ['abcd-1234'] } });
    const r = redactInstance(i);
    expect(r.credentials).toEqual({ token: REDACTED, pin: REDACTED });
    expect(r.settings).toEqual({ url: `https://x/bot${REDACTED}/`, n: 1, nested: [REDACTED] });
    expect(i.credentials.token).toBe('abcd-1234'); // the input is untouched
  });
});

describe('secret scrubbing', { timeout: 10_000 }, () => {
  it('replaces credential strings (length ≥ 4, nested too) inside free text', () => {
    const creds = { token: 'sk-live-42', short: 'abc', nested: { oauth: { secret: 'refresh#tok' } }, list: ['alpha-key'], n: 123456 };
    expect(scrubSecrets('401 for /botsk-live-42/getMe and sk-live-42', creds)).toBe(`401 for /bot${REDACTED}/getMe and ${REDACTED}`);
    expect(scrubSecrets('abc stays, alpha-key goes', creds)).toBe(`abc stays, ${REDACTED} goes`);
    expect(scrubSecrets('uri form refresh%23tok and raw refresh#tok', creds)).toBe(`uri form ${REDACTED} and raw ${REDACTED}`);
    expect(scrubSecrets('number 123456 is not searched', creds)).toBe('number 123456 is not searched');
    expect(scrubSecrets('nothing here', {})).toBe('nothing here');
  });

  it('replaces the longest secret first and handles JSON-escaped forms', () => {
    const secrets = collectSecrets({ a: 'tokn', b: 'tokn-extended', c: 'q"uo\\te' });
    expect(secrets.indexOf('tokn-extended')).toBeLessThan(secrets.indexOf('tokn'));
    expect(scrubSecrets('x tokn-extended y tokn', { a: 'tokn', b: 'tokn-extended' })).toBe(`x ${REDACTED} y ${REDACTED}`);
    expect(renderReason({ detail: 'q"uo\\te' }, secrets)).toBe(`{"detail":"${REDACTED}"}`);
  });

  it('renderReason renders errors, objects and scalars, and scrubs before truncating', () => {
    const secrets = collectSecrets({ token: 'SECRET-TOKEN-VALUE' });
    expect(renderReason(undefined, secrets)).toBeNull();
    expect(renderReason(null, secrets)).toBeNull();
    expect(renderReason('plain', secrets)).toBe('plain');
    expect(renderReason(42, secrets)).toBe('42');
    expect(renderReason(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), secrets)).toBe('Error[ECONNRESET]: read ECONNRESET');
    expect(renderReason(new TypeError('bad SECRET-TOKEN-VALUE'), secrets)).toBe(`TypeError: bad ${REDACTED}`);
    expect(renderReason({ a: 1, b: 'SECRET-TOKEN-VALUE' }, secrets)).toBe(`{"a":1,"b":"${REDACTED}"}`);
    expect(renderReason({ big: 1n }, secrets)).toBe('[object Object]');
    class Opaque {
      toJSON(): undefined {
        return undefined;
      }
    }
    expect(renderReason(new Opaque(), secrets)).toBe('[object Object]');
    const circ: Record<string, unknown> = { k: 'v' };
    circ.self = circ;
    expect(renderReason(circ, secrets)).toBe('{"k":"v","self":"[Circular]"}');
    // a secret straddling the cut never leaves a fragment behind
    const long = `${'x'.repeat(MAX_REASON_LENGTH - 5)}SECRET-TOKEN-VALUE tail`;
    const out = renderReason(long, secrets)!;
    expect(out.length).toBe(MAX_REASON_LENGTH);
    expect(out.endsWith('…')).toBe(true);
    expect(out).not.toContain('SECR');
  });

  it('scrubValue deep-copies plain data, flattens errors, drops functions, keeps class instances', () => {
    const secrets = collectSecrets({ t: 'hush-hush' });
    const date = new Date(0);
    const nullProto = Object.assign(Object.create(null) as Record<string, unknown>, { v: 'hush-hush' });
    const input = { s: 'hush-hush!', fn: () => 1, sym: Symbol('x'), d: date, arr: [1, 'hush-hush'], e: Object.assign(new Error('hush-hush'), { code: 7 }), np: nullProto };
    const out = scrubValue(input, secrets) as Record<string, unknown>;
    expect(out).toEqual({ s: `${REDACTED}!`, d: date, arr: [1, REDACTED], e: { name: 'Error', message: REDACTED, code: 7 }, np: { v: REDACTED } });
    expect(out.d).toBe(date);
    expect(scrubValue(new Error('x'), secrets)).toEqual({ name: 'Error', message: 'x' });
  });
});

describe('InstanceServer', { timeout: 10_000 }, () => {
  it('starts in starting with empty counters (status map, no credentials)', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_000_000);
    const s = make({ id: 'i-1', credentials: { token: 'top-secret' } });
    expect(s.status()).toEqual({
      status: 'starting',
      instanceId: 'i-1',
      channelType: 'telegram',
      name: 'support-bot',
      restartCount: 0,
      reconnectAttempt: 0,
      consecutiveFailures: 0,
      connectedAt: null,
      lastError: null,
      lastRestartClass: null,
      lastRestartReason: null,
      startedAt: 1_000_000,
      invalidTransitions: 0,
      stopped: false,
      ignoredAfterStop: 0,
    });
    expect(s.toJSON()).toEqual(s.status());
    expect(s.instanceId).toBe('i-1');
    expect(s.channelType).toBe('telegram');
    expect(s.name).toBe('support-bot');
    expect(s.startedAt).toBe(1_000_000);
    expect(s.maxConsecutiveFailures).toBe(10);
    expect(s.stoppedEmitted).toBe(false);
  });

  it('always begins at starting whatever status the record carries', () => {
    expect(make({ status: 'connected' }).currentStatus).toBe('starting');
  });

  it('validates the record and the options', () => {
    expect(() => new InstanceServer({ name: '' } as InstanceInput, { logger: silent })).toThrow(InvalidConfigError);
    expect(() => make({}, { maxConsecutiveFailures: 0 })).toThrow(/maxConsecutiveFailures/);
    expect(() => make({}, { maxConsecutiveFailures: 1.5 })).toThrow(InvalidConfigError);
    expect(() => make({}, { logger: {} as Logger })).toThrow(/logger/);
    expect(() => make({}, { queueDepth: 3 as unknown as () => number })).toThrow(/queueDepth/);
    expect(() => make({}, { bogus: 1 } as never)).toThrow(InvalidConfigError);
  });

  it('works with the default logger when none is given', () => {
    const s = new InstanceServer(base);
    expect(s.notifyConnecting()).toBe(true);
    const t = new InstanceServer(base);
    expect(t.status().status).toBe('starting');
  });

  it('getInstance returns the record with credentials redacted and the live status', () => {
    const s = make({ id: 'i-2', credentials: { token: 'top-secret' }, settings: { lang: 'en' } });
    s.notifyConnecting();
    const i = s.getInstance();
    expect(i).toMatchObject({ id: 'i-2', name: 'support-bot', channelType: 'telegram', status: 'connecting', settings: { lang: 'en' } });
    expect(i.credentials).toEqual({ token: REDACTED });
    expect(typeof i.insertedAt).toBe('number');
  });

  it('has no accessor for the raw credentials, symbol-keyed or not; the barrel exports none', () => {
    const s = make({ credentials: { token: 'top-secret', nested: { k: 'v' } } });
    const keys: Array<string | symbol> = [];
    for (let o: object | null = InstanceServer.prototype; o !== null && o !== EventEmitter.prototype; o = Object.getPrototypeOf(o) as object | null) {
      keys.push(...Object.getOwnPropertyNames(o), ...Object.getOwnPropertySymbols(o));
    }
    expect(keys.filter((k) => typeof k === 'symbol')).toEqual([]);
    expect(keys.filter((k) => typeof k === 'string' && /credential/i.test(k))).toEqual([]);
    expect(Object.keys(barrel)).not.toContain('instanceCredentials');
    expect(JSON.stringify(s.getInstance())).not.toContain('top-secret');
  });

  it('markStarted emits started once, with the base payload', () => {
    const s = make({ id: 'i-3' });
    const evs = record(s);
    expect(s.markStarted()).toBe(true);
    expect(s.markStarted()).toBe(false);
    expect(names(evs)).toEqual(['started']);
    expect(evs[0]![1]).toMatchObject({ instanceId: 'i-3', channelType: 'telegram', name: 'support-bot', fresh: false, from: null, restartCount: 0 });
    expect(typeof evs[0]![1].at).toBe('number');
  });

  it('publishes on threadvisor:instance:<event> with the same payload as the emitter', () => {
    const s = make();
    const viaChannel: unknown[] = [];
    const viaEmitter: unknown[] = [];
    const sub = (m: unknown): void => void viaChannel.push(m);
    diagnostics_channel.subscribe('threadvisor:instance:connecting', sub);
    s.on('instance:connecting', (p) => viaEmitter.push(p));
    try {
      s.notifyConnecting();
    } finally {
      diagnostics_channel.unsubscribe('threadvisor:instance:connecting', sub);
    }
    expect(viaChannel).toHaveLength(1);
    expect(viaChannel[0]).toBe(viaEmitter[0]);
    // the bare name is not used on the emitter
    const bare: unknown[] = [];
    const t = make();
    t.on('connecting', (p) => bare.push(p));
    t.notifyConnecting();
    expect(bare).toEqual([]);
  });

  it('connecting → connected sets connectedAt, resets reconnect counters (not failures) and merges meta into the event', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(2_000);
    const s = make();
    const evs = record(s);
    s.notifyFailure('x');
    expect(s.notifyConnecting()).toBe(true);
    expect(s.status().status).toBe('connecting');
    vi.setSystemTime(2_500);
    expect(s.notifyConnected({ attempts: 2, reason: 'probe', instanceId: 'spoofed' })).toBe(true);
    // A new connection is no proof of health: the failure before it still counts.
    expect(s.status()).toMatchObject({ status: 'connected', connectedAt: 2_500, consecutiveFailures: 1, lastError: null, reconnectAttempt: 0 });
    expect(names(evs)).toEqual(['connecting', 'connected']);
    expect(evs[0]![1]).toMatchObject({ from: 'starting' });
    expect(evs[1]![1]).toMatchObject({ attempts: 2, reason: 'probe', from: 'connecting', connectedAt: 2_500, instanceId: s.instanceId, at: 2_500 });
    // a same-state re-notify (successful probe) keeps connectedAt and emits nothing, but resets counters
    vi.setSystemTime(9_000);
    s.notifyFailure('blip');
    expect(s.notifyConnected()).toBe(true);
    expect(s.status()).toMatchObject({ connectedAt: 2_500, consecutiveFailures: 0, lastError: null });
    expect(names(evs)).toEqual(['connecting', 'connected']);
    // a second notifyConnecting while connecting is a no-op
    const t = make();
    const tevs = record(t);
    t.notifyConnecting();
    expect(t.notifyConnecting()).toBe(true);
    expect(names(tevs)).toEqual(['connecting']);
  });

  it('notifyDisconnected sets lastError (default unknown), keeps connectedAt, emits once per transition', () => {
    const s = make();
    const evs = record(s);
    s.notifyConnecting();
    s.notifyConnected();
    const at = s.connectedAt;
    expect(s.notifyDisconnected('network_error')).toBe(true);
    expect(s.status()).toMatchObject({ status: 'disconnected', lastError: 'network_error', connectedAt: at });
    expect(s.notifyDisconnected()).toBe(true);
    expect(s.lastError).toBe('unknown');
    expect(names(evs)).toEqual(['connecting', 'connected', 'disconnected']);
    expect(evs[2]![1]).toMatchObject({ from: 'connected', reason: 'network_error' });
    // disconnected ⇄ connected
    expect(s.notifyConnected()).toBe(true);
    expect(s.currentStatus).toBe('connected');
  });

  it('failures on connections that break at once keep counting to error; a stable period starts the count over', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_000);
    const s = make({}, { maxConsecutiveFailures: 3, stableAfterMs: 5_000 });
    for (let i = 0; i < 2; i++) {
      s.notifyConnecting();
      s.notifyConnected();
      s.notifyFailure('probe failed');
      s.notifyDisconnected('probe failed');
    }
    expect(s.consecutiveFailures).toBe(2);
    // Connected and quiet for the stable period: the next failure counts from 1 again.
    s.notifyConnected();
    vi.setSystemTime(6_000);
    s.notifyFailure('probe failed');
    expect(s.consecutiveFailures).toBe(1);
    // Failures closer together than the stable period keep counting, up to error.
    vi.setSystemTime(7_000);
    s.notifyDisconnected('probe failed');
    s.notifyConnected();
    s.notifyFailure('probe failed');
    vi.setSystemTime(8_000);
    s.notifyFailure('probe failed');
    expect(s.status()).toMatchObject({ status: 'error', consecutiveFailures: 3 });
  });

  it('counts failures; a success resets them (scenarios 9, 10)', () => {
    const s = make();
    for (let i = 0; i < 3; i++) s.notifyFailure(new Error(`fail ${i}`));
    expect(s.status()).toMatchObject({ consecutiveFailures: 3, lastError: 'Error: fail 2', status: 'starting' });
    for (let i = 0; i < 2; i++) s.notifyFailure('x');
    expect(s.consecutiveFailures).toBe(5);
    expect(s.notifySuccess()).toBe(true);
    expect(s.consecutiveFailures).toBe(0);
  });

  it('maxConsecutiveFailures failures move to error, emitting error once (scenario 11)', () => {
    const s = make();
    const evs = record(s);
    s.notifyConnecting();
    s.notifyConnected();
    for (let i = 0; i < 9; i++) s.notifyFailure('send failed');
    expect(s.currentStatus).toBe('connected');
    s.notifyFailure('send failed');
    expect(s.status()).toMatchObject({ status: 'error', consecutiveFailures: 10, lastError: 'send failed' });
    s.notifyFailure('send failed again');
    expect(s.consecutiveFailures).toBe(11);
    expect(s.lastError).toBe('send failed again');
    const errors = evs.filter(([n]) => n === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]![1]).toMatchObject({ from: 'connected', trigger: 'max_consecutive_failures', consecutiveFailures: 10, reason: 'send failed' });
    expect(errors[0]![1]).not.toHaveProperty('class');
    // success keeps error (only a fresh start leaves it)
    s.notifySuccess();
    expect(s.status()).toMatchObject({ status: 'error', consecutiveFailures: 0 });
  });

  it('honours a custom maxConsecutiveFailures', () => {
    const s = make({}, { maxConsecutiveFailures: 3 });
    s.notifyFailure('a');
    s.notifyFailure('b');
    expect(s.currentStatus).toBe('starting');
    s.notifyFailure('c');
    expect(s.currentStatus).toBe('error');
    expect(s.maxConsecutiveFailures).toBe(3);
  });

  it('notifyError enters error as fatal; in error it only updates lastError', () => {
    const s = make();
    const evs = record(s);
    s.notifyConnecting();
    expect(s.notifyError(new Error('bad token'))).toBe(true);
    expect(s.status()).toMatchObject({ status: 'error', lastError: 'Error: bad token' });
    expect(evs.at(-1)).toEqual(['error', expect.objectContaining({ from: 'connecting', class: 'fatal', trigger: 'fatal', reason: 'Error: bad token' })]);
    expect(s.notifyError('second')).toBe(true);
    expect(s.lastError).toBe('second');
    expect(evs.filter(([n]) => n === 'error')).toHaveLength(1);
  });

  it('notifyStarting is a fresh start: resets run counters, keeps restart markers, emits started (fresh)', () => {
    const s = make();
    const evs = record(s);
    s.notifyConnecting();
    s.notifyConnected();
    s.notifyReconnectAttempt(0);
    s.notifyFailure('f');
    s.notifyRestartMarker('fatal', 'probe failed', { kind: 'crash' });
    s.notifyError('dead');
    expect(s.notifyStarting('recoverAfterMs elapsed')).toBe(true);
    expect(s.status()).toMatchObject({
      status: 'starting',
      connectedAt: null,
      consecutiveFailures: 0,
      reconnectAttempt: 0,
      restartCount: 1,
      lastRestartClass: 'fatal',
      lastRestartReason: 'probe failed',
      lastError: 'dead',
    });
    expect(evs.at(-1)).toEqual(['started', expect.objectContaining({ fresh: true, from: 'error', restartCount: 1, reason: 'recoverAfterMs elapsed' })]);
    // starting → connecting is possible again
    expect(s.notifyConnecting()).toBe(true);
  });

  it('reconnect attempts move to connecting, record attempt and reason, and reset on connect', () => {
    const s = make();
    s.notifyConnecting();
    s.notifyConnected();
    s.notifyDisconnected('ETIMEDOUT');
    const evs = record(s);
    expect(s.notifyReconnectAttempt(1, 'ETIMEDOUT')).toBe(true);
    expect(s.status()).toMatchObject({ status: 'connecting', reconnectAttempt: 1, lastError: 'ETIMEDOUT' });
    expect(names(evs)).toEqual(['connecting', 'reconnect']);
    expect(evs[1]![1]).toMatchObject({ phase: 'attempt', attempt: 1, reason: 'ETIMEDOUT', class: 'recoverable' });
    expect(s.notifyReconnectAttempt(2)).toBe(true);
    expect(s.status()).toMatchObject({ status: 'connecting', reconnectAttempt: 2, lastError: 'ETIMEDOUT' });
    expect(names(evs)).toEqual(['connecting', 'reconnect', 'reconnect']);
    s.notifyConnected({ attempts: 2 });
    expect(s.reconnectAttempt).toBe(0);
    // attempt 0 ends a loop: reset, status unchanged, no event, lastError only when a reason is given
    s.notifyDisconnected('degraded');
    s.notifyReconnectAttempt(0, 'unsupported');
    expect(s.status()).toMatchObject({ status: 'disconnected', reconnectAttempt: 0, lastError: 'unsupported' });
    s.notifyReconnectAttempt(0);
    expect(s.lastError).toBe('unsupported');
    expect(names(evs).filter((n) => n === 'reconnect')).toHaveLength(2);
  });

  it('rejects bad reconnect arguments with InvalidConfigError', () => {
    const s = make();
    expect(() => s.notifyReconnectAttempt(-1)).toThrow(InvalidConfigError);
    expect(() => s.notifyReconnectAttempt(1.5)).toThrow(InvalidConfigError);
    expect(() => s.notifyReconnect('sideways' as never, 1)).toThrow(/phase/);
    expect(() => s.notifyReconnect('scheduled', -2)).toThrow(/attempt/);
  });

  it('notifyReconnect reports scheduled / failed / exhausted phases without changing status', () => {
    const s = make();
    s.notifyConnecting();
    s.notifyDisconnected('ECONNRESET');
    const evs = record(s);
    expect(s.notifyReconnect('scheduled', 1, 'ECONNRESET', 250)).toBe(true);
    expect(s.notifyReconnect('attempt', 1, 'ECONNRESET')).toBe(true);
    expect(s.notifyReconnect('failed', 1, Object.assign(new Error('denied'), { status: 401 }))).toBe(true);
    expect(s.notifyReconnect('failed', 2, 'odd', undefined, 'degraded')).toBe(true);
    expect(s.notifyReconnect('exhausted', 5, 'ECONNRESET')).toBe(true);
    expect(s.notifyReconnect('scheduled', 2)).toBe(true);
    const rec = evs.filter(([n]) => n === 'reconnect').map(([, p]) => p);
    expect(rec.map((p) => p.phase)).toEqual(['scheduled', 'attempt', 'failed', 'failed', 'exhausted', 'scheduled']);
    expect(rec[0]).toMatchObject({ attempt: 1, delayMs: 250, class: 'recoverable', reason: 'ECONNRESET' });
    expect(rec[2]).toMatchObject({ attempt: 1, class: 'fatal', reason: 'Error: denied' });
    expect(rec[2]).not.toHaveProperty('delayMs');
    expect(rec[3]).toMatchObject({ class: 'degraded' });
    expect(rec[4]).toMatchObject({ attempt: 5, class: 'recoverable' });
    expect(rec[5]).toMatchObject({ reason: null });
    expect(s.status()).toMatchObject({ status: 'connecting', reconnectAttempt: 1, lastError: 'ECONNRESET' });
  });

  it('restart markers accumulate monotonically and survive fresh starts (worker restarts)', () => {
    const s = make();
    const evs = record(s);
    const counts: number[] = [];
    for (let i = 1; i <= 4; i++) {
      s.notifyConnecting();
      s.notifyRestartMarker(i % 2 ? 'recoverable' : 'fatal', `reason ${i}`, { kind: 'reconnect_exhausted', attempt: i, delayMs: 100 * i });
      s.notifyStarting();
      counts.push(s.restartCount);
    }
    expect(counts).toEqual([1, 2, 3, 4]);
    expect(s.status()).toMatchObject({ restartCount: 4, lastRestartClass: 'fatal', lastRestartReason: 'reason 4', status: 'starting' });
    expect(s.lastRestartClass).toBe('fatal');
    expect(s.lastRestartReason).toBe('reason 4');
    const restarts = evs.filter(([n]) => n === 'restart').map(([, p]) => p);
    expect(restarts.map((p) => p.restartCount)).toEqual([1, 2, 3, 4]);
    expect(restarts[0]).toMatchObject({ class: 'recoverable', reason: 'reason 1', kind: 'reconnect_exhausted', attempt: 1, delayMs: 100 });
    // details are optional
    s.notifyRestartMarker('recoverable', 'plain');
    const last = evs.at(-1)![1];
    expect(last).not.toHaveProperty('kind');
    expect(last).not.toHaveProperty('attempt');
    expect(last).not.toHaveProperty('delayMs');
    // the marker changes no status
    expect(s.currentStatus).toBe('starting');
  });

  it('restart markers accept only recoverable or fatal', () => {
    const s = make();
    expect(() => s.notifyRestartMarker('degraded' as never, 'x')).toThrow(InvalidConfigError);
    expect(s.restartCount).toBe(0);
  });

  it('notifyProbe records lastProbe and emits probe with a class for non-ok outcomes', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(50_000);
    const s = make();
    const evs = record(s);
    expect(s.healthSnapshot().lastProbe).toBeNull();
    expect(s.notifyProbe('ok', 12, 'ignored for ok')).toBe(true);
    expect(s.healthSnapshot().lastProbe).toEqual({ outcome: 'ok', at: 50_000, latencyMs: 12, reason: null });
    s.notifyProbe('failed', 30, Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
    s.notifyProbe('failed', 31, 'x', 'fatal');
    s.notifyProbe('degraded', 5, 'unsupported');
    const probes = evs.map(([, p]) => p);
    expect(probes[0]).toMatchObject({ outcome: 'ok', latencyMs: 12, reason: null });
    expect(probes[0]).not.toHaveProperty('class');
    expect(probes[1]).toMatchObject({ outcome: 'failed', class: 'recoverable', reason: 'Error[ECONNREFUSED]: connect ECONNREFUSED' });
    expect(probes[2]).toMatchObject({ class: 'fatal' });
    expect(probes[3]).toMatchObject({ outcome: 'degraded', class: 'degraded' });
    expect(s.healthSnapshot().lastProbe).toMatchObject({ outcome: 'degraded', latencyMs: 5, reason: 'unsupported' });
    expect(s.currentStatus).toBe('starting');
    expect(() => s.notifyProbe('meh' as never, 1)).toThrow(InvalidConfigError);
  });

  it('stop emits stopped exactly once, then ignores and counts notifications', () => {
    const s = make();
    const evs = record(s);
    const viaChannel: unknown[] = [];
    const sub = (m: unknown): void => void viaChannel.push(m);
    diagnostics_channel.subscribe('threadvisor:instance:stopped', sub);
    try {
      s.notifyConnecting();
      expect(s.stop('shutdown')).toBe(true);
      expect(s.stop()).toBe(false);
      expect(s.stop('again')).toBe(false);
    } finally {
      diagnostics_channel.unsubscribe('threadvisor:instance:stopped', sub);
    }
    expect(viaChannel).toHaveLength(1);
    expect(evs.filter(([n]) => n === 'stopped')).toHaveLength(1);
    expect(evs.at(-1)![1]).toMatchObject({ status: 'connecting', reason: 'shutdown', restartCount: 0 });
    expect(typeof evs.at(-1)![1].uptimeMs).toBe('number');
    expect(s.stoppedEmitted).toBe(true);

    const before = evs.length;
    const calls: Array<() => boolean> = [
      () => s.markStarted(),
      () => s.notifyStarting(),
      () => s.notifyConnecting(),
      () => s.notifyConnected(),
      () => s.notifyDisconnected('x'),
      () => s.notifyFailure('x'),
      () => s.notifySuccess(),
      () => s.notifyError('x'),
      () => s.notifyReconnectAttempt(1),
      () => s.notifyReconnect('scheduled', 1),
      () => s.notifyRestartMarker('fatal', 'x'),
      () => s.notifyProbe('ok', 1),
    ];
    for (const c of calls) expect(c()).toBe(false);
    expect(evs.length).toBe(before);
    // markStarted is not a notification: 11 counted
    expect(s.status()).toMatchObject({ status: 'connecting', stopped: true, ignoredAfterStop: 11, restartCount: 0, consecutiveFailures: 0 });
    expect(s.ignoredAfterStop).toBe(11);
    expect(s.healthSnapshot().stopped).toBe(true);
  });

  it('stop without a reason reports null', () => {
    const s = make();
    const evs = record(s);
    s.stop();
    expect(evs[0]![1]).toMatchObject({ reason: null });
  });

  it('healthSnapshot has the seed fields plus markers, probe and the worker section', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(10_000);
    const s = make({ id: 'h-1', credentials: { token: 'tok-abcdef' } }, { queueDepth: () => 7 });
    vi.setSystemTime(10_060);
    const initial = s.healthSnapshot();
    expect(initial).toEqual({
      status: 'starting',
      instanceId: 'h-1',
      channelType: 'telegram',
      name: 'support-bot',
      uptimeMs: 60,
      connectedAt: null,
      lastError: null,
      consecutiveFailures: 0,
      senderQueueDepth: 7,
      reconnectAttempt: 0,
      restartCount: 0,
      lastRestartClass: null,
      lastRestartReason: null,
      lastProbe: null,
      invalidTransitions: 0,
      stopped: false,
      quarantined: false,
      worker: null,
    });
    s.notifyConnecting();
    s.notifyConnected();
    s.notifyFailure('a');
    s.notifyRestartMarker('recoverable', 'hang');
    vi.setSystemTime(10_200);
    const worker = { state: 'up' as const, lastHeartbeatAgeMs: 15, elu: 0.12, heapUsed: 1024, note: 'token tok-abcdef leaked' };
    const h = s.healthSnapshot({ worker });
    expect(h).toMatchObject({ status: 'connected', uptimeMs: 200, connectedAt: 10_060, consecutiveFailures: 1, lastError: 'a', restartCount: 1, lastRestartClass: 'recoverable', lastRestartReason: 'hang' });
    expect(h.worker).toEqual({ state: 'up', lastHeartbeatAgeMs: 15, elu: 0.12, heapUsed: 1024, note: `token ${REDACTED} leaked` });
    expect(h.worker).not.toBe(worker);
  });

  it('uptimeMs grows over real time', async () => {
    const s = make();
    const a = s.healthSnapshot().uptimeMs;
    expect(a).toBeGreaterThanOrEqual(0);
    await new Promise((r) => setTimeout(r, 30));
    expect(s.healthSnapshot().uptimeMs).toBeGreaterThanOrEqual(a + 25);
  });

  it('senderQueueDepth is 0 when queueDepth is absent, throws or returns garbage', () => {
    expect(make().healthSnapshot().senderQueueDepth).toBe(0);
    const throwing = make({}, {
      queueDepth: () => {
        throw new Error('sender gone');
      },
    });
    expect(throwing.healthSnapshot().senderQueueDepth).toBe(0);
    expect(make({}, { queueDepth: () => Number.NaN }).healthSnapshot().senderQueueDepth).toBe(0);
    expect(make({}, { queueDepth: () => -1 }).healthSnapshot().senderQueueDepth).toBe(0);
  });

  it('redactReason is the same rendering status and events use', () => {
    const s = make({ credentials: { token: 'zz-secret-zz' } });
    expect(s.redactReason(new Error('bad zz-secret-zz'))).toBe(`Error: bad ${REDACTED}`);
    expect(s.redactReason(undefined)).toBeNull();
  });
});

describe('InstanceServer never leaks credentials', { timeout: 10_000 }, () => {
  const TOKEN = 'tg-8842:AAF-very-secret';
  const PASSWORD = 'hunter2-pass';
  const SECRETS = [TOKEN, PASSWORD, encodeURIComponent(TOKEN)];

  it('in status, getInstance, health, every event payload (emitter + diagnostics_channel) and logs', () => {
    const { logger, lines } = memoryLogger('trace');
    const s = new InstanceServer(
      {
        name: 'leaky',
        channelType: 'telegram',
        credentials: { token: TOKEN, auth: { password: PASSWORD } },
        settings: { webhook: `https://example.test/bot${TOKEN}/hook` },
      },
      { logger, maxConsecutiveFailures: 2 },
    );
    const emitted = record(s);
    const published: unknown[] = [];
    const subs = INSTANCE_EVENTS.map((e) => {
      const fn = (m: unknown): void => void published.push(m);
      diagnostics_channel.subscribe(`threadvisor:instance:${e}`, fn);
      return [`threadvisor:instance:${e}`, fn] as const;
    });
    const leakyError = new Error(`401 Unauthorized for https://api.telegram.org/bot${TOKEN}/getMe`);
    const leakyObject = { url: `https://x/${encodeURIComponent(TOKEN)}`, auth: { password: PASSWORD }, err: leakyError };
    try {
      s.markStarted();
      s.notifyConnected({ token: TOKEN }); // invalid from starting: rejected, reason-free event
      s.notifyConnecting();
      s.notifyConnected({ via: `bot${TOKEN}`, nested: { p: PASSWORD } });
      s.notifyDisconnected(leakyError);
      s.notifyProbe('failed', 10, leakyError);
      s.notifyReconnect('scheduled', 1, leakyObject, 100);
      s.notifyReconnectAttempt(1, leakyError);
      s.notifyReconnect('failed', 1, leakyObject);
      s.notifyReconnect('exhausted', 1, `gave up: ${PASSWORD}`);
      s.notifyFailure(leakyError);
      s.notifyFailure(leakyObject); // → error (max 2)
      s.notifyRestartMarker('fatal', leakyError, { kind: 'crash' });
      s.notifyQuarantined(true, leakyError);
      s.notifyConnected({ token: TOKEN }); // invalid from error
      s.notifyStarting(leakyError);
      s.notifyError(`fatal ${TOKEN}`);
      s.stop(leakyObject);
    } finally {
      for (const [name, fn] of subs) diagnostics_channel.unsubscribe(name, fn);
    }
    const outputs: Record<string, unknown> = {
      status: s.status(),
      instance: s.getInstance(),
      health: s.healthSnapshot({ worker: { state: 'down', lastHeartbeatAgeMs: null, elu: null, heapUsed: null } }),
      json: JSON.stringify(s),
      inspect: inspect(s, { depth: 10, showHidden: true }),
      emitted,
      published,
      logs: lines.join('\n'),
    };
    // sanity: the scenario really produced all of these
    // every event of the status record (`instance:pressure` is the outbound queue's)
    expect(new Set(names(emitted))).toEqual(new Set(INSTANCE_EVENTS.filter((e) => e !== 'pressure')));
    expect(published.length).toBe(emitted.length);
    expect(lines.length).toBeGreaterThan(5);
    expect(String(outputs.logs)).toContain(REDACTED);
    for (const [where, value] of Object.entries(outputs)) {
      const text = typeof value === 'string' ? value : JSON.stringify(value);
      for (const secret of SECRETS) expect(text, `${where} leaks ${secret}`).not.toContain(secret);
    }
    // …while the reasons are still informative
    expect(s.lastError).toBe(`fatal ${REDACTED}`);
    expect(s.lastRestartReason).toBe(`Error: 401 Unauthorized for https://api.telegram.org/bot${REDACTED}/getMe`);
    expect(s.getInstance().settings).toEqual({ webhook: `https://example.test/bot${REDACTED}/hook` });
  });
});
