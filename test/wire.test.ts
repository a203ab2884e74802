/**
 * The wire layer's pure parts: the hot-path checks both threads share and the column encoder's
 * back-off. (The messages themselves cross real ports in data-plane.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { COLUMN_RETRY_AFTER, ColumnEncoder, MIN_COLUMN_BATCH } from '../src/wire/columns.js';
import { wireCode, wireError } from '../src/wire/errors.js';
import { isAckRun, readAckRun, readInboundAck, readSendBatch } from '../src/wire/validate.js';

const flat = (n: number) => Array.from({ length: n }, (_, i) => ({ room: 'r', n: i }));

describe('ColumnEncoder', () => {
  it('encodes a qualifying batch, and after a miss sends the next batches by clone before trying again', () => {
    const enc = new ColumnEncoder();
    expect(enc.encode(flat(MIN_COLUMN_BATCH))?.fields).toEqual(['room', 'n']);
    expect(enc.encode(flat(MIN_COLUMN_BATCH - 1))).toBeUndefined(); // too small: not a miss
    expect(enc.encode(flat(MIN_COLUMN_BATCH))).toBeDefined();
    expect(enc.encode([...flat(MIN_COLUMN_BATCH), { other: 1 }])).toBeUndefined(); // a miss
    for (let i = 0; i < COLUMN_RETRY_AFTER; i++) expect(enc.encode(flat(MIN_COLUMN_BATCH))).toBeUndefined();
    expect(enc.encode(flat(MIN_COLUMN_BATCH))).toBeDefined();
  });
});

describe('hot-path checks', () => {
  it('reads an ack run as receipts or columns, bounded by the window', () => {
    expect(isAckRun({ t: 'acks', seq: 0, receipts: [] })).toBe(true);
    expect(isAckRun({ t: 'acks', results: [] })).toBe(false);
    expect(readAckRun({ seq: 3, receipts: ['a', 'b'] }, 10)).toEqual({ seq: 3, receipts: ['a', 'b'] });
    expect(readAckRun({ seq: 3, n: 2, fields: ['id'], columns: [[1, 2]] }, 10)).toEqual({ seq: 3, receipts: [{ id: 1 }, { id: 2 }] });
    expect(readAckRun({ seq: -1, receipts: [] }, 10)).toBeUndefined();
    expect(readAckRun({ seq: 1.5, receipts: [] }, 10)).toBeUndefined();
    expect(readAckRun({ seq: 0, receipts: new Array(11) }, 10)).toBeUndefined();
    expect(readAckRun({ seq: 0, n: 2 ** 32, fields: ['id'], columns: [[]] }, 10)).toBeUndefined();
  });

  it('reads a send batch by clone or in columns, with its per-message details', () => {
    expect(readSendBatch({ t: 'send', epoch: 2, seq: 5, messages: ['x'] })).toEqual({
      epoch: 2,
      seq: 5,
      messages: ['x'],
      attempts: undefined,
      keys: undefined,
      redelivered: undefined,
    });
    const b = readSendBatch({ t: 'send', seq: 0, n: 1, fields: ['a'], columns: [[1]], attempts: [2], keys: ['k'], redelivered: [true] });
    expect(b).toMatchObject({ epoch: 0, messages: [{ a: 1 }], attempts: [2], keys: ['k'], redelivered: [true] });
    expect(readSendBatch({ t: 'send', seq: 'x', messages: [] })).toBeUndefined();
    expect(readSendBatch({ t: 'send', seq: 0, fields: ['a'], columns: [[1]], n: 3 })).toBeUndefined();
    expect(readSendBatch(null)).toBeUndefined();
    expect(readSendBatch({ t: 'other', seq: 0, messages: [] })).toBeUndefined();
  });

  it('reads an inbound ack', () => {
    expect(readInboundAck({ t: 'inbound_ack', upTo: 4 })).toBe(4);
    expect(readInboundAck({ t: 'inbound_ack', upTo: '4' })).toBeUndefined();
    expect(readInboundAck('inbound_ack')).toBeUndefined();
  });

  it('carries an error as { class, code, reason } with a normalised code', () => {
    expect(wireError('fatal', 'bad token!', 'no')).toEqual({ class: 'fatal', code: 'bad_token_', reason: 'no' });
    expect(wireCode(undefined)).toBe('error');
    expect(wireCode(429)).toBe('429');
  });
});
