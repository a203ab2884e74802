import { describe, expect, it } from 'vitest';
import {
  ChannelError,
  InvalidConfigError,
  NotFoundError,
  ThreadvisorError,
  TimeoutError,
  WorkerExitedError,
} from '../src/errors.js';
import {
  CLASSIFICATION_TABLE,
  DEFAULT_FAILURE_CLASS,
  DEGRADED_CODES,
  FAILURE_CLASSES,
  FATAL_CODES,
  MAX_CAUSE_DEPTH,
  NETWORK_CODES,
  TRANSIENT_CODES,
  classifyError,
  errorFacts,
  explainClassification,
  isFailureClass,
  type FailureClass,
} from '../src/wire/classify.js';

const withCode = (code: string, message = `failed: ${code}`): Error => Object.assign(new Error(message), { code });
const withStatus = (status: unknown, field = 'status'): Error => Object.assign(new Error(`HTTP ${String(status)}`), { [field]: status });

/**
 * Samples per table row: each must be decided by exactly that row (checked through
 * `explainClassification(...).rule`). A new row without samples fails the coverage test below.
 */
const ROW_SAMPLES: Record<string, unknown[]> = {
  fatal_code: [
    new InvalidConfigError('options', [{ path: 'x', message: 'bad' }]),
    withCode('invalid_credentials'),
    withCode('channel_invalid'),
    'unauthorized',
    { code: 'FORBIDDEN' },
    withCode('ERR_INVALID_URL'),
  ],
  degraded_code: [withCode('unsupported'), 'not_implemented', { code: 'policy_denied' }, withCode('unauthorized_sender')],
  network_code: [
    withCode('ECONNRESET'),
    withCode('ECONNREFUSED'),
    withCode('ETIMEDOUT'),
    withCode('EAI_AGAIN'),
    withCode('ENOTFOUND'),
    withCode('EPIPE'),
    withCode('ENETUNREACH'),
    withCode('EHOSTUNREACH'),
    withCode('UND_ERR_CONNECT_TIMEOUT'),
    withCode('UND_ERR_SOCKET'),
    'econnreset',
  ],
  transient_code: [new TimeoutError('probe', 50), 'timeout', withCode('rate_limited'), { code: 'network_error' }, withCode('ABORT_ERR')],
  timeout_name: [
    Object.assign(new Error('aborted'), { name: 'AbortError' }),
    new DOMException('signal timed out', 'TimeoutError'),
    new DOMException('aborted', 'AbortError'),
  ],
  http_auth: [withStatus(401), withStatus(403, 'statusCode'), { response: { status: 401 } }, { response: { statusCode: '403' } }],
  http_not_implemented: [withStatus(501), { statusCode: 501 }],
  http_transient: [withStatus(429), withStatus(500), withStatus(502), withStatus(503, 'statusCode'), withStatus(599), withStatus(408), withStatus(425), { status: '504' }],
};

