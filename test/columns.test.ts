/**
 * The columnar encoding of flat batches on the data port: pure logic (what qualifies, that the
 * objects built again equal what structured clone makes, that hostile input is refused before any
 * work per item), then end to end through a real worker, messages and receipts alike.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_COLUMN_FIELDS, MIN_COLUMN_BATCH, fromColumns, readColumns, toColumns } from '../src/wire/columns.js';
import { Runtime } from '../src/runtime/runtime.js';
import { waitFor } from './helpers/fixtures.js';

const flat = (n: number) => Array.from({ length: n }, (_, i) => ({ room: `r${i % 3}`, text: `hello ${i}`, n: i }));
const roundTrip = (items: unknown[]) => {
  const c = toColumns(items);
  if (c === undefined) throw new Error('expected columns');
  const copy = structuredClone(c);
  return readColumns(copy.fields, copy.columns, items.length, 1e6);
};

describe('columns: what qualifies', { timeout: 10_000 }, () => {
  it('flat objects of one shape round-trip to what structured clone makes', () => {
    const items = Array.from({ length: 12 }, (_, i) => ({ b: i, a: `s${i}`, 10: true, 2: null, u: undefined, z: -0, nan: NaN, big: 10n ** 20n + BigInt(i) }));
    const back = roundTrip(items);
    const cloned = structuredClone(items);
    expect(back).toEqual(cloned);
    // key order (integer keys first, then insertion order), -0 and prototypes are kept too
    expect(back?.map((o) => Object.keys(o))).toEqual(cloned.map((o) => Object.keys(o)));
    expect(Object.is(back?.[0]?.z, -0)).toBe(true);
    expect(back?.every((o) => Object.getPrototypeOf(o) === Object.prototype)).toBe(true);
    expect(back?.every((o) => 'u' in o)).toBe(true);
  });

  it('a getter is read once, as structured clone would', () => {
    let reads = 0;
    const items = flat(MIN_COLUMN_BATCH).map((o) => Object.defineProperty({ ...o }, 'x', { enumerable: true, get: () => ++reads }));
    const back = roundTrip(items);
    expect(reads).toBe(MIN_COLUMN_BATCH);
    expect(back?.map((o) => o.x)).toEqual(Array.from({ length: MIN_COLUMN_BATCH }, (_, i) => i + 1));
  });

  it('everything else goes by structured clone', () => {
    const n = MIN_COLUMN_BATCH;
    const base = flat(n);
    const withAt = (i: number, v: unknown) => base.map((o, j) => (j === i ? v : o));
    class Msg {
      room = 'r';
    }
    const wide = Object.fromEntries(Array.from({ length: MAX_COLUMN_FIELDS + 1 }, (_, i) => [`f${i}`, i]));
    const cases: Record<string, unknown[]> = {
      'too few': base.slice(0, n - 1),
      'nested object': withAt(n - 1, { room: 'r', text: { a: 1 }, n: 1 }),
      'array value': withAt(2, { room: 'r', text: [1], n: 1 }),
      'function value': withAt(3, { room: 'r', text: () => 1, n: 1 }),
      'symbol value': withAt(4, { room: 'r', text: Symbol('s'), n: 1 }),
      'a string item': withAt(1, 'hello'),
      'a null item': withAt(0, null),
      'an array item': withAt(5, ['room', 'text', 'n']),
      'class instance': withAt(6, new Msg()),
      'null prototype': withAt(0, Object.assign(Object.create(null) as object, base[0])),
      'other key order': withAt(7, { text: 't', room: 'r', n: 1 }),
      'other keys': withAt(7, { room: 'r', text: 't', m: 1 }),
      'fewer keys': withAt(7, { room: 'r', text: 't' }),
      'own __proto__ key': Array.from({ length: n }, () => JSON.parse('{"__proto__": 1, "a": 2}') as unknown),
      'empty objects': Array.from({ length: n }, () => ({})),
      'too wide': Array.from({ length: n }, () => ({ ...wide })),
      'throwing getter': withAt(
        3,
        Object.defineProperty({ room: 'r', text: 't' }, 'n', {
          enumerable: true,
          get() {
            throw new Error('boom');
          },
        }),
      ),
    };
    for (const [name, items] of Object.entries(cases)) expect(toColumns(items), name).toBeUndefined();
  });

  it('an enumerable property inherited from Object.prototype (which structured clone does not copy) sends the batch by clone', () => {
    const key = 'threadvisorInherited';
    Object.defineProperty(Object.prototype, key, { value: 1, enumerable: true, configurable: true, writable: true });
    try {
      expect(toColumns(flat(MIN_COLUMN_BATCH))).toBeUndefined();
    } finally {
      delete (Object.prototype as Record<string, unknown>)[key];
    }
    expect(toColumns(flat(MIN_COLUMN_BATCH))).toBeDefined();
  });

  it('proxies and arguments objects (which structured clone refuses) go by clone', () => {
    const n = MIN_COLUMN_BATCH;
    const proxies = flat(n).map((o) => new Proxy(o, {}));
    expect(toColumns(proxies)).toBeUndefined();
    expect(() => structuredClone(proxies)).toThrow();
    const args = Array.from({ length: n }, (_, i) => (function (..._a: unknown[]) {
      // eslint-disable-next-line prefer-rest-params
      return arguments;
    })(i, 'x'));
    expect(toColumns(args)).toBeUndefined();
    expect(toColumns(flat(n).map((o, i) => (i === n - 1 ? new Proxy(o, {}) : o)))).toBeUndefined();
  });

  it('fields Object.prototype also has are defined on the item, never assigned through a setter', () => {
    const key = 'threadvisorSetter';
    const seen: unknown[] = [];
    Object.defineProperty(Object.prototype, key, {
      configurable: true,
      set(v: unknown) {
        seen.push(v);
      },
      get() {
        return 'inherited';
      },
    });
    try {
      const back = readColumns(['constructor', 'toString', key, 'n'], [['c', 'c'], ['t', 't'], ['s0', 's1'], [0, 1]], 2, 10);
      expect(seen).toEqual([]);
      expect(back?.map((o) => Object.getOwnPropertyDescriptor(o, key))).toEqual([
        { value: 's0', writable: true, enumerable: true, configurable: true },
        { value: 's1', writable: true, enumerable: true, configurable: true },
      ]);
      expect(back?.map((o) => Object.keys(o))).toEqual([
        ['constructor', 'toString', key, 'n'],
        ['constructor', 'toString', key, 'n'],
      ]);
      expect(back?.[1]).toEqual({ constructor: 'c', toString: 't', [key]: 's1', n: 1 });
    } finally {
      delete (Object.prototype as Record<string, unknown>)[key];
    }
    // and the same shape round-trips from objects that carry such keys
    const items = Array.from({ length: MIN_COLUMN_BATCH }, (_, i) => ({ constructor: `c${i}`, valueOf: i }));
    expect(roundTrip(items)).toEqual(structuredClone(items));
  });

  it('fromColumns builds n items from valid columns', () => {
    expect(fromColumns(['a', 'b'], [[1, 2], ['x', 'y']], 2)).toEqual([
      { a: 1, b: 'x' },
      { a: 2, b: 'y' },
    ]);
    expect(fromColumns(['a'], [[]], 0)).toEqual([]);
  });
});

describe('columns: untrusted input', { timeout: 10_000 }, () => {
  it('refuses a malformed batch before any work per item', () => {
    const ok = { fields: ['a'], columns: [[1, 2]], n: 2 };
    const bad: Array<[unknown, unknown, unknown]> = [
      [ok.fields, ok.columns, -1],
      [ok.fields, ok.columns, 1.5],
      [ok.fields, ok.columns, '2'],
      [ok.fields, ok.columns, 11], // over the bound
      ['a', ok.columns, 2],
      [ok.fields, 'cols', 2],
      [[], [], 0],
      [['a', 'b'], ok.columns, 2],
      [[1], ok.columns, 2],
      [['__proto__'], ok.columns, 2],
      [ok.fields, [[1]], 2],
      [ok.fields, [{ length: 2 }], 2],
      [ok.fields, [new Array(2 ** 32 - 1)], 2], // sparse, billions long
      [Array.from({ length: MAX_COLUMN_FIELDS + 1 }, (_, i) => `f${i}`), Array.from({ length: MAX_COLUMN_FIELDS + 1 }, () => [1, 2]), 2],
    ];
    for (const [fields, columns, n] of bad) expect(readColumns(fields, columns, n, 10)).toBeUndefined();
    expect(readColumns(ok.fields, ok.columns, ok.n, 10)).toEqual([{ a: 1 }, { a: 2 }]);
  });
});

describe('columns end to end (real worker)', { timeout: 30_000 }, () => {
  const runtimes: Runtime[] = [];
  afterEach(async () => {
    await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
  });

  it('messages reach the channel and receipts come back as structured clone would make them', async () => {
    const seen: unknown[] = [];
    const rt = await Runtime.start({ logger: pino({ level: 'silent' }), onMessage: (m) => void seen.push((m as { echo: unknown }).echo) });
    runtimes.push(rt);
    const server = await rt.startInstance({ name: 'cols', channelType: 'loopback', channel: 'loopback', settings: { echo: true } });
    await waitFor(() => server.currentStatus === 'connected');
    const id = server.instanceId;
    // flat batches (columns both ways), a mixed batch (structured clone), a lone flat message
    const flatA = Array.from({ length: 40 }, (_, i) => ({ 1: 'one', room: `r${i % 2}`, text: `hi ${i}`, n: i, big: BigInt(i), u: undefined, neg: -0 }));
    const mixed = Array.from({ length: 20 }, (_, i) => (i % 5 === 0 ? { room: 'r', text: 'nested', meta: { i, tags: ['a', 'b'] } } : i % 7 === 0 ? `plain ${i}` : { room: 'r', text: `t${i}`, n: i }));
    const all = [...flatA, ...mixed, { room: 'alone', text: 'x', n: 1 }];
    const outcomes = [...(await rt.sendMany(id, flatA)), ...(await rt.sendMany(id, mixed)), { ok: true, receipt: await rt.send(id, all[all.length - 1]) }];
    expect(outcomes.every((o) => o.ok)).toBe(true);
    const receipts = outcomes.map((o) => (o as { receipt: unknown }).receipt);
    expect(receipts).toEqual(all.map((_, i) => ({ externalId: `lb-${i + 1}` })));
    expect(receipts.every((r) => Object.getPrototypeOf(r) === Object.prototype)).toBe(true);
    await waitFor(() => seen.length === all.length);
    expect(seen).toEqual(structuredClone(all));
    expect(seen.slice(0, 40).map((m) => Object.keys(m as object))).toEqual(flatA.map((m) => Object.keys(m)));
    expect(Object.is((seen[0] as { neg: number }).neg, -0)).toBe(true);
  });
});