describe('failure classification', { timeout: 10_000 }, () => {
  it('exposes the classes and a recoverable default', () => {
    expect(FAILURE_CLASSES).toEqual(['recoverable', 'fatal', 'degraded']);
    expect(DEFAULT_FAILURE_CLASS).toBe('recoverable');
    expect(isFailureClass('fatal')).toBe(true);
    expect(isFailureClass('transient')).toBe(false);
    expect(isFailureClass(undefined)).toBe(false);
  });

  it('has unique row ids, a description and a valid class per row, and samples for every row', () => {
    const ids = CLASSIFICATION_TABLE.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const row of CLASSIFICATION_TABLE) {
      expect(row.match.length).toBeGreaterThan(10);
      expect(isFailureClass(row.class)).toBe(true);
      expect(ROW_SAMPLES[row.id], `samples for ${row.id}`).toBeDefined();
    }
    expect(Object.keys(ROW_SAMPLES).sort()).toEqual([...ids].sort());
    expect(Object.isFrozen(CLASSIFICATION_TABLE)).toBe(true);
  });

  describe.each(CLASSIFICATION_TABLE.map((r) => [r.id, r.class, r] as const))('row %s → %s', (id, cls) => {
    it.each(ROW_SAMPLES[id]!.map((s, i) => [i, s] as const))('sample %i is decided by this row', (_i, sample) => {
      expect(explainClassification(sample)).toEqual({ class: cls, rule: id, depth: 0 });
      expect(classifyError(sample)).toBe(cls);
    });
  });

  it.each([
    ['fatal', FATAL_CODES],
    ['degraded', DEGRADED_CODES],
    ['recoverable', NETWORK_CODES],
    ['recoverable', TRANSIENT_CODES],
  ] as Array<[FailureClass, ReadonlySet<string>]>)('every listed code classifies as %s (upper and lower case)', (cls, set) => {
    expect(set.size).toBeGreaterThan(0);
    for (const code of set) {
      expect(classifyError(withCode(code))).toBe(cls);
      expect(classifyError(withCode(code.toUpperCase()))).toBe(cls);
      expect(classifyError(code)).toBe(cls);
    }
  });

  it('an error carrying its own class wins over the table and the custom hook', () => {
    const e = Object.assign(withCode('ECONNRESET'), { class: 'fatal' });
    expect(explainClassification(e, () => 'degraded')).toEqual({ class: 'fatal', rule: 'explicit', depth: 0 });
    expect(classifyError({ class: 'degraded', code: 'invalid_config' })).toBe('degraded');
    // an invalid class value is ignored
    expect(classifyError(Object.assign(withCode('ECONNRESET'), { class: 'weird' }))).toBe('recoverable');
  });

  it('ChannelError carries a class, code channel_error and the channel code', () => {
    const cause = withCode('ECONNRESET');
    const e = new ChannelError('platform said no', { class: 'fatal', code: 'bot_blocked', cause });
    expect(e).toBeInstanceOf(ThreadvisorError);
    expect(e.code).toBe('channel_error');
    expect(e.name).toBe('ChannelError');
    expect(e.class).toBe('fatal');
    expect(e.channelCode).toBe('bot_blocked');
    expect(e.cause).toBe(cause);
    expect(e.details).toEqual({ class: 'fatal', channelCode: 'bot_blocked' });
    expect(explainClassification(e)).toEqual({ class: 'fatal', rule: 'explicit', depth: 0 });
    const plain = new ChannelError('capability off', { class: 'degraded' });
    expect(plain.channelCode).toBeUndefined();
    expect(plain.cause).toBeUndefined();
    expect(plain.details).toEqual({ class: 'degraded' });
    expect(classifyError(plain)).toBe('degraded');
  });

  it('the custom hook is consulted before the table; undefined, invalid or throwing hooks defer', () => {
    const rateLimit = withCode('platform_flood');
    const hook = (err: unknown): FailureClass | undefined =>
      (err as { code?: string }).code === 'platform_flood' ? 'degraded' : undefined;
    expect(explainClassification(rateLimit, hook)).toEqual({ class: 'degraded', rule: 'custom', depth: 0 });
    expect(classifyError(withCode('ECONNRESET'), hook)).toBe('recoverable');
    expect(classifyError(withCode('ECONNRESET'), () => 'fatal')).toBe('fatal');
    expect(classifyError(withCode('invalid_config'), () => 'nonsense' as FailureClass)).toBe('fatal');
    const throwing = (): FailureClass => {
      throw new Error('hook bug');
    };
    expect(explainClassification(withStatus(401), throwing)).toEqual({ class: 'fatal', rule: 'http_auth', depth: 0 });
  });

  it('follows the cause chain (fetch failed → ECONNREFUSED) and plain-object reasons', () => {
    const fetchFailed = new TypeError('fetch failed', { cause: withCode('ECONNREFUSED') });
    expect(explainClassification(fetchFailed)).toEqual({ class: 'recoverable', rule: 'network_code', depth: 1 });
    const wrapped = new Error('start failed', { cause: new Error('inner', { cause: withStatus(403) }) });
    expect(explainClassification(wrapped)).toEqual({ class: 'fatal', rule: 'http_auth', depth: 2 });
    const explicitCause = new Error('outer', { cause: new ChannelError('x', { class: 'degraded' }) });
    expect(explainClassification(explicitCause)).toEqual({ class: 'degraded', rule: 'explicit', depth: 1 });
    expect(explainClassification({ reason: 'unsupported' })).toEqual({ class: 'degraded', rule: 'degraded_code', depth: 1 });
    expect(explainClassification({ reason: { code: 'invalid_credentials' } }).class).toBe('fatal');
  });

  it('stops at cycles and at the depth limit, falling back to the default', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(explainClassification(a)).toEqual({ class: 'recoverable', rule: 'default', depth: 0 });

    let deep: Error = withCode('invalid_config');
    for (let i = 0; i < MAX_CAUSE_DEPTH; i++) deep = new Error(`level ${i}`, { cause: deep });
    expect(explainClassification(deep)).toEqual({ class: 'fatal', rule: 'fatal_code', depth: MAX_CAUSE_DEPTH });
    deep = new Error('one too deep', { cause: deep });
    expect(explainClassification(deep).rule).toBe('default');
  });

  it('unknown failures are recoverable', () => {
    for (const x of [new Error('weird'), 'something_odd', undefined, null, 42, { foo: 1 }, withStatus(404), withStatus(400), withStatus(99), withStatus('abc')]) {
      expect(explainClassification(x)).toEqual({ class: 'recoverable', rule: 'default', depth: 0 });
    }
    expect(classifyError(new NotFoundError('instance', 'x'))).toBe('recoverable');
    expect(classifyError(new WorkerExitedError('call', { class: 'crash', reason: 'boom' }))).toBe('recoverable');
  });

  it('never throws, even on hostile objects', () => {
    const hostile = new Proxy(
      {},
      {
        get() {
          throw new Error('no access');
        },
      },
    );
    expect(classifyError(hostile)).toBe('recoverable');
  });

  it('extracts facts from strings, errors and responses', () => {
    expect(errorFacts('  ECONNRESET ')).toEqual({ code: 'econnreset', name: undefined, status: undefined });
    expect(errorFacts(withStatus(503))).toEqual({ code: undefined, name: 'Error', status: 503 });
    expect(errorFacts({ code: 7, response: { statusCode: 429 } })).toEqual({ code: undefined, name: undefined, status: 429 });
    expect(errorFacts({ status: 200.5 }).status).toBeUndefined();
  });
});
